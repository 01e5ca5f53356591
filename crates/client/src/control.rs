//! Control from the dashboard: a background thread follows the run's command stream and
//! answers each command on receipt (`accepted`, or `rejected` when the trainer cannot do
//! it); the training thread carries commands out at its control points
//! ([`Client::control_point`](crate::Client::control_point)) and gives the final answer
//! there. The timeline every SDK follows is the table in ARCHITECTURE.md, "The control
//! path".

use crate::sender::{jitter, Outbox, MAX_BACKOFF, MIN_BACKOFF};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use stepwatch_events::event::{CheckpointLoaded, CommandAck};
use stepwatch_events::EventBody;

/// How often a paused trainer looks for resume, stop or other commands.
pub const PAUSE_POLL: Duration = Duration::from_millis(50);

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
/// the trainer reject that command, saying it does not support it.
#[derive(Default)]
pub struct Handlers<'a> {
    pub load_checkpoint: Option<LoadHandler<'a>>,
    pub ask: Option<AskHandler<'a>>,
}

/// Where the run's commands stand, shared by the command and training threads.
#[derive(Default)]
struct State {
    /// A pause received and not finished (paused once `paused`).
    pause: Option<String>,
    paused: bool,
    /// A resume received for that pause.
    resume: Option<String>,
    /// A stop received; answered `done` when the run ends.
    stop: Option<String>,
    stop_done: bool,
    /// The handlers the last control point had (load_checkpoint, ask); `None` before
    /// the first one.
    handlers: Option<(bool, bool)>,
}

struct Shared {
    state: Mutex<State>,
    closed: AtomicBool,
    outbox: Arc<Outbox>,
    seen: Mutex<std::collections::HashSet<String>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ack(&self, cmd: &Command, status: &str, message: &str, output: Option<serde_json::Value>) {
        self.outbox.emit(EventBody::CommandAck(CommandAck {
            command_id: Some(cmd.id.clone()),
            command: Some(cmd.command.clone()),
            status: Some(status.to_string()),
            message: (!message.is_empty()).then(|| message.to_string()),
            output,
            ..Default::default()
        }));
    }

    /// The answer on receipt (command thread); true when the command goes on to the
    /// training thread (after this answer is queued).
    fn receive(&self, c: &Command) -> bool {
        let mut s = self.state();
        let (answer, forward) = match c.command.as_str() {
            "pause" if s.stop.is_some() => (("rejected", "already stopping".into()), false),
            "pause" if s.pause.is_some() => (("rejected", "already paused".into()), false),
            "pause" => {
                s.pause = Some(c.id.clone());
                return true; // `accepted` ("paused") comes when the trainer pauses
            }
            "resume" if s.pause.is_none() || s.resume.is_some() => {
                (("rejected", "not paused".into()), false)
            }
            "resume" => {
                s.resume = Some(c.id.clone());
                (("accepted", "resuming".into()), true)
            }
            "stop" if s.stop.is_some() => (("rejected", "already stopping".into()), false),
            "stop" => {
                s.stop = Some(c.id.clone());
                let msg = "stop accepted; the loop ends at its next control point";
                (("accepted", msg.into()), true)
            }
            "load_checkpoint" | "ask" => {
                let has = s
                    .handlers
                    .map(|(load, ask)| if c.command == "ask" { ask } else { load });
                if has == Some(false) {
                    let msg = format!("this trainer does not support {}", c.command);
                    (("rejected", msg), false)
                } else {
                    (
                        ("accepted", "queued for the next control point".into()),
                        true,
                    )
                }
            }
            other => (("rejected", format!("unknown command {other:?}")), false),
        };
        // Answered before the state is let go: the training thread's final answer
        // (which takes the state first) always comes after this one.
        self.ack(c, answer.0, &answer.1, None);
        drop(s);
        forward
    }
}

/// One client's command side: the stream thread and the state of its commands.
pub(crate) struct Control {
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    /// `STEPWATCH_RESUME_FROM` (a retried launched job), until the first control point
    /// loads it, or [`Control::take_resume`] hands it to the script.
    resume: Mutex<Option<String>>,
}

impl Control {
    /// Follows `stream` (when `follow`) on a background thread.
    pub fn start(
        stream: String,
        token: Option<String>,
        outbox: Arc<Outbox>,
        follow: bool,
        run: &str,
    ) -> Control {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
            outbox,
            seen: Mutex::new(std::collections::HashSet::new()),
        });
        let (tx, commands) = mpsc::sync_channel(1024);
        if follow {
            let shared = shared.clone();
            let _ = std::thread::Builder::new()
                .name(format!("stepwatch-commands-{run}"))
                .spawn(move || command_loop(&stream, token.as_deref(), &tx, &shared));
        }
        let resume = std::env::var("STEPWATCH_RESUME_FROM")
            .ok()
            .filter(|p| !p.is_empty());
        Control {
            shared,
            commands,
            resume: Mutex::new(resume),
        }
    }

    /// The checkpoint a retried job resumes from, claimed by the script (which then loads
    /// it itself; the first control point will not).
    pub fn take_resume(&self) -> Option<String> {
        self.resume.lock().ok()?.take()
    }

    /// At the first control point: load the checkpoint to resume from through the
    /// `load_checkpoint` handler, as if the dashboard had asked for it.
    fn resume_once(&self, handlers: &mut Handlers<'_>) {
        let Some(path) = self.take_resume() else {
            return;
        };
        let Some(f) = handlers.load_checkpoint.as_mut() else {
            self.shared.outbox.emit(EventBody::Log(stepwatch_events::event::Log {
                level: Some("warning".into()),
                message: Some(format!(
                    "STEPWATCH_RESUME_FROM={path} but this trainer has no load_checkpoint handler: starting from the beginning"
                )),
                logger: Some("stepwatch".into()),
                ..Default::default()
            }));
            return;
        };
        match f(&path) {
            Ok(_) => self
                .shared
                .outbox
                .emit(EventBody::CheckpointLoaded(CheckpointLoaded {
                    checkpoint_path: Some(path),
                    ..Default::default()
                })),
            Err(e) => self.shared.outbox.emit(EventBody::ErrorOccurred(
                stepwatch_events::event::ErrorOccurred {
                    message: Some(format!("resuming from {path}: {e}")),
                    fatal: Some(false),
                    ..Default::default()
                },
            )),
        }
    }

    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
    }

    pub fn poll_commands(&self) -> Vec<Command> {
        self.commands.try_iter().collect()
    }

    pub fn ack(
        &self,
        cmd: &Command,
        status: &str,
        message: &str,
        output: Option<serde_json::Value>,
    ) {
        self.shared.ack(cmd, status, message, output);
    }

    /// The run ends: a stop received is answered `done` ("stopped"), once; true if
    /// there was one.
    pub fn finish_stop(&self) -> bool {
        let mut s = self.shared.state();
        let Some(id) = s.stop.clone() else {
            return false;
        };
        if !s.stop_done {
            s.stop_done = true;
            drop(s);
            self.ack(&named(&id, "stop"), "done", "stopped", None);
        }
        true
    }

    /// A stop was received and the run has not ended.
    pub fn stop_pending(&self) -> bool {
        let s = self.shared.state();
        s.stop.is_some() && !s.stop_done
    }

    /// The control point (see [`Client::control_point`](crate::Client::control_point)).
    pub fn control_point(&self, handlers: &mut Handlers<'_>) -> Flow {
        self.shared.state().handlers =
            Some((handlers.load_checkpoint.is_some(), handlers.ask.is_some()));
        self.resume_once(handlers);
        self.run_work(handlers);
        let pause = {
            let mut s = self.shared.state();
            let first = s.pause.is_some() && s.stop.is_none() && !s.paused;
            s.paused |= first;
            first.then(|| s.pause.clone()).flatten()
        };
        if let Some(id) = &pause {
            self.ack(&named(id, "pause"), "accepted", "paused", None);
            self.wait_paused(handlers);
        }
        if self.stop_pending() {
            return Flow::Stop;
        }
        Flow::Continue
    }

    /// Blocks until resumed or stopped, still running load / ask; answers the pause and
    /// the resume.
    fn wait_paused(&self, handlers: &mut Handlers<'_>) {
        loop {
            std::thread::sleep(PAUSE_POLL);
            self.run_work(handlers);
            let s = self.shared.state();
            if s.resume.is_some() || s.stop.is_some() || self.shared.closed.load(Ordering::Relaxed)
            {
                break;
            }
        }
        let (pause, resume) = {
            let mut s = self.shared.state();
            s.paused = false;
            (s.pause.take(), s.resume.take())
        };
        let Some(pause) = pause else { return };
        let said = if resume.is_some() {
            "resumed"
        } else {
            "stopped while paused"
        };
        self.ack(&named(&pause, "pause"), "done", said, None);
        if let Some(r) = resume {
            self.ack(&named(&r, "resume"), "done", "resumed", None);
        }
    }

    /// Runs the load / ask commands received, in order (pause, resume and stop are
    /// state: see [`Control::control_point`]).
    fn run_work(&self, handlers: &mut Handlers<'_>) {
        for c in self.poll_commands() {
            match c.command.as_str() {
                "load_checkpoint" => self.load(&c, handlers),
                "ask" => self.ask(&c, handlers),
                _ => {}
            }
        }
    }

    fn load(&self, c: &Command, handlers: &mut Handlers<'_>) {
        let Some(f) = handlers.load_checkpoint.as_mut() else {
            let msg = "this trainer does not support load_checkpoint";
            return self.ack(c, "rejected", msg, None);
        };
        let path = c
            .args
            .get("path")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        match f(path) {
            Ok(msg) => {
                self.shared
                    .outbox
                    .emit(EventBody::CheckpointLoaded(CheckpointLoaded {
                        checkpoint_path: Some(path.to_string()),
                        ..Default::default()
                    }));
                self.ack(c, "done", &msg, None);
            }
            Err(e) => self.ack(c, "failed", &e, None),
        }
    }

    fn ask(&self, c: &Command, handlers: &mut Handlers<'_>) {
        let Some(f) = handlers.ask.as_mut() else {
            return self.ack(c, "rejected", "this trainer does not support ask", None);
        };
        let input = c.args.get("input").cloned().unwrap_or_default();
        let t0 = Instant::now();
        match f(&input) {
            Ok(out) => {
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                self.ack(c, "done", &format!("answered in {ms:.0} ms"), Some(out));
            }
            Err(e) => self.ack(c, "failed", &e, None),
        }
    }
}

fn named(id: &str, command: &str) -> Command {
    Command {
        id: id.to_string(),
        command: command.to_string(),
        args: serde_json::Map::new(),
    }
}

/// A `command` SSE message's data as a command (no id: none).
fn parse_command(data: &str) -> Option<Command> {
    let v = serde_json::from_str::<serde_json::Value>(data).ok()?;
    let cmd = Command {
        id: v["command_id"].as_str().unwrap_or_default().to_string(),
        command: v["command"].as_str().unwrap_or_default().to_string(),
        args: v["args"].as_object().cloned().unwrap_or_default(),
    };
    (!cmd.id.is_empty()).then_some(cmd)
}

/// Follows the run's command stream, reconnecting with backoff, until the client
/// closes; answers each new command on receipt and hands it to the training thread.
fn command_loop(url: &str, token: Option<&str>, out: &SyncSender<Command>, shared: &Shared) {
    use std::io::BufRead;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(2))
        .timeout_read(Duration::from_secs(30))
        .build();
    let mut backoff = MIN_BACKOFF;
    while !shared.closed.load(Ordering::Relaxed) {
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
                if shared.closed.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                } else if line.is_empty() {
                    if event == "command" {
                        if let Some(cmd) = parse_command(&data) {
                            let fresh = shared
                                .seen
                                .lock()
                                .map(|mut s| s.insert(cmd.id.clone()))
                                .unwrap_or(true);
                            if fresh && shared.receive(&cmd) && out.try_send(cmd).is_err() {
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
