//! The append recipe, written once for every backend.
//!
//! An append runs the same steps on SQLite and PostgreSQL; only the SQL differs, and a
//! backend supplies it through [`BatchTx`], the transaction of one batch:
//!
//! 1. the backend takes its writer lock for the run (SQLite: the store's one writer;
//!    PostgreSQL: the run's `runs` row, `FOR UPDATE`, then the index shard) and begins
//!    the transaction;
//! 2. it hands [`transact`] a [`Begun`]: the run's state before the batch (ids go on
//!    from its `last_id`, so they stay gapless), the senders' highest stored `seq` and
//!    the series index;
//! 3. [`transact`] loads the run's series index (dropping it first when it has not seen
//!    exactly the stored `last_id`: another relay wrote since), checks the metrics
//!    against the limits, folds the batch ([`fold_batch`]: `(src, seq)` dedup, ids,
//!    `RunState::apply`, series points), inserts the events, raises the senders'
//!    `seq`, saves the state, writes due series blocks, announces the commit to other
//!    relays (PostgreSQL) and commits;
//! 4. any failure on the way rolls the transaction back and makes the index forget the
//!    run (it may hold points, or have written rows, that rolled back), so the next
//!    writer rebuilds it from the database;
//! 5. once committed, the backend remembers the new state and publishes
//!    ([`Appended::into_committed`] → `on_commit`) before it releases the writer lock,
//!    so subscribers see each run's batches in id order. Only then is the batch
//!    acknowledged.
//!
//! Everything here is statically dispatched per backend; the only dynamic call per
//! event is the series index's, through [`SeriesDb`], as before.

use std::collections::HashMap;
use std::sync::Arc;
use stepwatch_events::{Event, RunState};

use super::error::StoreError;
use super::fold::{check_metrics, fold_batch, Folded};
use super::series::{Index, SeriesDb};
use super::types::{Committed, StoredEvent};

/// One batch's transaction, as a backend provides it. [`transact`] calls its methods in
/// the recipe's order; dropping it without [`BatchTx::commit`] rolls back.
pub(crate) trait BatchTx {
    /// The series index's SQL inside this transaction.
    type Db<'s>: SeriesDb
    where
        Self: 's;

    /// The series index's SQL on this transaction (cheap: a borrow).
    fn series(&mut self) -> Self::Db<'_>;

    /// Inserts the batch's new events; `origin` holds each one's sender and seq.
    fn insert_events(
        &mut self,
        run: &str,
        stored: &[Arc<StoredEvent>],
        origin: &[(Option<String>, Option<i64>)],
    ) -> Result<(), StoreError>;

    /// Stores each sender's new highest seq (`advanced` is not empty).
    fn upsert_sources(
        &mut self,
        run: &str,
        advanced: &HashMap<String, u64>,
    ) -> Result<(), StoreError>;

    /// Stores the run's state after the batch (with its `last_id`), at `received`.
    fn save_state(&mut self, run: &str, state: &RunState, received: f64) -> Result<(), StoreError>;

    /// Tells other relays sharing the database, inside the transaction, that the run
    /// changed (PostgreSQL's `NOTIFY`); nothing for a database of one relay.
    fn announce(&mut self, _run: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Commits the transaction.
    fn commit(self) -> Result<(), StoreError>;
}

/// What a backend's begin step hands the recipe, under its writer lock.
pub(crate) struct Begun<'a, T> {
    pub tx: T,
    /// The series index holding the run (the backend's, or its shard's).
    pub index: &'a mut Index,
    /// The run's state before this batch: ids continue from its `last_id`.
    pub state: RunState,
    /// The highest stored seq per sender of the run (`None`: no sender yet).
    pub known: Option<&'a HashMap<String, u64>>,
    /// The run's newest stored id when another relay may have written since this one
    /// last did: an index that has seen another id is rebuilt. `None` when this store
    /// is the only writer (its index is never behind).
    pub stored_last_id: Option<u64>,
}

/// The batch to append.
pub(crate) struct Batch<'a> {
    pub run: &'a str,
    pub events: Vec<Event>,
    pub received: f64,
    /// Most metric series the run may have.
    pub max_metrics: usize,
}

/// A committed batch, for the backend to remember and publish under its writer lock.
pub(crate) struct Appended {
    /// The run's state after the batch.
    pub state: Arc<RunState>,
    /// The events stored (duplicates left out), with their ids.
    pub stored: Vec<Arc<StoredEvent>>,
    /// Each sender's new highest seq, as committed.
    pub advanced: HashMap<String, u64>,
    pub duplicates: usize,
}

impl Appended {
    /// What the append answers and publishes.
    pub fn into_committed(self, run: &str) -> Committed {
        Committed {
            run: run.to_string(),
            accepted: self.stored.len(),
            duplicates: self.duplicates,
            last_id: self.state.last_id,
            events: self.stored,
            state: self.state,
        }
    }
}

/// Runs steps 3 and 4 of the recipe (see the module): the batch's whole transaction,
/// committed or rolled back with the run forgotten by the index.
pub(crate) fn transact<T: BatchTx>(
    begun: Begun<'_, T>,
    batch: Batch<'_>,
) -> Result<Appended, StoreError> {
    let Begun {
        mut tx,
        index,
        mut state,
        known,
        stored_last_id,
    } = begun;
    let run = batch.run;
    let folded = write(&mut tx, index, &mut state, known, stored_last_id, batch)
        .and_then(|folded| tx.commit().map(|()| folded));
    match folded {
        Ok(f) => Ok(Appended {
            state: Arc::new(state),
            stored: f.stored,
            advanced: f.advanced,
            duplicates: f.duplicates,
        }),
        Err(e) => {
            // Rolled back (the transaction is gone): rebuild from the database.
            index.forget(run);
            Err(e)
        }
    }
}

/// Everything the transaction writes, in order, before its commit.
fn write<T: BatchTx>(
    tx: &mut T,
    index: &mut Index,
    state: &mut RunState,
    known: Option<&HashMap<String, u64>>,
    stored_last_id: Option<u64>,
    batch: Batch<'_>,
) -> Result<Folded, StoreError> {
    let Batch {
        run,
        events,
        received,
        max_metrics,
    } = batch;
    match stored_last_id {
        Some(last) => index.load_run_at(&mut tx.series(), run, last)?,
        None => index.load_run(&mut tx.series(), run)?,
    }
    check_metrics(index, run, &events, max_metrics)?;
    let folded = fold_batch(run, events, received, state, known, index, &mut tx.series())?;
    if !folded.stored.is_empty() {
        tx.insert_events(run, &folded.stored, &folded.origin)?;
    }
    if !folded.advanced.is_empty() {
        tx.upsert_sources(run, &folded.advanced)?;
    }
    if !folded.stored.is_empty() {
        tx.save_state(run, state, received)?;
        index.finish_batch(&mut tx.series(), run, state.last_id)?;
        tx.announce(run)?;
    }
    Ok(folded)
}
