//! Jobs on the run page and the pieces the job pages share: the live job stream
//! ([`load_jobs`], `GET /api/jobs/stream`), the words for why a job waits ([`why`]),
//! Cancel and Retry ([`on_action`]), the run page's job panel ([`JobPanel`]) and its
//! "Re-run with changes" link ([`RerunButton`]).
//!
//! Tables and badges are written as HTML text ([`Html`], every value escaped) and
//! re-set whole when their data changes, with one click handler per panel reading the
//! button's `data-act`: far fewer bytes of WASM than a typed view per cell, which keeps
//! the dashboard within its download budget.

use super::common::ago;
use super::wire;
use crate::api::{self, ConnState};
use crate::i18n::{use_i18n, I18n, Key};
use crate::route::{run_href, Page, Route};
use leptos::prelude::*;
use std::collections::BTreeMap;
use stepwatch_events::jobs::{JobStatus, JobView};
use wasm_bindgen::JsCast;

/// HTML text under construction; [`Html::text`] escapes what it is given.
#[derive(Default)]
pub struct Html(pub String);

impl Html {
    /// Markup written by this code (never user data).
    pub fn raw(&mut self, s: &str) -> &mut Self {
        self.0.push_str(s);
        self
    }

    /// Text or a double-quoted attribute value, escaped.
    pub fn text(&mut self, s: &str) -> &mut Self {
        crate::model::markdown::escape(s, &mut self.0);
        self
    }

    /// `<tag class="class">text</tag>`, the text escaped.
    pub fn el(&mut self, tag: &str, class: &str, text: &str) -> &mut Self {
        self.raw("<")
            .raw(tag)
            .raw(" class=\"")
            .raw(class)
            .raw("\">")
            .text(text)
            .raw("</")
            .raw(tag)
            .raw(">")
    }

    /// A job status pill.
    pub fn badge(&mut self, i18n: I18n, s: JobStatus) -> &mut Self {
        self.raw("<span class=\"status job-")
            .raw(s.as_str())
            .raw("\" data-testid=\"job-status\" data-status=\"")
            .raw(s.as_str())
            .raw("\"><span class=\"dot\">●</span>")
            .text(i18n.t(status_key(s)))
            .raw("</span>")
    }

    /// A green (alive) or grey dot.
    pub fn dot(&mut self, i18n: I18n, alive: bool) -> &mut Self {
        let (class, key) = if alive {
            ("alive on", Key::AgentAlive)
        } else {
            ("alive", Key::AgentGone)
        };
        self.raw("<span class=\"")
            .raw(class)
            .raw("\" data-testid=\"agent-alive\" data-alive=\"")
            .raw(if alive { "true" } else { "false" })
            .raw("\" title=\"")
            .text(i18n.t(key))
            .raw("\">●</span> ")
    }

    /// A link to `href` (built by this code) reading `text`.
    pub fn link(&mut self, href: &str, text: &str) -> &mut Self {
        self.raw("<a href=\"")
            .text(href)
            .raw("\">")
            .text(text)
            .raw("</a>")
    }

    /// Cancel for an open job (and, while it waits, moving it in its queue), Retry for a
    /// finished failed or cancelled one.
    pub fn actions(&mut self, i18n: I18n, j: &JobView) -> &mut Self {
        let s = &j.state;
        if s.status == JobStatus::Queued && s.cancel_requested_by.is_none() {
            for (sign, key, mark) in [(1, Key::MoveUp, "▲"), (-1, Key::MoveDown, "▼")] {
                self.raw("<button class=\"mini\" data-act=\"priority\" data-testid=\"job-move\" data-prio=\"")
                    .raw(&s.priority.saturating_add(sign).to_string())
                    .raw("\" data-job=\"")
                    .text(&s.job)
                    .raw("\" title=\"")
                    .text(i18n.t(key))
                    .raw("\">")
                    .raw(mark)
                    .raw("</button> ");
            }
        }
        let (act, class, key) = if !s.is_terminal() && s.cancel_requested_by.is_none() {
            ("cancel", "btn danger", Key::Cancel)
        } else if s.is_terminal() && matches!(s.status, JobStatus::Failed | JobStatus::Cancelled) {
            ("retry", "btn", Key::Retry)
        } else {
            return self;
        };
        self.raw("<button class=\"")
            .raw(class)
            .raw("\" data-testid=\"job-")
            .raw(act)
            .raw("\" data-act=\"")
            .raw(act)
            .raw("\" data-job=\"")
            .text(&s.job)
            .raw("\">")
            .text(i18n.t(key))
            .raw("</button>")
    }
}

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

/// Why a job stands where it does, never empty: a cancel under way, the engine's (or the
/// failure's) reason, the relay's waiting text, else what its status means.
pub fn why(i18n: I18n, j: &JobView) -> String {
    let s = &j.state;
    if let Some(by) = s.cancel_requested_by.as_ref().filter(|_| !s.is_terminal()) {
        return format!("{} {by}", i18n.t(Key::CancelRequestedBy));
    }
    if let Some(r) = s.reason.as_ref().or(j.waiting.as_ref()) {
        return r.clone();
    }
    i18n.t(match s.status {
        JobStatus::Queued => Key::WhyQueued,
        JobStatus::Claimed => Key::WhyClaimed,
        JobStatus::Submitted => Key::WhySubmitted,
        JobStatus::Running => Key::WhyRunning,
        other => status_key(other),
    })
    .to_string()
}

/// An optional text, "–" when absent.
pub fn or_dash(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or("–")
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
        url.push_str("?queue=");
        url.push_str(&String::from(js_sys::encode_uri_component(q)));
    }
    let stream = api::Stream::open(
        &url,
        None,
        &["job"],
        move |batch| {
            jobs.try_update(|m| {
                for (_, data) in batch {
                    if let Ok(v) = serde_json::from_str(&data) {
                        let j = wire::job_view(&v);
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

/// A click handler for a panel of job rows: a click on a `data-act` button POSTs
/// `/api/jobs/{job}/{act}` (`cancel`, `retry`, `priority` with its `data-prio`); the
/// relay's refusal goes to `error`. A retry opens the Queue page on the new job.
pub fn on_action(base: String, error: RwSignal<Option<String>>) -> impl Fn(web_sys::MouseEvent) {
    move |ev| {
        let Some(el) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .and_then(|e| e.closest("[data-act]").ok().flatten())
        else {
            return;
        };
        let act = el.get_attribute("data-act").unwrap_or_default();
        let job = el.get_attribute("data-job").unwrap_or_default();
        let _ = el.set_attribute("disabled", "");
        let job = String::from(js_sys::encode_uri_component(&job));
        let prio = el
            .get_attribute("data-prio")
            .and_then(|p| p.parse::<i32>().ok());
        let body = prio.map_or_else(|| "{}".into(), |p| format!("{{\"priority\":{p}}}"));
        let url = api::launch_url(&base, &format!("/jobs/{job}/{act}"));
        leptos::task::spawn_local(async move {
            match api::post_json(&url, body).await {
                Ok(text) if act == "retry" => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    let new = v["job"].as_str().unwrap_or_default().to_string();
                    let _ = window()
                        .location()
                        .set_hash(&Route::hash(&Page::Queue, &[("job", new)]));
                }
                Ok(_) => drop(error.try_set(None)),
                Err(r) => {
                    let _ = el.remove_attribute("disabled");
                    error.try_set(Some(r.error));
                }
            }
        });
    }
}

/// The action error under a panel.
pub fn error_line(error: RwSignal<Option<String>>) -> impl IntoView {
    move || {
        error
            .get()
            .map(|e| view! { <div class="field-error" data-testid="job-action-error">{e}</div> })
    }
}

/// "Re-run with changes": the Launch page, pre-filled from this run.
#[component]
pub fn RerunButton(run: String) -> impl IntoView {
    let i18n = use_i18n();
    let href = Route::hash(&Page::Launch, &[("clone", run)]);
    view! { <a class="btn" href=href data-testid="rerun">{i18n.tr(Key::Rerun)}</a> }
}

/// The job panel's head and facts.
fn summary_html(i18n: I18n, j: &JobView) -> String {
    let s = &j.state;
    let mut h = Html::default();
    h.raw("<div class=\"panel-head\"><h2>")
        .text(i18n.t(Key::Job))
        .raw("</h2>")
        .badge(i18n, s.status)
        .link(
            &Route::hash(&Page::Queue, &[("job", s.job.clone())]),
            &s.job,
        )
        .actions(i18n, j)
        .raw("</div><div class=\"job-facts\">");
    let facts = [
        (Key::Queue, j.queue.as_str()),
        (Key::Engine, j.engine.as_str()),
        (Key::EngineId, or_dash(&s.engine_id)),
        (Key::Agent, or_dash(&s.agent)),
    ];
    for (i, (k, v)) in facts.into_iter().enumerate() {
        h.raw("<span>").text(i18n.t(k)).raw(": ");
        if i == 3 && !s.is_terminal() {
            h.dot(i18n, j.agent_alive);
        }
        h.el("b", "mono", v).raw("</span>");
    }
    h.raw("<span>")
        .text(i18n.t(Key::Attempts))
        .raw(": ")
        .el("b", "", &s.attempts.to_string())
        .raw("</span></div>")
        .raw("<p class=\"job-why\" data-testid=\"job-why\">")
        .text(&why(i18n, j))
        .raw("</p>");
    h.0
}

/// The job's history, newest first, with reasons.
fn history_html(i18n: I18n, j: &JobView, now: f64) -> String {
    let mut h = Html::default();
    h.raw("<table class=\"grid\" data-testid=\"job-history\">");
    for e in j.state.history.iter().rev() {
        h.raw("<tr>")
            .el("td", "muted", &ago(i18n, Some(e.ts), now))
            .el("td", "mono", &e.kind)
            .el("td", "", i18n.t(status_key(e.status)))
            .el("td", "cmd-msg", e.reason.as_deref().unwrap_or_default())
            .raw("</tr>");
    }
    h.raw("</table>");
    h.0
}

/// The run page's job panel, when a job reports to the run: status, queue, engine and
/// its id, agent, why it stands there, its history with reasons, and Cancel. Nothing for
/// a run started by hand.
#[component]
pub fn JobPanel(run: String) -> impl IntoView {
    let i18n = use_i18n();
    let clock = super::common::use_clock();
    let base = expect_context::<api::Base>().0;
    let job = RwSignal::new(None::<JobView>);
    let owner = Owner::current();
    let url = api::run_url(&base, &run, "/job");
    let stream_base = base.clone();
    leptos::task::spawn_local(async move {
        let Some(first) = api::get_value(&url).await.map(|v| wire::job_view(&v)) else {
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
    let error = RwSignal::new(None);
    let summary = move || job.with(|j| j.as_ref().map(|j| summary_html(i18n, j)));
    let history = move || {
        let now = clock.get();
        job.with(|j| j.as_ref().map(|j| history_html(i18n, j, now)))
    };
    view! {
        {super::common::show(Signal::derive(move || job.with(Option::is_some)), move || view! { <section class="panel" data-testid="job-panel" on:click=on_action(base.clone(), error)>
                <div inner_html=summary></div>
                {error_line(error)}
                <details>
                    <summary>{i18n.tr(Key::History)}</summary>
                    <div inner_html=history></div>
                </details>
            </section> })}
    }
}

/// The link to a job's run, if it has one.
pub fn run_link(h: &mut Html, j: &JobView) {
    if let Some(r) = &j.state.run {
        h.raw("<a data-testid=\"job-run\" href=\"")
            .text(&run_href(r))
            .raw("\">")
            .text(r)
            .raw("</a>");
    }
}
