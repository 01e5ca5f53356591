//! The in-memory side of the series index: each loaded run's open (partial) blocks,
//! fed event by event inside the append's transaction.

use super::block::{decode, write_block, OpenBlock, BLOCK};
use super::db::SeriesDb;
use crate::storage::error::StoreError;
use std::collections::HashMap;
use stepwatch_events::series::{metric_values, SeriesPoint};
use stepwatch_events::{Event, RunState};

/// A run's partial blocks are written at least every this many events.
pub const PERSIST_EVERY: u64 = 10_000;
/// Runs whose partial blocks are kept in memory (least recently used leave).
pub const OPEN_RUNS: usize = 64;

#[derive(Debug, Default)]
struct OpenRun {
    metrics: HashMap<String, OpenBlock>,
    indexed_id: u64,
    used: u64,
    /// The newest event pushed, and the reducer's step counters just after it.
    seen_id: u64,
    step: u64,
    batch_count: u64,
}

/// One run's metric names in the index ([`Index::metrics_of`]).
pub struct RunMetrics<'a>(Option<&'a HashMap<String, OpenBlock>>);

impl RunMetrics<'_> {
    /// Whether the run has a series of this name.
    pub fn has(&self, metric: &str) -> bool {
        self.0.is_some_and(|m| m.contains_key(metric))
    }

    /// How many series the run has.
    pub fn count(&self) -> usize {
        self.0.map_or(0, HashMap::len)
    }
}

/// The in-memory side of the index; lives under the store's writer lock.
#[derive(Debug)]
pub struct Index {
    runs: HashMap<String, OpenRun>,
    clock: u64,
    /// Whether evicting a run writes its partial blocks first (see
    /// [`Index::with_write_on_evict`]).
    write_on_evict: bool,
    /// Runs kept in memory at most (see [`Index::with_open_runs`]).
    open_runs: usize,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            runs: HashMap::new(),
            clock: 0,
            write_on_evict: true,
            open_runs: OPEN_RUNS,
        }
    }
}

impl Index {
    /// Keeps at most `n` runs' partial blocks in memory (default [`OPEN_RUNS`]).
    pub fn with_open_runs(mut self, n: usize) -> Self {
        self.open_runs = n.max(1);
        self
    }

    /// With `false`, evicting the least recently used run only drops it from memory
    /// instead of writing its partial blocks first (the default, `true`). For stores
    /// shared by several relays, where another relay may have written newer rows and
    /// only writes made under the run's row lock are safe.
    pub fn with_write_on_evict(mut self, write: bool) -> Self {
        self.write_on_evict = write;
        self
    }

    /// Makes sure the run's partial blocks are in memory, rebuilding what the disk
    /// lacks from the events after `series_runs.indexed_id`.
    pub fn load_run(&mut self, db: &mut dyn SeriesDb, run: &str) -> Result<(), StoreError> {
        self.clock += 1;
        if let Some(r) = self.runs.get_mut(run) {
            r.used = self.clock;
            return Ok(());
        }
        if self.runs.len() >= self.open_runs {
            self.evict(db)?;
        }
        let (indexed_id, step, batch_count) = db.marks(run)?.unwrap_or((0, 0, 0));
        let mut open = OpenRun {
            indexed_id,
            seen_id: indexed_id,
            used: self.clock,
            step,
            batch_count,
            ..Default::default()
        };
        // The newest block of each metric: partial ones continue in memory.
        for (metric, block, n, last_id, data) in db.newest_blocks(run)? {
            let b = if n >= BLOCK {
                OpenBlock {
                    block: block + 1,
                    last_id,
                    ..Default::default()
                }
            } else {
                OpenBlock {
                    block,
                    points: decode(&data),
                    last_id,
                    persisted: n,
                }
            };
            open.metrics.insert(metric, b);
        }
        self.runs.insert(run.to_string(), open);
        // Rebuild the tail: events after indexed_id whose points are not on disk yet.
        let mut state = RunState::new(run);
        state.step = step;
        state.batch_count = batch_count;
        let mut after = indexed_id;
        loop {
            let page = db.events_after(run, after, 10_000)?;
            let Some(last) = page.last().map(|p| p.0) else {
                break;
            };
            for (id, json) in &page {
                let Ok(e) = Event::from_json(json) else {
                    continue;
                };
                state.apply(&e);
                self.push_event(db, run, &e, &state, *id)?;
            }
            after = last;
        }
        if after > indexed_id {
            self.persist_run(db, run, after)?;
        }
        Ok(())
    }

    /// As [`Index::load_run`] for an index shared with other writers (relays on one
    /// database): a loaded run that has not seen exactly `last_id`, the run's newest
    /// stored event, is dropped first and rebuilt from the database.
    pub fn load_run_at(
        &mut self,
        db: &mut dyn SeriesDb,
        run: &str,
        last_id: u64,
    ) -> Result<(), StoreError> {
        if self.seen_id(run).is_some_and(|seen| seen != last_id) {
            self.forget(run);
        }
        self.load_run(db, run)
    }

    /// Adds the points of one stored event (already applied to `state`).
    pub fn push_event(
        &mut self,
        db: &mut dyn SeriesDb,
        run: &str,
        e: &Event,
        state: &RunState,
        id: u64,
    ) -> Result<(), StoreError> {
        let step = state.step_of(e) as f64;
        let time = e.timestamp().unwrap_or(0.0);
        let Some(open) = self.runs.get_mut(run) else {
            return Ok(());
        };
        open.seen_id = id;
        open.step = state.step;
        open.batch_count = state.batch_count;
        // Names borrowed from the event: a series' name is copied once, when it begins.
        let mut values: Vec<(&str, f64)> = Vec::new();
        metric_values(e, |m, v| values.push((m, v)));
        for (metric, value) in values {
            let b = match open.metrics.get_mut(metric) {
                Some(b) => b,
                None => open.metrics.entry(metric.to_string()).or_default(),
            };
            if id <= b.last_id {
                continue; // already on disk (rebuilding)
            }
            b.points.push(SeriesPoint { step, time, value });
            b.last_id = id;
            if b.points.len() >= BLOCK {
                write_block(db, run, metric, b)?;
                *b = OpenBlock {
                    block: b.block + 1,
                    last_id: id,
                    ..Default::default()
                };
            }
        }
        Ok(())
    }

    /// After a batch: writes the run's partial blocks when enough events have passed.
    pub fn finish_batch(
        &mut self,
        db: &mut dyn SeriesDb,
        run: &str,
        last_id: u64,
    ) -> Result<(), StoreError> {
        let due = self
            .runs
            .get(run)
            .is_some_and(|r| last_id >= r.indexed_id + PERSIST_EVERY);
        if due {
            self.persist_run(db, run, last_id)?;
        }
        Ok(())
    }

    fn persist_run(
        &mut self,
        db: &mut dyn SeriesDb,
        run: &str,
        last_id: u64,
    ) -> Result<(), StoreError> {
        let Some(open) = self.runs.get_mut(run) else {
            return Ok(());
        };
        for (metric, b) in &mut open.metrics {
            if b.points.len() > b.persisted {
                write_block(db, run, metric, b)?;
                b.persisted = b.points.len();
            }
        }
        open.indexed_id = last_id;
        db.set_marks(run, last_id, open.step, open.batch_count)
    }

    /// Writes out (unless [`Index::with_write_on_evict`] said not to) and forgets the
    /// least recently used run.
    fn evict(&mut self, db: &mut dyn SeriesDb) -> Result<(), StoreError> {
        let Some(run) = self
            .runs
            .iter()
            .min_by_key(|(_, r)| r.used)
            .map(|(k, _)| k.clone())
        else {
            return Ok(());
        };
        if self.write_on_evict {
            let last = self.runs.get(&run).map_or(0, |r| r.seen_id);
            self.persist_run(db, &run, last)?;
        }
        self.runs.remove(&run);
        Ok(())
    }

    /// Writes every loaded run's partial blocks (at shutdown).
    pub fn persist_all(&mut self, db: &mut dyn SeriesDb) -> Result<(), StoreError> {
        let runs: Vec<(String, u64)> = self
            .runs
            .iter()
            .map(|(k, r)| (k.clone(), r.seen_id))
            .collect();
        for (run, seen) in runs {
            self.persist_run(db, &run, seen)?;
        }
        Ok(())
    }

    /// Forgets a run (deleted).
    pub fn forget(&mut self, run: &str) {
        self.runs.remove(run);
    }

    /// The id of the newest event the loaded run's index has seen; `None` when the run
    /// is not loaded.
    pub fn seen_id(&self, run: &str) -> Option<u64> {
        self.runs.get(run).map(|r| r.seen_id)
    }

    /// The (loaded) run's metric names, looked up once for many questions.
    pub fn metrics_of(&self, run: &str) -> RunMetrics<'_> {
        RunMetrics(self.runs.get(run).map(|r| &r.metrics))
    }

    /// A copy of the metric's newest block, for a query.
    pub fn open_block(&self, run: &str, metric: &str) -> Option<OpenBlock> {
        self.runs.get(run)?.metrics.get(metric).cloned()
    }

    /// Every metric of a loaded run with its open block.
    pub fn open_blocks(&self, run: &str) -> Vec<(String, OpenBlock)> {
        self.runs
            .get(run)
            .map(|r| {
                r.metrics
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}
