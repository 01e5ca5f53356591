//! The Queue page (`#/queue`, `?job=<id>` highlights one): per queue its engine, its
//! agents (alive or not, last seen) and its jobs, live from the jobs stream: position,
//! priority, status, engine and engine id, agent, why it waits, run, attempts, age, and
//! Cancel or Retry. Finished jobs fold into a "recent" section.

use super::common::{ago, use_clock, ConnBadge};
use super::job::{load_jobs, or_dash, why, AliveDot, JobActions, JobBadge};
use crate::api;
use crate::i18n::{use_i18n, Key};
use crate::route::{run_href, Page, Route};
use leptos::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use stepwatch_events::jobs::{JobStatus, JobView, QueueInfo};

thread_local! {
    /// Warnings of the job just submitted, shown once by the next Queue page.
    static FLASH: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Hands the submit answer's warnings to the Queue page about to open.
pub fn flash(warnings: Vec<String>) {
    FLASH.with(|f| *f.borrow_mut() = warnings);
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
            if let Some(q) = api::get_json::<Vec<QueueInfo>>(&url).await {
                queues.try_set(Some(q));
            }
        });
    };
    fetch();
    if let Ok(h) = set_interval_with_handle(fetch, std::time::Duration::from_secs(QUEUES_EVERY_S)) {
        on_cleanup(move || h.clear());
    }
    queues
}

/// Open jobs first (waiting ones by position, then the newest), finished ones after.
fn order(a: &JobView, b: &JobView) -> std::cmp::Ordering {
    let rank = |j: &JobView| {
        (
            j.state.is_terminal(),
            j.state.status != JobStatus::Queued,
            j.position.unwrap_or(usize::MAX),
        )
    };
    rank(a).cmp(&rank(b)).then_with(|| {
        let t = |j: &JobView| j.state.updated_at.or(j.state.created_at).unwrap_or(0.0);
        t(b).total_cmp(&t(a))
    })
}

#[component]
pub fn QueuePage(base: String, route: Route) -> impl IntoView {
    let i18n = use_i18n();
    let (jobs, conn) = load_jobs(&base, None);
    let queues = load_queues(&base);
    let warnings = FLASH.with(|f| std::mem::take(&mut *f.borrow_mut()));
    let highlight = route.get("job").unwrap_or_default().to_string();
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
    scroll_to(highlight.clone(), jobs);
    view! {
        <div class="crumbs"><a href="#/">{move || i18n.t(Key::BackToRuns)}</a></div>
        <div class="page-head">
            <h1>{move || i18n.t(Key::Queues)}</h1>
            <span class="spacer"></span>
            <a class="btn primary" href="#/launch" data-testid="to-launch">{move || i18n.t(Key::Launch)}</a>
            <ConnBadge conn=conn/>
        </div>
        {(!warnings.is_empty()).then(|| view! {
            <div class="banner warn" data-testid="submit-warnings">
                {warnings.into_iter().map(|w| view! { <div>{w}</div> }).collect_view()}
            </div>
        })}
        <Show when=move || queues.with(|q| q.as_ref().is_some_and(Vec::is_empty)) && names.with(Vec::is_empty)>
            <p class="empty">{move || i18n.t(Key::NoQueues)}</p>
        </Show>
        <For each=move || names.get() key=|n| n.clone() let:name>
            <QueueSection name=name jobs=jobs queues=queues highlight=highlight.clone() base=base.clone()/>
        </For>
    }
}

/// Brings the highlighted job's row into view once it appears.
fn scroll_to(job: String, jobs: ReadSignal<BTreeMap<String, JobView>>) {
    if job.is_empty() {
        return;
    }
    let done = StoredValue::new(false);
    Effect::new(move |_| {
        if done.get_value() || !jobs.with(|m| m.contains_key(&job)) {
            return;
        }
        done.set_value(true);
        let sel = format!("tr[data-job=\"{job}\"]");
        request_animation_frame(move || {
            if let Some(e) = document().query_selector(&sel).ok().flatten() {
                e.scroll_into_view();
            }
        });
    });
}

#[component]
fn QueueSection(
    name: String,
    jobs: ReadSignal<BTreeMap<String, JobView>>,
    queues: RwSignal<Option<Vec<QueueInfo>>>,
    highlight: String,
    base: String,
) -> impl IntoView {
    let i18n = use_i18n();
    let info = {
        let name = name.clone();
        Memo::new(move |_| queues.with(|q| q.iter().flatten().find(|q| q.name == name).cloned()))
    };
    let ids = {
        let name = name.clone();
        move |finished: bool| {
            let name = name.clone();
            Memo::new(move |_| {
                jobs.with(|m| {
                    let mut js: Vec<&JobView> = m
                        .values()
                        .filter(|j| j.queue == name && j.state.is_terminal() == finished)
                        .collect();
                    js.sort_by(|a, b| order(a, b));
                    js.into_iter()
                        .map(|j| j.state.job.clone())
                        .collect::<Vec<_>>()
                })
            })
        }
    };
    let (open, done) = (ids(false), ids(true));
    let no_agent =
        move || info.with(|q| q.as_ref().is_some_and(|q| q.live_agents().next().is_none()));
    let field = move |f: fn(&QueueInfo) -> String| move || info.with(|q| q.as_ref().map(f));
    let hb = StoredValue::new((highlight, base));
    let table = move |ids: Memo<Vec<String>>| {
        let (highlight, base) = hb.get_value();
        view! { <JobTable ids=ids jobs=jobs highlight=highlight base=base/> }
    };
    let warn = {
        let name = name.clone();
        Signal::derive(move || {
            format!(
                "{} {name}{}",
                i18n.t(Key::NoAgentBefore),
                i18n.t(Key::NoAgentAfter)
            )
        })
    };
    view! {
        <section class="panel" data-testid="queue" data-queue=name.clone()>
            <div class="panel-head">
                <h2>{name.clone()}</h2>
                <span class="tag engine">{field(|q| q.engine.clone())}</span>
                <span class="muted small">{field(|q| q.description.clone())}</span>
                <span class="spacer"></span>
                <span class="muted small">{field(|q| q.queued.to_string())}" "{move || i18n.t(Key::Waiting)}
                    " · "{field(|q| q.active.to_string())}" "{move || i18n.t(Key::Active)}</span>
            </div>
            <Show when=no_agent>
                <div class="banner warn" data-testid="no-agent">{warn}</div>
            </Show>
            <Agents info=info/>
            <Show when=move || !open.with(Vec::is_empty) fallback=move || view! { <p class="muted small">{move || i18n.t(Key::NoOpenJobs)}</p> }>
                {table(open)}
            </Show>
            <Show when=move || !done.with(Vec::is_empty)>
                <details data-testid="recent">
                    <summary>{move || i18n.t(Key::Recent)}" ("{move || done.with(Vec::len)}")"</summary>
                    {table(done)}
                </details>
            </Show>
        </section>
    }
}

#[component]
fn Agents(info: Memo<Option<QueueInfo>>) -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    let agents = move || info.with(|q| q.as_ref().map(|q| q.agents.clone()).unwrap_or_default());
    view! {
        <div class="agents" data-testid="agents">
            <span class="muted small">{move || i18n.t(Key::Agents)}":"</span>
            {move || agents().into_iter().map(|a| view! {
                <span class="agent" data-testid="agent" data-agent=a.agent.clone()>
                    <AliveDot alive=a.alive/>" "<b>{a.agent.clone()}</b>
                    <span class="muted small">" "{a.host.clone()}" · "{a.busy}"/"{a.slots}" · "
                        {move || ago(i18n, Some(a.last_seen), clock.get())}</span>
                </span>
            }).collect_view()}
            <Show when=move || info.with(|q| q.as_ref().is_some_and(|q| q.agents.is_empty()))>
                <span class="muted small">"–"</span>
            </Show>
        </div>
    }
}

#[component]
fn JobTable(
    ids: Memo<Vec<String>>,
    jobs: ReadSignal<BTreeMap<String, JobView>>,
    highlight: String,
    base: String,
) -> impl IntoView {
    let i18n = use_i18n();
    let th = move |k: Key| view! { <th>{move || i18n.t(k)}</th> };
    view! {
        <div class="scroll">
            <table class="grid jobs" data-testid="jobs">
                <thead><tr>
                    <th class="num">"#"</th>
                    {th(Key::ColName)}
                    {th(Key::Priority)}
                    {th(Key::ColStatus)}
                    {th(Key::EngineId)}
                    {th(Key::Agent)}
                    {th(Key::Why)}
                    {th(Key::ColRun)}
                    {th(Key::Attempts)}
                    {th(Key::Age)}
                    <th></th>
                </tr></thead>
                <tbody>
                    <For each=move || ids.get() key=|id| id.clone() let:id>
                        <JobRow id=id.clone() jobs=jobs hl=id == highlight base=base.clone()/>
                    </For>
                </tbody>
            </table>
        </div>
    }
}

#[component]
fn JobRow(
    id: String,
    jobs: ReadSignal<BTreeMap<String, JobView>>,
    hl: bool,
    base: String,
) -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    let job = {
        let id = id.clone();
        Signal::derive(move || jobs.with(|m| m.get(&id).cloned()))
    };
    let get = move |f: fn(&JobView) -> String| {
        move || job.with(|j| j.as_ref().map(f).unwrap_or_default())
    };
    let status = Signal::derive(move || {
        job.with(|j| j.as_ref().map(|j| j.state.status).unwrap_or_default())
    });
    let alive = Signal::derive(move || job.with(|j| j.as_ref().is_some_and(|j| j.agent_alive)));
    let run = move || job.with(|j| j.as_ref().and_then(|j| j.state.run.clone()));
    view! {
        <tr data-testid="job-row" data-job=id.clone() class:hl=hl data-status=move || status.get().as_str()>
            <td class="num">{get(|j| j.position.map(|p| p.to_string()).unwrap_or_default())}</td>
            <td><b>{get(|j| j.state.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default())}</b>
                <span class="runid">{id.clone()}</span></td>
            <td class="num">{get(|j| j.state.priority.to_string())}</td>
            <td><JobBadge status=status/></td>
            <td class="mono small">{get(|j| format!("{} {}", j.engine, or_dash(&j.state.engine_id)))}</td>
            <td><AliveDot alive=alive/>" "{get(|j| or_dash(&j.state.agent))}</td>
            <td class="cmd-msg" data-testid="job-why">{move || job.with(|j| j.as_ref().map(|j| why(i18n, j)))}</td>
            <td>{move || run().map(|r| view! { <a href=run_href(&r) data-testid="job-run">{r.clone()}</a> })}</td>
            <td class="num" title=move || i18n.t(Key::AttemptsHint)>{get(|j| format!("{} / {}", j.state.attempts, j.state.retries_left))}</td>
            <td class="muted">{move || ago(i18n, job.with(|j| j.as_ref().and_then(|j| j.state.created_at)), clock.get())}</td>
            <td><JobActions base=base job=job/></td>
        </tr>
    }
}

/// The link to the Queue page with `job` highlighted.
pub fn queue_href(job: &str) -> String {
    Route::hash(&Page::Queue, &[("job", job.to_string())])
}
