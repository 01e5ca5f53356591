//! PostgreSQL's schema: numbered migrations applied under an advisory lock, creating
//! the database when it is missing, and how the client's errors map to [`StoreError`].

use postgres::error::SqlState;
use postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::storage::error::StoreError;

/// The schema, as versioned migrations: each runs once, in order, in one transaction,
/// under an advisory lock so relays starting together do not race.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
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
    (
        4,
        // Launched jobs (their folded state, versioned for compare and set), their
        // history, the agents' heartbeats and the run-token key.
        "CREATE TABLE jobs (
         job     TEXT PRIMARY KEY,
         queue   TEXT NOT NULL,
         open    BOOLEAN NOT NULL,
         version BIGINT NOT NULL,
         state   TEXT NOT NULL,
         created DOUBLE PRECISION NOT NULL,
         updated DOUBLE PRECISION NOT NULL
     );
     CREATE INDEX jobs_open ON jobs (open, updated);
     CREATE TABLE job_events (
         job  TEXT NOT NULL,
         n    BIGINT NOT NULL,
         data TEXT NOT NULL,
         PRIMARY KEY (job, n)
     );
     CREATE TABLE agents (
         agent TEXT NOT NULL,
         queue TEXT NOT NULL,
         seen  DOUBLE PRECISION NOT NULL,
         info  TEXT NOT NULL,
         PRIMARY KEY (agent, queue)
     );
     CREATE TABLE meta (
         key   TEXT PRIMARY KEY,
         value TEXT NOT NULL
     );",
    ),
    (
        5,
        // Uploaded media: the bytes beside the run's events, deleted with them.
        "CREATE TABLE media (
         run     TEXT NOT NULL,
         sha     TEXT NOT NULL,
         mime    TEXT NOT NULL,
         width   INTEGER NOT NULL,
         height  INTEGER NOT NULL,
         size    BIGINT NOT NULL,
         created DOUBLE PRECISION NOT NULL,
         data    BYTEA NOT NULL,
         PRIMARY KEY (run, sha)
     );",
    ),
    // Events in chunks, one row per batch and event name; the rows of `events` move
    // in from Rust ([`super::chunks::migrate_events`]) in the same transaction.
    (6, super::chunks::SCHEMA),
];

/// The newest schema this binary knows.
pub const PG_SCHEMA_VERSION: i64 = 6;
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
pub(super) fn describe(e: &postgres::Error) -> String {
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

/// Creates the database `config` names, through the server's `postgres` database (or
/// `template1`), with the same user. Another relay creating it at the same moment is
/// no error.
pub(super) fn create_database(
    config: &postgres::Config,
    tls: &MakeRustlsConnect,
) -> Result<(), String> {
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
pub(super) fn migrate_schema(client: &mut Client) -> Result<(), StoreError> {
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
        let has_events: bool = tx
            .query_one("SELECT to_regclass('events') IS NOT NULL", &[])?
            .get(0);
        if *v == 6 && has_events {
            let started = std::time::Instant::now();
            let moved = super::chunks::migrate_events(&mut tx)?;
            tracing::info!(
                events = moved,
                seconds = started.elapsed().as_secs_f64(),
                "events moved into chunks"
            );
        }
        tx.execute("UPDATE stepwatch_schema SET version = $1", &[v])?;
        tracing::info!(version = v, "database schema migrated");
    }
    tx.commit()?;
    Ok(())
}
