//! `stepwatch migrate`: copies a SQLite data dir into a PostgreSQL database, unchanged
//! (ids, times, senders, states and the series index), in one transaction.

use anyhow::Context;
use postgres::Transaction;
use rusqlite::Connection;

use super::chunks::ChunkRow;
use super::pg::{redact, PgStore};
use super::sqlite::{SqliteStore, SyncLevel};

/// What [`copy_from_sqlite`] copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub runs: u64,
    pub events: u64,
    pub blocks: u64,
    /// Uploaded media items.
    pub media: u64,
}

/// A runs row: run, last_id, state, created, updated.
type RunRow = (String, i64, String, f64, f64);

/// A run's uploaded media, one row at a time (each is up to `--media-max-item`).
fn copy_media(lite: &Connection, tx: &mut Transaction<'_>, run: &str) -> anyhow::Result<u64> {
    let mut stmt = lite.prepare(
        "SELECT sha, mime, width, height, size, created, data FROM media WHERE run = ?1",
    )?;
    let mut rows = stmt.query([run])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let (sha, mime): (String, String) = (r.get(0)?, r.get(1)?);
        let (width, height, size): (i32, i32, i64) = (r.get(2)?, r.get(3)?, r.get(4)?);
        let (created, data): (f64, Vec<u8>) = (r.get(5)?, r.get(6)?);
        tx.execute(
            "INSERT INTO media (run, sha, mime, width, height, size, created, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[&run, &sha, &mime, &width, &height, &size, &created, &data],
        )?;
        n += 1;
    }
    Ok(n)
}

/// Chunk rows copied per statement.
const COPY_CHUNK: usize = 64;

/// `stepwatch migrate`: copies every run of the SQLite data dir `dir` (ids, times,
/// senders, states and the series index, unchanged) into the PostgreSQL database at
/// `url`, in one transaction: all of it or, on any error, nothing. Refuses when a run
/// of the same name is already in the target.
pub fn copy_from_sqlite(dir: &std::path::Path, url: &str) -> anyhow::Result<CopyReport> {
    let file = dir.join("stepwatch.db");
    anyhow::ensure!(
        file.is_file(),
        "no Stepwatch database at {}: give the data dir with --data-dir",
        file.display()
    );
    // Brings an older data dir up to the current schema first.
    drop(SqliteStore::open(dir, SyncLevel::Normal)?);
    let source =
        rusqlite::Connection::open_with_flags(&file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // One read transaction: every table is read as of one moment, even if a relay is
    // still writing the data dir (what it writes later is not copied).
    let lite = source.unchecked_transaction()?;
    let target = PgStore::open(url)?; // connects and creates or migrates the schema
    let mut client = target.client()?;
    let mut tx = client.transaction()?;
    let runs: Vec<RunRow> = lite
        .prepare("SELECT run, last_id, state, created, updated FROM runs ORDER BY run")?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let names: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    let clash: Vec<String> = tx
        .query(
            "SELECT run FROM runs WHERE run = ANY($1) ORDER BY run",
            &[&names],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    anyhow::ensure!(
        clash.is_empty(),
        "{} of the runs to copy already exist in {}: {}{}; nothing was copied",
        clash.len(),
        redact(url),
        clash.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
        if clash.len() > 5 { ", …" } else { "" }
    );
    let mut report = CopyReport::default();
    for run in &runs {
        copy_run(&lite, &mut tx, run, &mut report)?;
        report.media += copy_media(&lite, &mut tx, &run.0)?;
    }
    // Running relays pick the new runs up at once.
    tx.execute("SELECT pg_notify('stepwatch', 'migrate *')", &[])?;
    tx.commit()
        .with_context(|| format!("committing the copy into {}", redact(url)))?;
    Ok(report)
}

/// Copies one run: its row, events, senders and series index.
fn copy_run(
    lite: &Connection,
    tx: &mut Transaction<'_>,
    (run, last_id, state, created, updated): &RunRow,
    report: &mut CopyReport,
) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO runs (run, last_id, state, created, updated) VALUES ($1, $2, $3, $4, $5)",
        &[run, last_id, state, created, updated],
    )?;
    // The chunks as they are: the same bytes, the same ids.
    let mut stmt = lite.prepare(
        "SELECT name, base, first_id, last_id, n, ids, data FROM chunks
         WHERE run = ?1 AND last_id > ?2 ORDER BY last_id LIMIT ?3",
    )?;
    let mut after = 0i64;
    loop {
        let rows: Vec<ChunkRow> = stmt
            .query_map(rusqlite::params![run, after, COPY_CHUNK as i64], |r| {
                Ok(ChunkRow {
                    name: r.get(0)?,
                    base: r.get::<_, i64>(1)? as u64,
                    first_id: r.get::<_, i64>(2)? as u64,
                    last_id: r.get::<_, i64>(3)? as u64,
                    n: r.get::<_, i64>(4)? as u64,
                    ids: r.get(5)?,
                    data: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = rows.last().map(|c| c.last_id as i64) else {
            break;
        };
        report.events += rows.iter().map(|c| c.n).sum::<u64>();
        PgStore::insert_chunks(tx, run, &rows)?;
        after = last;
    }
    for row in lite
        .prepare("SELECT src, max_seq FROM sources WHERE run = ?1")?
        .query_map([run], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
    {
        let (src, seq) = row?;
        tx.execute(
            "INSERT INTO sources (run, src, max_seq) VALUES ($1, $2, $3)",
            &[run, &src, &seq],
        )?;
    }
    copy_series(lite, tx, run, report)?;
    report.runs += 1;
    Ok(())
}

/// Copies one run's series index: its blocks and marks.
fn copy_series(
    lite: &Connection,
    tx: &mut Transaction<'_>,
    run: &String,
    report: &mut CopyReport,
) -> anyhow::Result<()> {
    let mut blocks = lite.prepare(
        "SELECT metric, block, n, step_lo, step_hi, last_id, summary, data FROM series WHERE run = ?1",
    )?;
    let insert = tx.prepare(
        "INSERT INTO series (run, metric, block, n, step_lo, step_hi, last_id, summary, data)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )?;
    let rows = blocks.query_map([run], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, f64>(3)?,
            r.get::<_, f64>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, Vec<u8>>(6)?,
            r.get::<_, Vec<u8>>(7)?,
        ))
    })?;
    for row in rows {
        let (metric, block, n, lo, hi, last, summary, data) = row?;
        tx.execute(
            &insert,
            &[run, &metric, &block, &n, &lo, &hi, &last, &summary, &data],
        )?;
        report.blocks += 1;
    }
    let marks: Option<(i64, i64, i64)> = rusqlite::OptionalExtension::optional(lite.query_row(
        "SELECT indexed_id, step, batch_count FROM series_runs WHERE run = ?1",
        [run],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    ))?;
    if let Some((indexed, step, batches)) = marks {
        tx.execute(
            "INSERT INTO series_runs (run, indexed_id, step, batch_count) VALUES ($1, $2, $3, $4)",
            &[run, &indexed, &step, &batches],
        )?;
    }
    Ok(())
}
