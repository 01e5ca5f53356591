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
//! - each commit sends `NOTIFY stepwatch` with the run and its newest id. Every relay
//!   listens and delivers what other relays stored to its own subscribers by reading
//!   the events table after the newest id it has delivered for that run, so a lost
//!   notification loses nothing: the next one, or the poll every
//!   [`POLL_EVERY`], catches up from the table. Subscribers see each run in id order.
//!
//! The database is reached through a small pool of connections. A connection that
//! fails is dropped and a new one is opened on the next request; while the database
//! is down, requests fail with [`StoreError::Unavailable`] (the HTTP layer answers 503,
//! the SDKs retry) and everything resumes by itself once it is back.

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, GenericClient, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

mod conninfo;
mod tls;

pub use conninfo::redact;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use stepwatch_events::series::{SeriesInfo, SeriesPage};
use stepwatch_events::{Event, RunState, RunSummary};

use crate::hub::Hub;
use crate::series::{self, BlockRow, SeriesDb, SeriesQuery};
use crate::store::{
    check_metrics, fold_batch, Committed, Folded, Storage, StoreError, StoredEvent,
};

/// The channel relays notify each other on.
const CHANNEL: &str = "stepwatch";
/// How often each relay compares every run's newest id with what it has delivered,
/// in case a notification was lost (the listening connection dropped, say).
pub const POLL_EVERY: Duration = Duration::from_secs(2);
/// Connections a relay opens at most for requests (the listener has one more).
pub const POOL_MAX: usize = 16;
/// How long a request waits for a connection when all are busy.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// Series index shards: appends to runs in different shards run their transactions
/// side by side (one run's writers still take turns on its row lock).
const INDEX_SHARDS: usize = 8;
/// Events read per query when catching up.
const PAGE: i64 = 5000;

/// The schema, as versioned migrations: each runs once, in order, in one transaction,
/// under an advisory lock so relays starting together do not race.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE runs (
         run     TEXT PRIMARY KEY,
         last_id BIGINT NOT NULL,
         state   TEXT NOT NULL,
         created DOUBLE PRECISION NOT NULL,
         updated DOUBLE PRECISION NOT NULL
     );
     CREATE TABLE events (
         run  TEXT NOT NULL,
         id   BIGINT NOT NULL,
         name TEXT NOT NULL,
         src  TEXT,
         seq  BIGINT,
         data TEXT NOT NULL,
         PRIMARY KEY (run, id)
     );
     CREATE TABLE sources (
         run     TEXT NOT NULL,
         src     TEXT NOT NULL,
         max_seq BIGINT NOT NULL,
         PRIMARY KEY (run, src)
     );
     CREATE TABLE series (
         run     TEXT NOT NULL,
         metric  TEXT NOT NULL,
         block   BIGINT NOT NULL,
         n       BIGINT NOT NULL,
         step_lo DOUBLE PRECISION NOT NULL,
         step_hi DOUBLE PRECISION NOT NULL,
         last_id BIGINT NOT NULL,
         summary BYTEA NOT NULL,
         data    BYTEA NOT NULL,
         PRIMARY KEY (run, metric, block)
     );
     CREATE TABLE series_runs (
         run         TEXT PRIMARY KEY,
         indexed_id  BIGINT NOT NULL,
         step        BIGINT NOT NULL,
         batch_count BIGINT NOT NULL
     );",
    ),
    (
        2,
        "CREATE TABLE sessions (
         key       TEXT PRIMARY KEY,
         user_name TEXT NOT NULL,
         expires   DOUBLE PRECISION NOT NULL
     );",
    ),
    (
        3,
        // Each incarnation of a run name (deleted, then written again) gets a new
        // generation, so relays tell a re-created run from the one they knew.
        "CREATE SEQUENCE runs_gen;
         ALTER TABLE runs ADD COLUMN gen BIGINT NOT NULL DEFAULT nextval('runs_gen');",
    ),
];

/// The newest schema this binary knows.
pub const PG_SCHEMA_VERSION: i64 = 3;
/// Key of the advisory lock taken while migrating.
const MIGRATE_LOCK: i64 = 0x5354_4550_5741_5443; // "STEPWATC"

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        if e.code() == Some(&SqlState::DISK_FULL) {
            return StoreError::Full;
        }
        StoreError::database(describe(&e))
    }
}

/// The error with the server's message when there is one (postgres' Display hides it).
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cause = c.source();
            }
            s
        }
    }
}

/// The connections: idle ones, and how many are open in all (idle or in use).
struct Pool {
    idle: Vec<Conn>,
    open: usize,
}

/// One pooled connection and its prepared statements.
struct Conn {
    client: Client,
    cache: HashMap<&'static str, Statement>,
}

/// Prepares `sql` once per connection.
fn prepared(
    cache: &mut HashMap<&'static str, Statement>,
    client: &mut impl GenericClient,
    sql: &'static str,
) -> Result<Statement, postgres::Error> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let s = client.prepare(sql)?;
    cache.insert(sql, s.clone());
    Ok(s)
}

/// The series index's SQL on a PostgreSQL connection or transaction.
struct PgSeries<'a, C: GenericClient> {
    db: &'a mut C,
    cache: &'a mut HashMap<&'static str, Statement>,
}

impl<C: GenericClient> PgSeries<'_, C> {
    fn query(
        &mut self,
        sql: &'static str,
        args: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, StoreError> {
        let s = prepared(self.cache, self.db, sql)?;
        Ok(self.db.query(&s, args)?)
    }

    fn execute(
        &mut self,
        sql: &'static str,
        args: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<(), StoreError> {
        let s = prepared(self.cache, self.db, sql)?;
        self.db.execute(&s, args)?;
        Ok(())
    }
}

impl<C: GenericClient> SeriesDb for PgSeries<'_, C> {
    fn marks(&mut self, run: &str) -> Result<Option<(u64, u64, u64)>, StoreError> {
        let rows = self.query(
            "SELECT indexed_id, step, batch_count FROM series_runs WHERE run = $1",
            &[&run],
        )?;
        Ok(rows.first().map(|r| {
            (
                r.get::<_, i64>(0) as u64,
                r.get::<_, i64>(1) as u64,
                r.get::<_, i64>(2) as u64,
            )
        }))
    }

    fn set_marks(
        &mut self,
        run: &str,
        indexed_id: u64,
        step: u64,
        batch_count: u64,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO series_runs (run, indexed_id, step, batch_count) VALUES ($1, $2, $3, $4)
             ON CONFLICT (run) DO UPDATE SET indexed_id = $2, step = $3, batch_count = $4",
            &[
                &run,
                &(indexed_id as i64),
                &(step as i64),
                &(batch_count as i64),
            ],
        )
    }

    fn newest_blocks(
        &mut self,
        run: &str,
    ) -> Result<Vec<(String, i64, usize, u64, Vec<u8>)>, StoreError> {
        let rows = self.query(
            "SELECT DISTINCT ON (metric) metric, block, n, last_id, data FROM series
             WHERE run = $1 ORDER BY metric, block DESC",
            &[&run],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    r.get::<_, i64>(2) as usize,
                    r.get::<_, i64>(3) as u64,
                    r.get(4),
                )
            })
            .collect())
    }

    fn write_block(
        &mut self,
        run: &str,
        metric: &str,
        row: &BlockRow<'_>,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO series (run, metric, block, n, step_lo, step_hi, last_id, summary, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (run, metric, block) DO UPDATE SET n = $4, step_lo = $5, step_hi = $6,
                 last_id = $7, summary = $8, data = $9",
            &[
                &run,
                &metric,
                &row.block,
                &row.n,
                &row.step_lo,
                &row.step_hi,
                &row.last_id,
                &row.summary,
                &row.data,
            ],
        )
    }

    fn events_after(
        &mut self,
        run: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let rows = self.query(
            "SELECT id, data FROM events WHERE run = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&run, &(after as i64), &(limit as i64)],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
            .collect())
    }

    fn headers(
        &mut self,
        run: &str,
        metric: &str,
        below: i64,
    ) -> Result<Vec<(i64, u64, f64, f64, Vec<u8>)>, StoreError> {
        let rows = self.query(
            "SELECT block, n, step_lo, step_hi, summary FROM series
             WHERE run = $1 AND metric = $2 AND block < $3 ORDER BY block",
            &[&run, &metric, &below],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get::<_, i64>(1) as u64,
                    r.get(2),
                    r.get(3),
                    r.get(4),
                )
            })
            .collect())
    }

    fn block_data(&mut self, run: &str, metric: &str, block: i64) -> Result<Vec<u8>, StoreError> {
        let rows = self.query(
            "SELECT data FROM series WHERE run = $1 AND metric = $2 AND block = $3",
            &[&run, &metric, &block],
        )?;
        rows.first().map(|r| r.get(0)).ok_or_else(|| {
            StoreError::Corrupt(format!("series block {block} of {run}/{metric} is missing"))
        })
    }

    fn sums(&mut self, run: &str) -> Result<Vec<(String, u64, f64, f64)>, StoreError> {
        let rows = self.query(
            "SELECT metric, SUM(n)::BIGINT, MIN(step_lo), MAX(step_hi) FROM series
             WHERE run = $1 GROUP BY metric",
            &[&run],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get(2), r.get(3)))
            .collect())
    }
}

/// What this relay knows of the shared database, kept current by its own commits and
/// by the notifications of the others.
/// A run as this relay knows it: which incarnation, and its state.
struct Known {
    gen: i64,
    state: Arc<RunState>,
}

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
    config: postgres::Config,
    /// TLS as the URL's libpq parameters (`sslmode`, `sslrootcert` …) ask.
    tls: MakeRustlsConnect,
    target: String,
    /// This relay's name in notifications (it skips its own).
    node: String,
    pool: Mutex<Pool>,
    /// Signalled when a connection is returned or closed.
    freed: std::sync::Condvar,
    shared: Arc<Shared>,
    /// The series index's in-memory side; taken after the run's row lock.
    /// Sharded by run, so appends to different runs overlap their transactions.
    index: Vec<Mutex<series::Index>>,
    hub: OnceLock<Arc<Hub>>,
    /// Sign-ins, shared with the other relays through the `sessions` table.
    auth: OnceLock<Arc<crate::auth::Auth>>,
    /// Session changes not written yet (sign-outs, and anything during an outage).
    pending_sessions: Mutex<Vec<SessionOp>>,
    bytes: AtomicU64,
    stop: Arc<AtomicBool>,
    max_metrics: usize,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Closing a connection blocks on its own runtime, which may not happen on a
        // thread that drives async tasks (the relay drops its store there).
        let conns =
            std::mem::take(&mut self.pool.get_mut().unwrap_or_else(|p| p.into_inner()).idle);
        if !conns.is_empty() {
            let _ = std::thread::spawn(move || drop(conns)).join();
        }
    }
}

/// Creates the database `config` names, through the server's `postgres` database (or
/// `template1`), with the same user. Another relay creating it at the same moment is
/// no error.
fn create_database(config: &postgres::Config, tls: &MakeRustlsConnect) -> Result<(), String> {
    let name = config
        .get_dbname()
        .or(config.get_user())
        .ok_or("no database named")?
        .to_string();
    let mut last = String::new();
    for maintenance in ["postgres", "template1"] {
        let mut admin = config.clone();
        admin.dbname(maintenance);
        let mut client = match admin.connect(tls.clone()) {
            Ok(c) => c,
            Err(e) => {
                last = describe(&e);
                continue;
            }
        };
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        return match client.batch_execute(&sql) {
            Ok(()) => {
                tracing::info!(database = %name, "created the database");
                Ok(())
            }
            // Created meanwhile by another relay (a race shows as a unique violation).
            Err(e)
                if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                    || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
            {
                Ok(())
            }
            Err(e) => Err(describe(&e)),
        };
    }
    Err(last)
}

/// Brings the database up to [`PG_SCHEMA_VERSION`]; refuses a newer one.
fn migrate_schema(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS stepwatch_schema (version BIGINT NOT NULL);
         INSERT INTO stepwatch_schema (version)
             SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM stepwatch_schema);",
    )?;
    let version: i64 = tx
        .query_one("SELECT MAX(version) FROM stepwatch_schema", &[])?
        .get(0);
    if version > PG_SCHEMA_VERSION {
        return Err(StoreError::Incompatible(format!(
            "the database was written by a newer Stepwatch (schema {version}; this binary \
             knows up to {PG_SCHEMA_VERSION}): upgrade stepwatch on every relay, or point \
             --database elsewhere"
        )));
    }
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
        tx.batch_execute(sql)?;
        tx.execute("UPDATE stepwatch_schema SET version = $1", &[v])?;
        tracing::info!(version = v, "database schema migrated");
    }
    tx.commit()?;
    Ok(())
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
            config,
            tls,
            target,
            node,
            pool: Mutex::new(Pool {
                idle: vec![Conn {
                    client,
                    cache: HashMap::new(),
                }],
                open: 1,
            }),
            freed: std::sync::Condvar::new(),
            shared: Arc::new(Shared {
                states: RwLock::new(states),
                delivered: Mutex::new(delivered),
            }),
            index: (0..INDEX_SHARDS)
                .map(|_| {
                    Mutex::new(
                        series::Index::default()
                            .with_write_on_evict(false)
                            .with_open_runs(series::OPEN_RUNS / INDEX_SHARDS),
                    )
                })
                .collect(),
            hub: OnceLock::new(),
            auth: OnceLock::new(),
            pending_sessions: Mutex::new(Vec::new()),
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

    /// Where the store points, without the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The series index shard that holds `run`.
    fn index_of(&self, run: &str) -> &Mutex<series::Index> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        run.hash(&mut h);
        &self.index[(h.finish() % self.index.len() as u64) as usize]
    }

    fn connect(&self) -> Result<Conn, StoreError> {
        let client = self.config.connect(self.tls.clone()).map_err(|e| {
            StoreError::database(format!(
                "cannot connect to {}: {}",
                self.target,
                describe(&e)
            ))
        })?;
        Ok(Conn {
            client,
            cache: HashMap::new(),
        })
    }

    /// Runs `f` on a pooled connection; a connection that failed is not pooled again.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (mut conn, _) = self.checkout()?;
        let out = f(&mut conn);
        self.check_in(conn, &out);
        out
    }

    /// As [`PgStore::with_conn`] for reads, which are safe to repeat: when a pooled
    /// connection turns out dead (the database restarted since it was opened), the read
    /// runs again on a new one instead of failing.
    fn read_conn<T>(
        &self,
        mut f: impl FnMut(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (mut conn, pooled) = self.checkout()?;
        let out = f(&mut conn);
        let dead = conn.client.is_closed();
        self.check_in(conn, &out);
        if dead && pooled {
            let (mut conn, _) = self.checkout()?;
            let again = f(&mut conn);
            self.check_in(conn, &again);
            return again;
        }
        out
    }

    /// An idle pooled connection (`true`) or a new one; waits while [`POOL_MAX`] are
    /// in use.
    fn checkout(&self) -> Result<(Conn, bool), StoreError> {
        let deadline = Instant::now() + POOL_WAIT;
        let mut pool = self.pool.lock().map_err(|_| StoreError::poisoned())?;
        loop {
            while let Some(c) = pool.idle.pop() {
                if !c.client.is_closed() {
                    return Ok((c, true));
                }
                pool.open -= 1;
            }
            if pool.open < POOL_MAX {
                pool.open += 1;
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::database(format!(
                    "all {POOL_MAX} database connections stayed busy for {}s",
                    POOL_WAIT.as_secs()
                )));
            }
            pool = self
                .freed
                .wait_timeout(pool, left)
                .map_err(|_| StoreError::poisoned())?
                .0;
        }
        drop(pool);
        self.connect().map(|c| (c, false)).inspect_err(|_| {
            if let Ok(mut pool) = self.pool.lock() {
                pool.open -= 1;
            }
            self.freed.notify_one();
        })
    }

    /// Pools the connection again unless it failed. A closed one means the server went
    /// away: every idle connection is then as dead, so the pool is emptied.
    fn check_in<T>(&self, conn: Conn, out: &Result<T, StoreError>) {
        let Ok(mut pool) = self.pool.lock() else {
            return;
        };
        let mut dead = Vec::new();
        if conn.client.is_closed() {
            dead = std::mem::take(&mut pool.idle);
            dead.push(conn);
        } else if matches!(out, Err(StoreError::Unavailable(_))) {
            dead.push(conn);
        } else {
            pool.idle.push(conn);
        }
        pool.open -= dead.len();
        drop(pool);
        self.freed.notify_all();
        drop(dead);
    }

    fn refresh_bytes(&self) {
        let n = self.with_conn(|c| {
            let row = c
                .client
                .query_one("SELECT pg_database_size(current_database())", &[])?;
            Ok(row.get::<_, i64>(0) as u64)
        });
        if let Ok(n) = n {
            self.bytes.store(n, Ordering::Relaxed);
        }
    }

    /// Delivers the run's events up to `upto` to this relay's subscribers, in id order,
    /// each once: `own` (a batch this relay just committed) when it continues what was
    /// delivered, the rest read from the events table. `publish` gets each slice.
    fn deliver(
        &self,
        conn: &mut Conn,
        run: &str,
        upto: u64,
        own: &[Arc<StoredEvent>],
        state: &Arc<RunState>,
        publish: &dyn Fn(&Committed),
    ) -> Result<(), StoreError> {
        // One lock per run: a slow read for one run does not hold up the others.
        let mark = self
            .shared
            .delivered
            .lock()
            .map_err(|_| StoreError::poisoned())?
            .entry(run.to_string())
            .or_default()
            .clone();
        let mut delivered = mark.lock().map_err(|_| StoreError::poisoned())?;
        let done = *delivered;
        if upto <= done {
            return Ok(());
        }
        let listening = self.hub.get().is_none_or(|h| h.has_subscribers(run));
        let first_own = own.first().map_or(u64::MAX, |e| e.id);
        let mut events: Vec<Arc<StoredEvent>> = Vec::new();
        if listening {
            // What other relays stored between what was delivered and this batch.
            let mut after = done;
            let until = first_own.min(upto + 1);
            while after + 1 < until {
                let s = prepared(
                    &mut conn.cache,
                    &mut conn.client,
                    "SELECT id, name, data FROM events WHERE run = $1 AND id > $2 AND id < $3
                     ORDER BY id LIMIT $4",
                )?;
                let rows = conn
                    .client
                    .query(&s, &[&run, &(after as i64), &(until as i64), &PAGE])?;
                let Some(last) = rows.last().map(|r| r.get::<_, i64>(0) as u64) else {
                    break;
                };
                events.extend(rows.iter().map(|r| {
                    Arc::new(StoredEvent {
                        id: r.get::<_, i64>(0) as u64,
                        name: r.get(1),
                        json: r.get(2),
                    })
                }));
                after = last;
            }
            events.extend(own.iter().filter(|e| e.id > done).cloned());
        }
        *delivered = upto;
        let batch = Committed {
            run: run.to_string(),
            accepted: events.len(),
            duplicates: 0,
            last_id: upto,
            events,
            state: state.clone(),
        };
        if batch.events.is_empty() {
            if let Some(h) = self.hub.get() {
                h.publish_summary(state);
            }
        } else {
            publish(&batch);
        }
        Ok(())
    }

    /// Brings this relay up to date with a run another relay changed (`None`: it was
    /// deleted, or is not there).
    fn catch_up(&self, conn: &mut Conn, run: &str) -> Result<(), StoreError> {
        let s = prepared(
            &mut conn.cache,
            &mut conn.client,
            "SELECT last_id, state, gen FROM runs WHERE run = $1",
        )?;
        let row = conn.client.query_opt(&s, &[&run])?;
        let Some(row) = row else {
            self.forget_run(run);
            return Ok(());
        };
        let json: String = row.get(1);
        if json.is_empty() {
            return Ok(());
        }
        let gen: i64 = row.get(2);
        let state: RunState = serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("run {run}: {e}")))?;
        let state = Arc::new(state);
        self.forget_other_generation(run, gen);
        self.remember(run, gen, &state)?;
        let hub = self.hub.get().cloned();
        self.deliver(conn, run, state.last_id, &[], &state, &|c| {
            if let Some(h) = &hub {
                h.publish(c);
            }
        })
    }

    /// Keeps `state` as the run's, unless this relay already knows a newer one of the
    /// same generation.
    fn remember(&self, run: &str, gen: i64, state: &Arc<RunState>) -> Result<(), StoreError> {
        let mut states = self
            .shared
            .states
            .write()
            .map_err(|_| StoreError::poisoned())?;
        let stale = states
            .get(run)
            .is_some_and(|k| k.gen == gen && k.state.last_id >= state.last_id);
        if !stale {
            states.insert(
                run.to_string(),
                Known {
                    gen,
                    state: state.clone(),
                },
            );
        }
        Ok(())
    }

    /// When the run this relay knows is an earlier incarnation (deleted, then written
    /// again elsewhere), forgets it: its state, delivery mark and series index.
    fn forget_other_generation(&self, run: &str, gen: i64) {
        let other = self
            .shared
            .states
            .read()
            .is_ok_and(|s| s.get(run).is_some_and(|k| k.gen != gen));
        if other {
            self.forget_run(run);
        }
    }

    /// A run deleted elsewhere: drop it here too and tell subscribers.
    fn forget_run(&self, run: &str) {
        let known = self
            .shared
            .states
            .write()
            .map(|mut s| s.remove(run).is_some())
            .unwrap_or(false);
        if let Ok(mut d) = self.shared.delivered.lock() {
            d.remove(run);
        }
        if let Ok(mut index) = self.index_of(run).lock() {
            index.forget(run);
        }
        if known {
            if let Some(h) = self.hub.get() {
                h.publish_deleted(run);
            }
        }
    }

    /// Compares every run's newest id with what this relay knows, catching up.
    fn poll(&self) -> Result<(), StoreError> {
        self.load_sessions()?;
        // What this relay knows, taken before reading the table: a run this relay
        // creates meanwhile is then neither here nor forgotten below.
        let known: HashMap<String, (i64, u64)> = self
            .shared
            .states
            .read()
            .map_err(|_| StoreError::poisoned())?
            .iter()
            .map(|(k, v)| (k.clone(), (v.gen, v.state.last_id)))
            .collect();
        let delivered: HashMap<String, u64> = self
            .shared
            .delivered
            .lock()
            .map_err(|_| StoreError::poisoned())?
            .iter()
            // A delivery under way (its lock held) is not behind: it is catching up now.
            .map(|(k, v)| (k.clone(), v.try_lock().map_or(u64::MAX, |d| *d)))
            .collect();
        self.with_conn(|conn| {
            let rows = conn
                .client
                .query("SELECT run, last_id, gen FROM runs WHERE state <> ''", &[])?;
            let mut present = std::collections::HashSet::new();
            for row in &rows {
                let run: String = row.get(0);
                let last = row.get::<_, i64>(1) as u64;
                let gen: i64 = row.get(2);
                // Behind, another incarnation, or a delivery that failed earlier.
                let behind = known.get(&run).is_none_or(|(g, k)| *g != gen || *k < last)
                    || delivered.get(&run).is_none_or(|d| *d < last);
                if behind {
                    self.catch_up(conn, &run)?;
                }
                present.insert(run);
            }
            for run in known.keys().filter(|r| !present.contains(*r)) {
                self.forget_run(run);
            }
            Ok(())
        })
    }

    /// Listens for other relays' commits until the store is dropped; reconnects after
    /// a failure and then catches up from the tables.
    fn listen(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let stop = self.stop.clone();
        let config = self.config.clone();
        let tls = self.tls.clone();
        let _ = std::thread::Builder::new()
            .name("stepwatch-pg-listen".into())
            .spawn(move || {
                let mut backoff = Duration::from_millis(200);
                let mut failing = false;
                while !stop.load(Ordering::Relaxed) {
                    let mut client = match config.connect(tls.clone()) {
                        Ok(c) => c,
                        Err(e) => {
                            if !failing {
                                tracing::warn!(error = %describe(&e), "database unreachable; retrying");
                                failing = true;
                            }
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    };
                    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
                        tracing::warn!(error = %describe(&e), "LISTEN failed; retrying");
                        std::thread::sleep(backoff);
                        continue;
                    }
                    if failing {
                        tracing::info!("database reachable again");
                        failing = false;
                    }
                    backoff = Duration::from_millis(200);
                    let Some(store) = weak.upgrade() else { return };
                    if let Err(e) = store.listen_on(&mut client, &stop) {
                        tracing::warn!(error = %e, "lost the database's notifications; reconnecting");
                    }
                }
            });
    }

    /// Handles notifications on `client` until it fails or the store stops.
    fn listen_on(&self, client: &mut Client, stop: &AtomicBool) -> Result<(), StoreError> {
        // Whatever happened while not listening.
        self.poll()?;
        let mut polled = Instant::now();
        let mut sized = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut changed: HashMap<String, ()> = HashMap::new();
            let mut resync = false;
            let mut take = |n: postgres::Notification| {
                let mut parts = n.payload().splitn(2, ' ');
                let node = parts.next().unwrap_or_default();
                let run = parts.next().unwrap_or_default();
                if node == self.node {
                    return;
                }
                if run == "*" || run == SESSIONS || run.is_empty() {
                    resync = true;
                } else {
                    changed.insert(run.to_string(), ());
                }
            };
            let first = client
                .notifications()
                .timeout_iter(Duration::from_millis(250))
                .next()?;
            if let Some(n) = first {
                take(n);
                let mut notes = client.notifications();
                let mut rest = notes.iter();
                while let Some(n) = rest.next()? {
                    take(n);
                }
            }
            if client.is_closed() {
                return Err(StoreError::database("listening connection closed"));
            }
            if !changed.is_empty() {
                self.with_conn(|conn| {
                    for run in changed.keys() {
                        self.catch_up(conn, run)?;
                    }
                    Ok(())
                })?;
            }
            if !self.flush_sessions() {
                tracing::debug!("session changes wait for the database");
            }
            if resync || polled.elapsed() >= POLL_EVERY {
                self.poll()?;
                polled = Instant::now();
            }
            if sized.elapsed() >= Duration::from_secs(10) {
                self.refresh_bytes();
                self.sweep_sessions();
                sized = Instant::now();
            }
        }
        Ok(())
    }

    /// Under the run's row lock: makes the shared series index current for the run
    /// (another relay may have written it since) and loads it.
    fn sync_index(
        index: &mut series::Index,
        db: &mut dyn SeriesDb,
        run: &str,
        last_id: u64,
    ) -> Result<(), StoreError> {
        if index.seen_id(run).is_some_and(|seen| seen != last_id) {
            index.forget(run);
        }
        if let Err(e) = index.load_run(db, run) {
            index.forget(run);
            return Err(e);
        }
        Ok(())
    }

    /// Locks the run's row for the transaction; `None` when the run does not exist.
    fn lock_run(
        tx: &mut postgres::Transaction<'_>,
        cache: &mut HashMap<&'static str, Statement>,
        run: &str,
    ) -> Result<Option<(u64, String, i64)>, StoreError> {
        let s = prepared(
            cache,
            tx,
            "SELECT last_id, state, gen FROM runs WHERE run = $1 FOR UPDATE",
        )?;
        Ok(tx
            .query_opt(&s, &[&run])?
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2))))
    }

    fn notify(
        tx: &mut postgres::Transaction<'_>,
        cache: &mut HashMap<&'static str, Statement>,
        payload: &str,
    ) -> Result<(), StoreError> {
        let s = prepared(cache, tx, "SELECT pg_notify('stepwatch', $1)")?;
        tx.execute(&s, &[&payload])?;
        Ok(())
    }

    /// Under the row lock: copies what `take` wants of the run's current series index.
    fn open_series<T>(
        &self,
        conn: &mut Conn,
        run: &str,
        take: impl FnOnce(&series::Index) -> T,
    ) -> Result<Option<(T, u64)>, StoreError> {
        let Conn { client, cache } = conn;
        let mut tx = client.transaction()?;
        let Some((last_id, state, gen)) = Self::lock_run(&mut tx, cache, run)? else {
            return Ok(None);
        };
        if state.is_empty() {
            return Ok(None);
        }
        self.forget_other_generation(run, gen);
        let mut index = self
            .index_of(run)
            .lock()
            .map_err(|_| StoreError::poisoned())?;
        Self::sync_index(
            &mut index,
            &mut PgSeries { db: &mut tx, cache },
            run,
            last_id,
        )?;
        let taken = take(&index);
        if let Err(e) = tx.commit() {
            // Rebuilding may have written blocks that just rolled back.
            index.forget(run);
            return Err(e.into());
        }
        Ok(Some((taken, last_id)))
    }
}

/// Starts listening for other relays once the store has its hub.
pub fn attach(store: &Arc<PgStore>, hub: Arc<Hub>, auth: Arc<crate::auth::Auth>) {
    if auth.enabled() {
        auth.share_sessions(Arc::new(SharedSessions(store.clone())));
        let _ = store.auth.set(auth);
    }
    if store.hub.set(hub).is_ok() {
        store.listen();
    }
}

/// What a notification says when the sessions changed (run ids cannot contain `!`).
const SESSIONS: &str = "!sessions";

/// Sessions kept in the database, so every relay knows every sign-in.
struct SharedSessions(Arc<PgStore>);

impl crate::auth::SessionShare for SharedSessions {
    fn begun(&self, key: &str, user: &str, expires_unix: f64) {
        // Called where blocking is allowed (sign-in hashes a password off the async
        // threads), so the other relays know the session before the browser's next
        // request. If the database is down it is written once it is back.
        let op = SessionOp::Begun {
            key: key.to_string(),
            user: user.to_string(),
            expires: expires_unix,
        };
        if let Err(e) = self.0.save_session(&op) {
            tracing::warn!(error = %e, "session not shared with the other relays yet; retrying");
            self.0.queue_session(op);
        }
    }

    fn ended(&self, key: &str) {
        // Sign-out runs on an async thread, where the blocking client may not: the
        // listener thread writes it within a moment (and retries through an outage).
        self.0.queue_session(SessionOp::Ended {
            key: key.to_string(),
        });
    }
}

/// A change to the shared sessions table.
#[derive(Debug, Clone)]
enum SessionOp {
    Begun {
        key: String,
        user: String,
        expires: f64,
    },
    Ended {
        key: String,
    },
}

impl PgStore {
    fn queue_session(&self, op: SessionOp) {
        if let Ok(mut q) = self.pending_sessions.lock() {
            q.push(op);
        }
    }

    /// Writes the queued session changes, oldest first; `false` if some are still
    /// queued (the database is unreachable).
    fn flush_sessions(&self) -> bool {
        let ops: Vec<SessionOp> = match self.pending_sessions.lock() {
            Ok(mut q) if !q.is_empty() => std::mem::take(&mut *q),
            _ => return true,
        };
        for (i, op) in ops.iter().enumerate() {
            if self.save_session(op).is_err() {
                if let Ok(mut q) = self.pending_sessions.lock() {
                    let newer = std::mem::take(&mut *q);
                    q.extend(ops[i..].iter().cloned());
                    q.extend(newer);
                }
                return false;
            }
        }
        true
    }

    /// Stores or deletes a session and tells the other relays.
    fn save_session(&self, op: &SessionOp) -> Result<(), StoreError> {
        self.with_conn(|c| {
            let mut tx = c.client.transaction()?;
            match op {
                SessionOp::Begun { key, user, expires } => {
                    tx.execute(
                        "INSERT INTO sessions (key, user_name, expires) VALUES ($1, $2, $3)
                         ON CONFLICT (key) DO UPDATE SET user_name = $2, expires = $3",
                        &[key, user, expires],
                    )?;
                    tx.execute(
                        "DELETE FROM sessions WHERE expires < $1",
                        &[&crate::clock::now()],
                    )?;
                }
                SessionOp::Ended { key } => {
                    tx.execute("DELETE FROM sessions WHERE key = $1", &[key])?;
                }
            }
            tx.execute(
                "SELECT pg_notify('stepwatch', $1)",
                &[&format!("{} {SESSIONS}", self.node)],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Deletes expired sessions from the table.
    fn sweep_sessions(&self) {
        if self.auth.get().is_none() {
            return;
        }
        let swept = self.with_conn(|c| {
            Ok(c.client.execute(
                "DELETE FROM sessions WHERE expires < $1",
                &[&crate::clock::now()],
            )?)
        });
        if let Err(e) = swept {
            tracing::debug!(error = %e, "expired sessions not swept");
        }
    }

    /// Replaces this relay's sessions with the table's.
    fn load_sessions(&self) -> Result<(), StoreError> {
        let Some(auth) = self.auth.get() else {
            return Ok(());
        };
        if !self.flush_sessions() {
            // The table lacks this relay's latest changes: keep what is here.
            return Ok(());
        }
        let read_at = Instant::now();
        let all = self.with_conn(|c| {
            Ok(c.client
                .query(
                    "SELECT key, user_name, expires FROM sessions WHERE expires > $1",
                    &[&crate::clock::now()],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect::<Vec<(String, String, f64)>>())
        })?;
        auth.load_shared_sessions(&all, read_at);
        Ok(())
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
        self.with_conn(|conn| {
            let Conn { client, cache } = conn;
            let mut tx = client.transaction()?;
            // Lock the run's row, creating it first when it is new (a concurrent creator
            // on another relay makes the insert wait, then do nothing).
            let locked = match Self::lock_run(&mut tx, cache, run)? {
                Some(row) => Some(row),
                None => {
                    let create = prepared(
                        cache,
                        &mut tx,
                        "INSERT INTO runs (run, last_id, state, created, updated)
                         VALUES ($1, 0, '', $2, $2) ON CONFLICT (run) DO NOTHING",
                    )?;
                    tx.execute(&create, &[&run, &received])?;
                    Self::lock_run(&mut tx, cache, run)?
                }
            };
            let Some((prev_id, stored_state, gen)) = locked else {
                return Err(StoreError::database(format!("run {run} vanished while locked")));
            };
            // A run this relay knew under the same name but another incarnation goes first.
            self.forget_other_generation(run, gen);
            let cached = self
                .shared
                .states
                .read()
                .map_err(|_| StoreError::poisoned())?
                .get(run)
                .filter(|k| k.gen == gen && k.state.last_id == prev_id)
                .map(|k| k.state.clone());
            let mut state = match cached {
                Some(s) => (*s).clone(),
                None if stored_state.is_empty() => RunState::new(run),
                None => serde_json::from_str(&stored_state)
                    .map_err(|e| StoreError::Corrupt(format!("run {run}: {e}")))?,
            };
            let s = prepared(
                cache,
                &mut tx,
                "SELECT src, max_seq FROM sources WHERE run = $1",
            )?;
            let known: HashMap<String, u64> = tx
                .query(&s, &[&run])?
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                .collect();
            let mut index = self.index_of(run).lock().map_err(|_| StoreError::poisoned())?;
            Self::sync_index(
                &mut index,
                &mut PgSeries {
                    db: &mut tx,
                    cache,
                },
                run,
                prev_id,
            )?;
            // From here on, a rollback may undo index rows written by the rebuild above:
            // every error path forgets the run, so the next writer rebuilds it.
            if let Err(e) = check_metrics(&index, run, &events, self.max_metrics) {
                index.forget(run);
                return Err(e);
            }
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
                Some(&known),
                &mut index,
                &mut PgSeries {
                    db: &mut tx,
                    cache,
                },
            )?;
            let ids: Vec<i64> = stored.iter().map(|e| e.id as i64).collect();
            let names: Vec<&str> = stored.iter().map(|e| e.name.as_str()).collect();
            let datas: Vec<&str> = stored.iter().map(|e| e.json.as_str()).collect();
            let (srcs, seqs): (Vec<Option<String>>, Vec<Option<i64>>) = origin.into_iter().unzip();
            let result = (|| {
                if !stored.is_empty() {
                    let s = prepared(
                        cache,
                        &mut tx,
                        "INSERT INTO events (run, id, name, src, seq, data)
                         SELECT $1, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[])",
                    )?;
                    tx.execute(&s, &[&run, &ids, &names, &srcs, &seqs, &datas])?;
                }
                if !advanced.is_empty() {
                    let (src, seq): (Vec<String>, Vec<i64>) =
                        advanced.iter().map(|(k, v)| (k.clone(), *v as i64)).unzip();
                    let s = prepared(
                        cache,
                        &mut tx,
                        "INSERT INTO sources (run, src, max_seq)
                         SELECT $1, * FROM UNNEST($2::TEXT[], $3::BIGINT[])
                         ON CONFLICT (run, src) DO UPDATE SET max_seq = EXCLUDED.max_seq",
                    )?;
                    tx.execute(&s, &[&run, &src, &seq])?;
                }
                if !stored.is_empty() {
                    let state_json = serde_json::to_string(&state)
                        .map_err(|e| StoreError::Corrupt(format!("state of {run}: {e}")))?;
                    let s = prepared(
                        cache,
                        &mut tx,
                        "UPDATE runs SET last_id = $2, state = $3, updated = $4 WHERE run = $1",
                    )?;
                    tx.execute(&s, &[&run, &(state.last_id as i64), &state_json, &received])?;
                    let mut db = PgSeries {
                        db: &mut tx,
                        cache,
                    };
                    index.finish_batch(&mut db, run, state.last_id)?;
                    Self::notify(&mut tx, cache, &format!("{} {run}", self.node))?;
                }
                Ok::<_, StoreError>(())
            })();
            if let Err(e) = result.and_then(|()| Ok(tx.commit()?)) {
                index.forget(run); // rolled back: rebuild from the database
                return Err(e);
            }
            drop(index);
            let state = Arc::new(state);
            if !stored.is_empty() {
                self.remember(run, gen, &state)?;
                // Delivery reads from the database only to fill in other relays' events;
                // a failure there must not turn a committed batch into an error.
                if let Err(e) =
                    self.deliver(conn, run, state.last_id, &stored, &state, on_commit)
                {
                    tracing::warn!(run, error = %e, "delivering a committed batch failed; the next poll catches up");
                }
            }
            Ok(Committed {
                run: run.to_string(),
                accepted: stored.len(),
                duplicates,
                last_id: state.last_id,
                events: stored,
                state,
            })
        })
    }

    fn events(
        &self,
        run: &str,
        after: u64,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // No names: every event (`$3` NULL). The (run, id) key serves both.
        self.read_conn(|c| {
            let s = prepared(
                &mut c.cache,
                &mut c.client,
                "SELECT id, name, data FROM events WHERE run = $1 AND id > $2
                 AND ($3::text[] IS NULL OR name = ANY($3)) ORDER BY id LIMIT $4",
            )?;
            let rows = c
                .client
                .query(&s, &[&run, &(after as i64), &names, &(limit as i64)])?;
            Ok(rows.iter().map(stored_event).collect())
        })
    }

    fn events_desc(
        &self,
        run: &str,
        before: Option<u64>,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let before = before.unwrap_or(i64::MAX as u64).min(i64::MAX as u64) as i64;
        self.read_conn(|c| {
            let s = prepared(
                &mut c.cache,
                &mut c.client,
                "SELECT id, name, data FROM events WHERE run = $1 AND id < $2
                 AND ($3::text[] IS NULL OR name = ANY($3)) ORDER BY id DESC LIMIT $4",
            )?;
            let rows = c
                .client
                .query(&s, &[&run, &before, &names, &(limit as i64)])?;
            Ok(rows.iter().map(stored_event).collect())
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
        crate::store::sort_runs(&mut out);
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
        self.read_conn(|conn| {
            let Some((open, last_id)) =
                self.open_series(conn, run, |index| index.open_block(run, metric))?
            else {
                return Ok(None);
            };
            let mut db = PgSeries {
                db: &mut conn.client,
                cache: &mut conn.cache,
            };
            Ok(Some(series::query(&mut db, run, metric, open, last_id, q)?))
        })
    }

    fn series_list(&self, run: &str) -> Result<Option<Vec<SeriesInfo>>, StoreError> {
        self.read_conn(|conn| {
            let Some((open, _)) = self.open_series(conn, run, |index| index.open_blocks(run))?
            else {
                return Ok(None);
            };
            let mut db = PgSeries {
                db: &mut conn.client,
                cache: &mut conn.cache,
            };
            Ok(Some(series::list(&mut db, run, open)?))
        })
    }

    fn delete_run(&self, run: &str) -> Result<Option<u64>, StoreError> {
        let n = self.with_conn(|conn| {
            let Conn { client, cache } = conn;
            let mut tx = client.transaction()?;
            if Self::lock_run(&mut tx, cache, run)?.is_none() {
                return Ok(None);
            }
            let n = tx.execute("DELETE FROM events WHERE run = $1", &[&run])?;
            for sql in [
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

    fn ready(&self) -> Result<(), StoreError> {
        self.read_conn(|c| {
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

fn stored_event(r: &postgres::Row) -> StoredEvent {
    StoredEvent {
        id: r.get::<_, i64>(0) as u64,
        name: r.get(1),
        json: r.get(2),
    }
}

/// What [`copy_from_sqlite`] copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub runs: u64,
    pub events: u64,
    pub blocks: u64,
}

/// An events row: id, name, src, seq, data.
type EventRow = (i64, String, Option<String>, Option<i64>, String);

/// Rows copied per statement.
const COPY_CHUNK: usize = 5000;

/// `stepwatch migrate`: copies every run of the SQLite data dir `dir` (ids, times,
/// senders, states and the series index, unchanged) into the PostgreSQL database at
/// `url`, in one transaction: all of it or, on any error, nothing. Refuses when a run
/// of the same name is already in the target.
pub fn copy_from_sqlite(dir: &std::path::Path, url: &str) -> anyhow::Result<CopyReport> {
    use anyhow::Context;
    let file = dir.join("stepwatch.db");
    anyhow::ensure!(
        file.is_file(),
        "no Stepwatch database at {}: give the data dir with --data-dir",
        file.display()
    );
    // Brings an older data dir up to the current schema first.
    drop(crate::store::SqliteStore::open(
        dir,
        crate::store::SyncLevel::Normal,
    )?);
    let source =
        rusqlite::Connection::open_with_flags(&file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // One read transaction: every table is read as of one moment, even if a relay is
    // still writing the data dir (what it writes later is not copied).
    let lite = source.unchecked_transaction()?;
    let target = PgStore::open(url)?; // connects and creates or migrates the schema
    let mut conn = target.connect()?;
    let mut tx = conn.client.transaction()?;
    let runs: Vec<(String, i64, String, f64, f64)> = lite
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
    for (run, last_id, state, created, updated) in &runs {
        tx.execute(
            "INSERT INTO runs (run, last_id, state, created, updated) VALUES ($1, $2, $3, $4, $5)",
            &[run, last_id, state, created, updated],
        )?;
        let mut stmt =
            lite.prepare("SELECT id, name, src, seq, data FROM events WHERE run = ?1 AND id > ?2 ORDER BY id LIMIT ?3")?;
        let mut after = 0i64;
        loop {
            let rows: Vec<EventRow> = stmt
                .query_map(rusqlite::params![run, after, COPY_CHUNK as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            let (mut ids, mut names, mut srcs, mut seqs, mut datas) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (id, name, src, seq, data) in rows {
                ids.push(id);
                names.push(name);
                srcs.push(src);
                seqs.push(seq);
                datas.push(data);
            }
            report.events += ids.len() as u64;
            tx.execute(
                "INSERT INTO events (run, id, name, src, seq, data)
                 SELECT $1, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[])",
                &[run, &ids, &names, &srcs, &seqs, &datas],
            )?;
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
        let marks: Option<(i64, i64, i64)> =
            rusqlite::OptionalExtension::optional(lite.query_row(
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
        report.runs += 1;
    }
    // Running relays pick the new runs up at once.
    tx.execute("SELECT pg_notify('stepwatch', 'migrate *')", &[])?;
    tx.commit()
        .with_context(|| format!("committing the copy into {}", redact(url)))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A fresh database on the test server (`STEPWATCH_TEST_PG`), or `None` to skip.
    fn fresh_database(tag: &str) -> Option<String> {
        let Ok(server) = std::env::var("STEPWATCH_TEST_PG") else {
            assert!(
                std::env::var("STEPWATCH_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "STEPWATCH_TEST_PG is not set but PostgreSQL tests are required"
            );
            eprintln!("skipped: no PostgreSQL (set STEPWATCH_TEST_PG=postgres://…)");
            return None;
        };
        let name = format!(
            "sw_unit_{tag}_{}_{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let admin = format!("{}/postgres", server.trim_end_matches('/'));
        std::thread::spawn(move || {
            let mut c = Client::connect(&admin, postgres::NoTls).unwrap();
            c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
            format!("{}/{name}", server.trim_end_matches('/'))
        })
        .join()
        .ok()
    }

    fn batch(src: &str, seqs: std::ops::Range<u64>) -> Vec<Event> {
        seqs.map(|seq| {
            Event::from_json(&format!(
                r#"{{"event":"batch_end","loss":{},"src":"{src}","seq":{seq}}}"#,
                1.0 / (seq as f64 + 1.0)
            ))
            .unwrap()
        })
        .collect()
    }

    #[test]
    fn two_stores_on_one_database_keep_ids_gapless_and_deduplicate_across_them() {
        let Some(url) = fresh_database("gapless") else {
            return;
        };
        let a = Arc::new(PgStore::open(&url).unwrap());
        let b = Arc::new(PgStore::open(&url).unwrap());
        let mut threads = Vec::new();
        for t in 0..4u64 {
            let (a, b) = (a.clone(), b.clone());
            threads.push(std::thread::spawn(move || {
                let src = format!("trainer-{t}");
                for k in 0..25u64 {
                    let store = if (t + k) % 2 == 0 { &a } else { &b };
                    store
                        .append("r", batch(&src, k * 4..k * 4 + 4), 1.0, &|_| {})
                        .unwrap();
                    // The same batch again on the other store: a retry, stored once.
                    let other = if (t + k) % 2 == 0 { &b } else { &a };
                    let again = other
                        .append("r", batch(&src, k * 4..k * 4 + 4), 1.0, &|_| {})
                        .unwrap();
                    assert_eq!((again.accepted, again.duplicates), (0, 4));
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        let events = a.events("r", 0, 10_000, None).unwrap();
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=400).collect::<Vec<_>>());
        let mut seen = std::collections::HashSet::new();
        for e in &events {
            let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
            assert!(seen.insert((v["src"].clone(), v["seq"].clone())), "{v}");
        }
        // Each store's state follows the other's writes (b learns on its next append
        // or from the database; here it reads through a series query).
        let page = b
            .series(
                "r",
                "loss",
                SeriesQuery {
                    points: 10_000,
                    from: None,
                    to: None,
                    exact_limit: u64::MAX,
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(page.total, 400);
        assert_eq!(page.last_id, 400);
    }

    #[test]
    fn the_urls_own_options_are_kept_and_win_over_the_relays_defaults() {
        let Some(url) = fresh_database("options") else {
            return;
        };
        let store = PgStore::open(&format!(
            "{url}?options=-c%20statement_timeout%3D1234%20-c%20search_path%3Dpublic"
        ))
        .unwrap();
        let mut conn = store.connect().unwrap();
        let show = |c: &mut Conn, what: &str| -> String {
            c.client
                .query_one(&format!("SHOW {what}"), &[])
                .unwrap()
                .get(0)
        };
        assert_eq!(show(&mut conn, "statement_timeout"), "1234ms");
        assert_eq!(show(&mut conn, "search_path"), "public");
        // The relay's other limits stay.
        assert_eq!(show(&mut conn, "lock_timeout"), "10s");
        assert_eq!(
            show(&mut conn, "idle_in_transaction_session_timeout"),
            "1min"
        );
    }

    #[test]
    fn a_run_deleted_and_written_again_elsewhere_is_not_mistaken_for_the_old_one() {
        let Some(url) = fresh_database("regen") else {
            return;
        };
        let a = PgStore::open(&url).unwrap();
        let b = PgStore::open(&url).unwrap();
        let life = |started: f64| {
            let mut events = vec![Event::from_json(&format!(
                r#"{{"event":"training_start","time":{started}}}"#
            ))
            .unwrap()];
            events.extend(batch("x", 1..3));
            events
        };
        // B writes and knows the first incarnation: ids 1..3, with series in memory.
        b.append("r", life(1.0), 1.0, &|_| {}).unwrap();
        let query = SeriesQuery {
            points: 100,
            from: None,
            to: None,
            exact_limit: u64::MAX,
        };
        assert_eq!(b.series("r", "loss", query).unwrap().unwrap().total, 2);
        // A deletes it and a new run of the same name reaches the same last_id.
        assert_eq!(a.delete_run("r").unwrap(), Some(3));
        a.append("r", life(2.0), 2.0, &|_| {}).unwrap();
        // B's next batch continues the new run, not the one it remembers.
        let c = b.append("r", batch("y", 1..2), 3.0, &|_| {}).unwrap();
        assert_eq!(c.last_id, 4);
        assert_eq!(c.state.started_at, Some(2.0));
        assert_eq!(b.state("r").unwrap().started_at, Some(2.0));
        let page = b.series("r", "loss", query).unwrap().unwrap();
        assert_eq!(
            page.total, 3,
            "old points leaked into the new run: {page:?}"
        );
        assert_eq!(a.events("r", 0, 100, None).unwrap().len(), 4);
    }

    #[test]
    fn a_database_from_a_newer_stepwatch_is_refused_with_a_clear_message() {
        let Some(url) = fresh_database("newer") else {
            return;
        };
        drop(PgStore::open(&url).unwrap());
        let u = url.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(&u, postgres::NoTls).unwrap();
            c.execute("UPDATE stepwatch_schema SET version = 99", &[])
                .unwrap();
        })
        .join()
        .unwrap();
        let err = PgStore::open(&url).err().unwrap().to_string();
        assert!(err.contains("newer Stepwatch"), "{err}");
    }

    #[test]
    fn an_older_schema_is_migrated_in_place_keeping_its_runs() {
        let Some(url) = fresh_database("older") else {
            return;
        };
        let u = url.clone();
        std::thread::spawn(move || {
            // What the first PostgreSQL release wrote: schema 1, one run.
            let mut c = Client::connect(&u, postgres::NoTls).unwrap();
            c.batch_execute(MIGRATIONS[0].1).unwrap();
            c.batch_execute(
                "CREATE TABLE stepwatch_schema (version BIGINT NOT NULL);
                 INSERT INTO stepwatch_schema VALUES (1);",
            )
            .unwrap();
        })
        .join()
        .unwrap();
        {
            // Opening migrates schema 1 to the current one in place.
            let store = PgStore::open(&url).unwrap();
            store.append("r", batch("s", 1..4), 1.0, &|_| {}).unwrap();
        }
        let u = url.clone();
        let (version, sessions) = std::thread::spawn(move || {
            let mut c = Client::connect(&u, postgres::NoTls).unwrap();
            let v: i64 = c
                .query_one("SELECT version FROM stepwatch_schema", &[])
                .unwrap()
                .get(0);
            let n: i64 = c
                .query_one("SELECT COUNT(*) FROM sessions", &[])
                .unwrap()
                .get(0);
            (v, n)
        })
        .join()
        .unwrap();
        assert_eq!((version, sessions), (PG_SCHEMA_VERSION, 0));
        let store = PgStore::open(&url).unwrap();
        assert_eq!(store.state("r").unwrap().last_id, 3);
    }

    #[test]
    fn a_missing_database_is_created_when_the_user_may_and_named_when_not() {
        let Ok(server) = std::env::var("STEPWATCH_TEST_PG") else {
            return;
        };
        let server = server.trim_end_matches('/').to_string();
        let name = format!(
            "sw_unit_created_{}_{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let url = format!("{server}/{name}");
        let store = PgStore::open(&url).unwrap();
        store.append("r", batch("t", 0..3), 1.0, &|_| {}).unwrap();
        drop(store);
        // Relays starting together: whoever creates it first, both open it.
        let name2 = format!("{name}_b");
        let url2 = format!("{server}/{name2}");
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| PgStore::open(&url2).map(drop));
            let b = s.spawn(|| PgStore::open(&url2).map(drop));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        // A user who may not create databases gets the reason and what to do.
        let role = format!("sw_nocreate_{}", rand::random::<u32>());
        let admin = format!("{server}/postgres");
        let create_role = format!("CREATE ROLE {role} LOGIN NOCREATEDB");
        std::thread::spawn(move || {
            let mut c = Client::connect(&admin, postgres::NoTls).unwrap();
            c.batch_execute(&create_role).unwrap();
        })
        .join()
        .unwrap();
        let host = server.split_once('@').map_or(server.as_str(), |(_, h)| h);
        let err = PgStore::open(&format!("postgres://{role}@{host}/{name}_none"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("does not exist")
                && err.contains("creating it failed")
                && err.contains("permission denied")
                && err.contains("createdb"),
            "{err}"
        );
    }

    #[test]
    fn an_unreachable_database_is_a_clear_error() {
        let err = PgStore::open("postgres://nobody@127.0.0.1:9/none")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("cannot connect to PostgreSQL at postgres://nobody@127.0.0.1:9/none"),
            "{err}"
        );
        let err = PgStore::open("mysql:/x").err().unwrap().to_string();
        assert!(err.contains("not a PostgreSQL URL"), "{err}");
    }
}
