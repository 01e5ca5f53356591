//! The run page: header, charts (loss, learning rate, every other metric by group),
//! checkpoints, parameters, logs, system, errors. History from the relay's state,
//! series and events endpoints; live from the run's SSE stream after it.

use super::chart::{ChartPanel, ChartSettings, ChartToolbar, Source};
use super::common::{
    ago, download, fmt_loss, fmt_lr, load_run, use_clock, ConnBadge, Stat, StatusPill,
};
use super::control::{AskPanel, CommandsPanel, ControlBar, LoadButton, Target};
use crate::api::{self, ConnState};
use crate::i18n::{use_i18n, Key};
use crate::model::{self, fold_case, RunView, LOSS, LR};
use crate::route::{replace_hash, Page, Route};
use leptos::prelude::*;
use stepwatch_events::num;

#[component]
pub fn RunPage(base: String, run: String, route: Route) -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    let view_state = RwSignal::new(RunView::new(&run));
    let conn = RwSignal::new(ConnState::Connecting);
    provide_context(api::Base(base.clone()));
    load_run(base.clone(), run.clone(), view_state, conn, true);
    let settings = ChartSettings::from_route(&route);
    let target = Target {
        base: base.clone(),
        run: run.clone(),
    };
    let page = Page::Run(run.clone());
    Effect::new(move |_| replace_hash(&Route::hash(&page, &settings.params())));

    let shown = Signal::derive(move || {
        view_state.with(|v| model::shown_status(v.state.status, v.state.last_event_at, clock.get()))
    });
    let has_events = move || view_state.with(|v| v.state.event_count > 0 || v.history_loading);
    let non_finite =
        move || view_state.with(|v| v.state.current_loss.is_some_and(|l| !l.is_finite()));
    let s = move |f: fn(&stepwatch_events::RunState) -> String| {
        Signal::derive(move || view_state.with(|v| f(&v.state)))
    };
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
    let cut_note = Signal::derive(move || {
        view_state.with(|v| {
            let p = v.state.progress();
            match (model::cut_short(v.state.status, &p), p.fraction) {
                (true, Some(f)) => {
                    let at = if v.state.status == stepwatch_events::RunStatus::Failed {
                        Key::FailedAt
                    } else {
                        Key::StoppedAt
                    };
                    format!("{} {:.0}%", i18n.t(at), f * 100.0)
                }
                _ => String::new(),
            }
        })
    });
    let rate = Signal::derive(move || {
        let now = clock.get();
        view_state.with(|v| num::display(v.events_per_s(now), 3))
    });
    let run_for_csv = run.clone();
    let export_csv = move |_| {
        let csv = view_state.with(metrics_csv);
        download(&format!("{}-metrics.csv", run_for_csv), "text/csv", &csv);
    };
    let groups = Memo::new(move |_| view_state.with(|v| v.metric_groups()));
    let has_lr = Memo::new(move |_| view_state.with(|v| v.series.contains_key(LR)));
    let src = vec![Source {
        view: view_state,
        color: 0,
    }];
    let src_lr = vec![Source {
        view: view_state,
        color: 1,
    }];

    view! {
        <div class="crumbs"><a href="#/" data-testid="back">{move || i18n.t(Key::BackToRuns)}</a></div>
        <section class="panel run-head" data-testid="run-header" data-run=run.clone()>
            <div class="panel-head">
                <h1 data-testid="run-name">{move || view_state.with(|v| v.state.name.clone())}</h1>
                <StatusPill status=shown/>
                <ControlBar view_state=view_state target=target.clone()/>
                <span class="spacer"></span>
                <span class="muted small"><span data-testid="event-count">{move || view_state.with(|v| v.state.event_count)}</span>" "{move || i18n.t(Key::Events)}</span>
                <ConnBadge conn=conn ended=Signal::derive(move || matches!(shown.get(), model::ShownStatus::Run(st) if !st.is_live()))/>
            </div>
            <Show when=move || !has_events()>
                <p class="muted">{move || i18n.t(Key::RunNotFound)}</p>
            </Show>
            <Show when=non_finite>
                <div class="banner alert" data-testid="nonfinite-banner">{move || i18n.t(Key::NonFiniteLoss)}</div>
            </Show>
            <ErrorBanner view_state=view_state/>
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
        </section>
        <section class="panel">
            <ChartToolbar settings=settings>
                <button class="btn" data-testid="export-csv" on:click=export_csv>{move || i18n.t(Key::ExportCsv)}</button>
            </ChartToolbar>
            <div class="charts">
                <ChartPanel metric=LOSS.to_string() title=i18n.t(Key::LossCurve).to_string() sources=src.clone() settings=settings/>
                <Show when=move || has_lr.get()>
                    <ChartPanel metric=LR.to_string() title=i18n.t(Key::LearningRateCurve).to_string() sources=src_lr.clone() settings=settings/>
                </Show>
            </div>
            <For each=move || groups.get() key=|(g, names)| (g.clone(), names.clone()) let:group>
                <h3 class="group-title" data-testid="metric-group">{if group.0.is_empty() { i18n.t(Key::Metrics).to_string() } else { format!("{}/", group.0) }}</h3>
                <div class="charts">
                    {group.1.into_iter().enumerate().map(|(i, name)| view! {
                        <ChartPanel metric=name.clone() title=name.clone() sources=vec![Source { view: view_state, color: 2 + i }] settings=settings/>
                    }).collect_view()}
                </div>
            </For>
        </section>
        <div class="two-col">
            <Checkpoints view_state=view_state target=target.clone()/>
            <ConfigTable view_state=view_state/>
        </div>
        <div class="two-col">
            <AskPanel view_state=view_state target=target.clone()/>
            <CommandsPanel view_state=view_state target=target/>
        </div>
        <div class="two-col">
            <LogsPanel view_state=view_state/>
            <SystemPanel view_state=view_state shown=shown/>
        </div>
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
fn ErrorBanner(view_state: RwSignal<RunView>) -> impl IntoView {
    let i18n = use_i18n();
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
fn Checkpoints(view_state: RwSignal<RunView>, target: Target) -> impl IntoView {
    let i18n = use_i18n();
    let target = StoredValue::new(target);
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
            <div class="panel-head"><h2>{move || i18n.t(Key::Checkpoints)}</h2></div>
            <Show when=move || view_state.with(|v| v.state.checkpoints.is_empty())>
                <p class="muted">{move || i18n.t(Key::NoCheckpoints)}</p>
            </Show>
            <Show when=move || view_state.with(|v| !v.state.checkpoints.is_empty())>
                <div class="scroll">
                <table class="grid" data-testid="checkpoints">
                    <thead><tr>
                        <th>{move || i18n.t(Key::ColFile)}</th>
                        <th class="num">{move || i18n.t(Key::ColEpoch)}</th>
                        <th class="num">{move || i18n.t(Key::ColStep)}</th>
                        <th class="num">{move || i18n.t(Key::ColSize)}</th>
                        <th>{move || i18n.t(Key::ColSaved)}</th>
                        <th>{move || i18n.t(Key::ColMetrics)}</th>
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
                                <td><LoadButton view_state=view_state target=target.get_value() path=c.path.clone()/></td>
                            </tr>
                        }
                    }).collect_view()}
                    </tbody>
                </table>
                </div>
            </Show>
        </section>
    }
}

#[component]
fn ConfigTable(view_state: RwSignal<RunView>) -> impl IntoView {
    let i18n = use_i18n();
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
            <div class="panel-head"><h2>{move || i18n.t(Key::Config)}</h2></div>
            <table class="kv" data-testid="config">
                {move || rows().into_iter().map(|(k, v)| view! { <tr><th>{k}</th><td>{v}</td></tr> }).collect_view()}
            </table>
            <Show when=move || view_state.with(|v| !v.state.meta.is_empty())>
                <h3 class="group-title">{move || i18n.t(Key::RunInfo)}</h3>
                <table class="kv" data-testid="run-meta">
                    {move || meta().into_iter().map(|(k, v)| view! { <tr><th>{k}</th><td>{v}</td></tr> }).collect_view()}
                </table>
            </Show>
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

const LEVELS: [&str; 5] = ["debug", "info", "warning", "error", "critical"];

fn level_rank(level: &str) -> usize {
    match level {
        "warn" => 2,
        "fatal" => 4,
        l => LEVELS.iter().position(|x| *x == l).unwrap_or(1),
    }
}

#[component]
fn LogsPanel(view_state: RwSignal<RunView>) -> impl IntoView {
    let i18n = use_i18n();
    let min_level = RwSignal::new(0usize);
    let query = RwSignal::new(String::new());
    let follow = RwSignal::new(true);
    let list = NodeRef::<leptos::html::Div>::new();
    let lines = Memo::new(move |_| {
        let q = fold_case(&query.get());
        let min = min_level.get();
        view_state.with(|v| {
            let mut out: Vec<model::LogLine> = v
                .logs
                .iter()
                .rev()
                .filter(|l| level_rank(&l.level) >= min)
                .filter(|l| {
                    q.is_empty()
                        || fold_case(&l.message).contains(&q)
                        || fold_case(&l.logger).contains(&q)
                })
                .take(500)
                .cloned()
                .collect();
            out.reverse();
            out
        })
    });
    Effect::new(move |_| {
        lines.track();
        if follow.get() {
            if let Some(el) = list.get() {
                request_animation_frame(move || el.set_scroll_top(el.scroll_height()));
            }
        }
    });
    view! {
        <section class="panel logs" data-testid="logs">
            <div class="panel-head">
                <h2>{move || i18n.t(Key::Logs)}</h2>
                <span class="spacer"></span>
                <select data-testid="log-level" on:change=move |ev| min_level.set(event_target_value(&ev).parse().unwrap_or(0))>
                    <option value="0">{move || i18n.t(Key::AllLevels)}</option>
                    {LEVELS.iter().enumerate().skip(1).map(|(i, l)| view! { <option value=i.to_string()>{format!("≥ {l}")}</option> }).collect_view()}
                </select>
                <input type="search" data-testid="log-search" placeholder=move || i18n.t(Key::Search)
                    on:input=move |ev| query.set(event_target_value(&ev))/>
                <button class=move || if follow.get() { "btn on" } else { "btn" } data-testid="log-follow"
                    on:click=move |_| follow.update(|f| *f = !*f)>
                    {move || if follow.get() { i18n.t(Key::Follow) } else { i18n.t(Key::Paused) }}
                </button>
            </div>
            <div class="log-list" node_ref=list>
                <Show when=move || lines.with(|l| l.is_empty())>
                    <p class="muted">{move || i18n.t(Key::NoLogs)}</p>
                </Show>
                <For each=move || lines.get() key=|l| l.id let:l>
                    <div class=format!("log-line lvl-{}", l.level) data-testid="log-line">
                        <span class="log-time mono">{crate::chart::fmt_x(l.time, crate::chart::XMode::Wall)}</span>
                        <span class="log-level">{l.level.clone()}</span>
                        <span class="log-msg">{l.message.clone()}</span>
                    </div>
                </For>
            </div>
        </section>
    }
}

/// An inline SVG sparkline of `values` (0..=max).
fn sparkline(values: Vec<f64>, max: f64) -> impl IntoView {
    let n = values.len().max(2) as f64;
    let pts = values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 / (n - 1.0) * 100.0,
                20.0 - (v / max.max(1e-9)).clamp(0.0, 1.0) * 18.0 - 1.0
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    view! {
        <svg class="spark" viewBox="0 0 100 20" preserveAspectRatio="none"><polyline points=pts/></svg>
    }
}

#[component]
fn SystemPanel(view_state: RwSignal<RunView>, shown: Signal<model::ShownStatus>) -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    // Once the run has ended (or gone stale) the figures are its last: say when.
    let when = move || {
        let ended = !matches!(shown.get(), model::ShownStatus::Run(st) if st.is_live());
        let t = view_state.with(|v| v.system.back().map(|s| s.time))?;
        ended.then(|| {
            format!(
                "{} {} ({})",
                i18n.t(Key::LastSample),
                crate::chart::fmt_x(t, crate::chart::XMode::Wall),
                ago(i18n, Some(t), clock.get())
            )
        })
    };
    let row = move |label: String, value: String, spark: Vec<f64>, max: f64, testid: String| {
        view! {
            <div class="sys-row" data-testid=testid>
                <span class="sys-label">{label}</span>
                <span class="sys-value mono">{value}</span>
                {sparkline(spark, max)}
            </div>
        }
    };
    let body = move || {
        view_state.with(|v| {
            let last = v.system.back()?;
            let hist = |f: &dyn Fn(&model::SystemSample) -> Option<f64>| {
                v.system
                    .iter()
                    .map(|s| f(s).unwrap_or(f64::NAN))
                    .collect::<Vec<_>>()
            };
            let mut rows = Vec::new();
            if let Some(c) = last.cpu_percent {
                rows.push(
                    row(
                        i18n.t(Key::Cpu).into(),
                        format!("{c:.0}%"),
                        hist(&|s| s.cpu_percent),
                        100.0,
                        "sys-cpu".into(),
                    )
                    .into_any(),
                );
            }
            if let Some(u) = last.mem_used_bytes {
                let total = last.mem_total_bytes.unwrap_or(0.0);
                let value = if total > 0.0 {
                    format!(
                        "{} / {}",
                        model::bytes(u as u64),
                        model::bytes(total as u64)
                    )
                } else {
                    model::bytes(u as u64)
                };
                rows.push(
                    row(
                        i18n.t(Key::Ram).into(),
                        value,
                        hist(&|s| s.mem_used_bytes),
                        total.max(u),
                        "sys-ram".into(),
                    )
                    .into_any(),
                );
            }
            for (gi, g) in last.gpus.iter().enumerate() {
                let gh = |f: &dyn Fn(&model::GpuSample) -> Option<f64>| {
                    v.system
                        .iter()
                        .map(|s| s.gpus.get(gi).and_then(f).unwrap_or(f64::NAN))
                        .collect::<Vec<_>>()
                };
                let name = format!("{} {} {}", i18n.t(Key::Gpu), g.index, g.name);
                rows.push(
                    view! { <div class="gpu-name" data-testid="gpu">{name}</div> }.into_any(),
                );
                if let Some(u) = g.util_percent {
                    rows.push(
                        row(
                            format!("{} %", i18n.t(Key::Gpu)),
                            format!("{u:.0}%"),
                            gh(&|g| g.util_percent),
                            100.0,
                            format!("gpu{}-util", g.index),
                        )
                        .into_any(),
                    );
                }
                if let Some(m) = g.mem_used_bytes {
                    let total = g.mem_total_bytes.unwrap_or(0.0);
                    rows.push(
                        row(
                            i18n.t(Key::GpuMem).into(),
                            format!(
                                "{} / {}",
                                model::bytes(m as u64),
                                model::bytes(total as u64)
                            ),
                            gh(&|g| g.mem_used_bytes),
                            total.max(m),
                            format!("gpu{}-mem", g.index),
                        )
                        .into_any(),
                    );
                }
                if let Some(t) = g.temperature_c {
                    rows.push(
                        row(
                            i18n.t(Key::Temperature).into(),
                            format!("{t:.0} °C"),
                            gh(&|g| g.temperature_c),
                            100.0,
                            format!("gpu{}-temp", g.index),
                        )
                        .into_any(),
                    );
                }
                if let Some(p) = g.power_w {
                    rows.push(
                        row(
                            i18n.t(Key::Power).into(),
                            format!("{p:.0} W"),
                            gh(&|g| g.power_w),
                            1000.0,
                            format!("gpu{}-power", g.index),
                        )
                        .into_any(),
                    );
                }
            }
            Some(rows.collect_view())
        })
    };
    view! {
        <section class="panel" data-testid="system">
            <div class="panel-head"><h2>{move || i18n.t(Key::System)}</h2></div>
            {move || when().map(|w| view! { <p class="muted sys-when" data-testid="sys-when">{w}</p> })}
            {move || body().map(|b| b.into_any()).unwrap_or_else(|| view! { <p class="muted">{i18n.t(Key::NoSystem)}</p> }.into_any())}
        </section>
    }
}
