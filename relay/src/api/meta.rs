//! A run's tags, group and notes (`run_meta` events, `stepwatch_events::meta`): the
//! ingest check of those a trainer sends, `POST /api/runs/{run}/meta` for dashboards
//! and scripts (recorded with the sender, so the run's events say who changed what),
//! and `GET /api/values`, the chosen config values and latest metrics of every
//! run, for the runs list's columns and groups and the parameter view.

use super::access::identity;
use super::commands::record;
use super::error::{check_run, ApiError};
use super::state::Data;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use stepwatch_events::event::RunMeta;
use stepwatch_events::{meta, Event, EventBody};

/// Largest `POST …/meta` body: the notes' limit and room for tags.
const MAX_META_BYTES: usize = meta::MAX_NOTES_BYTES + 8 * 1024;

/// Checks the `run_meta` events a trainer sends; the sender is the relay's to say.
pub(crate) fn check_ingest(events: &[Event]) -> Result<(), ApiError> {
    for (index, e) in events.iter().enumerate() {
        let EventBody::RunMeta(m) = &e.body else {
            continue;
        };
        let bad = |field: &str, what: String| {
            Err(ApiError::bad_request(format!("event {index}: {what}"))
                .with("index", index)
                .with("field", field.to_string()))
        };
        if m.sender.is_some() {
            return bad(
                "sender",
                "run_meta's sender is written by the relay (who changed it), not sent".into(),
            );
        }
        if let Err(err) = meta::check(&mut m.clone()) {
            return bad(&err.field, err.to_string());
        }
    }
    Ok(())
}

/// `POST /api/runs/{run}/meta` `{"tags": [...], "group": "...", "notes": "..."}`: the
/// fields given replace the run's; answers the run's tags, group and notes after it.
pub async fn set(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    check_run(&run)?;
    if body.len() > MAX_META_BYTES {
        return Err(ApiError::too_large(format!(
            "a meta body is at most {} KB",
            MAX_META_BYTES / 1024
        )));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::bad_request(
            "expected an object: {\"tags\": […], \"group\": \"…\", \"notes\": \"…\"}",
        ));
    };
    if let Some(k) = fields
        .keys()
        .find(|k| !["tags", "group", "notes"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown field {k:?}: a run's meta is tags, group and notes"
        ))
        .with("field", k.clone()));
    }
    let taken = |fields: &mut Map<String, Value>, name: &str| fields.remove(name);
    let mut m = RunMeta::default();
    if let Some(v) = taken(&mut fields, "tags") {
        m.tags = Some(strings(v).map_err(|e| e.with("field", "tags"))?);
    }
    for (name, slot) in [("group", &mut m.group), ("notes", &mut m.notes)] {
        match taken(&mut fields, name) {
            None => {}
            Some(Value::Null) => *slot = Some(String::new()),
            Some(Value::String(s)) => *slot = Some(s),
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{name}: expected a string (\"\" or null clears it)"
                ))
                .with("field", name))
            }
        }
    }
    meta::check(&mut m).map_err(|e| ApiError::bad_request(e.to_string()).with("field", e.field))?;
    if data.store.state(&run).is_none() {
        return Err(ApiError::no_run(&run));
    }
    // Always named, so a change through the API is never taken for the trainer's.
    m.sender = Some(identity(&req).name.unwrap_or_else(|| "anonymous".into()));
    let id = record(&data, &run, EventBody::RunMeta(m)).await?;
    let state = data
        .store
        .state(&run)
        .ok_or_else(|| ApiError::no_run(&run))?;
    Ok(HttpResponse::Ok().json(json!({
        "tags": state.tags, "group": state.group, "notes": state.notes, "event_id": id
    })))
}

fn strings(v: Value) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = v else {
        return Err(ApiError::bad_request("tags: expected an array of strings"));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s),
            _ => Err(ApiError::bad_request(format!(
                "tags[{i}]: expected a string"
            ))),
        })
        .collect()
}

#[derive(Deserialize)]
pub struct ValuesQuery {
    /// Comma-separated config keys (dotted), or `*` for every one.
    config: Option<String>,
    /// Comma-separated metric names, or `*`.
    metrics: Option<String>,
    /// Comma-separated run ids; every run when absent.
    runs: Option<String>,
    /// Only the runs carrying this tag.
    tag: Option<String>,
    /// Only the runs of this group.
    group: Option<String>,
}

fn wanted(list: Option<&str>) -> Option<BTreeSet<String>> {
    let list = list?;
    Some(
        list.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// `GET /api/values?config=lr,opt.name&metrics=val_loss`: every config key and
/// metric name the runs have (`config_keys`, `metric_keys`), and per run the values
/// asked for: config leaves flattened to dotted keys, each metric's latest value, and
/// its name. `runs=a,b`, `tag=` and `group=` narrow the runs (the keys too).
pub async fn values(data: Data, q: web::Query<ValuesQuery>) -> Result<HttpResponse, ApiError> {
    let store = data.store.clone();
    let q = q.into_inner();
    // Off the async workers: it reads every run (tens of ms at 10,000 runs), which would
    // hold up every stream on the worker.
    let answer = super::error::blocking(move || Ok(values_of(&*store, &q))).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(answer))
}

/// The values answer's JSON, written run by run (a tree of 10,000 runs' values would
/// take ten times the memory of its text, and the allocator keeps it).
fn values_of(store: &dyn crate::storage::Storage, q: &ValuesQuery) -> Vec<u8> {
    let config = wanted(q.config.as_deref());
    let metrics = wanted(q.metrics.as_deref());
    let only = wanted(q.runs.as_deref());
    let all = |set: &Option<BTreeSet<String>>| set.as_ref().is_some_and(|s| s.contains("*"));
    let (all_config, all_metrics) = (all(&config), all(&metrics));
    let mut config_keys = BTreeSet::new();
    let mut metric_keys = BTreeSet::new();
    let mut out = b"{\"runs\":{".to_vec();
    for summary in store.runs() {
        if only.as_ref().is_some_and(|o| !o.contains(&summary.run)) {
            continue;
        }
        let Some(state) = store.state(&summary.run) else {
            continue;
        };
        if q.tag.as_ref().is_some_and(|t| !state.tags.contains(t))
            || q.group
                .as_ref()
                .is_some_and(|g| state.group.as_ref() != Some(g))
        {
            continue;
        }
        let mut cfg = Map::new();
        for (k, v) in meta::flat_config(&state.config) {
            let take = all_config || config.as_ref().is_some_and(|c| c.contains(&k));
            config_keys.insert(k.clone());
            if take {
                cfg.insert(k, v);
            }
        }
        let mut ms = Map::new();
        for (k, v) in &state.metrics {
            metric_keys.insert(k.clone());
            if all_metrics || metrics.as_ref().is_some_and(|m| m.contains(k)) {
                ms.insert(k.clone(), stepwatch_events::num::to_json(*v));
            }
        }
        if out.len() > b"{\"runs\":{".len() {
            out.push(b',');
        }
        let run = json!({"name": state.name, "config": cfg, "metrics": ms});
        // Strings and maps of JSON values always serialise.
        let _ = serde_json::to_writer(&mut out, &summary.run);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, &run);
    }
    out.extend_from_slice(b"},\"config_keys\":");
    let _ = serde_json::to_writer(&mut out, &config_keys);
    out.extend_from_slice(b",\"metric_keys\":");
    let _ = serde_json::to_writer(&mut out, &metric_keys);
    out.push(b'}');
    out
}
