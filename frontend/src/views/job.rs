//! Jobs on the run page and the pieces the job pages share: the live job stream
//! ([`load_jobs`], `GET /api/jobs/stream`), the status badge, the words for why a job
//! waits, Cancel and Retry, and the run page's job panel ([`JobPanel`]) and "Re-run with
//! changes" link ([`RerunButton`]).

use super::common::{ago, use_clock};
use crate::api::{self, ConnState};
use crate::i18n::{use_i18n, I18n, Key};
use crate::route::{Page, Route};
use leptos::prelude::*;
use std::collections::BTreeMap;
use stepwatch_events::jobs::{JobStatus, JobView};

/// The key of a job status's name.
pub fn status_key(s: JobStatus) -> Key {
    match s {
        JobStatus::Queued => Key::JobQueued,
        JobStatus::Claimed => Key::JobClaimed,
        JobStatus::Submitted => Key::JobSubmitted,
        JobStatus::Running => Key::JobRunning,
        JobStatus::Succeeded => Key::JobSucceeded,
        JobStatus::Failed => Key::JobFailed,
        JobStatus::Cancelled => Key::JobCancelled,
    }
}

/// Why a job stands where it does, never empty: the engine's (or the failure's) reason,
/// the relay's waiting text, a cancel under way, else what its status means.
pub fn why(i18n: I18n, j: &JobView) -> String {
    let s = &j.state;
    if let Some(by) = &s.cancel_requested_by {
        if !s.is_terminal() {
            return format!("{} {by}", i18n.t(Key::CancelRequestedBy));
        }
    }
    if let Some(r) = s.reason.as_ref().or(j.waiting.as_ref()) {
        return r.clone();
    }
    i18n.t(match s.status {
        JobStatus::Queued => Key::WhyQueued,
        JobStatus::Claimed => Key::WhyClaimed,
        JobStatus::Submitted => Key::WhySubmitted,
        JobStatus::Running => Key::WhyRunning,
        JobStatus::Succeeded => Key::JobSucceeded,
        JobStatus::Failed => Key::JobFailed,
        JobStatus::Cancelled => Key::JobCancelled,
    })
    .to_string()
}

/// An optional text, "–" when absent.
pub fn or_dash(o: &Option<String>) -> String {
    o.clone().unwrap_or_else(|| "–".into())
}

/// A job's status as a pill.
#[component]
pub fn JobBadge(#[prop(into)] status: Signal<JobStatus>) -> impl IntoView {
    let i18n = use_i18n();
    view! {
        <span class=move || format!("status job-{}", status.get().as_str()) data-testid="job-status"
            data-status=move || status.get().as_str()>
            <span class="dot">"●"</span>
            {move || i18n.t(status_key(status.get()))}
        </span>
    }
}

/// A green (alive) or grey dot, with a tooltip.
#[component]
pub fn AliveDot(#[prop(into)] alive: Signal<bool>) -> impl IntoView {
    let i18n = use_i18n();
    view! {
        <span class=move || if alive.get() { "alive on" } else { "alive" } data-testid="agent-alive"
            data-alive=move || alive.get().to_string()
            title=move || i18n.t(if alive.get() { Key::AgentAlive } else { Key::AgentGone })>"●"</span>
    }
}

/// Jobs by id, live from the jobs stream (of one queue, with `queue`) for the lifetime
/// of the calling component, and the stream's state. On connect the relay sends every
/// open job and the latest finished ones, then each change.
pub fn load_jobs(
    base: &str,
    queue: Option<&str>,
) -> (ReadSignal<BTreeMap<String, JobView>>, ReadSignal<ConnState>) {
    let jobs = RwSignal::new(BTreeMap::<String, JobView>::new());
    let conn = RwSignal::new(ConnState::Connecting);
    let mut url = api::launch_url(base, "/jobs/stream");
    if let Some(q) = queue {
        url.push_str(&format!(
            "?queue={}",
            String::from(js_sys::encode_uri_component(q))
        ));
    }
    let stream = api::Stream::open(
        &url,
        None,
        &["job"],
        move |batch| {
            jobs.try_update(|m| {
                for (_, data) in batch {
                    if let Ok(j) = serde_json::from_str::<JobView>(&data) {
                        m.insert(j.state.job.clone(), j);
                    }
                }
            });
        },
        move |c| {
            conn.try_set(c);
        },
    );
    let stream = send_wrapper::SendWrapper::new(stream);
    on_cleanup(move || drop(stream));
    (jobs.read_only(), conn.read_only())
}

/// POSTs `/api/jobs/{job}/{action}` (`cancel`, `retry`): the answer, or the relay's words.
pub async fn act(base: &str, job: &str, action: &str) -> Result<String, String> {
    let url = api::launch_url(base, &format!("/jobs/{job}/{action}"));
    api::post_json(&url, "{}".into()).await.map_err(|r| r.error)
}

/// Cancel (open jobs) or Retry (finished failed or cancelled ones), with the relay's
/// refusal beside it. A retry opens the Queue page on the new job.
#[component]
pub fn JobActions(base: String, job: Signal<Option<JobView>>) -> impl IntoView {
    let i18n = use_i18n();
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let base = StoredValue::new(base);
    let run = move |action: &'static str| {
        let Some(id) = job.with_untracked(|j| j.as_ref().map(|j| j.state.job.clone())) else {
            return;
        };
        busy.set(true);
        leptos::task::spawn_local(async move {
            let answer = act(&base.get_value(), &id, action).await;
            busy.try_set(false);
            match answer {
                Ok(text) if action == "retry" => {
                    let new = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["job"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    let hash = Route::hash(&Page::Queue, &[("job", new)]);
                    let _ = window().location().set_hash(&hash);
                }
                Ok(_) => {
                    error.try_set(None);
                }
                Err(e) => {
                    error.try_set(Some(e));
                }
            }
        });
    };
    let can_cancel = move || {
        job.with(|j| {
            j.as_ref()
                .is_some_and(|j| !j.state.is_terminal() && j.state.cancel_requested_by.is_none())
        })
    };
    let can_retry = move || {
        job.with(|j| {
            j.as_ref().is_some_and(|j| {
                j.state.is_terminal()
                    && matches!(j.state.status, JobStatus::Failed | JobStatus::Cancelled)
            })
        })
    };
    view! {
        <span class="controls">
            <Show when=can_cancel>
                <button class="btn danger" data-testid="job-cancel" disabled=move || busy.get()
                    on:click=move |_| run("cancel")>{move || i18n.t(Key::Cancel)}</button>
            </Show>
            <Show when=can_retry>
                <button class="btn" data-testid="job-retry" disabled=move || busy.get()
                    on:click=move |_| run("retry")>{move || i18n.t(Key::Retry)}</button>
            </Show>
            {move || error.get().map(|e| view! { <span class="field-error" data-testid="job-action-error">{e}</span> })}
        </span>
    }
}

/// "Re-run with changes": the Launch page, pre-filled from this run.
#[component]
pub fn RerunButton(run: String) -> impl IntoView {
    let i18n = use_i18n();
    let href = Route::hash(&Page::Launch, &[("clone", run)]);
    view! { <a class="btn" href=href data-testid="rerun">{move || i18n.t(Key::Rerun)}</a> }
}

/// The run page's job panel, when a job reports to the run: status, queue, engine and
/// its id, agent, why it stands there, its history with reasons, and Cancel. Nothing for
/// a run started by hand.
#[component]
pub fn JobPanel(run: String) -> impl IntoView {
    let base = expect_context::<api::Base>().0;
    let job = RwSignal::new(None::<JobView>);
    let owner = Owner::current();
    let url = api::run_url(&base, &run, "/job");
    let stream_base = base.clone();
    leptos::task::spawn_local(async move {
        let Some(first) = api::get_json::<JobView>(&url).await else {
            return;
        };
        let (id, queue) = (first.state.job.clone(), first.queue.clone());
        if job.try_set(Some(first)).is_some() {
            return;
        }
        // Follow the job live through its queue's stream, owned by the panel.
        let Some(owner) = owner else { return };
        owner.with(|| {
            let (jobs, _) = load_jobs(&stream_base, Some(&queue));
            Effect::new(move |_| {
                if let Some(j) = jobs.with(|m| m.get(&id).cloned()) {
                    job.set(Some(j));
                }
            });
        });
    });
    let job = Signal::derive(move || job.get());
    view! {
        <Show when=move || job.with(Option::is_some)>
            <JobSummary base=base.clone() job=job/>
        </Show>
    }
}

#[component]
fn JobSummary(base: String, job: Signal<Option<JobView>>) -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    let get = move |f: fn(&JobView) -> String| {
        move || job.with(|j| j.as_ref().map(f).unwrap_or_default())
    };
    let status = Signal::derive(move || {
        job.with(|j| j.as_ref().map(|j| j.state.status).unwrap_or_default())
    });
    let alive = Signal::derive(move || job.with(|j| j.as_ref().is_some_and(|j| j.agent_alive)));
    let id = get(|j| j.state.job.clone());
    let rows = move || {
        job.with(|j| {
            j.as_ref()
                .map(|j| j.state.history.iter().rev().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
    };
    view! {
        <section class="panel" data-testid="job-panel" data-job=id>
            <div class="panel-head">
                <h2>{move || i18n.t(Key::Job)}</h2>
                <JobBadge status=status/>
                <a href=move || Route::hash(&Page::Queue, &[("job", id())]) class="mono small">{id}</a>
                <JobActions base=base job=job/>
            </div>
            <div class="job-facts">
                <span>{move || i18n.t(Key::Queue)}": "<b>{get(|j| j.queue.clone())}</b></span>
                <span>{move || i18n.t(Key::Engine)}": "<b>{get(|j| j.engine.clone())}</b></span>
                <span>{move || i18n.t(Key::EngineId)}": "<b class="mono" data-testid="job-engine-id">{get(|j| or_dash(&j.state.engine_id))}</b></span>
                <span>{move || i18n.t(Key::Agent)}": "<AliveDot alive=alive/>" "<b>{get(|j| or_dash(&j.state.agent))}</b></span>
                <span>{move || i18n.t(Key::Attempts)}": "<b>{get(|j| j.state.attempts.to_string())}</b></span>
            </div>
            <p class="job-why" data-testid="job-why">{move || job.with(|j| j.as_ref().map(|j| why(i18n, j)))}</p>
            <details>
                <summary>{move || i18n.t(Key::History)}" ("{move || rows().len()}")"</summary>
                <table class="grid" data-testid="job-history">
                    {move || rows().into_iter().map(|h| view! {
                        <tr>
                            <td class="muted">{move || ago(i18n, Some(h.ts), clock.get())}</td>
                            <td class="mono">{h.kind.clone()}</td>
                            <td>{move || i18n.t(status_key(h.status))}</td>
                            <td class="cmd-msg">{h.reason.clone().unwrap_or_default()}</td>
                        </tr>
                    }).collect_view()}
                </table>
            </details>
        </section>
    }
}
