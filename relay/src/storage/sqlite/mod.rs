//! SQLite storage, the embedded default: one file (`<data-dir>/stepwatch.db`, WAL
//! journal), one writer, a few pooled readers, a background checkpointer. What is
//! SQLite's own lives here and below: schema and migrations ([`schema`]), the batch
//! transaction the shared append recipe runs on (`batch`), the series index's SQL
//! ([`series`]), the event reads (`read`). The append itself is the shared recipe
//! (`storage::append`).

mod batch;
pub(crate) mod chunks;
mod jobs;
mod media;
mod read;
pub mod schema;
pub mod series;

use rusqlite::Connection;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use stepwatch_events::series::{SeriesInfo, SeriesPage};
use stepwatch_events::{Event, RunState, RunSummary};

use self::batch::LiteTx;
use self::schema::migrate;
pub use self::schema::SCHEMA_VERSION;
pub use self::series::Lite;
use crate::storage::append::{self, Batch, Begun};
use crate::storage::error::StoreError;
use crate::storage::series::{list, query, Index, SeriesQuery};
use crate::storage::types::{sort_runs, Committed, StoredEvent};
use crate::storage::Storage;

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
    index: Index,
    /// Per run, per sender: the highest `seq` stored. An event whose `seq` is not above
    /// its sender's is a retry and is not stored again (seq increases per src).
    sources: HashMap<String, HashMap<String, u64>>,
}

/// SQLite storage in `<data-dir>/stepwatch.db`.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    /// The job, agent and key rows' own connection.
    jobs: Mutex<Connection>,
    states: RwLock<HashMap<String, Arc<RunState>>>,
    total: std::sync::atomic::AtomicU64,
    /// Tells the checkpointer thread to stop (when the store is dropped).
    checkpointer_stop: Arc<std::sync::atomic::AtomicBool>,
    /// Most metric series one run may have.
    max_metrics: usize,
}

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
        // Ids are gapless from 1: a run holds `last_id` events.
        let total: u64 = states.values().map(|s| s.last_id).sum();
        let jobs = Connection::open(&path)?;
        jobs.busy_timeout(std::time::Duration::from_secs(5))?;
        jobs.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        spawn_checkpointer(path.clone(), checkpointer_stop.clone());
        Ok(SqliteStore {
            checkpointer_stop,
            max_metrics: usize::MAX,
            path,
            writer: Mutex::new(Writer {
                conn,
                index: Index::default(),
                sources,
            }),
            readers: Mutex::new(Vec::new()),
            jobs: Mutex::new(jobs),
            states: RwLock::new(states),
            total: std::sync::atomic::AtomicU64::new(total),
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

    /// The writer's connection, for writes that must queue behind ingest in this process
    /// (media) rather than race it in SQLite's busy handler.
    pub(crate) fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut w = self.writer.lock().map_err(|_| StoreError::poisoned())?;
        f(&mut w.conn)
    }

    /// The jobs connection, opened on first use.
    pub(crate) fn jobs_conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.jobs.lock().map_err(|_| StoreError::poisoned())
    }

    fn give_back(&self, c: Connection) {
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < 8 {
                pool.push(c);
            }
        }
    }
}

impl Storage for SqliteStore {
    fn jobs(&self) -> &dyn crate::storage::jobs::JobDb {
        self
    }

    fn media(&self) -> &dyn crate::storage::media::MediaDb {
        self
    }

    fn append(
        &self,
        run: &str,
        events: Vec<Event>,
        received: f64,
        on_commit: &dyn Fn(&Committed),
    ) -> Result<Committed, StoreError> {
        // The recipe's steps 1 and 2: the one writer lock, the run's state, a transaction.
        let mut w = self.writer.lock().map_err(|_| StoreError::poisoned())?;
        let state = self
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
        let begun = Begun {
            // IMMEDIATE: the write lock is taken (or waited for, under the busy timeout) at
            // BEGIN, so another connection's write (jobs) never makes it fail midway.
            tx: LiteTx(conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?),
            index,
            state,
            known: sources.get(run),
            stored_last_id: None,
        };
        let mut done = append::transact(
            begun,
            Batch {
                run,
                events,
                received,
                max_metrics: self.max_metrics,
            },
        )?;
        // Step 5: remember, then publish before the writer lock is released.
        if !done.advanced.is_empty() {
            sources
                .entry(run.to_string())
                .or_default()
                .extend(done.advanced.drain());
        }
        if self.wal_bytes() > WAL_TRUNCATE_BYTES {
            // Under the writer lock nobody writes: this finishes at once and resets the WAL.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::debug!(error = %e, "WAL truncation skipped");
            }
        }
        if !done.stored.is_empty() {
            self.states
                .write()
                .map_err(|_| StoreError::poisoned())?
                .insert(run.to_string(), done.state.clone());
            self.total.fetch_add(
                done.stored.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let committed = done.into_committed(run);
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
        self.read_after(run, after, limit, names)
    }

    fn events_desc(
        &self,
        run: &str,
        before: Option<u64>,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read_before(run, before, limit, names)
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
            // Media uploaded for a run whose events never came go too.
            w.conn.execute("DELETE FROM media WHERE run = ?1", [run])?;
            return Ok(None);
        }
        let Writer {
            conn,
            index,
            sources,
        } = &mut *w;
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM chunks WHERE run = ?1", [run])?;
        let n = self.state(run).map_or(0, |s| s.last_id);
        tx.execute("DELETE FROM sources WHERE run = ?1", [run])?;
        tx.execute("DELETE FROM runs WHERE run = ?1", [run])?;
        tx.execute("DELETE FROM series WHERE run = ?1", [run])?;
        tx.execute("DELETE FROM series_runs WHERE run = ?1", [run])?;
        tx.execute("DELETE FROM media WHERE run = ?1", [run])?;
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
        let page = query(&mut Lite(&conn), run, metric, open, last_id, q);
        self.give_back(conn);
        Ok(Some(page?))
    }

    fn series_list(&self, run: &str) -> Result<Option<Vec<SeriesInfo>>, StoreError> {
        let Some((open, _)) = self.open_series(run, |index| index.open_blocks(run))? else {
            return Ok(None);
        };
        let conn = self.reader()?;
        let list = list(&mut Lite(&conn), run, open);
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
        take: impl FnOnce(&Index) -> T,
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
    use rusqlite::params;

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
    fn a_schema_4_database_moves_its_event_rows_into_chunks_and_reads_the_same() {
        let dir = temp("chunks");
        let mut rows: Vec<(u64, String, String)> = Vec::new();
        {
            // What schema 4 wrote: one row per event.
            let conn = Connection::open(dir.join("stepwatch.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE runs (run TEXT PRIMARY KEY, last_id INTEGER NOT NULL,
                     state TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
                 CREATE TABLE events (run TEXT NOT NULL, id INTEGER NOT NULL, name TEXT NOT NULL,
                     src TEXT, seq INTEGER, data TEXT NOT NULL, PRIMARY KEY (run, id)) WITHOUT ROWID;
                 CREATE TABLE sources (run TEXT NOT NULL, src TEXT NOT NULL,
                     max_seq INTEGER NOT NULL, PRIMARY KEY (run, src)) WITHOUT ROWID;
                 PRAGMA user_version = 4;",
            )
            .unwrap();
            let mut state = RunState::new("r");
            for id in 1..=2345u64 {
                let json = match id % 9 {
                    0 => format!(r#"{{"event":"log","message":"m{id}","src":"a","seq":{id}}}"#),
                    4 => format!(r#"{{"event":"epoch_end","epoch":{id},"src":"a","seq":{id}}}"#),
                    _ => format!(r#"{{"event":"batch_end","loss":{id},"src":"a","seq":{id}}}"#),
                };
                let mut e = event(&json);
                e.id = Some(id);
                state.apply(&e);
                conn.execute(
                    "INSERT INTO events VALUES ('r', ?1, ?2, 'a', ?1, ?3)",
                    params![id as i64, e.name(), e.to_json()],
                )
                .unwrap();
                rows.push((id, e.name().to_string(), e.to_json()));
            }
            conn.execute(
                "INSERT INTO runs VALUES ('r', ?1, ?2, 0, 0)",
                params![state.last_id as i64, serde_json::to_string(&state).unwrap()],
            )
            .unwrap();
            conn.execute("INSERT INTO sources VALUES ('r', 'a', 2345)", [])
                .unwrap();
        }
        let store = SqliteStore::open(&dir, SyncLevel::Normal).unwrap();
        assert_eq!(store.event_total(), 2345);
        let triple = |e: StoredEvent| (e.id, e.name.to_string(), e.json);
        let all: Vec<_> = store
            .events("r", 0, 100_000, None)
            .unwrap()
            .into_iter()
            .map(triple)
            .collect();
        assert_eq!(all, rows);
        let names = ["log".to_string(), "epoch_end".to_string()];
        let page: Vec<_> = store
            .events_desc("r", Some(2000), 50, Some(&names))
            .unwrap()
            .into_iter()
            .map(triple)
            .collect();
        let want: Vec<_> = rows
            .iter()
            .rev()
            .filter(|r| r.0 < 2000 && names.contains(&r.1))
            .take(50)
            .cloned()
            .collect();
        assert_eq!(page, want);
        // Dedup goes on from the old senders; new ids follow the old ones.
        let retry: Vec<Event> = (2344..=2346)
            .map(|seq| event(&format!(r#"{{"event":"batch_end","src":"a","seq":{seq}}}"#)))
            .collect();
        let c = store.append("r", retry, 1.0, &|_| {}).unwrap();
        assert_eq!((c.accepted, c.duplicates, c.last_id), (1, 2, 2346));
        drop(store);
        let conn = Connection::open(dir.join("stepwatch.db")).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "the events table is gone");
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
