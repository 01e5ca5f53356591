//! The application shell and its pages: the runs list and the run page.

use crate::api::{self, ConnState, Stream};
use crate::chart;
use crate::i18n::{initial_lang, remember_lang, use_i18n, I18n, Key, Lang};
use crate::model::{self, RunView, ShownStatus};
use leptos::prelude::*;
use send_wrapper::SendWrapper;
use std::collections::BTreeMap;
use stepwatch_events::{num, Event, RunStatus, RunSummary};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Which page the URL's hash names: `#/` or `#/runs/<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Runs,
    Run(String),
}

impl Route {
    pub fn from_hash(hash: &str) -> Route {
        let path = hash.trim_start_matches('#').trim_start_matches('/');
        match path.strip_prefix("runs/") {
            Some(id) if !id.is_empty() => Route::Run(
                js_sys::decode_uri_component(id)
                    .ok()
                    .and_then(|s| s.as_string())
                    .unwrap_or_else(|| id.to_string()),
            ),
            _ => Route::Runs,
        }
    }
}

/// The link to a run's page.
pub fn run_href(run: &str) -> String {
    format!("#/runs/{run}")
}

fn current_hash() -> String {
    window().location().hash().unwrap_or_default()
}

/// A clock ticking every second, for relative times and staleness.
#[derive(Clone, Copy)]
struct Clock(RwSignal<f64>);

fn status_key(s: ShownStatus) -> Key {
    match s {
        ShownStatus::Stale => Key::StatusStale,
        ShownStatus::Run(RunStatus::Pending) => Key::StatusPending,
        ShownStatus::Run(RunStatus::Running) => Key::StatusRunning,
        ShownStatus::Run(RunStatus::Paused) => Key::StatusPaused,
        ShownStatus::Run(RunStatus::Completed) => Key::StatusCompleted,
        ShownStatus::Run(RunStatus::Failed) => Key::StatusFailed,
        ShownStatus::Run(RunStatus::Stopped) => Key::StatusStopped,
    }
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "–".to_string(), |v| num::display(v, digits))
}

fn ago(i18n: I18n, then: Option<f64>, now: f64) -> String {
    let Some(t) = then else {
        return "–".into();
    };
    let d = (now - t).max(0.0);
    if d < 5.0 {
        i18n.t(Key::JustNow).to_string()
    } else if d < 60.0 {
        format!("{} {}", d as u64, i18n.t(Key::SecondsAgo))
    } else if d < 3600.0 {
        format!("{} {}", (d / 60.0) as u64, i18n.t(Key::MinutesAgo))
    } else if d < 86400.0 {
        format!("{} {}", (d / 3600.0) as u64, i18n.t(Key::HoursAgo))
    } else {
        format!("{} {}", (d / 86400.0) as u64, i18n.t(Key::DaysAgo))
    }
}

/// Mounts the app on the page's body.
pub fn mount() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
pub fn App() -> impl IntoView {
    let lang = RwSignal::new(initial_lang());
    provide_context(I18n(lang));
    Effect::new(move |_| remember_lang(lang.get()));

    let relay = RwSignal::new(None::<String>);
    leptos::task::spawn_local(async move {
        relay.set(Some(api::resolve_relay().await));
    });

    let clock = RwSignal::new(api::now_s());
    provide_context(Clock(clock));
    if let Ok(handle) = set_interval_with_handle(
        move || clock.set(api::now_s()),
        std::time::Duration::from_secs(1),
    ) {
        on_cleanup(move || handle.clear());
    }

    let route = RwSignal::new(Route::from_hash(&current_hash()));
    let on_hash = Closure::<dyn FnMut()>::new(move || route.set(Route::from_hash(&current_hash())));
    let _ =
        window().add_event_listener_with_callback("hashchange", on_hash.as_ref().unchecked_ref());
    on_hash.forget();

    let i18n = use_i18n();
    view! {
        <header class="topbar">
            <a class="brand" href="#/" data-testid="brand">
                <span class="logo">"◷"</span>
                {move || i18n.t(Key::AppTitle)}
            </a>
            <span class="tagline">{move || i18n.t(Key::Tagline)}</span>
            <span class="spacer"></span>
            <LangSwitch/>
        </header>
        <main class="content">
            {move || match (relay.get(), route.get()) {
                (None, _) => view! { <p class="muted">{i18n.t(Key::Connecting)}</p> }.into_any(),
                (Some(base), Route::Runs) => view! { <RunsPage base=base/> }.into_any(),
                (Some(base), Route::Run(run)) => view! { <RunPage base=base run=run/> }.into_any(),
            }}
        </main>
    }
}

#[component]
fn LangSwitch() -> impl IntoView {
    let i18n = use_i18n();
    let pick = move |l: Lang| move |_| i18n.0.set(l);
    let class = move |l: Lang| {
        if i18n.0.get() == l {
            "lang on"
        } else {
            "lang"
        }
    };
    view! {
        <div class="langs" role="group" aria-label=move || i18n.t(Key::Language)>
            <button class=move || class(Lang::En) data-testid="lang-en" on:click=pick(Lang::En)>"EN"</button>
            <button class=move || class(Lang::Zh) data-testid="lang-zh" on:click=pick(Lang::Zh)>"中文"</button>
        </div>
    }
}

#[component]
fn ConnBadge(conn: RwSignal<ConnState>) -> impl IntoView {
    let i18n = use_i18n();
    view! {
        <span class=move || match conn.get() {
            ConnState::Live => "conn live",
            ConnState::Connecting => "conn",
            ConnState::Reconnecting => "conn down",
        } data-testid="conn">
            {move || i18n.t(match conn.get() {
                ConnState::Live => Key::Live,
                ConnState::Connecting => Key::Connecting,
                ConnState::Reconnecting => Key::Reconnecting,
            })}
        </span>
    }
}

#[component]
fn StatusPill(status: Signal<ShownStatus>) -> impl IntoView {
    let i18n = use_i18n();
    view! {
        <span class=move || format!("status {}", status.get().as_str()) data-testid="status"
            data-status=move || status.get().as_str()>
            <span class="dot">"●"</span>
            {move || i18n.t(status_key(status.get()))}
        </span>
    }
}

#[component]
fn RunsPage(base: String) -> impl IntoView {
    let i18n = use_i18n();
    let Clock(clock) = expect_context::<Clock>();
    let runs = RwSignal::new(BTreeMap::<String, RunSummary>::new());
    let conn = RwSignal::new(ConnState::Connecting);
    let stream = Stream::open(
        &format!("{base}/api/stream"),
        &["run"],
        move |batch| {
            runs.update(|m| {
                for (_, data) in batch {
                    if let Ok(s) = serde_json::from_str::<RunSummary>(&data) {
                        m.insert(s.run.clone(), s);
                    }
                }
            })
        },
        move |c| conn.set(c),
    );
    let stream = SendWrapper::new(stream);
    on_cleanup(move || drop(stream));

    let sorted = move || {
        let mut v: Vec<RunSummary> = runs.with(|m| m.values().cloned().collect());
        v.sort_by(|a, b| {
            b.started_at
                .unwrap_or(0.0)
                .total_cmp(&a.started_at.unwrap_or(0.0))
                .then_with(|| a.run.cmp(&b.run))
        });
        v
    };
    view! {
        <section class="panel">
            <div class="panel-head">
                <h1>{move || i18n.t(Key::AllRuns)}</h1>
                <span class="count">{move || runs.with(|m| m.len())}</span>
                <span class="spacer"></span>
                <ConnBadge conn=conn/>
            </div>
            <Show when=move || runs.with(|m| m.is_empty())>
                <div class="empty">
                    <p>{move || i18n.t(Key::NoRuns)}</p>
                    <code>{move || i18n.t(Key::NoRunsHint)}</code>
                </div>
            </Show>
            <Show when=move || runs.with(|m| !m.is_empty())>
                <table class="runs" data-testid="runs-table">
                    <thead><tr>
                        <th>{move || i18n.t(Key::ColName)}</th>
                        <th>{move || i18n.t(Key::ColStatus)}</th>
                        <th>{move || i18n.t(Key::ColProgress)}</th>
                        <th class="num">{move || i18n.t(Key::ColStep)}</th>
                        <th class="num">{move || i18n.t(Key::ColLoss)}</th>
                        <th class="num">{move || i18n.t(Key::ColBestLoss)}</th>
                        <th>{move || i18n.t(Key::ColStarted)}</th>
                        <th class="num">{move || i18n.t(Key::ColDuration)}</th>
                    </tr></thead>
                    <tbody>
                        <For each=sorted key=|s| (s.run.clone(), s.last_id) let:s>
                            <RunRow s=s clock=clock/>
                        </For>
                    </tbody>
                </table>
            </Show>
        </section>
    }
}

#[component]
fn RunRow(s: RunSummary, clock: RwSignal<f64>) -> impl IntoView {
    let i18n = use_i18n();
    let status = s.status;
    let last = s.last_event_at;
    let shown = Signal::derive(move || model::shown_status(status, last, clock.get()));
    let epoch = model::progress(s.current_epoch, s.total_epochs);
    let batch = model::progress(s.current_batch, s.total_batches);
    let frac = model::overall_fraction(&s);
    let started = s.started_at;
    let end = s.ended_at;
    let dur = move || {
        let stop = if status.is_live() {
            clock.get()
        } else {
            end.or(last).unwrap_or(clock.get())
        };
        started.map_or("–".into(), |t| model::duration(stop - t))
    };
    let loss_class = if s.current_loss.is_some_and(|l| !l.is_finite()) {
        "num alert"
    } else {
        "num"
    };
    view! {
        <tr data-testid="run-row" data-run=s.run.clone()>
            <td class="name"><a href=run_href(&s.run)>{s.name.clone()}</a>
                <span class="runid">{(s.name != s.run).then(|| s.run.clone())}</span></td>
            <td><StatusPill status=shown/></td>
            <td class="progress-cell">
                <div class="bar"><div class="fill" style=format!("width:{:.1}%", frac * 100.0)></div></div>
                <span class="small">{move || i18n.t(Key::Epoch)}" "{epoch.clone()}" · "{move || i18n.t(Key::Batch)}" "{batch.clone()}</span>
            </td>
            <td class="num">{s.step}</td>
            <td class=loss_class data-testid="row-loss">{fmt_opt(s.current_loss, 5)}</td>
            <td class="num">{fmt_opt(s.best_loss, 5)}</td>
            <td>{move || ago(i18n, started, clock.get())}</td>
            <td class="num">{dur}</td>
        </tr>
    }
}

#[component]
fn RunPage(base: String, run: String) -> impl IntoView {
    let i18n = use_i18n();
    let Clock(clock) = expect_context::<Clock>();
    let view_state = RwSignal::new(RunView::new(&run));
    let conn = RwSignal::new(ConnState::Connecting);
    let stream = Stream::open(
        &format!("{base}/api/runs/{run}/stream"),
        api::RUN_EVENT_NAMES,
        move |batch| {
            view_state.update(|v| {
                for (_, data) in batch {
                    if let Ok(e) = Event::from_json(&data) {
                        v.apply(&e);
                    }
                }
            })
        },
        move |c| conn.set(c),
    );
    let stream = SendWrapper::new(stream);
    on_cleanup(move || drop(stream));

    let st = move || view_state.with(|v| v.state.clone());
    let shown = Signal::derive(move || {
        view_state.with(|v| model::shown_status(v.state.status, v.state.last_event_at, clock.get()))
    });
    let has_events = move || view_state.with(|v| v.state.event_count > 0);
    let non_finite =
        move || view_state.with(|v| v.state.current_loss.is_some_and(|l| !l.is_finite()));
    let elapsed = move || {
        let s = st();
        let stop = if s.status.is_live() {
            clock.get()
        } else {
            s.ended_at.or(s.last_event_at).unwrap_or(clock.get())
        };
        s.started_at
            .map_or("–".into(), |t| model::duration(stop - t))
    };

    view! {
        <div class="crumbs"><a href="#/" data-testid="back">{move || i18n.t(Key::BackToRuns)}</a></div>
        <section class="panel run-head" data-testid="run-header" data-run=run.clone()>
            <div class="panel-head">
                <h1 data-testid="run-name">{move || view_state.with(|v| v.state.name.clone())}</h1>
                <StatusPill status=shown/>
                <span class="spacer"></span>
                <span class="muted small"><span data-testid="event-count">{move || view_state.with(|v| v.state.event_count)}</span>" "{move || i18n.t(Key::Events)}</span>
                <ConnBadge conn=conn/>
            </div>
            <Show when=move || !has_events()>
                <p class="muted">{move || i18n.t(Key::RunNotFound)}</p>
            </Show>
            <Show when=non_finite>
                <div class="banner alert" data-testid="nonfinite-banner">{move || i18n.t(Key::NonFiniteLoss)}</div>
            </Show>
            {move || view_state.with(|v| v.state.last_error.clone()).map(|e| view! {
                <div class="banner warn" data-testid="error-banner"><b>{i18n.t(Key::LastError)}": "</b>{e.message}</div>
            })}
            <div class="stats">
                <Stat label=Key::Epoch testid="epoch"
                    value=Signal::derive(move || { let s = st(); model::progress(s.current_epoch, s.total_epochs) })
                    frac=Signal::derive(move || { let s = st(); model::fraction(s.current_epoch, s.total_epochs) })/>
                <Stat label=Key::Batch testid="batch"
                    value=Signal::derive(move || { let s = st(); model::progress(s.current_batch, s.total_batches) })
                    frac=Signal::derive(move || { let s = st(); model::fraction(s.current_batch + 1, s.total_batches) })/>
                <Stat label=Key::Loss testid="loss"
                    value=Signal::derive(move || fmt_opt(st().current_loss, 5)) alert=Signal::derive(non_finite)/>
                <Stat label=Key::AvgLoss testid="avg-loss"
                    value=Signal::derive(move || fmt_opt(st().avg_loss, 5))/>
                <Stat label=Key::LearningRate testid="lr"
                    value=Signal::derive(move || fmt_opt(st().learning_rate, 3))/>
                <Stat label=Key::Step testid="step"
                    value=Signal::derive(move || st().step.to_string())/>
                <Stat label=Key::BestLoss testid="best-loss"
                    value=Signal::derive(move || fmt_opt(st().best_loss, 5))/>
                <Stat label=Key::Elapsed testid="elapsed"
                    value=Signal::derive(elapsed)/>
            </div>
        </section>
        <section class="panel">
            <div class="panel-head"><h2>{move || i18n.t(Key::LossCurve)}</h2></div>
            <LossChart view_state=view_state/>
        </section>
        <div class="two-col">
            <Checkpoints view_state=view_state/>
            <ConfigTable view_state=view_state/>
        </div>
    }
}

#[component]
fn Stat(
    label: Key,
    testid: &'static str,
    value: Signal<String>,
    #[prop(optional)] frac: Option<Signal<f64>>,
    #[prop(optional)] alert: Option<Signal<bool>>,
) -> impl IntoView {
    let i18n = use_i18n();
    let alert = move || alert.is_some_and(|a| a.get());
    view! {
        <div class="stat">
            <div class="label">{move || i18n.t(label)}</div>
            <div class=move || if alert() { "value alert" } else { "value" } data-testid=testid>{value}</div>
            {frac.map(|f| view! {
                <div class="bar"><div class="fill" style=move || format!("width:{:.1}%", f.get() * 100.0)></div></div>
            })}
        </div>
    }
}

#[component]
fn LossChart(view_state: RwSignal<RunView>) -> impl IntoView {
    let i18n = use_i18n();
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    let drawn = RwSignal::new(chart::Drawn::default());
    let resized = RwSignal::new(0u32);
    let on_resize = Closure::<dyn FnMut()>::new(move || resized.update(|n| *n += 1));
    let _ = window().add_event_listener_with_callback("resize", on_resize.as_ref().unchecked_ref());
    let on_resize = SendWrapper::new(on_resize);
    on_cleanup(move || {
        let _ = window()
            .remove_event_listener_with_callback("resize", on_resize.as_ref().unchecked_ref());
    });
    Effect::new(move |_| {
        resized.track();
        let label = i18n.t(Key::Step);
        if let Some(c) = canvas.get() {
            let d = view_state.with(|v| chart::draw_line(&c, &v.loss, label));
            drawn.set(d);
        }
    });
    view! {
        <div class="chart-box">
            <canvas node_ref=canvas class="chart" data-testid="loss-chart"
                data-points=move || drawn.get().points data-nonfinite=move || drawn.get().non_finite></canvas>
            <Show when=move || view_state.with(|v| v.loss.is_empty())>
                <div class="chart-empty">{move || i18n.t(Key::NoPointsYet)}</div>
            </Show>
        </div>
    }
}

#[component]
fn Checkpoints(view_state: RwSignal<RunView>) -> impl IntoView {
    let i18n = use_i18n();
    let Clock(clock) = expect_context::<Clock>();
    let list = move || {
        view_state.with(|v| {
            let best = v.state.best_checkpoint().map(|c| c.path.clone());
            v.state
                .checkpoints
                .iter()
                .rev()
                .take(10)
                .map(|c| (c.clone(), best.as_deref() == Some(c.path.as_str())))
                .collect::<Vec<_>>()
        })
    };
    view! {
        <section class="panel">
            <div class="panel-head"><h2>{move || i18n.t(Key::Checkpoints)}</h2></div>
            <Show when=move || view_state.with(|v| v.state.checkpoints.is_empty())>
                <p class="muted">{move || i18n.t(Key::NoCheckpoints)}</p>
            </Show>
            <ul class="ckpts" data-testid="checkpoints">
                {move || list().into_iter().map(|(c, best)| view! {
                    <li>
                        <span class="file">{model::file_name(&c.path).to_string()}</span>
                        {c.size_bytes.map(|b| view! { <span class="muted">" ("{model::bytes(b)}")"</span> })}
                        <span class="muted">" · "{ago(i18n, c.time, clock.get())}</span>
                        {best.then(|| view! { <span class="tag best">{i18n.t(Key::Best)}</span> })}
                    </li>
                }).collect_view()}
            </ul>
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
                .map(|(k, v)| {
                    let val = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), val)
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
        </section>
    }
}
