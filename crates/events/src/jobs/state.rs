//! The job reducer: [`JobState::apply`] folds a job's [`JobEvent`]s, in order, into where it
//! stands, refusing any event the job's state does not allow (a [`TransitionError`] naming
//! both); [`queue_order`] orders queued jobs.
//!
//! queued → claimed (an agent holds a lease) → submitted (the engine has it; one attempt)
//! → running (linked run) → succeeded | failed | cancelled. A lease lost before the engine
//! has the job puts it back in the queue, not counted as an attempt; one lost after leaves
//! it at the engine for another agent to claim again. A failed job with retries left may be
//! requeued; a cancel may be requested in any open state. Finished jobs take no events.

use super::spec::{JobSpec, MAX_RETRIES};
use crate::event::is_valid_run_id;
use crate::template::Rendered;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// How many history rows a state keeps (the first, its submission, is always kept).
pub const MAX_HISTORY: usize = 100;
/// Longest reason kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_REASON_BYTES: usize = 1000;
/// Longest agent name, engine id or user name accepted, in bytes.
const MAX_ID_BYTES: usize = 256;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for an agent.
    #[default]
    Queued,
    /// An agent holds it and is handing it to its engine.
    Claimed,
    /// The engine has it (it may still be waiting there: see `reason`).
    Submitted,
    /// Its run has started.
    Running,
    Succeeded,
    /// Finished with an error; open while retries are left, to be requeued.
    Failed,
    Cancelled,
}

impl JobStatus {
    /// The wire name (`queued`, `running`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Claimed => "claimed",
            JobStatus::Submitted => "submitted",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// One event of a job's history: `{"kind":"claimed","ts":1700000000.5,"agent":"gpu-1","lease_s":30}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// Unix seconds at the relay.
    pub ts: f64,
    #[serde(flatten)]
    pub body: JobEventBody,
}

/// What a job event says, by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobEventBody {
    /// A user submitted the job (the event's `ts` is its submission time).
    Submitted {
        spec: Box<JobSpec>,
        by: String,
        /// The run the job reports to (every attempt continues it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<String>,
        /// What the agent runs, resolved by the relay from the entry point or template.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        launch: Option<Box<Rendered>>,
        /// A retry of a finished job: the checkpoint the first attempt resumes from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_from: Option<String>,
    },
    /// An agent took the job under a lease of `lease_s` seconds.
    Claimed {
        agent: String,
        lease_s: u64,
    },
    /// The holding agent renewed its lease (for the same `lease_s`).
    LeaseRenewed {
        agent: String,
    },
    /// The holding agent's lease ran out (or it let go).
    LeaseLost {
        agent: String,
    },
    /// The engine accepted the job under its own id (Slurm job id, Ray submission id, …).
    EngineSubmitted {
        engine_id: String,
    },
    /// The job's run has started.
    Running {
        run: String,
    },
    /// The engine's word on the job ("Priority", "Resources", a pod event).
    EngineStatus {
        reason: String,
    },
    Succeeded,
    Failed {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
    },
    CancelRequested {
        by: String,
        /// The relay sent the run's trainer the `stop` command: the agent waits the
        /// queue's grace period for it before the engine's stop.
        #[serde(default)]
        stop_command: bool,
    },
    Cancelled {
        reason: String,
    },
    /// Someone moved the job in its queue (while it waits).
    PriorityChanged {
        priority: i32,
        by: String,
    },
    /// A failed job goes back to the queue (one retry used), resuming from a checkpoint.
    Requeued {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_from: Option<String>,
    },
}

impl JobEventBody {
    /// The wire name (`claimed`, `lease_lost`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            JobEventBody::Submitted { .. } => "submitted",
            JobEventBody::Claimed { .. } => "claimed",
            JobEventBody::LeaseRenewed { .. } => "lease_renewed",
            JobEventBody::LeaseLost { .. } => "lease_lost",
            JobEventBody::EngineSubmitted { .. } => "engine_submitted",
            JobEventBody::Running { .. } => "running",
            JobEventBody::EngineStatus { .. } => "engine_status",
            JobEventBody::Succeeded => "succeeded",
            JobEventBody::Failed { .. } => "failed",
            JobEventBody::CancelRequested { .. } => "cancel_requested",
            JobEventBody::Cancelled { .. } => "cancelled",
            JobEventBody::Requeued { .. } => "requeued",
            JobEventBody::PriorityChanged { .. } => "priority_changed",
        }
    }
}

/// An event the job's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {state} job cannot take {event}: {why}")]
pub struct TransitionError {
    /// The job's status (`queued`, …), or `unsubmitted`.
    pub state: &'static str,
    /// The refused event's kind.
    pub event: &'static str,
    pub why: String,
}

/// One row of a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub ts: f64,
    pub kind: String,
    /// The status after the event.
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where one job stands, folded from its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct JobState {
    /// Job id.
    pub job: String,
    /// What was submitted; `None` until the `submitted` event.
    pub spec: Option<JobSpec>,
    pub status: JobStatus,
    /// Who submitted it.
    pub by: Option<String>,
    pub priority: i32,
    /// Times the job was handed to an engine.
    pub attempts: u32,
    pub retries_left: u32,
    /// The agent holding the job's lease.
    pub agent: Option<String>,
    pub lease_s: Option<u64>,
    /// When the current lease runs out (relay seconds).
    pub lease_until: Option<f64>,
    pub engine_id: Option<String>,
    /// The job's run: named at submission when the relay links it, else by `running`.
    pub run: Option<String>,
    /// What the agent runs (argv, cwd, env, the template's typed values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Rendered>,
    /// The latest reason: the engine's words, a failure, a cancel.
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub cancel_requested_by: Option<String>,
    /// The cancel began with the `stop` command to the run's trainer.
    #[serde(default)]
    pub cancel_stop_command: bool,
    /// The checkpoint the next attempt resumes from.
    pub resume_from: Option<String>,
    pub created_at: Option<f64>,
    pub updated_at: Option<f64>,
    /// Oldest first, at most [`MAX_HISTORY`] rows.
    pub history: Vec<HistoryEntry>,
}

impl JobState {
    /// A job with no events yet.
    pub fn new(job: &str) -> Self {
        JobState {
            job: job.to_string(),
            ..Default::default()
        }
    }

    /// Folds events in order into a fresh state, stopping at the first refused one.
    pub fn from_events<'a>(
        job: &str,
        events: impl IntoIterator<Item = &'a JobEvent>,
    ) -> Result<Self, TransitionError> {
        let mut s = JobState::new(job);
        for e in events {
            s.apply(e)?;
        }
        Ok(s)
    }

    /// Finished for good: succeeded, cancelled, or failed with no retry to come.
    pub fn is_terminal(&self) -> bool {
        match self.status {
            JobStatus::Succeeded | JobStatus::Cancelled => true,
            JobStatus::Failed => self.retries_left == 0 || self.cancel_requested_by.is_some(),
            _ => false,
        }
    }

    /// Submitted and not finished for good.
    pub fn is_open(&self) -> bool {
        self.spec.is_some() && !self.is_terminal()
    }

    fn state_name(&self) -> &'static str {
        if self.spec.is_none() {
            "unsubmitted"
        } else {
            self.status.as_str()
        }
    }

    fn refuse(&self, body: &JobEventBody, why: impl Into<String>) -> TransitionError {
        TransitionError {
            state: self.state_name(),
            event: body.kind(),
            why: why.into(),
        }
    }

    /// Applies one event, or refuses it and leaves the state as it was.
    pub fn apply(&mut self, e: &JobEvent) -> Result<(), TransitionError> {
        let body = &e.body;
        if !e.ts.is_finite() {
            return Err(self.refuse(body, "ts is not a finite number"));
        }
        if let JobEventBody::Submitted {
            spec,
            by,
            run,
            launch,
            resume_from,
        } = body
        {
            self.submitted(body, spec, by, e.ts)?;
            if let Some(run) = run {
                if !is_valid_run_id(run) {
                    *self = JobState::new(&self.job);
                    return Err(self.refuse(body, "run: not a run id"));
                }
            }
            self.run.clone_from(run);
            self.launch = launch.as_deref().cloned();
            self.resume_from.clone_from(resume_from);
            return Ok(());
        }
        if self.spec.is_none() {
            return Err(self.refuse(body, "the job was never submitted"));
        }
        if self.is_terminal() {
            return Err(self.refuse(body, "the job is finished"));
        }
        let note = match body {
            JobEventBody::Submitted { .. } => None,
            JobEventBody::Claimed { agent, lease_s } => {
                self.claimed(body, agent, *lease_s, e.ts)?
            }
            JobEventBody::LeaseRenewed { agent } => self.lease_renewed(body, agent, e.ts)?,
            JobEventBody::LeaseLost { agent } => self.lease_lost(body, agent)?,
            JobEventBody::EngineSubmitted { engine_id } => {
                self.engine_submitted(body, engine_id)?
            }
            JobEventBody::Running { run } => self.running(body, run)?,
            JobEventBody::EngineStatus { reason } => {
                self.reason = Some(clip(reason));
                self.reason.clone()
            }
            JobEventBody::Succeeded => {
                self.at_engine(body)?;
                self.finish(JobStatus::Succeeded);
                self.reason = None;
                None
            }
            JobEventBody::Failed { reason, exit_code } => self.failed(body, reason, *exit_code)?,
            JobEventBody::CancelRequested { by, stop_command } => {
                self.cancel_stop_command = *stop_command;
                self.cancel_requested(body, by)?
            }
            JobEventBody::Cancelled { reason } => {
                self.finish(JobStatus::Cancelled);
                self.reason = Some(clip(reason));
                self.reason.clone()
            }
            JobEventBody::Requeued {
                reason,
                resume_from,
            } => self.requeued(body, reason, resume_from)?,
            JobEventBody::PriorityChanged { priority, by } => {
                if self.status != JobStatus::Queued {
                    return Err(self.refuse(body, "only a waiting job is moved in its queue"));
                }
                if priority.unsigned_abs() > super::spec::MAX_PRIORITY.unsigned_abs() {
                    return Err(self.refuse(body, "priority out of range"));
                }
                check_id(by).map_err(|why| self.refuse(body, format!("by: {why}")))?;
                let from = self.priority;
                self.priority = *priority;
                Some(format!("priority {from} → {priority} by {by}"))
            }
        };
        // A renewal changes nothing anyone reads in the history.
        if !matches!(body, JobEventBody::LeaseRenewed { .. }) {
            self.record(e.ts, body.kind(), note);
        }
        Ok(())
    }

    fn submitted(
        &mut self,
        body: &JobEventBody,
        spec: &JobSpec,
        by: &str,
        ts: f64,
    ) -> Result<(), TransitionError> {
        if self.spec.is_some() {
            return Err(self.refuse(body, "the job was already submitted"));
        }
        spec.validate()
            .map_err(|e| self.refuse(body, e.to_string()))?;
        check_id(by).map_err(|why| self.refuse(body, format!("by: {why}")))?;
        self.spec = Some(spec.clone());
        self.by = Some(by.to_string());
        self.priority = spec.priority;
        self.retries_left = spec.max_retries.min(MAX_RETRIES);
        self.status = JobStatus::Queued;
        self.created_at = Some(ts);
        self.record(ts, body.kind(), None);
        Ok(())
    }

    fn claimed(
        &mut self,
        body: &JobEventBody,
        agent: &str,
        lease_s: u64,
        ts: f64,
    ) -> Result<Option<String>, TransitionError> {
        if let Some(holder) = &self.agent {
            return Err(self.refuse(body, format!("agent {holder:?} holds the job")));
        }
        // A cancelled job that waits is never handed out; one at its engine is, so that an
        // agent can end what its dead agent left running.
        if self.cancel_requested_by.is_some() && self.status == JobStatus::Queued {
            return Err(self.refuse(body, "a cancel was requested"));
        }
        if !matches!(
            self.status,
            JobStatus::Queued | JobStatus::Submitted | JobStatus::Running
        ) {
            return Err(self.refuse(body, "only a queued job, or one its engine has, is claimed"));
        }
        check_id(agent).map_err(|why| self.refuse(body, format!("agent: {why}")))?;
        if !(1..=86_400).contains(&lease_s) {
            return Err(self.refuse(body, "lease_s must be 1..=86400"));
        }
        self.agent = Some(agent.to_string());
        self.lease_s = Some(lease_s);
        self.lease_until = Some(ts + lease_s as f64);
        if self.status == JobStatus::Queued {
            self.status = JobStatus::Claimed;
        }
        Ok(Some(format!("agent {agent}")))
    }

    fn holder_is(&self, body: &JobEventBody, agent: &str) -> Result<(), TransitionError> {
        match &self.agent {
            Some(holder) if holder == agent => Ok(()),
            Some(holder) => Err(self.refuse(
                body,
                format!("agent {holder:?} holds the job, not {agent:?}"),
            )),
            None => Err(self.refuse(body, "no agent holds the job")),
        }
    }

    fn lease_renewed(
        &mut self,
        body: &JobEventBody,
        agent: &str,
        ts: f64,
    ) -> Result<Option<String>, TransitionError> {
        self.holder_is(body, agent)?;
        self.lease_until = self.lease_s.map(|s| ts + s as f64);
        Ok(None)
    }

    fn lease_lost(
        &mut self,
        body: &JobEventBody,
        agent: &str,
    ) -> Result<Option<String>, TransitionError> {
        self.holder_is(body, agent)?;
        self.agent = None;
        self.lease_s = None;
        self.lease_until = None;
        if self.status == JobStatus::Claimed {
            self.status = JobStatus::Queued;
        }
        Ok(Some(format!("agent {agent} lost its lease")))
    }

    fn engine_submitted(
        &mut self,
        body: &JobEventBody,
        engine_id: &str,
    ) -> Result<Option<String>, TransitionError> {
        if self.status != JobStatus::Claimed {
            return Err(self.refuse(body, "only a claimed job is handed to an engine"));
        }
        check_id(engine_id).map_err(|why| self.refuse(body, format!("engine_id: {why}")))?;
        self.engine_id = Some(engine_id.to_string());
        self.attempts += 1;
        self.status = JobStatus::Submitted;
        Ok(Some(format!("engine id {engine_id}")))
    }

    fn running(
        &mut self,
        body: &JobEventBody,
        run: &str,
    ) -> Result<Option<String>, TransitionError> {
        if self.status != JobStatus::Submitted {
            return Err(self.refuse(body, "only a job its engine has starts running"));
        }
        if !is_valid_run_id(run) {
            return Err(self.refuse(body, "run: not a run id"));
        }
        if let Some(linked) = &self.run {
            if linked != run {
                return Err(self.refuse(body, format!("the job reports to run {linked:?}")));
            }
        }
        self.run = Some(run.to_string());
        self.status = JobStatus::Running;
        // The engine's waiting words ("PENDING (Resources)") no longer hold.
        self.reason = None;
        Ok(None)
    }

    /// Succeeded and failed need the engine (or, for failed, the claiming agent) to have it.
    fn at_engine(&self, body: &JobEventBody) -> Result<(), TransitionError> {
        if matches!(self.status, JobStatus::Submitted | JobStatus::Running) {
            Ok(())
        } else {
            Err(self.refuse(body, "the engine does not have the job"))
        }
    }

    fn failed(
        &mut self,
        body: &JobEventBody,
        reason: &str,
        exit_code: Option<i32>,
    ) -> Result<Option<String>, TransitionError> {
        if self.status != JobStatus::Claimed {
            self.at_engine(body)?;
        }
        self.finish(JobStatus::Failed);
        self.reason = Some(clip(reason));
        self.exit_code = exit_code;
        Ok(self.reason.clone())
    }

    fn cancel_requested(
        &mut self,
        body: &JobEventBody,
        by: &str,
    ) -> Result<Option<String>, TransitionError> {
        if let Some(first) = &self.cancel_requested_by {
            return Err(self.refuse(body, format!("{first:?} already requested a cancel")));
        }
        check_id(by).map_err(|why| self.refuse(body, format!("by: {why}")))?;
        self.cancel_requested_by = Some(by.to_string());
        Ok(Some(format!("requested by {by}")))
    }

    fn requeued(
        &mut self,
        body: &JobEventBody,
        reason: &str,
        resume_from: &Option<String>,
    ) -> Result<Option<String>, TransitionError> {
        if self.status != JobStatus::Failed {
            return Err(self.refuse(body, "only a failed job is requeued"));
        }
        if let Some(path) = resume_from {
            if path.len() > 4096 || path.contains('\0') {
                return Err(self.refuse(body, "resume_from: over 4096 bytes or has a NUL"));
            }
        }
        // is_terminal() already refused a failed job with no retries left or a cancel.
        self.retries_left -= 1;
        self.status = JobStatus::Queued;
        self.agent = None;
        self.lease_s = None;
        self.lease_until = None;
        self.engine_id = None;
        self.exit_code = None;
        self.resume_from = resume_from.clone();
        self.reason = Some(clip(reason));
        Ok(self.reason.clone())
    }

    /// Into a final (or, for failed, possibly final) status: the lease ends with it.
    fn finish(&mut self, status: JobStatus) {
        self.status = status;
        self.agent = None;
        self.lease_s = None;
        self.lease_until = None;
    }

    fn record(&mut self, ts: f64, kind: &str, reason: Option<String>) {
        self.updated_at = Some(ts);
        if let Some(last) = self.history.last() {
            if last.kind == kind && last.status == self.status && last.reason == reason {
                return;
            }
        }
        if self.history.len() >= MAX_HISTORY {
            self.history.remove(1);
        }
        self.history.push(HistoryEntry {
            ts,
            kind: kind.to_string(),
            status: self.status,
            reason,
        });
    }
}

/// An agent name, engine id or user name: non-empty, bounded, no control characters.
fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("must not be empty")
    } else if id.len() > MAX_ID_BYTES {
        Err("longer than 256 bytes")
    } else if id.chars().any(char::is_control) {
        Err("contains a control character")
    } else {
        Ok(())
    }
}

/// `text` cut to at most [`MAX_REASON_BYTES`], at a character boundary.
fn clip(text: &str) -> String {
    let mut end = text.len().min(MAX_REASON_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The order a queue hands jobs out in: higher priority first, then earlier submission,
/// then job id.
pub fn queue_order(a: &JobState, b: &JobState) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| match (a.created_at, b.created_at) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.job.cmp(&b.job))
}
