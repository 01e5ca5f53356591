//! Reading and deleting runs: `GET /api/runs` (summaries), `GET /api/runs/{run}` (state
//! with progress), `GET /api/runs/{run}/events` (history pages), `GET
//! /api/runs/{run}/series` (charts) and `DELETE /api/runs/{run}`.

use super::error::{blocking, check_run, ApiError};
use super::state::Data;
use crate::storage::series::{self, SeriesQuery};
use crate::storage::StoredEvent;
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

/// Default and largest `limit` of `GET /api/runs/{run}/events`.
pub const DEFAULT_EVENTS_LIMIT: usize = 1000;
pub const MAX_EVENTS_LIMIT: usize = 100_000;
/// Buckets a series answer has when the query names none.
const DEFAULT_SERIES_POINTS: usize = 1000;

/// `GET /api/runs`: every run's summary, newest first.
pub async fn list_runs(data: Data) -> HttpResponse {
    let store = data.store.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    // Written off the async workers (at 10,000 runs the summaries and their 5 MB of JSON
    // take tens of ms, which would hold up every stream on the worker), and sent as it
    // is written, a page at a time: the whole text is never held, nor copied whole into
    // the connection's buffer.
    actix_web::rt::task::spawn_blocking(move || {
        let runs = store.runs();
        let mut page = Vec::with_capacity(RUNS_PAGE + 4096);
        page.push(b'[');
        for (i, s) in runs.iter().enumerate() {
            if i > 0 {
                page.push(b',');
            }
            if serde_json::to_writer(&mut page, s).is_err() {
                return; // unreachable: a summary always serialises
            }
            if page.len() >= RUNS_PAGE {
                let full = std::mem::replace(&mut page, Vec::with_capacity(RUNS_PAGE + 4096));
                if tx.blocking_send(Bytes::from(full)).is_err() {
                    return; // the client left
                }
            }
        }
        page.push(b']');
        let _ = tx.blocking_send(Bytes::from(page));
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let page = rx.recv().await?;
        Some((Ok::<_, actix_web::Error>(page), rx))
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body)
}

/// Bytes of the runs list sent at a time.
const RUNS_PAGE: usize = 64 * 1024;

pub async fn get_run(data: Data, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    check_run(&run)?;
    let state = data
        .store
        .state(&run)
        .ok_or_else(|| ApiError::no_run(&run))?;
    // The reducer's state, and its progress as people read it (1-based epochs).
    Ok(HttpResponse::Ok().json(stepwatch_events::api::RunAnswer::new(&state)))
}

/// `DELETE /api/runs/{run}`: the run and all its events, series and commands go.
pub async fn delete_run(data: Data, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    check_run(&run)?;
    let store = data.store.clone();
    let r = run.clone();
    let n = blocking(move || store.delete_run(&r))
        .await?
        .ok_or_else(|| ApiError::no_run(&run))?;
    tracing::info!(run = %run, events = n, "run deleted");
    data.run_count.forget();
    data.hub.publish_deleted(&run);
    Ok(HttpResponse::Ok().json(json!({ "deleted": run, "events": n })))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    after: Option<u64>,
    before: Option<u64>,
    limit: Option<usize>,
    event: Option<String>,
    order: Option<String>,
}

fn name_filter(event: Option<&str>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(list) = event.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let names: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
    if let Some(bad) = names
        .iter()
        .find(|n| !stepwatch_events::is_valid_event_name(n))
    {
        return Err(ApiError::bad_request(format!(
            "invalid event name {bad:?} in `event`: names match [a-z0-9_.-]{{1,64}}"
        )));
    }
    Ok(Some(names))
}

/// Whether the page reads newest first (`order=desc`), checked against `after`/`before`.
fn descending(q: &EventsQuery) -> Result<bool, ApiError> {
    let desc = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`order` must be asc or desc, got {other:?}"
            )))
        }
    };
    if q.before.is_some() && !desc {
        return Err(ApiError::bad_request(
            "`before` pages back through history: use it with order=desc",
        ));
    }
    if desc && q.after.is_some() {
        return Err(ApiError::bad_request(
            "`after` reads forward: use it without order=desc",
        ));
    }
    Ok(desc)
}

/// `GET /api/runs/{run}/events?after=&before=&limit=&event=&order=`: a page of the
/// run's history as a JSON array of the stored events.
pub async fn get_events(
    data: Data,
    path: web::Path<String>,
    q: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    check_run(&run)?;
    let limit = q.limit.unwrap_or(DEFAULT_EVENTS_LIMIT);
    if limit == 0 || limit > MAX_EVENTS_LIMIT {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {MAX_EVENTS_LIMIT}"
        )));
    }
    let names = name_filter(q.event.as_deref())?;
    if data.store.state(&run).is_none() {
        return Err(ApiError::no_run(&run));
    }
    let desc = descending(&q)?;
    let store = data.store.clone();
    let (after, before) = (q.after.unwrap_or(0), q.before);
    let events = blocking(move || {
        if desc {
            store.events_desc(&run, before, limit, names.as_deref())
        } else {
            store.events(&run, after, limit, names.as_deref())
        }
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(json_array(&events)))
}

/// The stored events' JSON, as they are, in one array.
fn json_array(events: &[StoredEvent]) -> String {
    let mut body =
        String::with_capacity(events.iter().map(|e| e.json.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&e.json);
    }
    body.push(']');
    body
}

/// The series query, checked: a clear 400 names the bad parameter.
fn series_query(q: &HashMap<String, String>) -> Result<(Option<String>, SeriesQuery), ApiError> {
    for key in q.keys() {
        if !["metric", "points", "from", "to"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter `{key}` (use metric, points, from, to)"
            )));
        }
    }
    let metric = match q.get("metric") {
        Some(m) if m.is_empty() || m.len() > 256 => {
            return Err(ApiError::bad_request(
                "`metric` must be 1 to 256 characters",
            ))
        }
        m => m.cloned(),
    };
    let points = match q.get("points") {
        None => DEFAULT_SERIES_POINTS,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if (1..=series::MAX_POINTS).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "`points` must be an integer from 1 to {}, got {p:?}",
                    series::MAX_POINTS
                )))
            }
        },
    };
    let bound = |key: &str| -> Result<Option<f64>, ApiError> {
        match q.get(key) {
            None => Ok(None),
            Some(v) => match v.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(ApiError::bad_request(format!(
                    "`{key}` must be a finite number (a step), got {v:?}"
                ))),
            },
        }
    };
    let (from, to) = (bound("from")?, bound("to")?);
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::bad_request(format!(
                "`from` ({f}) is after `to` ({t})"
            )));
        }
    }
    Ok((
        metric,
        SeriesQuery {
            points,
            from,
            to,
            exact_limit: series::EXACT_LIMIT,
        },
    ))
}

/// `GET /api/runs/{run}/series?metric=&points=&from=&to=`: one metric reduced for a
/// chart (M4 from the full data); without `metric`, the run's metrics and sizes.
pub async fn get_series(
    data: Data,
    path: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    check_run(&run)?;
    let (metric, query) = series_query(&q)?;
    let store = data.store.clone();
    let answer = blocking(move || match metric {
        Some(m) => store
            .series(&run, &m, query)
            .map(|p| p.map(|p| serde_json::to_string(&p))),
        None => store
            .series_list(&run)
            .map(|l| l.map(|l| serde_json::to_string(&l))),
    })
    .await?;
    let body = answer
        .ok_or_else(|| ApiError::not_found("no such run"))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}
