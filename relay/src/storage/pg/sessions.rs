//! The shared `sessions` table ([`SessionTable`]): rows only; what a session means is
//! the auth module's business. Each change notifies the other relays.

use super::listen::SESSIONS;
use super::PgStore;
use crate::storage::error::StoreError;
use crate::storage::peers::SessionTable;

impl PgStore {
    /// Runs `write` in a transaction that also tells the other relays the sessions
    /// changed.
    fn change_sessions(
        &self,
        write: impl Fn(&mut postgres::Transaction<'_>) -> Result<(), postgres::Error>,
    ) -> Result<(), StoreError> {
        self.pool.with_conn(|c| {
            let mut tx = c.client.transaction()?;
            write(&mut tx)?;
            tx.execute(
                "SELECT pg_notify('stepwatch', $1)",
                &[&format!("{} {SESSIONS}", self.node)],
            )?;
            tx.commit()?;
            Ok(())
        })
    }
}

impl SessionTable for PgStore {
    fn save_session(
        &self,
        key: &str,
        user: &str,
        expires: f64,
        now: f64,
    ) -> Result<(), StoreError> {
        self.change_sessions(|tx| {
            tx.execute(
                "INSERT INTO sessions (key, user_name, expires) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET user_name = $2, expires = $3",
                &[&key, &user, &expires],
            )?;
            tx.execute("DELETE FROM sessions WHERE expires < $1", &[&now])?;
            Ok(())
        })
    }

    fn delete_session(&self, key: &str) -> Result<(), StoreError> {
        self.change_sessions(|tx| {
            tx.execute("DELETE FROM sessions WHERE key = $1", &[&key])?;
            Ok(())
        })
    }

    fn live_sessions(&self, now: f64) -> Result<Vec<(String, String, f64)>, StoreError> {
        self.pool.with_conn(|c| {
            Ok(c.client
                .query(
                    "SELECT key, user_name, expires FROM sessions WHERE expires > $1",
                    &[&now],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }

    fn sweep_sessions(&self, now: f64) -> Result<(), StoreError> {
        self.pool.with_conn(|c| {
            c.client
                .execute("DELETE FROM sessions WHERE expires < $1", &[&now])?;
            Ok(())
        })
    }
}
