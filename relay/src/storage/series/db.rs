//! The SQL the series index needs, as a trait each backend implements.

use crate::storage::error::StoreError;

/// One block row to write (insert or replace by (run, metric, block)).
pub struct BlockRow<'a> {
    pub block: i64,
    pub n: i64,
    pub step_lo: f64,
    pub step_hi: f64,
    pub last_id: i64,
    pub summary: &'a [u8],
    pub data: &'a [u8],
}

/// The SQL the series index needs, so it runs on SQLite and PostgreSQL alike.
pub trait SeriesDb {
    /// `series_runs` row of the run: (indexed_id, step, batch_count).
    fn marks(&mut self, run: &str) -> Result<Option<(u64, u64, u64)>, StoreError>;
    /// Upserts the run's `series_runs` row.
    fn set_marks(
        &mut self,
        run: &str,
        indexed_id: u64,
        step: u64,
        batch_count: u64,
    ) -> Result<(), StoreError>;
    /// The newest block of each metric of the run: (metric, block, n, last_id, data).
    #[allow(clippy::type_complexity)] // the row as the trait's contract spells it
    fn newest_blocks(
        &mut self,
        run: &str,
    ) -> Result<Vec<(String, i64, usize, u64, Vec<u8>)>, StoreError>;
    /// Inserts or replaces one block row.
    fn write_block(
        &mut self,
        run: &str,
        metric: &str,
        row: &BlockRow<'_>,
    ) -> Result<(), StoreError>;
    /// Stored events of the run with id > `after`, oldest first, at most `limit`: (id, json).
    fn events_after(
        &mut self,
        run: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError>;
    /// Headers of the metric's blocks below `below`, in block order: (block, n, step_lo, step_hi, summary).
    #[allow(clippy::type_complexity)] // the row as the trait's contract spells it
    fn headers(
        &mut self,
        run: &str,
        metric: &str,
        below: i64,
    ) -> Result<Vec<(i64, u64, f64, f64, Vec<u8>)>, StoreError>;
    /// The raw point bytes of one block.
    fn block_data(&mut self, run: &str, metric: &str, block: i64) -> Result<Vec<u8>, StoreError>;
    /// Per metric of the run: (metric, SUM(n), MIN(step_lo), MAX(step_hi)).
    fn sums(&mut self, run: &str) -> Result<Vec<(String, u64, f64, f64)>, StoreError>;
}
