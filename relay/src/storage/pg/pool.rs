//! The connection pool: at most [`POOL_MAX`] connections for requests, each with its
//! prepared statements; a connection that failed is dropped, a closed one empties the
//! pool, and reads retry once on a new connection.

use postgres::{Client, GenericClient, Statement};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::schema::describe;
use crate::storage::error::StoreError;

/// Connections a relay opens at most for requests (the listener has one more).
pub const POOL_MAX: usize = 16;
/// How long a request waits for a connection when all are busy.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// The connections to one database, and how to open more.
pub(super) struct Pool {
    config: postgres::Config,
    /// TLS as the URL's libpq parameters (`sslmode`, `sslrootcert` …) ask.
    tls: MakeRustlsConnect,
    /// Where the pool points, without the password.
    target: String,
    conns: Mutex<Conns>,
    /// Signalled when a connection is returned or closed.
    freed: Condvar,
}

/// The connections: idle ones, and how many are open in all (idle or in use).
struct Conns {
    idle: Vec<Conn>,
    open: usize,
}

/// One pooled connection and its prepared statements.
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) cache: HashMap<&'static str, Statement>,
}

/// Prepares `sql` once per connection.
pub(super) fn prepared(
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

impl Pool {
    /// A pool on `config`, starting with the connection `first`.
    pub(super) fn new(
        config: postgres::Config,
        tls: MakeRustlsConnect,
        target: String,
        first: Client,
    ) -> Pool {
        Pool {
            config,
            tls,
            target,
            conns: Mutex::new(Conns {
                idle: vec![Conn {
                    client: first,
                    cache: HashMap::new(),
                }],
                open: 1,
            }),
            freed: Condvar::new(),
        }
    }

    /// The connection settings (the listener opens its own connection with them).
    pub(super) fn config(&self) -> (&postgres::Config, &MakeRustlsConnect) {
        (&self.config, &self.tls)
    }

    /// Where the pool points, without the password.
    pub(super) fn target(&self) -> &str {
        &self.target
    }

    /// Takes the idle connections out (to close them).
    pub(super) fn take_idle(&mut self) -> Vec<Conn> {
        std::mem::take(&mut self.conns.get_mut().unwrap_or_else(|p| p.into_inner()).idle)
    }

    /// A new connection outside the pool.
    pub(super) fn connect(&self) -> Result<Conn, StoreError> {
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
    pub(super) fn with_conn<T>(
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
    pub(super) fn read_conn<T>(
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
    pub(super) fn checkout(&self) -> Result<(Conn, bool), StoreError> {
        let deadline = Instant::now() + POOL_WAIT;
        let mut pool = self.conns.lock().map_err(|_| StoreError::poisoned())?;
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
            if let Ok(mut pool) = self.conns.lock() {
                pool.open -= 1;
            }
            self.freed.notify_one();
        })
    }

    /// Pools the connection again unless it failed. A closed one means the server went
    /// away: every idle connection is then as dead, so the pool is emptied.
    pub(super) fn check_in<T>(&self, conn: Conn, out: &Result<T, StoreError>) {
        let Ok(mut pool) = self.conns.lock() else {
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
}
