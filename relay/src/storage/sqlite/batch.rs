//! One batch's SQLite transaction, as the shared append recipe drives it
//! ([`crate::storage::append::BatchTx`]).

use rusqlite::{params, Transaction};
use std::collections::HashMap;
use std::sync::Arc;
use stepwatch_events::RunState;

use super::series::Lite;
use crate::storage::append::BatchTx;
use crate::storage::error::StoreError;
use crate::storage::types::StoredEvent;

/// The writer's transaction for one batch.
pub(super) struct LiteTx<'c>(pub Transaction<'c>);

impl BatchTx for LiteTx<'_> {
    type Db<'s>
        = Lite<'s>
    where
        Self: 's;

    fn series(&mut self) -> Lite<'_> {
        Lite(&self.0)
    }

    fn insert_events(
        &mut self,
        run: &str,
        stored: &[Arc<StoredEvent>],
        origin: &[(Option<String>, Option<i64>)],
    ) -> Result<(), StoreError> {
        insert_rows(&self.0, run, stored, origin)
    }

    fn upsert_sources(
        &mut self,
        run: &str,
        advanced: &HashMap<String, u64>,
    ) -> Result<(), StoreError> {
        let mut upsert = self.0.prepare_cached(
            "INSERT INTO sources (run, src, max_seq) VALUES (?1, ?2, ?3)
             ON CONFLICT(run, src) DO UPDATE SET max_seq = ?3",
        )?;
        for (src, seq) in advanced {
            upsert.execute(params![run, src, *seq as i64])?;
        }
        Ok(())
    }

    fn save_state(&mut self, run: &str, state: &RunState, received: f64) -> Result<(), StoreError> {
        let state_json = serde_json::to_string(state)
            .map_err(|e| StoreError::Corrupt(format!("state of {run}: {e}")))?;
        self.0.execute(
            "INSERT INTO runs (run, last_id, state, created, updated) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT(run) DO UPDATE SET last_id = ?2, state = ?3, updated = ?4",
            params![run, state.last_id as i64, state_json, received],
        )?;
        Ok(())
    }

    fn commit(self) -> Result<(), StoreError> {
        Ok(self.0.commit()?)
    }
}

/// Events per multi-row INSERT statement (fewer statements to run per batch).
const ROWS_PER_INSERT: usize = 64;

/// Inserts the stored events, `ROWS_PER_INSERT` rows per statement.
fn insert_rows(
    tx: &rusqlite::Transaction<'_>,
    run: &str,
    stored: &[Arc<StoredEvent>],
    origin: &[(Option<String>, Option<i64>)],
) -> Result<(), StoreError> {
    let ids: Vec<i64> = stored.iter().map(|e| e.id as i64).collect();
    for (start, chunk) in (0..stored.len())
        .step_by(ROWS_PER_INSERT)
        .map(|i| (i, &stored[i..(i + ROWS_PER_INSERT).min(stored.len())]))
    {
        let mut sql = String::from("INSERT INTO events (run, id, name, src, seq, data) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?,?,?,?,?,?)"
            } else {
                ",(?,?,?,?,?,?)"
            });
        }
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut args: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 6);
        for (k, e) in chunk.iter().enumerate() {
            let (src, seq) = &origin[start + k];
            args.push(&run);
            args.push(&ids[start + k]);
            args.push(&e.name);
            args.push(src);
            args.push(seq);
            args.push(&e.json);
        }
        stmt.execute(&*args)?;
    }
    Ok(())
}
