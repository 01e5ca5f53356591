//! What every handler shares: the application state (storage, hub, counters, auth,
//! limits) and the per-request limits with their defaults.

use super::histogram::Histogram;
use crate::hub::Hub;
use crate::storage::Storage;
use actix_web::web;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Largest request body accepted by the ingest endpoint.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Largest uploaded image, in bytes.
pub const DEFAULT_MEDIA_MAX_ITEM: usize = 16 * 1024 * 1024;
/// Most pixels of one uploaded image (a browser decodes every one of them).
pub const DEFAULT_MEDIA_MAX_PIXELS: u64 = 40_000_000;
/// Most media bytes one run holds.
pub const DEFAULT_MEDIA_MAX_RUN: u64 = 1024 * 1024 * 1024;

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
    /// Launched jobs: queues, agents, claims (no queues unless `--launch`).
    pub launch: Arc<crate::launch::Launcher>,
    /// Alert rules, channels and counters (the engine runs on its own thread).
    pub alerts: Arc<crate::alerts::Alerts>,
    /// How many runs the relay holds, for `--max-runs`.
    pub run_count: RunCount,
}

/// How often [`RunCount`] counts the runs again.
pub const RECOUNT: std::time::Duration = std::time::Duration::from_secs(1);

/// The runs the relay holds, as `--max-runs` checks a new run's first batch against: a
/// count (which builds every run's summary: 10 ms at 10,000 runs) made at most once per
/// [`RECOUNT`], plus the runs this relay created since; a delete counts again.
#[derive(Default)]
pub struct RunCount(Mutex<Option<(Instant, usize)>>);

impl RunCount {
    /// The count, when one younger than [`RECOUNT`] is at hand.
    pub fn fresh(&self) -> Option<usize> {
        let c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        c.filter(|(at, _)| at.elapsed() < RECOUNT).map(|(_, n)| n)
    }

    /// Records a count just made.
    pub fn counted(&self, n: usize) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), n));
    }

    /// This relay stored a new run's first batch.
    pub fn created(&self) {
        if let Some((_, n)) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            *n += 1;
        }
    }

    /// A run went: count again next time.
    pub fn forget(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
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
    /// Bytes of one uploaded image (`--media-max-item`).
    pub media_max_item: usize,
    /// Pixels of one uploaded image, width × height (`--media-max-pixels`).
    pub media_max_pixels: u64,
    /// Bytes of media one run may hold in all (`--media-max-run`).
    pub media_max_run: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 10_000,
            max_string: 64 * 1024,
            max_depth: 16,
            max_runs: 10_000,
            max_metrics: 1000,
            media_max_item: DEFAULT_MEDIA_MAX_ITEM,
            media_max_pixels: DEFAULT_MEDIA_MAX_PIXELS,
            media_max_run: DEFAULT_MEDIA_MAX_RUN,
        }
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Storage>, max_body: usize) -> Self {
        AppState {
            launch: Arc::new(crate::launch::Launcher::new(
                store.clone(),
                crate::launch::LaunchConfig::default(),
            )),
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
            alerts: Arc::new(crate::alerts::Alerts::new(
                crate::alerts::AlertConfig::builtin(),
            )),
            run_count: RunCount::default(),
        }
    }
}

/// The state as handlers take it.
pub type Data = web::Data<AppState>;
