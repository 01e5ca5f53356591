//! SSE clients: collect a stream's messages, follow its ids across reconnects, or
//! follow it in the background over several relays.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One SSE message.
#[derive(Debug, Clone, PartialEq)]
pub struct SseMessage {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

/// Opens an SSE stream and collects `n` messages (keep-alive comments skipped),
/// failing after `timeout`. `before_read` runs once the stream is open.
pub fn sse_collect(
    url: &str,
    last_event_id: Option<u64>,
    n: usize,
    timeout: Duration,
    before_read: impl FnOnce(),
) -> Vec<SseMessage> {
    let mut req = ureq::get(url).timeout(timeout);
    if let Some(id) = last_event_id {
        req = req.set("Last-Event-ID", &id.to_string());
    }
    let resp = req.call().unwrap();
    assert_eq!(resp.header("Content-Type"), Some("text/event-stream"));
    before_read();
    let deadline = Instant::now() + timeout;
    let mut reader = BufReader::new(resp.into_reader());
    let mut out = Vec::new();
    let (mut id, mut event, mut data) = (None, String::new(), String::new());
    let mut line = String::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "SSE: only {} of {n} messages",
            out.len()
        );
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("SSE stream ended after {} of {n} messages", out.len());
        }
        let l = line.trim_end_matches(['\n', '\r']);
        if l.is_empty() {
            if !data.is_empty() {
                out.push(SseMessage {
                    id,
                    event: std::mem::take(&mut event),
                    data: serde_json::from_str(&data).unwrap(),
                });
                data.clear();
                id = None;
            }
        } else if let Some(v) = l.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(v) = l.strip_prefix("event: ") {
            event = v.to_string();
        } else if let Some(v) = l.strip_prefix("data: ") {
            data.push_str(v);
        }
    }
    out
}

/// Follows an SSE stream, reconnecting with Last-Event-ID whenever it drops (relay
/// restarted, subscriber cut off), until `until` event ids were seen or `deadline`.
pub fn sse_follow_ids(url: &str, until: u64, deadline: Instant) -> Vec<u64> {
    let mut seen: Vec<u64> = Vec::new();
    while (seen.len() as u64) < until && Instant::now() < deadline {
        let mut req = ureq::get(url).timeout(Duration::from_secs(10));
        if let Some(last) = seen.last() {
            req = req.set("Last-Event-ID", &last.to_string());
        }
        let Ok(resp) = req.call() else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let reader = BufReader::new(resp.into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("id: ") {
                if let Ok(id) = id.trim().parse() {
                    seen.push(id);
                }
                if seen.len() as u64 >= until {
                    break;
                }
            }
        }
    }
    seen
}

/// A background SSE subscriber over one or more relays serving the same run: it starts
/// on `urls[0]`, reconnects with `Last-Event-ID` when the stream drops and moves to the
/// next URL when one is unreachable, for tests that wait on what it has seen so far. It stops
/// when dropped (at the latest when its current request times out).
pub struct SseFollower {
    seen: Arc<Mutex<Vec<(u64, usize)>>>,
    stop: Arc<AtomicBool>,
}

impl SseFollower {
    /// Starts following `urls[0]`.
    pub fn start(urls: &[String]) -> SseFollower {
        assert!(!urls.is_empty());
        let seen: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let urls = urls.to_vec();
        std::thread::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            move || {
                let mut current = 0;
                while !stop.load(Ordering::Relaxed) {
                    let last = seen.lock().unwrap().last().map(|(id, _)| *id);
                    let mut req = ureq::get(&urls[current]).timeout(Duration::from_secs(10));
                    if let Some(last) = last {
                        req = req.set("Last-Event-ID", &last.to_string());
                    }
                    let Ok(resp) = req.call() else {
                        current = (current + 1) % urls.len();
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    for line in BufReader::new(resp.into_reader()).lines() {
                        let Ok(line) = line else { break };
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        if let Some(id) = line.strip_prefix("id: ") {
                            if let Ok(id) = id.trim().parse() {
                                seen.lock().unwrap().push((id, current));
                            }
                        }
                    }
                }
            }
        });
        SseFollower { seen, stop }
    }

    /// The ids seen so far, in the order they came.
    pub fn ids(&self) -> Vec<u64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }

    /// The ids seen so far, each with the index of the URL that delivered it.
    pub fn sources(&self) -> Vec<(u64, usize)> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until it has seen at least `n` ids (or panics after `timeout`); returns all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let ids = self.ids();
            if ids.len() >= n {
                return ids;
            }
            assert!(
                Instant::now() < deadline,
                "SSE subscriber saw only {} of {n} events (last {:?})",
                ids.len(),
                ids.last()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SseFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
