//! Alerts on the run page: the banner of active alerts ([`AlertBanner`]: level colour,
//! Dismiss, a pausing rule's last good checkpoint with its Load button) and the alerts
//! panel ([`AlertsPanel`]: history newest first, counts, the rules that apply with the
//! form to add one, [`super::alert_form`]). What shows comes from `RunState.alerts`,
//! folded from the run's stream; the rules list from `GET /api/runs/{run}/alerts`
//! (the run's own rules from the state when the relay has no such endpoint).

use super::alert_form::{self, FormText, ListedRule};
use super::alerts_html;
use super::common::use_clock;
use super::control::{send, Target};
use super::job::Html;
use super::login::can_command;
use crate::api;
use crate::i18n::{use_i18n, Key};
use crate::load::use_run;
use crate::route::enc;
use leptos::prelude::*;
use stepwatch_events::FieldError;
use wasm_bindgen::JsCast;

/// The CSS class of a level's colour.
pub fn level_class(level: Option<&str>) -> &'static str {
    match level {
        Some("error") => "al-error",
        Some("info") => "al-info",
        _ => "al-warning",
    }
}

/// The run's active alerts, newest first, with `id="alert-banner"` (HTML text from
/// [`alerts_html::banner`]; Dismiss and Load work by `data-dismiss` / `data-load`);
/// [`crate::load::load_run`] notifies of each firing that arrives while the page is open.
#[component]
pub fn AlertBanner() -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    let view_state = use_run().view;
    let target = StoredValue::new(Target::from_context());
    let allowed = can_command();
    let error = RwSignal::new(None::<String>);
    // Text, set again only when it changes ("5 min ago" included): buttons stay put.
    let markup = move || {
        let mut h = Html::default();
        let now = clock.get();
        view_state.with(|v| {
            let may = allowed.get();
            let load = may && v.state.status.is_live();
            alerts_html::banner(&mut h, i18n, &v.state, now, may, load);
        });
        if let Some(e) = error.get() {
            h.raw("<p class=\"small alert\">")
                .text(i18n.t(Key::SendFailed))
                .raw(": ")
                .text(&e)
                .raw("</p>");
        }
        h.0
    };
    let on_click = move |ev: web_sys::MouseEvent| {
        let Some(el) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .and_then(|e| e.closest("[data-dismiss],[data-load]").ok().flatten())
        else {
            return;
        };
        let t = target.get_value();
        let _ = el.set_attribute("disabled", "");
        error.set(None);
        let dismiss = el.get_attribute("data-dismiss");
        let load = el.get_attribute("data-load").unwrap_or_default();
        leptos::task::spawn_local(async move {
            let sent = match dismiss {
                Some(id) => {
                    let url =
                        api::run_url(&t.base, &t.run, &format!("/alerts/{}/dismiss", enc(&id)));
                    api::post_json(&url, "{}".into())
                        .await
                        .map(drop)
                        .map_err(|r| r.error)
                }
                None => send(&t, "load_checkpoint", serde_json::json!({ "path": load }))
                    .await
                    .map(drop),
            };
            if let Err(e) = sent {
                error.set(Some(e));
            }
        });
    };
    view! {
        <div id="alert-banner" class="alert-banner" data-testid="alert-banner" on:click=on_click inner_html=markup></div>
    }
}

/// The alerts panel, collapsed: counts in its summary, then the history, the rules and
/// (for those who may command) the add-rule form, as HTML text ([`alerts_html`]).
#[component]
pub fn AlertsPanel() -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let target = StoredValue::new(Target::from_context());
    let allowed = can_command();
    let listed = RwSignal::new(None::<Vec<ListedRule>>);
    let refresh = RwSignal::new(0u32);
    let error = RwSignal::new(None::<String>);
    // Asked again when the run's own rules change, and after each add and remove.
    Effect::new(move |prev: Option<String>| {
        let key = view_state.with(|v| {
            let rules = v.state.alerts.rules.iter();
            let key =
                rules.map(|r| format!("{}/{} ", r.rule.name, r.sender.as_deref().unwrap_or("")));
            format!("{}:{}", refresh.get(), key.collect::<String>())
        });
        if prev.as_ref() != Some(&key) {
            let t = target.get_value();
            leptos::task::spawn_local(async move {
                let url = api::run_url(&t.base, &t.run, "/alerts");
                let answer = api::get_value(&url).await;
                listed.try_set(answer.map(|v| alert_form::listed_rules(&v)));
            });
        }
        key
    });
    let body = move || {
        let mut h = Html::default();
        let fallback = || {
            view_state.with(|v| {
                let own = v.state.alerts.rules.iter();
                own.map(|r| ListedRule {
                    rule: r.rule.clone(),
                    source: "run".into(),
                })
                .collect()
            })
        };
        let rules = listed.get().unwrap_or_else(fallback);
        view_state.with(|v| alerts_html::history(&mut h, i18n, &v.state.alerts.recent));
        alerts_html::rules(&mut h, i18n, &rules, allowed.get());
        if let Some(e) = error.get() {
            h.el("p", "small alert", &e);
        }
        h.0
    };
    let on_remove = move |ev: web_sys::MouseEvent| {
        let Some(el) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .and_then(|e| e.closest("[data-remove]").ok().flatten())
        else {
            return;
        };
        let name = el.get_attribute("data-remove").unwrap_or_default();
        let t = target.get_value();
        let url = api::run_url(&t.base, &t.run, &format!("/alerts/rules/{}", enc(&name)));
        error.set(None);
        leptos::task::spawn_local(async move {
            match api::delete(&url).await {
                Ok(_) => refresh.update(|n| *n += 1),
                Err(e) => error.set(Some(e.error)),
            }
        });
    };
    let counts = move || {
        view_state.with(|v| {
            let a = &v.state.alerts;
            let (active, fired, failed) = (a.active.len(), a.fired, a.failed_deliveries);
            format!(
                "{active} {} · {fired} {} · {failed} {}",
                i18n.t(Key::ActiveAlerts),
                i18n.t(Key::FiredCount),
                i18n.t(Key::FailedDeliveries)
            )
        })
    };
    view! {
        <details class="panel alerts-panel" data-testid="alerts-panel">
            <summary class="panel-head">
                <h2>{i18n.tr(Key::Alerts)}</h2>
                <span class="small muted" data-testid="alert-counts">{counts}</span>
            </summary>
            <div on:click=on_remove inner_html=body></div>
            <RuleForm refresh=refresh shown=allowed/>
        </details>
    }
}

/// Add a rule: checked here with the relay's own checker, then POSTed; each error
/// (the form's or the relay's 400) shows next to the field it names.
#[component]
fn RuleForm(refresh: RwSignal<u32>, shown: Signal<bool>) -> impl IntoView {
    let i18n = use_i18n();
    let target = StoredValue::new(Target::from_context());
    let text = RwSignal::new(FormText::from([("kind".to_string(), "above".to_string())]));
    let err = RwSignal::new(None::<FieldError>);
    let kind = RwSignal::new("above".to_string());
    // The markup follows the kind, the errors and the language, not each keystroke.
    let markup = move || {
        kind.track();
        let mut h = Html::default();
        if shown.get() {
            err.with(|e| text.with_untracked(|t| alerts_html::form(&mut h, i18n, t, e.as_ref())));
        }
        h.0
    };
    let on_input = move |ev: web_sys::Event| {
        let Some(el) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        if let Some(k) = el.get_attribute("data-f") {
            let value = event_target_value(&ev);
            if k == "kind" {
                kind.set(value.clone());
            }
            text.update(|t| drop(t.insert(k, value)));
        }
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
                Ok(_) => refresh.update(|n| *n += 1),
                Err(r) => err.set(Some(FieldError::new(r.field.unwrap_or_default(), r.error))),
            }
        });
    };
    view! {
        <form class="rule-form" data-testid="rule-form" on:submit=submit on:input=on_input inner_html=markup></form>
    }
}
