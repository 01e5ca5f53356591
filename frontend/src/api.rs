//! Talking to the relay: where it is, and live SSE streams delivered at most once per
//! animation frame.

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

/// The state of a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Connecting,
    Live,
    Reconnecting,
}

/// An open EventSource. Dropping it closes the connection.
pub struct Stream {
    es: EventSource,
    _listeners: Vec<Closure<dyn FnMut(MessageEvent)>>,
    _status: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.es.close();
    }
}

impl Stream {
    /// Opens `url` and listens for the SSE event types in `names`. Messages are queued
    /// and handed to `on_batch` as `(event type, data)` pairs once per animation frame.
    /// The browser reconnects by itself after a drop, sending `Last-Event-ID`.
    pub fn open(
        url: &str,
        names: &[&str],
        on_batch: impl Fn(Vec<(String, String)>) + 'static,
        on_status: impl Fn(ConnState) + 'static,
    ) -> Option<Stream> {
        let es = EventSource::new(url).ok()?;
        let queue: Rc<RefCell<Vec<(String, String)>>> = Rc::default();
        let scheduled = Rc::new(Cell::new(false));
        let on_batch = Rc::new(on_batch);
        let mut listeners = Vec::new();
        for name in names {
            let queue = queue.clone();
            let scheduled = scheduled.clone();
            let on_batch = on_batch.clone();
            let name_owned = name.to_string();
            let cb = Closure::<dyn FnMut(MessageEvent)>::new(move |m: MessageEvent| {
                let data = m.data().as_string().unwrap_or_default();
                queue.borrow_mut().push((name_owned.clone(), data));
                if !scheduled.replace(true) {
                    let queue = queue.clone();
                    let scheduled = scheduled.clone();
                    let on_batch = on_batch.clone();
                    leptos::prelude::request_animation_frame(move || {
                        scheduled.set(false);
                        let batch = std::mem::take(&mut *queue.borrow_mut());
                        if !batch.is_empty() {
                            on_batch(batch);
                        }
                    });
                }
            });
            es.add_event_listener_with_callback(name, cb.as_ref().unchecked_ref())
                .ok()?;
            listeners.push(cb);
        }
        let on_status = Rc::new(on_status);
        let s1 = on_status.clone();
        let open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| s1(ConnState::Live));
        let s2 = on_status.clone();
        let error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| s2(ConnState::Reconnecting));
        es.set_onopen(Some(open.as_ref().unchecked_ref()));
        es.set_onerror(Some(error.as_ref().unchecked_ref()));
        on_status(ConnState::Connecting);
        Some(Stream {
            es,
            _listeners: listeners,
            _status: vec![open, error],
        })
    }
}

/// Every event type a run stream can carry that the dashboard understands.
pub const RUN_EVENT_NAMES: &[&str] = &[
    "training_start",
    "training_end",
    "epoch_start",
    "epoch_end",
    "batch_start",
    "batch_end",
    "checkpoint_saved",
    "checkpoint_loaded",
    "metric_update",
    "error_occurred",
    "log",
    "system",
    "command_ack",
];

/// Seconds since the unix epoch, from the browser clock.
pub fn now_s() -> f64 {
    js_sys::Date::now() / 1000.0
}
