//! Durable storage of runs and events.
//!
//! [`Storage`] is what the HTTP layer sees; [`SqliteStore`] is the embedded default
//! (one file, WAL journal). Invariants:
//! - per run, ids are 1, 2, 3 … with no gaps, assigned under one writer lock;
//! - a batch is stored whole or not at all (one transaction);
//! - `seq` increases per `src`: an event whose `seq` is not above the highest stored for
//!   its `(run, src)` is a retry, counted as a duplicate and not stored again (the highest
//!   seq per sender is kept in memory and in `sources`, written in the same transaction);
//! - `on_commit` runs after the commit and before the writer lock is released, so
//!   subscribers see batches in id order.

use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use stepwatch_events::series::{SeriesInfo, SeriesPage};
use stepwatch_events::{Event, RunState, RunSummary};

use crate::series::{self, Lite, SeriesQuery};

/// An event as stored: its id, its name and its wire JSON (with `id` and `received`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: u64,
    pub name: String,
    pub json: String,
}

/// What one committed batch produced.
#[derive(Debug)]
pub struct Committed {
    pub run: String,
    pub accepted: usize,
    pub duplicates: usize,
    pub last_id: u64,
    pub events: Vec<Arc<StoredEvent>>,
    pub state: Arc<RunState>,
}

/// Storage failures, the same for every backend. The HTTP layer maps each variant to one
/// status: `Limit` is the client's to fix (4xx), `Full` and `Unavailable` are worth retrying
/// (503 with `Retry-After`), the rest are the relay's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage full (no space left on the relay's disk): nothing of this request was stored; retry once space is freed")]
    Full,
    /// Storage cannot take this request now (file not writable, database server down);
    /// the message says why, and that retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Incompatible(String),
    /// The request breaks a limit: the client must change it, not retry.
    #[error("{0}")]
    Limit(String),
    /// Any other failure inside the backend.
    #[error("storage error: {0}")]
    Backend(String),
}

impl StoreError {
    /// The storage file or directory cannot be written.
    pub fn unwritable(detail: impl std::fmt::Display) -> Self {
        StoreError::Unavailable(format!(
            "storage is not writable ({detail}): nothing of this request was stored; retry later"
        ))
    }

    /// The database server failed or is unreachable.
    pub fn database(detail: impl std::fmt::Display) -> Self {
        StoreError::Unavailable(format!(
            "database unavailable ({detail}): nothing of this request was stored; retry later"
        ))
    }

    /// A lock was poisoned by a panic in another request.
    pub fn poisoned() -> Self {
        StoreError::Backend("storage lock poisoned".into())
    }
}

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

/// The storage the relay runs on.
pub trait Storage: Send + Sync + 'static {
    /// Stores `events` for `run` in one transaction; calls `on_commit` once committed,
    /// before the next append can start.
    fn append(
        &self,
        run: &str,
        events: Vec<Event>,
        received: f64,
        on_commit: &dyn Fn(&Committed),
    ) -> Result<Committed, StoreError>;
    /// Events with id > `after`, oldest first, at most `limit`, optionally only these names.
    fn events(
        &self,
        run: &str,
        after: u64,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Events with id < `before` (any when `None`), newest first, at most `limit`,
    /// optionally only these names: paging back through history.
    fn events_desc(
        &self,
        run: &str,
        before: Option<u64>,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// The run's current state, if the run exists.
    fn state(&self, run: &str) -> Option<Arc<RunState>>;
    /// Every run's summary, newest first.
    fn runs(&self) -> Vec<RunSummary>;
    /// Total events stored.
    fn event_total(&self) -> u64;
    /// One metric of a run reduced for a chart (`None`: no such run).
    fn series(
        &self,
        run: &str,
        metric: &str,
        q: SeriesQuery,
    ) -> Result<Option<SeriesPage>, StoreError>;
    /// The run's metrics and their sizes (`None`: no such run).
    fn series_list(&self, run: &str) -> Result<Option<Vec<SeriesInfo>>, StoreError>;
    /// Deletes a run and everything stored for it; returns how many events went
    /// (`None`: no such run).
    fn delete_run(&self, run: &str) -> Result<Option<u64>, StoreError>;
    /// Bytes the storage takes on disk.
    fn stored_bytes(&self) -> u64;
    /// At shutdown: writes derived data still in memory and checkpoints the journal.
    /// Acknowledged events are already durable; this only makes the next start faster.
    fn flush(&self) -> Result<(), StoreError>;
    /// Whether requests can be served now (`GET /readyz`): the database answers.
    /// Embedded storage always can.
    fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// How hard SQLite syncs to disk on commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncLevel {
    /// WAL + synchronous=NORMAL: survives a crash of the relay (kill -9); the last
    /// commits may be lost on power loss or an OS crash.
    Normal,
    /// WAL + synchronous=FULL: survives power loss too, at a cost in ingest speed.
    Full,
}

struct Writer {
    conn: Connection,
    index: series::Index,
    /// Per run, per sender: the highest `seq` stored. An event whose `seq` is not above
    /// its sender's is a retry and is not stored again (seq increases per src).
    sources: HashMap<String, HashMap<String, u64>>,
}

/// SQLite storage in `<data-dir>/stepwatch.db`.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    states: RwLock<HashMap<String, Arc<RunState>>>,
    total: std::sync::atomic::AtomicU64,
    /// Tells the checkpointer thread to stop (when the store is dropped).
    checkpointer_stop: Arc<std::sync::atomic::AtomicBool>,
    /// Most metric series one run may have.
    max_metrics: usize,
}

/// Longest metric name.
pub const MAX_METRIC_NAME: usize = 256;

/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// WAL size beyond which the writer, between two batches, truncates the WAL (the
/// background checkpointer has already copied nearly all of it), so the file cannot grow
/// without bound under continuous ingest.
const WAL_TRUNCATE_BYTES: u64 = 64 * 1024 * 1024;

/// Copies the WAL back into the database from its own connection, so the writer does not
/// pay for it inside a commit (`wal_autocheckpoint` is off on the writer). PASSIVE
/// checkpoints never block anyone.
fn spawn_checkpointer(path: PathBuf, stop: Arc<std::sync::atomic::AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("stepwatch-checkpoint".into())
        .spawn(move || {
            let Ok(conn) = Connection::open(&path) else {
                return;
            };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "checkpoint skipped");
                }
            }
        });
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run     TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    state   TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    run  TEXT NOT NULL,
    id   INTEGER NOT NULL,
    name TEXT NOT NULL,
    src  TEXT,
    seq  INTEGER,
    data TEXT NOT NULL,
    PRIMARY KEY (run, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sources (
    run     TEXT NOT NULL,
    src     TEXT NOT NULL,
    max_seq INTEGER NOT NULL,
    PRIMARY KEY (run, src)
) WITHOUT ROWID;
";

/// The schema this binary writes. 1: events with a unique `(run, src, seq)` index;
/// 2: the highest `seq` per `(run, src)` in `sources` instead, plus the series index.
pub const SCHEMA_VERSION: i64 = 2;

/// Brings an older database up to [`SCHEMA_VERSION`]; refuses a newer one.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
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
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating when needed) the database in `dir`.
    pub fn open(dir: &Path, sync: SyncLevel) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Corrupt(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join("stepwatch.db");
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match sync {
                SyncLevel::Normal => "NORMAL",
                SyncLevel::Full => "FULL",
            },
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        migrate(&conn)?;
        let mut states = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT run, state FROM runs")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (run, json) = row?;
                let state: RunState = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("run {run}: {e}")))?;
                states.insert(run, Arc::new(state));
            }
        }
        let total: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
        let mut sources: HashMap<String, HashMap<String, u64>> = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT run, src, max_seq FROM sources")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?;
            for row in rows {
                let (run, src, seq) = row?;
                sources.entry(run).or_default().insert(src, seq);
            }
        }
        let checkpointer_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        spawn_checkpointer(path.clone(), checkpointer_stop.clone());
        Ok(SqliteStore {
            checkpointer_stop,
            max_metrics: usize::MAX,
            path,
            writer: Mutex::new(Writer {
                conn,
                index: series::Index::default(),
                sources,
            }),
            readers: Mutex::new(Vec::new()),
            states: RwLock::new(states),
            total: std::sync::atomic::AtomicU64::new(total as u64),
        })
    }

    /// Caps the metric series per run (a batch that would pass it is refused whole).
    pub fn with_max_metrics(mut self, n: usize) -> Self {
        self.max_metrics = n;
        self
    }

    fn wal_bytes(&self) -> u64 {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }

    fn reader(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self
            .readers
            .lock()
            .map_err(|_| StoreError::poisoned())?
            .pop()
        {
            return Ok(c);
        }
        let c = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(c)
    }

    fn give_back(&self, c: Connection) {
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < 8 {
                pool.push(c);
            }
        }
    }
}

/// The order of the runs list: newest started first, then by name.
pub(crate) fn sort_runs(runs: &mut [RunSummary]) {
    runs.sort_by(|a, b| {
        b.started_at
            .unwrap_or(0.0)
            .total_cmp(&a.started_at.unwrap_or(0.0))
            .then_with(|| a.run.cmp(&b.run))
    });
}

/// A batch folded into its run, ready to store.
pub(crate) struct Folded {
    pub stored: Vec<Arc<StoredEvent>>,
    /// Sender and seq of each stored event, for the row inserts.
    pub origin: Vec<(Option<String>, Option<i64>)>,
    /// Highest seq per sender after this batch; written to `sources` with the events.
    pub advanced: HashMap<String, u64>,
    pub duplicates: usize,
}

/// The heart of every backend's append, inside its transaction: skips each event whose
/// `seq` is not above its sender's highest (`known`, or earlier in this batch), gives
/// the others ids `last_id + 1 …`, stamps `received`, folds them into `state` and feeds
/// their metric values to the series `index`. On an error the run is dropped from the
/// index (the transaction rolls back; the index rebuilds from the database).
pub(crate) fn fold_batch(
    run: &str,
    events: Vec<Event>,
    received: f64,
    state: &mut RunState,
    known: Option<&HashMap<String, u64>>,
    index: &mut series::Index,
    db: &mut dyn series::SeriesDb,
) -> Result<Folded, StoreError> {
    let mut out = Folded {
        stored: Vec::with_capacity(events.len()),
        origin: Vec::with_capacity(events.len()),
        advanced: HashMap::new(),
        duplicates: 0,
    };
    for mut event in events {
        if let (Some(src), Some(seq)) = (&event.src, event.seq) {
            let high = out
                .advanced
                .get(src.as_str())
                .or_else(|| known.and_then(|k| k.get(src.as_str())))
                .copied();
            if high.is_some_and(|h| seq <= h) {
                out.duplicates += 1;
                continue;
            }
            out.advanced.insert(src.clone(), seq);
        }
        let id = state.last_id + 1;
        event.id = Some(id);
        event.received = Some(received);
        if event.time.is_none() {
            event.time = Some(received);
        }
        let json = event.to_json();
        state.apply(&event);
        if let Err(e) = index.push_event(db, run, &event, state, id) {
            index.forget(run);
            return Err(e);
        }
        out.origin
            .push((event.src.take(), event.seq.map(|s| s as i64)));
        out.stored.push(Arc::new(StoredEvent {
            id,
            name: event.name().to_string(),
            json,
        }));
    }
    Ok(out)
}

/// Events per multi-row INSERT statement (fewer statements to run per batch).
const ROWS_PER_INSERT: usize = 64;

/// Inserts the stored events, `ROWS_PER_INSERT` rows per statement.
fn insert_rows(
    tx: &rusqlite::Transaction<'_>,
    run: &str,
    stored: &[Arc<StoredEvent>],
    origin: &[(Option<String>, Option<i64>)],
) -> Result<(), StoreError> {
    let ids: Vec<i64> = stored.iter().map(|e| e.id as i64).collect();
    for (start, chunk) in (0..stored.len())
        .step_by(ROWS_PER_INSERT)
        .map(|i| (i, &stored[i..(i + ROWS_PER_INSERT).min(stored.len())]))
    {
        let mut sql = String::from("INSERT INTO events (run, id, name, src, seq, data) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?,?,?,?,?,?)"
            } else {
                ",(?,?,?,?,?,?)"
            });
        }
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut args: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 6);
        for (k, e) in chunk.iter().enumerate() {
            let (src, seq) = &origin[start + k];
            args.push(&run);
            args.push(&ids[start + k]);
            args.push(&e.name);
            args.push(src);
            args.push(seq);
            args.push(&e.json);
        }
        stmt.execute(&*args)?;
    }
    Ok(())
}

/// Metric names must be short and printable, and a run may not pass `max` series.
pub(crate) fn check_metrics(
    index: &series::Index,
    run: &str,
    events: &[Event],
    max: usize,
) -> Result<(), StoreError> {
    let mut fresh: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut bad: Option<String> = None;
    for e in events {
        stepwatch_events::series::metric_values(e, |name, _| {
            if bad.is_some() || index.has_metric(run, name) || fresh.contains(name) {
                return;
            }
            if name.is_empty() || name.len() > MAX_METRIC_NAME || name.chars().any(char::is_control)
            {
                bad = Some(format!(
                    "metric name {:?} is not allowed: 1 to {MAX_METRIC_NAME} printable characters",
                    name.chars().take(80).collect::<String>()
                ));
            } else {
                fresh.insert(name.to_string());
            }
        });
    }
    if let Some(why) = bad {
        return Err(StoreError::Limit(why));
    }
    let total = index.metric_count(run) + fresh.len();
    if total > max {
        return Err(StoreError::Limit(format!(
            "run {run:?} would have {total} metric series, over the limit of {max} (--max-metrics); new here: {}",
            fresh.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

impl Storage for SqliteStore {
    fn append(
        &self,
        run: &str,
        events: Vec<Event>,
        received: f64,
        on_commit: &dyn Fn(&Committed),
    ) -> Result<Committed, StoreError> {
        let mut w = self.writer.lock().map_err(|_| StoreError::poisoned())?;
        let mut state = self
            .states
            .read()
            .map_err(|_| StoreError::poisoned())?
            .get(run)
            .map(|s| (**s).clone())
            .unwrap_or_else(|| RunState::new(run));
        let Writer {
            conn,
            index,
            sources,
        } = &mut *w;
        let tx = conn.transaction()?;
        if let Err(e) = index.load_run(&mut Lite(&tx), run) {
            index.forget(run);
            return Err(e);
        }
        check_metrics(index, run, &events, self.max_metrics)?;
        let Folded {
            stored,
            origin,
            advanced,
            duplicates,
        } = fold_batch(
            run,
            events,
            received,
            &mut state,
            sources.get(run),
            index,
            &mut Lite(&tx),
        )?;
        insert_rows(&tx, run, &stored, &origin)?;
        if !advanced.is_empty() {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO sources (run, src, max_seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT(run, src) DO UPDATE SET max_seq = ?3",
            )?;
            for (src, seq) in &advanced {
                upsert.execute(params![run, src, *seq as i64])?;
            }
        }
        if !stored.is_empty() {
            let state_json = serde_json::to_string(&state)
                .map_err(|e| StoreError::Corrupt(format!("state of {run}: {e}")))?;
            tx.execute(
                "INSERT INTO runs (run, last_id, state, created, updated) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(run) DO UPDATE SET last_id = ?2, state = ?3, updated = ?4",
                params![run, state.last_id as i64, state_json, received],
            )?;
        }
        let finished = index
            .finish_batch(&mut Lite(&tx), run, state.last_id)
            .and_then(|()| Ok(tx.commit()?));
        if let Err(e) = finished {
            index.forget(run);
            return Err(e);
        }
        if !advanced.is_empty() {
            sources.entry(run.to_string()).or_default().extend(advanced);
        }
        if self.wal_bytes() > WAL_TRUNCATE_BYTES {
            // Under the writer lock nobody writes: this finishes at once and resets the WAL.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::debug!(error = %e, "WAL truncation skipped");
            }
        }
        let state = Arc::new(state);
        if !stored.is_empty() {
            self.states
                .write()
                .map_err(|_| StoreError::poisoned())?
                .insert(run.to_string(), state.clone());
            self.total
                .fetch_add(stored.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let committed = Committed {
            run: run.to_string(),
            accepted: stored.len(),
            duplicates,
            last_id: state.last_id,
            events: stored,
            state,
        };
        on_commit(&committed);
        drop(w);
        Ok(committed)
    }

    fn events(
        &self,
        run: &str,
        after: u64,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let conn = self.reader()?;
        let out = (|| {
            let map = |r: &rusqlite::Row| {
                Ok(StoredEvent {
                    id: r.get::<_, i64>(0)? as u64,
                    name: r.get(1)?,
                    json: r.get(2)?,
                })
            };
            let mut out = Vec::new();
            match names {
                None => {
                    let mut stmt = conn.prepare_cached(
                        "SELECT id, name, data FROM events WHERE run = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                    )?;
                    for row in stmt.query_map(params![run, after as i64, limit as i64], map)? {
                        out.push(row?);
                    }
                }
                Some(names) => {
                    let placeholders = vec!["?"; names.len()].join(",");
                    let sql = format!(
                        "SELECT id, name, data FROM events WHERE run = ? AND id > ? AND name IN ({placeholders}) ORDER BY id LIMIT ?"
                    );
                    let mut stmt = conn.prepare(&sql)?;
                    let mut args: Vec<rusqlite::types::Value> =
                        vec![run.to_string().into(), (after as i64).into()];
                    args.extend(names.iter().map(|n| n.clone().into()));
                    args.push((limit as i64).into());
                    for row in stmt.query_map(rusqlite::params_from_iter(args), map)? {
                        out.push(row?);
                    }
                }
            }
            Ok::<_, StoreError>(out)
        })();
        self.give_back(conn);
        out
    }

    fn events_desc(
        &self,
        run: &str,
        before: Option<u64>,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let conn = self.reader()?;
        let out = (|| {
            let filter = names.map_or(String::new(), |n| {
                format!(" AND name IN ({})", vec!["?"; n.len()].join(","))
            });
            let sql = format!(
                "SELECT id, name, data FROM events WHERE run = ? AND id < ?{filter} ORDER BY id DESC LIMIT ?"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut args: Vec<rusqlite::types::Value> = vec![
                run.to_string().into(),
                (before.unwrap_or(i64::MAX as u64).min(i64::MAX as u64) as i64).into(),
            ];
            args.extend(
                names
                    .iter()
                    .flat_map(|n| n.iter())
                    .map(|n| n.clone().into()),
            );
            args.push((limit as i64).into());
            let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
                Ok(StoredEvent {
                    id: r.get::<_, i64>(0)? as u64,
                    name: r.get(1)?,
                    json: r.get(2)?,
                })
            })?;
            Ok::<_, StoreError>(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })();
        self.give_back(conn);
        out
    }

    fn state(&self, run: &str) -> Option<Arc<RunState>> {
        self.states.read().ok()?.get(run).cloned()
    }

    fn runs(&self) -> Vec<RunSummary> {
        let mut out: Vec<RunSummary> = self
            .states
            .read()
            .map(|m| m.values().map(|s| s.summary()).collect())
            .unwrap_or_default();
        sort_runs(&mut out);
        out
    }

    fn event_total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn delete_run(&self, run: &str) -> Result<Option<u64>, StoreError> {
        let mut w = self.writer.lock().map_err(|_| StoreError::poisoned())?;
        if self.state(run).is_none() {
            return Ok(None);
        }
        let Writer {
            conn,
            index,
            sources,
        } = &mut *w;
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM events WHERE run = ?1", [run])? as u64;
        tx.execute("DELETE FROM sources WHERE run = ?1", [run])?;
        tx.execute("DELETE FROM runs WHERE run = ?1", [run])?;
        tx.execute("DELETE FROM series WHERE run = ?1", [run])?;
        tx.execute("DELETE FROM series_runs WHERE run = ?1", [run])?;
        tx.commit()?;
        index.forget(run);
        sources.remove(run);
        self.states
            .write()
            .map_err(|_| StoreError::poisoned())?
            .remove(run);
        self.total
            .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(n))
    }

    fn stored_bytes(&self) -> u64 {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                std::fs::metadata(p).ok().map(|m| m.len())
            })
            .sum()
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut w = self.writer.lock().map_err(|_| StoreError::poisoned())?;
        let Writer { conn, index, .. } = &mut *w;
        let tx = conn.transaction()?;
        index.persist_all(&mut Lite(&tx))?;
        tx.commit()?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn series(
        &self,
        run: &str,
        metric: &str,
        q: SeriesQuery,
    ) -> Result<Option<SeriesPage>, StoreError> {
        let Some((open, last_id)) = self.open_series(run, |index| index.open_block(run, metric))?
        else {
            return Ok(None);
        };
        let conn = self.reader()?;
        let page = series::query(&mut Lite(&conn), run, metric, open, last_id, q);
        self.give_back(conn);
        Ok(Some(page?))
    }

    fn series_list(&self, run: &str) -> Result<Option<Vec<SeriesInfo>>, StoreError> {
        let Some((open, _)) = self.open_series(run, |index| index.open_blocks(run))? else {
            return Ok(None);
        };
        let conn = self.reader()?;
        let list = series::list(&mut Lite(&conn), run, open);
        self.give_back(conn);
        Ok(Some(list?))
    }
}

impl SqliteStore {
    /// Under the writer lock: loads the run's series index and copies what `take`
    /// wants of it, with the id of the newest event it covers.
    fn open_series<T>(
        &self,
        run: &str,
        take: impl FnOnce(&series::Index) -> T,
    ) -> Result<Option<(T, u64)>, StoreError> {
        let mut w = self.writer.lock().map_err(|_| StoreError::poisoned())?;
        let Some(last_id) = self.state(run).map(|s| s.last_id) else {
            return Ok(None);
        };
        let Writer { conn, index, .. } = &mut *w;
        let tx = conn.transaction()?;
        let loaded = index
            .load_run(&mut Lite(&tx), run)
            .and_then(|()| Ok(tx.commit()?));
        if let Err(e) = loaded {
            index.forget(run);
            return Err(e);
        }
        Ok(Some((take(index), last_id)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sw-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn event(json: &str) -> Event {
        Event::from_json(json).unwrap()
    }

    #[test]
    fn a_schema_1_database_is_migrated_and_keeps_deduplicating() {
        let dir = temp("migrate");
        {
            // What the previous relay wrote: a unique (run, src, seq) index, no sources.
            let conn = Connection::open(dir.join("stepwatch.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE runs (run TEXT PRIMARY KEY, last_id INTEGER NOT NULL,
                     state TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
                 CREATE TABLE events (run TEXT NOT NULL, id INTEGER NOT NULL, name TEXT NOT NULL,
                     src TEXT, seq INTEGER, data TEXT NOT NULL, PRIMARY KEY (run, id)) WITHOUT ROWID;
                 CREATE UNIQUE INDEX events_src_seq ON events (run, src, seq)
                     WHERE src IS NOT NULL AND seq IS NOT NULL;",
            )
            .unwrap();
            let mut state = RunState::new("r");
            for seq in 1..=3u64 {
                let mut e = event(&format!(
                    r#"{{"event":"batch_end","loss":1,"src":"a","seq":{seq}}}"#
                ));
                e.id = Some(seq);
                state.apply(&e);
                conn.execute(
                    "INSERT INTO events VALUES ('r', ?1, 'batch_end', 'a', ?1, ?2)",
                    params![seq as i64, e.to_json()],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO runs VALUES ('r', 3, ?1, 0, 0)",
                [serde_json::to_string(&state).unwrap()],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&dir, SyncLevel::Normal).unwrap();
        let retry: Vec<Event> = (2..=5)
            .map(|seq| event(&format!(r#"{{"event":"batch_end","src":"a","seq":{seq}}}"#)))
            .collect();
        let c = store.append("r", retry, 1.0, &|_| {}).unwrap();
        assert_eq!((c.accepted, c.duplicates, c.last_id), (2, 2, 5));
        // The series index was built for the old run on first use.
        let page = store
            .series(
                "r",
                "loss",
                SeriesQuery {
                    points: 10,
                    from: None,
                    to: None,
                    exact_limit: u64::MAX,
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(page.total, 3);
        drop(store);
        let conn = Connection::open(dir.join("stepwatch.db")).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_database_from_a_newer_stepwatch_is_refused_with_a_clear_message() {
        let dir = temp("newer");
        Connection::open(dir.join("stepwatch.db"))
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteStore::open(&dir, SyncLevel::Normal).err().unwrap();
        assert!(err.to_string().contains("newer Stepwatch"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
