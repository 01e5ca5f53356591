//! The run page: header, charts (loss, learning rate, every other metric by group),
//! checkpoints, parameters, commands, the log and system tails ([`super::tails`]), and
//! alerts ([`super::alerts`]: the banner on top, the panel at the end).
//! [`crate::load::load_run`] loads the run (state, series and events endpoints, then
//! its SSE stream); the page provides it, the relay's base and the chart settings as
//! context, and every panel reads them from there.

use super::alerts::{AlertBanner, AlertsPanel};
use super::chart::{ChartPanel, ChartSettings, ChartToolbar, Source};
use super::common::{ago, download, fmt_loss, fmt_lr, use_clock, ConnBadge, Stat, StatusPill};
use super::control::{AskPanel, CommandsPanel, ControlBar, LoadButton};
use super::job::{JobPanel, RerunButton};
use super::media::MediaPanel;
use super::meta::MetaPanel;
use super::tails::{LogsPanel, SystemPanel, WorldPanel};
use crate::api;
use crate::i18n::{use_i18n, Key};
use crate::load::{self, use_run};
use crate::model::{self, RunView, ShownStatus, LOSS, LR};
use crate::route::{replace_hash, Page, Route};
use leptos::prelude::*;
use stepwatch_events::{num, RunState, RunStatus};

#[component]
pub fn RunPage(base: String, run: String, route: Route) -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    provide_context(load::load_run(&base, &run, true));
    provide_context(api::Base(base));
    let settings = ChartSettings::from_route(&route);
    provide_context(settings);
    let page = Page::Run(run.clone());
    Effect::new(move |_| replace_hash(&Route::hash(&page, &settings.params())));
    let view_state = use_run().view;
    let shown = Signal::derive(move || {
        view_state.with(|v| model::shown_status(v.state.status, v.state.last_event_at, clock.get()))
    });
    view! {
        <div class="crumbs"><a href="#/" data-testid="back">{i18n.tr(Key::BackToRuns)}</a></div>
        <AlertBanner/>
        <RunHeader run=run.clone() shown=shown/>
        <MetaPanel/>
        <JobPanel run=run/>
        <RunCharts/>
        <WorldPanel/>
        <MediaPanel/>
        <div class="two-col">
            <Checkpoints/>
            <ConfigTable/>
        </div>
        <div class="two-col">
            <AskPanel/>
            <CommandsPanel/>
        </div>
        <div class="two-col">
            <LogsPanel/>
            <SystemPanel shown=shown/>
        </div>
        <AlertsPanel/>
    }
}

/// The run's name, status, controls, connection, banners and stat tiles.
#[component]
fn RunHeader(run: String, shown: Signal<ShownStatus>) -> impl IntoView {
    let i18n = use_i18n();
    let loaded = use_run();
    let view_state = loaded.view;
    let has_events = move || view_state.with(|v| v.state.event_count > 0 || v.history_loading);
    let non_finite =
        move || view_state.with(|v| v.state.current_loss.is_some_and(|l| !l.is_finite()));
    let ended =
        Signal::derive(move || matches!(shown.get(), ShownStatus::Run(st) if !st.is_live()));
    view! {
        <section class="panel run-head" data-testid="run-header" data-run=run>
            <div class="panel-head">
                <h1 data-testid="run-name">{move || view_state.with(|v| v.state.name.clone())}</h1>
                <StatusPill status=shown/>
                <ControlBar/>
                <RerunButton run=run.clone()/>
                <span class="spacer"></span>
                <span class="muted small"><span data-testid="event-count">{move || view_state.with(|v| v.state.event_count)}</span>" "{i18n.tr(Key::Events)}</span>
                <ConnBadge conn=loaded.conn ended=ended/>
            </div>
            {super::common::note_when("muted", Key::RunNotFound, Signal::derive(move || !has_events()))}
            {super::common::show(Signal::derive(non_finite), move || view! { <div class="banner alert" data-testid="nonfinite-banner">{i18n.tr(Key::NonFiniteLoss)}</div> })}
            <ErrorBanner/>
            <RunStats/>
        </section>
    }
}

/// Where a run that ended short of its length stopped ("stopped at 70%"), else "".
fn cut_note(i18n: crate::i18n::I18n, s: &RunState) -> String {
    let p = s.progress();
    match (model::cut_short(s.status, &p), p.fraction) {
        (true, Some(f)) => {
            let at = if s.status == RunStatus::Failed {
                Key::FailedAt
            } else {
                Key::StoppedAt
            };
            format!("{} {:.0}%", i18n.t(at), f * 100.0)
        }
        _ => String::new(),
    }
}

/// The header's stat tiles: epoch and batch (with bars), losses, learning rate, step,
/// best loss, elapsed, time left, events per second.
#[component]
fn RunStats() -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    let view_state = use_run().view;
    let s =
        move |f: fn(&RunState) -> String| Signal::derive(move || view_state.with(|v| f(&v.state)));
    let non_finite =
        move || view_state.with(|v| v.state.current_loss.is_some_and(|l| !l.is_finite()));
    let elapsed = Signal::derive(move || {
        let now = clock.get();
        view_state.with(|v| {
            let s = &v.state;
            model::elapsed_s(s.status, s.started_at, s.ended_at, s.last_event_at, now)
                .map_or("–".into(), model::duration)
        })
    });
    let eta = Signal::derive(move || {
        let now = clock.get();
        view_state.with(|v| v.eta_s(now).map_or("–".into(), model::duration))
    });
    // A run that ended short of its length: the bar says where, and that it stopped.
    let cut_short = Signal::derive(move || {
        view_state.with(|v| model::cut_short(v.state.status, &v.state.progress()))
    });
    let cut_note = Signal::derive(move || view_state.with(|v| cut_note(i18n, &v.state)));
    let rate = Signal::derive(move || {
        let now = clock.get();
        view_state.with(|v| num::display(v.events_per_s(now), 3))
    });
    view! {
        <div class="stats">
            <Stat label=Key::Epoch testid="epoch"
                value=s(|s| { let p = s.progress(); model::progress(p.epoch, p.total_epochs) })
                frac=Signal::derive(move || view_state.with(|v| v.state.progress().fraction.unwrap_or(0.0)))
                cut=cut_short note=cut_note/>
            <Stat label=Key::Batch testid="batch"
                value=s(|s| { let p = s.progress(); model::progress(p.batch, p.total_batches) })
                frac=Signal::derive(move || view_state.with(|v| v.state.progress().epoch_fraction.unwrap_or(0.0)))
                cut=cut_short/>
            <Stat label=Key::Loss testid="loss" value=s(|s| fmt_loss(s.current_loss)) alert=Signal::derive(non_finite)/>
            <Stat label=Key::AvgLoss testid="avg-loss" value=s(|s| fmt_loss(s.avg_loss))/>
            <Stat label=Key::LearningRate testid="lr" value=s(|s| fmt_lr(s.learning_rate))/>
            <Stat label=Key::Step testid="step" value=s(|s| s.step.to_string())/>
            <Stat label=Key::BestLoss testid="best-loss"
                label_of=Signal::derive(move || view_state.with(|v| if v.state.best_val.is_some() { Key::BestVal } else { Key::BestLoss }))
                value=s(|s| fmt_loss(s.best_val.as_ref().map_or(s.best_loss, |b| Some(b.value))))
                hint=Signal::derive(move || view_state.with(|v| match &v.state.best_val {
                    Some(b) => format!("{} ({}, {} {})", i18n.t(Key::BestValHint), b.metric, i18n.t(Key::Step), b.step),
                    None => i18n.t(Key::BestLossHint).to_string(),
                }))/>
            <Stat label=Key::Elapsed testid="elapsed" value=elapsed/>
            <Stat label=Key::Eta testid="eta" value=eta/>
            <Stat label=Key::EventsPerS testid="events-per-s" value=rate/>
        </div>
    }
}

/// The chart toolbar (with CSV export), the loss and learning-rate charts, and a chart
/// per other metric, grouped by prefix.
#[component]
fn RunCharts() -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let run = view_state.with_untracked(|v| v.state.run.clone());
    let export_csv = move |_| {
        let csv = view_state.with(metrics_csv);
        download(&format!("{run}-metrics.csv"), "text/csv", &csv);
    };
    let groups = Memo::new(move |_| view_state.with(|v| v.metric_groups()));
    let has_lr = Memo::new(move |_| view_state.with(|v| v.series.contains_key(LR)));
    let src = move |color| {
        vec![Source {
            view: view_state,
            color,
        }]
    };
    view! {
        <section class="panel">
            <ChartToolbar>
                <button class="btn" data-testid="export-csv" on:click=export_csv>{i18n.tr(Key::ExportCsv)}</button>
            </ChartToolbar>
            <div class="charts">
                <ChartPanel metric=LOSS.to_string() title=i18n.t(Key::LossCurve).to_string() sources=src(0)/>
                {super::common::show(Signal::derive(move || has_lr.get()), move || view! { <ChartPanel metric=LR.to_string() title=i18n.t(Key::LearningRateCurve).to_string() sources=src(1)/> })}
            </div>
            <For each=move || groups.get() key=|(g, names)| (g.clone(), names.clone()) let:group>
                <h3 class="group-title" data-testid="metric-group">{if group.0.is_empty() { i18n.t(Key::Metrics).to_string() } else { format!("{}/", group.0) }}</h3>
                <div class="charts">
                    {group.1.into_iter().enumerate().map(|(i, name)| view! {
                        <ChartPanel metric=name.clone() title=name.clone() sources=vec![Source { view: view_state, color: 2 + i }]/>
                    }).collect_view()}
                </div>
            </For>
        </section>
    }
}

/// Every series as CSV, long format: metric, step, time, value.
pub fn metrics_csv(v: &RunView) -> String {
    let mut out = String::from("metric,step,time,value\n");
    for (name, points) in &v.series {
        let quoted = if name.contains(',') || name.contains('"') {
            format!("\"{}\"", name.replace('"', "\"\""))
        } else {
            name.clone()
        };
        for p in points {
            let value = if p.value.is_finite() {
                p.value.to_string()
            } else {
                num::non_finite_name(p.value).to_string()
            };
            out.push_str(&format!("{quoted},{},{},{value}\n", p.step, p.time));
        }
    }
    out
}

#[component]
fn ErrorBanner() -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    move || {
        view_state.with(|v| v.state.last_error.clone()).map(|e| {
            let tb = e.traceback.clone().filter(|t| !t.is_empty());
            view! {
                <div class="banner warn" data-testid="error-banner">
                    <b>{i18n.t(Key::LastError)}": "</b>
                    <span data-testid="error-message">{e.message.clone()}</span>
                    {e.fatal.then(|| view! { <span class="tag alert-tag">{i18n.t(Key::Fatal)}</span> })}
                    {tb.map(|t| view! {
                        <details data-testid="traceback"><summary>{i18n.t(Key::Traceback)}</summary><pre>{t}</pre></details>
                    })}
                </div>
            }
        })
    }
}

#[component]
fn Checkpoints() -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let clock = use_clock();
    let rows = move || {
        view_state.with(|v| {
            let best = v.state.best_checkpoint().map(|c| c.path.clone());
            // Epochs as the header counts them (from 1 for loops that count from 0).
            let shift = u64::from(v.state.pace.first_epoch == Some(0));
            v.state
                .checkpoints
                .iter()
                .rev()
                .take(50)
                .map(|c| {
                    let mut c = c.clone();
                    c.epoch = c.epoch.map(|e| e + shift);
                    let best = best.as_deref() == Some(c.path.as_str());
                    (c, best)
                })
                .collect::<Vec<_>>()
        })
    };
    view! {
        <section class="panel">
            <div class="panel-head"><h2>{i18n.tr(Key::Checkpoints)}</h2></div>
            {super::common::note_when("muted", Key::NoCheckpoints, Signal::derive(move || view_state.with(|v| v.state.checkpoints.is_empty())))}
            {super::common::show(Signal::derive(move || view_state.with(|v| !v.state.checkpoints.is_empty())), move || view! { <div class="scroll">
                <table class="grid" data-testid="checkpoints">
                    <thead><tr>
                        <th>{i18n.tr(Key::ColFile)}</th>
                        <th class="num">{i18n.tr(Key::ColEpoch)}</th>
                        <th class="num">{i18n.tr(Key::ColStep)}</th>
                        <th class="num">{i18n.tr(Key::ColSize)}</th>
                        <th>{i18n.tr(Key::ColSaved)}</th>
                        <th>{i18n.tr(Key::ColMetrics)}</th>
                        <th></th>
                    </tr></thead>
                    <tbody>
                    {move || rows().into_iter().map(|(c, best)| {
                        let metrics = c.metrics.iter().map(|(k, v)| format!("{k}={}", num::display(*v, 4))).collect::<Vec<_>>().join(" ");
                        view! {
                            <tr data-testid="checkpoint" class:best=best>
                                <td class="mono" title=c.path.clone()>{model::file_name(&c.path).to_string()}
                                    {best.then(|| view! { <span class="tag best" data-testid="best-checkpoint">{i18n.t(Key::Best)}</span> })}
                                    {(c.overwrites > 0).then(|| view! {
                                        <span class="tag" data-testid="checkpoint-saves" title=i18n.t(Key::SavesHint)>{format!("{} {}", c.overwrites + 1, i18n.t(Key::Saves))}</span>
                                    })}</td>
                                <td class="num">{c.epoch.map(|e| e.to_string()).unwrap_or_default()}</td>
                                <td class="num">{c.step.map(|e| e.to_string()).unwrap_or_default()}</td>
                                <td class="num">{c.size_bytes.map(model::bytes).unwrap_or_default()}</td>
                                <td class="muted">{ago(i18n, c.time, clock.get())}</td>
                                <td class="mono small">{metrics}</td>
                                <td><LoadButton path=c.path.clone()/></td>
                            </tr>
                        }
                    }).collect_view()}
                    </tbody>
                </table>
                </div> })}
        </section>
    }
}

#[component]
fn ConfigTable() -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let rows = move || {
        view_state.with(|v| {
            v.state
                .config
                .iter()
                .map(|(k, v)| (k.clone(), config_value(v)))
                .collect::<Vec<_>>()
        })
    };
    let meta = move || {
        view_state.with(|v| {
            v.state
                .meta
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::Array(items) => {
                            items.iter().map(config_value).collect::<Vec<_>>().join(" ")
                        }
                        other => config_value(other),
                    };
                    (k.clone(), text)
                })
                .collect::<Vec<_>>()
        })
    };
    view! {
        <section class="panel">
            <div class="panel-head"><h2>{i18n.tr(Key::Config)}</h2></div>
            <table class="kv" data-testid="config">
                {move || rows().into_iter().map(|(k, v)| view! { <tr><th>{k}</th><td>{v}</td></tr> }).collect_view()}
            </table>
            {super::common::show(Signal::derive(move || view_state.with(|v| !v.state.meta.is_empty())), move || view! { <h3 class="group-title">{i18n.tr(Key::RunInfo)}</h3>
                <table class="kv" data-testid="run-meta">
                    {move || meta().into_iter().map(|(k, v)| view! { <tr><th>{k}</th><td>{v}</td></tr> }).collect_view()}
                </table> })}
        </section>
    }
}

/// A config value as text: strings bare, everything else as JSON.
pub fn config_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
