//! SQLite's chunk table ([`crate::storage::chunks`]): its schema, its SQL
//! ([`LiteChunks`]), and the migration of schema 4's one-row-per-event `events` table.

use rusqlite::{params, Connection};
use std::sync::Arc;

use crate::storage::chunks::{pack, ChunkDb, ChunkRow};
use crate::storage::error::StoreError;
use crate::storage::types::StoredEvent;

/// The chunk table. Rows are written once and only deleted with their run.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chunks (
    run      TEXT NOT NULL,
    name     TEXT NOT NULL,
    base     INTEGER NOT NULL,
    first_id INTEGER NOT NULL,
    last_id  INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    ids      BLOB NOT NULL,
    data     BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS chunks_by_id ON chunks (run, last_id, first_id);
CREATE INDEX IF NOT EXISTS chunks_by_name ON chunks (run, name, last_id, first_id);
";

const COLUMNS: &str = "name, base, first_id, last_id, n, ids, data";

/// Inserts a batch's chunks.
pub(super) fn insert(conn: &Connection, run: &str, chunks: &[ChunkRow]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO chunks (run, name, base, first_id, last_id, n, ids, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for c in chunks {
        stmt.execute(params![
            run,
            c.name,
            c.base as i64,
            c.first_id as i64,
            c.last_id as i64,
            c.n as i64,
            c.ids,
            c.data
        ])?;
    }
    Ok(())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChunkRow> {
    Ok(ChunkRow {
        name: r.get(0)?,
        base: r.get::<_, i64>(1)? as u64,
        first_id: r.get::<_, i64>(2)? as u64,
        last_id: r.get::<_, i64>(3)? as u64,
        n: r.get::<_, i64>(4)? as u64,
        ids: r.get(5)?,
        data: r.get(6)?,
    })
}

/// An id as SQLite's signed integer (ids never reach 2^63).
fn sql_id(id: u64) -> i64 {
    id.min(i64::MAX as u64) as i64
}

/// [`ChunkDb`] on a connection (a reader's, or the writer's inside its transaction).
pub struct LiteChunks<'a>(pub &'a Connection);

impl ChunkDb for LiteChunks<'_> {
    fn chunks_after(
        &mut self,
        run: &str,
        name: Option<&str>,
        after: u64,
        rows: usize,
    ) -> Result<Vec<ChunkRow>, StoreError> {
        let (after, rows) = (sql_id(after), rows as i64);
        let out = match name {
            None => self
                .0
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM chunks WHERE run = ?1 AND last_id > ?2
                     ORDER BY last_id LIMIT ?3"
                ))?
                .query_map(params![run, after, rows], row)?
                .collect::<rusqlite::Result<_>>()?,
            Some(name) => self
                .0
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM chunks WHERE run = ?1 AND name = ?4 AND last_id > ?2
                     ORDER BY last_id LIMIT ?3"
                ))?
                .query_map(params![run, after, rows, name], row)?
                .collect::<rusqlite::Result<_>>()?,
        };
        Ok(out)
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
        let out = match name {
            None => self
                .0
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM chunks WHERE run = ?1 AND last_id < ?3 AND first_id < ?2
                     ORDER BY last_id DESC LIMIT ?4"
                ))?
                .query_map(params![run, before, below, rows], row)?
                .collect::<rusqlite::Result<_>>()?,
            Some(name) => self
                .0
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM chunks
                     WHERE run = ?1 AND name = ?5 AND last_id < ?3 AND first_id < ?2
                     ORDER BY last_id DESC LIMIT ?4"
                ))?
                .query_map(params![run, before, below, rows, name], row)?
                .collect::<rusqlite::Result<_>>()?,
        };
        Ok(out)
    }
}

/// Events per chunked batch when schema 4's rows are migrated.
const MIGRATE_BATCH: i64 = 1000;

/// Schema 4 → 5, inside the migration's transaction: every row of `events` moves into
/// chunks (each run's rows in id order, 1,000 to a batch), then the table goes.
pub(super) fn migrate_events(conn: &Connection) -> Result<u64, StoreError> {
    let runs: Vec<String> = conn
        .prepare("SELECT DISTINCT run FROM events")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut moved = 0u64;
    let mut page = conn.prepare(
        "SELECT id, name, data FROM events WHERE run = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    )?;
    for run in &runs {
        let mut after = 0i64;
        loop {
            let rows: Vec<Arc<StoredEvent>> = page
                .query_map(params![run, after, MIGRATE_BATCH], |r| {
                    Ok(Arc::new(StoredEvent {
                        id: r.get::<_, i64>(0)? as u64,
                        name: Arc::from(r.get::<_, String>(1)?),
                        json: r.get(2)?,
                    }))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let Some(last) = rows.last().map(|e| e.id as i64) else {
                break;
            };
            insert(conn, run, &pack(&rows))?;
            moved += rows.len() as u64;
            after = last;
        }
    }
    drop(page);
    conn.execute_batch("DROP TABLE events")?;
    Ok(moved)
}
