//! What storage hands out: stored events, committed batches, the runs list order.

use std::sync::Arc;
use stepwatch_events::{Event, RunState, RunStatus, RunSummary};

/// An event as stored: its id, its name and its wire JSON (with `id` and `received`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: u64,
    /// Shared: one per known name ([`event_name`]), one per chunk read back.
    pub name: Arc<str>,
    pub json: String,
}

/// The name as a [`StoredEvent`] holds it: a known event name's one shared copy (no
/// allocation per event stored), any other name a copy of its own.
pub fn event_name(name: &str) -> Arc<str> {
    static KNOWN: std::sync::OnceLock<Vec<Arc<str>>> = std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        stepwatch_events::KNOWN_EVENTS
            .iter()
            .map(|n| Arc::from(*n))
            .collect()
    });
    match known.iter().find(|k| &***k == name) {
        Some(k) => k.clone(),
        None => Arc::from(name),
    }
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

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn a_known_name_is_one_shared_copy_and_any_other_its_own() {
        let (a, b) = (event_name("batch_end"), event_name("batch_end"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "batch_end");
        let (c, d) = (event_name("my.custom"), event_name("my.custom"));
        assert_eq!((&*c, &*d), ("my.custom", "my.custom"));
        assert!(!Arc::ptr_eq(&c, &d));
    }
}
