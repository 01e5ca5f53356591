//! The Launch page (`#/launch`, `?template=NAME`, `?clone=<run>` for "Re-run with
//! changes"): a queue (its engine, and a warning before submitting when no live agent
//! serves it), a template's typed form or, where the queue allows it, a free-form argv,
//! resources within the queue's limits, priority and retries. Preview shows the exact
//! argv and the config diff; Submit queues the job and opens the Queue page.
//!
//! The form's data and checks are in [`super::launch_form`]. Its markup is HTML text
//! (values escaped, see [`super::job::Html`]), rebuilt only when the queue, template or
//! mode changes; one input handler writes every field by its `data-f`, and the errors
//! are written into each field's `data-err` line.

use super::job::Html;
use super::launch_form::{self as lf, Fields, Msg, Offered, Problems};
use super::queue::{flash, queue_href};
use crate::api::{self, Refusal};
use crate::i18n::{use_i18n, I18n, Key};
use crate::route::{run_href, Route};
use leptos::prelude::*;
use stepwatch_events::api as answers;
use stepwatch_events::jobs::{JobSpec, JobView, Preview, QueueInfo, Submitted};
use stepwatch_events::template::{ParamKind, ParamSpec};
use wasm_bindgen::JsCast;

/// The queues and templates on offer.
#[derive(Debug, Clone, PartialEq, Default)]
struct Choices {
    queues: Vec<QueueInfo>,
    templates: Vec<Offered>,
}

/// Loads the queues and templates, and what `?clone=` re-runs: the fields to start with.
async fn load(base: &str, route: &Route) -> (Choices, Fields) {
    let queues: Vec<QueueInfo> = api::get_json(&api::launch_url(base, "/queues"))
        .await
        .unwrap_or_default();
    let templates = api::get_text(&api::launch_url(base, "/templates"), 1)
        .await
        .map(|t| lf::parse_templates(&t))
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
        let job = api::get_json::<JobView>(&api::run_url(base, run, "/job")).await;
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
    // Each field's error, written after the markup is in place.
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
    let clone_of = move || fields.with(|f| f.clone_of.clone());
    view! {
        <div class="crumbs"><a href="#/">{move || i18n.t(Key::BackToRuns)}</a>" · "<a href="#/queue">{move || i18n.t(Key::Queues)}</a></div>
        <div class="page-head">
            <h1>{move || i18n.t(Key::LaunchJob)}</h1>
            {move || clone_of().map(|r| view! {
                <span class="muted" data-testid="clone-of">{i18n.t(Key::RerunOf)}" "<a href=run_href(&r)>{r.clone()}</a></span>
            })}
        </div>
        <div class="launch">
            <section class="panel form" data-testid="launch-form" on:input=on_input inner_html=markup></section>
            <PreviewPanel base=base draft=draft refused=refused clone_of=Signal::derive(clone_of)/>
        </div>
    }
}

/// A labelled field: `input` writes the control; its help and error line follow.
fn field(h: &mut Html, label: &str, key: &str, help: &str, input: impl FnOnce(&mut Html)) {
    h.raw("<div class=\"field\"><label>")
        .text(label)
        .raw("</label>");
    input(h);
    if !help.is_empty() {
        h.el("div", "help muted", help);
    }
    h.raw("<div class=\"field-error\" data-testid=\"field-error\" data-err=\"")
        .text(key)
        .raw("\"></div></div>");
}

/// An `<input>` for field `key` holding `value`; `attrs` is markup written by this code.
fn input(h: &mut Html, key: &str, attrs: &str, value: &str) {
    h.raw("<input ")
        .raw(attrs)
        .raw(" data-f=\"")
        .text(key)
        .raw("\" data-testid=\"")
        .text(key)
        .raw("\" value=\"")
        .text(value)
        .raw("\">");
}

/// A `<select>` for field `key` of `(value, label, enabled)` options.
fn select(
    h: &mut Html,
    key: &str,
    current: &str,
    options: &[(String, String, bool)],
    disabled: bool,
) {
    h.raw("<select data-f=\"")
        .text(key)
        .raw("\" data-testid=\"")
        .text(key)
        .raw("\"");
    if disabled {
        h.raw(" disabled");
    }
    h.raw(">");
    if !options.iter().any(|(v, _, _)| v == current) {
        h.raw("<option value=\"\" selected>–</option>");
    }
    for (v, label, ok) in options {
        h.raw("<option value=\"").text(v).raw("\"");
        if v == current {
            h.raw(" selected");
        }
        if !ok {
            h.raw(" disabled");
        }
        h.raw(">").text(label).raw("</option>");
    }
    h.raw("</select>");
}

fn num_attrs(
    step: &str,
    min: Option<String>,
    max: Option<String>,
    placeholder: Option<String>,
) -> String {
    let mut a = format!("type=\"number\" step=\"{step}\"");
    for (k, v) in [("min", min), ("max", max), ("placeholder", placeholder)] {
        if let Some(v) = v {
            a.push_str(&format!(" {k}=\"{v}\""));
        }
    }
    a
}

fn param_html(h: &mut Html, i18n: I18n, p: &ParamSpec, f: &Fields) {
    let key = format!("params.{}", p.name);
    let value = f.params.get(&p.name).cloned().unwrap_or_default();
    let mut help: Vec<String> = p.help.iter().cloned().collect();
    if let Some(d) = &p.default {
        help.push(format!("{} {}", i18n.t(Key::DefaultIs), lf::value_text(d)));
    }
    let label = format!("{}{}", p.name, if p.is_required() { " *" } else { "" });
    field(h, &label, &key, &help.join(" · "), |h| match &p.kind {
        ParamKind::Int { min, max } => input(
            h,
            &key,
            &num_attrs(
                "1",
                min.map(|x| x.to_string()),
                max.map(|x| x.to_string()),
                None,
            ),
            &value,
        ),
        ParamKind::Float { min, max } => input(
            h,
            &key,
            &num_attrs(
                "any",
                min.map(|x| x.to_string()),
                max.map(|x| x.to_string()),
                None,
            ),
            &value,
        ),
        ParamKind::Bool => input(
            h,
            &key,
            if value == "true" {
                "type=\"checkbox\" checked"
            } else {
                "type=\"checkbox\""
            },
            "true",
        ),
        ParamKind::Choice { values: cs }
        | ParamKind::String {
            choices: Some(cs), ..
        } => {
            let opts: Vec<_> = cs.iter().map(|c| (c.clone(), c.clone(), true)).collect();
            select(h, &key, &value, &opts, false);
        }
        ParamKind::String { max_len, .. } | ParamKind::Path { max_len } => input(
            h,
            &key,
            &format!("type=\"text\" maxlength=\"{max_len}\""),
            &value,
        ),
    });
}

/// The queue and template choice, and the warnings that go with the queue.
fn choice_html(
    h: &mut Html,
    i18n: I18n,
    c: &Choices,
    f: &Fields,
    q: Option<&QueueInfo>,
    t: Option<&Offered>,
) {
    let queues: Vec<_> = c
        .queues
        .iter()
        .map(|q| {
            (
                q.name.clone(),
                format!("{} ({})", q.name, q.engine),
                q.may_submit,
            )
        })
        .collect();
    let live = q.map(|q| q.live_agents().count());
    let about = q.map(|q| {
        format!(
            "{} {} · {}",
            live.unwrap_or(0),
            i18n.t(Key::LiveAgents),
            q.description
        )
    });
    field(
        h,
        i18n.t(Key::Queue),
        "queue",
        about.as_deref().unwrap_or_default(),
        |h| select(h, "queue", &f.queue, &queues, false),
    );
    if c.queues.is_empty() {
        h.raw("<p class=\"empty\" data-testid=\"no-queues\">")
            .text(i18n.t(Key::NoQueues))
            .raw("</p>");
    }
    if live == Some(0) {
        h.raw("<div class=\"banner warn\" data-testid=\"no-agent-warning\">")
            .text(&format!(
                "{} {}{}",
                i18n.t(Key::NoAgentBefore),
                f.queue,
                i18n.t(Key::NoAgentAfter)
            ))
            .raw("</div>");
    }
    if q.is_some_and(|q| !q.may_submit) {
        h.raw("<div class=\"banner alert\" data-testid=\"may-not-submit\">")
            .text(i18n.t(Key::MayNotSubmit))
            .raw("</div>");
    }
    let tpls: Vec<_> = c
        .templates
        .iter()
        .filter(|o| o.fits(&f.queue))
        .map(|o| (o.tpl.name.clone(), o.tpl.name.clone(), true))
        .collect();
    let about = t.map_or("", |o| o.tpl.description.as_str());
    field(h, i18n.t(Key::Template), "template", about, |h| {
        select(h, "template", &f.template, &tpls, f.free)
    });
    if q.is_some_and(|q| q.may_free_form) {
        h.raw("<label class=\"check\">");
        input(
            h,
            "free",
            if f.free {
                "type=\"checkbox\" checked"
            } else {
                "type=\"checkbox\""
            },
            "true",
        );
        h.raw(" ")
            .text(i18n.t(Key::FreeForm))
            .raw(" ")
            .el("span", "muted small", i18n.t(Key::FreeFormHint))
            .raw("</label>");
    }
}

/// The whole form: queue, template, its parameters or the free-form entry, resources,
/// the job's name, priority and retries.
fn form_html(
    i18n: I18n,
    c: &Choices,
    f: &Fields,
    q: Option<&QueueInfo>,
    t: Option<&Offered>,
) -> String {
    let mut h = Html::default();
    choice_html(&mut h, i18n, c, f, q, t);
    let group = |h: &mut Html, k: Key, class: &str| {
        h.el("h3", "group-title", i18n.t(k))
            .raw("<div class=\"fields")
            .raw(class)
            .raw("\">");
    };
    if f.free {
        group(&mut h, Key::FreeForm, "");
        field(
            &mut h,
            i18n.t(Key::Argv),
            "argv",
            i18n.t(Key::ArgvHint),
            |h| {
                h.raw("<textarea class=\"mono\" rows=\"5\" spellcheck=\"false\" data-f=\"argv\" data-testid=\"argv\">").text(&f.argv).raw("</textarea>");
            },
        );
        field(&mut h, i18n.t(Key::Cwd), "cwd", "", |h| {
            input(h, "cwd", "type=\"text\" class=\"mono\"", &f.cwd)
        });
        field(&mut h, i18n.t(Key::Env), "env", i18n.t(Key::EnvHint), |h| {
            h.raw("<textarea class=\"mono\" rows=\"3\" spellcheck=\"false\" data-f=\"env\" data-testid=\"env\">").text(&f.env).raw("</textarea>");
        });
    } else {
        group(&mut h, Key::Parameters, "");
        for p in t.iter().flat_map(|o| &o.tpl.params) {
            param_html(&mut h, i18n, p, f);
        }
    }
    h.raw("</div>");
    group(&mut h, Key::Resources, " four");
    let (lim, def) = q
        .map(|q| (q.limits.clone(), q.defaults.clone()))
        .unwrap_or_default();
    let rows = [
        (
            Key::Gpus,
            "resources.gpus",
            &f.gpus,
            lim.gpus.map(u64::from),
            def.gpus.map(u64::from),
        ),
        (
            Key::Cpus,
            "resources.cpus",
            &f.cpus,
            lim.cpus.map(u64::from),
            def.cpus.map(u64::from),
        ),
        (
            Key::MemoryMb,
            "resources.memory_mb",
            &f.memory_mb,
            lim.memory_mb,
            def.memory_mb,
        ),
        (
            Key::TimeLimitMin,
            "resources.time_limit_s",
            &f.minutes,
            lim.time_limit_s.map(|s| s / 60),
            def.time_limit_s.map(|s| s / 60),
        ),
    ];
    for (k, key, value, limit, default) in rows {
        let help = limit
            .map(|l| format!("{} {l}", i18n.t(Key::AtMost)))
            .unwrap_or_default();
        let attrs = num_attrs(
            "1",
            Some("0".into()),
            limit.map(|l| l.to_string()),
            default.map(|d| d.to_string()),
        );
        field(&mut h, i18n.t(k), key, &help, |h| {
            input(h, key, &attrs, value)
        });
    }
    h.raw("</div>");
    group(&mut h, Key::Job, " four");
    field(&mut h, i18n.t(Key::ColName), "name", "", |h| {
        input(h, "name", "type=\"text\"", &f.name)
    });
    field(
        &mut h,
        i18n.t(Key::Priority),
        "priority",
        i18n.t(Key::PriorityHint),
        |h| {
            input(
                h,
                "priority",
                &num_attrs("1", None, None, Some("0".into())),
                &f.priority,
            )
        },
    );
    field(&mut h, i18n.t(Key::MaxRetries), "max_retries", "", |h| {
        input(
            h,
            "max_retries",
            &num_attrs("1", Some("0".into()), Some("10".into()), Some("0".into())),
            &f.retries,
        )
    });
    h.raw("</div>");
    h.0
}

/// What would run: the exact argv, cwd, env, resources, the config diff against the
/// cloned run, and the relay's warnings.
fn preview_html(i18n: I18n, p: &Preview, clone_of: Option<&str>) -> String {
    let mut h = Html::default();
    h.el("h3", "group-title", i18n.t(Key::Argv))
        .raw("<ol class=\"argv\" data-testid=\"preview-argv\" data-argv=\"")
        .text(&serde_json::to_string(&p.argv).unwrap_or_default())
        .raw("\">");
    for a in &p.argv {
        h.raw("<li>").el("code", "", a).raw("</li>");
    }
    h.raw("</ol><table class=\"kv\">");
    let mut rows: Vec<(String, String)> = p
        .cwd
        .iter()
        .map(|c| (i18n.t(Key::Cwd).to_string(), c.clone()))
        .collect();
    rows.extend(p.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    rows.push((
        i18n.t(Key::Resources).into(),
        serde_json::to_string(&p.resources).unwrap_or_default(),
    ));
    for (k, v) in rows {
        h.raw("<tr>").el("th", "", &k).el("td", "", &v).raw("</tr>");
    }
    h.raw("</table>");
    if clone_of.is_some() {
        h.el("h3", "group-title", i18n.t(Key::ConfigChanges));
        if p.diff.is_empty() {
            h.el("p", "muted", i18n.t(Key::NoConfigChanges));
        }
        h.raw("<table class=\"grid\" data-testid=\"preview-diff\">");
        for (k, old, new) in &p.diff {
            h.raw("<tr>")
                .el("td", "mono", k)
                .el("td", "old mono", &lf::value_text(old))
                .el("td", "", "→")
                .el("td", "new mono", &lf::value_text(new))
                .raw("</tr>");
        }
        h.raw("</table>");
    }
    if !p.warnings.is_empty() {
        h.el("div", "banner warn", &p.warnings.join(" · "));
    }
    h.0
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
            let bad = |e: serde_json::Error| Refusal {
                error: e.to_string(),
                field: None,
            };
            let result = answer.and_then(|text| {
                if submit {
                    let s: Submitted = serde_json::from_str(&text).map_err(bad)?;
                    flash(s.warnings);
                    let _ = window().location().set_hash(&queue_href(&s.job));
                } else {
                    preview.try_set(Some((
                        spec.clone(),
                        serde_json::from_str(&text).map_err(bad)?,
                    )));
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
                    {move || i18n.t(Key::PreviewJob)}</button>
                <button class="btn primary" data-testid="submit" disabled=move || !ready() || !current.get()
                    on:click=move |_| send(true)>{move || i18n.t(Key::Submit)}</button>
            </div>
            <p class="muted small">{move || if draft.with(Result::is_err) { i18n.t(Key::FixFields) } else { i18n.t(Key::PreviewFirst) }}</p>
            {move || general().map(|(f, e)| view! {
                <div class="banner alert" data-testid="relay-error">{e}" "{f}</div>
            })}
            <div class:stale=move || !current.get() data-testid="preview-body" inner_html=body></div>
        </section>
    }
}
