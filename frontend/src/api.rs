//! Talking to the relay: where it is, its URLs, GETs, and live SSE streams delivered at
//! most once per animation frame. What the answers mean is decoded by
//! `stepwatch_events::api`; what is loaded when is the `load` module's job.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{EventSource, MessageEvent};

/// The file, deployed beside index.html, that may name the relay: `{"relay": "http://host:8080"}`.
pub const CONFIG_FILE: &str = "stepwatch-config.json";

/// Where the relay is: `?relay=` wins, then the config file beside index.html, else
/// the page's own origin (returned as `""`, so URLs stay relative).
pub async fn resolve_relay() -> String {
    let win = web_sys::window();
    let search = win
        .as_ref()
        .and_then(|w| w.location().search().ok())
        .unwrap_or_default();
    if let Ok(params) = web_sys::UrlSearchParams::new_with_str(&search) {
        if let Some(r) = params.get("relay").filter(|r| !r.is_empty()) {
            return r.trim_end_matches('/').to_string();
        }
    }
    if let Ok(resp) = gloo_net::http::Request::get(CONFIG_FILE).send().await {
        if resp.ok() {
            if let Ok(v) = resp.json::<serde_json::Value>().await {
                if let Some(r) = v.get("relay").and_then(|r| r.as_str()) {
                    return r.trim_end_matches('/').to_string();
                }
            }
        }
    }
    String::new()
}

thread_local! {
    /// What to run when an answer suggests the session ended (set by the app shell).
    static SESSION_PROBE: RefCell<Option<Rc<dyn Fn()>>> = const { RefCell::new(None) };
}

/// Sets what [`probe_session`] runs: the app shell asks the relay who we are.
pub fn set_session_probe(probe: impl Fn() + 'static) {
    SESSION_PROBE.with(|p| *p.borrow_mut() = Some(Rc::new(probe)));
}

/// Called when a request is refused as unauthenticated (401) or a stream is refused
/// for good: if the session ended (signed out elsewhere, or expired), the page shows
/// the sign-in form.
pub fn probe_session() {
    if let Some(probe) = SESSION_PROBE.with(|p| p.borrow().clone()) {
        probe();
    }
}

/// The state of a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Connecting,
    Live,
    /// The connection dropped; the browser is reconnecting.
    Reconnecting,
    /// The relay is unreachable (or the browser is offline); retrying every few seconds.
    Offline,
}

/// A live SSE subscription. Dropping it closes the connection.
///
/// The browser reconnects by itself after a drop, sending `Last-Event-ID`. When it
/// gives up (the relay answered with an error while restarting, say), the stream is
/// reopened after [`REOPEN_AFTER_MS`] with `?after=<last id seen>`, so nothing is
/// missed and nothing is applied twice.
pub struct Stream {
    inner: Rc<Inner>,
}

/// Delay before reopening a stream the browser closed.
pub const REOPEN_AFTER_MS: i32 = 2000;

type BatchFn = dyn Fn(Vec<(String, String)>);
type StatusFn = dyn Fn(ConnState);

struct Inner {
    url: String,
    names: Vec<String>,
    on_batch: Rc<BatchFn>,
    on_status: Rc<StatusFn>,
    queue: Rc<RefCell<Vec<(String, String)>>>,
    scheduled: Rc<Cell<bool>>,
    last_id: Cell<Option<u64>>,
    closed: Cell<bool>,
    current: RefCell<Option<Open>>,
}

struct Open {
    es: EventSource,
    _listeners: Vec<Closure<dyn FnMut(MessageEvent)>>,
    _status: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.inner.closed.set(true);
        if let Some(open) = self.inner.current.borrow_mut().take() {
            open.es.close();
        }
    }
}

impl Stream {
    /// Opens `url` and listens for the SSE event types in `names`. Messages are queued
    /// and handed to `on_batch` as `(event type, data)` pairs once per animation frame.
    /// With `after`, the stream starts after that event id (`?after=`): what came before
    /// was loaded from history.
    pub fn open(
        url: &str,
        after: Option<u64>,
        names: &[&str],
        on_batch: impl Fn(Vec<(String, String)>) + 'static,
        on_status: impl Fn(ConnState) + 'static,
    ) -> Stream {
        let inner = Rc::new(Inner {
            url: url.to_string(),
            names: names.iter().map(|n| n.to_string()).collect(),
            on_batch: Rc::new(on_batch),
            on_status: Rc::new(on_status),
            queue: Rc::default(),
            scheduled: Rc::new(Cell::new(false)),
            last_id: Cell::new(after),
            closed: Cell::new(false),
            current: RefCell::new(None),
        });
        (inner.on_status)(ConnState::Connecting);
        Inner::connect(&inner);
        Stream { inner }
    }
}

impl Inner {
    fn connect(this: &Rc<Inner>) {
        if this.closed.get() {
            return;
        }
        let url = match this.last_id.get() {
            Some(id) => {
                let sep = if this.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}after={id}", this.url)
            }
            None => this.url.clone(),
        };
        let Ok(es) = EventSource::new(&url) else {
            Inner::reopen_later(this);
            return;
        };
        let weak = Rc::downgrade(this);
        let mut listeners = Vec::new();
        for name in &this.names {
            let weak = weak.clone();
            let name_owned = name.clone();
            let cb = Closure::<dyn FnMut(MessageEvent)>::new(move |m: MessageEvent| {
                let Some(this) = weak.upgrade() else { return };
                if let Ok(id) = m.last_event_id().parse::<u64>() {
                    this.last_id.set(Some(id));
                }
                let data = m.data().as_string().unwrap_or_default();
                this.queue.borrow_mut().push((name_owned.clone(), data));
                if !this.scheduled.replace(true) {
                    let queue = this.queue.clone();
                    let scheduled = this.scheduled.clone();
                    let on_batch = this.on_batch.clone();
                    leptos::prelude::request_animation_frame(move || {
                        scheduled.set(false);
                        let batch = std::mem::take(&mut *queue.borrow_mut());
                        if !batch.is_empty() {
                            on_batch(batch);
                        }
                    });
                }
            });
            let _ = es.add_event_listener_with_callback(name, cb.as_ref().unchecked_ref());
            listeners.push(cb);
        }
        let w1 = weak.clone();
        let open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            if let Some(this) = w1.upgrade() {
                (this.on_status)(ConnState::Live);
            }
        });
        let w2 = weak;
        let error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            let Some(this) = w2.upgrade() else { return };
            let gave_up = this
                .current
                .borrow()
                .as_ref()
                .is_some_and(|o| o.es.ready_state() == EventSource::CLOSED);
            let offline = web_sys::window().is_some_and(|w| !w.navigator().on_line());
            (this.on_status)(if gave_up || offline {
                ConnState::Offline
            } else {
                ConnState::Reconnecting
            });
            if gave_up {
                // A stream is refused for good when the relay is down, or when the
                // session ended (the relay ends a session's streams at sign-out).
                probe_session();
                Inner::reopen_later(&this);
            }
        });
        es.set_onopen(Some(open.as_ref().unchecked_ref()));
        es.set_onerror(Some(error.as_ref().unchecked_ref()));
        *this.current.borrow_mut() = Some(Open {
            es,
            _listeners: listeners,
            _status: vec![open, error],
        });
    }

    fn reopen_later(this: &Rc<Inner>) {
        let weak = Rc::downgrade(this);
        let cb = Closure::once_into_js(move || {
            if let Some(this) = weak.upgrade() {
                Inner::connect(&this);
            }
        });
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(
                cb.unchecked_ref(),
                REOPEN_AFTER_MS,
            );
        }
    }
}

/// The relay's base URL (`""` for the page's own origin), shared through context by
/// the pages that load runs.
#[derive(Clone)]
pub struct Base(pub String);

/// Buckets asked for when a run's series are first loaded: up to four points each.
/// (index.html's script asks for the loss at this many points before the dashboard runs.)
pub const OVERVIEW_POINTS: usize = 1500;

/// GETs `url` and returns its body: `None` when the relay answers with an error. While
/// the relay cannot be reached (restarting, say) it tries again every
/// [`REOPEN_AFTER_MS`], `tries` times in all. One function for every answer, decoded by
/// the caller with `stepwatch_events::api`: keeps the download small.
pub async fn get_text(url: &str, mut tries: u32) -> Option<String> {
    if let Some(text) = take_prefetched(url).await {
        return Some(text);
    }
    loop {
        match gloo_net::http::Request::get(url).send().await {
            Ok(resp) if resp.ok() => return resp.text().await.ok(),
            Ok(resp) => {
                if resp.status() == 401 {
                    probe_session();
                }
                return None;
            }
            Err(_) if tries > 1 => {
                tries -= 1;
                let wait = js_sys::Promise::new(&mut |done, _| {
                    if let Some(w) = web_sys::window() {
                        let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(
                            &done,
                            REOPEN_AFTER_MS,
                        );
                    }
                });
                let _ = wasm_bindgen_futures::JsFuture::from(wait).await;
            }
            Err(_) => return None,
        }
    }
}

/// The answer index.html's script asked for before this code ran (`window.__sw_prefetch`,
/// URL → promise of the body, or of null when it failed), taken once; `None` when there
/// is none or it failed (the caller asks again).
async fn take_prefetched(url: &str) -> Option<String> {
    let window: JsValue = web_sys::window()?.into();
    let table = js_sys::Reflect::get(&window, &"__sw_prefetch".into()).ok()?;
    if !table.is_object() {
        return None;
    }
    let key = JsValue::from_str(url);
    let pending = js_sys::Reflect::get(&table, &key).ok()?;
    let _ = js_sys::Reflect::delete_property(table.unchecked_ref::<js_sys::Object>(), &key);
    let pending = pending.dyn_into::<js_sys::Promise>().ok()?;
    wasm_bindgen_futures::JsFuture::from(pending)
        .await
        .ok()?
        .as_string()
}

/// Tries [`get_value`] makes while loading a run: about a minute of relay downtime.
pub const LOAD_TRIES: u32 = 30;

/// The URL of a run's resource: `{base}/api/runs/{run}{rest}`.
pub fn run_url(base: &str, run: &str, rest: &str) -> String {
    format!("{base}/api/runs/{run}{rest}")
}

/// The series endpoint for one metric, reduced to `points` buckets, optionally between
/// two steps.
pub fn series_url(
    base: &str,
    run: &str,
    metric: &str,
    points: usize,
    range: Option<(f64, f64)>,
) -> String {
    let mut q = format!(
        "/series?metric={}&points={points}",
        String::from(js_sys::encode_uri_component(metric))
    );
    if let Some((a, b)) = range {
        q.push_str(&format!("&from={a}&to={b}"));
    }
    run_url(base, run, &q)
}

/// Seconds since the unix epoch, from the browser clock.
pub fn now_s() -> f64 {
    js_sys::Date::now() / 1000.0
}

/// A refusal from the relay (`{"error": "...", "field": "..."}`), or a request that
/// never got an answer (no field).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Refusal {
    pub error: String,
    pub field: Option<String>,
}

impl Refusal {
    fn plain(error: impl ToString) -> Refusal {
        Refusal {
            error: error.to_string(),
            field: None,
        }
    }
}

/// POSTs `body` (JSON text) to `url`: the answer's text, or the relay's refusal. One
/// function for every POST of the launch pages and the alerts panel, decoded by the caller.
pub async fn post_json(url: &str, body: String) -> Result<String, Refusal> {
    send_json(gloo_net::http::Method::POST, url, Some(body)).await
}

/// DELETEs `url`: the answer's text, or the relay's refusal.
pub async fn delete(url: &str) -> Result<String, Refusal> {
    send_json(gloo_net::http::Method::DELETE, url, None).await
}

async fn send_json(
    method: gloo_net::http::Method,
    url: &str,
    body: Option<String>,
) -> Result<String, Refusal> {
    let req = gloo_net::http::RequestBuilder::new(url).method(method);
    let req = match body {
        Some(body) => req.header("Content-Type", "application/json").body(body),
        None => req.build(),
    }
    .map_err(Refusal::plain)?;
    let resp = req.send().await.map_err(Refusal::plain)?;
    let text = resp.text().await.unwrap_or_default();
    if resp.ok() {
        return Ok(text);
    }
    if resp.status() == 401 {
        probe_session();
    }
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    Err(Refusal {
        error: v["error"].as_str().map_or_else(
            || format!("{} {}", resp.status(), resp.status_text()),
            str::to_string,
        ),
        field: v["field"].as_str().map(str::to_string),
    })
}

/// GETs `url` once and parses its JSON: `None` on an error answer.
pub async fn get_value(url: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&get_text(url, 1).await?).ok()
}

/// The URL of the launch API's `path` (`/api{path}`): `/jobs`, `/queues`, …
pub fn launch_url(base: &str, path: &str) -> String {
    format!("{base}/api{path}")
}
