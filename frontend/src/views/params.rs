//! The parameter view of a sweep: the runs chosen on the runs list (picked, or all
//! tagged X, or a group) with every config key that varies plotted against a metric's
//! final value, keys that decide it first, and the runs ranked in a table. Values
//! come from `GET /api/values` (narrowed by the relay), asked again every 10 s so a sweep fills in live; the
//! analysis and the SVG are [`crate::model::params`].

use super::common::use_clock;
use super::compare::lower_is_better;
use super::job::Html;
use super::runs::options;
use crate::api;
use crate::i18n::{use_i18n, Key};
use crate::model::params::{self, Axis, Sweep};
use crate::model::table::show;
use crate::route::{enc, replace_hash, run_href, Page, Route};
use leptos::prelude::*;
use stepwatch_events::num;

/// The metric shown when the link names none: a validation loss, else the loss.
fn default_metric(keys: &[String]) -> String {
    ["val_loss", "eval_loss", "valid_loss", "loss"]
        .iter()
        .find(|k| keys.iter().any(|m| m == *k))
        .map(|k| k.to_string())
        .or_else(|| keys.first().cloned())
        .unwrap_or_default()
}

#[component]
pub fn ParamsPage(base: String, route: Route) -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    let param = |k: &str| route.get(k).unwrap_or_default().to_string();
    let picked: Vec<String> = param("runs")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let (tag, group) = (param("tag"), param("group"));
    let metric = RwSignal::new(param("metric"));
    let goal = RwSignal::new(param("goal"));
    let values = RwSignal::new(serde_json::Value::Null);
    // The relay narrows the runs: by id, by tag, by group.
    let mut only = String::new();
    for (k, v) in [
        ("runs", picked.join(",")),
        ("tag", tag.clone()),
        ("group", group.clone()),
    ] {
        if !v.is_empty() {
            only.push_str(&format!("&{k}={}", enc(&v)));
        }
    }
    Effect::new(move |prev: Option<u64>| {
        let tick = (clock.get() / 10.0) as u64;
        if prev != Some(tick) {
            let url = format!("{base}/api/values?config=*&metrics=*{only}");
            leptos::task::spawn_local(async move {
                if let Some(v) = api::get_value(&url).await {
                    values.try_set(v);
                }
            });
        }
        tick
    });
    {
        let (picked, tag, group) = (picked.clone(), tag.clone(), group.clone());
        Effect::new(move |_| {
            let p = [
                ("runs", picked.join(",")),
                ("tag", tag.clone()),
                ("group", group.clone()),
                ("metric", metric.get()),
                ("goal", goal.get()),
            ];
            replace_hash(&Route::hash(&Page::Params, &p));
        });
    }
    // One memo holds the whole view: the metric keys, the metric shown, its goal and the sweep.
    let view = Memo::new(move |_| {
        let keys: Vec<String> = values.with(|v| {
            v["metric_keys"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        });
        let m = Some(metric.get())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| default_metric(&keys));
        let lower = match goal.get().as_str() {
            "min" => true,
            "max" => false,
            _ => lower_is_better(&m),
        };
        let pts = values.with(|v| params::run_points(v, &m));
        (keys, m, lower, params::sweep(pts, lower))
    });
    let scope = move || {
        if !tag.is_empty() {
            format!("{}: {tag}", i18n.t(Key::Tag))
        } else if !group.is_empty() {
            format!("{}: {group}", i18n.t(Key::Group))
        } else {
            String::new()
        }
    };
    view! {
        <section class="panel">
            <div class="panel-head">
                <h1>{i18n.tr(Key::Params)}</h1>
                <span class="count" data-testid="param-runs">{move || view.with(|v| v.3.runs.len())}</span>
                <span class="muted">{scope}</span>
            </div>
            <div class="toolbar">
                <select data-testid="param-metric" on:change=move |ev| metric.set(event_target_value(&ev))
                    inner_html=move || view.with(|(keys, m, _, _)| {
                        let mut h = Html::default();
                        options(&mut h, m, keys.iter().map(|k| (k.clone(), k.clone())));
                        h.0
                    })></select>
                <select data-testid="param-goal" on:change=move |ev| goal.set(event_target_value(&ev))
                    inner_html=move || {
                        let mut h = Html::default();
                        let sel = if view.with(|v| v.2) { "min" } else { "max" };
                        options(&mut h, sel, [("min", Key::LowerBetter), ("max", Key::HigherBetter)].into_iter().map(|(v, k)| (v.to_string(), i18n.t(k).to_string())));
                        h.0
                    }></select>
                <span class="muted small">{i18n.tr(Key::ParamsHint)}</span>
            </div>
            <div inner_html=move || view.with(|(_, m, _, s)| body_html(s, m, i18n))></div>
        </section>
    }
}

/// The page under the toolbar: why there is nothing to plot, or a card per key and the
/// ranked table.
fn body_html(s: &Sweep, metric: &str, i18n: crate::i18n::I18n) -> String {
    let mut h = Html::default();
    if s.scored == 0 || s.plots.is_empty() {
        let key = if s.scored == 0 {
            Key::ParamsNoMetric
        } else {
            Key::ParamsNoKeys
        };
        h.raw("<p class=\"empty\" data-testid=\"param-empty\">")
            .text(i18n.t(key))
            .raw("</p>");
    } else {
        h.raw("<div class=\"scatters\">")
            .raw(&plots_html(s, metric, i18n))
            .raw("</div>");
    }
    h.raw("<div class=\"scroll\"><table class=\"runs\" data-testid=\"param-table\">")
        .raw(&table_html(s, metric, i18n))
        .raw("</table></div>");
    h.0
}

/// The cards, one per key: its name, how strongly the metric follows it, the scatter.
fn plots_html(s: &Sweep, metric: &str, i18n: crate::i18n::I18n) -> String {
    let mut h = Html::default();
    for p in &s.plots {
        h.raw("<figure class=\"card scatter-card\" data-testid=\"param-plot\" data-key=\"")
            .text(&p.key)
            .raw("\"><figcaption><b>")
            .text(&p.key)
            .raw("</b>");
        if let Some(score) = p.score {
            let (sym, hint) = match p.axis {
                Axis::Num { .. } => ("|ρ|", Key::RhoHint),
                Axis::Cat(_) => ("η", Key::EtaHint),
            };
            h.raw(" <span class=\"muted small\" data-testid=\"param-score\" title=\"")
                .text(i18n.t(hint))
                .raw("\">")
                .text(&format!("{sym} {:.2}", score))
                .raw("</span>");
        }
        h.raw("</figcaption>");
        h.raw(&params::svg(s, p, metric));
        h.raw("</figure>");
    }
    h.0
}

/// The runs ranked by the metric, with every key that varies.
fn table_html(s: &Sweep, metric: &str, i18n: crate::i18n::I18n) -> String {
    let mut h = Html::default();
    h.raw("<thead><tr><th class=\"num\">#</th><th>")
        .text(i18n.t(Key::ColName))
        .raw("</th><th class=\"num\">")
        .text(metric)
        .raw("</th>");
    for p in &s.plots {
        h.raw("<th>").text(&p.key).raw("</th>");
    }
    h.raw("</tr></thead><tbody>");
    for (i, r) in s.runs.iter().enumerate() {
        h.raw(if i == 0 && s.scored > 0 {
            "<tr class=\"best\" data-testid=\"param-row\" data-run=\""
        } else {
            "<tr data-testid=\"param-row\" data-run=\""
        })
        .text(&r.run)
        .raw("\"><td class=\"num\">");
        if i < s.scored {
            h.text(&(i + 1).to_string());
        }
        h.raw("</td><td><a href=\"")
            .text(&run_href(&r.run))
            .raw("\">")
            .text(&r.name)
            .raw("</a></td><td class=\"num\">")
            .text(&r.metric.map_or_else(|| "–".into(), |m| num::display(m, 5)))
            .raw("</td>");
        for p in &s.plots {
            h.raw("<td>")
                .text(&r.config.get(&p.key).map_or_else(|| "–".into(), show))
                .raw("</td>");
        }
        h.raw("</tr>");
    }
    h.raw("</tbody>");
    h.0
}
