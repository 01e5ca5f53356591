//! Compare runs (the seed's model version comparison and A/B testing): curves overlaid
//! on shared charts, the config keys that differ, and a summary per metric against a
//! baseline run. Each run is loaded by [`crate::load::load_run`]; the page shares them
//! (and its baseline) with its panels as context.

use super::chart::{ChartPanel, ChartSettings, ChartToolbar, Source};
use super::common::ConnBadge;
use super::run::config_value;
use crate::api;
use crate::chart::PALETTE;
use crate::i18n::{use_i18n, Key};
use crate::load::{self, Loaded};
use crate::model::{LOSS, LR};
use crate::route::{replace_hash, run_href, Page, Route};
use leptos::prelude::*;
use std::collections::BTreeSet;
use stepwatch_events::num;

/// Whether lower is better for a metric, judged by its name.
pub fn lower_is_better(metric: &str) -> bool {
    let m = metric.to_ascii_lowercase();
    [
        "loss",
        "err",
        "ppl",
        "perplexity",
        "mse",
        "mae",
        "wer",
        "cer",
    ]
    .iter()
    .any(|k| m.contains(k))
        || m == "lr"
}

/// Last, best and mean of the last `n` finite values of a series.
pub fn summarize(values: &[f64], lower_better: bool, n: usize) -> Option<(f64, f64, f64)> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let last = *values.last()?;
    let best = if lower_better {
        finite.iter().copied().fold(f64::INFINITY, f64::min)
    } else {
        finite.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    };
    let tail = &finite[finite.len().saturating_sub(n.max(1))..];
    let mean = if tail.is_empty() {
        f64::NAN
    } else {
        tail.iter().sum::<f64>() / tail.len() as f64
    };
    Some((last, if best.is_finite() { best } else { f64::NAN }, mean))
}

/// "+0.12 (+4.8%)" of `x` against `base`.
pub fn diff(x: f64, base: f64) -> String {
    if !x.is_finite() || !base.is_finite() {
        return "–".into();
    }
    let d = x - base;
    let rel = if base != 0.0 {
        format!(" ({:+.1}%)", d / base.abs() * 100.0)
    } else {
        String::new()
    };
    format!(
        "{}{}{rel}",
        if d >= 0.0 { "+" } else { "" },
        num::display(d, 3)
    )
}

/// The runs of the page, as loaded, in the order of the URL; provided as context.
#[derive(Clone)]
struct Compared {
    runs: Vec<String>,
    loaded: Vec<Loaded>,
    /// Each run's display name.
    names: Signal<Vec<String>>,
    /// The run the others are measured against, and how many last points are averaged.
    baseline: RwSignal<String>,
    last_n: RwSignal<usize>,
}

fn use_compared() -> Compared {
    expect_context::<Compared>()
}

#[component]
pub fn ComparePage(base: String, runs: Vec<String>, route: Route) -> impl IntoView {
    let i18n = use_i18n();
    let loaded: Vec<Loaded> = runs
        .iter()
        .map(|r| load::load_run(&base, r, false))
        .collect();
    provide_context(api::Base(base));
    let settings = ChartSettings::from_route(&route);
    provide_context(settings);
    let baseline = RwSignal::new(
        route
            .get("base")
            .filter(|b| runs.iter().any(|r| r == b))
            .map(String::from)
            .or_else(|| runs.first().cloned())
            .unwrap_or_default(),
    );
    let last_n = RwSignal::new(
        route
            .get("n")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(50),
    );
    let page = Page::Compare(runs.clone());
    Effect::new(move |_| {
        let mut p = settings.params();
        p.push(("base", baseline.get()));
        p.push((
            "n",
            if last_n.get() == 50 {
                String::new()
            } else {
                last_n.get().to_string()
            },
        ));
        replace_hash(&Route::hash(&page, &p));
    });
    let names = Signal::derive({
        let loaded = loaded.clone();
        move || {
            loaded
                .iter()
                .map(|l| l.view.with(|v| v.state.name.clone()))
                .collect::<Vec<_>>()
        }
    });
    let sources: Vec<Source> = loaded
        .iter()
        .enumerate()
        .map(|(i, l)| Source {
            view: l.view,
            color: i,
        })
        .collect();
    provide_context(Compared {
        runs,
        loaded,
        names,
        baseline,
        last_n,
    });
    let metrics = compared_metrics();
    let (media_runs, media_names) = (use_compared().loaded, names);
    let params_href = Route::hash(&Page::Params, &[("runs", use_compared().runs.join(","))]);
    view! {
        <div class="crumbs"><a href="#/" data-testid="back">{i18n.tr(Key::BackToRuns)}</a></div>
        <section class="panel" data-testid="compare">
            <div class="panel-head"><h1>{i18n.tr(Key::CompareRuns)}</h1><span class="spacer"></span>
                <a class="btn" data-testid="params-button" href=params_href title=i18n.tr(Key::ParamsOf)>{i18n.tr(Key::Params)}</a></div>
            <Legend/>
        </section>
        <section class="panel">
            <ChartToolbar/>
            <div class="charts">
                <For each=move || metrics.get() key=|m| m.clone() let:m>
                    <ChartPanel metric=m.clone() title=m.clone() sources=sources.clone() labels=names/>
                </For>
            </div>
        </section>
        <div class="two-col">
            <ConfigDiff/>
            <SummaryTable metrics=metrics/>
        </div>
        <super::media::CompareSamples loaded=media_runs names=media_names/>
    }
}

/// Every metric of any of the runs: loss and learning rate first, then by name.
fn compared_metrics() -> Memo<Vec<String>> {
    let loaded = use_compared().loaded;
    Memo::new(move |_| {
        let mut set = BTreeSet::new();
        for l in &loaded {
            l.view.with(|v| set.extend(v.series.keys().cloned()));
        }
        let mut ordered: Vec<String> = [LOSS, LR]
            .iter()
            .filter(|m| set.contains(**m))
            .map(|m| m.to_string())
            .collect();
        ordered.extend(set.into_iter().filter(|m| m != LOSS && m != LR));
        ordered
    })
}

/// A swatch, link, baseline switch and connection badge per run.
#[component]
fn Legend() -> impl IntoView {
    let i18n = use_i18n();
    let c = use_compared();
    let baseline = c.baseline;
    let items = c.runs.iter().zip(&c.loaded).enumerate().map(|(i, (r, l))| {
        let r = r.clone();
        let r2 = r.clone();
        let view = l.view;
        view! {
            <div class="legend-item" data-testid="legend-item" data-run=r.clone()>
                <span class=format!("swatch c{}", i % PALETTE.len())></span>
                <a href=run_href(&r)>{move || view.with(|v| v.state.name.clone())}</a>
                <label class="small muted">
                    <input type="radio" name="baseline" data-testid=format!("baseline-{r}")
                        prop:checked=move || baseline.get() == r2
                        on:change={ let r = r.clone(); move |_| baseline.set(r.clone()) }/>
                    {i18n.tr(Key::Baseline)}
                </label>
                <ConnBadge conn=l.conn/>
            </div>
        }
    });
    view! { <div class="legend" data-testid="legend">{items.collect_view()}</div> }
}

/// The config keys whose values differ between the runs, with each run's value.
fn config_rows(loaded: &[Loaded]) -> Vec<(String, Vec<String>)> {
    let configs: Vec<serde_json::Map<String, serde_json::Value>> = loaded
        .iter()
        .map(|l| l.view.with(|v| v.state.config.clone()))
        .collect();
    let keys = crate::model::sort::set(configs.iter().flat_map(|c| c.keys().cloned()));
    keys.into_iter()
        .filter(|k| {
            let first = configs.first().and_then(|c| c.get(k));
            configs.iter().any(|c| c.get(k) != first)
        })
        .map(|k| {
            let vals: Vec<String> = configs
                .iter()
                .map(|c| c.get(&k).map(config_value).unwrap_or_else(|| "—".into()))
                .collect();
            (k, vals)
        })
        .collect()
}

#[component]
fn ConfigDiff() -> impl IntoView {
    let i18n = use_i18n();
    let c = use_compared();
    let names = c.names;
    let loaded = c.loaded;
    view! {
        <section class="panel" data-testid="config-diff">
            <div class="panel-head"><h2>{i18n.tr(Key::ConfigDiff)}</h2></div>
            {move || {
                let rows = config_rows(&loaded);
                if rows.is_empty() {
                    view! { <p class="muted">{i18n.t(Key::NoConfigDiff)}</p> }.into_any()
                } else {
                    view! {
                        <div class="scroll"><table class="grid">
                            <thead><tr><th></th>{names.get().into_iter().enumerate().map(|(i, n)| view! {
                                <th><span class=format!("swatch c{}", i % PALETTE.len())></span>{n}</th>
                            }).collect_view()}</tr></thead>
                            <tbody>{rows.into_iter().map(|(k, vals)| view! {
                                <tr data-testid="config-diff-row" data-key=k.clone()><th class="mono">{k.clone()}</th>
                                    {vals.into_iter().map(|v| view! { <td class="mono">{v}</td> }).collect_view()}</tr>
                            }).collect_view()}</tbody>
                        </table></div>
                    }.into_any()
                }
            }}
        </section>
    }
}

/// Per metric and run: last, best and mean of the last n values, and the difference of
/// the last value to the baseline's.
#[component]
fn SummaryTable(metrics: Memo<Vec<String>>) -> impl IntoView {
    let i18n = use_i18n();
    let c = use_compared();
    let (names, last_n, baseline) = (c.names, c.last_n, c.baseline);
    let summary = move || {
        let n = last_n.get();
        let base_idx = c
            .runs
            .iter()
            .position(|r| *r == baseline.get())
            .unwrap_or(0);
        metrics
            .get()
            .into_iter()
            .map(|m| {
                let lower = lower_is_better(&m);
                let stats: Vec<Option<(f64, f64, f64)>> = c
                    .loaded
                    .iter()
                    .map(|l| {
                        l.view.with(|v| {
                            let vals: Vec<f64> = v.points(&m).iter().map(|p| p.value).collect();
                            summarize(&vals, lower, n)
                        })
                    })
                    .collect();
                (m, base_idx, stats)
            })
            .collect::<Vec<_>>()
    };
    view! {
        <section class="panel" data-testid="summary">
            <div class="panel-head">
                <h2>{i18n.tr(Key::Summary)}</h2>
                <span class="spacer"></span>
                <label class="small muted">{i18n.tr(Key::LastN)}" = "
                    <input type="number" min="1" class="n-input" data-testid="last-n" prop:value=move || last_n.get().to_string()
                        on:change=move |ev| { if let Ok(n) = event_target_value(&ev).parse::<usize>() { last_n.set(n.max(1)); } }/>
                </label>
            </div>
            <div class="scroll"><table class="grid">
                <thead><tr>
                    <th>{i18n.tr(Key::ColMetric)}</th><th>{i18n.tr(Key::ColRun)}</th>
                    <th class="num">{i18n.tr(Key::ColLast)}</th><th class="num">{i18n.tr(Key::ColBest)}</th>
                    <th class="num">{i18n.tr(Key::ColMeanLastN)}</th><th class="num">{i18n.tr(Key::ColDiff)}</th>
                </tr></thead>
                <tbody>
                {move || summary().into_iter().flat_map(|(m, base_idx, stats)| {
                    let base = stats.get(base_idx).copied().flatten();
                    let names = names.get();
                    stats.into_iter().enumerate().map(move |(i, st)| {
                        let (last, best, mean) = st.map_or(("–".into(), "–".into(), "–".into()), |(l, b, a)| (num::display(l, 5), num::display(b, 5), num::display(a, 5)));
                        let d = match (st, base) { (Some(s), Some(b)) if i != base_idx => diff(s.0, b.0), _ => String::new() };
                        view! {
                            <tr data-testid="summary-row" data-metric=m.clone() data-run-index=i.to_string()>
                                <td class="mono">{(i == 0).then(|| m.clone())}</td>
                                <td><span class=format!("swatch c{}", i % PALETTE.len())></span>{names.get(i).cloned().unwrap_or_default()}</td>
                                <td class="num mono">{last}</td><td class="num mono">{best}</td><td class="num mono">{mean}</td>
                                <td class="num mono" data-testid="summary-diff">{d}</td>
                            </tr>
                        }
                    }).collect::<Vec<_>>()
                }).collect_view()}
                </tbody>
            </table></div>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_diff() {
        let (last, best, mean) = summarize(&[3.0, 1.0, f64::NAN, 2.0], true, 2).unwrap();
        assert_eq!((last, best, mean), (2.0, 1.0, 1.5));
        let (_, best, _) = summarize(&[0.2, 0.9, 0.5], false, 10).unwrap();
        assert_eq!(best, 0.9);
        assert!(summarize(&[], true, 5).is_none());
        assert_eq!(diff(1.1, 1.0), "+0.1 (+10.0%)");
        assert_eq!(diff(0.5, 1.0), "-0.5 (-50.0%)");
        assert!(lower_is_better("val/loss") && !lower_is_better("val/acc"));
    }
}
