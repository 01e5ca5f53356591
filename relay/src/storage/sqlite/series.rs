//! The series index's SQL on SQLite ([`Lite`]) and its tables.

use crate::storage::error::StoreError;
use crate::storage::series::{BlockRow, SeriesDb};
use rusqlite::{params, Connection, OptionalExtension};

/// The series index's tables.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series (
    run     TEXT NOT NULL,
    metric  TEXT NOT NULL,
    block   INTEGER NOT NULL,
    n       INTEGER NOT NULL,
    step_lo REAL NOT NULL,
    step_hi REAL NOT NULL,
    last_id INTEGER NOT NULL,
    summary BLOB NOT NULL,
    data    BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS series_key ON series (run, metric, block);
CREATE TABLE IF NOT EXISTS series_runs (
    run         TEXT PRIMARY KEY,
    indexed_id  INTEGER NOT NULL,
    step        INTEGER NOT NULL,
    batch_count INTEGER NOT NULL
);
";

/// [`SeriesDb`] over a shared SQLite connection: SQLite needs only `&Connection`, and a
/// [`rusqlite::Transaction`] derefs to one (immutably), so `Lite(&tx)` runs the index
/// inside the store's transaction.
pub struct Lite<'a>(pub &'a Connection);

impl SeriesDb for Lite<'_> {
    fn marks(&mut self, run: &str) -> Result<Option<(u64, u64, u64)>, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT indexed_id, step, batch_count FROM series_runs WHERE run = ?1")?
            .query_row([run], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .optional()?)
    }

    fn set_marks(
        &mut self,
        run: &str,
        indexed_id: u64,
        step: u64,
        batch_count: u64,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO series_runs (run, indexed_id, step, batch_count) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(run) DO UPDATE SET indexed_id = ?2, step = ?3, batch_count = ?4",
            )?
            .execute(params![
                run,
                indexed_id as i64,
                step as i64,
                batch_count as i64
            ])?;
        Ok(())
    }

    fn newest_blocks(
        &mut self,
        run: &str,
    ) -> Result<Vec<(String, i64, usize, u64, Vec<u8>)>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT s.metric, s.block, s.n, s.last_id, s.data FROM series s
             JOIN (SELECT metric, MAX(block) AS b FROM series WHERE run = ?1 GROUP BY metric) m
               ON s.metric = m.metric AND s.block = m.b
             WHERE s.run = ?1",
        )?;
        let rows = stmt.query_map([run], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)? as usize,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn write_block(
        &mut self,
        run: &str,
        metric: &str,
        row: &BlockRow<'_>,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO series (run, metric, block, n, step_lo, step_hi, last_id, summary, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(run, metric, block) DO UPDATE SET n = ?4, step_lo = ?5, step_hi = ?6,
                     last_id = ?7, summary = ?8, data = ?9",
            )?
            .execute(params![
                run,
                metric,
                row.block,
                row.n,
                row.step_lo,
                row.step_hi,
                row.last_id,
                row.summary,
                row.data
            ])?;
        Ok(())
    }

    fn events_after(
        &mut self,
        run: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let events = crate::storage::chunks::read_after(
            &mut super::chunks::LiteChunks(self.0),
            run,
            after,
            limit,
            None,
        )?;
        Ok(events.into_iter().map(|e| (e.id, e.json)).collect())
    }

    fn headers(
        &mut self,
        run: &str,
        metric: &str,
        below: i64,
    ) -> Result<Vec<(i64, u64, f64, f64, Vec<u8>)>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT block, n, step_lo, step_hi, summary FROM series
             WHERE run = ?1 AND metric = ?2 AND block < ?3 ORDER BY block",
        )?;
        let rows = stmt.query_map(params![run, metric, below], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, f64>(2)?,
                r.get::<_, f64>(3)?,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn block_data(&mut self, run: &str, metric: &str, block: i64) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT data FROM series WHERE run = ?1 AND metric = ?2 AND block = ?3",
            )?
            .query_row(params![run, metric, block], |r| r.get::<_, Vec<u8>>(0))?)
    }

    fn sums(&mut self, run: &str) -> Result<Vec<(String, u64, f64, f64)>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT metric, SUM(n), MIN(step_lo), MAX(step_hi) FROM series WHERE run = ?1 GROUP BY metric",
        )?;
        let rows = stmt.query_map([run], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, f64>(2)?,
                r.get::<_, f64>(3)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::storage::series::{list, query, Index, SeriesQuery, OPEN_RUNS};
    use stepwatch_events::{Event, RunState};

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::storage::sqlite::schema::SCHEMA)
            .unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(crate::storage::sqlite::chunks::SCHEMA)
            .unwrap();
        conn
    }

    #[test]
    fn beyond_the_exact_limit_block_summaries_keep_every_extreme() {
        let conn = db();
        let mut conn = Lite(&conn);
        let mut index = Index::default();
        index.load_run(&mut conn, "r").unwrap();
        let mut state = RunState::new("r");
        let n = 100_000u64;
        for id in 1..=n {
            let loss = match id {
                31_337 => 1e6,
                77_000 => f64::NAN,
                88_888 => -5.0,
                _ => 1.0 / id as f64,
            };
            let e = Event::from_json(&format!(
                r#"{{"event":"batch_end","loss":{},"time":{id}}}"#,
                stepwatch_events::num::to_json(loss)
            ))
            .unwrap();
            state.apply(&e);
            index.push_event(&mut conn, "r", &e, &state, id).unwrap();
        }
        index.finish_batch(&mut conn, "r", n).unwrap();
        let open = index.open_block("r", "loss");
        let q = |exact_limit, from, to| SeriesQuery {
            points: 50,
            from,
            to,
            exact_limit,
        };
        let coarse = query(&mut conn, "r", "loss", open.clone(), n, q(0, None, None)).unwrap();
        let exact = query(
            &mut conn,
            "r",
            "loss",
            open.clone(),
            n,
            q(u64::MAX, None, None),
        )
        .unwrap();
        assert!(!coarse.exact && exact.exact);
        assert_eq!(exact.total, n);
        assert!(coarse.points.len() <= 50 * 4 + 8);
        for page in [&coarse, &exact] {
            let v: Vec<f64> = page.points.iter().map(|p| p.value).collect();
            assert!(v.contains(&1e6), "spike lost");
            assert!(v.contains(&-5.0), "dip lost");
            assert!(v.iter().any(|x| x.is_nan()), "NaN lost");
            assert_eq!(page.points[0].step, 1.0);
            assert_eq!(page.points.last().unwrap().step, n as f64);
            assert!(page.points.windows(2).all(|w| w[0].step <= w[1].step));
        }
        // A range cut through blocks: its edges are exact.
        let cut = query(
            &mut conn,
            "r",
            "loss",
            open,
            n,
            q(0, Some(1500.5), Some(90_000.0)),
        )
        .unwrap();
        assert_eq!(cut.points[0].step, 1501.0);
        assert_eq!(cut.points.last().unwrap().step, 90_000.0);
    }

    fn push(index: &mut Index, conn: &mut dyn SeriesDb, run: &str, id: u64) {
        let mut state = RunState::new(run);
        let e = Event::from_json(r#"{"event":"batch_end","loss":1.5,"time":1}"#).unwrap();
        state.apply(&e);
        index.push_event(conn, run, &e, &state, id).unwrap();
    }

    #[test]
    fn eviction_writes_partial_blocks_unless_told_not_to() {
        for write in [true, false] {
            let conn = db();
            let mut conn = Lite(&conn);
            let mut index = Index::default().with_write_on_evict(write);
            assert_eq!(index.seen_id("r0"), None);
            index.load_run(&mut conn, "r0").unwrap();
            push(&mut index, &mut conn, "r0", 7);
            assert_eq!(index.seen_id("r0"), Some(7));
            for i in 1..=OPEN_RUNS {
                index.load_run(&mut conn, &format!("r{i}")).unwrap();
            }
            assert_eq!(index.seen_id("r0"), None, "least recently used run evicted");
            let listed = list(&mut conn, "r0", Vec::new()).unwrap();
            assert_eq!(listed.len(), usize::from(write));
            assert_eq!(conn.marks("r0").unwrap().is_some(), write);
        }
    }
}
