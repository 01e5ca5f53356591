//! The alerts API (docs/ALERTS.md): the config's rules and channels (names and kinds,
//! never their secrets), a run's rules and history, a run's own rules set and removed
//! (recorded as `alert_rule` events), active alerts dismissed (`alert_resolved` with
//! the sender); and the ingest check of alert events a trainer sends.

use super::access::identity;
use super::commands::record;
use super::error::{check_run, ApiError};
use super::state::Data;
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};
use stepwatch_events::event::{AlertResolved, AlertRule};
use stepwatch_events::{Event, EventBody, FieldError};

/// Largest rule body.
const MAX_RULE_BYTES: usize = 16 * 1024;

fn field_error(e: &FieldError) -> ApiError {
    ApiError::bad_request(e.to_string()).with("field", e.field.clone())
}

/// Refuses alert events a trainer may not send, and checks the rules it may.
pub(crate) fn check_ingest(events: &[Event]) -> Result<(), ApiError> {
    for (index, e) in events.iter().enumerate() {
        if e.src.as_deref().is_some_and(|s| s.starts_with("alert:")) {
            return Err(ApiError::bad_request(format!(
                "event {index}: src \"alert:…\" is kept for the relay's alert records"
            ))
            .with("index", index)
            .with("field", "src"));
        }
        let refuse = |what: &str| {
            Err(ApiError::bad_request(format!(
                "event {index}: {what} events are written by the relay, not sent to it"
            ))
            .with("index", index)
            .with("field", "event"))
        };
        match &e.body {
            EventBody::AlertFired(_) => return refuse("alert_fired"),
            EventBody::AlertResolved(_) => return refuse("alert_resolved"),
            EventBody::AlertDelivery(_) => return refuse("alert_delivery"),
            EventBody::AlertRule(r) => check_rule_event(r).map_err(|err| {
                ApiError::bad_request(format!("event {index}: {err}"))
                    .with("index", index)
                    .with("field", err.field)
            })?,
            _ => {}
        }
    }
    Ok(())
}

fn check_rule_event(r: &AlertRule) -> Result<(), FieldError> {
    let Some(rule) = &r.rule else {
        return Err(FieldError::new("rule", "missing: the rule object"));
    };
    if r.removed == Some(true) {
        let name = rule.get("name").and_then(Value::as_str).unwrap_or_default();
        if !stepwatch_events::alerts::is_valid_name(name) {
            return Err(FieldError::new(
                "rule.name",
                "the name of the rule to remove",
            ));
        }
        return Ok(());
    }
    // A trainer cannot know the relay's channels: a name it got wrong notifies nobody
    // (the run's alerts answer lists it under `unknown_channels`), and its batch is kept.
    let parsed = stepwatch_events::alerts::Rule::parse(rule, "rule")?;
    if parsed.runs.is_some() {
        return Err(FieldError::new(
            "rule.runs",
            "a run's own rule applies to that run: `runs` is for config rules",
        ));
    }
    Ok(())
}

/// `GET /api/alerts/config`.
pub async fn config(data: Data) -> HttpResponse {
    let c = &data.alerts.config;
    HttpResponse::Ok().json(json!({
        "defaults": c.defaults,
        "rules": c.rules.iter().map(|r| r.to_value()).collect::<Vec<_>>(),
        "channels": c.channels.iter().map(|ch| json!({"name": ch.name, "kind": ch.kind.as_str()})).collect::<Vec<_>>(),
    }))
}

/// `GET /api/runs/{run}/alerts`: the rules that apply (with their source), the active
/// alerts and the history, newest first.
pub async fn of_run(data: Data, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    check_run(&run)?;
    let state = data
        .store
        .state(&run)
        .ok_or_else(|| ApiError::no_run(&run))?;
    let own: Vec<_> = state.alerts.rules.iter().map(|r| r.rule.clone()).collect();
    let rules: Vec<Value> = data
        .alerts
        .config
        .rules_for(&run, &own)
        .iter()
        .map(|r| {
            let mut v = r.to_value();
            let source = if own.iter().any(|o| o.name == r.name) {
                "run"
            } else {
                "config"
            };
            v["source"] = json!(source);
            v["describe"] = json!(r.describe());
            v
        })
        .collect();
    let history: Vec<&stepwatch_events::alerts::AlertRecord> =
        state.alerts.recent.iter().rev().collect();
    let unknown: Vec<&String> = own
        .iter()
        .flat_map(|r| r.notify.iter().flatten())
        .filter(|n| data.alerts.config.channel(n).is_none())
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "rules": rules,
        "active": state.alerts.active,
        "history": history,
        "fired": state.alerts.fired,
        "failed_deliveries": state.alerts.failed_deliveries,
        "unknown_channels": unknown,
    })))
}

/// `POST /api/runs/{run}/alerts/rules`: a run's own rule (replaces one of the same name).
pub async fn set_rule(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    check_run(&run)?;
    if body.len() > MAX_RULE_BYTES {
        return Err(ApiError::too_large(format!(
            "a rule is at most {MAX_RULE_BYTES} bytes"
        )));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    if data.store.state(&run).is_none() {
        return Err(ApiError::no_run(&run));
    }
    let rule = data
        .alerts
        .config
        .check_run_rule(&value, "")
        .map_err(|e| field_error(&e))?;
    let body = EventBody::AlertRule(AlertRule {
        rule: Some(rule.to_value()),
        sender: identity(&req).name,
        ..Default::default()
    });
    let id = record(&data, &run, body).await?;
    Ok(HttpResponse::Created().json(json!({"rule": rule.to_value(), "event_id": id})))
}

/// `DELETE /api/runs/{run}/alerts/rules/{name}`: removes a run's own rule.
pub async fn remove_rule(
    data: Data,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (run, name) = path.into_inner();
    check_run(&run)?;
    let state = data
        .store
        .state(&run)
        .ok_or_else(|| ApiError::no_run(&run))?;
    if !state.alerts.rules.iter().any(|r| r.rule.name == name) {
        return Err(ApiError::not_found(format!(
            "run {run:?} has no rule of its own named {name:?} (config rules change in the config file)"
        )));
    }
    let body = EventBody::AlertRule(AlertRule {
        rule: Some(json!({"name": name})),
        removed: Some(true),
        sender: identity(&req).name,
        ..Default::default()
    });
    let id = record(&data, &run, body).await?;
    Ok(HttpResponse::Ok().json(json!({"removed": name, "event_id": id})))
}

/// `POST /api/runs/{run}/alerts/{alert_id}/dismiss`: an active alert leaves the banner.
pub async fn dismiss(
    data: Data,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (run, alert_id) = path.into_inner();
    check_run(&run)?;
    let state = data
        .store
        .state(&run)
        .ok_or_else(|| ApiError::no_run(&run))?;
    let Some(active) = state.alerts.active.iter().find(|a| a.alert_id == alert_id) else {
        let known = state.alerts.recent.iter().any(|r| r.alert_id == alert_id);
        return Err(if known {
            ApiError::conflict(format!("alert {alert_id:?} is no longer active"))
        } else {
            ApiError::not_found(format!("run {run:?} has no alert {alert_id:?}"))
        });
    };
    let who = identity(&req).name;
    let body = EventBody::AlertResolved(AlertResolved {
        alert_id: Some(alert_id.clone()),
        rule: Some(active.rule.clone()),
        text: Some(match &who {
            Some(w) => format!("dismissed by {w}"),
            None => "dismissed from the dashboard".into(),
        }),
        sender: Some(who.unwrap_or_else(|| "dashboard".into())),
        ..Default::default()
    });
    let id = record(&data, &run, body).await?;
    Ok(HttpResponse::Ok()
        .json(json!({"alert_id": alert_id, "status": "dismissed", "event_id": id})))
}
