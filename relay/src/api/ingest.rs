//! `POST /api/runs/{run}/events`: the body read within `--max-body`, checked against the
//! limits in one pass, parsed (one event, a JSON array, or NDJSON), committed, answered.
//! Every 4xx counts as a rejected request, every storage failure as a storage error.

use super::error::{blocking, check_run, ApiError};
use super::state::{Data, Limits};
use crate::clock::now;
use crate::storage::StoreError;
use actix_web::http::header;
use actix_web::web::{self, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;
use std::sync::atomic::Ordering;
use stepwatch_events::{parse_batch, Event};

pub async fn post_events(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let answer = ingest(&data, &req, path.into_inner(), payload).await;
    if answer.as_ref().is_err_and(|e| e.status.is_client_error()) {
        data.rejected.fetch_add(1, Ordering::Relaxed);
    }
    answer
}

async fn ingest(
    data: &Data,
    req: &HttpRequest,
    run: String,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    check_run(&run)?;
    let body = read_body(req, payload, data.max_body, "send smaller batches").await?;
    let Ok(text) = std::str::from_utf8(&body) else {
        return Err(ApiError::bad_request("request body is not UTF-8"));
    };
    let ndjson = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/x-ndjson") || ct.starts_with("application/jsonl")
        });
    let events = parse(text, ndjson, &data.limits)?;
    super::alerts::check_ingest(&events)?;
    super::meta::check_ingest(&events)?;
    let events = super::media::check_ingest(data, &run, events).await?;
    let new_run = data.store.state(&run).is_none();
    if new_run && runs_held(data).await? >= data.limits.max_runs {
        return Err(ApiError::conflict(format!(
            "the relay already holds {} runs, the limit (--max-runs): delete old runs or raise it",
            data.limits.max_runs
        )));
    }
    commit(data, run, events, new_run).await
}

/// The runs the relay holds (counted off the async workers, at most once a second).
async fn runs_held(data: &Data) -> Result<usize, ApiError> {
    if let Some(n) = data.run_count.fresh() {
        return Ok(n);
    }
    let store = data.store.clone();
    let n = blocking(move || Ok(store.runs().len())).await?;
    data.run_count.counted(n);
    Ok(n)
}

/// The request body, refused with 413 as soon as it is known to be over `max_body`
/// (the refusal ends with `hint`: what to do about it).
pub(super) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    max_body: usize,
    hint: &str,
) -> Result<BytesMut, ApiError> {
    let too_big = || {
        ApiError::too_large(format!(
            "request body over the limit of {max_body} bytes: {hint}"
        ))
        .with("limit", max_body)
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return Err(too_big());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let c =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the body failed: {e}")))?;
        if body.len() + c.len() > max_body {
            return Err(too_big());
        }
        body.extend_from_slice(&c);
    }
    Ok(body)
}

/// The batch's events, within the limits; a refusal names the event (`index`) and, for
/// a bad field, the `field`.
fn parse(text: &str, ndjson: bool, limits: &Limits) -> Result<Vec<Event>, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "empty body: send one event object, a JSON array of events, or NDJSON",
        ));
    }
    scan_limits(text, limits)
        .map_err(|(index, why)| ApiError::bad_request(why).with("index", index))?;
    let events = parse_batch(text, ndjson).map_err(|e| {
        let refusal = ApiError::bad_request(e.to_string()).with("index", e.index);
        match e.error.field() {
            Some(field) => refusal.with("field", field),
            None => refusal,
        }
    })?;
    if events.is_empty() {
        return Err(ApiError::bad_request("the batch holds no events"));
    }
    if events.len() > limits.max_batch {
        return Err(ApiError::too_large(format!(
            "a batch of {} events is over the limit of {} (--max-batch): send smaller batches",
            events.len(),
            limits.max_batch
        )));
    }
    Ok(events)
}

/// Stores the batch (fanned out on commit) and answers what it added.
async fn commit(
    data: &Data,
    run: String,
    events: Vec<Event>,
    new_run: bool,
) -> Result<HttpResponse, ApiError> {
    let store = data.store.clone();
    let hub = data.hub.clone();
    let arrived = std::time::Instant::now();
    let r = run.clone();
    let c = web::block(move || store.append(&r, events, now(), &|c| hub.publish(c)))
        .await
        .map_err(|e| ApiError::unavailable(format!("ingest worker failed: {e}")))?
        .map_err(|e| {
            if !matches!(e, StoreError::Limit(_)) {
                tracing::error!(run = %run, error = %e, "ingest failed");
                data.storage_errors.fetch_add(1, Ordering::Relaxed);
            }
            ApiError::from(e)
        })?;
    data.ingest_latency.observe(arrived.elapsed().as_secs_f64());
    if new_run && c.accepted > 0 && c.last_id == c.accepted as u64 {
        // This batch created the run (ids start at 1).
        data.run_count.created();
    }
    if data.launch.enabled() && c.accepted > 0 && data.launch.job_of_run(&run).is_some() {
        let l = data.launch.clone();
        let r = run.clone();
        // A launched job's run spoke: its job is running (off the request's path).
        actix_web::rt::spawn(async move {
            let _ = web::block(move || l.saw_run(&r)).await;
        });
    }
    data.accepted
        .fetch_add(c.accepted as u64, Ordering::Relaxed);
    data.duplicates
        .fetch_add(c.duplicates as u64, Ordering::Relaxed);
    Ok(HttpResponse::Ok().json(json!({
        "accepted": c.accepted,
        "duplicates": c.duplicates,
        "last_id": c.last_id,
    })))
}

/// One pass over a request body before parsing: no event nests deeper than
/// `max_depth` and no string is longer than `max_string` bytes. The error carries the
/// index of the event (its line, or its place in the array) and says which limit.
fn scan_limits(text: &str, limits: &Limits) -> Result<(), (usize, String)> {
    let bytes = text.as_bytes();
    let array = text.trim_start().starts_with('[');
    // The depth at which events sit: inside the array, or at the top.
    let event_depth = if array { 2 } else { 1 };
    let (mut depth, mut index) = (0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let len = i.saturating_sub(start + 1);
                if len > limits.max_string {
                    return Err((
                        index,
                        format!(
                            "event {index}: a string of {len} bytes is over the limit of {} (--max-string)",
                            limits.max_string
                        ),
                    ));
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth >= event_depth && depth + 1 - event_depth > limits.max_depth {
                    return Err((
                        index,
                        format!(
                            "event {index}: nested deeper than {} levels (--max-depth)",
                            limits.max_depth
                        ),
                    ));
                }
            }
            b'}' | b']' => {
                if depth == event_depth {
                    index += 1;
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}
