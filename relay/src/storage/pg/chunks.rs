//! PostgreSQL's chunk table ([`crate::storage::chunks`]): its SQL ([`PgChunks`]), a
//! batch's insert, and the move of schema 5's one-row-per-event `events` table.

use postgres::{GenericClient, Statement};
use std::collections::HashMap;
use std::sync::Arc;

use super::pool::prepared;
use crate::storage::chunks::{pack, ChunkDb, ChunkRow};
use crate::storage::error::StoreError;
use crate::storage::types::StoredEvent;

/// Migration 6's table (the rows of `events` move in from Rust, [`migrate_events`]).
pub(super) const SCHEMA: &str = "CREATE TABLE chunks (
     run      TEXT NOT NULL,
     name     TEXT NOT NULL,
     base     BIGINT NOT NULL,
     first_id BIGINT NOT NULL,
     last_id  BIGINT NOT NULL,
     n        BIGINT NOT NULL,
     ids      BYTEA NOT NULL,
     data     BYTEA NOT NULL,
     PRIMARY KEY (run, last_id)
 );
 CREATE INDEX chunks_by_name ON chunks (run, name, last_id);";

/// Inserts a batch's chunks in one statement.
pub(super) fn insert(
    db: &mut impl GenericClient,
    cache: &mut HashMap<&'static str, Statement>,
    run: &str,
    chunks: &[ChunkRow],
) -> Result<(), StoreError> {
    let names: Vec<&str> = chunks.iter().map(|c| c.name.as_str()).collect();
    let id = |f: fn(&ChunkRow) -> u64| -> Vec<i64> { chunks.iter().map(|c| f(c) as i64).collect() };
    let (base, first, last, n) = (
        id(|c| c.base),
        id(|c| c.first_id),
        id(|c| c.last_id),
        id(|c| c.n),
    );
    let ids: Vec<&[u8]> = chunks.iter().map(|c| c.ids.as_slice()).collect();
    let data: Vec<&[u8]> = chunks.iter().map(|c| c.data.as_slice()).collect();
    let s = prepared(
        cache,
        db,
        "INSERT INTO chunks (run, name, base, first_id, last_id, n, ids, data)
         SELECT $1, * FROM UNNEST($2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[],
             $6::BIGINT[], $7::BYTEA[], $8::BYTEA[])",
    )?;
    db.execute(&s, &[&run, &names, &base, &first, &last, &n, &ids, &data])?;
    Ok(())
}

fn row(r: &postgres::Row) -> ChunkRow {
    ChunkRow {
        name: r.get(0),
        base: r.get::<_, i64>(1) as u64,
        first_id: r.get::<_, i64>(2) as u64,
        last_id: r.get::<_, i64>(3) as u64,
        n: r.get::<_, i64>(4) as u64,
        ids: r.get(5),
        data: r.get(6),
    }
}

/// An id as PostgreSQL's BIGINT (ids never reach 2^63).
fn sql_id(id: u64) -> i64 {
    id.min(i64::MAX as u64) as i64
}

/// [`ChunkDb`] on a PostgreSQL connection or transaction.
pub(super) struct PgChunks<'a, C: GenericClient> {
    pub(super) db: &'a mut C,
    pub(super) cache: &'a mut HashMap<&'static str, Statement>,
}

impl<C: GenericClient> PgChunks<'_, C> {
    fn query(
        &mut self,
        sql: &'static str,
        args: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<ChunkRow>, StoreError> {
        let s = prepared(self.cache, self.db, sql)?;
        Ok(self.db.query(&s, args)?.iter().map(row).collect())
    }
}

impl<C: GenericClient> ChunkDb for PgChunks<'_, C> {
    fn chunks_after(
        &mut self,
        run: &str,
        name: Option<&str>,
        after: u64,
        rows: usize,
    ) -> Result<Vec<ChunkRow>, StoreError> {
        let (after, rows) = (sql_id(after), rows as i64);
        match name {
            None => self.query(
                "SELECT name, base, first_id, last_id, n, ids, data FROM chunks
                 WHERE run = $1 AND last_id > $2 ORDER BY last_id LIMIT $3",
                &[&run, &after, &rows],
            ),
            Some(name) => self.query(
                "SELECT name, base, first_id, last_id, n, ids, data FROM chunks
                 WHERE run = $1 AND name = $4 AND last_id > $2 ORDER BY last_id LIMIT $3",
                &[&run, &after, &rows, &name],
            ),
        }
    }

    fn chunks_before(
        &mut self,
        run: &str,
        name: Option<&str>,
        before: u64,
        below: u64,
        rows: usize,
    ) -> Result<Vec<ChunkRow>, StoreError> {
        let (before, below, rows) = (sql_id(before), sql_id(below), rows as i64);
        match name {
            None => self.query(
                "SELECT name, base, first_id, last_id, n, ids, data FROM chunks
                 WHERE run = $1 AND last_id < $3 AND first_id < $2
                 ORDER BY last_id DESC LIMIT $4",
                &[&run, &before, &below, &rows],
            ),
            Some(name) => self.query(
                "SELECT name, base, first_id, last_id, n, ids, data FROM chunks
                 WHERE run = $1 AND name = $5 AND last_id < $3 AND first_id < $2
                 ORDER BY last_id DESC LIMIT $4",
                &[&run, &before, &below, &rows, &name],
            ),
        }
    }
}

/// Events per chunked batch when schema 5's rows are moved.
const MIGRATE_BATCH: i64 = 1000;

/// Schema 5 → 6, inside the migration's transaction: every row of `events` moves into
/// chunks (each run's rows in id order, 1,000 to a batch), then the table goes.
pub(super) fn migrate_events(tx: &mut postgres::Transaction<'_>) -> Result<u64, StoreError> {
    let runs: Vec<String> = tx
        .query("SELECT DISTINCT run FROM events", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let page = tx.prepare(
        "SELECT id, name, data FROM events WHERE run = $1 AND id > $2 ORDER BY id LIMIT $3",
    )?;
    let (mut moved, mut cache) = (0u64, HashMap::new());
    for run in &runs {
        let mut after = 0i64;
        loop {
            let rows: Vec<Arc<StoredEvent>> = tx
                .query(&page, &[run, &after, &MIGRATE_BATCH])?
                .iter()
                .map(|r| {
                    Arc::new(StoredEvent {
                        id: r.get::<_, i64>(0) as u64,
                        name: Arc::from(r.get::<_, String>(1)),
                        json: r.get(2),
                    })
                })
                .collect();
            let Some(last) = rows.last().map(|e| e.id as i64) else {
                break;
            };
            insert(tx, &mut cache, run, &pack(&rows))?;
            moved += rows.len() as u64;
            after = last;
        }
    }
    tx.batch_execute("DROP TABLE events")?;
    Ok(moved)
}
