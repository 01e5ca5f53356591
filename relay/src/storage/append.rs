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
//!    `seq`, saves the state, writes due series blocks and commits;
//! 4. any failure on the way rolls the transaction back and makes the index forget the
//!    run (it may hold points, or have written rows, that rolled back), so the next
//!    writer rebuilds it from the database;
//! 5. once committed, the backend remembers the new state and publishes
//!    ([`Appended::into_committed`] → `on_commit`) before it releases the writer lock,
//!    so subscribers see each run's batches in id order. PostgreSQL then tells the other
//!    relays (`NOTIFY`, in a transaction of its own: see `pg::batch`). Only then is
//!    the batch acknowledged.
//!
//! Everything here is statically dispatched per backend; the only dynamic call per
//! event is the series index's, through [`SeriesDb`], as before.

use std::collections::HashMap;
use std::sync::Arc;
use stepwatch_events::{Event, RunState};

use super::chunks::{pack, ChunkRow};
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

    /// Inserts the batch's new events, packed into chunks ([`super::chunks`]).
    fn insert_chunks(&mut self, run: &str, chunks: &[ChunkRow]) -> Result<(), StoreError>;

    /// Stores each sender's new highest seq (`advanced` is not empty).
    fn upsert_sources(
        &mut self,
        run: &str,
        advanced: &HashMap<String, u64>,
    ) -> Result<(), StoreError>;

    /// Stores the run's state after the batch (with its `last_id`), at `received`.
    fn save_state(&mut self, run: &str, state: &RunState, received: f64) -> Result<(), StoreError>;

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
    pub parsed: Vec<super::types::Parsed>,
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
            parsed: Some(Arc::new(self.parsed)),
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
            parsed: f.parsed,
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
        tx.insert_chunks(run, &pack(&folded.stored))?;
    }
    if !folded.advanced.is_empty() {
        tx.upsert_sources(run, &folded.advanced)?;
    }
    if !folded.stored.is_empty() {
        tx.save_state(run, state, received)?;
        index.finish_batch(&mut tx.series(), run, state.last_id)?;
    }
    Ok(folded)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::storage::sqlite::series::Lite;
    use rusqlite::Connection;
    use std::cell::RefCell;

    /// A transaction whose writes go nowhere, failing at the step named.
    struct Failing<'c> {
        conn: &'c Connection,
        fail_at: &'static str,
        steps: &'c RefCell<Vec<&'static str>>,
    }

    impl Failing<'_> {
        fn step(&self, name: &'static str) -> Result<(), StoreError> {
            self.steps.borrow_mut().push(name);
            if self.fail_at == name {
                return Err(StoreError::Full);
            }
            Ok(())
        }
    }

    impl BatchTx for Failing<'_> {
        type Db<'s>
            = Lite<'s>
        where
            Self: 's;

        fn series(&mut self) -> Lite<'_> {
            Lite(self.conn)
        }

        fn insert_chunks(&mut self, _: &str, _: &[ChunkRow]) -> Result<(), StoreError> {
            self.step("insert")
        }

        fn upsert_sources(&mut self, _: &str, _: &HashMap<String, u64>) -> Result<(), StoreError> {
            self.step("sources")
        }

        fn save_state(&mut self, _: &str, _: &RunState, _: f64) -> Result<(), StoreError> {
            self.step("state")
        }

        fn commit(self) -> Result<(), StoreError> {
            self.step("commit")
        }
    }

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::storage::sqlite::schema::SCHEMA)
            .unwrap();
        conn.execute_batch(crate::storage::sqlite::series::SCHEMA)
            .unwrap();
        conn.execute_batch(crate::storage::sqlite::chunks::SCHEMA)
            .unwrap();
        conn
    }

    fn batch(run: &str, seqs: std::ops::Range<u64>) -> Batch<'_> {
        Batch {
            run,
            events: seqs
                .map(|seq| {
                    Event::from_json(&format!(
                        r#"{{"event":"batch_end","loss":1,"src":"a","seq":{seq}}}"#
                    ))
                    .unwrap()
                })
                .collect(),
            received: 1.0,
            max_metrics: usize::MAX,
        }
    }

    #[test]
    fn every_step_runs_in_order_and_any_failure_makes_the_index_forget_the_run() {
        let conn = db();
        let all = ["insert", "sources", "state", "commit"];
        for fail_at in all.iter().copied().chain(["none"]) {
            let steps = RefCell::new(Vec::new());
            let mut index = Index::default();
            let mut known = HashMap::new();
            known.insert("a".to_string(), 2);
            let tx = Failing {
                conn: &conn,
                fail_at,
                steps: &steps,
            };
            let mut state = RunState::new("r");
            state.last_id = 7;
            let begun = Begun {
                tx,
                index: &mut index,
                state,
                known: Some(&known),
                stored_last_id: None,
            };
            let out = transact(begun, batch("r", 1..5));
            let ran = all
                .iter()
                .position(|s| *s == fail_at)
                .map_or(all.len(), |i| i + 1);
            assert_eq!(*steps.borrow(), all[..ran], "{fail_at}");
            if fail_at == "none" {
                let done = out.unwrap();
                // seq 1 and 2 were stored before: ids go on from 7, gapless.
                assert_eq!(done.duplicates, 2);
                let ids: Vec<u64> = done.stored.iter().map(|e| e.id).collect();
                assert_eq!(ids, vec![8, 9]);
                assert_eq!(done.advanced.get("a"), Some(&4));
                assert_eq!(done.state.last_id, 9);
                assert_eq!(index.seen_id("r"), Some(9));
            } else {
                assert!(matches!(out, Err(StoreError::Full)), "{fail_at}");
                assert_eq!(index.seen_id("r"), None, "{fail_at}: index kept the run");
            }
        }
    }

    #[test]
    fn a_batch_of_duplicates_only_writes_nothing_but_commits() {
        let conn = db();
        let mut index = Index::default();
        let known: HashMap<String, u64> = [("a".to_string(), 9)].into();
        let steps = RefCell::new(Vec::new());
        let begun = Begun {
            tx: Failing {
                conn: &conn,
                fail_at: "insert",
                steps: &steps,
            },
            index: &mut index,
            state: RunState::new("r"),
            known: Some(&known),
            stored_last_id: None,
        };
        // Any write would fail ("insert" is refused); a commit alone succeeds.
        let done = transact(begun, batch("r", 1..5)).unwrap();
        assert_eq!((done.stored.len(), done.duplicates), (0, 4));
        assert_eq!(done.state.last_id, 0);
        assert_eq!(*steps.borrow(), ["commit"]);
    }
}
