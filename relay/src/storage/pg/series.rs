//! The series index's SQL on PostgreSQL ([`PgSeries`]).

use postgres::{GenericClient, Statement};
use std::collections::HashMap;

use super::pool::prepared;
use crate::storage::error::StoreError;
use crate::storage::series::{BlockRow, SeriesDb};

/// The series index's SQL on a PostgreSQL connection or transaction.
pub(super) struct PgSeries<'a, C: GenericClient> {
    pub(super) db: &'a mut C,
    pub(super) cache: &'a mut HashMap<&'static str, Statement>,
}

impl<C: GenericClient> PgSeries<'_, C> {
    fn query(
        &mut self,
        sql: &'static str,
        args: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, StoreError> {
        let s = prepared(self.cache, self.db, sql)?;
        Ok(self.db.query(&s, args)?)
    }

    fn execute(
        &mut self,
        sql: &'static str,
        args: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<(), StoreError> {
        let s = prepared(self.cache, self.db, sql)?;
        self.db.execute(&s, args)?;
        Ok(())
    }
}

impl<C: GenericClient> SeriesDb for PgSeries<'_, C> {
    fn marks(&mut self, run: &str) -> Result<Option<(u64, u64, u64)>, StoreError> {
        let rows = self.query(
            "SELECT indexed_id, step, batch_count FROM series_runs WHERE run = $1",
            &[&run],
        )?;
        Ok(rows.first().map(|r| {
            (
                r.get::<_, i64>(0) as u64,
                r.get::<_, i64>(1) as u64,
                r.get::<_, i64>(2) as u64,
            )
        }))
    }

    fn set_marks(
        &mut self,
        run: &str,
        indexed_id: u64,
        step: u64,
        batch_count: u64,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO series_runs (run, indexed_id, step, batch_count) VALUES ($1, $2, $3, $4)
             ON CONFLICT (run) DO UPDATE SET indexed_id = $2, step = $3, batch_count = $4",
            &[
                &run,
                &(indexed_id as i64),
                &(step as i64),
                &(batch_count as i64),
            ],
        )
    }

    fn newest_blocks(
        &mut self,
        run: &str,
    ) -> Result<Vec<(String, i64, usize, u64, Vec<u8>)>, StoreError> {
        let rows = self.query(
            "SELECT DISTINCT ON (metric) metric, block, n, last_id, data FROM series
             WHERE run = $1 ORDER BY metric, block DESC",
            &[&run],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    r.get::<_, i64>(2) as usize,
                    r.get::<_, i64>(3) as u64,
                    r.get(4),
                )
            })
            .collect())
    }

    fn write_block(
        &mut self,
        run: &str,
        metric: &str,
        row: &BlockRow<'_>,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO series (run, metric, block, n, step_lo, step_hi, last_id, summary, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (run, metric, block) DO UPDATE SET n = $4, step_lo = $5, step_hi = $6,
                 last_id = $7, summary = $8, data = $9",
            &[
                &run,
                &metric,
                &row.block,
                &row.n,
                &row.step_lo,
                &row.step_hi,
                &row.last_id,
                &row.summary,
                &row.data,
            ],
        )
    }

    fn events_after(
        &mut self,
        run: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let mut db = super::chunks::PgChunks {
            db: &mut *self.db,
            cache: &mut *self.cache,
        };
        let events = crate::storage::chunks::read_after(&mut db, run, after, limit, None)?;
        Ok(events.into_iter().map(|e| (e.id, e.json)).collect())
    }

    fn headers(
        &mut self,
        run: &str,
        metric: &str,
        below: i64,
    ) -> Result<Vec<(i64, u64, f64, f64, Vec<u8>)>, StoreError> {
        let rows = self.query(
            "SELECT block, n, step_lo, step_hi, summary FROM series
             WHERE run = $1 AND metric = $2 AND block < $3 ORDER BY block",
            &[&run, &metric, &below],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get::<_, i64>(1) as u64,
                    r.get(2),
                    r.get(3),
                    r.get(4),
                )
            })
            .collect())
    }

    fn block_data(&mut self, run: &str, metric: &str, block: i64) -> Result<Vec<u8>, StoreError> {
        let rows = self.query(
            "SELECT data FROM series WHERE run = $1 AND metric = $2 AND block = $3",
            &[&run, &metric, &block],
        )?;
        rows.first().map(|r| r.get(0)).ok_or_else(|| {
            StoreError::Corrupt(format!("series block {block} of {run}/{metric} is missing"))
        })
    }

    fn sums(&mut self, run: &str) -> Result<Vec<(String, u64, f64, f64)>, StoreError> {
        let rows = self.query(
            "SELECT metric, SUM(n)::BIGINT, MIN(step_lo), MAX(step_hi) FROM series
             WHERE run = $1 GROUP BY metric",
            &[&run],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get(2), r.get(3)))
            .collect())
    }
}
