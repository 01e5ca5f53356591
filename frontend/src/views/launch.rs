//! The Launch page (`#/launch`, `?template=NAME`, `?clone=<run>` for "Re-run with
//! changes"): a queue (its engine, and a warning before submitting when no live agent
//! serves it), a template's typed form or, where the queue allows it, a free-form argv,
//! resources within the queue's limits, priority and retries. Preview shows the exact
//! argv and the config diff; Submit queues the job and opens the Queue page. The form's
//! data and checks are in [`super::launch_form`].

use super::launch_form::{self as lf, Fields, Msg, Offered, Problems};
use super::queue::{flash, queue_href};
use crate::api::{self, Refusal};
use crate::i18n::{use_i18n, I18n, Key};
use crate::route::{run_href, Route};
use leptos::prelude::*;
use std::collections::BTreeMap;
use stepwatch_events::api as answers;
use stepwatch_events::jobs::{JobSpec, JobView, Preview, QueueInfo, Submitted};
use stepwatch_events::template::{ParamKind, ParamSpec};

/// The queues and templates on offer.
#[derive(Debug, Clone, PartialEq, Default)]
struct Choices {
    queues: Vec<QueueInfo>,
    templates: Vec<Offered>,
}

/// The form's fields as signals.
#[derive(Clone, Copy)]
struct Form {
    queue: RwSignal<String>,
    template: RwSignal<String>,
    free: RwSignal<bool>,
    params: RwSignal<BTreeMap<String, String>>,
    name: RwSignal<String>,
    gpus: RwSignal<String>,
    cpus: RwSignal<String>,
    memory_mb: RwSignal<String>,
    minutes: RwSignal<String>,
    priority: RwSignal<String>,
    retries: RwSignal<String>,
    argv: RwSignal<String>,
    cwd: RwSignal<String>,
    env: RwSignal<String>,
    clone_of: RwSignal<Option<String>>,
}

impl Form {
    fn new() -> Form {
        let s = || RwSignal::new(String::new());
        Form {
            queue: s(),
            template: s(),
            free: RwSignal::new(false),
            params: RwSignal::new(BTreeMap::new()),
            name: s(),
            gpus: s(),
            cpus: s(),
            memory_mb: s(),
            minutes: s(),
            priority: s(),
            retries: s(),
            argv: s(),
            cwd: s(),
            env: s(),
            clone_of: RwSignal::new(None),
        }
    }

    fn text(&self) -> [RwSignal<String>; 12] {
        [
            self.queue,
            self.template,
            self.name,
            self.gpus,
            self.cpus,
            self.memory_mb,
            self.minutes,
            self.priority,
            self.retries,
            self.argv,
            self.cwd,
            self.env,
        ]
    }

    fn get(&self) -> Fields {
        let [queue, template, name, gpus, cpus, memory_mb, minutes, priority, retries, argv, cwd, env] =
            self.text().map(|s| s.get());
        Fields {
            queue,
            template,
            free: self.free.get(),
            params: self.params.get(),
            name,
            gpus,
            cpus,
            memory_mb,
            minutes,
            priority,
            retries,
            argv,
            cwd,
            env,
            clone_of: self.clone_of.get(),
        }
    }

    fn set(&self, f: Fields) {
        let texts = [
            f.queue,
            f.template,
            f.name,
            f.gpus,
            f.cpus,
            f.memory_mb,
            f.minutes,
            f.priority,
            f.retries,
            f.argv,
            f.cwd,
            f.env,
        ];
        for (sig, t) in self.text().into_iter().zip(texts) {
            sig.set(t);
        }
        self.free.set(f.free);
        self.params.set(f.params);
        self.clone_of.set(f.clone_of);
    }
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

/// Where each field's error comes from: the form's own checks, else the relay's refusal
/// of exactly this job.
#[derive(Clone, Copy)]
struct Errors {
    draft: Memo<Result<JobSpec, Problems>>,
    refused: RwSignal<Option<(JobSpec, Refusal)>>,
    i18n: I18n,
}

impl Errors {
    fn show(&self, m: &Msg) -> String {
        match m {
            Msg::Text(t) => t.clone(),
            Msg::Key(k) => self.i18n.t(*k).to_string(),
            Msg::AtMost(n) => format!("{} {n}", self.i18n.t(Key::AtMost)),
        }
    }

    /// The error of `field`, if any.
    fn at(&self, field: &str) -> Option<String> {
        let own = self.draft.with(|d| match d {
            Err(p) => p.get(field).map(|m| self.show(m)),
            Ok(_) => None,
        });
        own.or_else(|| self.relay().filter(|(f, _)| f == field).map(|(_, e)| e))
    }

    /// The relay's refusal of the job as it stands: its (form) field and words.
    fn relay(&self) -> Option<(String, String)> {
        let spec = self.draft.with(|d| d.as_ref().ok().cloned())?;
        self.refused.with(|r| {
            r.as_ref().filter(|(s, _)| *s == spec).map(|(_, r)| {
                (
                    r.field.as_deref().map(lf::norm).unwrap_or_default(),
                    r.error.clone(),
                )
            })
        })
    }
}

#[component]
pub fn LaunchPage(base: String, route: Route) -> impl IntoView {
    let i18n = use_i18n();
    let form = Form::new();
    let choices = RwSignal::new(None::<Choices>);
    {
        let base = base.clone();
        leptos::task::spawn_local(async move {
            let (ch, f) = load(&base, &route).await;
            if choices.try_set(Some(ch)).is_none() {
                form.set(f);
            }
        });
    }
    let queue = Memo::new(move |_| {
        let name = form.queue.get();
        choices.with(|c| c.as_ref()?.queues.iter().find(|q| q.name == name).cloned())
    });
    let tpl = Memo::new(move |_| {
        let name = form.template.get();
        choices.with(|c| {
            c.as_ref()?
                .templates
                .iter()
                .find(|o| o.tpl.name == name)
                .cloned()
        })
    });
    let draft = Memo::new(move |_| {
        let f = form.get();
        tpl.with(|t| queue.with(|q| lf::build(&f, t.as_ref().map(|o| &o.tpl), q.as_ref())))
    });
    let errors = Errors {
        draft,
        refused: RwSignal::new(None),
        i18n,
    };
    let loaded = move || choices.with(Option::is_some);
    view! {
        <div class="crumbs"><a href="#/">{move || i18n.t(Key::BackToRuns)}</a>" · "<a href="#/queue">{move || i18n.t(Key::Queues)}</a></div>
        <div class="page-head">
            <h1>{move || i18n.t(Key::LaunchJob)}</h1>
            {move || form.clone_of.get().map(|r| view! {
                <span class="muted" data-testid="clone-of">{i18n.t(Key::RerunOf)}" "<a href=run_href(&r)>{r.clone()}</a></span>
            })}
        </div>
        <Show when=loaded fallback=move || view! { <p class="muted">{move || i18n.t(Key::LoadingHistory)}</p> }>
            <Show when=move || choices.with(|c| c.as_ref().is_some_and(|c| c.queues.is_empty()))>
                <p class="empty" data-testid="no-queues">{move || i18n.t(Key::NoQueues)}</p>
            </Show>
            <div class="launch">
                <section class="panel form" data-testid="launch-form">
                    <QueueField form=form choices=choices queue=queue errors=errors/>
                    <TemplateField form=form choices=choices queue=queue tpl=tpl errors=errors/>
                    <Show when=move || !form.free.get()>
                        <ParamFields form=form tpl=tpl errors=errors/>
                    </Show>
                    <Show when=move || form.free.get()>
                        <FreeForm form=form errors=errors/>
                    </Show>
                    <JobFields form=form queue=queue errors=errors/>
                </section>
                <PreviewPanel base=base.clone() errors=errors/>
            </div>
        </Show>
    }
}

/// A labelled field with its error and help under it.
fn row(
    errors: Errors,
    label: impl IntoView + 'static,
    field: &str,
    input: impl IntoView + 'static,
    help: Option<String>,
) -> impl IntoView {
    let f = field.to_string();
    let error = Signal::derive(move || errors.at(&f));
    view! {
        <div class="field" class:bad=move || error.with(Option::is_some) data-field=field.to_string()>
            <label>{label}</label>
            {input}
            {help.map(|h| view! { <div class="help muted">{h}</div> })}
            {move || error.get().map(|e| view! { <div class="field-error" data-testid="field-error">{e}</div> })}
        </div>
    }
}

#[component]
fn QueueField(
    form: Form,
    choices: RwSignal<Option<Choices>>,
    queue: Memo<Option<QueueInfo>>,
    errors: Errors,
) -> impl IntoView {
    let i18n = use_i18n();
    let pick = move |ev| {
        let name = event_target_value(&ev);
        form.queue.set(name.clone());
        if !queue.with(|q| q.as_ref().is_some_and(|q| q.may_free_form)) {
            form.free.set(false);
        }
        // A template offered on another queue gives way to one offered here.
        let current = form.template.get_untracked();
        choices.with_untracked(|c| {
            let Some(c) = c else { return };
            let fits = c
                .templates
                .iter()
                .any(|o| o.tpl.name == current && o.fits(&name));
            if !fits {
                let next = c.templates.iter().find(|o| o.fits(&name));
                choose_template(form, next);
            }
        });
    };
    let options = move || {
        choices.with(|c| {
            c.iter()
                .flat_map(|c| &c.queues)
                .map(|q| {
                    (
                        q.name.clone(),
                        format!("{} ({})", q.name, q.engine),
                        q.may_submit,
                    )
                })
                .collect::<Vec<_>>()
        })
    };
    let live = move || queue.with(|q| q.as_ref().map(|q| q.live_agents().count()));
    let select = view! {
        <select data-testid="queue-select" prop:value=move || form.queue.get() on:change=pick>
            {move || options().into_iter().map(|(v, label, ok)| {
                let selected = form.queue.get_untracked() == v;
                view! { <option value=v disabled=!ok selected=selected>{label}</option> }
            }).collect_view()}
        </select>
        <span class="muted small" data-testid="queue-agents">
            {move || live().map(|n| format!(" {n} {}", i18n.t(Key::LiveAgents)))}
            {move || queue.with(|q| q.as_ref().map(|q| format!(" · {}", q.description)).filter(|d| d.len() > 3))}
        </span>
    };
    view! {
        {row(errors, move || i18n.t(Key::Queue), "queue", select, None)}
        <Show when=move || live() == Some(0)>
            <div class="banner warn" data-testid="no-agent-warning">
                {move || format!("{} {}{}", i18n.t(Key::NoAgentBefore), form.queue.get(), i18n.t(Key::NoAgentAfter))}
            </div>
        </Show>
        <Show when=move || queue.with(|q| q.as_ref().is_some_and(|q| !q.may_submit))>
            <div class="banner alert" data-testid="may-not-submit">{move || i18n.t(Key::MayNotSubmit)}</div>
        </Show>
    }
}

/// Switches the form to `next`'s template: its defaults, and its name where the job's
/// name was the old template's.
fn choose_template(form: Form, next: Option<&Offered>) {
    let old = form.template.get_untracked();
    let new = next.map(|o| o.tpl.name.clone()).unwrap_or_default();
    if form.name.with_untracked(|n| n.is_empty() || *n == old) {
        form.name.set(new.clone());
    }
    form.params
        .set(next.map(|o| lf::defaults(&o.tpl)).unwrap_or_default());
    form.template.set(new);
}

#[component]
fn TemplateField(
    form: Form,
    choices: RwSignal<Option<Choices>>,
    queue: Memo<Option<QueueInfo>>,
    tpl: Memo<Option<Offered>>,
    errors: Errors,
) -> impl IntoView {
    let i18n = use_i18n();
    let pick = move |ev| {
        let name = event_target_value(&ev);
        choices.with_untracked(|c| {
            let next = c
                .iter()
                .flat_map(|c| &c.templates)
                .find(|o| o.tpl.name == name);
            choose_template(form, next);
        });
    };
    let options = move || {
        let q = form.queue.get();
        choices.with(|c| {
            c.iter()
                .flat_map(|c| &c.templates)
                .filter(|o| o.fits(&q))
                .map(|o| o.tpl.name.clone())
                .collect::<Vec<_>>()
        })
    };
    let may_free = move || queue.with(|q| q.as_ref().is_some_and(|q| q.may_free_form));
    let select = view! {
        <select data-testid="template-select" prop:value=move || form.template.get() on:change=pick
            disabled=move || form.free.get()>
            <option value="" disabled=true>"–"</option>
            {move || options().into_iter().map(|n| {
                let selected = form.template.get_untracked() == n;
                view! { <option value=n.clone() selected=selected>{n.clone()}</option> }
            }).collect_view()}
        </select>
        <span class="muted small">" "{move || tpl.with(|t| t.as_ref().map(|o| o.tpl.description.clone()))}</span>
    };
    view! {
        {row(errors, move || i18n.t(Key::Template), "template", select, None)}
        <Show when=may_free>
            <label class="check" data-testid="free-form-toggle">
                <input type="checkbox" bind:checked=form.free/>
                " "{move || i18n.t(Key::FreeForm)}
                <span class="muted small">" "{move || i18n.t(Key::FreeFormHint)}</span>
            </label>
        </Show>
    }
}

#[component]
fn ParamFields(form: Form, tpl: Memo<Option<Offered>>, errors: Errors) -> impl IntoView {
    let i18n = use_i18n();
    let params = move || tpl.with(|t| t.as_ref().map(|o| o.tpl.params.clone()).unwrap_or_default());
    view! {
        <h3 class="group-title">{move || i18n.t(Key::Parameters)}</h3>
        <div class="fields" data-testid="params">
            {move || params().into_iter().map(|p| param_row(form, errors, i18n, p)).collect_view()}
        </div>
    }
}

fn bound<T: ToString>(b: &Option<T>) -> Option<String> {
    b.as_ref().map(T::to_string)
}

/// One parameter's input, by kind.
fn param_row(form: Form, errors: Errors, i18n: I18n, p: ParamSpec) -> impl IntoView {
    let name = p.name.clone();
    let value = {
        let name = name.clone();
        move || {
            form.params
                .with(|m| m.get(&name).cloned().unwrap_or_default())
        }
    };
    let set = {
        let name = name.clone();
        move |v: String| form.params.update(|m| drop(m.insert(name.clone(), v)))
    };
    let testid = format!("param-{name}");
    let on_input = {
        let set = set.clone();
        move |ev| set(event_target_value(&ev))
    };
    let number = |step: &'static str, min: Option<String>, max: Option<String>| {
        view! { <input type="number" step=step min=min max=max data-testid=testid.clone()
        prop:value=value.clone() on:input=on_input.clone()/> }
        .into_any()
    };
    let input = match &p.kind {
        ParamKind::Int { min, max } => number("1", bound(min), bound(max)),
        ParamKind::Float { min, max } => number("any", bound(min), bound(max)),
        ParamKind::Bool => {
            let value = value.clone();
            view! { <input type="checkbox" data-testid=testid.clone() prop:checked=move || value() == "true"
                on:change=move |ev| set(event_target_checked(&ev).to_string())/> }
            .into_any()
        }
        ParamKind::Choice { values: cs }
        | ParamKind::String {
            choices: Some(cs), ..
        } => {
            let current = value();
            view! {
                <select data-testid=testid.clone() prop:value=value.clone() on:change=on_input.clone()>
                    {(!cs.contains(&current)).then(|| view! { <option value="">"–"</option> })}
                    {cs.iter().map(|c| view! { <option value=c.clone() selected=*c == current>{c.clone()}</option> }).collect_view()}
                </select>
            }
            .into_any()
        }
        ParamKind::String { max_len, .. } | ParamKind::Path { max_len } => {
            view! { <input type="text" maxlength=max_len.to_string() data-testid=testid.clone()
            prop:value=value.clone() on:input=on_input.clone()/> }
            .into_any()
        }
    };
    let mut help: Vec<String> = p.help.iter().cloned().collect();
    if let Some(d) = &p.default {
        help.push(format!("{} {}", i18n.t(Key::DefaultIs), lf::value_text(d)));
    }
    let required = p.is_required();
    let label = view! { <span class="mono">{name.clone()}</span>{required.then_some(" *")} };
    let help = Some(help.join(" · ")).filter(|h| !h.is_empty());
    row(errors, label, &format!("params.{name}"), input, help)
}

#[component]
fn FreeForm(form: Form, errors: Errors) -> impl IntoView {
    let i18n = use_i18n();
    let area = |sig: RwSignal<String>, testid: &'static str, rows: &'static str| {
        view! { <textarea class="mono" rows=rows data-testid=testid spellcheck="false" bind:value=sig></textarea> }
    };
    view! {
        <h3 class="group-title">{move || i18n.t(Key::FreeForm)}</h3>
        <div class="fields">
            {row(errors, move || i18n.t(Key::Argv), "argv", area(form.argv, "argv", "5"), Some(i18n.t(Key::ArgvHint).into()))}
            {row(errors, move || i18n.t(Key::Cwd), "cwd",
                view! { <input type="text" class="mono" data-testid="cwd" bind:value=form.cwd/> }, None)}
            {row(errors, move || i18n.t(Key::Env), "env", area(form.env, "env", "3"), Some(i18n.t(Key::EnvHint).into()))}
        </div>
    }
}

#[component]
fn JobFields(form: Form, queue: Memo<Option<QueueInfo>>, errors: Errors) -> impl IntoView {
    let i18n = use_i18n();
    let num = move |sig: RwSignal<String>,
                    testid: &'static str,
                    limit: fn(&QueueInfo) -> Option<u64>,
                    default: fn(&QueueInfo) -> Option<u64>| {
        let max = move || queue.with(|q| q.as_ref().and_then(limit).map(|n| n.to_string()));
        let placeholder =
            move || queue.with(|q| q.as_ref().and_then(default).map(|n| n.to_string()));
        view! { <input type="number" min="0" step="1" data-testid=testid max=max placeholder=placeholder bind:value=sig/> }
    };
    let limit_help = move |limit: fn(&QueueInfo) -> Option<u64>| {
        queue.with_untracked(|q| {
            q.as_ref()
                .and_then(limit)
                .map(|n| format!("{} {n}", i18n.t(Key::AtMost)))
        })
    };
    let gpus = |q: &QueueInfo| q.limits.gpus.map(u64::from);
    let cpus = |q: &QueueInfo| q.limits.cpus.map(u64::from);
    let mem = |q: &QueueInfo| q.limits.memory_mb;
    let mins = |q: &QueueInfo| q.limits.time_limit_s.map(|s| s / 60);
    view! {
        <h3 class="group-title">{move || i18n.t(Key::Resources)}</h3>
        <div class="fields four">
            {row(errors, move || i18n.t(Key::Gpus), "resources.gpus",
                num(form.gpus, "gpus", gpus, |q| q.defaults.gpus.map(u64::from)), limit_help(gpus))}
            {row(errors, move || i18n.t(Key::Cpus), "resources.cpus",
                num(form.cpus, "cpus", cpus, |q| q.defaults.cpus.map(u64::from)), limit_help(cpus))}
            {row(errors, move || i18n.t(Key::MemoryMb), "resources.memory_mb",
                num(form.memory_mb, "memory", mem, |q| q.defaults.memory_mb), limit_help(mem))}
            {row(errors, move || i18n.t(Key::TimeLimitMin), "resources.time_limit_s",
                num(form.minutes, "minutes", mins, |q| q.defaults.time_limit_s.map(|s| s / 60)), limit_help(mins))}
        </div>
        <h3 class="group-title">{move || i18n.t(Key::Job)}</h3>
        <div class="fields four">
            {row(errors, move || i18n.t(Key::ColName), "name",
                view! { <input type="text" data-testid="job-name" bind:value=form.name/> }, None)}
            {row(errors, move || i18n.t(Key::Priority), "priority",
                view! { <input type="number" step="1" placeholder="0" data-testid="priority" bind:value=form.priority/> },
                Some(i18n.t(Key::PriorityHint).into()))}
            {row(errors, move || i18n.t(Key::MaxRetries), "max_retries",
                view! { <input type="number" min="0" max="10" step="1" placeholder="0" data-testid="retries" bind:value=form.retries/> }, None)}
        </div>
    }
}

/// Preview and Submit: what would run (the exact argv, cwd, env, resources), the config
/// diff against the cloned run, the relay's warnings; Submit is offered for the job
/// previewed, as long as the form still describes it.
#[component]
fn PreviewPanel(base: String, errors: Errors) -> impl IntoView {
    let i18n = use_i18n();
    let preview = RwSignal::new(None::<(JobSpec, Preview)>);
    let busy = RwSignal::new(false);
    let draft = errors.draft;
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
                errors.refused.try_set(Some((spec, r)));
            }
        });
    };
    let ready = move || draft.with(Result::is_ok) && !busy.get();
    let general = move || errors.relay().filter(|(f, _)| !lf::has_place(f));
    view! {
        <section class="panel preview" data-testid="preview">
            <div class="toolbar">
                <button class="btn" data-testid="preview-button" disabled=move || !ready() on:click=move |_| send(false)>
                    {move || i18n.t(Key::PreviewJob)}</button>
                <button class="btn primary" data-testid="submit" disabled=move || !ready() || !current.get()
                    on:click=move |_| send(true)>{move || i18n.t(Key::Submit)}</button>
                <span class="muted small">{move || (!current.get()).then(|| i18n.t(Key::PreviewFirst))}</span>
            </div>
            {move || general().map(|(f, e)| view! {
                <div class="banner alert" data-testid="relay-error">{e}{(!f.is_empty()).then(|| format!(" ({f})"))}</div>
            })}
            <Show when=move || draft.with(Result::is_err)>
                <p class="field-error">{move || i18n.t(Key::FixFields)}</p>
            </Show>
            {move || preview.get().map(|(_, p)| view! { <PreviewBody p=p stale=Signal::derive(move || !current.get())/> })}
        </section>
    }
}

#[component]
fn PreviewBody(p: Preview, stale: Signal<bool>) -> impl IntoView {
    let i18n = use_i18n();
    let json = serde_json::to_string(&p.argv).unwrap_or_default();
    let res = serde_json::to_string(&p.resources).unwrap_or_default();
    let kv = |rows: Vec<(String, String)>| {
        view! { <table class="kv">{rows.into_iter().map(|(k, v)| view! { <tr><th>{k}</th><td>{v}</td></tr> }).collect_view()}</table> }
    };
    let diff = p.diff.clone();
    let cloned = !diff.is_empty();
    view! {
        <div class:stale=move || stale.get() data-testid="preview-body">
            <h3 class="group-title">{move || i18n.t(Key::Argv)}</h3>
            <ol class="argv" data-testid="preview-argv" data-argv=json>
                {p.argv.iter().map(|a| view! { <li><code>{a.clone()}</code></li> }).collect_view()}
            </ol>
            {p.cwd.clone().map(|c| view! { <div class="small"><span class="muted">{move || i18n.t(Key::Cwd)}": "</span><code>{c}</code></div> })}
            {(!p.env.is_empty()).then(|| view! { <h3 class="group-title">{move || i18n.t(Key::Env)}</h3> })}
            {kv(p.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect())}
            <div class="small"><span class="muted">{move || i18n.t(Key::Resources)}": "</span><code>{res}</code></div>
            {cloned.then(|| view! {
                <h3 class="group-title">{move || i18n.t(Key::ConfigChanges)}</h3>
                <table class="grid" data-testid="preview-diff">
                    {diff.into_iter().map(|(k, old, new)| view! {
                        <tr data-key=k.clone()><td class="mono">{k.clone()}</td><td class="old mono">{lf::value_text(&old)}</td>
                            <td>"→"</td><td class="new mono">{lf::value_text(&new)}</td></tr>
                    }).collect_view()}
                </table>
            })}
            {(!p.warnings.is_empty()).then(|| view! {
                <div class="banner warn" data-testid="preview-warnings">
                    {p.warnings.iter().map(|w| view! { <div>{w.clone()}</div> }).collect_view()}
                </div>
            })}
        </div>
    }
}
