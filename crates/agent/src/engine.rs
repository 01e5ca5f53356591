//! What every engine does for the agent, behind one trait: start a job (at most once, by
//! its key), say where it stands, stop it gently, kill it, and hand over its output.

use stepwatch_events::jobs::Launch;

/// An engine's failure, in words for the job's history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine refused the job for good (bad extras, an unknown partition): the job fails.
    #[error("{0}")]
    Refused(String),
    /// The engine could not be reached or answered oddly: try again later.
    #[error("{0}")]
    Unavailable(String),
}

/// Where a job stands at its engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Accepted, not started; `reason` in the engine's words ("Priority", "Resources").
    Pending {
        reason: String,
    },
    /// Its processes run.
    Running,
    Succeeded,
    Failed {
        reason: String,
        exit_code: Option<i32>,
    },
    /// Ended by a cancel (the engine's word, or killed by the agent).
    Cancelled {
        reason: String,
    },
    /// The engine no longer knows the job (and the agent has no record of its end).
    Gone,
}

impl Observed {
    /// Finished, one way or another.
    pub fn is_final(&self) -> bool {
        !matches!(self, Observed::Pending { .. } | Observed::Running)
    }
}

/// One line the job printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub text: String,
}

/// An engine the agent hands jobs to. Every method may block (it runs on the agent's own
/// threads) but should answer within seconds.
pub trait Engine: Send + Sync {
    /// `local`, `slurm`, `ray` or `kubernetes`.
    fn name(&self) -> &'static str;

    /// Starts the job, or, when the engine already has one under `launch.key` (an agent
    /// died after starting it), returns that one's id without starting another.
    fn start(&self, launch: &Launch) -> Result<String, EngineError>;

    /// Where the job with this engine id stands.
    fn status(&self, engine_id: &str, launch: &Launch) -> Result<Observed, EngineError>;

    /// Asks the job to end (SIGTERM to its processes); it may save and exit.
    fn stop(&self, engine_id: &str) -> Result<(), EngineError>;

    /// Ends the job now, and everything it started.
    fn kill(&self, engine_id: &str) -> Result<(), EngineError>;

    /// Lines printed since the last call (at most `max`), for the run's log when the
    /// trainer does not report itself. Engines that cannot read output return none.
    fn output(&self, _engine_id: &str, _max: usize) -> Vec<OutputLine> {
        Vec::new()
    }
}
