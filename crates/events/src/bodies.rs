//! The typed event bodies: one struct per known event name, every field optional, and
//! the fields a body does not name kept in `extra`.

use crate::fields::{take, write_key, EventError, Field, Metrics};
use crate::pairs::Source;
use serde_json::{Map, Value};

/// Declares a typed event body: every field optional, unknown fields kept in `extra`.
macro_rules! body {
    ($(#[$meta:meta])* $name:ident { $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Option<$ty>, )*
            /// Fields this event type does not name, kept as sent.
            pub extra: Map<String, Value>,
        }

        impl $name {
            pub(crate) fn take_from<S: Source>(fields: &mut S) -> Result<Self, EventError> {
                Ok(Self {
                    $( $field: take(fields, stringify!($field))?, )*
                    extra: fields.rest(),
                })
            }

            pub(crate) fn put_into(&self, out: &mut Map<String, Value>) {
                $( if let Some(v) = &self.$field {
                    out.insert(stringify!($field).to_string(), Field::to_json(v));
                } )*
                for (k, v) in &self.extra {
                    out.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }

            /// The same fields as [`Self::put_into`], written straight as JSON.
            pub(crate) fn write_fields(&self, out: &mut Vec<u8>, taken: &dyn Fn(&str) -> bool) {
                $( if let Some(v) = &self.$field {
                    write_key(stringify!($field), out);
                    Field::write_json(v, out);
                } )*
                for (k, v) in &self.extra {
                    let typed = match k.as_str() {
                        $( stringify!($field) => self.$field.is_some(), )*
                        _ => false,
                    };
                    if !typed && !taken(k) {
                        write_key(k, out);
                        let _ = serde_json::to_writer(&mut *out, v);
                    }
                }
            }
        }
    };
}

body!(
    /// `training_start`: a run begins.
    TrainingStart {
        /// Epochs planned.
        total_epochs: u64,
        /// Batches per epoch.
        total_batches: u64,
        /// Hyperparameters, shown as the run's parameter table.
        config: Map<String, Value>,
        /// Human-readable run name (defaults to the run id).
        name: String,
        /// Where and how the run started: host, Python and framework versions, command
        /// line, git commit (filled in by the SDKs).
        meta: Map<String, Value>,
    }
);
body!(
    /// `training_end`: a run ends.
    TrainingEnd {
        /// `completed` (default), `failed` or `stopped`.
        status: String,
    }
);
body!(
    /// `epoch_start`.
    EpochStart { epoch: u64, total_epochs: u64 }
);
body!(
    /// `epoch_end`, with the epoch's summary metrics (e.g. `avg_loss`, `val_loss`).
    EpochEnd { epoch: u64, metrics: Metrics }
);
body!(
    /// `batch_start`.
    BatchStart { batch_idx: u64, epoch: u64 }
);
body!(
    /// `batch_end`: the heartbeat of a run, carrying its loss.
    BatchEnd {
        /// Batch index within the epoch.
        batch_idx: u64,
        loss: f64,
        /// Learning rate.
        lr: f64,
        /// Global step; when absent the reducer counts batch_end events.
        step: u64,
        epoch: u64,
        /// Further per-step metrics.
        metrics: Metrics,
    }
);
body!(
    /// `checkpoint_saved`.
    CheckpointSaved {
        checkpoint_path: String,
        epoch: u64,
        step: u64,
        size_bytes: u64,
        metrics: Metrics,
    }
);
body!(
    /// `checkpoint_loaded`.
    CheckpointLoaded {
        checkpoint_path: String,
        epoch: u64,
        step: u64,
        size_bytes: u64,
        metrics: Metrics,
    }
);
body!(
    /// `metric_update`: one named value (`name`, `value`) or several (`metrics`).
    MetricUpdate {
        name: String,
        value: f64,
        step: u64,
        metrics: Metrics,
    }
);
body!(
    /// `error_occurred`.
    ErrorOccurred {
        message: String,
        traceback: String,
        /// A fatal error ends the run as failed.
        fatal: bool,
        /// The rank of a distributed run that sent it (see `Rank`).
        rank: u64,
    }
);
body!(
    /// `log`: one log record.
    Log {
        /// `debug`, `info`, `warning`, `error`, `critical`.
        level: String,
        message: String,
        logger: String,
        /// The rank of a distributed run that sent it.
        rank: u64,
    }
);
body!(
    /// `system`: a resource sample.
    System {
        cpu_percent: f64,
        mem_used_bytes: u64,
        mem_total_bytes: u64,
        gpus: Vec<Map<String, Value>>,
        /// The rank of a distributed run that sent it; with its step and mean step time
        /// (ms) since its previous sample.
        rank: u64,
        step: u64,
        step_ms: f64,
    }
);
body!(
    /// `command_ack`: the trainer's answer to a control command (or the relay's, for a
    /// cancellation).
    CommandAck {
        command_id: String,
        /// `accepted`, `done`, `rejected`, `failed` (or `cancelled`, recorded by the relay).
        status: String,
        message: String,
        command: String,
        /// What the command produced (the answer of `ask`: text, numbers, a table).
        output: Value,
        /// The rank that answered, in a distributed run: the command is done when every
        /// rank has done it.
        rank: u64,
    }
);
body!(
    /// `rank`: one process of a distributed run (`torchrun`, `srun`, `mpirun`). Each rank's
    /// SDK sends `state: "started"` when it connects and `"ended"` (with `status`) when its
    /// process ends; the relay writes `"lost"` for a rank that went silent while the run
    /// was live (killed, out of memory, its host gone).
    Rank {
        rank: u64,
        /// `started`, `ended` or `lost`.
        state: String,
        world_size: u64,
        local_rank: u64,
        local_world_size: u64,
        /// The node's index (torchrun's `GROUP_RANK`, Slurm's `SLURM_NODEID`).
        node_rank: u64,
        host: String,
        pid: u64,
        /// How an ended rank ended: `completed`, `failed` or `stopped`.
        status: String,
        /// Seconds between the rank's heartbeats (its silence is judged by them).
        interval: f64,
        /// Why (for `lost`: what was last heard).
        message: String,
        /// The rank's last step, when known.
        step: u64,
    }
);
body!(
    /// `command`: a control command sent from a dashboard, recorded by the relay in the
    /// run's stream and delivered to the trainer until acknowledged.
    Command {
        command_id: String,
        /// `pause`, `resume`, `stop`, `load_checkpoint` or `ask`.
        command: String,
        args: Map<String, Value>,
        /// Who sent it, when known.
        sender: String,
    }
);
body!(
    /// `alert`: the trainer raises its own alert (`stepwatch.alert(title, text, level)`);
    /// the `event` rule kind fires on it.
    Alert {
        title: String,
        text: String,
        /// `info`, `warning` (default), `error`.
        level: String,
    }
);
body!(
    /// `alert_rule`: a run's own alert rule, from its trainer or a dashboard
    /// (`crate::alerts::Rule`, checked when it is stored).
    AlertRule {
        rule: Value,
        /// The rule of this name is withdrawn.
        removed: bool,
        /// Who set it, when known.
        sender: String,
    }
);
body!(
    /// `alert_fired`: a rule's condition holds (written by the relay).
    AlertFired {
        /// `<rule>#<id of the event that fired it>`.
        alert_id: String,
        rule: String,
        kind: String,
        level: String,
        title: String,
        text: String,
        metric: String,
        value: f64,
        step: u64,
        /// Id of the event that decided it (the last trainer event, for silence).
        trigger_id: u64,
        /// `pause` / `stop` sent to the run.
        action: String,
        /// Channels notified.
        channels: Vec<String>,
        /// Firings held back by the rule's cooldown since its last one.
        suppressed: u64,
        /// Stays until dismissed (no condition to clear).
        sticky: bool,
    }
);
body!(
    /// `alert_resolved`: an active alert's condition cleared, or someone dismissed it.
    AlertResolved {
        alert_id: String,
        rule: String,
        text: String,
        /// Who dismissed it; none when its condition cleared.
        sender: String,
    }
);
body!(
    /// `alert_delivery`: one attempt to send an alert's notice to a channel.
    AlertDelivery {
        alert_id: String,
        channel: String,
        channel_kind: String,
        /// `fired` or `resolved`.
        notice: String,
        attempt: u64,
        ok: bool,
        error: String,
        /// No more attempts follow.
        last_attempt: bool,
    }
);
body!(
    /// `run_meta`: the run's tags, group or notes changed (from its trainer's `connect`,
    /// a dashboard or the API; `crate::meta` checks it). A field present replaces the
    /// run's value (`tags` the whole list; `""` clears a group or the notes); one absent
    /// leaves it as it was.
    RunMeta {
        tags: Vec<String>,
        group: String,
        /// Markdown, rendered without HTML by the dashboard.
        notes: String,
        /// Who changed it, set by the relay; none from a trainer.
        sender: String,
    }
);
body!(
    /// `text_sample`: what a model wrote at a step: one `text`, a `prompt` and its
    /// `completion`, or a table (`columns` and `rows`). Checked by [`crate::media`].
    TextSample {
        /// The sample's tag, like a metric name.
        name: String,
        step: u64,
        caption: String,
        text: String,
        prompt: String,
        completion: String,
        columns: Vec<String>,
        /// Arrays as long as `columns`, of strings, numbers, booleans or null.
        rows: Value,
    }
);
body!(
    /// `image`: an image uploaded to the run (`PUT /api/runs/{run}/media/{sha256}`),
    /// shown at its step. The relay fills in `mime`, `width`, `height` and `size` from the
    /// bytes it holds.
    Image {
        name: String,
        step: u64,
        caption: String,
        /// Lowercase hex SHA-256 of the bytes.
        media: String,
        /// Its place among several images at one step (0 first).
        index: u64,
        mime: String,
        width: u64,
        height: u64,
        size: u64,
    }
);
body!(
    /// `histogram`: the distribution of a tensor at a step: `counts[i]` values fell in
    /// `[edges[i], edges[i + 1])`.
    Histogram {
        name: String,
        step: u64,
        caption: String,
        edges: Vec<f64>,
        counts: Vec<f64>,
        min: f64,
        max: f64,
        sum: f64,
        count: f64,
    }
);
