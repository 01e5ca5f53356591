//! Launching jobs: the relay holds the queues, hands jobs to agents and follows them.
//!
//! [`Launcher`] is everything the launch API does, over [`crate::storage::jobs::JobDb`]
//! rows and the shared reducer [`JobState::apply`]. Every change is read, applied to the
//! job's state, and written only if nobody changed the job meanwhile (compare and set,
//! retried), so several relays on one PostgreSQL database agree; each change's event
//! joins the job's history and is published to the job streams.
//!
//! - [`config`]: `--launch launch.toml` (queues, templates) and `serve --demo`'s;
//! - [`submit`]: checking a submission (queue roles, free-form only for the roles the
//!   queue names, the template's typed parameters, resources within the queue's limits)
//!   and queueing it; preview with the config diff of a re-run; cancel and retry;
//! - [`agents`]: heartbeats and leases, claims (at most one agent holds a job; a job
//!   whose agent died goes back to the queue, or to the next agent to adopt it at its
//!   engine), reports, automatic retries, the sweep of expired leases;
//! - [`tokens`]: the token a job's trainer gets, which may write that run only;
//! - [`views`]: a job as the API shows it (position, agent alive, why it waits).

pub mod agents;
pub mod config;
pub mod submit;
pub mod tokens;
pub mod views;

#[cfg(test)]
mod tests;

use crate::api::ApiError;
use crate::clock::now;
use crate::storage::jobs::{JobRow, RECENT_FINISHED};
use crate::storage::Storage;
pub use config::{LaunchConfig, QueueConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use stepwatch_events::jobs::{JobEvent, JobEventBody, JobState, JobStatus, JobView};
use tokio::sync::broadcast;

/// Attempts of one compare-and-set change before giving up (others kept changing it).
const CAS_TRIES: usize = 8;

/// The relay's launch side.
pub struct Launcher {
    pub config: LaunchConfig,
    store: Arc<dyn Storage>,
    /// Every job change, as its view's JSON, for the job streams.
    changes: broadcast::Sender<Arc<(String, String)>>,
    /// The version of each job last published, so changes made by other relays are
    /// published by the sweep.
    published: Mutex<HashMap<String, i64>>,
    /// Each job's run, and whether the job is open (for run tokens).
    job_runs: RwLock<HashMap<String, (String, bool)>>,
    /// Which job reports to each run (the newest) and its status, for the ingest hook.
    run_jobs: RwLock<HashMap<String, (String, JobStatus)>>,
    tokens: tokens::Tokens,
}

impl Launcher {
    pub fn new(store: Arc<dyn Storage>, config: LaunchConfig) -> Launcher {
        let (changes, _) = broadcast::channel(1024);
        // Nothing is read here (this may run on an async thread, where the PostgreSQL
        // client must not block): the first sweep learns the stored jobs.
        Launcher {
            config,
            tokens: tokens::Tokens::default(),
            store,
            changes,
            published: Mutex::new(HashMap::new()),
            run_jobs: RwLock::new(HashMap::new()),
            job_runs: RwLock::new(HashMap::new()),
        }
    }

    /// Whether any queue is configured.
    pub fn enabled(&self) -> bool {
        !self.config.queues.is_empty()
    }

    fn remember(&self, row: &JobRow) {
        if let Some(run) = &row.state.run {
            if let Ok(mut m) = self.run_jobs.write() {
                m.insert(run.clone(), (row.state.job.clone(), row.state.status));
            }
            if let Ok(mut m) = self.job_runs.write() {
                m.insert(
                    row.state.job.clone(),
                    (run.clone(), !row.state.is_terminal()),
                );
            }
        }
        if let Ok(mut p) = self.published.lock() {
            p.insert(row.state.job.clone(), row.version);
        }
    }

    /// Subscribes to job changes: `(queue, view JSON)`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<(String, String)>> {
        self.changes.subscribe()
    }

    /// Tells the job streams about a change (and remembers it as published).
    fn publish(&self, row: &JobRow) {
        self.remember(row);

        let view = self.view(row, &self.context());
        if let Ok(json) = serde_json::to_string(&view) {
            let _ = self.changes.send(Arc::new((row.queue.clone(), json)));
        }
    }

    /// One job's row; 404 naming it otherwise.
    pub fn row(&self, id: &str) -> Result<JobRow, ApiError> {
        self.store
            .jobs()
            .job(id)?
            .ok_or_else(|| ApiError::not_found(format!("no job {id:?}")))
    }

    /// Applies the events `decide` returns to the job, compare-and-set, retried while
    /// others change it first. `decide` sees the current state; it may refuse. The
    /// events it returns are applied in order (the reducer may refuse one: 409) and the
    /// last is stored in the history; an empty list changes nothing.
    pub fn change(
        &self,
        id: &str,
        decide: impl Fn(&JobRow) -> Result<Vec<JobEventBody>, ApiError>,
        keep_history: bool,
    ) -> Result<JobRow, ApiError> {
        for _ in 0..CAS_TRIES {
            let row = self.row(id)?;
            let bodies = decide(&row)?;
            if bodies.is_empty() {
                return Ok(row);
            }
            let mut state = row.state.clone();
            let ts = now();
            let mut last = None;
            for body in bodies {
                let e = JobEvent { ts, body };
                state
                    .apply(&e)
                    .map_err(|t| ApiError::conflict(t.to_string()))?;
                last = Some(e);
            }
            let event = if keep_history { last.as_ref() } else { None };
            if self
                .store
                .jobs()
                .put_job(&state, &row.queue, Some(row.version), event)?
            {
                let new = JobRow {
                    state,
                    queue: row.queue,
                    version: row.version + 1,
                };
                self.publish(&new);
                return Ok(new);
            }
        }
        Err(ApiError::unavailable(format!(
            "job {id:?} kept changing under this request: retry"
        )))
    }

    /// Every open job and the recent finished ones.
    pub fn rows(&self) -> Result<Vec<JobRow>, ApiError> {
        Ok(self.store.jobs().jobs(RECENT_FINISHED)?)
    }

    /// The job that reports to `run`, if any.
    pub fn job_of_run(&self, run: &str) -> Option<String> {
        Some(self.run_jobs.read().ok()?.get(run)?.0.clone())
    }

    /// The ingest hook: events arrived for `run`. A job whose engine has it and whose
    /// run just spoke is running.
    pub fn saw_run(&self, run: &str) {
        let job = match self.run_jobs.read().ok().and_then(|m| m.get(run).cloned()) {
            Some((job, JobStatus::Submitted)) => job,
            _ => return,
        };
        let run = run.to_string();
        let _ = self.change(
            &job,
            |row| {
                Ok(
                    if row.state.status == JobStatus::Submitted
                        && row.state.run.as_deref() == Some(run.as_str())
                    {
                        vec![JobEventBody::Running { run: run.clone() }]
                    } else {
                        Vec::new()
                    },
                )
            },
            true,
        );
    }

    /// The state of a run, for views and checkpoints.
    fn run_state(&self, run: &str) -> Option<Arc<stepwatch_events::RunState>> {
        self.store.state(run)
    }

    /// New: the state of a brand-new job, stored (its id must be free).
    fn insert(&self, state: &JobState, queue: &str, event: &JobEvent) -> Result<JobRow, ApiError> {
        if !self.store.jobs().put_job(state, queue, None, Some(event))? {
            return Err(ApiError::conflict(format!(
                "job id {:?} is taken: submit again",
                state.job
            )));
        }
        let row = JobRow {
            state: state.clone(),
            queue: queue.to_string(),
            version: 1,
        };
        self.publish(&row);
        Ok(row)
    }

    /// Views of the jobs `rows`, with positions and agent liveness.
    pub fn views(&self, rows: &[JobRow]) -> Vec<JobView> {
        let ctx = self.context_with(rows);
        rows.iter().map(|r| self.view(r, &ctx)).collect()
    }
}
