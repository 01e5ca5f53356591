//! Fan-out: one broadcast channel per run for its events, one for run summaries.
//!
//! Publishing never waits: `tokio::sync::broadcast` overwrites the oldest message
//! for a subscriber that falls behind, who then sees `Lagged` and is cut off (it
//! reconnects with Last-Event-ID and catches up from storage).

use crate::storage::{Committed, StoredEvent};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use stepwatch_events::RunSummary;
use tokio::sync::{broadcast, watch};

/// Messages a run subscriber can fall behind by before it is cut off.
pub const RUN_CHANNEL_CAPACITY: usize = 4096;
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
    runs: Mutex<HashMap<String, broadcast::Sender<Arc<StoredEvent>>>>,
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
    pub fn subscribe_run(&self, run: &str) -> broadcast::Receiver<Arc<StoredEvent>> {
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
        {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = runs.get(&c.run) {
                for e in &c.events {
                    if tx.send(e.clone()).is_err() {
                        // No subscriber left: forget the channel.
                        runs.remove(&c.run);
                        break;
                    }
                }
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
