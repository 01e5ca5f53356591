//! Server-Sent Events: the response that carries a stream (ending with the browser
//! session that opened it), the machinery every stream shares (delivery with a stall
//! cut-off, keep-alives, replay from storage, live forwarding), and the two event streams,
//! `GET /api/runs/{run}/stream` (one run: backlog, then live, gapless) and `GET
//! /api/stream` (every run's summary).

use super::access::identity;
use super::error::{check_run, ApiError};
use super::state::Data;
use crate::hub::{sse_message, Hub, Live};
use crate::storage::{Storage, StoredEvent};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Events sent per storage read while a stream replays its backlog.
pub const REPLAY_PAGE: usize = 1000;
/// Interval of SSE keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A stream whose client reads nothing for this long is cut off.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a browser session's streams check that the session is still on.
pub const SESSION_CHECK: Duration = Duration::from_secs(2);

/// The first message of every stream: reconnect after a second.
const RETRY: &[u8] = b"retry: 1000\n\n";
const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

fn sse_event(e: &StoredEvent) -> Bytes {
    let mut out = Vec::with_capacity(e.json.len() + e.name.len() + 32);
    sse_message(e, &mut out);
    Bytes::from(out)
}

/// The SSE text of a live piece's events after `last` (all of them: the text the hub
/// rendered once, shared).
fn live_text(piece: &Live, last: u64) -> Bytes {
    if piece.first_id() > last {
        return piece.sse.clone();
    }
    let mut out = Vec::new();
    for e in piece.events.iter().filter(|e| e.id > last) {
        sse_message(e, &mut out);
    }
    Bytes::from(out)
}

/// A ticket to one more stream for this caller, or 429 when they hold too many.
pub fn open_ticket(
    data: &Data,
    who: &crate::auth::Identity,
) -> Result<crate::auth::OwnedTicket, ApiError> {
    data.auth
        .open_stream(who)
        .map_err(|why| ApiError::new(StatusCode::TOO_MANY_REQUESTS, why))
}

/// The SSE response carrying what `rx` receives; it ends when the session that opened it
/// expires (`expires`), so a logged-out browser stops receiving at once.
pub fn sse_response(
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

/// Counts an open stream for as long as it lives.
pub struct StreamGuard(pub Arc<Hub>);
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

#[derive(PartialEq)]
pub enum StreamEnd {
    ClientGone,
    CutOff,
    StorageFailed,
    /// The relay is shutting down; the client reconnects (elsewhere) with Last-Event-ID.
    ShuttingDown,
}

/// Sends the stream's first message (the reconnect delay); `Err` when the client left.
pub async fn start(tx: &mpsc::Sender<Bytes>) -> Result<(), StreamEnd> {
    tx.send(Bytes::from_static(RETRY))
        .await
        .map_err(|_| StreamEnd::ClientGone)
}

/// Hands one message to the connection; a client that takes nothing for
/// [`STALL_TIMEOUT`] is cut off rather than waited on.
pub async fn deliver(tx: &mpsc::Sender<Bytes>, msg: Bytes) -> Result<(), StreamEnd> {
    // Room in the channel: no timer to set (the common case, once per message).
    let msg = match tx.try_send(msg) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(StreamEnd::ClientGone),
        Err(mpsc::error::TrySendError::Full(msg)) => msg,
    };
    match tokio::time::timeout(STALL_TIMEOUT, tx.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(StreamEnd::ClientGone),
        Err(_) => Err(StreamEnd::CutOff),
    }
}

/// Sends the run's stored events after `last` (up to `upto`), page by page.
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

/// One run's stream: its backlog after `after`, then live events, gaps filled from storage.
async fn stream_run(
    store: Arc<dyn Storage>,
    run: &str,
    after: u64,
    mut live: broadcast::Receiver<Arc<Live>>,
    tx: mpsc::Sender<Bytes>,
) -> StreamEnd {
    if let Err(end) = start(&tx).await {
        return end;
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
                Ok(piece) => {
                    if piece.last_id() <= last {
                        continue;
                    }
                    if piece.first_id() > last + 1 {
                        // Fill a gap from storage, then carry on live.
                        let upto = Some(piece.first_id() - 1);
                        if let Err(end) = replay(&store, run, &mut last, upto, &tx).await {
                            return end;
                        }
                    }
                    if let Err(end) = deliver(&tx, live_text(&piece, last)).await {
                        return end;
                    }
                    last = piece.last_id();
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return StreamEnd::CutOff,
                Err(broadcast::error::RecvError::Closed) => return StreamEnd::ClientGone,
            },
            _ = ticker.tick() => {
                if tx.send(Bytes::from_static(KEEP_ALIVE_COMMENT)).await.is_err() {
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
pub async fn forward_live<T: Clone>(
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
                if tx.send(Bytes::from_static(KEEP_ALIVE_COMMENT)).await.is_err() { return }
            }
            _ = tx.closed() => return,
        }
    }
}

#[derive(Deserialize)]
pub struct StreamQuery {
    after: Option<u64>,
}

/// Where a run stream starts: `Last-Event-ID` (a reconnect), else `?after=`, else 0.
fn resume_point(req: &HttpRequest, q: &StreamQuery) -> Result<u64, ApiError> {
    let header_id = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().parse::<u64>());
    match header_id {
        Some(Ok(id)) => Ok(id),
        Some(Err(_)) => Err(ApiError::bad_request(
            "Last-Event-ID must be a non-negative integer event id",
        )),
        None => Ok(q.after.unwrap_or(0)),
    }
}

/// `GET /api/runs/{run}/stream`: the run's events after the resume point, then live.
pub async fn run_stream(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    check_run(&run)?;
    let after = resume_point(&req, &q)?;
    let who = identity(&req);
    let ticket = open_ticket(&data, &who)?;
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
    Ok(sse_response(rx, &who, &data.auth))
}

/// Bytes of the runs stream's first messages (each holds many runs' summaries).
const SUMMARY_PAGE: usize = 64 * 1024;

/// Appends a summary's SSE message to `out`.
fn summary_message(s: &stepwatch_events::RunSummary, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(stepwatch_events::api::SUMMARY_EVENT.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"{}"); // a summary always serialises
    }
    out.extend_from_slice(b"\n\n");
}

/// The summaries' messages in pages of about [`SUMMARY_PAGE`] bytes.
fn summary_pages(runs: &[stepwatch_events::RunSummary]) -> Vec<Bytes> {
    let mut pages = Vec::new();
    let mut page = Vec::with_capacity(SUMMARY_PAGE + 4096);
    for s in runs {
        summary_message(s, &mut page);
        if page.len() >= SUMMARY_PAGE {
            pages.push(Bytes::from(std::mem::replace(
                &mut page,
                Vec::with_capacity(SUMMARY_PAGE + 4096),
            )));
        }
    }
    if !page.is_empty() {
        pages.push(Bytes::from(page));
    }
    pages
}

/// `GET /api/stream`: every run's summary, a `ready` event, then summaries as they change.
pub async fn summary_stream(data: Data, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let who = identity(&req);
    let ticket = open_ticket(&data, &who)?;
    let mut live = data.hub.subscribe_summaries();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let store = data.store.clone();
    // Every run's summary, rendered off the async workers (tens of ms at 10,000 runs)
    // into a few large messages rather than one per run.
    let initial = web::block(move || summary_pages(&store.runs()))
        .await
        .map_err(|_| ApiError::unavailable("reading the runs failed"))?;
    let guard = StreamGuard::new(data.hub.clone());
    actix_web::rt::spawn(async move {
        let _guard = guard;
        let _ticket = ticket;
        let send = |s: &stepwatch_events::RunSummary| {
            let mut out = Vec::new();
            summary_message(s, &mut out);
            Bytes::from(out)
        };
        if start(&tx).await.is_err() {
            return;
        }
        for page in initial {
            if deliver(&tx, page).await.is_err() {
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
    Ok(sse_response(rx, &who, &data.auth))
}
