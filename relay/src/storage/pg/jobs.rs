//! PostgreSQL's job, agent and key rows ([`JobDb`]), shared by every relay on the
//! database: a change is a compare and set on the job's version, so two relays handing
//! out the same queue never give one job to two agents.

use super::PgStore;
use crate::storage::error::StoreError;
use crate::storage::jobs::{
    decode_agent, decode_event, decode_state, key_bytes, new_key, open_flag, JobDb, JobRow,
};
use stepwatch_events::jobs::{AgentInfo, JobEvent, JobState};

fn to_row(r: &postgres::Row) -> Result<JobRow, StoreError> {
    let job: String = r.get(0);
    let json: String = r.get(3);
    Ok(JobRow {
        state: decode_state(&job, &json)?,
        queue: r.get(1),
        version: r.get(2),
    })
}

fn encode<T: serde::Serialize>(what: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(format!("{what}: {e}")))
}

impl JobDb for PgStore {
    fn job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        self.pool.read_conn(|c| {
            c.client
                .query_opt(
                    "SELECT job, queue, version, state FROM jobs WHERE job = $1",
                    &[&id],
                )?
                .as_ref()
                .map(to_row)
                .transpose()
        })
    }

    fn jobs(&self, recent: usize) -> Result<Vec<JobRow>, StoreError> {
        let recent = recent as i64;
        self.pool.read_conn(|c| {
            c.client
                .query(
                    "SELECT job, queue, version, state FROM jobs WHERE open
                     UNION ALL
                     (SELECT job, queue, version, state FROM jobs WHERE NOT open
                      ORDER BY updated DESC LIMIT $1)",
                    &[&recent],
                )?
                .iter()
                .map(to_row)
                .collect()
        })
    }

    fn put_job(
        &self,
        state: &JobState,
        queue: &str,
        version: Option<i64>,
        event: Option<&JobEvent>,
    ) -> Result<bool, StoreError> {
        let json = encode("job", state)?;
        let data = event.map(|e| encode("job event", e)).transpose()?;
        let created = state.created_at.unwrap_or(0.0);
        let updated = state.updated_at.unwrap_or(created);
        let open = open_flag(state);
        self.pool.with_conn(|c| {
            let mut tx = c.client.transaction()?;
            let (written, n) = match version {
                None => (
                    tx.execute(
                        "INSERT INTO jobs (job, queue, open, version, state, created, updated)
                         VALUES ($1, $2, $3, 1, $4, $5, $6) ON CONFLICT (job) DO NOTHING",
                        &[&state.job, &queue, &open, &json, &created, &updated],
                    )?,
                    1i64,
                ),
                Some(v) => (
                    tx.execute(
                        "UPDATE jobs SET open = $2, version = $3, state = $4, updated = $5
                         WHERE job = $1 AND version = $6",
                        &[&state.job, &open, &(v + 1), &json, &updated, &v],
                    )?,
                    v + 1,
                ),
            };
            if written == 0 {
                return Ok(false);
            }
            if let Some(data) = &data {
                tx.execute(
                    "INSERT INTO job_events (job, n, data) VALUES ($1, $2, $3)",
                    &[&state.job, &n, data],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
    }

    fn job_events(&self, id: &str) -> Result<Vec<JobEvent>, StoreError> {
        self.pool.read_conn(|c| {
            c.client
                .query(
                    "SELECT data FROM job_events WHERE job = $1 ORDER BY n",
                    &[&id],
                )?
                .iter()
                .map(|r| decode_event(id, r.get(0)))
                .collect()
        })
    }

    fn put_agent(&self, agent: &AgentInfo) -> Result<(), StoreError> {
        let info = encode("agent", agent)?;
        self.pool.with_conn(|c| {
            c.client.execute(
                "INSERT INTO agents (agent, queue, seen, info) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (agent, queue) DO UPDATE SET seen = $3, info = $4",
                &[&agent.agent, &agent.queue, &agent.last_seen, &info],
            )?;
            Ok(())
        })
    }

    fn agents(&self, since: f64) -> Result<Vec<AgentInfo>, StoreError> {
        self.pool.read_conn(|c| {
            c.client
                .query(
                    "SELECT info FROM agents WHERE seen >= $1 ORDER BY queue, agent",
                    &[&since],
                )?
                .iter()
                .map(|r| decode_agent(r.get(0)))
                .collect()
        })
    }

    fn token_key(&self) -> Result<Vec<u8>, StoreError> {
        let fresh = new_key();
        self.pool.with_conn(|c| {
            c.client.execute(
                "INSERT INTO meta (key, value) VALUES ('token_key', $1) ON CONFLICT (key) DO NOTHING",
                &[&fresh],
            )?;
            let hex: String = c
                .client
                .query_one("SELECT value FROM meta WHERE key = 'token_key'", &[])?
                .get(0);
            Ok(key_bytes(&hex))
        })
    }
}
