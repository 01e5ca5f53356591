//! Launched jobs, their agents and the relay's token key, as rows ([`JobDb`]): what a job
//! means is the launch module's business (and the shared reducer's,
//! [`stepwatch_events::jobs::JobState::apply`]). Each job row holds its folded state and a
//! version; a change is written only if the version is still the one it was computed
//! from (compare and set), so several relays sharing one database never lose an update,
//! and each change's event goes to the job's history in the same transaction.

use super::error::StoreError;
use stepwatch_events::jobs::{AgentInfo, JobEvent, JobState};

/// One stored job: its folded state, its queue, and the version it was read at.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub state: JobState,
    pub queue: String,
    pub version: i64,
}

/// How many finished jobs [`JobDb::jobs`] returns besides the open ones.
pub const RECENT_FINISHED: usize = 200;

/// Job, agent and key rows, implemented by each backend with its own SQL.
pub trait JobDb: Send + Sync {
    /// One job.
    fn job(&self, id: &str) -> Result<Option<JobRow>, StoreError>;
    /// Every open job, and the newest `recent` finished ones.
    fn jobs(&self, recent: usize) -> Result<Vec<JobRow>, StoreError>;
    /// Writes `state`: a new job when `version` is `None`, else only if the stored row
    /// is still at `version`. `event` joins the job's history. `false`: someone changed
    /// the job first (or, for a new one, its id is taken); nothing was written.
    fn put_job(
        &self,
        state: &JobState,
        queue: &str,
        version: Option<i64>,
        event: Option<&JobEvent>,
    ) -> Result<bool, StoreError>;
    /// The job's full history, oldest first.
    fn job_events(&self, id: &str) -> Result<Vec<JobEvent>, StoreError>;
    /// Records an agent's heartbeat.
    fn put_agent(&self, agent: &AgentInfo) -> Result<(), StoreError>;
    /// Agents heard from since `since` (relay seconds).
    fn agents(&self, since: f64) -> Result<Vec<AgentInfo>, StoreError>;
    /// The relay's key for run tokens (created on first use, shared by every relay on
    /// the same database).
    fn token_key(&self) -> Result<Vec<u8>, StoreError>;
}

/// Whether a job is open, as the `open` column stores it.
pub fn open_flag(state: &JobState) -> bool {
    !state.is_terminal()
}

/// A job row's JSON columns decoded; the error names the job.
pub fn decode_state(job: &str, json: &str) -> Result<JobState, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("job {job}: {e}")))
}

/// A history row decoded.
pub fn decode_event(job: &str, json: &str) -> Result<JobEvent, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("job {job} event: {e}")))
}

/// An agent row decoded.
pub fn decode_agent(json: &str) -> Result<AgentInfo, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("agent: {e}")))
}

/// 32 random bytes as hex, for a new token key.
pub fn new_key() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The key's bytes from its stored hex.
pub fn key_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}
