//! The Queue page (`#/queue`, `?job=<id>` highlights one): per queue its engine, its
//! agents (alive or not, last seen) and its jobs, live from the jobs stream: position,
//! name, priority, status, engine id, agent, why it waits, run, attempts, age, and
//! Cancel or Retry. Finished jobs fold into a "recent" section. Tables are HTML text
//! (see [`super::job`]).

use super::common::{ago, use_clock, ConnBadge};
use super::job::{error_line, load_jobs, on_action, or_dash, run_link, why, Html};
use super::wire;
use crate::api;
use crate::i18n::{use_i18n, I18n, Key};
use crate::route::{Page, Route};
use leptos::prelude::*;
use std::cell::RefCell;
use stepwatch_events::jobs::{JobStatus, JobView, QueueInfo};

thread_local! {
    /// Warnings of the job just submitted, shown once by the next Queue page.
    static FLASH: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Hands the submit answer's warnings to the Queue page about to open.
pub fn flash(warnings: Vec<String>) {
    FLASH.with(|f| *f.borrow_mut() = warnings);
}

/// The link to the Queue page with `job` highlighted.
pub fn queue_href(job: &str) -> String {
    Route::hash(&Page::Queue, &[("job", job.to_string())])
}

/// Seconds between refreshes of the queues (their agents' heartbeats).
pub const QUEUES_EVERY_S: u64 = 5;

/// Every queue the caller may see, from `GET /api/queues`, refreshed every
/// [`QUEUES_EVERY_S`] seconds for the lifetime of the calling component.
pub fn load_queues(base: &str) -> RwSignal<Option<Vec<QueueInfo>>> {
    let queues = RwSignal::new(None::<Vec<QueueInfo>>);
    let url = api::launch_url(base, "/queues");
    let fetch = move || {
        let url = url.clone();
        leptos::task::spawn_local(async move {
            if let Some(v) = api::get_value(&url).await {
                queues.try_set(Some(wire::list(&v, wire::queue_info)));
            }
        });
    };
    fetch();
    if let Ok(h) = set_interval_with_handle(fetch, std::time::Duration::from_secs(QUEUES_EVERY_S)) {
        on_cleanup(move || h.clear());
    }
    queues
}

/// Waiting jobs by position, then the others, newest first.
fn order(a: &&JobView, b: &&JobView) -> std::cmp::Ordering {
    let rank = |j: &JobView| {
        (
            j.state.status != JobStatus::Queued,
            j.position.unwrap_or(usize::MAX),
        )
    };
    let t = |j: &JobView| j.state.created_at.unwrap_or(0.0);
    rank(a).cmp(&rank(b)).then_with(|| t(b).total_cmp(&t(a)))
}

/// One queue's jobs, open or finished, as a table.
fn table_html(i18n: I18n, jobs: &[&JobView], highlight: &str, now: f64) -> String {
    let mut h = Html::default();
    h.raw("<table class=\"grid jobs\" data-testid=\"jobs\"><thead><tr><th class=\"num\">#</th>");
    for k in [
        Key::ColName,
        Key::Priority,
        Key::ColStatus,
        Key::Engine,
        Key::EngineId,
        Key::Agent,
        Key::Why,
        Key::ColRun,
        Key::Attempts,
        Key::Age,
    ] {
        h.el("th", "", i18n.t(k));
    }
    h.raw("<th></th></tr></thead><tbody>");
    for j in jobs {
        let s = &j.state;
        let name = s.spec.as_ref().map_or("", |s| s.name.as_str());
        h.raw("<tr data-testid=\"job-row\" class=\"")
            .raw(if s.job == highlight { "hl" } else { "" })
            .raw("\" data-status=\"")
            .raw(s.status.as_str())
            .raw("\" data-job=\"")
            .text(&s.job)
            .raw("\">")
            .el(
                "td",
                "num",
                &j.position.map(|p| p.to_string()).unwrap_or_default(),
            )
            .raw("<td><b>")
            .text(name)
            .raw("</b>")
            .el("span", "runid", &s.job)
            .raw("</td>")
            .el("td", "num", &s.priority.to_string())
            .raw("<td>")
            .badge(i18n, s.status)
            .raw("</td>")
            .el("td", "", &j.engine)
            .el("td", "mono small", or_dash(&s.engine_id))
            .raw("<td class=\"nw\">");
        // A finished job has no agent to be alive or not.
        if !s.is_terminal() {
            h.dot(i18n, j.agent_alive);
        }
        h.text(or_dash(&s.agent))
            .raw("</td><td class=\"cmd-msg\" data-testid=\"job-why\">")
            .text(&why(i18n, j))
            .raw("</td><td>");
        run_link(&mut h, j);
        h.raw("</td><td class=\"num\" title=\"")
            .text(i18n.t(Key::AttemptsHint))
            .raw("\">")
            .text(&format!("{} / {}", s.attempts, s.retries_left))
            .raw("</td>")
            .el("td", "muted", &ago(i18n, s.created_at, now))
            .raw("<td class=\"nw\">")
            .actions(i18n, j)
            .raw("</td></tr>");
    }
    h.raw("</tbody></table>");
    h.0
}

/// A queue's head: engine, description, counts, agents, and the warning when no live
/// agent serves it.
fn head_html(i18n: I18n, name: &str, q: Option<&QueueInfo>, now: f64) -> String {
    let mut h = Html::default();
    h.raw("<div class=\"panel-head queue-head\"><h2>")
        .text(name)
        .raw("</h2>");
    let Some(q) = q else {
        h.raw("</div>");
        return h.0;
    };
    h.el("span", "tag engine", &q.engine)
        .el("span", "muted small", &q.description)
        .raw("<span class=\"spacer\"></span>")
        .el(
            "span",
            "muted small",
            &format!(
                "{} {} · {} {}",
                q.queued,
                i18n.t(Key::Waiting),
                q.active,
                i18n.t(Key::Active)
            ),
        )
        .raw("</div>");
    if q.live_agents().next().is_none() {
        h.raw("<div class=\"banner warn\" data-testid=\"no-agent\">")
            .text(&format!(
                "{} {name}{}",
                i18n.t(Key::NoAgentBefore),
                i18n.t(Key::NoAgentAfter)
            ))
            .raw("</div>");
    }
    h.raw("<div class=\"agents\" data-testid=\"agents\">").el(
        "span",
        "muted small",
        &format!("{}:", i18n.t(Key::Agents)),
    );
    for a in &q.agents {
        h.raw("<span class=\"agent\" data-testid=\"agent\">")
            .dot(i18n, a.alive)
            .el("b", "", &a.agent)
            .el(
                "span",
                "muted small",
                &format!(
                    " {} · {}/{} · {}",
                    a.host,
                    a.busy,
                    a.slots,
                    ago(i18n, Some(a.last_seen), now)
                ),
            )
            .raw("</span>");
    }
    if q.agents.is_empty() {
        h.el("span", "muted small", "–");
    }
    h.raw("</div>");
    h.0
}

#[component]
pub fn QueuePage(base: String, route: Route) -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    let (jobs, conn) = load_jobs(&base, None);
    let queues = load_queues(&base);
    let warnings = FLASH.with(|f| std::mem::take(&mut *f.borrow_mut()));
    let highlight = StoredValue::new(route.get("job").unwrap_or_default().to_string());
    let names = Memo::new(move |_| {
        let mut names: Vec<String> =
            queues.with(|q| q.iter().flatten().map(|q| q.name.clone()).collect());
        jobs.with(|m| {
            for j in m.values() {
                if !names.contains(&j.queue) {
                    names.push(j.queue.clone());
                }
            }
        });
        names
    });
    let error = RwSignal::new(None);
    // Brings the highlighted job's row into view once, when it first appears.
    let scrolled = StoredValue::new(false);
    Effect::new(move |_| {
        let job = highlight.get_value();
        if job.is_empty() || scrolled.get_value() || !jobs.with(|m| m.contains_key(&job)) {
            return;
        }
        scrolled.set_value(true);
        request_animation_frame(move || {
            let sel = format!("tr[data-job=\"{job}\"]");
            if let Some(e) = document().query_selector(&sel).ok().flatten() {
                e.scroll_into_view();
            }
        });
    });
    let section = move |name: String| {
        let head = {
            let name = name.clone();
            move || {
                let now = clock.get();
                queues.with(|q| {
                    let q = q.iter().flatten().find(|q| q.name == name);
                    head_html(i18n, &name, q, now)
                })
            }
        };
        let rows = |finished: bool| {
            let name = name.clone();
            Memo::new(move |_| {
                let now = clock.get();
                jobs.with(|m| {
                    let mut js: Vec<&JobView> = m
                        .values()
                        .filter(|j| j.queue == name && j.state.is_terminal() == finished)
                        .collect();
                    crate::model::sort::sort_by(&mut js, order);
                    let n = js.len();
                    (n, highlight.with_value(|hl| table_html(i18n, &js, hl, now)))
                })
            })
        };
        let (open, done) = (rows(false), rows(true));
        view! {
            <section class="panel" data-testid="queue" data-queue=name.clone()>
                <div inner_html=head></div>
                <div class="scroll" class:hide=move || open.with(|o| o.0 == 0) inner_html=move || open.with(|o| o.1.clone())></div>
                <p class="muted small" class:hide=move || open.with(|o| o.0 != 0)>{i18n.tr(Key::NoOpenJobs)}</p>
                <details data-testid="recent" class:hide=move || done.with(|o| o.0 == 0)>
                    <summary>{move || format!("{} ({})", i18n.t(Key::Recent), done.with(|o| o.0))}</summary>
                    <div class="scroll" inner_html=move || done.with(|o| o.1.clone())></div>
                </details>
            </section>
        }
    };
    view! {
        <div class="crumbs"><a href="#/">{i18n.tr(Key::BackToRuns)}</a></div>
        <div class="page-head">
            <h1>{i18n.tr(Key::Queues)}</h1>
            <span class="spacer"></span>
            <a class="btn primary" href="#/launch" data-testid="to-launch">{i18n.tr(Key::Launch)}</a>
            <ConnBadge conn=conn/>
        </div>
        {(!warnings.is_empty()).then(|| view! {
            <div class="banner warn" data-testid="submit-warnings">{warnings.join(" · ")}</div>
        })}
        {error_line(error)}
        {super::common::note_when("empty", Key::NoQueues, Signal::derive(move || queues.with(|q| q.as_ref().is_some_and(Vec::is_empty)) && names.with(Vec::is_empty)))}
        <div on:click=on_action(base, error)>
            <For each=move || names.get() key=|n| n.clone() let:name>
                {section(name)}
            </For>
        </div>
    }
}
