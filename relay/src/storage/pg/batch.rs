//! PostgreSQL's side of an append: the run's row lock, the state and senders the batch
//! continues, and the batch transaction the shared append recipe runs on
//! ([`crate::storage::append::BatchTx`]); also the row-locked series reads.

use postgres::{Statement, Transaction};
use std::collections::HashMap;
use stepwatch_events::{Event, RunState};

use super::pool::{prepared, Conn};
use super::series::PgSeries;
use super::PgStore;
use crate::storage::append::{self, Batch, BatchTx, Begun};
use crate::storage::chunks::ChunkRow;
use crate::storage::error::StoreError;
use crate::storage::series::Index;
use crate::storage::types::Committed;

/// One batch's transaction on a pooled connection.
pub(super) struct PgTx<'c> {
    tx: Transaction<'c>,
    cache: &'c mut HashMap<&'static str, Statement>,
}

impl<'c> BatchTx for PgTx<'c> {
    type Db<'s>
        = PgSeries<'s, Transaction<'c>>
    where
        Self: 's;

    fn series(&mut self) -> PgSeries<'_, Transaction<'c>> {
        PgSeries {
            db: &mut self.tx,
            cache: self.cache,
        }
    }

    fn insert_chunks(&mut self, run: &str, chunks: &[ChunkRow]) -> Result<(), StoreError> {
        super::chunks::insert(&mut self.tx, self.cache, run, chunks)
    }

    fn upsert_sources(
        &mut self,
        run: &str,
        advanced: &HashMap<String, u64>,
    ) -> Result<(), StoreError> {
        let (src, seq): (Vec<&str>, Vec<i64>) = advanced
            .iter()
            .map(|(k, v)| (k.as_str(), *v as i64))
            .unzip();
        let s = prepared(
            self.cache,
            &mut self.tx,
            "INSERT INTO sources (run, src, max_seq)
             SELECT $1, * FROM UNNEST($2::TEXT[], $3::BIGINT[])
             ON CONFLICT (run, src) DO UPDATE SET max_seq = EXCLUDED.max_seq",
        )?;
        self.tx.execute(&s, &[&run, &src, &seq])?;
        Ok(())
    }

    fn save_state(&mut self, run: &str, state: &RunState, received: f64) -> Result<(), StoreError> {
        let state_json = serde_json::to_string(state)
            .map_err(|e| StoreError::Corrupt(format!("state of {run}: {e}")))?;
        let s = prepared(
            self.cache,
            &mut self.tx,
            "UPDATE runs SET last_id = $2, state = $3, updated = $4 WHERE run = $1",
        )?;
        self.tx
            .execute(&s, &[&run, &(state.last_id as i64), &state_json, &received])?;
        Ok(())
    }

    fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }
}

impl PgStore {
    /// [`crate::storage::Storage::append`] on a pooled connection: the recipe's steps 1
    /// and 2 (the run's row lock, the state and senders it continues), the shared
    /// transaction, then step 5 (remember, deliver to this relay's subscribers).
    pub(super) fn append_on(
        &self,
        conn: &mut Conn,
        run: &str,
        events: Vec<Event>,
        received: f64,
        on_commit: &dyn Fn(&Committed),
    ) -> Result<Committed, StoreError> {
        let Conn { client, cache } = conn;
        let mut tx = client.transaction()?;
        let (prev_id, stored_state, gen) = Self::lock_or_create(&mut tx, cache, run, received)?;
        // A run this relay knew under the same name but another incarnation goes first.
        self.forget_other_generation(run, gen);
        let state = self.state_before(run, gen, prev_id, &stored_state)?;
        let s = prepared(
            cache,
            &mut tx,
            "SELECT src, max_seq FROM sources WHERE run = $1",
        )?;
        let known: HashMap<String, u64> = tx
            .query(&s, &[&run])?
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect();
        let mut index = self
            .index_of(run)
            .lock()
            .map_err(|_| StoreError::poisoned())?;
        let begun = Begun {
            tx: PgTx { tx, cache },
            index: &mut index,
            state,
            known: Some(&known),
            stored_last_id: Some(prev_id),
        };
        let done = append::transact(
            begun,
            Batch {
                run,
                events,
                received,
                max_metrics: self.max_metrics,
            },
        )?;
        drop(index);
        if !done.stored.is_empty() {
            self.remember(run, gen, &done.state)?;
            // Delivery reads from the database only to fill in other relays' events;
            // a failure there must not turn a committed batch into an error.
            if let Err(e) = self.deliver(
                conn,
                run,
                done.state.last_id,
                &done.stored,
                &done.state,
                on_commit,
            ) {
                tracing::warn!(run, error = %e, "delivering a committed batch failed; the next poll catches up");
            }
            // The other relays hear of the commit after it. A NOTIFY holds PostgreSQL's
            // one notification lock from its transaction's commit until the end, WAL
            // flush included: sent inside every batch's transaction it made all the
            // relays' commits take turns on the disk. A notification lost here (a crash
            // between the two) loses nothing: the others' poll reads the table.
            if let Err(e) = Self::announce(conn, &format!("{} {run}", self.node)) {
                tracing::warn!(run, error = %e, "telling other relays of a commit failed; their poll catches up");
            }
        }
        Ok(done.into_committed(run))
    }

    /// Locks the run's row, creating it first when it is new (a concurrent creator on
    /// another relay makes the insert wait, then do nothing): `(last_id, state, gen)`.
    fn lock_or_create(
        tx: &mut Transaction<'_>,
        cache: &mut HashMap<&'static str, Statement>,
        run: &str,
        received: f64,
    ) -> Result<(u64, String, i64), StoreError> {
        if let Some(row) = Self::lock_run(tx, cache, run)? {
            return Ok(row);
        }
        let create = prepared(
            cache,
            tx,
            "INSERT INTO runs (run, last_id, state, created, updated)
             VALUES ($1, 0, '', $2, $2) ON CONFLICT (run) DO NOTHING",
        )?;
        tx.execute(&create, &[&run, &received])?;
        Self::lock_run(tx, cache, run)?
            .ok_or_else(|| StoreError::database(format!("run {run} vanished while locked")))
    }

    /// The run's state under its row lock: this relay's copy when it is of the locked
    /// row's generation and `last_id`, else the stored one.
    fn state_before(
        &self,
        run: &str,
        gen: i64,
        last_id: u64,
        stored: &str,
    ) -> Result<RunState, StoreError> {
        let cached = self
            .shared
            .states
            .read()
            .map_err(|_| StoreError::poisoned())?
            .get(run)
            .filter(|k| k.gen == gen && k.state.last_id == last_id)
            .map(|k| k.state.clone());
        Ok(match cached {
            Some(s) => (*s).clone(),
            None if stored.is_empty() => RunState::new(run),
            None => serde_json::from_str(stored)
                .map_err(|e| StoreError::Corrupt(format!("run {run}: {e}")))?,
        })
    }

    /// Locks the run's row for the transaction; `None` when the run does not exist.
    pub(super) fn lock_run(
        tx: &mut Transaction<'_>,
        cache: &mut HashMap<&'static str, Statement>,
        run: &str,
    ) -> Result<Option<(u64, String, i64)>, StoreError> {
        let s = prepared(
            cache,
            tx,
            "SELECT last_id, state, gen FROM runs WHERE run = $1 FOR UPDATE",
        )?;
        Ok(tx
            .query_opt(&s, &[&run])?
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2))))
    }

    /// `NOTIFY` of `payload` in a transaction of its own that does not wait for the
    /// disk (a notification is a hint, not data), one round trip: the notification
    /// lock is held for microseconds.
    ///
    /// The payload (a node's hex name and a run id) goes into the SQL text, so anything
    /// but those characters is refused.
    fn announce(conn: &mut Conn, payload: &str) -> Result<(), StoreError> {
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"._- ".contains(&b);
        if !payload.bytes().all(plain) {
            return Err(StoreError::database(format!(
                "notification payload {payload:?} has characters a run id cannot"
            )));
        }
        conn.client.batch_execute(&format!(
            "BEGIN; SET LOCAL synchronous_commit TO OFF; \
             SELECT pg_notify('stepwatch', '{payload}'); COMMIT"
        ))?;
        Ok(())
    }

    pub(super) fn notify(
        tx: &mut Transaction<'_>,
        cache: &mut HashMap<&'static str, Statement>,
        payload: &str,
    ) -> Result<(), StoreError> {
        let s = prepared(cache, tx, "SELECT pg_notify('stepwatch', $1)")?;
        tx.execute(&s, &[&payload])?;
        Ok(())
    }

    /// Under the row lock: copies what `take` wants of the run's current series index.
    pub(super) fn open_series<T>(
        &self,
        conn: &mut Conn,
        run: &str,
        take: impl FnOnce(&Index) -> T,
    ) -> Result<Option<(T, u64)>, StoreError> {
        let Conn { client, cache } = conn;
        let mut tx = client.transaction()?;
        let Some((last_id, state, gen)) = Self::lock_run(&mut tx, cache, run)? else {
            return Ok(None);
        };
        if state.is_empty() {
            return Ok(None);
        }
        self.forget_other_generation(run, gen);
        let mut index = self
            .index_of(run)
            .lock()
            .map_err(|_| StoreError::poisoned())?;
        if let Err(e) = index.load_run_at(&mut PgSeries { db: &mut tx, cache }, run, last_id) {
            index.forget(run);
            return Err(e);
        }
        let taken = take(&index);
        if let Err(e) = tx.commit() {
            // Rebuilding may have written blocks that just rolled back.
            index.forget(run);
            return Err(e.into());
        }
        Ok(Some((taken, last_id)))
    }
}
