//! Jobs launched from the dashboard (issue 15), as plain data and one reducer: what a
//! user submits ([`JobSpec`], checked by [`JobSpec::validate`] and [`JobSpec::from_value`]),
//! the job's history ([`JobEvent`]) and [`JobState::apply`], which the relay and the
//! dashboard both use to fold that history, as [`crate::RunState::apply`] does for runs.
//! [`queue_order`] is the order a queue hands jobs out in.

mod parse;
mod spec;
mod state;
pub mod wire;

pub use spec::{
    Engine, Entry, FieldError, JobSpec, Resources, ENGINES, MAX_ARGS, MAX_ARG_BYTES, MAX_ENV,
    MAX_EXTRA_BYTES, MAX_NAME_BYTES, MAX_PARAMS, MAX_PARAM_BYTES, MAX_PRIORITY, MAX_RETRIES,
    RESERVED_ENV_PREFIX,
};
pub use state::{
    queue_order, HistoryEntry, JobEvent, JobEventBody, JobState, JobStatus, TransitionError,
    MAX_HISTORY, MAX_REASON_BYTES,
};
pub use wire::{
    AgentInfo, Heartbeat, HeartbeatAnswer, JobView, Launch, Preview, QueueInfo, Report, Submitted,
    AGENT_ALIVE_S,
};
