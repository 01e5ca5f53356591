//! SQLite's schema, its versions (`PRAGMA user_version`) and migrations, and how
//! SQLite's errors map to [`StoreError`].

use rusqlite::Connection;

use super::series;
use crate::storage::error::StoreError;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DiskFull) => StoreError::Full,
            Some(C::ReadOnly | C::CannotOpen | C::PermissionDenied | C::SystemIoFailure) => {
                StoreError::unwritable(&e)
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// The runs and senders tables (the events are in `chunks`, [`super::chunks`]).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run     TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    state   TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
    run     TEXT NOT NULL,
    src     TEXT NOT NULL,
    max_seq INTEGER NOT NULL,
    PRIMARY KEY (run, src)
) WITHOUT ROWID;
";

/// The schema this binary writes. 1: events with a unique `(run, src, seq)` index;
/// 2: the highest `seq` per `(run, src)` in `sources` instead, plus the series index;
/// 3: launched jobs, their history, agents and the token key (new tables only);
/// 4: uploaded media (a new table only); 5: events in chunks, one row per batch and
/// event name, instead of a row each.
pub const SCHEMA_VERSION: i64 = 5;

/// Brings an older database up to [`SCHEMA_VERSION`]; refuses a newer one.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Incompatible(format!(
            "the database was written by a newer Stepwatch (schema {version}; this binary \
             knows up to {SCHEMA_VERSION}): upgrade stepwatch, or point --data-dir elsewhere"
        )));
    }
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(series::SCHEMA)?;
    tx.execute_batch(super::jobs::SCHEMA)?;
    tx.execute_batch(super::media::SCHEMA)?;
    tx.execute_batch(super::chunks::SCHEMA)?;
    let has_events: bool = tx.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'",
        [],
        |r| Ok(r.get::<_, i64>(0)? > 0),
    )?;
    let old_index: bool = tx
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'events_src_seq'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    if old_index {
        // Schema 1 → 2: keep each sender's highest seq, drop the per-event index.
        tx.execute_batch(
            "INSERT OR REPLACE INTO sources (run, src, max_seq)
                 SELECT run, src, MAX(seq) FROM events
                 WHERE src IS NOT NULL AND seq IS NOT NULL GROUP BY run, src;
             DROP INDEX events_src_seq;",
        )?;
        tracing::info!("database migrated to schema 2");
    }
    if has_events {
        // Schema ≤ 4 → 5: the rows move into chunks, in this one transaction.
        let started = std::time::Instant::now();
        let moved = super::chunks::migrate_events(&tx)?;
        tracing::info!(
            events = moved,
            seconds = started.elapsed().as_secs_f64(),
            "events moved into chunks (schema 5)"
        );
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}
