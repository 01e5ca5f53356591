//! SQLite's job, agent and key rows ([`JobDb`]), on a connection of their own so job
//! changes never wait behind an ingest batch in this process (SQLite still takes one
//! writer at a time; the busy timeout covers the wait).

use super::SqliteStore;
use crate::storage::error::StoreError;
use crate::storage::jobs::{
    decode_agent, decode_event, decode_state, key_bytes, new_key, open_flag, JobDb, JobRow,
};
use rusqlite::{params, OptionalExtension};
use stepwatch_events::jobs::{AgentInfo, JobEvent, JobState};

/// The jobs tables (schema 3).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    job     TEXT PRIMARY KEY,
    queue   TEXT NOT NULL,
    open    INTEGER NOT NULL,
    version INTEGER NOT NULL,
    state   TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs (open, updated);
CREATE TABLE IF NOT EXISTS job_events (
    job  TEXT NOT NULL,
    n    INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agents (
    agent TEXT NOT NULL,
    queue TEXT NOT NULL,
    seen  REAL NOT NULL,
    info  TEXT NOT NULL,
    PRIMARY KEY (agent, queue)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, i64, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_row(
    (job, queue, version, json): (String, String, i64, String),
) -> Result<JobRow, StoreError> {
    Ok(JobRow {
        state: decode_state(&job, &json)?,
        queue,
        version,
    })
}

impl JobDb for SqliteStore {
    fn job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        let conn = self.jobs_conn()?;
        let found = conn
            .query_row(
                "SELECT job, queue, version, state FROM jobs WHERE job = ?1",
                [id],
                row,
            )
            .optional()?;
        found.map(to_row).transpose()
    }

    fn jobs(&self, recent: usize) -> Result<Vec<JobRow>, StoreError> {
        let conn = self.jobs_conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT job, queue, version, state FROM jobs WHERE open = 1
             UNION ALL
             SELECT * FROM (SELECT job, queue, version, state FROM jobs WHERE open = 0
                            ORDER BY updated DESC LIMIT ?1)",
        )?;
        let rows = stmt.query_map([recent as i64], row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(to_row(r?)?);
        }
        Ok(out)
    }

    fn put_job(
        &self,
        state: &JobState,
        queue: &str,
        version: Option<i64>,
        event: Option<&JobEvent>,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(state)
            .map_err(|e| StoreError::Backend(format!("job {}: {e}", state.job)))?;
        let created = state.created_at.unwrap_or(0.0);
        let updated = state.updated_at.unwrap_or(created);
        let mut conn = self.jobs_conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (written, new_version) = match version {
            None => (
                tx.execute(
                    "INSERT OR IGNORE INTO jobs (job, queue, open, version, state, created, updated)
                     VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6)",
                    params![state.job, queue, open_flag(state), json, created, updated],
                )?,
                1,
            ),
            Some(v) => (
                tx.execute(
                    "UPDATE jobs SET open = ?2, version = ?3, state = ?4, updated = ?5
                     WHERE job = ?1 AND version = ?6",
                    params![state.job, open_flag(state), v + 1, json, updated, v],
                )?,
                v + 1,
            ),
        };
        if written == 0 {
            return Ok(false);
        }
        if let Some(e) = event {
            let data = serde_json::to_string(e)
                .map_err(|e| StoreError::Backend(format!("job {} event: {e}", state.job)))?;
            tx.execute(
                "INSERT INTO job_events (job, n, data) VALUES (?1, ?2, ?3)",
                params![state.job, new_version, data],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn job_events(&self, id: &str) -> Result<Vec<JobEvent>, StoreError> {
        let conn = self.jobs_conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT data FROM job_events WHERE job = ?1 ORDER BY n")?;
        let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(decode_event(id, &r?)?);
        }
        Ok(out)
    }

    fn put_agent(&self, agent: &AgentInfo) -> Result<(), StoreError> {
        let info =
            serde_json::to_string(agent).map_err(|e| StoreError::Backend(format!("agent: {e}")))?;
        self.jobs_conn()?.execute(
            "INSERT INTO agents (agent, queue, seen, info) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (agent, queue) DO UPDATE SET seen = ?3, info = ?4",
            params![agent.agent, agent.queue, agent.last_seen, info],
        )?;
        Ok(())
    }

    fn agents(&self, since: f64) -> Result<Vec<AgentInfo>, StoreError> {
        let conn = self.jobs_conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT info FROM agents WHERE seen >= ?1 ORDER BY queue, agent")?;
        let rows = stmt.query_map([since], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(decode_agent(&r?)?);
        }
        Ok(out)
    }

    fn token_key(&self) -> Result<Vec<u8>, StoreError> {
        let conn = self.jobs_conn()?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('token_key', ?1)",
            [new_key()],
        )?;
        let hex: String =
            conn.query_row("SELECT value FROM meta WHERE key = 'token_key'", [], |r| {
                r.get(0)
            })?;
        Ok(key_bytes(&hex))
    }
}
