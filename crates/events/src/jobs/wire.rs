//! The launch API's bodies and answers, shared by the relay, the agent and the dashboard:
//! queues and their agents ([`QueueInfo`], [`AgentInfo`]), a job as the API shows it
//! ([`JobView`]), what an agent sends ([`Heartbeat`], [`Report`]) and what a claim hands
//! it ([`Launch`]). The routes are listed in `docs/LAUNCH.md`.

use super::spec::Resources;
use super::state::JobState;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Seconds after its last heartbeat that an agent still counts as alive.
pub const AGENT_ALIVE_S: f64 = 15.0;

/// A queue, as `GET /api/queues` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QueueInfo {
    pub name: String,
    /// `local`, `slurm`, `ray` or `kubernetes`.
    pub engine: String,
    #[serde(default)]
    pub description: String,
    /// Roles that may submit to it.
    #[serde(default)]
    pub submit_roles: Vec<String>,
    /// Roles that may give a free-form entry point (argv) instead of a template.
    #[serde(default)]
    pub free_form_roles: Vec<String>,
    /// Resources a job gets when it names none.
    #[serde(default)]
    pub defaults: Resources,
    /// The most a job may ask for.
    #[serde(default)]
    pub limits: Resources,
    /// Seconds between the `stop` command and the engine's kill, on cancel.
    #[serde(default)]
    pub cancel_grace_s: u64,
    /// Agents that served this queue lately.
    #[serde(default)]
    pub agents: Vec<AgentInfo>,
    /// Jobs waiting, and jobs at the engine.
    #[serde(default)]
    pub queued: usize,
    #[serde(default)]
    pub active: usize,
    /// Whether the caller may submit here, and give a free-form entry.
    #[serde(default)]
    pub may_submit: bool,
    #[serde(default)]
    pub may_free_form: bool,
}

impl QueueInfo {
    /// Agents heard from in the last [`AGENT_ALIVE_S`] seconds.
    pub fn live_agents(&self) -> impl Iterator<Item = &AgentInfo> {
        self.agents.iter().filter(|a| a.alive)
    }
}

/// An agent, from its heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AgentInfo {
    pub agent: String,
    pub queue: String,
    pub engine: String,
    #[serde(default)]
    pub host: String,
    /// Jobs it runs at once, and jobs it holds now.
    #[serde(default)]
    pub slots: u32,
    #[serde(default)]
    pub busy: u32,
    /// Relay seconds of its last heartbeat.
    #[serde(default)]
    pub last_seen: f64,
    /// Heard from within [`AGENT_ALIVE_S`].
    #[serde(default)]
    pub alive: bool,
    #[serde(default)]
    pub version: String,
}

/// A job as the API shows it: its folded state, and where it stands in its queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct JobView {
    #[serde(flatten)]
    pub state: JobState,
    pub queue: String,
    pub engine: String,
    /// 1-based place among the queue's waiting jobs, while queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    /// Whether the agent holding it (or, while queued, any agent of the queue) is alive.
    #[serde(default)]
    pub agent_alive: bool,
    /// Why it waits, in plain words, when no engine reason says it ("no live agent serves
    /// queue gpu", "3 jobs ahead").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Whether its run has a live trainer (so a cancel begins with the `stop` command).
    #[serde(default)]
    pub run_live: bool,
}

/// `POST /api/jobs`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    pub job: String,
    pub run: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    /// Said at submit time: "no live agent serves queue gpu: the job waits until one starts".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `POST /api/jobs/preview`'s answer: what would run, before submitting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Preview {
    pub argv: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The template's typed values (the run's config).
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
    pub resources: Resources,
    /// With `clone_of`: each config key whose value differs from the cloned run's,
    /// as `[key, old, new]` (old or new `null` when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<(String, Value, Value)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What an agent sends every few seconds (`POST /api/agents/heartbeat`); renews the lease
/// of every job in `jobs` it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Heartbeat {
    pub agent: String,
    pub queue: String,
    pub engine: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub slots: u32,
    /// The jobs it holds.
    #[serde(default)]
    pub jobs: Vec<String>,
    #[serde(default)]
    pub version: String,
}

/// The heartbeat's answer: the held jobs as they stand (a cancel requested, a job lost),
/// and the lease it renewed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HeartbeatAnswer {
    pub lease_s: u64,
    pub jobs: Vec<JobView>,
}

/// An agent's word on a job it holds (`POST /api/jobs/{id}/report`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Report {
    pub agent: String,
    /// `engine_submitted`, `engine_status`, `running`, `succeeded`, `failed`, `cancelled`
    /// or `released` (the agent lets go of the job before handing it to the engine).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// What a claim hands an agent: everything it needs to start (or adopt) the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Launch {
    pub job: String,
    pub name: String,
    pub queue: String,
    pub run: String,
    /// This attempt, from 1.
    pub attempt: u32,
    /// The job's name at the engine for this attempt (`sw-<job>-<attempt>`): the agent
    /// looks for it before starting, so a job is started at most once.
    pub key: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// The job's environment, with `STEPWATCH_RUN`, `STEPWATCH_JOB`, `STEPWATCH_TOKEN`
    /// and, on a retry, `STEPWATCH_RESUME_FROM` (the agent adds `STEPWATCH_URL`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub resources: Resources,
    /// The queue's engine's extras, the job's over the queue's defaults.
    #[serde(default)]
    pub extras: Map<String, Value>,
    /// `claimed` (start it), or `submitted` / `running` (the engine has it: adopt it).
    pub status: String,
    #[serde(default)]
    pub engine_id: Option<String>,
    #[serde(default)]
    pub resume_from: Option<String>,
    /// Lease seconds: heartbeat well within them.
    pub lease_s: u64,
    /// Seconds between the `stop` command and the engine's kill, on cancel.
    pub cancel_grace_s: u64,
}
