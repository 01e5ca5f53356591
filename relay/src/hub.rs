//! Fan-out: one broadcast channel per run for its events, one for run summaries.
//!
//! Publishing never waits: `tokio::sync::broadcast` overwrites the oldest message
//! for a subscriber that falls behind, who then sees `Lagged` and is cut off (it
//! reconnects with Last-Event-ID and catches up from storage).

use crate::storage::{Committed, StoredEvent};
use actix_web::web::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use stepwatch_events::RunSummary;
use tokio::sync::{broadcast, watch};

/// Messages a run subscriber can fall behind by before it is cut off.
pub const RUN_CHANNEL_CAPACITY: usize = 1024;
/// Most events, and most bytes of their SSE text, one run message carries: a committed
/// batch goes out in pieces this size, so what a lagging subscriber holds in the channel
/// stays bounded (about 4 MiB of text per run).
pub const PIECE_EVENTS: usize = 32;
pub const PIECE_BYTES: usize = 4096;

/// A piece of a committed batch as its run's subscribers receive it: the events, ids in
/// order with no gap, and their SSE messages rendered once for every subscriber.
#[derive(Debug)]
pub struct Live {
    pub events: Vec<Arc<StoredEvent>>,
    /// `id:` / `event:` / `data:` of each event, in order.
    pub sse: Bytes,
}

impl Live {
    pub fn first_id(&self) -> u64 {
        self.events.first().map_or(0, |e| e.id)
    }

    pub fn last_id(&self) -> u64 {
        self.events.last().map_or(0, |e| e.id)
    }
}

/// Appends one event's SSE message to `out`.
pub fn sse_message(e: &StoredEvent, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "id: {}\nevent: {}\ndata: ", e.id, e.name);
    out.extend_from_slice(e.json.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// A batch's events cut into [`Live`] pieces of at most [`PIECE_EVENTS`] events and
/// (beyond its first event) [`PIECE_BYTES`] of text.
fn pieces(events: &[Arc<StoredEvent>]) -> Vec<Live> {
    let mut out = Vec::new();
    let mut piece: Vec<Arc<StoredEvent>> = Vec::new();
    let mut text: Vec<u8> = Vec::new();
    for e in events {
        let before = text.len();
        sse_message(e, &mut text);
        if !piece.is_empty() && (piece.len() == PIECE_EVENTS || text.len() > PIECE_BYTES) {
            let rest = text.split_off(before);
            out.push(Live {
                events: std::mem::take(&mut piece),
                sse: Bytes::from(std::mem::replace(&mut text, rest)),
            });
        }
        piece.push(e.clone());
    }
    if !piece.is_empty() {
        out.push(Live {
            events: piece,
            sse: Bytes::from(text),
        });
    }
    out
}
/// Summaries a runs-list subscriber can fall behind by before it is cut off.
pub const SUMMARY_CHANNEL_CAPACITY: usize = 1024;

/// Who sees every committed batch, this relay's and (for the runs it watches) other
/// relays': the alert engine. Called with the writer lock held: it must only hand off.
pub trait CommitObserver: Send + Sync {
    fn committed(&self, c: &Committed);
    /// Whether it wants `run`'s batches committed by other relays.
    fn watches(&self, run: &str) -> bool;
}

/// The fan-out hub shared by ingest and every stream.
pub struct Hub {
    observer: OnceLock<Arc<dyn CommitObserver>>,
    runs: Mutex<HashMap<String, broadcast::Sender<Arc<Live>>>>,
    summaries: broadcast::Sender<Arc<RunSummary>>,
    /// Subscribers cut off for falling behind, since start.
    pub cut_off: AtomicU64,
    /// Streams open now.
    pub open_streams: AtomicU64,
    /// Set when the relay shuts down: every stream ends so clients reconnect elsewhere.
    closing: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            observer: OnceLock::new(),
            runs: Mutex::new(HashMap::new()),
            summaries: broadcast::channel(SUMMARY_CHANNEL_CAPACITY).0,
            cut_off: AtomicU64::new(0),
            open_streams: AtomicU64::new(0),
            closing: watch::channel(false).0,
        }
    }
}

impl Hub {
    /// Subscribes to a run's live events (call before reading the backlog from storage).
    pub fn subscribe_run(&self, run: &str) -> broadcast::Receiver<Arc<Live>> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.entry(run.to_string())
            .or_insert_with(|| broadcast::channel(RUN_CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Subscribes to run summaries.
    pub fn subscribe_summaries(&self) -> broadcast::Receiver<Arc<RunSummary>> {
        self.summaries.subscribe()
    }

    /// Sets who sees every committed batch (once).
    pub fn observe(&self, o: Arc<dyn CommitObserver>) {
        let _ = self.observer.set(o);
    }

    /// Whether the observer wants other relays' batches of `run`.
    pub fn watched(&self, run: &str) -> bool {
        self.observer.get().is_some_and(|o| o.watches(run))
    }

    /// Publishes a committed batch; never blocks.
    pub fn publish(&self, c: &Committed) {
        if c.events.is_empty() {
            return;
        }
        if let Some(o) = self.observer.get() {
            o.committed(c);
        }
        let tx = {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            match runs.get(&c.run) {
                Some(tx) if tx.receiver_count() == 0 => {
                    // No subscriber left: forget the channel.
                    runs.remove(&c.run);
                    None
                }
                tx => tx.cloned(),
            }
        };
        if let Some(tx) = tx {
            // Rendered once here, outside the hub's lock; batches still go out in commit
            // order, as publishing runs under the writer lock.
            for piece in pieces(&c.events) {
                let _ = tx.send(Arc::new(piece));
            }
        }
        let _ = self.summaries.send(Arc::new(c.state.summary()));
    }

    /// Whether anyone on this relay follows the run's events now.
    pub fn has_subscribers(&self, run: &str) -> bool {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run)
            .is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Publishes a run's changed summary alone (its events had no subscriber here).
    pub fn publish_summary(&self, state: &stepwatch_events::RunState) {
        let _ = self.summaries.send(Arc::new(state.summary()));
    }

    /// Tells runs-list subscribers a run is gone.
    pub fn publish_deleted(&self, run: &str) {
        let gone = RunSummary {
            run: run.to_string(),
            deleted: true,
            ..Default::default()
        };
        let _ = self.summaries.send(Arc::new(gone));
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run);
    }

    /// Ends every open stream (graceful shutdown).
    pub fn shut_down(&self) {
        self.closing.send_replace(true);
    }

    /// Whether [`Hub::shut_down`] was called.
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Resolves once [`Hub::shut_down`] was called.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    pub fn note_cut_off(&self) {
        self.cut_off.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u64, json_len: usize) -> Arc<StoredEvent> {
        Arc::new(StoredEvent {
            id,
            name: "log".into(),
            json: format!("{{\"m\":\"{}\"}}", "x".repeat(json_len)),
        })
    }

    fn text(events: &[Arc<StoredEvent>]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            sse_message(e, &mut out);
        }
        out
    }

    #[test]
    fn a_batch_goes_out_in_bounded_gapless_pieces_with_the_same_text() {
        let small: Vec<_> = (1..=100).map(|id| event(id, 10)).collect();
        let big: Vec<_> = (101..=110).map(|id| event(id, 3000)).collect();
        for batch in [small, big, vec![event(1, 10_000)]] {
            let out = pieces(&batch);
            let mut next = batch[0].id;
            let mut all = Vec::new();
            for p in &out {
                assert!(!p.events.is_empty() && p.events.len() <= PIECE_EVENTS);
                assert!(p.events.len() == 1 || p.sse.len() <= PIECE_BYTES);
                assert_eq!(p.first_id(), next);
                assert_eq!(p.sse[..], text(&p.events)[..]);
                next = p.last_id() + 1;
                all.extend_from_slice(&p.sse);
            }
            assert_eq!(all, text(&batch));
        }
    }

    #[test]
    fn an_event_renders_as_one_sse_message() {
        let mut out = Vec::new();
        sse_message(&event(7, 1), &mut out);
        assert_eq!(out, b"id: 7\nevent: log\ndata: {\"m\":\"x\"}\n\n");
    }
}
