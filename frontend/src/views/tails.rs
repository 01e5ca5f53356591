//! The run page's live tails: the log panel (level and rank filters, search, follow),
//! the system panel (CPU, RAM and each GPU, with sparklines) and, for a distributed run,
//! the world panel (its ranks by node: state, step time, heat strips).

use super::common::{ago, use_clock};
use crate::i18n::{use_i18n, I18n, Key};
use crate::load::use_run;
use crate::model::{self, fold_case, RunView};
use leptos::prelude::*;

const LEVELS: [&str; 5] = ["debug", "info", "warning", "error", "critical"];

fn level_rank(level: &str) -> usize {
    match level {
        "warn" => 2,
        "fatal" => 4,
        l => LEVELS.iter().position(|x| *x == l).unwrap_or(1),
    }
}

#[component]
pub fn LogsPanel() -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let min_level = RwSignal::new(0usize);
    let rank = RwSignal::new(u64::MAX); // every rank
    let query = RwSignal::new(String::new());
    let follow = RwSignal::new(true);
    let list = NodeRef::<leptos::html::Div>::new();
    let lines = Memo::new(move |_| {
        let q = fold_case(&query.get());
        let min = min_level.get();
        let only = rank.get();
        view_state.with(|v| {
            let mut out: Vec<model::LogLine> = v
                .logs
                .iter()
                .rev()
                .filter(|l| level_rank(&l.level) >= min)
                .filter(|l| only == u64::MAX || l.rank.unwrap_or(0) == only)
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
                <h2>{i18n.tr(Key::Logs)}</h2>
                <span class="spacer"></span>
                <select data-testid="log-level" on:change=move |ev| min_level.set(event_target_value(&ev).parse().unwrap_or(0))>
                    <option value="0">{i18n.tr(Key::AllLevels)}</option>
                    {LEVELS.iter().enumerate().skip(1).map(|(i, l)| view! { <option value=i.to_string()>{format!("≥ {l}")}</option> }).collect_view()}
                </select>
                {move || view_state.with(|v| v.state.world.as_ref().map(|w| w.size)).filter(|n| *n > 1).map(|n| view! {
                    <select data-testid="log-rank" on:change=move |ev| rank.set(event_target_value(&ev).parse().unwrap_or(u64::MAX))>
                        <option value="all">{i18n.tr(Key::AllRanks)}</option>
                        {(0..n.min(1024)).map(|r| view! { <option value=r.to_string()>{format!("#{r}")}</option> }).collect_view()}
                    </select>
                })}
                <input type="search" data-testid="log-search" placeholder=i18n.tr(Key::Search)
                    on:input=move |ev| query.set(event_target_value(&ev))/>
                <button class=move || if follow.get() { "btn on" } else { "btn" } data-testid="log-follow"
                    on:click=move |_| follow.update(|f| *f = !*f)>
                    {move || if follow.get() { i18n.t(Key::Follow) } else { i18n.t(Key::Paused) }}
                </button>
            </div>
            <div class="log-list" node_ref=list>
                {super::common::note_when("muted", Key::NoLogs, Signal::derive(move || lines.with(|l| l.is_empty())))}
                <For each=move || lines.get() key=|l| l.id let:l>
                    <div class=format!("log-line lvl-{}", l.level) data-testid="log-line">
                        <span class="log-time mono">{crate::chart::fmt_x(l.time, crate::chart::XMode::Wall)}</span>
                        <span class="log-level">{l.level.clone()}</span>
                        {l.rank.map(|r| view! { <span class="log-rank mono">{format!("#{r}")}</span> })}
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
pub fn SystemPanel(shown: Signal<model::ShownStatus>) -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
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
    let body = move || view_state.with(|v| system_rows(i18n, v).map(|r| r.collect_view()));
    view! {
        <section class="panel" data-testid="system">
            <div class="panel-head"><h2>{i18n.tr(Key::System)}</h2></div>
            {move || when().map(|w| view! { <p class="muted sys-when" data-testid="sys-when">{w}</p> })}
            {move || body().map(|b| b.into_any()).unwrap_or_else(|| view! { <p class="muted">{i18n.t(Key::NoSystem)}</p> }.into_any())}
        </section>
    }
}

/// One figure of the system panel: label, value and sparkline.
fn row(label: String, value: String, spark: Vec<f64>, max: f64, testid: String) -> impl IntoView {
    view! {
        <div class="sys-row" data-testid=testid>
            <span class="sys-label">{label}</span>
            <span class="sys-value mono">{value}</span>
            {sparkline(spark, max)}
        </div>
    }
}

/// The system panel's rows: CPU, RAM, then each GPU's (`None` before any sample).
fn system_rows(i18n: I18n, v: &RunView) -> Option<Vec<AnyView>> {
    let last = v.own_system().last()?;
    let hist = |f: &dyn Fn(&model::SystemSample) -> Option<f64>| {
        v.own_system()
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
        gpu_rows(i18n, v, gi, g, &mut rows);
    }
    Some(rows)
}

/// GPU `gi`'s rows: its name, then utilisation, memory, temperature, power.
fn gpu_rows(i18n: I18n, v: &RunView, gi: usize, g: &model::GpuSample, rows: &mut Vec<AnyView>) {
    let gh = |f: &dyn Fn(&model::GpuSample) -> Option<f64>| {
        v.own_system()
            .map(|s| s.gpus.get(gi).and_then(f).unwrap_or(f64::NAN))
            .collect::<Vec<_>>()
    };
    let name = format!("{} {} {}", i18n.t(Key::Gpu), g.index, g.name);
    rows.push(view! { <div class="gpu-name" data-testid="gpu">{name}</div> }.into_any());
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

/// A distributed run's world: its ranks by node, each with its state, step and step
/// time (the straggler marked) and heat strips of utilisation and memory.
#[component]
pub fn WorldPanel() -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let html = move || {
        let words = model::world::Words {
            node: i18n.t(Key::Node),
            util: i18n.t(Key::Utilisation),
            mem: i18n.t(Key::Memory),
            step_time: i18n.t(Key::StepTime),
            slowest: i18n.t(Key::Slowest),
            states: [
                i18n.t(Key::StatusRunning),
                i18n.t(Key::RankEnded),
                i18n.t(Key::StatusFailed),
                i18n.t(Key::RankLost),
            ],
        };
        view_state.with(|v| model::world::world_html(v, &words).unwrap_or_default())
    };
    let many = Signal::derive(move || {
        view_state.with(|v| v.state.world.as_ref().is_some_and(|w| w.size > 1))
    });
    super::common::show(many, move || {
        view! {
            <section class="panel world" data-testid="world">
                <div class="panel-head"><h2>{i18n.tr(Key::World)}</h2></div>
                <div inner_html=html></div>
            </section>
        }
    })
}
