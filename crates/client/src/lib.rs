//! # stepwatch-client — the Rust trainer SDK
//!
//! [`Client::emit`] hands an event to a bounded queue and returns at once; a
//! background thread sends queued events to the relay in NDJSON batches, with a
//! `src` id and increasing `seq` so a retried batch is stored once. When the relay is
//! unreachable or answers 5xx the thread retries with capped, jittered exponential
//! backoff and meanwhile moves what the trainer emits into a bounded spool file on disk
//! ([`spool`]), sent in order once the relay is back; a spool left by a process that
//! exited is sent by the next one for the same run. Only when the queue itself is full
//! is an emit dropped and counted ([`Client::dropped`]). The training thread is never
//! blocked and never sees an error.
//!
//! Commands from the dashboard (pause, resume, stop, load_checkpoint, ask) arrive on a
//! second background thread; the trainer takes them with [`Client::poll_commands`] at
//! its control points (each id once) and answers with [`Client::ack`].

pub mod spool;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use stepwatch_events::event::{
    BatchEnd, CheckpointSaved, EpochEnd, EpochStart, Log, TrainingEnd, TrainingStart,
};
use stepwatch_events::{Event, EventBody};

/// Events the queue holds before emits are dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 100_000;
/// Most events sent in one request.
pub const DEFAULT_MAX_BATCH: usize = 1000;
/// How long the sender waits to fill a batch.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(20);
/// Backoff bounds while the relay is unreachable.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a paused trainer looks for resume, stop or other commands.
pub const PAUSE_POLL: Duration = Duration::from_millis(50);
/// While the relay is unreachable, queued events move to the spool this often.
pub const SPILL_EVERY: Duration = Duration::from_millis(200);

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
        }
    }
}

enum Msg {
    Event(Box<Event>),
    Flush(SyncSender<()>),
    Close,
}

/// Counters shared with the sender thread.
#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    spool_dropped: AtomicU64,
    sent: AtomicU64,
    rejected: AtomicU64,
}

/// A control command from the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    /// `pause`, `resume`, `stop`, `load_checkpoint` or `ask`.
    pub command: String,
    pub args: serde_json::Map<String, serde_json::Value>,
}

/// What the training loop should do after a control point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The dashboard asked the run to stop: end it with `training_end("stopped")`.
    Stop,
}

/// Load-checkpoint handler: gets the path, returns a message or an error.
pub type LoadHandler<'a> = &'a mut dyn FnMut(&str) -> Result<String, String>;
/// Ask handler: gets the input, returns the output (text, numbers, an object) or an error.
pub type AskHandler<'a> =
    &'a mut dyn FnMut(&serde_json::Value) -> Result<serde_json::Value, String>;

/// The trainer's handlers for commands that act on the model. A missing handler makes
/// the trainer reject that command at once, saying it does not support it.
#[derive(Default)]
pub struct Handlers<'a> {
    pub load_checkpoint: Option<LoadHandler<'a>>,
    pub ask: Option<AskHandler<'a>>,
}

/// A connection to a relay for one run.
pub struct Client {
    tx: SyncSender<Msg>,
    commands: Receiver<Command>,
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    counters: Arc<Counters>,
    src: String,
    seq: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    d.mul_f64(0.5 + f64::from(nanos % 1000) / 1000.0)
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

    /// As [`Client::connect`], with explicit options.
    pub fn with_options(url: &str, run: &str, options: Options) -> Client {
        let (tx, rx) = mpsc::sync_channel(options.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let src = format!(
            "rs-{}-{:x}",
            std::process::id(),
            (now() * 1e6) as u64 ^ (run.len() as u64) << 48
        );
        let base = url.trim_end_matches('/');
        let mut sender = Sender {
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .build(),
            endpoint: format!("{base}/api/runs/{run}/events"),
            token: options.token.clone(),
            src: src.clone(),
            counters: counters.clone(),
            older: Vec::new(),
            spool: None,
            reported: 0,
            waiters: Vec::new(),
            closing: false,
        };
        if let Some(dir) = &options.spool_dir {
            sender.older = spool::files(dir, run)
                .into_iter()
                .map(spool::Spool::existing)
                .collect();
            let file = format!("{:.6}-{src}.ndjson", now());
            sender.spool = Some(spool::Spool::new(
                dir.join(run).join(file),
                options.spool_max_bytes,
            ));
        }
        let thread = std::thread::Builder::new()
            .name(format!("stepwatch-sender-{run}"))
            .spawn(move || sender.run(&rx))
            .ok();
        let (cmd_tx, commands) = mpsc::sync_channel(1024);
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if options.commands {
            let stream = format!("{base}/api/runs/{run}/commands/stream");
            let closed2 = closed.clone();
            let token = options.token.clone();
            let _ = std::thread::Builder::new()
                .name(format!("stepwatch-commands-{run}"))
                .spawn(move || command_loop(&stream, token.as_deref(), &cmd_tx, &closed2));
        }
        Client {
            tx,
            commands,
            seen: std::sync::Mutex::new(std::collections::HashSet::new()),
            closed,
            counters,
            src,
            seq: AtomicU64::new(0),
            thread,
        }
    }

    /// Queues one event; never blocks, never fails (a full queue drops and counts it).
    pub fn emit(&self, body: EventBody) {
        let mut e = Event::new(body);
        e.time = Some(now());
        e.src = Some(self.src.clone());
        e.seq = Some(self.seq.fetch_add(1, Ordering::Relaxed) + 1);
        match self.tx.try_send(Msg::Event(Box::new(e))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Commands received since the last call, each id once. Never blocks.
    pub fn poll_commands(&self) -> Vec<Command> {
        let mut out = Vec::new();
        while let Ok(c) = self.commands.try_recv() {
            let fresh = self
                .seen
                .lock()
                .map(|mut s| s.insert(c.id.clone()))
                .unwrap_or(true);
            if fresh {
                out.push(c);
            }
        }
        out
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
        self.emit(EventBody::CommandAck(stepwatch_events::event::CommandAck {
            command_id: Some(cmd.id.clone()),
            command: Some(cmd.command.clone()),
            status: Some(status.to_string()),
            message: (!message.is_empty()).then(|| message.to_string()),
            output,
            ..Default::default()
        }));
    }

    /// The control point: call it once per step on the training thread. Runs the
    /// dashboard's commands, blocks while paused (still answering load/ask), and
    /// returns [`Flow::Stop`] when asked to stop.
    pub fn control_point(&self, handlers: &mut Handlers<'_>) -> Flow {
        for c in self.poll_commands() {
            if c.command != "pause" {
                if self.handle(&c, handlers) == Flow::Stop {
                    return Flow::Stop;
                }
                continue;
            }
            self.ack(&c, "accepted", "paused", None);
            loop {
                std::thread::sleep(PAUSE_POLL);
                for n in self.poll_commands() {
                    match n.command.as_str() {
                        "resume" => {
                            self.ack(&n, "accepted", "resuming", None);
                            self.ack(&n, "done", "resumed", None);
                            self.ack(&c, "done", "resumed", None);
                            return Flow::Continue;
                        }
                        "pause" => self.ack(&n, "rejected", "already paused", None),
                        _ => {
                            if self.handle(&n, handlers) == Flow::Stop {
                                self.ack(&c, "done", "stopped while paused", None);
                                return Flow::Stop;
                            }
                        }
                    }
                }
            }
        }
        Flow::Continue
    }

    fn handle(&self, c: &Command, handlers: &mut Handlers<'_>) -> Flow {
        match c.command.as_str() {
            "stop" => {
                self.ack(c, "accepted", "stopping", None);
                self.ack(c, "done", "stopped", None);
                return Flow::Stop;
            }
            "resume" => self.ack(c, "rejected", "not paused", None),
            "load_checkpoint" => match handlers.load_checkpoint.as_mut() {
                None => self.ack(
                    c,
                    "rejected",
                    "this trainer does not support load_checkpoint",
                    None,
                ),
                Some(f) => {
                    let path = c
                        .args
                        .get("path")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default();
                    self.ack(c, "accepted", "loading", None);
                    match f(path) {
                        Ok(msg) => {
                            self.emit(EventBody::CheckpointLoaded(
                                stepwatch_events::event::CheckpointLoaded {
                                    checkpoint_path: Some(path.to_string()),
                                    ..Default::default()
                                },
                            ));
                            self.ack(c, "done", &msg, None);
                        }
                        Err(e) => self.ack(c, "failed", &e, None),
                    }
                }
            },
            "ask" => match handlers.ask.as_mut() {
                None => self.ack(c, "rejected", "this trainer does not support ask", None),
                Some(f) => {
                    let input = c.args.get("input").cloned().unwrap_or_default();
                    let t0 = Instant::now();
                    match f(&input) {
                        Ok(out) => self.ack(
                            c,
                            "done",
                            &format!("answered in {:.0} ms", t0.elapsed().as_secs_f64() * 1000.0),
                            Some(out),
                        ),
                        Err(e) => self.ack(c, "failed", &e, None),
                    }
                }
            },
            other => self.ack(c, "rejected", &format!("unknown command {other:?}"), None),
        }
        Flow::Continue
    }

    /// Events given up: the queue was full, or the spool had to make room (oldest
    /// `batch_end` first; never run start/end, checkpoints or errors).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
            + self.counters.spool_dropped.load(Ordering::Relaxed)
    }

    /// This client's sender id, as stamped on its events.
    pub fn src(&self) -> &str {
        &self.src
    }

    /// Events the relay has acknowledged.
    pub fn sent(&self) -> u64 {
        self.counters.sent.load(Ordering::Relaxed)
    }

    /// Events the relay refused as invalid (4xx); they are not retried.
    pub fn rejected(&self) -> u64 {
        self.counters.rejected.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` until everything emitted so far is acknowledged.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let deadline = Instant::now() + timeout;
        let mut msg = Msg::Flush(done_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        done_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// Flushes (bounded by `timeout`) and stops the sender thread. What the relay did
    /// not take in time stays in the spool for the next process for this run.
    pub fn close(mut self, timeout: Duration) -> bool {
        let ok = self.flush(timeout);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut msg = Msg::Close;
        while let Err(TrySendError::Full(m)) = self.tx.try_send(msg) {
            if Instant::now() > deadline {
                break;
            }
            msg = m;
            std::thread::sleep(Duration::from_millis(5));
        }
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

    /// `training_start`.
    pub fn training_start(
        &self,
        name: &str,
        total_epochs: u64,
        total_batches: u64,
        config: serde_json::Map<String, serde_json::Value>,
    ) {
        self.emit(EventBody::TrainingStart(TrainingStart {
            name: Some(name.to_string()),
            total_epochs: Some(total_epochs),
            total_batches: Some(total_batches),
            config: Some(config),
            ..Default::default()
        }));
    }

    /// `training_end` with status `completed`, `failed` or `stopped`.
    pub fn training_end(&self, status: &str) {
        self.emit(EventBody::TrainingEnd(TrainingEnd {
            status: Some(status.to_string()),
            ..Default::default()
        }));
    }

    /// `epoch_start`.
    pub fn epoch_start(&self, epoch: u64, total_epochs: u64) {
        self.emit(EventBody::EpochStart(EpochStart {
            epoch: Some(epoch),
            total_epochs: Some(total_epochs),
            ..Default::default()
        }));
    }

    /// `epoch_end` with summary metrics.
    pub fn epoch_end(&self, epoch: u64, metrics: stepwatch_events::event::Metrics) {
        self.emit(EventBody::EpochEnd(EpochEnd {
            epoch: Some(epoch),
            metrics: Some(metrics),
            ..Default::default()
        }));
    }

    /// `batch_end` with loss and learning rate.
    pub fn batch_end(&self, epoch: u64, batch_idx: u64, step: u64, loss: f64, lr: f64) {
        self.emit(EventBody::BatchEnd(BatchEnd {
            epoch: Some(epoch),
            batch_idx: Some(batch_idx),
            step: Some(step),
            loss: Some(loss),
            lr: Some(lr),
            ..Default::default()
        }));
    }

    /// `checkpoint_saved`.
    pub fn checkpoint_saved(
        &self,
        path: &str,
        epoch: u64,
        step: u64,
        size_bytes: u64,
        metrics: stepwatch_events::event::Metrics,
    ) {
        self.emit(EventBody::CheckpointSaved(CheckpointSaved {
            checkpoint_path: Some(path.to_string()),
            epoch: Some(epoch),
            step: Some(step),
            size_bytes: Some(size_bytes),
            metrics: Some(metrics),
            ..Default::default()
        }));
    }

    /// `log`.
    pub fn log(&self, level: &str, message: &str) {
        self.emit(EventBody::Log(Log {
            level: Some(level.to_string()),
            message: Some(message.to_string()),
            logger: Some("trainer".to_string()),
            ..Default::default()
        }));
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
        let _ = self.tx.try_send(Msg::Close);
    }
}

/// Follows the run's command stream, reconnecting with backoff, until the client closes.
fn command_loop(
    url: &str,
    token: Option<&str>,
    out: &SyncSender<Command>,
    closed: &std::sync::atomic::AtomicBool,
) {
    use std::io::BufRead;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(2))
        .timeout_read(Duration::from_secs(30))
        .build();
    let mut backoff = MIN_BACKOFF;
    while !closed.load(Ordering::Relaxed) {
        let mut req = agent.get(url);
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        if let Ok(resp) = req.call() {
            backoff = MIN_BACKOFF;
            let reader = std::io::BufReader::new(resp.into_reader());
            let (mut event, mut data) = (String::new(), String::new());
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if closed.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                } else if line.is_empty() {
                    if event == "command" {
                        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) {
                            let cmd = Command {
                                id: v["command_id"].as_str().unwrap_or_default().to_string(),
                                command: v["command"].as_str().unwrap_or_default().to_string(),
                                args: v["args"].as_object().cloned().unwrap_or_default(),
                            };
                            if !cmd.id.is_empty() && out.try_send(cmd).is_err() {
                                return;
                            }
                        }
                    }
                    event.clear();
                    data.clear();
                }
            }
        }
        std::thread::sleep(jitter(backoff));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Outcome {
    Sent,
    /// The relay named one bad event: drop it, send the rest again.
    BadEvent(usize),
    Rejected,
    Retry,
}

/// The sender thread's state.
struct Sender {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
    src: String,
    counters: Arc<Counters>,
    /// Spool files earlier processes left for this run, sent first.
    older: Vec<spool::Spool>,
    /// This sender's spool (none when spooling is off).
    spool: Option<spool::Spool>,
    /// Spool drops already reported to the relay.
    reported: u64,
    waiters: Vec<SyncSender<()>>,
    closing: bool,
}

impl Sender {
    fn run(mut self, rx: &Receiver<Msg>) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let delivered = if let Some(s) = self.next_spool() {
                let (mut events, pos) = s.read(DEFAULT_MAX_BATCH);
                if events.is_empty() {
                    let _ = pos; // only torn or invalid lines left: skip to the end
                    s.advance(u64::MAX);
                    self.older.retain(spool::Spool::pending);
                    continue;
                }
                let ok = self.post_all(&mut events);
                if ok {
                    if let Some(s) = self.next_spool() {
                        s.advance(pos);
                    }
                    self.older.retain(spool::Spool::pending);
                }
                ok
            } else {
                self.report_drops();
                if !self.waiters.is_empty() {
                    for w in self.waiters.drain(..) {
                        let _ = w.try_send(());
                    }
                }
                if self.closing {
                    return;
                }
                let mut batch = self.gather(rx);
                if batch.is_empty() {
                    continue;
                }
                let ok = self.post_all(&mut batch);
                if !ok && !self.spool_batch(&batch) {
                    // No spool: hold the batch in memory and retry it (queue backs up).
                    self.retry_in_memory(batch);
                    continue;
                }
                ok
            };
            if delivered {
                backoff = MIN_BACKOFF;
                continue;
            }
            if self.closing {
                self.spill(rx);
                self.settle();
                return;
            }
            // Relay unreachable: wait out the backoff, moving the queue to disk meanwhile.
            let until = Instant::now() + jitter(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            while Instant::now() < until && !self.closing {
                std::thread::sleep(
                    SPILL_EVERY.min(until.saturating_duration_since(Instant::now())),
                );
                self.spill(rx);
            }
            if self.closing {
                self.settle();
                return;
            }
        }
    }

    /// The spool to send from next: earlier processes' files, then our own.
    fn next_spool(&mut self) -> Option<&mut spool::Spool> {
        if let Some(i) = self.older.iter().position(spool::Spool::pending) {
            return self.older.get_mut(i);
        }
        self.spool.as_mut().filter(|s| s.pending())
    }

    /// Blocks for the first message, then lingers briefly to fill a batch.
    fn gather(&mut self, rx: &Receiver<Msg>) -> Vec<Event> {
        let mut batch = Vec::new();
        match rx.recv() {
            Ok(Msg::Event(e)) => batch.push(*e),
            Ok(Msg::Flush(w)) => self.waiters.push(w),
            Ok(Msg::Close) | Err(_) => self.closing = true,
        }
        let linger_until = Instant::now() + DEFAULT_LINGER;
        while batch.len() < DEFAULT_MAX_BATCH && self.waiters.is_empty() && !self.closing {
            let left = linger_until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Msg::Event(e)) => batch.push(*e),
                Ok(Msg::Flush(w)) => self.waiters.push(w),
                Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => self.closing = true,
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        batch
    }

    /// Moves everything queued now into the spool.
    fn spill(&mut self, rx: &Receiver<Msg>) {
        let mut batch = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(Msg::Event(e)) => batch.push(*e),
                Ok(Msg::Flush(w)) => self.waiters.push(w),
                Ok(Msg::Close) => self.closing = true,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.closing = true;
                    break;
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
            if batch.len() >= DEFAULT_MAX_BATCH {
                self.spool_batch(&std::mem::take(&mut batch));
            }
        }
        self.spool_batch(&batch);
    }

    fn spool_batch(&mut self, batch: &[Event]) -> bool {
        let Some(s) = self.spool.as_mut() else {
            return false;
        };
        let before = s.dropped;
        let ok = s.append(batch).is_ok();
        self.counters
            .spool_dropped
            .fetch_add(s.dropped - before, Ordering::Relaxed);
        ok
    }

    fn settle(&mut self) {
        if let Some(s) = self.spool.as_mut() {
            s.settle();
        }
    }

    /// Without a spool: retries one batch with backoff until it is taken or closing.
    fn retry_in_memory(&mut self, mut batch: Vec<Event>) {
        let mut backoff = MIN_BACKOFF;
        while !self.post_all(&mut batch) {
            std::thread::sleep(jitter(backoff));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Tells the relay, once the spool is empty again, how many events it dropped.
    fn report_drops(&mut self) {
        let Some(s) = self.spool.as_ref() else { return };
        if s.dropped <= self.reported {
            return;
        }
        self.reported = s.dropped;
        let mut fields = serde_json::Map::new();
        fields.insert("dropped_events".into(), s.dropped.into());
        fields.insert("dropped_batch_end".into(), s.dropped_batch_end.into());
        let mut e = Event::new(EventBody::Log(Log {
            level: Some("warning".into()),
            logger: Some("stepwatch".into()),
            message: Some(format!(
                "stepwatch: the relay was unreachable and the spool was full: {} events \
                 dropped ({} of them batch_end)",
                s.dropped, s.dropped_batch_end
            )),
            extra: fields,
        }));
        e.time = Some(now());
        let _ = self.post_all(&mut vec![e]);
    }

    /// Sends until the relay took or refused every event (true), or is unreachable
    /// (false). Only events stamped with this sender's `src` count as sent.
    fn post_all(&mut self, batch: &mut Vec<Event>) -> bool {
        while !batch.is_empty() {
            match post(&self.agent, &self.endpoint, self.token.as_deref(), batch) {
                Outcome::Sent => {
                    let own = batch
                        .iter()
                        .filter(|e| e.src.as_deref() == Some(self.src.as_str()))
                        .count();
                    self.counters.sent.fetch_add(own as u64, Ordering::Relaxed);
                    return true;
                }
                Outcome::BadEvent(i) => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    batch.remove(i);
                }
                Outcome::Rejected => {
                    self.counters
                        .rejected
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    return true;
                }
                Outcome::Retry => return false,
            }
        }
        true
    }
}

fn post(agent: &ureq::Agent, endpoint: &str, token: Option<&str>, batch: &[Event]) -> Outcome {
    let mut body = String::new();
    for e in batch {
        body.push_str(&e.to_json());
        body.push('\n');
    }
    let mut req = agent
        .post(endpoint)
        .set("Content-Type", "application/x-ndjson");
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.send_string(&body) {
        Ok(_) => Outcome::Sent,
        Err(ureq::Error::Status(400, resp)) => resp
            .into_json::<serde_json::Value>()
            .ok()
            .and_then(|v| v["index"].as_u64())
            .map(|i| i as usize)
            .filter(|i| *i < batch.len())
            .map_or(Outcome::Rejected, Outcome::BadEvent),
        // Credentials missing or refused: keep the events (spool) and retry, so fixing
        // STEPWATCH_TOKEN loses nothing.
        Err(ureq::Error::Status(401 | 403, _)) => Outcome::Retry,
        Err(ureq::Error::Status(code, _)) if (400..500).contains(&code) && code != 429 => {
            Outcome::Rejected
        }
        Err(_) => Outcome::Retry,
    }
}
