//! # stepwatch-client — the Rust trainer SDK
//!
//! [`Client::emit`] hands an event to a bounded queue and returns at once; a
//! background thread sends queued events to the relay in NDJSON batches, with a
//! `src` id and increasing `seq` so a retried batch is stored once. When the relay is
//! unreachable or answers 5xx the thread retries with capped, jittered exponential
//! backoff and meanwhile moves what the trainer emits into a bounded spool file on disk
//! ([`spool`]), sent in order once the relay is back; a spool left by a process that
//! exited is sent by the next one for the same run. Only when the queue itself is full
//! is an event dropped and counted ([`Client::dropped`]): the oldest one that is not
//! part of the run's lifecycle (start, end, checkpoints, errors and command answers are
//! kept). The training thread is never blocked and never sees an error.
//!
//! Commands from the dashboard (pause, resume, stop, load_checkpoint, ask) arrive on a
//! second background thread, which answers each on receipt (`accepted`, or `rejected`
//! when the trainer cannot do it); the trainer carries them out at its control points
//! ([`Client::control_point`]), which give the final answer. The Python SDK follows the
//! same contract (ARCHITECTURE.md, "The control path").
//!
//! The crate mirrors the Python package: `sender` (queue and delivery, Python's
//! `_relay`), `control` (commands, Python's `_control`), [`spool`] (`_spool`) and
//! `helpers` (the event methods, `_helpers`), [`world`] (distributed runs, `_dist`);
//! this file is the facade.
//!
//! Under `torchrun` / `srun` / `mpirun` ([`World::detect`], on by default in
//! [`Options`]) every rank connects to the run [`World::run_id`] names alike on all of
//! them; rank 0 reports the training, the others only their logs, errors and answers,
//! each tagged with its rank.

mod alerts;
mod control;
mod helpers;
pub mod media;
mod sender;
pub mod spool;
pub mod world;

pub use control::{AskHandler, Command, Flow, Handlers, LoadHandler, PAUSE_POLL};
pub use sender::{DEFAULT_LINGER, DEFAULT_MAX_BATCH, MAX_BACKOFF, MIN_BACKOFF, SPILL_EVERY};

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use stepwatch_events::event::Rank;
use stepwatch_events::EventBody;
pub use world::World;

/// Events the queue holds before emits are dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 100_000;

/// How a [`Client`] delivers. `Default` reads the environment.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events the in-memory queue holds before emits are dropped.
    pub queue_capacity: usize,
    /// Where events wait while the relay is down (`STEPWATCH_SPOOL_DIR`, else
    /// `~/.cache/stepwatch/spool`); `None` keeps them in memory only.
    pub spool_dir: Option<PathBuf>,
    /// Cap of the spool file (`STEPWATCH_SPOOL_MAX_BYTES`, default 128 MiB).
    pub spool_max_bytes: u64,
    /// Bearer token for the relay (`STEPWATCH_TOKEN`).
    pub token: Option<String>,
    /// Follow the run's command stream (pause, stop, …).
    pub commands: bool,
    /// The run's own alert rules (docs/ALERTS.md): JSON objects such as
    /// `{"name": "loss-high", "kind": "above", "threshold": 10.0}`, checked when the
    /// client is created ([`Client::try_with_options`]) and sent as `alert_rule` events
    /// right after connecting.
    pub alerts: Vec<serde_json::Value>,
    /// This process's place in a distributed job ([`World::detect`] by default): its
    /// samples, logs, errors and answers carry its rank, it sends `rank` events when it
    /// starts and ends, and a rank other than 0 sends nothing else.
    pub world: Option<World>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            spool_dir: spool::default_dir(),
            spool_max_bytes: spool::max_bytes_from_env(),
            token: std::env::var("STEPWATCH_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            commands: true,
            alerts: Vec::new(),
            world: World::detect(),
        }
    }
}

/// A connection to a relay for one run.
pub struct Client {
    outbox: Arc<sender::Outbox>,
    control: control::Control,
    thread: Option<JoinHandle<()>>,
    /// The rank's `ended` event went out (distributed runs).
    ended: std::sync::atomic::AtomicBool,
    /// Where images go up (`PUT …/media/{sha256}`): the relay, the run, the token.
    media_to: (String, String, Option<String>),
    /// The image upload thread, started with the first image.
    media: std::sync::OnceLock<media::Uploader>,
}

impl Client {
    /// Starts sending events for `run` to the relay at `url` (e.g. `http://127.0.0.1:8080`),
    /// with [`Options::default`].
    pub fn connect(url: &str, run: &str) -> Client {
        Self::with_options(url, run, Options::default())
    }

    /// As [`Client::connect`], with a queue of `capacity` events.
    pub fn with_capacity(url: &str, run: &str, capacity: usize) -> Client {
        Self::with_options(
            url,
            run,
            Options {
                queue_capacity: capacity,
                ..Options::default()
            },
        )
    }

    /// As [`Client::connect`], with explicit options. Alert rules in `options.alerts` that
    /// do not check are not sent: an `error`-level `log` event of the run names the field
    /// instead ([`Client::try_with_options`] returns it).
    pub fn with_options(url: &str, run: &str, mut options: Options) -> Client {
        let refused = alerts::check(&options.alerts).err();
        if refused.is_some() {
            options.alerts.clear();
        }
        let client = Self::start(url, run, options);
        if let Some(e) = refused {
            client.log("error", &format!("alert rules not sent: {e}"));
        }
        client
    }

    /// As [`Client::with_options`], but a bad alert rule in `options.alerts` is refused
    /// before anything starts or is sent, naming its field (`alerts[1].window: …`).
    pub fn try_with_options(
        url: &str,
        run: &str,
        options: Options,
    ) -> Result<Client, stepwatch_events::FieldError> {
        alerts::check(&options.alerts)?;
        Ok(Self::start(url, run, options))
    }

    /// Starts the threads and sends the run's alert rules, already checked.
    fn start(url: &str, run: &str, options: Options) -> Client {
        let src = format!(
            "rs-{}-{:x}",
            std::process::id(),
            (sender::now() * 1e6) as u64 ^ (run.len() as u64) << 48
        );
        let base = url.trim_end_matches('/');
        let (outbox, thread) = sender::start(sender::Setup {
            base,
            run,
            src,
            token: options.token.clone(),
            capacity: options.queue_capacity,
            spool_dir: options.spool_dir.as_deref(),
            spool_max_bytes: options.spool_max_bytes,
            rank: options.world.as_ref().map(|w| w.rank),
        });
        if let Some(w) = &options.world {
            outbox.emit(EventBody::Rank(Rank {
                state: Some("started".into()),
                world_size: Some(w.size),
                local_rank: Some(w.local_rank),
                local_world_size: Some(w.local_size),
                node_rank: Some(w.node_rank),
                host: Some(w.host.clone()),
                pid: Some(u64::from(std::process::id())),
                ..Default::default()
            }));
        }
        for rule in options.alerts {
            outbox.emit(alerts::rule_event(rule));
        }
        let media_to = (base.to_string(), run.to_string(), options.token.clone());
        let control = control::Control::start(
            format!("{base}/api/runs/{run}/commands/stream"),
            options.token,
            outbox.clone(),
            options.commands,
            run,
        );
        Client {
            outbox,
            control,
            thread,
            ended: std::sync::atomic::AtomicBool::new(false),
            media_to,
            media: std::sync::OnceLock::new(),
        }
    }

    /// An image (the bytes of a PNG, JPEG or WebP) under tag `name` at `step`. Never
    /// blocks: the bytes are uploaded on a thread of their own and the `image` event
    /// follows once the relay holds them; an image the relay refuses (not an image,
    /// over a limit) is logged as a warning, one it cannot reach in about 20 s is
    /// dropped and counted in [`Client::dropped`].
    pub fn log_image(&self, name: &str, step: u64, bytes: Vec<u8>, caption: Option<&str>) {
        let up = self.media.get_or_init(|| {
            let (base, run, token) = self.media_to.clone();
            media::Uploader::start(&base, &run, token, self.outbox.clone())
        });
        up.send(name, step, bytes, caption);
    }

    /// A text sample under tag `name` at `step`: a `prompt` and what the model made of
    /// it (`completion`), or a `text` alone (pass `None` for the prompt).
    pub fn log_text(&self, name: &str, step: u64, prompt: Option<&str>, text: &str) {
        self.emit(EventBody::TextSample(stepwatch_events::event::TextSample {
            name: Some(name.to_string()),
            step: Some(step),
            prompt: prompt.map(str::to_string),
            completion: prompt.map(|_| text.to_string()),
            text: prompt.is_none().then(|| text.to_string()),
            ..Default::default()
        }));
    }

    /// A histogram of `values` in `bins` equal bins (at most 512) under tag `name` at
    /// `step`; nothing when no value is finite.
    pub fn log_histogram(&self, name: &str, step: u64, values: &[f64], bins: usize) {
        if let Some(h) = media::histogram(name, step, values, bins) {
            self.emit(EventBody::Histogram(h));
        }
    }

    /// A distributed run's rank says it ends (`completed`, `stopped`, `failed`), once.
    fn end_rank(&self, status: &str) {
        if self.outbox.rank.is_none() || self.ended.swap(true, Ordering::Relaxed) {
            return;
        }
        self.outbox.emit(EventBody::Rank(Rank {
            state: Some("ended".into()),
            status: Some(status.into()),
            ..Default::default()
        }));
    }

    /// Queues one event; never blocks, never fails (a full queue drops the oldest event
    /// that is not part of the run's lifecycle, and counts it). A `training_end` first
    /// answers a stop from the dashboard (`done`, "stopped").
    pub fn emit(&self, body: EventBody) {
        let end = match &body {
            EventBody::TrainingEnd(t) => Some(t.status.clone()),
            _ => None,
        };
        if end.is_some() {
            self.control.finish_stop();
        }
        self.outbox.emit(body);
        if let Some(status) = end {
            self.end_rank(status.as_deref().unwrap_or("completed"));
        }
    }

    /// Sets the run's tags, group or notes (a field left `None` stays as it is; `""`
    /// clears a group or the notes): checked as the relay checks them, then sent as one
    /// `run_meta` event. A refusal names its field (`tags[2]: …`) and sends nothing.
    pub fn set_meta(
        &self,
        mut meta: stepwatch_events::event::RunMeta,
    ) -> Result<(), stepwatch_events::FieldError> {
        meta.sender = None;
        stepwatch_events::meta::check(&mut meta)?;
        self.outbox.emit(EventBody::RunMeta(meta));
        Ok(())
    }

    /// Commands received since the last call, each id once, that the SDK did not
    /// reject on receipt. Never blocks.
    pub fn poll_commands(&self) -> Vec<Command> {
        self.control.poll_commands()
    }

    /// Answers a command: `accepted`, `done`, `rejected` or `failed`, with a message and,
    /// for `ask`, the output.
    pub fn ack(
        &self,
        cmd: &Command,
        status: &str,
        message: &str,
        output: Option<serde_json::Value>,
    ) {
        self.control.ack(cmd, status, message, output);
    }

    /// The control point: call it once per step on the training thread. Runs the
    /// dashboard's load / ask commands, blocks while paused (still answering them), and
    /// returns [`Flow::Stop`] once a stop arrived (at every control point until the run
    /// ends: `training_end` answers the stop).
    pub fn control_point(&self, handlers: &mut Handlers<'_>) -> Flow {
        self.control.control_point(handlers)
    }

    /// The checkpoint a retried launched job resumes from (`STEPWATCH_RESUME_FROM`), for a
    /// script that loads it itself. Unclaimed, the first [`Client::control_point`] loads
    /// it through its `load_checkpoint` handler, so the run goes on at the checkpoint's step.
    pub fn resume_from(&self) -> Option<String> {
        self.control.take_resume()
    }

    /// Events given up: the queue was full (oldest non-lifecycle event first), or the
    /// spool had to make room (oldest `batch_end` first; never run start/end,
    /// checkpoints, errors or command answers).
    pub fn dropped(&self) -> u64 {
        let images = self
            .media
            .get()
            .map_or(0, |m| m.dropped.load(Ordering::Relaxed));
        images + self.dropped_events()
    }

    fn dropped_events(&self) -> u64 {
        let c = &self.outbox.counters;
        c.dropped.load(Ordering::Relaxed) + c.spool_dropped.load(Ordering::Relaxed)
    }

    /// This client's sender id, as stamped on its events.
    pub fn src(&self) -> &str {
        &self.outbox.src
    }

    /// Events the relay has acknowledged.
    pub fn sent(&self) -> u64 {
        self.outbox.counters.sent.load(Ordering::Relaxed)
    }

    /// Events the relay refused as invalid (4xx); they are not retried.
    pub fn rejected(&self) -> u64 {
        self.outbox.counters.rejected.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` until everything emitted so far is acknowledged.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if let Some(m) = self.media.get() {
            // Images first: their events join the queue once uploaded.
            while m.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.outbox
            .flush(deadline.saturating_duration_since(Instant::now()))
    }

    /// Flushes (bounded by `timeout`) and stops the sender thread. What the relay did
    /// not take in time stays in the spool for the next process for this run. A stop
    /// from the dashboard the trainer obeyed without `training_end` ends the run
    /// `stopped` first.
    pub fn close(mut self, timeout: Duration) -> bool {
        if self.control.stop_pending() {
            self.training_end("stopped");
        }
        self.end_rank("completed");
        self.control.close();
        let ok = self.flush(timeout);
        let deadline = Instant::now() + Duration::from_secs(2);
        self.outbox.close();
        if let Some(t) = self.thread.take() {
            // The thread spills what is left to the spool and ends; bounded wait.
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        ok
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.control.close();
        self.outbox.close();
    }
}
