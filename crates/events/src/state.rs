//! The run-state reducer: `RunState::apply(&Event)` folds a run's events, in id order,
//! into what a dashboard shows. The relay uses it for `GET /api/runs/{run}` and the
//! runs list; the dashboard uses the same code for its live view. The parts it holds
//! (checkpoints, commands, …) are plain data in [`crate::records`]; its pace and
//! progress arithmetic is in [`crate::progress`].

use crate::alerts::AlertsState;
use crate::event::{
    BatchEnd, BatchStart, CheckpointSaved, Command, CommandAck, EpochEnd, EpochStart,
    ErrorOccurred, Event, EventBody, Rank, RunMeta, System, TrainingEnd, TrainingStart,
};
use crate::num;
use crate::progress::{Pace, Position, Progress};
pub use crate::records::{
    is_validation_loss, BestMetric, Checkpoint, CommandState, LastError, RunStatus, COMMANDS,
    MAX_CHECKPOINTS, MAX_COMMANDS, MAX_COMMAND_MESSAGES,
};
use crate::world::World;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The current state of one run, as the seed's `get_current_state()` and more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunState {
    /// Run id (as in the URL).
    pub run: String,
    /// Display name: `training_start.name`, else the run id.
    pub name: String,
    pub status: RunStatus,
    /// Seed field: whether training is under way.
    pub is_training: bool,
    /// Seed field: the current (or last) epoch.
    pub current_epoch: u64,
    pub total_epochs: Option<u64>,
    /// Seed field: the current batch within the epoch.
    pub current_batch: u64,
    /// Batches per epoch.
    pub total_batches: Option<u64>,
    /// Seed field: the latest loss.
    #[serde(with = "num::opt", default)]
    pub current_loss: Option<f64>,
    /// Mean loss over the current epoch's batch_end events so far.
    #[serde(with = "num::opt", default)]
    pub avg_loss: Option<f64>,
    /// Seed field: the latest learning rate.
    #[serde(with = "num::opt", default)]
    pub learning_rate: Option<f64>,
    /// Global step: from `batch_end.step`, else the count of batch_end events.
    pub step: u64,
    /// Lowest finite training-batch loss seen, and its step (noisy, biased low: a
    /// validation loss, when the run reports one, is in `best_val`).
    #[serde(with = "num::opt", default)]
    pub best_loss: Option<f64>,
    pub best_step: Option<u64>,
    /// Lowest validation loss reported (see [`is_validation_loss`]).
    #[serde(default)]
    pub best_val: Option<BestMetric>,
    /// A loss came in NaN or infinite.
    pub loss_non_finite: bool,
    /// Latest value of every metric, by name.
    #[serde(with = "num::map", default)]
    pub metrics: BTreeMap<String, f64>,
    /// Checkpoints, oldest first (at most [`MAX_CHECKPOINTS`]).
    pub checkpoints: Vec<Checkpoint>,
    /// The checkpoint last loaded.
    pub loaded_checkpoint: Option<String>,
    pub last_error: Option<LastError>,
    /// `training_start.config`.
    pub config: Map<String, Value>,
    /// `training_start.meta`: host, versions, command line, git commit.
    #[serde(default)]
    pub meta: Map<String, Value>,
    /// Latest `system` event's fields.
    pub system: Option<Map<String, Value>>,
    /// Trainer time of training_start (or the first event).
    #[serde(with = "num::opt", default)]
    pub started_at: Option<f64>,
    #[serde(with = "num::opt", default)]
    pub ended_at: Option<f64>,
    /// Trainer time of the latest event.
    #[serde(with = "num::opt", default)]
    pub last_event_at: Option<f64>,
    /// Id of the latest event applied.
    pub last_id: u64,
    /// Control commands, oldest first (at most [`MAX_COMMANDS`]).
    #[serde(default)]
    pub commands: Vec<CommandState>,
    /// Events applied.
    pub event_count: u64,
    /// batch_end events applied.
    pub batch_count: u64,
    /// Running sum and count behind `avg_loss` (kept so a restored state continues the epoch).
    #[serde(with = "num::float", default)]
    pub(crate) epoch_loss_sum: f64,
    #[serde(default)]
    pub(crate) epoch_loss_n: u64,
    /// Numbering and pace, behind [`RunState::progress`] and [`RunState::eta_s`].
    #[serde(default)]
    pub pace: Pace,
    /// Alerts: active, recent records, counts, the run's own rules.
    #[serde(default, skip_serializing_if = "AlertsState::is_empty")]
    pub alerts: AlertsState,
    /// Tags, normalised (`crate::meta`), in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The run's group ("lr sweep 3"), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Free-text notes (Markdown), when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// A distributed run's ranks (see [`crate::world`]); none for a single process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        target_arch = "wasm32",
        serde(deserialize_with = "crate::world::deserialize_opt")
    )]
    pub world: Option<World>,
    /// Text samples, images and histograms, one entry per tag (see [`crate::media`]).
    /// (The dashboard reads its media from their events: it skips decoding this.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(target_arch = "wasm32", serde(skip_deserializing))]
    pub media: Vec<crate::media::MediaTag>,
}

impl RunState {
    /// An empty state for run `run`.
    pub fn new(run: &str) -> Self {
        RunState {
            run: run.to_string(),
            name: run.to_string(),
            ..Default::default()
        }
    }

    /// Folds every event in order into a fresh state.
    pub fn from_events<'a>(run: &str, events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut s = RunState::new(run);
        for e in events {
            s.apply(e);
        }
        s
    }

    /// The global step an event refers to: its own `step` when it has one, else the run's.
    pub fn step_of(&self, e: &Event) -> u64 {
        match &e.body {
            EventBody::BatchEnd(b) => b.step.unwrap_or(self.step),
            EventBody::MetricUpdate(m) => m.step.unwrap_or(self.step),
            EventBody::CheckpointSaved(c) => c.step.unwrap_or(self.step),
            body => crate::media::media_of(body)
                .and_then(|(_, _, step)| step)
                .unwrap_or(self.step),
        }
    }

    /// Applies one event. Events must come in id order; the reducer never fails.
    pub fn apply(&mut self, e: &Event) {
        self.event_count += 1;
        if let Some(id) = e.id {
            self.last_id = self.last_id.max(id);
        }
        let t = e.timestamp();
        if t.is_some() {
            self.last_event_at = t;
        }
        if self.started_at.is_none() {
            self.started_at = t;
        }
        self.pace.kept = true;
        let rank = rank_of(&e.body);
        if let Some(r) = rank {
            self.world
                .get_or_insert_with(World::default)
                .seen(r, e.received.or(t));
        }
        match &e.body {
            EventBody::TrainingStart(b) => self.training_start(b, t),
            EventBody::TrainingEnd(b) => self.training_end(b, t),
            EventBody::EpochStart(b) => self.epoch_start(b),
            EventBody::EpochEnd(b) => self.epoch_end(b),
            EventBody::BatchStart(b) => self.batch_start(b),
            EventBody::BatchEnd(b) => self.batch_end(b, t),
            EventBody::CheckpointSaved(c) => self.checkpoint_saved(c, t),
            EventBody::CheckpointLoaded(c) => {
                self.loaded_checkpoint = c.checkpoint_path.clone();
            }
            EventBody::MetricUpdate(m) => {
                if let (Some(name), Some(v)) = (&m.name, m.value) {
                    self.set_metric(name, v);
                }
                if let Some(ms) = &m.metrics {
                    self.merge_metrics(ms);
                }
            }
            EventBody::ErrorOccurred(err) => self.error_occurred(err, t),
            EventBody::System(s) => match (rank, &mut self.world) {
                (Some(r), Some(w)) => {
                    w.system(r, s);
                    if r == 0 {
                        self.system = Some(system_fields(s));
                    }
                }
                _ => self.system = Some(system_fields(s)),
            },
            EventBody::Rank(r) => self.rank_event(r, t),
            EventBody::Command(c) => self.command(c, e.id, t),
            EventBody::CommandAck(a) => self.apply_ack(a, t),
            EventBody::AlertRule(r) => self.alerts.rule(r),
            EventBody::AlertFired(f) => self.alerts.fired(f, t, e.id),
            EventBody::AlertResolved(r) => self.alerts.resolved(r, t),
            EventBody::AlertDelivery(d) => self.alerts.delivery(d, t),
            EventBody::RunMeta(m) => self.run_meta(m),
            EventBody::TextSample(_) | EventBody::Image(_) | EventBody::Histogram(_) => {
                if let Some((kind, Some(name), step)) = crate::media::media_of(&e.body) {
                    let step = step.unwrap_or(self.step);
                    crate::media::note(&mut self.media, kind, name, step, e.id);
                }
            }
            EventBody::Log(_) | EventBody::Alert(_) | EventBody::Custom { .. } => {}
        }
    }

    /// The ranks not yet at a command's step (or not done with it): what its answers
    /// wait for.
    pub fn ranks_waiting(&self, command_id: &str) -> &[u64] {
        self.commands
            .iter()
            .rev()
            .find(|c| c.id == command_id)
            .map_or(&[], |c| c.waiting.as_slice())
    }

    fn run_meta(&mut self, m: &RunMeta) {
        if let Some(tags) = &m.tags {
            self.tags = crate::meta::normalize_tags(tags);
        }
        let text = |s: &String| Some(s.trim_end().to_string()).filter(|s| !s.trim().is_empty());
        if let Some(g) = &m.group {
            self.group = text(g).map(|g| g.trim().to_string());
        }
        if let Some(n) = &m.notes {
            self.notes = text(n);
        }
    }

    fn training_start(&mut self, b: &TrainingStart, t: Option<f64>) {
        self.status = RunStatus::Running;
        self.is_training = true;
        self.started_at = t.or(self.started_at);
        self.ended_at = None;
        if b.total_epochs.is_some() {
            self.total_epochs = b.total_epochs;
        }
        if b.total_batches.is_some() {
            self.total_batches = b.total_batches;
        }
        if let Some(cfg) = &b.config {
            self.config = cfg.clone();
        }
        if let Some(meta) = &b.meta {
            self.meta = meta.clone();
        }
        if let Some(name) = &b.name {
            self.name = name.clone();
        }
    }

    fn training_end(&mut self, b: &TrainingEnd, t: Option<f64>) {
        self.pace.pause(t, false);
        self.is_training = false;
        self.ended_at = t;
        if self.status == RunStatus::Failed && self.rank_failure() {
            return; // a rank failed the run; rank 0 then ended as the launcher stopped it
        }
        self.status = match b.status.as_deref() {
            Some("failed") => RunStatus::Failed,
            Some("stopped") => RunStatus::Stopped,
            _ => RunStatus::Completed,
        };
    }

    /// The run failed because of one rank (its error, or its silence).
    fn rank_failure(&self) -> bool {
        self.last_error
            .as_ref()
            .is_some_and(|e| e.fatal && e.rank.is_some())
    }

    /// A `rank` event: joined, ended, or (written by the relay) lost.
    fn rank_event(&mut self, r: &Rank, t: Option<f64>) {
        let world = self.world.get_or_insert_with(World::default);
        world.rank_event(r);
        if matches!(r.state.as_deref(), Some("ended" | "lost")) && world.size > 1 {
            // A command waiting for this rank now waits only for the ranks still running.
            for cmd in self
                .commands
                .iter_mut()
                .filter(|c| c.is_open() && !c.ranks.is_empty())
            {
                let got = world.recheck(&cmd.ranks, &cmd.status);
                cmd.waiting = got.waiting;
                cmd.status = got.status;
            }
        }
        let (Some(n), Some("lost")) = (r.rank, r.state.as_deref()) else {
            return;
        };
        let seen = world.rank(n).and_then(|x| x.seen_at);
        let mut message = format!("{} died without a word", world.name(n));
        if let Some(step) = r.step.or_else(|| world.rank(n).and_then(|x| x.step)) {
            message.push_str(&format!(" at step {step}"));
        }
        message.push_str(": killed (SIGKILL, out of memory) or its host went down");
        if let Some(m) = &r.message {
            message.push_str(&format!(" ({m})"));
        }
        // Another rank's error after this one went quiet followed from it; one that came
        // first (an error, or a silence that began before this one's) is the cause.
        let earlier_cause = self.last_error.as_ref().is_some_and(|e| {
            let Some(x) = e.rank.filter(|&x| x != n) else {
                return false;
            };
            let began = world
                .rank(x)
                .filter(|r| r.state == "lost")
                .and_then(|r| r.seen_at)
                .or(e.time);
            e.fatal && matches!((began, seen), (Some(a), Some(b)) if a < b)
        });
        if self.status == RunStatus::Completed || earlier_cause {
            return;
        }
        self.status = RunStatus::Failed;
        self.is_training = false;
        self.ended_at = self.ended_at.or(t);
        self.last_error = Some(LastError {
            message,
            traceback: None,
            fatal: true,
            time: t,
            rank: Some(n),
        });
    }

    fn epoch_start(&mut self, b: &EpochStart) {
        self.mark_running();
        if let Some(ep) = b.epoch {
            self.pace.saw_epoch(ep);
            self.current_epoch = ep;
        }
        self.pace.new_epoch();
        if b.total_epochs.is_some() {
            self.total_epochs = b.total_epochs;
        }
        self.current_batch = 0;
        self.epoch_loss_sum = 0.0;
        self.epoch_loss_n = 0;
    }

    fn epoch_end(&mut self, b: &EpochEnd) {
        if let Some(ep) = b.epoch {
            self.pace.saw_epoch(ep);
            self.current_epoch = ep;
        }
        self.pace.epoch_ended = true;
        if let Some(m) = &b.metrics {
            self.merge_metrics(m);
        }
    }

    fn batch_start(&mut self, b: &BatchStart) {
        self.mark_running();
        self.note_epoch_of_batch(b.epoch, b.batch_idx);
        if let Some(ep) = b.epoch {
            self.current_epoch = ep;
        }
        if let Some(i) = b.batch_idx {
            self.current_batch = i;
        }
    }

    fn batch_end(&mut self, b: &BatchEnd, t: Option<f64>) {
        self.mark_running();
        self.batch_count += 1;
        self.step = b.step.unwrap_or(self.batch_count);
        self.note_epoch_of_batch(b.epoch, b.batch_idx);
        if let Some(ep) = b.epoch {
            self.current_epoch = ep;
        }
        if let Some(i) = b.batch_idx {
            self.current_batch = i;
            self.pace.saw_batch_idx(i, self.total_batches);
        }
        self.pace.batch_end(t, b.batch_idx);
        if let Some(lr) = b.lr {
            self.learning_rate = Some(lr);
        }
        if let Some(loss) = b.loss {
            self.batch_loss(loss);
        }
        if let Some(m) = &b.metrics {
            self.merge_metrics(m);
        }
        for (k, v) in &b.extra {
            if let Some(x) = v.as_f64() {
                self.set_metric(k, x);
            }
        }
    }

    /// A training batch's loss: the latest, the epoch's mean, the best, or non-finite.
    fn batch_loss(&mut self, loss: f64) {
        self.current_loss = Some(loss);
        if loss.is_finite() {
            self.epoch_loss_sum += loss;
            self.epoch_loss_n += 1;
            self.avg_loss = Some(self.epoch_loss_sum / self.epoch_loss_n as f64);
            if self.best_loss.is_none_or(|best| loss < best) {
                self.best_loss = Some(loss);
                self.best_step = Some(self.step);
            }
        } else {
            self.loss_non_finite = true;
        }
    }

    fn checkpoint_saved(&mut self, c: &CheckpointSaved, t: Option<f64>) {
        let Some(path) = &c.checkpoint_path else {
            return;
        };
        // A save to a path already listed overwrote that file: one row.
        let overwrites = match self.checkpoints.iter().position(|k| &k.path == path) {
            Some(i) => self.checkpoints.remove(i).overwrites.saturating_add(1),
            None => 0,
        };
        self.checkpoints.push(Checkpoint {
            path: path.clone(),
            epoch: c.epoch,
            step: c.step.or(Some(self.step)),
            size_bytes: c.size_bytes,
            time: t,
            metrics: c.metrics.clone().unwrap_or_default(),
            overwrites,
        });
        if self.checkpoints.len() > MAX_CHECKPOINTS {
            self.checkpoints.remove(0);
        }
    }

    fn error_occurred(&mut self, err: &ErrorOccurred, t: Option<f64>) {
        let fatal = err.fatal.unwrap_or(false);
        let mut message = err.message.clone().unwrap_or_default();
        let rank = err
            .rank
            .filter(|_| self.world.as_ref().is_some_and(|w| w.size > 1));
        if let (Some(r), Some(w)) = (rank, &mut self.world) {
            message = format!("{}: {message}", w.name(r));
            if fatal {
                if let Some(x) = w.rank_mut(r) {
                    x.state = "failed".into();
                }
                if self.status == RunStatus::Failed && self.rank_failure() {
                    return; // the first rank to fail is the cause; this followed
                }
            }
        }
        self.last_error = Some(LastError {
            message,
            traceback: err.traceback.clone(),
            fatal,
            time: t,
            rank,
        });
        if fatal {
            self.status = RunStatus::Failed;
            self.is_training = false;
        }
    }

    fn command(&mut self, c: &Command, id: Option<u64>, t: Option<f64>) {
        self.commands.push(CommandState {
            event_id: id,
            id: c.command_id.clone().unwrap_or_default(),
            command: c.command.clone().unwrap_or_default(),
            args: c.args.clone().unwrap_or_default(),
            status: "pending".into(),
            sender: c.sender.clone(),
            sent_at: t,
            updated_at: t,
            ..Default::default()
        });
        if self.commands.len() > MAX_COMMANDS {
            self.commands.remove(0);
        }
    }

    fn apply_ack(&mut self, a: &CommandAck, t: Option<f64>) {
        let Some(id) = &a.command_id else { return };
        let Some(cmd) = self.commands.iter_mut().rev().find(|c| &c.id == id) else {
            return;
        };
        if matches!(
            cmd.status.as_str(),
            "done" | "rejected" | "failed" | "cancelled"
        ) {
            return; // final answers are final
        }
        let mut status = a.status.clone().unwrap_or_else(|| "accepted".into());
        let world = self.world.as_ref().filter(|w| w.size > 1);
        let mut said = a.message.clone();
        if let (Some(r), Some(w)) = (a.rank, world) {
            // Every rank answers; the command is done when all have done it.
            let got = w.ack(&mut cmd.ranks, r, &status);
            cmd.waiting = got.waiting;
            if r != 0 {
                said = said
                    .filter(|_| matches!(status.as_str(), "rejected" | "failed"))
                    .map(|m| format!("{}: {m}", w.name(r)));
            }
            status = got.status;
        }
        cmd.status = status.clone();
        if let Some(m) = &said {
            if cmd.messages.last() != Some(m) {
                if cmd.messages.len() >= MAX_COMMAND_MESSAGES {
                    cmd.messages.remove(1); // keep the first word and the newest
                }
                cmd.messages.push(m.clone());
            }
            cmd.message = Some(m.clone());
        }
        if a.output.is_some() {
            cmd.output = a.output.clone();
            cmd.step = Some(self.step);
        }
        cmd.updated_at = t;
        let command = cmd.command.clone();
        let all = cmd.waiting.is_empty();
        // The run's status follows the trainer's answers, not the clicks.
        match (command.as_str(), status.as_str()) {
            ("pause", "accepted") if self.status.is_live() && all => {
                self.status = RunStatus::Paused;
                self.pace.pause(t, true);
            }
            ("pause", "done") | ("resume", "done") if self.status == RunStatus::Paused => {
                self.status = RunStatus::Running;
                self.pace.pause(t, false);
            }
            _ => {}
        }
    }

    /// Commands the trainer has not finished (pending or accepted), oldest first.
    pub fn open_commands(&self) -> impl Iterator<Item = &CommandState> {
        self.commands.iter().filter(|c| c.is_open())
    }

    fn mark_running(&mut self) {
        if self.status == RunStatus::Pending {
            self.status = RunStatus::Running;
            self.is_training = true;
        }
    }

    fn merge_metrics(&mut self, m: &BTreeMap<String, f64>) {
        for (k, v) in m {
            self.set_metric(k, *v);
        }
    }

    /// A metric's latest value; a validation loss also competes for `best_val`.
    fn set_metric(&mut self, name: &str, v: f64) {
        self.metrics.insert(name.to_string(), v);
        if v.is_finite()
            && is_validation_loss(name)
            && self.best_val.as_ref().is_none_or(|b| v < b.value)
        {
            self.best_val = Some(BestMetric {
                metric: name.to_string(),
                value: v,
                step: self.step,
            });
        }
    }

    /// A batch event's epoch and index: a new epoch begins when the epoch number changes
    /// (or the index starts over) without an epoch_start.
    fn note_epoch_of_batch(&mut self, epoch: Option<u64>, idx: Option<u64>) {
        if let Some(ep) = epoch {
            let first = self.pace.first_epoch.is_none();
            self.pace.saw_epoch(ep);
            if !first && ep != self.current_epoch {
                self.pace.new_epoch();
            }
        } else if let (Some(i), Some(last)) = (idx, self.pace.last_batch_idx) {
            if i < last && self.pace.epoch_batches > 0 {
                self.pace.new_epoch();
            }
        }
    }

    /// Where the run stands, as its progress and time left need it.
    pub fn position(&self) -> Position {
        Position {
            live: self.status.is_live(),
            running: self.status == RunStatus::Running,
            completed: self.status == RunStatus::Completed,
            current_epoch: self.current_epoch,
            current_batch: self.current_batch,
            total_epochs: self.total_epochs,
            total_batches: self.total_batches,
            batch_count: self.batch_count,
            started_at: self.started_at,
        }
    }

    /// The run's progress as people read it (see [`crate::progress`]).
    pub fn progress(&self) -> Progress {
        self.pace.progress(&self.position())
    }

    /// Seconds left at (wall-clock) time `now`, while the run is running (see
    /// [`Pace::eta_s`]).
    pub fn eta_s(&self, now: f64) -> Option<f64> {
        self.pace.eta_s(&self.position(), now)
    }

    /// The best checkpoint: the one with the lowest validation loss (or `loss`) among
    /// those that carry one; `None` when none does (then no checkpoint is called best:
    /// the newest is only the newest).
    pub fn best_checkpoint(&self) -> Option<&Checkpoint> {
        let key = |c: &Checkpoint| {
            c.metrics
                .iter()
                .find(|(k, _)| is_validation_loss(k))
                .map(|(_, v)| *v)
                .or_else(|| c.metrics.get("loss").copied())
                .filter(|x| x.is_finite())
        };
        self.checkpoints
            .iter()
            .filter_map(|c| key(c).map(|k| (k, c)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, c)| c)
    }
}
/// The rank an event came from, for those a rank of a distributed run tags.
fn rank_of(body: &EventBody) -> Option<u64> {
    match body {
        EventBody::System(s) => s.rank,
        EventBody::Log(l) => l.rank,
        EventBody::ErrorOccurred(e) => e.rank,
        EventBody::CommandAck(a) => a.rank,
        EventBody::Rank(r) => r.rank.filter(|_| r.state.as_deref() != Some("lost")),
        EventBody::Custom { name, fields } if name == "heartbeat" => {
            fields.get("rank").and_then(Value::as_u64)
        }
        _ => None,
    }
}

/// A `system` event's fields, as the state keeps the latest.
fn system_fields(s: &System) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(c) = s.cpu_percent {
        m.insert("cpu_percent".into(), num::to_json(c));
    }
    if let Some(u) = s.mem_used_bytes {
        m.insert("mem_used_bytes".into(), u.into());
    }
    if let Some(u) = s.mem_total_bytes {
        m.insert("mem_total_bytes".into(), u.into());
    }
    if let Some(g) = &s.gpus {
        m.insert(
            "gpus".into(),
            Value::Array(g.iter().cloned().map(Value::Object).collect()),
        );
    }
    for (k, v) in &s.extra {
        m.insert(k.clone(), v.clone());
    }
    m
}
