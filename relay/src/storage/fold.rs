//! What every backend does to a batch inside its transaction, the same way: metric
//! checks, `(src, seq)` deduplication, gapless ids, the reducer and the series index.

use std::collections::HashMap;
use std::sync::Arc;
use stepwatch_events::{Event, RunState};

use super::error::StoreError;
use super::series;
use super::types::{Parsed, StoredEvent};

/// Longest metric name.
pub const MAX_METRIC_NAME: usize = 256;

/// A batch folded into its run, ready to store.
pub(crate) struct Folded {
    pub stored: Vec<Arc<StoredEvent>>,
    /// Highest seq per sender after this batch; written to `sources` with the events.
    pub advanced: HashMap<String, u64>,
    pub duplicates: usize,
    /// The stored events as parsed (ids and times filled in).
    pub parsed: Vec<Parsed>,
}

/// The heart of every backend's append, inside its transaction: skips each event whose
/// `seq` is not above its sender's highest (`known`, or earlier in this batch), gives
/// the others ids `last_id + 1 …`, stamps `received`, folds them into `state` and feeds
/// their metric values to the series `index`. On an error the run is dropped from the
/// index (the transaction rolls back; the index rebuilds from the database).
pub(crate) fn fold_batch(
    run: &str,
    events: Vec<Event>,
    received: f64,
    state: &mut RunState,
    known: Option<&HashMap<String, u64>>,
    index: &mut series::Index,
    db: &mut dyn series::SeriesDb,
) -> Result<Folded, StoreError> {
    let mut out = Folded {
        stored: Vec::with_capacity(events.len()),
        advanced: HashMap::new(),
        duplicates: 0,
        parsed: Vec::with_capacity(events.len()),
    };
    for mut event in events {
        if let (Some(src), Some(seq)) = (&event.src, event.seq) {
            let high = out
                .advanced
                .get(src.as_str())
                .or_else(|| known.and_then(|k| k.get(src.as_str())))
                .copied();
            if high.is_some_and(|h| seq <= h) {
                out.duplicates += 1;
                continue;
            }
            match out.advanced.get_mut(src.as_str()) {
                Some(high) => *high = seq,
                None => {
                    out.advanced.insert(src.clone(), seq);
                }
            }
        }
        let id = state.last_id + 1;
        event.id = Some(id);
        event.received = Some(received);
        if event.time.is_none() {
            event.time = Some(received);
        }
        let json = event.to_json();
        state.apply(&event);
        if let Err(e) = index.push_event(db, run, &event, state, id) {
            index.forget(run);
            return Err(e);
        }
        out.stored.push(Arc::new(StoredEvent {
            id,
            name: super::types::event_name(event.name()),
            json,
        }));
        let step = state.step_of(&event);
        out.parsed.push(Parsed {
            event,
            step,
            status: state.status,
        });
    }
    Ok(out)
}

/// Metric names must be short and printable, and a run may not pass `max` series.
pub(crate) fn check_metrics(
    index: &series::Index,
    run: &str,
    events: &[Event],
    max: usize,
) -> Result<(), StoreError> {
    let mut fresh: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut bad: Option<String> = None;
    let known = index.metrics_of(run);
    for e in events {
        stepwatch_events::series::metric_values(e, |name, _| {
            if bad.is_some() || known.has(name) || fresh.contains(name) {
                return;
            }
            if name.is_empty() || name.len() > MAX_METRIC_NAME || name.chars().any(char::is_control)
            {
                bad = Some(format!(
                    "metric name {:?} is not allowed: 1 to {MAX_METRIC_NAME} printable characters",
                    name.chars().take(80).collect::<String>()
                ));
            } else {
                fresh.insert(name.to_string());
            }
        });
    }
    if let Some(why) = bad {
        return Err(StoreError::Limit(why));
    }
    let total = known.count() + fresh.len();
    if total > max {
        return Err(StoreError::Limit(format!(
            "run {run:?} would have {total} metric series, over the limit of {max} (--max-metrics); new here: {}",
            fresh.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}
