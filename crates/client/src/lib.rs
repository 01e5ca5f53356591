//! # stepwatch-client — the Rust trainer SDK
//!
//! [`Client::emit`] hands an event to a bounded queue and returns at once; a
//! background thread sends queued events to the relay in NDJSON batches, with a
//! `src` id and increasing `seq` so a retried batch is stored once. When the relay is
//! unreachable the thread retries with capped, jittered exponential backoff; when the
//! queue is full an emit is dropped and counted ([`Client::dropped`]) rather than
//! waiting. The training thread is never blocked and never sees an error.
//!
//! Commands from the dashboard (pause, resume, stop, load_checkpoint, ask) arrive on a
//! second background thread; the trainer takes them with [`Client::poll_commands`] at
//! its control points (each id once) and answers with [`Client::ack`].

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

enum Msg {
    Event(Box<Event>),
    Flush(SyncSender<()>),
    Close,
}

/// Counters shared with the sender thread.
#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
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
    /// Starts sending events for `run` to the relay at `url` (e.g. `http://127.0.0.1:8080`).
    pub fn connect(url: &str, run: &str) -> Client {
        Self::with_capacity(url, run, DEFAULT_QUEUE_CAPACITY)
    }

    /// As [`Client::connect`], with a queue of `capacity` events.
    pub fn with_capacity(url: &str, run: &str, capacity: usize) -> Client {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let endpoint = format!("{}/api/runs/{}/events", url.trim_end_matches('/'), run);
        let c2 = counters.clone();
        let thread = std::thread::Builder::new()
            .name(format!("stepwatch-sender-{run}"))
            .spawn(move || sender_loop(&endpoint, &rx, &c2))
            .ok();
        let src = format!(
            "rs-{}-{:x}",
            std::process::id(),
            (now() * 1e6) as u64 ^ (run.len() as u64) << 48
        );
        let (cmd_tx, commands) = mpsc::sync_channel(1024);
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stream = format!(
            "{}/api/runs/{}/commands/stream",
            url.trim_end_matches('/'),
            run
        );
        let closed2 = closed.clone();
        let _ = std::thread::Builder::new()
            .name(format!("stepwatch-commands-{run}"))
            .spawn(move || command_loop(&stream, &cmd_tx, &closed2));
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

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
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

    /// Flushes (bounded by `timeout`) and stops the sender thread.
    pub fn close(mut self, timeout: Duration) -> bool {
        let ok = self.flush(timeout);
        let _ = self.tx.try_send(Msg::Close);
        if ok {
            if let Some(t) = self.thread.take() {
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
fn command_loop(url: &str, out: &SyncSender<Command>, closed: &std::sync::atomic::AtomicBool) {
    use std::io::BufRead;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(2))
        .timeout_read(Duration::from_secs(30))
        .build();
    let mut backoff = MIN_BACKOFF;
    while !closed.load(Ordering::Relaxed) {
        if let Ok(resp) = agent.get(url).call() {
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

fn post(agent: &ureq::Agent, endpoint: &str, batch: &[Event]) -> Outcome {
    let mut body = String::new();
    for e in batch {
        body.push_str(&e.to_json());
        body.push('\n');
    }
    match agent
        .post(endpoint)
        .set("Content-Type", "application/x-ndjson")
        .send_string(&body)
    {
        Ok(_) => Outcome::Sent,
        Err(ureq::Error::Status(400, resp)) => resp
            .into_json::<serde_json::Value>()
            .ok()
            .and_then(|v| v["index"].as_u64())
            .map(|i| i as usize)
            .filter(|i| *i < batch.len())
            .map_or(Outcome::Rejected, Outcome::BadEvent),
        Err(ureq::Error::Status(code, _)) if (400..500).contains(&code) && code != 429 => {
            Outcome::Rejected
        }
        Err(_) => Outcome::Retry,
    }
}

fn sender_loop(endpoint: &str, rx: &Receiver<Msg>, counters: &Counters) {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build();
    let mut batch: Vec<Event> = Vec::new();
    let mut waiters: Vec<SyncSender<()>> = Vec::new();
    let mut closing = false;
    loop {
        // Gather a batch: block for the first message, then linger briefly.
        if batch.is_empty() && waiters.is_empty() {
            match rx.recv() {
                Ok(Msg::Event(e)) => batch.push(*e),
                Ok(Msg::Flush(w)) => waiters.push(w),
                Ok(Msg::Close) | Err(_) => return,
            }
        }
        let linger_until = Instant::now() + DEFAULT_LINGER;
        while batch.len() < DEFAULT_MAX_BATCH && waiters.is_empty() && !closing {
            let left = linger_until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Msg::Event(e)) => batch.push(*e),
                Ok(Msg::Flush(w)) => waiters.push(w),
                Ok(Msg::Close) => closing = true,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => closing = true,
            }
        }
        let mut backoff = MIN_BACKOFF;
        while !batch.is_empty() {
            match post(&agent, endpoint, &batch) {
                Outcome::Sent => {
                    counters
                        .sent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                }
                Outcome::BadEvent(i) => {
                    counters.rejected.fetch_add(1, Ordering::Relaxed);
                    batch.remove(i);
                }
                Outcome::Rejected => {
                    counters
                        .rejected
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                }
                Outcome::Retry => {
                    std::thread::sleep(jitter(backoff));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        for w in waiters.drain(..) {
            let _ = w.try_send(());
        }
        if closing {
            return;
        }
    }
}
