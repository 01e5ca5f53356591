//! The metric series index: what makes a 10-million-step run open in milliseconds.
//!
//! Every metric value of every stored event (see
//! [`stepwatch_events::series::metric_values`]) is appended, per run and metric, to
//! blocks of [`BLOCK`] points `(step, time, value)`. A block row holds the raw points
//! and a summary (its first, lowest, highest, last and first non-finite point), so a
//! chart of the whole run reads one summary per block, and a zoomed chart reads the raw
//! points of the blocks it shows (exact M4 from the full data).
//!
//! The index is derived data: the events table stays the truth. Full blocks are written
//! in the same transaction as the events that fill them; the newest, partial block of
//! each metric lives in memory and is written when the run has gathered
//! [`PERSIST_EVERY`] events since it was last written. `series_runs.indexed_id` says up
//! to which event everything is on disk, so after a restart (or for a data dir from an
//! older relay) the tail is rebuilt from the events after it.
//!
//! The index logic is database-agnostic: every read and write goes through the
//! [`SeriesDb`] trait, which SQLite implements here ([`Lite`]) and PostgreSQL in the
//! `pg` module.

use crate::store::StoreError;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use stepwatch_events::downsample::m4_indices;
use stepwatch_events::series::{metric_values, SeriesInfo, SeriesPage, SeriesPoint};
use stepwatch_events::{Event, RunState};

/// Points per block.
pub const BLOCK: usize = 1024;
/// A run's partial blocks are written at least every this many events.
pub const PERSIST_EVERY: u64 = 10_000;
/// Up to this many raw points in the requested range, the answer is exact M4.
pub const EXACT_LIMIT: u64 = 1_000_000;
/// Runs whose partial blocks are kept in memory (least recently used leave).
pub const OPEN_RUNS: usize = 64;
/// Most buckets a client may ask for.
pub const MAX_POINTS: usize = 20_000;

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
        let mut stmt = self.0.prepare_cached(
            "SELECT id, data FROM events WHERE run = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![run, after as i64, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
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

/// The newest block of one metric, in memory.
#[derive(Debug, Clone, Default)]
pub struct OpenBlock {
    pub block: i64,
    pub points: Vec<SeriesPoint>,
    /// Id of the event of the newest point.
    pub last_id: u64,
    /// Points already written to the block row.
    persisted: usize,
}

#[derive(Debug, Default)]
struct OpenRun {
    metrics: HashMap<String, OpenBlock>,
    indexed_id: u64,
    used: u64,
    /// The newest event pushed, and the reducer's step counters just after it.
    seen_id: u64,
    step: u64,
    batch_count: u64,
}

/// The in-memory side of the index; lives under the store's writer lock.
#[derive(Debug)]
pub struct Index {
    runs: HashMap<String, OpenRun>,
    clock: u64,
    /// Whether evicting a run writes its partial blocks first (see
    /// [`Index::with_write_on_evict`]).
    write_on_evict: bool,
    /// Runs kept in memory at most (see [`Index::with_open_runs`]).
    open_runs: usize,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            runs: HashMap::new(),
            clock: 0,
            write_on_evict: true,
            open_runs: OPEN_RUNS,
        }
    }
}

fn encode(points: &[SeriesPoint]) -> Vec<u8> {
    let mut out = Vec::with_capacity(points.len() * 24);
    for p in points {
        out.extend_from_slice(&p.step.to_le_bytes());
        out.extend_from_slice(&p.time.to_le_bytes());
        out.extend_from_slice(&p.value.to_le_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> Vec<SeriesPoint> {
    bytes
        .chunks_exact(24)
        .map(|c| {
            let f = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&c[i * 8..i * 8 + 8]);
                f64::from_le_bytes(b)
            };
            SeriesPoint {
                step: f(0),
                time: f(1),
                value: f(2),
            }
        })
        .collect()
}

/// The block's first, lowest, highest and last point, and its first non-finite one.
fn summarize(points: &[SeriesPoint]) -> Vec<SeriesPoint> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Vec::new();
    };
    let finite = points.iter().filter(|p| p.value.is_finite());
    let lo = finite.clone().min_by(|a, b| a.value.total_cmp(&b.value));
    let hi = finite.max_by(|a, b| a.value.total_cmp(&b.value));
    let odd = points.iter().find(|p| !p.value.is_finite());
    let mut out = vec![*first];
    out.extend(lo.copied());
    out.extend(hi.copied());
    out.push(*last);
    out.extend(odd.copied());
    out
}

fn step_range(points: &[SeriesPoint]) -> (f64, f64) {
    points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.step), hi.max(p.step))
        })
}

fn write_block(
    db: &mut dyn SeriesDb,
    run: &str,
    metric: &str,
    b: &OpenBlock,
) -> Result<(), StoreError> {
    let (lo, hi) = step_range(&b.points);
    db.write_block(
        run,
        metric,
        &BlockRow {
            block: b.block,
            n: b.points.len() as i64,
            step_lo: lo,
            step_hi: hi,
            last_id: b.last_id as i64,
            summary: &encode(&summarize(&b.points)),
            data: &encode(&b.points),
        },
    )
}

impl Index {
    /// Keeps at most `n` runs' partial blocks in memory (default [`OPEN_RUNS`]).
    pub fn with_open_runs(mut self, n: usize) -> Self {
        self.open_runs = n.max(1);
        self
    }

    /// With `false`, evicting the least recently used run only drops it from memory
    /// instead of writing its partial blocks first (the default, `true`). For stores
    /// shared by several relays, where another relay may have written newer rows and
    /// only writes made under the run's row lock are safe.
    pub fn with_write_on_evict(mut self, write: bool) -> Self {
        self.write_on_evict = write;
        self
    }

    /// Makes sure the run's partial blocks are in memory, rebuilding what the disk
    /// lacks from the events after `series_runs.indexed_id`.
    pub fn load_run(&mut self, db: &mut dyn SeriesDb, run: &str) -> Result<(), StoreError> {
        self.clock += 1;
        if let Some(r) = self.runs.get_mut(run) {
            r.used = self.clock;
            return Ok(());
        }
        if self.runs.len() >= self.open_runs {
            self.evict(db)?;
        }
        let (indexed_id, step, batch_count) = db.marks(run)?.unwrap_or((0, 0, 0));
        let mut open = OpenRun {
            indexed_id,
            seen_id: indexed_id,
            used: self.clock,
            step,
            batch_count,
            ..Default::default()
        };
        // The newest block of each metric: partial ones continue in memory.
        for (metric, block, n, last_id, data) in db.newest_blocks(run)? {
            let b = if n >= BLOCK {
                OpenBlock {
                    block: block + 1,
                    last_id,
                    ..Default::default()
                }
            } else {
                OpenBlock {
                    block,
                    points: decode(&data),
                    last_id,
                    persisted: n,
                }
            };
            open.metrics.insert(metric, b);
        }
        self.runs.insert(run.to_string(), open);
        // Rebuild the tail: events after indexed_id whose points are not on disk yet.
        let mut state = RunState::new(run);
        state.step = step;
        state.batch_count = batch_count;
        let mut after = indexed_id;
        loop {
            let page = db.events_after(run, after, 10_000)?;
            let Some(last) = page.last().map(|p| p.0) else {
                break;
            };
            for (id, json) in &page {
                let Ok(e) = Event::from_json(json) else {
                    continue;
                };
                state.apply(&e);
                self.push_event(db, run, &e, &state, *id)?;
            }
            after = last;
        }
        if after > indexed_id {
            self.persist_run(db, run, after)?;
        }
        Ok(())
    }

    /// Adds the points of one stored event (already applied to `state`).
    pub fn push_event(
        &mut self,
        db: &mut dyn SeriesDb,
        run: &str,
        e: &Event,
        state: &RunState,
        id: u64,
    ) -> Result<(), StoreError> {
        let step = state.step_of(e) as f64;
        let time = e.timestamp().unwrap_or(0.0);
        let Some(open) = self.runs.get_mut(run) else {
            return Ok(());
        };
        open.seen_id = id;
        open.step = state.step;
        open.batch_count = state.batch_count;
        let mut values: Vec<(String, f64)> = Vec::new();
        metric_values(e, |m, v| values.push((m.to_string(), v)));
        for (metric, value) in values {
            let b = open.metrics.entry(metric.clone()).or_default();
            if id <= b.last_id {
                continue; // already on disk (rebuilding)
            }
            b.points.push(SeriesPoint { step, time, value });
            b.last_id = id;
            if b.points.len() >= BLOCK {
                write_block(db, run, &metric, b)?;
                *b = OpenBlock {
                    block: b.block + 1,
                    last_id: id,
                    ..Default::default()
                };
            }
        }
        Ok(())
    }

    /// After a batch: writes the run's partial blocks when enough events have passed.
    pub fn finish_batch(
        &mut self,
        db: &mut dyn SeriesDb,
        run: &str,
        last_id: u64,
    ) -> Result<(), StoreError> {
        let due = self
            .runs
            .get(run)
            .is_some_and(|r| last_id >= r.indexed_id + PERSIST_EVERY);
        if due {
            self.persist_run(db, run, last_id)?;
        }
        Ok(())
    }

    fn persist_run(
        &mut self,
        db: &mut dyn SeriesDb,
        run: &str,
        last_id: u64,
    ) -> Result<(), StoreError> {
        let Some(open) = self.runs.get_mut(run) else {
            return Ok(());
        };
        for (metric, b) in &mut open.metrics {
            if b.points.len() > b.persisted {
                write_block(db, run, metric, b)?;
                b.persisted = b.points.len();
            }
        }
        open.indexed_id = last_id;
        db.set_marks(run, last_id, open.step, open.batch_count)
    }

    /// Writes out (unless [`Index::with_write_on_evict`] said not to) and forgets the
    /// least recently used run.
    fn evict(&mut self, db: &mut dyn SeriesDb) -> Result<(), StoreError> {
        let Some(run) = self
            .runs
            .iter()
            .min_by_key(|(_, r)| r.used)
            .map(|(k, _)| k.clone())
        else {
            return Ok(());
        };
        if self.write_on_evict {
            let last = self.runs.get(&run).map_or(0, |r| r.seen_id);
            self.persist_run(db, &run, last)?;
        }
        self.runs.remove(&run);
        Ok(())
    }

    /// Writes every loaded run's partial blocks (at shutdown).
    pub fn persist_all(&mut self, db: &mut dyn SeriesDb) -> Result<(), StoreError> {
        let runs: Vec<(String, u64)> = self
            .runs
            .iter()
            .map(|(k, r)| (k.clone(), r.seen_id))
            .collect();
        for (run, seen) in runs {
            self.persist_run(db, &run, seen)?;
        }
        Ok(())
    }

    /// Forgets a run (deleted).
    pub fn forget(&mut self, run: &str) {
        self.runs.remove(run);
    }

    /// The id of the newest event the loaded run's index has seen; `None` when the run
    /// is not loaded.
    pub fn seen_id(&self, run: &str) -> Option<u64> {
        self.runs.get(run).map(|r| r.seen_id)
    }

    /// Whether the (loaded) run already has this metric.
    pub fn has_metric(&self, run: &str, metric: &str) -> bool {
        self.runs
            .get(run)
            .is_some_and(|r| r.metrics.contains_key(metric))
    }

    /// How many metrics the (loaded) run has.
    pub fn metric_count(&self, run: &str) -> usize {
        self.runs.get(run).map_or(0, |r| r.metrics.len())
    }

    /// A copy of the metric's newest block, for a query.
    pub fn open_block(&self, run: &str, metric: &str) -> Option<OpenBlock> {
        self.runs.get(run)?.metrics.get(metric).cloned()
    }

    /// Every metric of a loaded run with its open block.
    pub fn open_blocks(&self, run: &str) -> Vec<(String, OpenBlock)> {
        self.runs
            .get(run)
            .map(|r| {
                r.metrics
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One stored block's header, read without its points.
struct Header {
    block: i64,
    n: u64,
    lo: f64,
    hi: f64,
    summary: Vec<SeriesPoint>,
}

fn headers(
    db: &mut dyn SeriesDb,
    run: &str,
    metric: &str,
    below: i64,
) -> Result<Vec<Header>, StoreError> {
    Ok(db
        .headers(run, metric, below)?
        .into_iter()
        .map(|(block, n, lo, hi, summary)| Header {
            block,
            n,
            lo,
            hi,
            summary: decode(&summary),
        })
        .collect())
}

fn block_points(
    db: &mut dyn SeriesDb,
    run: &str,
    metric: &str,
    block: i64,
) -> Result<Vec<SeriesPoint>, StoreError> {
    Ok(decode(&db.block_data(run, metric, block)?))
}

/// What a series query asks for.
#[derive(Debug, Clone, Copy)]
pub struct SeriesQuery {
    /// Buckets (about the chart's width in pixels); at most 4 points each come back.
    pub points: usize,
    pub from: Option<f64>,
    pub to: Option<f64>,
    /// Raw points read at most before block summaries stand in ([`EXACT_LIMIT`]).
    pub exact_limit: u64,
}

/// Answers a series query from the stored blocks plus `open` (the in-memory newest
/// block, copied under the writer lock), consistent as of event `last_id`.
pub fn query(
    db: &mut dyn SeriesDb,
    run: &str,
    metric: &str,
    open: Option<OpenBlock>,
    last_id: u64,
    q: SeriesQuery,
) -> Result<SeriesPage, StoreError> {
    let open = open.unwrap_or_default();
    let from = q.from.unwrap_or(f64::NEG_INFINITY);
    let to = q.to.unwrap_or(f64::INFINITY);
    let buckets = q.points.clamp(1, MAX_POINTS);
    let inside = |p: &SeriesPoint| p.step >= from && p.step <= to;
    let blocks: Vec<Header> = headers(db, run, metric, open.block)?
        .into_iter()
        .filter(|h| h.hi >= from && h.lo <= to)
        .collect();
    let stored: u64 = blocks.iter().map(|h| h.n).sum();
    let open_points: Vec<SeriesPoint> = open.points.iter().copied().filter(inside).collect();
    let mut total = stored + open_points.len() as u64;
    let exact = stored + open_points.len() as u64 <= q.exact_limit;
    let mut points: Vec<SeriesPoint> = Vec::new();
    if exact {
        total = open_points.len() as u64;
        for h in &blocks {
            let raw: Vec<SeriesPoint> = block_points(db, run, metric, h.block)?
                .into_iter()
                .filter(inside)
                .collect();
            total += raw.len() as u64;
            points.extend(raw);
        }
    } else {
        // Whole blocks stand in by their summaries; the two edge blocks, cut by the
        // range, are read in full so the ends of the chart are exact.
        for (i, h) in blocks.iter().enumerate() {
            let edge = i == 0 || i + 1 == blocks.len();
            if edge && (h.lo < from || h.hi > to) {
                points.extend(
                    block_points(db, run, metric, h.block)?
                        .into_iter()
                        .filter(inside),
                );
            } else {
                points.extend(h.summary.iter().copied().filter(inside));
            }
        }
    }
    points.extend(open_points);
    points.sort_by(|a, b| a.step.total_cmp(&b.step));
    let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.step, p.value)).collect();
    let keep = m4_indices(&xy, buckets);
    Ok(SeriesPage {
        metric: metric.to_string(),
        total,
        exact,
        last_id,
        points: keep.into_iter().map(|i| points[i]).collect(),
    })
}

/// The run's metrics with their point counts and step ranges.
pub fn list(
    db: &mut dyn SeriesDb,
    run: &str,
    open: Vec<(String, OpenBlock)>,
) -> Result<Vec<SeriesInfo>, StoreError> {
    let mut out: HashMap<String, SeriesInfo> = HashMap::new();
    let open_blocks: HashMap<String, OpenBlock> = open.into_iter().collect();
    let mut add = |metric: &str, n: u64, lo: f64, hi: f64| {
        let e = out.entry(metric.to_string()).or_insert_with(|| SeriesInfo {
            metric: metric.to_string(),
            count: 0,
            first_step: None,
            last_step: None,
        });
        e.count += n;
        if n > 0 {
            e.first_step = Some(e.first_step.map_or(lo, |f| f.min(lo)));
            e.last_step = Some(e.last_step.map_or(hi, |l| l.max(hi)));
        }
    };
    // Sums per metric in the database; the newest block's row (when written) counts
    // through its newer copy in memory instead.
    for (metric, n, lo, hi) in db.sums(run)? {
        let written = open_blocks.get(&metric).map_or(0, |b| b.persisted as u64);
        add(&metric, n.saturating_sub(written), lo, hi);
    }
    for (metric, b) in &open_blocks {
        if !b.points.is_empty() {
            let (lo, hi) = step_range(&b.points);
            add(metric, b.points.len() as u64, lo, hi);
        }
    }
    let mut v: Vec<SeriesInfo> = out.into_values().collect();
    v.sort_by(|a, b| a.metric.cmp(&b.metric));
    Ok(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::store::SCHEMA).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
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
