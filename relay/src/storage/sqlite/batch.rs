//! One batch's SQLite transaction, as the shared append recipe drives it
//! ([`crate::storage::append::BatchTx`]).

use rusqlite::{params, Transaction};
use std::collections::HashMap;
use stepwatch_events::RunState;

use super::series::Lite;
use crate::storage::append::BatchTx;
use crate::storage::chunks::ChunkRow;
use crate::storage::error::StoreError;

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

    fn insert_chunks(&mut self, run: &str, chunks: &[ChunkRow]) -> Result<(), StoreError> {
        super::chunks::insert(&self.0, run, chunks)
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
