//! PostgreSQL storage: several relays sharing one history.
//!
//! [`PgStore`] implements [`Storage`] on a PostgreSQL database that any number of relays
//! may share. Invariants, across relays:
//! - per run, ids are 1, 2, 3 … with no gaps: an append locks the run's `runs` row
//!   (`SELECT … FOR UPDATE`) for its transaction, so writers of one run take turns
//!   whichever relay they are on;
//! - `(src, seq)` deduplication reads the senders' highest seq under that same lock;
//! - a batch is stored whole or not at all (one transaction), and acknowledged only
//!   once committed (`synchronous_commit` as the server is configured);
//! - each commit is followed by `NOTIFY stepwatch` with the run. Every relay
//!   listens and delivers what other relays stored to its own subscribers by reading
//!   the events table after the newest id it has delivered for that run, so a lost
//!   notification loses nothing: the next one, or the poll every
//!   [`listen::POLL_EVERY`], catches up from the table. Subscribers see each run in id order.
//!
//! The database is reached through a small pool of connections. A connection that
//! fails is dropped and a new one is opened on the next request; while the database
//! is down, requests fail with [`StoreError::Unavailable`] (the HTTP layer answers 503,
//! the SDKs retry) and everything resumes by itself once it is back.
//!
//! What is PostgreSQL's own lives in the submodules: [`schema`] (migrations, database
//! creation, error mapping), `pool` (connections and prepared statements), `batch`
//! (the row lock and the batch transaction the shared append recipe runs on),
//! `series` (the series index's SQL), [`listen`] (LISTEN/NOTIFY, delivery to this
//! relay's [`Fanout`], the poll), `sessions` (the shared sessions table), `tls` and
//! `conninfo` (libpq's TLS parameters and connection strings). The append itself is
//! the shared recipe (`storage::append`); this module holds the store, its
//! start-up and its reads.

mod batch;
mod chunks;
mod conninfo;
mod jobs;
pub mod listen;
mod media;
mod pool;
pub mod schema;
mod series;
mod sessions;
#[cfg(test)]
mod tests;
mod tls;

use postgres::error::SqlState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use stepwatch_events::series::{SeriesInfo, SeriesPage};
use stepwatch_events::{Event, RunState, RunSummary};

use self::chunks::PgChunks;
pub use self::conninfo::redact;
use self::pool::{Conn, Pool};
pub use self::schema::PG_SCHEMA_VERSION;
use self::schema::{create_database, describe, migrate_schema};
use self::series::PgSeries;
use crate::storage::chunks::{read_after, read_before};
use crate::storage::error::StoreError;
use crate::storage::peers::Fanout;
use crate::storage::series::{list, query, Index, SeriesQuery, OPEN_RUNS};
use crate::storage::types::{sort_runs, Committed, StoredEvent};
use crate::storage::Storage;

/// Series index shards: appends to runs in different shards run their transactions
/// side by side (one run's writers still take turns on its row lock).
const INDEX_SHARDS: usize = 16;

/// A run as this relay knows it: which incarnation, and its state.
struct Known {
    gen: i64,
    state: Arc<RunState>,
}

/// What this relay knows of the shared database, kept current by its own commits and
/// by the notifications of the others.
#[derive(Default)]
struct Shared {
    /// Each run's state as of the newest event this relay has seen.
    states: RwLock<HashMap<String, Known>>,
    /// Per run, the newest id delivered to this relay's subscribers. Delivery happens
    /// under this lock, so each run's events reach the hub once and in id order.
    delivered: Mutex<HashMap<String, Arc<Mutex<u64>>>>,
}

/// PostgreSQL storage shared by any number of relays.
pub struct PgStore {
    /// This relay's name in notifications (it skips its own).
    node: String,
    pool: Pool,
    shared: Arc<Shared>,
    /// The series index's in-memory side; taken after the run's row lock.
    /// Sharded by run, so appends to different runs overlap their transactions.
    index: Vec<Mutex<Index>>,
    /// This relay's subscribers, once [`listen::listen`] connected them.
    fanout: OnceLock<Arc<dyn Fanout>>,
    bytes: AtomicU64,
    stop: Arc<AtomicBool>,
    max_metrics: usize,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Closing a connection blocks on its own runtime, which may not happen on a
        // thread that drives async tasks (the relay drops its store there).
        let conns = self.pool.take_idle();
        if !conns.is_empty() {
            let _ = std::thread::spawn(move || drop(conns)).join();
        }
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`), creating or
    /// migrating the schema, and loads every run's state.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        // The blocking client runs its own runtime: keep it off any async thread.
        std::thread::scope(|s| {
            s.spawn(|| Self::open_here(url))
                .join()
                .unwrap_or_else(|_| Err(StoreError::poisoned()))
        })
    }

    fn open_here(url: &str) -> Result<Self, StoreError> {
        let target = redact(url);
        let (mut config, tls) = tls::connector(url)
            .map_err(|e| StoreError::Incompatible(format!("--database {target}: {e}")))?;
        config
            .connect_timeout(Duration::from_secs(3))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .application_name("stepwatch-relay");
        // A stuck peer must not hold a run's writers forever: give up and answer 503.
        // The URL's own `options` come after, so they win where both set something.
        let ours = "-c statement_timeout=30000 -c lock_timeout=10000 \
                    -c idle_in_transaction_session_timeout=60000";
        let options = match config.get_options() {
            Some(theirs) if !theirs.trim().is_empty() => format!("{ours} {theirs}"),
            _ => ours.to_string(),
        };
        config.options(&options);
        // At start the reason is the whole message (there is no request to retry).
        let refused = |e: postgres::Error| {
            let reason = describe(&e);
            let hint = if reason.contains("invalid peer certificate") {
                " (the server's certificate must be signed by the CA that sslrootcert names, \
                 and under sslmode=verify-full name the host in the URL)"
            } else {
                ""
            };
            StoreError::Incompatible(format!(
                "cannot connect to PostgreSQL at {target}: {reason}{hint}"
            ))
        };
        let mut client = match config.connect(tls.clone()) {
            // A database that does not exist yet is created, as the tables are.
            Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
                create_database(&config, &tls).map_err(|why| {
                    StoreError::Incompatible(format!(
                        "cannot connect to PostgreSQL at {target}: {}, and creating it \
                         failed: {why} (create it with `createdb`, or let this user create \
                         databases; the relay creates its tables itself)",
                        describe(&e)
                    ))
                })?;
                config.connect(tls.clone()).map_err(refused)?
            }
            other => other.map_err(refused)?,
        };
        migrate_schema(&mut client)?;
        let mut states = HashMap::new();
        let mut delivered = HashMap::new();
        for row in client.query("SELECT run, state, gen FROM runs WHERE state <> ''", &[])? {
            let run: String = row.get(0);
            let json: String = row.get(1);
            let state: RunState = serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("run {run}: {e}")))?;
            delivered.insert(run.clone(), Arc::new(Mutex::new(state.last_id)));
            states.insert(
                run,
                Known {
                    gen: row.get(2),
                    state: Arc::new(state),
                },
            );
        }
        let node = format!("{:016x}", rand::random::<u64>());
        let store = PgStore {
            node,
            pool: Pool::new(config, tls, target, client),
            shared: Arc::new(Shared {
                states: RwLock::new(states),
                delivered: Mutex::new(delivered),
            }),
            index: (0..INDEX_SHARDS)
                .map(|_| {
                    Mutex::new(
                        Index::default()
                            .with_write_on_evict(false)
                            .with_open_runs(OPEN_RUNS / INDEX_SHARDS),
                    )
                })
                .collect(),
            fanout: OnceLock::new(),
            bytes: AtomicU64::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            max_metrics: usize::MAX,
        };
        store.refresh_bytes();
        Ok(store)
    }

    /// Caps the metric series per run (a batch that would pass it is refused whole).
    pub fn with_max_metrics(mut self, n: usize) -> Self {
        self.max_metrics = n;
        self
    }

    /// A new connection of its own, outside the pool (`stepwatch migrate`'s copy).
    pub(crate) fn client(&self) -> Result<postgres::Client, StoreError> {
        self.pool.connect().map(|c| c.client)
    }

    /// Where the store points, without the password.
    pub fn target(&self) -> &str {
        self.pool.target()
    }

    /// The series index shard that holds `run`.
    fn index_of(&self, run: &str) -> &Mutex<Index> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        run.hash(&mut h);
        &self.index[(h.finish() % self.index.len() as u64) as usize]
    }

    fn refresh_bytes(&self) {
        let n = self.pool.with_conn(|c| {
            let row = c
                .client
                .query_one("SELECT pg_database_size(current_database())", &[])?;
            Ok(row.get::<_, i64>(0) as u64)
        });
        if let Ok(n) = n {
            self.bytes.store(n, Ordering::Relaxed);
        }
    }
}

impl Storage for PgStore {
    fn append(
        &self,
        run: &str,
        events: Vec<Event>,
        received: f64,
        on_commit: &dyn Fn(&Committed),
    ) -> Result<Committed, StoreError> {
        self.pool
            .with_conn(|conn| self.append_on(conn, run, events, received, on_commit))
    }

    fn events(
        &self,
        run: &str,
        after: u64,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.pool.read_conn(|c| {
            let mut db = PgChunks {
                db: &mut c.client,
                cache: &mut c.cache,
            };
            read_after(&mut db, run, after, limit, names)
        })
    }

    fn events_desc(
        &self,
        run: &str,
        before: Option<u64>,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let before = before.unwrap_or(u64::MAX);
        self.pool.read_conn(|c| {
            let mut db = PgChunks {
                db: &mut c.client,
                cache: &mut c.cache,
            };
            read_before(&mut db, run, before, limit, names)
        })
    }

    fn state(&self, run: &str) -> Option<Arc<RunState>> {
        self.shared
            .states
            .read()
            .ok()?
            .get(run)
            .map(|k| k.state.clone())
    }

    fn runs(&self) -> Vec<RunSummary> {
        let states = self.shared.states.read();
        let mut out: Vec<RunSummary> = states
            .map(|m| m.values().map(|k| k.state.summary()).collect())
            .unwrap_or_default();
        sort_runs(&mut out);
        out
    }

    fn event_total(&self) -> u64 {
        // Ids are gapless from 1 and events are only deleted with their run.
        self.shared
            .states
            .read()
            .map(|m| m.values().map(|k| k.state.last_id).sum())
            .unwrap_or(0)
    }

    fn series(
        &self,
        run: &str,
        metric: &str,
        q: SeriesQuery,
    ) -> Result<Option<SeriesPage>, StoreError> {
        self.pool.read_conn(|conn| {
            let Some((open, last_id)) =
                self.open_series(conn, run, |index| index.open_block(run, metric))?
            else {
                return Ok(None);
            };
            let mut db = PgSeries {
                db: &mut conn.client,
                cache: &mut conn.cache,
            };
            Ok(Some(query(&mut db, run, metric, open, last_id, q)?))
        })
    }

    fn series_list(&self, run: &str) -> Result<Option<Vec<SeriesInfo>>, StoreError> {
        self.pool.read_conn(|conn| {
            let Some((open, _)) = self.open_series(conn, run, |index| index.open_blocks(run))?
            else {
                return Ok(None);
            };
            let mut db = PgSeries {
                db: &mut conn.client,
                cache: &mut conn.cache,
            };
            Ok(Some(list(&mut db, run, open)?))
        })
    }

    fn delete_run(&self, run: &str) -> Result<Option<u64>, StoreError> {
        let n = self.pool.with_conn(|conn| {
            let Conn { client, cache } = conn;
            let mut tx = client.transaction()?;
            let Some((last_id, _, _)) = Self::lock_run(&mut tx, cache, run)? else {
                // Media uploaded for a run whose events never came go too.
                tx.execute("DELETE FROM media WHERE run = $1", &[&run])?;
                tx.commit()?;
                return Ok(None);
            };
            let n = last_id;
            for sql in [
                "DELETE FROM chunks WHERE run = $1",
                "DELETE FROM media WHERE run = $1",
                "DELETE FROM sources WHERE run = $1",
                "DELETE FROM series WHERE run = $1",
                "DELETE FROM series_runs WHERE run = $1",
                "DELETE FROM runs WHERE run = $1",
            ] {
                tx.execute(sql, &[&run])?;
            }
            Self::notify(&mut tx, cache, &format!("{} {run}", self.node))?;
            tx.commit()?;
            Ok(Some(n))
        })?;
        if n.is_some() {
            // The HTTP layer tells this relay's subscribers; the others learn it from
            // the notification.
            if let Ok(mut s) = self.shared.states.write() {
                s.remove(run);
            }
            if let Ok(mut d) = self.shared.delivered.lock() {
                d.remove(run);
            }
            if let Ok(mut index) = self.index_of(run).lock() {
                index.forget(run);
            }
        }
        Ok(n)
    }

    fn stored_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn media(&self) -> &dyn crate::storage::media::MediaDb {
        self
    }

    fn jobs(&self) -> &dyn crate::storage::jobs::JobDb {
        self
    }

    fn ready(&self) -> Result<(), StoreError> {
        self.pool.read_conn(|c| {
            c.client.simple_query("SELECT 1")?;
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every acknowledged event is committed already. Partial series blocks stay in
        // memory: writing them outside their run's row lock could overwrite another
        // relay's newer rows, and the next writer rebuilds them from the events table.
        self.stop.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl PgStore {
    /// Inserts chunks inside the caller's transaction (`stepwatch migrate`'s copy).
    pub(crate) fn insert_chunks(
        tx: &mut postgres::Transaction<'_>,
        run: &str,
        rows: &[crate::storage::chunks::ChunkRow],
    ) -> Result<(), StoreError> {
        self::chunks::insert(tx, &mut HashMap::new(), run, rows)
    }
}
