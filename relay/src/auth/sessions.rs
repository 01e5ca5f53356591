//! Sign-in sessions shared by several relays on one database: a browser signed in on
//! one relay stays signed in on the others, and signing out ends the session
//! everywhere.
//!
//! [`SharedSessions`] sits between [`Auth`] (which calls it as its [`SessionShare`])
//! and a [`SessionTable`] of the storage backend. A sign-in is written at once (off the
//! async threads); a sign-out, and anything that failed during an outage, is queued and
//! written by the backend's listening thread ([`ListenerJob::on_wake`]), which writes
//! the queue before each reload of the table ([`ListenerJob::on_poll`]).

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use super::{Auth, SessionShare};
use crate::storage::error::StoreError;
use crate::storage::peers::{ListenerJob, SessionTable};

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

/// Sessions kept in a shared table, so every relay knows every sign-in.
pub struct SharedSessions {
    table: Arc<dyn SessionTable>,
    /// Whose sessions these are (weak: `auth` holds this as its share).
    auth: Weak<Auth>,
    /// Session changes not written yet (sign-outs, and anything during an outage).
    pending: Mutex<Vec<SessionOp>>,
}

impl SharedSessions {
    /// Shares `auth`'s sessions through `table` from now on; the result is the job
    /// for the backend's listening thread.
    pub fn share(auth: &Arc<Auth>, table: Arc<dyn SessionTable>) -> Arc<SharedSessions> {
        let shared = Arc::new(SharedSessions {
            table,
            auth: Arc::downgrade(auth),
            pending: Mutex::new(Vec::new()),
        });
        auth.share_sessions(shared.clone());
        shared
    }

    fn queue(&self, op: SessionOp) {
        if let Ok(mut q) = self.pending.lock() {
            q.push(op);
        }
    }

    /// Stores or deletes a session (the table tells the other relays).
    fn save(&self, op: &SessionOp) -> Result<(), StoreError> {
        match op {
            SessionOp::Begun { key, user, expires } => {
                self.table
                    .save_session(key, user, *expires, crate::clock::now())
            }
            SessionOp::Ended { key } => self.table.delete_session(key),
        }
    }

    /// Writes the queued session changes, oldest first; `false` if some are still
    /// queued (the database is unreachable).
    fn flush(&self) -> bool {
        let ops: Vec<SessionOp> = match self.pending.lock() {
            Ok(mut q) if !q.is_empty() => std::mem::take(&mut *q),
            _ => return true,
        };
        for (i, op) in ops.iter().enumerate() {
            if self.save(op).is_err() {
                if let Ok(mut q) = self.pending.lock() {
                    let newer = std::mem::take(&mut *q);
                    q.extend(ops[i..].iter().cloned());
                    q.extend(newer);
                }
                return false;
            }
        }
        true
    }
}

impl SessionShare for SharedSessions {
    fn begun(&self, key: &str, user: &str, expires_unix: f64) {
        // Called where blocking is allowed (sign-in hashes a password off the async
        // threads), so the other relays know the session before the browser's next
        // request. If the database is down it is written once it is back.
        let op = SessionOp::Begun {
            key: key.to_string(),
            user: user.to_string(),
            expires: expires_unix,
        };
        if let Err(e) = self.save(&op) {
            tracing::warn!(error = %e, "session not shared with the other relays yet; retrying");
            self.queue(op);
        }
    }

    fn ended(&self, key: &str) {
        // Sign-out runs on an async thread, where the blocking client may not: the
        // listener thread writes it within a moment (and retries through an outage).
        self.queue(SessionOp::Ended {
            key: key.to_string(),
        });
    }
}

impl ListenerJob for SharedSessions {
    fn on_wake(&self) {
        if !self.flush() {
            tracing::debug!("session changes wait for the database");
        }
    }

    /// Replaces this relay's sessions with the table's.
    fn on_poll(&self) -> Result<(), StoreError> {
        let Some(auth) = self.auth.upgrade() else {
            return Ok(());
        };
        if !self.flush() {
            // The table lacks this relay's latest changes: keep what is here.
            return Ok(());
        }
        let read_at = Instant::now();
        let all = self.table.live_sessions(crate::clock::now())?;
        auth.load_shared_sessions(&all, read_at);
        Ok(())
    }

    /// Deletes expired sessions from the table.
    fn on_sweep(&self) {
        if let Err(e) = self.table.sweep_sessions(crate::clock::now()) {
            tracing::debug!(error = %e, "expired sessions not swept");
        }
    }
}
