//! SQLite's media rows ([`MediaDb`]): the bytes in a BLOB column of a rowid table (large
//! rows belong in one), written through the ingest writer's connection and lock, so an
//! upload queues behind a batch in this process instead of racing it for SQLite's one
//! write lock; read on the jobs connection.

use super::SqliteStore;
use crate::clock::now;
use crate::storage::error::StoreError;
use crate::storage::media::{MediaDb, MediaRow, Put};
use rusqlite::{params, OptionalExtension};

/// The media table (schema 4).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS media (
    run     TEXT NOT NULL,
    sha     TEXT NOT NULL,
    mime    TEXT NOT NULL,
    width   INTEGER NOT NULL,
    height  INTEGER NOT NULL,
    size    INTEGER NOT NULL,
    created REAL NOT NULL,
    data    BLOB NOT NULL,
    UNIQUE (run, sha)
);
";

fn row(sha: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<MediaRow> {
    Ok(MediaRow {
        sha: sha.to_string(),
        mime: r.get(0)?,
        width: r.get(1)?,
        height: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
    })
}

fn put(
    conn: &mut rusqlite::Connection,
    run: &str,
    m: &MediaRow,
    bytes: &[u8],
    max_run: u64,
) -> Result<Put, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let held: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM media WHERE run = ?1 AND sha = ?2",
            params![run, m.sha],
            |r| r.get(0),
        )
        .optional()?;
    if held.is_some() {
        return Ok(Put::Held);
    }
    let used: i64 = tx.query_row(
        "SELECT COALESCE(SUM(size), 0) FROM media WHERE run = ?1",
        [run],
        |r| r.get(0),
    )?;
    if used as u64 + bytes.len() as u64 > max_run {
        return Ok(Put::RunFull { used: used as u64 });
    }
    tx.execute(
        "INSERT INTO media (run, sha, mime, width, height, size, created, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            run,
            m.sha,
            m.mime,
            m.width,
            m.height,
            bytes.len() as i64,
            now(),
            bytes
        ],
    )?;
    tx.commit()?;
    Ok(Put::Stored)
}

impl MediaDb for SqliteStore {
    fn put_media(
        &self,
        run: &str,
        m: &MediaRow,
        bytes: &[u8],
        max_run: u64,
    ) -> Result<Put, StoreError> {
        self.with_writer(|conn| put(conn, run, m, bytes, max_run))
    }

    fn media_row(&self, run: &str, sha: &str) -> Result<Option<MediaRow>, StoreError> {
        let conn = self.jobs_conn()?;
        Ok(conn
            .query_row(
                "SELECT mime, width, height, size FROM media WHERE run = ?1 AND sha = ?2",
                params![run, sha],
                |r| row(sha, r),
            )
            .optional()?)
    }

    fn media_bytes(&self, run: &str, sha: &str) -> Result<Option<(MediaRow, Vec<u8>)>, StoreError> {
        let conn = self.jobs_conn()?;
        Ok(conn
            .query_row(
                "SELECT mime, width, height, size, data FROM media WHERE run = ?1 AND sha = ?2",
                params![run, sha],
                |r| Ok((row(sha, r)?, r.get::<_, Vec<u8>>(4)?)),
            )
            .optional()?)
    }

    fn media_used(&self, run: &str) -> Result<(u64, u64), StoreError> {
        let conn = self.jobs_conn()?;
        let (bytes, n): (i64, i64) = conn.query_row(
            "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM media WHERE run = ?1",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((bytes as u64, n as u64))
    }
}
