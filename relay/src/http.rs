//! The HTTP API: ingest, reads, SSE streams, health and metrics. Only this layer
//! knows HTTP; storage and fan-out know nothing of it.

use crate::clock::now;
use crate::commands;
use crate::hub::Hub;
use crate::storage::series::{self, SeriesQuery};
use crate::storage::{Storage, StoredEvent};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stepwatch_events::{is_valid_run_id, parse_batch};
use tokio::sync::{broadcast, mpsc};

/// Largest request body accepted by the ingest endpoint.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Events sent per storage read while a stream replays its backlog.
pub const REPLAY_PAGE: usize = 1000;
/// Interval of SSE keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A stream whose client reads nothing for this long is cut off.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a browser session's streams check that the session is still on.
pub const SESSION_CHECK: Duration = Duration::from_secs(2);
/// Default and largest `limit` of `GET /api/runs/{run}/events`.
pub const DEFAULT_EVENTS_LIMIT: usize = 1000;
pub const MAX_EVENTS_LIMIT: usize = 100_000;

/// Shared state of the HTTP layer.
pub struct AppState {
    pub store: Arc<dyn Storage>,
    pub hub: Arc<Hub>,
    pub max_body: usize,
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    /// Ingest requests answered 503 because storage failed (full, unwritable, …).
    pub storage_errors: AtomicU64,
    /// Time from a batch's arrival to its durable commit.
    pub ingest_latency: Histogram,
    /// Users, roles and sessions (off: everyone is an admin).
    pub auth: Arc<crate::auth::Auth>,
    /// Origins allowed to call the API from a browser (`--allow-origin`).
    pub allowed_origins: Vec<String>,
    pub limits: Limits,
}

/// What one request may hold; each refusal names the limit and the flag that sets it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Events in one ingest request (`--max-batch`).
    pub max_batch: usize,
    /// Bytes of one string value (`--max-string`).
    pub max_string: usize,
    /// Nesting of objects and arrays in one event (`--max-depth`).
    pub max_depth: usize,
    /// Runs the relay holds (`--max-runs`).
    pub max_runs: usize,
    /// Metric series one run may have (`--max-metrics`).
    pub max_metrics: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 10_000,
            max_string: 64 * 1024,
            max_depth: 16,
            max_runs: 10_000,
            max_metrics: 1000,
        }
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Storage>, max_body: usize) -> Self {
        AppState {
            store,
            hub: Arc::new(Hub::default()),
            max_body,
            accepted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            storage_errors: AtomicU64::new(0),
            ingest_latency: Histogram::default(),
            auth: Arc::new(crate::auth::Auth::off()),
            allowed_origins: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// Upper bounds (seconds) of the ingest latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A Prometheus histogram of seconds, lock-free.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// The histogram in Prometheus text format.
    fn render(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{bound}\"}} {}\n",
                self.buckets[i].load(Ordering::Relaxed)
            ));
        }
        let count = self.count.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {count}\n",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        ));
        out
    }
}

pub(crate) type Data = web::Data<AppState>;

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": msg.into() }))
}

/// A refusal: status and a message naming what is wrong.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl From<ApiError> for HttpResponse {
    fn from(e: ApiError) -> HttpResponse {
        error(e.status, e.message)
    }
}

fn bad_request(message: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        message,
    }
}

pub(crate) fn check_run(run: &str) -> Result<(), ApiError> {
    if is_valid_run_id(run) {
        Ok(())
    } else {
        Err(bad_request(format!(
            "invalid run id {:?}: run ids match [A-Za-z0-9._-]{{1,128}}",
            truncate(run, 160)
        )))
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Wires the API routes into an actix app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/api/login", web::post().to(crate::access::login))
        .route("/api/logout", web::post().to(crate::access::logout))
        .route("/api/me", web::get().to(crate::access::me))
        .route("/metrics", web::get().to(metrics))
        .service(
            web::scope("/api")
                .route("/runs", web::get().to(list_runs))
                .route("/stream", web::get().to(summary_stream))
                .route("/runs/{run}", web::get().to(get_run))
                .route("/runs/{run}", web::delete().to(delete_run))
                .route("/runs/{run}/events", web::post().to(post_events))
                .route("/runs/{run}/events", web::get().to(get_events))
                .route("/runs/{run}/stream", web::get().to(run_stream))
                .route("/runs/{run}/series", web::get().to(get_series))
                .route(
                    "/runs/{run}/commands",
                    web::post().to(commands::post_command),
                )
                .route(
                    "/runs/{run}/commands/stream",
                    web::get().to(commands::command_stream),
                )
                .route(
                    "/runs/{run}/commands/{id}/cancel",
                    web::post().to(commands::cancel_command),
                )
                .default_service(web::to(|req: HttpRequest| async move {
                    error(
                        StatusCode::NOT_FOUND,
                        format!("no API endpoint {} {}", req.method(), req.path()),
                    )
                })),
        );
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Readiness, for load balancers: 503 with the reason while the database cannot be
/// reached (another relay may still reach it) or while shutting down.
async fn readyz(data: Data) -> HttpResponse {
    if data.hub.is_closing() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    let store = data.store.clone();
    match web::block(move || store.ready()).await {
        Ok(Ok(())) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}")),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "storage check failed"),
    }
}

async fn metrics(data: Data) -> HttpResponse {
    let body = format!(
        "# HELP stepwatch_events_accepted_total Events stored since start.\n\
         # TYPE stepwatch_events_accepted_total counter\n\
         stepwatch_events_accepted_total {}\n\
         # HELP stepwatch_events_duplicate_total Retried events recognised by (src, seq) and not stored again.\n\
         # TYPE stepwatch_events_duplicate_total counter\n\
         stepwatch_events_duplicate_total {}\n\
         # HELP stepwatch_requests_rejected_total Ingest requests refused with a 4xx.\n\
         # TYPE stepwatch_requests_rejected_total counter\n\
         stepwatch_requests_rejected_total {}\n\
         # HELP stepwatch_events_stored Events in storage.\n\
         # TYPE stepwatch_events_stored gauge\n\
         stepwatch_events_stored {}\n\
         # HELP stepwatch_runs Runs in storage.\n\
         # TYPE stepwatch_runs gauge\n\
         stepwatch_runs {}\n\
         # HELP stepwatch_sse_streams Open SSE streams.\n\
         # TYPE stepwatch_sse_streams gauge\n\
         stepwatch_sse_streams {}\n\
         # HELP stepwatch_sse_cut_off_total Subscribers cut off for falling behind.\n\
         # TYPE stepwatch_sse_cut_off_total counter\n\
         stepwatch_sse_cut_off_total {}\n\
         # HELP stepwatch_storage_errors_total Ingest requests answered 503 because storage failed.\n\
         # TYPE stepwatch_storage_errors_total counter\n\
         stepwatch_storage_errors_total {}\n\
         # HELP stepwatch_stored_bytes Bytes the database takes on disk.\n\
         # TYPE stepwatch_stored_bytes gauge\n\
         stepwatch_stored_bytes {}\n{}",
        data.accepted.load(Ordering::Relaxed),
        data.duplicates.load(Ordering::Relaxed),
        data.rejected.load(Ordering::Relaxed),
        data.store.event_total(),
        data.store.runs().len(),
        data.hub.open_streams.load(Ordering::Relaxed),
        data.hub.cut_off.load(Ordering::Relaxed),
        data.storage_errors.load(Ordering::Relaxed),
        data.store.stored_bytes(),
        data.ingest_latency.render(
            "stepwatch_ingest_seconds",
            "Time from a batch's arrival to its durable commit."
        ),
    );
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}

async fn list_runs(data: Data) -> HttpResponse {
    HttpResponse::Ok().json(data.store.runs())
}

/// `GET /api/runs/{run}`'s answer.
#[derive(serde::Serialize)]
struct StateOut<'a> {
    #[serde(flatten)]
    state: &'a stepwatch_events::RunState,
    progress: stepwatch_events::Progress,
}

async fn get_run(data: Data, path: web::Path<String>) -> HttpResponse {
    let run = path.into_inner();
    if let Err(r) = check_run(&run) {
        return r.into();
    }
    match data.store.state(&run) {
        // The reducer's state, and its progress as people read it (1-based epochs).
        Some(state) => HttpResponse::Ok().json(StateOut {
            progress: state.progress(),
            state: &state,
        }),
        None => error(StatusCode::NOT_FOUND, format!("no run {run:?}")),
    }
}

/// `DELETE /api/runs/{run}`: the run and all its events, series and commands go.
async fn delete_run(data: Data, path: web::Path<String>) -> HttpResponse {
    let run = path.into_inner();
    if let Err(r) = check_run(&run) {
        return r.into();
    }
    let store = data.store.clone();
    let r = run.clone();
    match web::block(move || store.delete_run(&r)).await {
        Ok(Ok(Some(n))) => {
            tracing::info!(run = %run, events = n, "run deleted");
            data.hub.publish_deleted(&run);
            HttpResponse::Ok().json(json!({ "deleted": run, "events": n }))
        }
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, format!("no run {run:?}")),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
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

/// Deletes runs whose last event is older than `days`; returns the runs deleted.
pub fn apply_retention(store: &dyn Storage, hub: &Hub, days: f64, now: f64) -> Vec<String> {
    let cutoff = now - days * 86_400.0;
    let mut gone = Vec::new();
    for s in store.runs() {
        let last = s.last_event_at.or(s.started_at).unwrap_or(now);
        if last >= cutoff {
            continue;
        }
        match store.delete_run(&s.run) {
            Ok(Some(n)) => {
                tracing::info!(run = %s.run, events = n, days, "run deleted by retention");
                hub.publish_deleted(&s.run);
                gone.push(s.run);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(run = %s.run, error = %e, "retention could not delete run"),
        }
    }
    gone
}

async fn post_events(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
    mut payload: web::Payload,
) -> HttpResponse {
    let run = path.into_inner();
    if let Err(r) = check_run(&run) {
        data.rejected.fetch_add(1, Ordering::Relaxed);
        return r.into();
    }
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body over the limit of {} bytes: send smaller batches",
                data.max_body
            ),
        )
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > data.max_body {
            data.rejected.fetch_add(1, Ordering::Relaxed);
            return too_big();
        }
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(c) => {
                if body.len() + c.len() > data.max_body {
                    data.rejected.fetch_add(1, Ordering::Relaxed);
                    return too_big();
                }
                body.extend_from_slice(&c);
            }
            Err(e) => {
                data.rejected.fetch_add(1, Ordering::Relaxed);
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body failed: {e}"),
                );
            }
        }
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        data.rejected.fetch_add(1, Ordering::Relaxed);
        return error(StatusCode::BAD_REQUEST, "request body is not UTF-8");
    };
    if text.trim().is_empty() {
        data.rejected.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::BAD_REQUEST,
            "empty body: send one event object, a JSON array of events, or NDJSON",
        );
    }
    let ndjson = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/x-ndjson") || ct.starts_with("application/jsonl")
        });
    if let Err((index, why)) = scan_limits(text, &data.limits) {
        data.rejected.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::BadRequest().json(json!({ "error": why, "index": index }));
    }
    let events = match parse_batch(text, ndjson) {
        Ok(events) if events.is_empty() => {
            data.rejected.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::BAD_REQUEST, "the batch holds no events");
        }
        Ok(events) if events.len() > data.limits.max_batch => {
            data.rejected.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a batch of {} events is over the limit of {} (--max-batch): send smaller batches",
                    events.len(),
                    data.limits.max_batch
                ),
            );
        }
        Ok(events) => events,
        Err(e) => {
            data.rejected.fetch_add(1, Ordering::Relaxed);
            let mut body = json!({ "error": e.to_string(), "index": e.index });
            if let Some(field) = e.error.field() {
                body["field"] = json!(field);
            }
            return HttpResponse::BadRequest().json(body);
        }
    };
    if data.store.state(&run).is_none() && data.store.runs().len() >= data.limits.max_runs {
        data.rejected.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::CONFLICT,
            format!(
                "the relay already holds {} runs, the limit (--max-runs): delete old runs or raise it",
                data.limits.max_runs
            ),
        );
    }
    let store = data.store.clone();
    let hub = data.hub.clone();
    let run2 = run.clone();
    let arrived = std::time::Instant::now();
    let result = web::block(move || store.append(&run2, events, now(), &|c| hub.publish(c))).await;
    match result {
        Ok(Ok(c)) => {
            data.ingest_latency.observe(arrived.elapsed().as_secs_f64());
            data.accepted
                .fetch_add(c.accepted as u64, Ordering::Relaxed);
            data.duplicates
                .fetch_add(c.duplicates as u64, Ordering::Relaxed);
            HttpResponse::Ok().json(json!({
                "accepted": c.accepted,
                "duplicates": c.duplicates,
                "last_id": c.last_id,
            }))
        }
        Ok(Err(e @ crate::storage::StoreError::Limit(_))) => {
            data.rejected.fetch_add(1, Ordering::Relaxed);
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Ok(Err(e)) => {
            tracing::error!(run = %run, error = %e, "ingest failed");
            data.storage_errors.fetch_add(1, Ordering::Relaxed);
            let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            resp
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("ingest worker failed: {e}"),
        ),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
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
        return Err(bad_request(format!(
            "invalid event name {bad:?} in `event`: names match [a-z0-9_.-]{{1,64}}"
        )));
    }
    Ok(Some(names))
}

/// Buckets a series answer has when the query names none.
const DEFAULT_SERIES_POINTS: usize = 1000;

/// The series query, checked: a clear 400 names the bad parameter.
fn series_query(q: &HashMap<String, String>) -> Result<(Option<String>, SeriesQuery), ApiError> {
    for key in q.keys() {
        if !["metric", "points", "from", "to"].contains(&key.as_str()) {
            return Err(bad_request(format!(
                "unknown parameter `{key}` (use metric, points, from, to)"
            )));
        }
    }
    let metric = match q.get("metric") {
        Some(m) if m.is_empty() || m.len() > 256 => {
            return Err(bad_request(
                "`metric` must be 1 to 256 characters".to_string(),
            ))
        }
        m => m.cloned(),
    };
    let points = match q.get("points") {
        None => DEFAULT_SERIES_POINTS,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if (1..=series::MAX_POINTS).contains(&n) => n,
            _ => {
                return Err(bad_request(format!(
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
                _ => Err(bad_request(format!(
                    "`{key}` must be a finite number (a step), got {v:?}"
                ))),
            },
        }
    };
    let (from, to) = (bound("from")?, bound("to")?);
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(bad_request(format!("`from` ({f}) is after `to` ({t})")));
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
async fn get_series(
    data: Data,
    path: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let run = path.into_inner();
    if let Err(r) = check_run(&run) {
        return r.into();
    }
    let (metric, query) = match series_query(&q) {
        Ok(x) => x,
        Err(r) => return r.into(),
    };
    let store = data.store.clone();
    let answer = web::block(move || match metric {
        Some(m) => store
            .series(&run, &m, query)
            .map(|p| p.map(|p| serde_json::to_string(&p))),
        None => store
            .series_list(&run)
            .map(|l| l.map(|l| serde_json::to_string(&l))),
    })
    .await;
    match answer {
        Ok(Ok(Some(Ok(body)))) => HttpResponse::Ok()
            .content_type("application/json")
            .body(body),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such run".to_string()),
        Ok(Ok(Some(Err(e)))) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn get_events(
    data: Data,
    path: web::Path<String>,
    q: web::Query<EventsQuery>,
) -> HttpResponse {
    let run = path.into_inner();
    if let Err(r) = check_run(&run) {
        return r.into();
    }
    let limit = q.limit.unwrap_or(DEFAULT_EVENTS_LIMIT);
    if limit == 0 || limit > MAX_EVENTS_LIMIT {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`limit` must be between 1 and {MAX_EVENTS_LIMIT}"),
        );
    }
    let names = match name_filter(q.event.as_deref()) {
        Ok(n) => n,
        Err(r) => return r.into(),
    };
    if data.store.state(&run).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no run {run:?}"));
    }
    let desc = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`order` must be asc or desc, got {other:?}"),
            )
        }
    };
    if q.before.is_some() && !desc {
        return error(
            StatusCode::BAD_REQUEST,
            "`before` pages back through history: use it with order=desc".to_string(),
        );
    }
    if desc && q.after.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "`after` reads forward: use it without order=desc".to_string(),
        );
    }
    let store = data.store.clone();
    let (after, before) = (q.after.unwrap_or(0), q.before);
    let read = move || {
        if desc {
            store.events_desc(&run, before, limit, names.as_deref())
        } else {
            store.events(&run, after, limit, names.as_deref())
        }
    };
    match web::block(read).await {
        Ok(Ok(events)) => {
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
            HttpResponse::Ok()
                .content_type("application/json")
                .body(body)
        }
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn sse_event(e: &StoredEvent) -> Bytes {
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        e.id, e.name, e.json
    ))
}

/// The SSE response carrying what `rx` receives; it ends when the session that opened it
/// expires (`expires`), so a logged-out browser stops receiving at once.
pub(crate) fn sse_response(
    rx: mpsc::Receiver<Bytes>,
    who: &crate::auth::Identity,
    auth: &Arc<crate::auth::Auth>,
) -> HttpResponse {
    // A browser session's stream ends with the session: at its end, or within
    // SESSION_CHECK of a sign-out (on any relay sharing sessions).
    let deadline = who.expires.map(tokio::time::Instant::from_std);
    let session = who.session.clone().map(|key| {
        let mut every = tokio::time::interval(SESSION_CHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        (key, auth.clone(), every)
    });
    let stream =
        futures_util::stream::unfold((rx, session), move |(mut rx, mut session)| async move {
            if session.is_none() && deadline.is_none() {
                // No login: nothing but the messages to wait for.
                let next = rx.recv().await;
                return next.map(|b| (Ok::<_, actix_web::Error>(b), (rx, session)));
            }
            let ended = async {
                match &mut session {
                    Some((key, auth, every)) => loop {
                        every.tick().await;
                        if !auth.session_alive(key) {
                            return;
                        }
                    },
                    None => std::future::pending().await,
                }
            };
            let expired = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                m = rx.recv() => m,
                () = ended => None,
                () = expired => None,
            };
            next.map(|b| (Ok::<_, actix_web::Error>(b), (rx, session)))
        });
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Never compress a stream: a gzip encoder would hold events back.
        .insert_header((header::CONTENT_ENCODING, "identity"))
        .insert_header(("X-Accel-Buffering", HeaderValue::from_static("no")))
        .streaming(stream)
}

#[derive(Deserialize)]
struct StreamQuery {
    after: Option<u64>,
}

/// Counts an open stream for as long as it lives.
pub(crate) struct StreamGuard(pub Arc<Hub>);
impl StreamGuard {
    pub fn new(hub: Arc<Hub>) -> Self {
        hub.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(hub)
    }
}
impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn run_stream(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<StreamQuery>,
) -> HttpResponse {
    let run = path.into_inner();
    if let Err(r) = check_run(&run) {
        return r.into();
    }
    let header_id = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().parse::<u64>());
    let after = match header_id {
        Some(Ok(id)) => id,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Last-Event-ID must be a non-negative integer event id",
            )
        }
        None => q.after.unwrap_or(0),
    };
    let who = crate::access::identity(&req);
    let ticket = match data.auth.open_stream(&who) {
        Ok(t) => t,
        Err(why) => return error(StatusCode::TOO_MANY_REQUESTS, why),
    };
    // Subscribe before reading the backlog, so nothing committed in between is missed.
    let live = data.hub.subscribe_run(&run);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let store = data.store.clone();
    let guard = StreamGuard::new(data.hub.clone());
    actix_web::rt::spawn(async move {
        let _guard = guard;
        let _ticket = ticket;
        let hub = _guard.0.clone();
        let end = tokio::select! {
            end = stream_run(store, &run, after, live, tx) => end,
            () = hub.closing() => StreamEnd::ShuttingDown,
        };
        if end == StreamEnd::CutOff {
            hub.note_cut_off();
        }
    });
    sse_response(rx, &who, &data.auth)
}

#[derive(PartialEq)]
pub(crate) enum StreamEnd {
    ClientGone,
    CutOff,
    StorageFailed,
    /// The relay is shutting down; the client reconnects (elsewhere) with Last-Event-ID.
    ShuttingDown,
}

/// Hands one message to the connection; a client that takes nothing for
/// [`STALL_TIMEOUT`] is cut off rather than waited on.
pub(crate) async fn deliver(tx: &mpsc::Sender<Bytes>, msg: Bytes) -> Result<(), StreamEnd> {
    match tokio::time::timeout(STALL_TIMEOUT, tx.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(StreamEnd::ClientGone),
        Err(_) => Err(StreamEnd::CutOff),
    }
}

async fn replay(
    store: &Arc<dyn Storage>,
    run: &str,
    last: &mut u64,
    upto: Option<u64>,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), StreamEnd> {
    loop {
        let s = store.clone();
        let r = run.to_string();
        let after = *last;
        let page = match web::block(move || s.events(&r, after, REPLAY_PAGE, None)).await {
            Ok(Ok(p)) => p,
            _ => return Err(StreamEnd::StorageFailed),
        };
        let n = page.len();
        for e in page {
            if upto.is_some_and(|u| e.id > u) {
                return Ok(());
            }
            deliver(tx, sse_event(&e)).await?;
            *last = e.id;
        }
        if n < REPLAY_PAGE || upto.is_some_and(|u| *last >= u) {
            return Ok(());
        }
    }
}

async fn stream_run(
    store: Arc<dyn Storage>,
    run: &str,
    after: u64,
    mut live: broadcast::Receiver<Arc<StoredEvent>>,
    tx: mpsc::Sender<Bytes>,
) -> StreamEnd {
    if tx
        .send(Bytes::from_static(b"retry: 1000\n\n"))
        .await
        .is_err()
    {
        return StreamEnd::ClientGone;
    }
    let mut last = after;
    if let Err(end) = replay(&store, run, &mut last, None, &tx).await {
        return end;
    }
    let mut ticker = tokio::time::interval(KEEP_ALIVE);
    ticker.tick().await;
    loop {
        tokio::select! {
            msg = live.recv() => match msg {
                Ok(e) => {
                    if e.id <= last {
                        continue;
                    }
                    if e.id > last + 1 {
                        // Fill a gap from storage, then carry on live.
                        if let Err(end) = replay(&store, run, &mut last, Some(e.id - 1), &tx).await {
                            return end;
                        }
                    }
                    if let Err(end) = deliver(&tx, sse_event(&e)).await {
                        return end;
                    }
                    last = e.id;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return StreamEnd::CutOff,
                Err(broadcast::error::RecvError::Closed) => return StreamEnd::ClientGone,
            },
            _ = ticker.tick() => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return StreamEnd::ClientGone;
                }
            }
            _ = tx.closed() => return StreamEnd::ClientGone,
        }
    }
}

/// Forwards live broadcast messages (those `render` turns into bytes) to a stream, with
/// keep-alive comments, until the client leaves; a subscriber that lags or stalls is cut
/// off (it reconnects and starts from storage).
pub(crate) async fn forward_live<T: Clone>(
    live: &mut broadcast::Receiver<T>,
    tx: &mpsc::Sender<Bytes>,
    hub: &Hub,
    render: impl Fn(&T) -> Option<Bytes>,
) {
    let mut ticker = tokio::time::interval(KEEP_ALIVE);
    ticker.tick().await;
    let closing = hub.closing();
    tokio::pin!(closing);
    loop {
        tokio::select! {
            () = &mut closing => return,
            msg = live.recv() => match msg {
                Ok(m) => {
                    if let Some(bytes) = render(&m) {
                        match deliver(tx, bytes).await {
                            Ok(()) => {}
                            Err(StreamEnd::CutOff) => { hub.note_cut_off(); return }
                            Err(_) => return,
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => { hub.note_cut_off(); return }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick() => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() { return }
            }
            _ = tx.closed() => return,
        }
    }
}

async fn summary_stream(data: Data, req: HttpRequest) -> HttpResponse {
    let who = crate::access::identity(&req);
    let ticket = match data.auth.open_stream(&who) {
        Ok(t) => t,
        Err(why) => return error(StatusCode::TOO_MANY_REQUESTS, why),
    };
    let mut live = data.hub.subscribe_summaries();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let initial = data.store.runs();
    let guard = StreamGuard::new(data.hub.clone());
    actix_web::rt::spawn(async move {
        let _guard = guard;
        let _ticket = ticket;
        let send = |s: &stepwatch_events::RunSummary| {
            Bytes::from(format!(
                "event: run\ndata: {}\n\n",
                serde_json::to_string(s).unwrap_or_default()
            ))
        };
        if tx
            .send(Bytes::from_static(b"retry: 1000\n\n"))
            .await
            .is_err()
        {
            return;
        }
        for s in &initial {
            if deliver(&tx, send(s)).await.is_err() {
                return;
            }
        }
        if tx
            .send(Bytes::from_static(b"event: ready\ndata: {}\n\n"))
            .await
            .is_err()
        {
            return;
        }
        forward_live(&mut live, &tx, &_guard.0, |s| Some(send(s))).await;
    });
    sse_response(rx, &who, &data.auth)
}
