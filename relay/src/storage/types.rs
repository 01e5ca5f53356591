//! What storage hands out: stored events, committed batches, the runs list order.

use std::sync::Arc;
use stepwatch_events::{Event, RunState, RunStatus, RunSummary};

/// An event as stored: its id, its name and its wire JSON (with `id` and `received`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: u64,
    pub name: String,
    pub json: String,
}

/// What one committed batch produced.
#[derive(Debug)]
pub struct Committed {
    pub run: String,
    pub accepted: usize,
    pub duplicates: usize,
    pub last_id: u64,
    pub events: Vec<Arc<StoredEvent>>,
    pub state: Arc<RunState>,
    /// The stored events as parsed, with the step and status just after each (this
    /// relay's own commits; `None` for what other relays committed): the alert engine
    /// reads them without parsing the JSON again.
    pub parsed: Option<Arc<Vec<Parsed>>>,
}

/// A stored event as parsed, with where the run stood just after it.
#[derive(Debug)]
pub struct Parsed {
    pub event: Event,
    pub step: u64,
    pub status: RunStatus,
}

/// The order of the runs list: newest started first, then by name.
pub(crate) fn sort_runs(runs: &mut [RunSummary]) {
    runs.sort_by(|a, b| {
        b.started_at
            .unwrap_or(0.0)
            .total_cmp(&a.started_at.unwrap_or(0.0))
            .then_with(|| a.run.cmp(&b.run))
    });
}
