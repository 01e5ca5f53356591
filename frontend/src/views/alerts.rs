//! Alerts on the run page: the banner of active alerts ([`AlertBanner`]: level colour,
//! Dismiss, a pausing rule's last good checkpoint with its Load button) and the alerts
//! panel ([`AlertsPanel`]: history newest first, counts, the rules that apply with the
//! form to add one, [`super::alert_form`]). What shows comes from `RunState.alerts`,
//! folded from the run's stream; the rules list from `GET /api/runs/{run}/alerts`
//! (the run's own rules from the state when the relay has no such endpoint).

use super::alert_form::{self, FormText, ListedRule};
use super::common::{ago, use_clock};
use super::control::{clock_time, LoadButton, Target};
use super::login::can_command;
use super::notify;
use crate::api;
use crate::i18n::{use_i18n, I18n, Key};
use crate::load::use_run;
use crate::model;
use leptos::prelude::*;
use stepwatch_events::alerts::{ActiveAlert, AlertRecord, RULE_KINDS};
use stepwatch_events::FieldError;

fn enc(s: &str) -> String {
    String::from(js_sys::encode_uri_component(s))
}

fn level_key(level: &str) -> Key {
    match level {
        "error" => Key::LevelError,
        "info" => Key::LevelInfo,
        _ => Key::LevelWarning,
    }
}

/// The CSS class of a level's colour.
pub fn level_class(level: Option<&str>) -> &'static str {
    match level {
        Some("error") => "al-error",
        Some("info") => "al-info",
        _ => "al-warning",
    }
}

async fn delete(url: &str) -> Result<(), String> {
    let resp = gloo_net::http::Request::delete(url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.ok() {
        Ok(())
    } else {
        Err(format!("{} {}", resp.status(), resp.status_text()))
    }
}

/// The run's active alerts, newest first, with `id="alert-banner"`; notifies (when the
/// user allows it) of each firing that arrives while the page is open.
#[component]
pub fn AlertBanner() -> impl IntoView {
    let view_state = use_run().view;
    let active = Memo::new(move |_| view_state.with(|v| v.state.alerts.active.clone()));
    Effect::new(move |prev: Option<(bool, u64)>| {
        let now = view_state.with(|v| (v.history_loading, v.state.alerts.fired));
        if prev.is_some_and(|(loading, n)| !loading && !now.0 && now.1 > n) {
            view_state.with_untracked(|v| {
                if let Some(a) = v.state.alerts.active.last() {
                    let title = format!("{} — {}", v.state.name, a.title);
                    notify::show(&title, &a.text, &a.alert_id);
                }
            });
        }
        now
    });
    view! {
        <Show when=move || active.with(|a| !a.is_empty())>
            <div id="alert-banner" class="alert-banner" data-testid="alert-banner">
                <For each=move || active.get().into_iter().rev() key=|a| a.alert_id.clone() let:a>
                    <AlertItem a=a/>
                </For>
            </div>
        </Show>
    }
}

#[component]
fn AlertItem(a: ActiveAlert) -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    let target = StoredValue::new(Target::from_context());
    let allowed = can_command();
    let error = RwSignal::new(None::<String>);
    let id = a.alert_id.clone();
    let dismiss = move |_| {
        let t = target.get_value();
        let url = api::run_url(&t.base, &t.run, &format!("/alerts/{}/dismiss", enc(&id)));
        error.set(None);
        leptos::task::spawn_local(async move {
            if let Err(e) = api::post_json(&url, "{}".into()).await {
                error.set(Some(e.error));
            }
        });
    };
    let since = a.since;
    let step = a.step.map(|s| format!("{} {s} · ", i18n.t(Key::Step)));
    view! {
        <div class=format!("banner alert-item {}", level_class(Some(&a.level))) data-alert-id=a.alert_id.clone() data-level=a.level.clone()>
            <b class="alert-title">{a.title.clone()}</b>
            <span class="alert-text">{a.text.clone()}</span>
            <span class="small muted-ish">{step}{move || ago(i18n, since, clock.get())}</span>
            <span class="spacer"></span>
            {move || error.get().map(|e| view! { <span class="small">{i18n.t(Key::SendFailed)}": "{e}</span> })}
            <Show when=move || allowed.get()>
                <button class="mini" data-testid="dismiss" on:click=dismiss.clone()>{move || i18n.t(Key::Dismiss)}</button>
            </Show>
            {a.action.clone().map(|act| view! { <ActionLine action=act rule=a.rule.clone() step=a.step since=since/> })}
        </div>
    }
}

/// "paused by rule X · last good checkpoint: ckpt-200.pt (step 200) [Load]".
#[component]
fn ActionLine(
    action: String,
    rule: String,
    step: Option<u64>,
    since: Option<f64>,
) -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let good = Memo::new(move |_| {
        view_state.with(|v| alert_form::last_good(&v.state.checkpoints, step, since).cloned())
    });
    let by = if action == "stop" {
        Key::StoppedByRule
    } else {
        Key::PausedByRule
    };
    view! {
        <div class="alert-action small" data-testid="alert-action" data-action=action>
            {move || i18n.t(by)}" "<b class="mono">{rule.clone()}</b>" · "{move || i18n.t(Key::LastGood)}": "
            {move || match good.get() {
                Some(c) => view! {
                    <span class="mono" data-testid="last-good" data-path=c.path.clone() title=c.path.clone()>{model::file_name(&c.path).to_string()}</span>
                    {c.step.map(|s| format!(" ({} {s}) ", i18n.t(Key::Step)))}
                    <LoadButton path=c.path.clone()/>
                }.into_any(),
                None => view! { <span data-testid="last-good">{i18n.t(Key::NoGoodCheckpoint)}</span> }.into_any(),
            }}
        </div>
    }
}

/// The alerts panel, collapsed: counts in its summary, then the history, the rules and
/// (for those who may command) the add-rule form.
#[component]
pub fn AlertsPanel() -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let target = StoredValue::new(Target::from_context());
    let listed = RwSignal::new(None::<Vec<ListedRule>>);
    let refresh = RwSignal::new(0u32);
    let own = Memo::new(move |_| view_state.with(|v| v.state.alerts.rules.clone()));
    Effect::new(move |_| {
        own.track();
        refresh.track();
        let t = target.get_value();
        leptos::task::spawn_local(async move {
            let url = api::run_url(&t.base, &t.run, "/alerts");
            let answer = api::get_value(&url).await;
            listed.try_set(answer.map(|v| alert_form::listed_rules(&v)));
        });
    });
    let counts = move || {
        view_state.with(|v| {
            let a = &v.state.alerts;
            (a.active.len(), a.fired, a.failed_deliveries)
        })
    };
    view! {
        <details class="panel alerts-panel" data-testid="alerts-panel">
            <summary class="panel-head">
                <h2>{move || i18n.t(Key::Alerts)}</h2>
                <span class="small muted" data-testid="alert-counts">{move || {
                    let (active, fired, failed) = counts();
                    format!("{active} {} · {fired} {} · {failed} {}", i18n.t(Key::ActiveAlerts), i18n.t(Key::FiredCount), i18n.t(Key::FailedDeliveries))
                }}</span>
            </summary>
            <AlertHistory/>
            <RulesList listed=listed refresh=refresh/>
            <Show when=move || can_command().get()>
                <RuleForm refresh=refresh/>
            </Show>
        </details>
    }
}

fn record_what(i18n: I18n, r: &AlertRecord) -> (String, &'static str) {
    match r.what.as_str() {
        "fired" => (
            format!(
                "{} · {}",
                i18n.t(Key::AlertFired),
                i18n.t(level_key(r.level.as_deref().unwrap_or("")))
            ),
            level_class(r.level.as_deref()),
        ),
        "resolved" => (i18n.t(Key::AlertResolved).to_string(), "al-ok"),
        _ if r.ok == Some(true) => (i18n.t(Key::DeliveryOk).to_string(), "al-ok"),
        _ => (i18n.t(Key::DeliveryFailed).to_string(), "al-error"),
    }
}

fn record_detail(i18n: I18n, r: &AlertRecord) -> String {
    let mut out = r.text.clone();
    if let Some(ch) = &r.channel {
        let attempt = r.attempt.unwrap_or(1);
        let sep = if out.is_empty() { "" } else { " — " };
        out = format!("{ch} · {} {attempt}{sep}{out}", i18n.t(Key::Attempt));
    }
    if let Some(who) = &r.sender {
        out = format!("{out} ({} {who})", i18n.t(Key::DismissedBy));
    }
    out
}

#[component]
fn AlertHistory() -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let rows = move || {
        view_state.with(|v| {
            v.state
                .alerts
                .recent
                .iter()
                .rev()
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    view! {
        <Show when=move || view_state.with(|v| v.state.alerts.recent.is_empty())>
            <p class="muted">{move || i18n.t(Key::NoAlerts)}</p>
        </Show>
        <div class="scroll alert-history">
            <table class="grid" data-testid="alert-history">
                <tbody>
                {move || rows().into_iter().map(|r| {
                    let (what, class) = record_what(i18n, &r);
                    view! {
                        <tr data-testid="alert-record" data-what=r.what.clone()>
                            <td class="small muted">{clock_time(r.time)}</td>
                            <td><span class=format!("al-tag {class}")>{what}</span></td>
                            <td class="mono small">{r.alert_id.clone()}</td>
                            <td class="small cmd-msg">{record_detail(i18n, &r)}</td>
                        </tr>
                    }
                }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// The rules that apply to the run, with Remove for the run's own.
#[component]
fn RulesList(listed: RwSignal<Option<Vec<ListedRule>>>, refresh: RwSignal<u32>) -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let target = StoredValue::new(Target::from_context());
    let allowed = can_command();
    let error = RwSignal::new(None::<String>);
    let rules = move || {
        listed.get().unwrap_or_else(|| {
            view_state.with(|v| {
                v.state
                    .alerts
                    .rules
                    .iter()
                    .map(|r| ListedRule {
                        rule: r.rule.clone(),
                        source: "run".into(),
                    })
                    .collect()
            })
        })
    };
    let remove = move |name: String| {
        let t = target.get_value();
        let url = api::run_url(&t.base, &t.run, &format!("/alerts/rules/{}", enc(&name)));
        error.set(None);
        leptos::task::spawn_local(async move {
            match delete(&url).await {
                Ok(()) => refresh.update(|n| *n += 1),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <h3 class="group-title">{move || i18n.t(Key::AlertRules)}</h3>
        {move || error.get().map(|e| view! { <p class="small alert">{e}</p> })}
        <table class="grid" data-testid="alert-rules">
            <tbody>
            {move || rules().into_iter().map(|r| {
                let name = r.rule.name.clone();
                let own = r.source == "run";
                let (shown_name, attr) = (name.clone(), name.clone());
                view! {
                    <tr data-testid="alert-rule" data-rule=attr data-source=r.source.clone()>
                        <td class="mono">{shown_name}</td>
                        <td class="small">{r.rule.describe()}</td>
                        <td><span class=format!("al-tag {}", level_class(Some(r.rule.level.as_str())))>{i18n.t(level_key(r.rule.level.as_str()))}</span></td>
                        <td class="small">{r.rule.action.map(|a| i18n.t(if a.command() == "stop" { Key::Stop } else { Key::Pause }))}</td>
                        <td class="small muted">{i18n.t(if own { Key::SourceRun } else { Key::SourceConfig })}</td>
                        <td>{(own && allowed.get()).then(|| view! {
                            <button class="mini" data-testid="remove-rule" on:click=move |_| remove(name.clone())>{i18n.t(Key::Remove)}</button>
                        })}</td>
                    </tr>
                }
            }).collect_view()}
            </tbody>
        </table>
    }
}

/// One text field of the rule form, shown when the kind reads it (or `always`), with
/// the error naming it.
#[component]
fn FormField(
    k: &'static str,
    label: Key,
    text: RwSignal<FormText>,
    err: RwSignal<Option<FieldError>>,
    #[prop(optional)] always: bool,
    #[prop(optional)] placeholder: &'static str,
) -> impl IntoView {
    let i18n = use_i18n();
    let shown = move || {
        always
            || text.with(|t| {
                alert_form::kind_fields(t.get("kind").map_or("", |s| s.as_str())).contains(&k)
            })
    };
    let msg = move || {
        err.with(|e| {
            e.as_ref()
                .filter(|e| e.field == k)
                .map(|e| e.message.clone())
        })
    };
    view! {
        <div class=move || if msg().is_some() { "field bad" } else { "field" } style:display=move || if shown() { "" } else { "none" }>
            <label>{move || i18n.t(label)}</label>
            <input data-testid=format!("rule-{k}") placeholder=placeholder
                prop:value=move || text.with(|t| t.get(k).cloned().unwrap_or_default())
                on:input=move |ev| text.update(|t| { t.insert(k.to_string(), event_target_value(&ev)); })/>
            <span class="field-error" data-testid=format!("rule-{k}-error")>{msg}</span>
        </div>
    }
}

/// A select of the rule form: `options` are (value, label; `None`: the value itself).
#[component]
fn FormSelect(
    k: &'static str,
    label: Key,
    text: RwSignal<FormText>,
    err: RwSignal<Option<FieldError>>,
    options: Vec<(&'static str, Option<Key>)>,
) -> impl IntoView {
    let i18n = use_i18n();
    let msg = move || {
        err.with(|e| {
            e.as_ref()
                .filter(|e| e.field == k)
                .map(|e| e.message.clone())
        })
    };
    view! {
        <div class=move || if msg().is_some() { "field bad" } else { "field" }>
            <label>{move || i18n.t(label)}</label>
            <select data-testid=format!("rule-{k}") prop:value=move || text.with(|t| t.get(k).cloned().unwrap_or_default())
                on:change=move |ev| text.update(|t| { t.insert(k.to_string(), event_target_value(&ev)); })>
                {options.into_iter().map(|(v, l)| view! {
                    <option value=v>{move || l.map_or(v, |l| i18n.t(l))}</option>
                }).collect_view()}
            </select>
            <span class="field-error">{msg}</span>
        </div>
    }
}

const FORM_FIELDS: [(&str, Key, &str); 9] = [
    ("metric", Key::ColMetric, "loss"),
    ("threshold", Key::Threshold, ""),
    ("for", Key::ForPoints, "1"),
    ("factor", Key::Factor, "3"),
    ("window", Key::Window, ""),
    ("min_delta_pct", Key::MinDeltaPct, "1"),
    ("after_s", Key::AfterS, "300"),
    ("below_pct", Key::BelowPct, "5"),
    ("event", Key::EventName, "alert"),
];

/// Add a rule: checked here with the relay's own checker, then POSTed; the relay's 400
/// shows next to the field it names.
#[component]
fn RuleForm(refresh: RwSignal<u32>) -> impl IntoView {
    let i18n = use_i18n();
    let target = StoredValue::new(Target::from_context());
    let text = RwSignal::new(FormText::from([("kind".to_string(), "above".to_string())]));
    let err = RwSignal::new(None::<FieldError>);
    let on_form = |f: &str| {
        ["name", "kind", "level", "action"].contains(&f) || FORM_FIELDS.iter().any(|x| x.0 == f)
    };
    let general = move || {
        err.with(|e| {
            e.as_ref()
                .filter(|e| !on_form(&e.field))
                .map(ToString::to_string)
        })
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = match alert_form::check(&text.get_untracked(), i18n.t(Key::MustBeNumber)) {
            Ok(v) => v.to_string(),
            Err(e) => return err.set(Some(e)),
        };
        err.set(None);
        let t = target.get_value();
        let url = api::run_url(&t.base, &t.run, "/alerts/rules");
        leptos::task::spawn_local(async move {
            match api::post_json(&url, body).await {
                Ok(_) => {
                    text.update(|t| drop(t.remove("name")));
                    refresh.update(|n| *n += 1);
                }
                Err(r) => err.set(Some(FieldError::new(r.field.unwrap_or_default(), r.error))),
            }
        });
    };
    let kinds = RULE_KINDS.iter().map(|k| (*k, None)).collect::<Vec<_>>();
    let levels = vec![
        ("", Some(Key::KindDefault)),
        ("info", Some(Key::LevelInfo)),
        ("warning", Some(Key::LevelWarning)),
        ("error", Some(Key::LevelError)),
    ];
    let actions = vec![
        ("", Some(Key::NoAction)),
        ("pause", Some(Key::Pause)),
        ("stop", Some(Key::Stop)),
    ];
    view! {
        <h3 class="group-title">{move || i18n.t(Key::AddRule)}</h3>
        <form class="rule-form" data-testid="rule-form" on:submit=submit>
            <div class="fields four">
                <FormField k="name" label=Key::ColName text=text err=err always=true/>
                <FormSelect k="kind" label=Key::RuleKind text=text err=err options=kinds/>
                {FORM_FIELDS.iter().map(|(k, label, ph)| view! { <FormField k=*k label=*label text=text err=err placeholder=*ph/> }).collect_view()}
                <FormSelect k="level" label=Key::Level text=text err=err options=levels/>
                <FormSelect k="action" label=Key::Action text=text err=err options=actions/>
            </div>
            {move || general().map(|e| view! { <p class="small alert" data-testid="rule-error">{e}</p> })}
            <button class="btn primary" type="submit" data-testid="rule-add">{move || i18n.t(Key::Add)}</button>
        </form>
    }
}
