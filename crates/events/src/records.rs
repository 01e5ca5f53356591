//! The parts of a run's state, plain data: its status, checkpoint rows, best validation
//! loss, control commands and last error, with the limits the reducer keeps them to.

use crate::num;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// How many checkpoints a state keeps (newest last).
pub const MAX_CHECKPOINTS: usize = 100;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Events arrived but no `training_start` yet.
    #[default]
    Pending,
    Running,
    Paused,
    Completed,
    Failed,
    Stopped,
}

impl RunStatus {
    /// The wire name (`running`, `completed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Stopped => "stopped",
        }
    }

    /// Still going: running, paused or pending.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            RunStatus::Pending | RunStatus::Running | RunStatus::Paused
        )
    }
}

/// One saved checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Checkpoint {
    pub path: String,
    pub epoch: Option<u64>,
    pub step: Option<u64>,
    pub size_bytes: Option<u64>,
    /// Trainer time of the save.
    #[serde(with = "num::opt", default)]
    pub time: Option<f64>,
    #[serde(with = "num::map", default)]
    pub metrics: BTreeMap<String, f64>,
    /// Earlier saves to the same path, which this one overwrote (one row per file: what
    /// a Load would read is what is on disk now).
    #[serde(default)]
    pub overwrites: u64,
}

/// The best value of a run's validation loss (`val_loss`, `val/loss`, `eval_loss` …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BestMetric {
    pub metric: String,
    #[serde(with = "num::float")]
    pub value: f64,
    pub step: u64,
}

/// Whether a metric name is a validation loss: `val_loss`, `val/loss`, `valid_loss`,
/// `validation/loss`, `eval_loss`, `eval/loss`, `val_loss_epoch` (any case).
pub fn is_validation_loss(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["val", "valid", "validation", "eval"].iter().any(|p| {
        n.strip_prefix(p)
            .and_then(|rest| rest.strip_prefix(['_', '/', '-', '.']))
            .is_some_and(|rest| rest == "loss" || rest.starts_with("loss_"))
    })
}

/// How many commands a state keeps (newest last).
pub const MAX_COMMANDS: usize = 100;

/// How many messages a command keeps.
pub const MAX_COMMAND_MESSAGES: usize = 10;

/// The commands a relay accepts.
pub const COMMANDS: [&str; 5] = ["pause", "resume", "stop", "load_checkpoint", "ask"];

/// One control command and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CommandState {
    pub id: String,
    pub command: String,
    pub args: Map<String, Value>,
    /// `pending` (sent, no answer), `accepted`, `done`, `rejected`, `failed`, `cancelled`.
    pub status: String,
    /// The trainer's latest word on it.
    pub message: Option<String>,
    /// Every message the trainer sent about it, oldest first (at most
    /// [`MAX_COMMAND_MESSAGES`]): what it is doing, step by step ("stop accepted; this
    /// loop does not check should_stop(): interrupting at the next step", "interrupting
    /// the loop at step 44 (KeyboardInterrupt)", "stopped").
    #[serde(default)]
    pub messages: Vec<String>,
    pub output: Option<Value>,
    pub sender: Option<String>,
    #[serde(with = "num::opt", default)]
    pub sent_at: Option<f64>,
    #[serde(with = "num::opt", default)]
    pub updated_at: Option<f64>,
    /// Id of the `command` event (commands are carried out in this order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u64>,
    /// A distributed run's answers: each rank's latest status, by rank (`""` for a rank
    /// that has not answered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranks: Vec<String>,
    /// Ranks that have not acted on it yet (distributed runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<u64>,
    /// The run's step when its output came (an `ask`'s answer belongs to that step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

impl CommandState {
    /// Not finished: the trainer still has to act on it (pending or accepted).
    pub fn is_open(&self) -> bool {
        matches!(self.status.as_str(), "pending" | "accepted")
    }
}

/// The last error a run reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LastError {
    pub message: String,
    pub traceback: Option<String>,
    pub fatal: bool,
    #[serde(with = "num::opt", default)]
    pub time: Option<f64>,
    /// The rank it came from, in a distributed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u64>,
}
