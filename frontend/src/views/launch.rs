//! The Launch page (`#/launch`, `?template=NAME`, `?clone=<run>` for "Re-run with
//! changes"): a queue (its engine, and a warning before submitting when no live agent
//! serves it), a template's typed form or, where the queue allows it, a free-form argv,
//! resources within the queue's limits, priority and retries. Preview shows the exact
//! argv and the config diff; Submit queues the job and opens the Queue page.
//!
//! The form's data and checks are in [`super::launch_form`]. Its markup is HTML text
//! ([`super::launch_html`]), rebuilt only when the queue, template or
//! mode changes; one input handler writes every field by its `data-f`, and the errors
//! are written into each field's `data-err` line.

use super::launch_form::{self as lf, Fields, Msg, Offered, Problems};
use super::launch_html::{form_html, preview_html, Choices};
use super::queue::{flash, load_queues, queue_href};
use super::wire;
use crate::api::{self, Refusal};
use crate::i18n::{use_i18n, I18n, Key};
use crate::route::{run_href, Route};
use leptos::prelude::*;
use stepwatch_events::api as answers;
use stepwatch_events::jobs::{JobSpec, Preview, QueueInfo};
use wasm_bindgen::JsCast;

/// Loads the queues and templates, and what `?clone=` re-runs: the fields to start with.
async fn load(base: &str, route: &Route) -> (Choices, Fields) {
    let queues = api::get_value(&api::launch_url(base, "/queues"))
        .await
        .map(|v| wire::list(&v, wire::queue_info))
        .unwrap_or_default();
    let templates = api::get_value(&api::launch_url(base, "/templates"))
        .await
        .map(|v| {
            wire::list(&v, wire::offered)
                .into_iter()
                .flatten()
                .collect()
        })
        .unwrap_or_default();
    let ch = Choices { queues, templates };
    let wanted = route.get("template");
    let first_queue = ch
        .queues
        .iter()
        .find(|q| q.may_submit)
        .or(ch.queues.first())
        .map(|q| q.name.clone())
        .unwrap_or_default();
    let queue_of = |o: &Offered| o.queue.clone().unwrap_or_else(|| first_queue.clone());
    if let Some(run) = route.get("clone") {
        let job = api::get_value(&api::run_url(base, run, "/job")).await;
        let job = job.map(|v| wire::job_view(&v));
        if let Some(f) = job.as_ref().and_then(|j| lf::from_job(j, run)) {
            return (ch, f);
        }
        let state = api::get_text(&api::run_url(base, run, ""), 1).await;
        if let Some(s) = state.as_deref().and_then(answers::decode_state) {
            if let Some(o) = lf::pick_for_config(&ch.templates, &s.config, wanted) {
                let f = lf::from_config(&s.config, &s.name, run, &queue_of(o), &o.tpl);
                return (ch, f);
            }
        }
    }
    let o = wanted
        .and_then(|w| ch.templates.iter().find(|o| o.tpl.name == w))
        .or_else(|| ch.templates.iter().find(|o| o.fits(&first_queue)));
    let f = lf::fresh(&o.map_or(first_queue.clone(), queue_of), o.map(|o| &o.tpl));
    (ch, f)
}

/// A problem as words.
fn say(i18n: I18n, m: &Msg) -> String {
    match m {
        Msg::Text(t) => t.clone(),
        Msg::Key(k) => i18n.t(*k).to_string(),
        Msg::AtMost(n) => format!("{} {n}", i18n.t(Key::AtMost)),
    }
}

/// The relay's refusal of the job as the form now describes it: its (form) field and
/// words.
fn relay_error(
    draft: &Result<JobSpec, Problems>,
    refused: &Option<(JobSpec, Refusal)>,
) -> Option<(String, String)> {
    let spec = draft.as_ref().ok()?;
    let (_, r) = refused.as_ref().filter(|(s, _)| s == spec)?;
    Some((
        r.field.as_deref().map(lf::norm).unwrap_or_default(),
        r.error.clone(),
    ))
}

/// The element an event happened on.
fn target(ev: &web_sys::Event) -> Option<web_sys::Element> {
    ev.target()?.dyn_into().ok()
}

/// Writes each field's error into its `data-err` line (and marks the field), after the
/// markup is in place: the form's own checks, else the relay's refusal of this job.
fn write_errors(
    i18n: I18n,
    shape: Memo<(String, String, bool)>,
    tpl: Memo<Option<Offered>>,
    draft: Memo<Result<JobSpec, Problems>>,
    refused: RwSignal<Option<(JobSpec, Refusal)>>,
) {
    Effect::new(move |_| {
        shape.track();
        let params: Vec<String> = tpl.with(|t| {
            t.iter()
                .flat_map(|o| &o.tpl.params)
                .map(|p| format!("params.{}", p.name))
                .collect()
        });
        let relay = draft.with(|d| refused.with(|r| relay_error(d, r)));
        let errors: Vec<(String, String)> = lf::PLACES
            .iter()
            .map(|p| p.to_string())
            .chain(params)
            .map(|k| {
                let own = draft.with(|d| {
                    d.as_ref()
                        .err()
                        .and_then(|p| p.get(&k))
                        .map(|m| say(i18n, m))
                });
                let e = own.or_else(|| relay.clone().filter(|(f, _)| *f == k).map(|(_, e)| e));
                (k, e.unwrap_or_default())
            })
            .collect();
        request_animation_frame(move || {
            for (k, e) in errors {
                let sel = format!("[data-err=\"{k}\"]");
                if let Some(el) = document().query_selector(&sel).ok().flatten() {
                    el.set_text_content(Some(&e));
                    if let Some(p) = el.parent_element() {
                        let _ = p.set_attribute(
                            "class",
                            if e.is_empty() { "field" } else { "field bad" },
                        );
                    }
                }
            }
        });
    });
}

/// Whether a live agent serves the chosen queue, kept up to date while the form is
/// filled in: said before submitting, not after an hour in the queue.
fn agents_line(
    i18n: I18n,
    base: &str,
    fields: RwSignal<Fields>,
    choices: RwSignal<Option<Choices>>,
) -> impl Fn() -> Option<AnyView> {
    let polled = load_queues(base);
    move || {
        let name = fields.with(|f| f.queue.clone());
        let count = |qs: &[QueueInfo]| {
            qs.iter()
                .find(|q| q.name == name)
                .map(|q| (q.live_agents().count(), q.engine.clone()))
        };
        let n = polled.with(|p| p.as_deref().and_then(count));
        let (n, engine) =
            n.or_else(|| choices.with(|c| c.as_ref().and_then(|c| count(&c.queues))))?;
        Some(if n == 0 {
            let text = format!(
                "{} {name}{}",
                i18n.t(Key::NoAgentBefore),
                i18n.t(Key::NoAgentAfter)
            );
            view! { <div class="banner warn" data-testid="no-agent-warning">{text}</div> }
                .into_any()
        } else {
            let text = format!(" {n} {} · {name} ({engine})", i18n.t(Key::LiveAgents));
            view! { <p class="small muted" data-testid="queue-agents"><span class="alive on">"●"</span>{text}</p> }.into_any()
        })
    }
}

#[component]
pub fn LaunchPage(base: String, route: Route) -> impl IntoView {
    let i18n = use_i18n();
    let fields = RwSignal::new(Fields::default());
    let choices = RwSignal::new(None::<Choices>);
    {
        let base = base.clone();
        leptos::task::spawn_local(async move {
            let (ch, f) = load(&base, &route).await;
            if choices.try_set(Some(ch)).is_none() {
                fields.set(f);
            }
        });
    }
    let queue = Memo::new(move |_| {
        let name = fields.with(|f| f.queue.clone());
        choices.with(|c| c.as_ref()?.queues.iter().find(|q| q.name == name).cloned())
    });
    let tpl = Memo::new(move |_| {
        let name = fields.with(|f| f.template.clone());
        choices.with(|c| {
            c.as_ref()?
                .templates
                .iter()
                .find(|o| o.tpl.name == name)
                .cloned()
        })
    });
    let draft = Memo::new(move |_| {
        fields.with(|f| {
            tpl.with(|t| queue.with(|q| lf::build(f, t.as_ref().map(|o| &o.tpl), q.as_ref())))
        })
    });
    let refused = RwSignal::new(None::<(JobSpec, Refusal)>);
    // The markup follows the queue, template and mode, not each keystroke.
    let shape = Memo::new(move |_| fields.with(|f| (f.queue.clone(), f.template.clone(), f.free)));
    let markup = move || {
        shape.track();
        choices.with(|c| {
            let c = c.as_ref()?;
            Some(fields.with_untracked(|f| {
                form_html(i18n, c, f, queue.get().as_ref(), tpl.get().as_ref())
            }))
        })
    };
    let on_input = move |ev: web_sys::Event| {
        let Some(el) = target(&ev) else { return };
        let Some(key) = el.get_attribute("data-f") else {
            return;
        };
        let value = if el.get_attribute("type").as_deref() == Some("checkbox") {
            event_target_checked(&ev).to_string()
        } else {
            event_target_value(&ev)
        };
        choices.with_untracked(|c| {
            let Some(c) = c else { return };
            fields.update(|f| match key.as_str() {
                "queue" => {
                    let free = c.queues.iter().any(|q| q.name == value && q.may_free_form);
                    lf::switch_queue(f, &value, &c.templates, free);
                }
                "template" => {
                    lf::switch_template(f, c.templates.iter().find(|o| o.tpl.name == value))
                }
                _ => lf::set_field(f, &key, value),
            });
        });
    };
    write_errors(i18n, shape, tpl, draft, refused);
    let clone_of = move || fields.with(|f| f.clone_of.clone());
    let agents = agents_line(i18n, &base, fields, choices);
    view! {
        <div class="crumbs"><a href="#/">{i18n.tr(Key::BackToRuns)}</a>" · "<a href="#/queue">{i18n.tr(Key::Queues)}</a></div>
        <div class="page-head">
            <h1>{i18n.tr(Key::LaunchJob)}</h1>
            {move || clone_of().map(|r| view! {
                <span class="muted" data-testid="clone-of">{i18n.t(Key::RerunOf)}" "<a href=run_href(&r)>{r.clone()}</a></span>
            })}
        </div>
        {agents}
        <div class="launch">
            <section class="panel form" data-testid="launch-form" on:input=on_input inner_html=markup></section>
            <PreviewPanel base=base draft=draft refused=refused clone_of=Signal::derive(clone_of)/>
        </div>
    }
}

/// Preview and Submit. Submit is offered for the job previewed, while the form still
/// describes it; a refusal without a field of the form is shown here.
#[component]
fn PreviewPanel(
    base: String,
    draft: Memo<Result<JobSpec, Problems>>,
    refused: RwSignal<Option<(JobSpec, Refusal)>>,
    clone_of: Signal<Option<String>>,
) -> impl IntoView {
    let i18n = use_i18n();
    let preview = RwSignal::new(None::<(JobSpec, Preview)>);
    let busy = RwSignal::new(false);
    let current = Memo::new(move |_| {
        preview.with(|p| p.as_ref().map(|(s, _)| s.clone()))
            == draft.with(|d| d.as_ref().ok().cloned())
    });
    let base = StoredValue::new(base);
    let send = move |submit: bool| {
        let Some(spec) = draft.with_untracked(|d| d.as_ref().ok().cloned()) else {
            return;
        };
        let body = serde_json::to_string(&spec).unwrap_or_default();
        let url = api::launch_url(
            &base.get_value(),
            if submit { "/jobs" } else { "/jobs/preview" },
        );
        busy.set(true);
        leptos::task::spawn_local(async move {
            let answer = api::post_json(&url, body).await;
            busy.try_set(false);
            let result = answer.and_then(|text| {
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Refusal {
                    error: e.to_string(),
                    field: None,
                })?;
                if submit {
                    flash(wire::list(&v["warnings"], |w| {
                        w.as_str().unwrap_or_default().to_string()
                    }));
                    let _ = window()
                        .location()
                        .set_hash(&queue_href(v["job"].as_str().unwrap_or_default()));
                } else {
                    preview.try_set(Some((spec.clone(), wire::preview(&v))));
                }
                Ok(())
            });
            if let Err(r) = result {
                refused.try_set(Some((spec, r)));
            }
        });
    };
    let ready = move || draft.with(Result::is_ok) && !busy.get();
    let general = move || {
        draft
            .with(|d| refused.with(|r| relay_error(d, r)))
            .filter(|(f, _)| !lf::has_place(f))
    };
    let body = move || {
        let c = clone_of.get();
        preview.with(|p| p.as_ref().map(|(_, p)| preview_html(i18n, p, c.as_deref())))
    };
    view! {
        <section class="panel preview" data-testid="preview">
            <div class="toolbar">
                <button class="btn" data-testid="preview-button" disabled=move || !ready() on:click=move |_| send(false)>
                    {i18n.tr(Key::PreviewJob)}</button>
                <button class="btn primary" data-testid="submit" disabled=move || !ready() || !current.get()
                    on:click=move |_| send(true)>{i18n.tr(Key::Submit)}</button>
            </div>
            <p class="muted small">{move || if draft.with(Result::is_err) { i18n.t(Key::FixFields) } else { i18n.t(Key::PreviewFirst) }}</p>
            {move || general().map(|(f, e)| view! {
                <div class="banner alert" data-testid="relay-error">{e}" "{f}</div>
            })}
            <div class:stale=move || !current.get() data-testid="preview-body" inner_html=body></div>
        </section>
    }
}
