//! The agent's loop: heartbeat (renewing every lease), claim while slots are free, start
//! or adopt each held job on the engine, follow it, report, forward its output, cancel in
//! two stages.

use crate::client::{CallError, Relay};
use crate::engine::{Engine, Observed};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwatch_events::jobs::{Heartbeat, JobStatus, JobView, Launch, Report};

type ReportFn<'a> = dyn Fn(&str, Option<String>, Option<i32>) -> Report + 'a;

/// Seconds between the engine's stop (SIGTERM) and its kill, once the grace has passed.
const KILL_AFTER_S: u64 = 10;
/// Most output lines forwarded to a run per tick.
const LINES_PER_TICK: usize = 500;

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The relay, as jobs will reach it too.
    pub url: String,
    /// The agent's token (a user with role `agent` or `admin`), when the relay has logins.
    pub token: Option<String>,
    pub queue: String,
    /// This agent's name: unique among the queue's agents (default: host and pid).
    pub name: String,
    /// Jobs it runs at once.
    pub slots: u32,
    /// Time between ticks (heartbeat, claim, poll).
    pub tick: Duration,
}

/// A job this agent holds.
struct Held {
    launch: Launch,
    engine_id: Option<String>,
    /// What was last reported: the engine's reason, and whether running was said.
    reason: Option<String>,
    running: bool,
    /// When the relay said a cancel was requested, and what was done about it.
    cancel_since: Option<Instant>,
    stopped: bool,
    killed: bool,
    run_live: bool,
    /// The cancel began with the `stop` command to the trainer: wait the grace for it.
    stop_command: bool,
    /// This agent's sender id for the run's log, and its sequence.
    log_src: String,
    log_seq: u64,
}

impl Held {
    fn new(launch: Launch) -> Held {
        Held {
            engine_id: launch.engine_id.clone(),
            running: launch.status == "running",
            launch,
            reason: None,
            cancel_since: None,
            stopped: false,
            killed: false,
            run_live: false,
            stop_command: false,
            log_src: format!(
                "agent:{}:{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
            ),
            log_seq: 0,
        }
    }

    fn token(&self) -> Option<&str> {
        self.launch.env.get("STEPWATCH_TOKEN").map(String::as_str)
    }
}

/// Runs the agent until `stop` is set. Jobs at the engine keep running when the agent
/// stops; a new agent of the queue adopts them once their leases run out.
pub fn run(opts: &AgentOptions, engine: Arc<dyn Engine>, stop: &AtomicBool) -> anyhow::Result<()> {
    let relay = Relay::new(&opts.url, opts.token.clone());
    let mut held: BTreeMap<String, Held> = BTreeMap::new();
    tracing::info!(
        queue = %opts.queue, engine = engine.name(), agent = %opts.name, slots = opts.slots,
        "agent serving queue {} on {}", opts.queue, opts.url
    );
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match tick(opts, &relay, engine.as_ref(), &mut held) {
            Ok(()) => warned = false,
            Err(e) if !warned => {
                tracing::warn!("relay: {e}; retrying every {:?}", opts.tick);
                warned = true;
            }
            Err(_) => {}
        }
        let spent = started.elapsed();
        if spent < opts.tick {
            std::thread::sleep(opts.tick - spent);
        }
    }
    Ok(())
}

fn tick(
    opts: &AgentOptions,
    relay: &Relay,
    engine: &dyn Engine,
    held: &mut BTreeMap<String, Held>,
) -> Result<(), CallError> {
    let answer = relay.heartbeat(&Heartbeat {
        agent: opts.name.clone(),
        queue: opts.queue.clone(),
        engine: engine.name().to_string(),
        host: host_name(),
        slots: opts.slots,
        jobs: held.keys().cloned().collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })?;
    for view in &answer.jobs {
        if let Some(h) = held.get_mut(&view.state.job) {
            absorb(opts, engine, h, view);
        }
    }
    // Jobs the relay no longer gives this agent (lease lost, finished elsewhere).
    let theirs: Vec<String> = held
        .keys()
        .filter(|id| {
            !answer.jobs.iter().any(|v| {
                &v.state.job == *id && v.state.agent.as_deref() == Some(opts.name.as_str())
            })
        })
        .cloned()
        .collect();
    for id in theirs {
        tracing::warn!(job = %id, "the relay no longer gives job {id} to this agent");
        held.remove(&id);
    }
    let ids: Vec<String> = held.keys().cloned().collect();
    for id in ids {
        let done = held
            .get_mut(&id)
            .is_some_and(|h| follow(opts, relay, engine, h));
        if done {
            held.remove(&id);
        }
    }
    while (held.len() as u32) < opts.slots {
        let Some(launch) = relay.claim(&opts.queue, &opts.name)? else {
            break;
        };
        tracing::info!(job = %launch.job, run = %launch.run, status = %launch.status, "claimed job {} ({})", launch.job, launch.name);
        let id = launch.job.clone();
        let mut h = Held::new(launch);
        if !follow(opts, relay, engine, &mut h) {
            held.insert(id, h);
        }
    }
    Ok(())
}

/// Takes in the relay's view of a held job: a cancel requested, the run live.
fn absorb(opts: &AgentOptions, engine: &dyn Engine, h: &mut Held, view: &JobView) {
    h.run_live = view.run_live;
    h.stop_command = view.state.cancel_stop_command;
    if view.state.cancel_requested_by.is_some() && h.cancel_since.is_none() {
        tracing::info!(job = %h.launch.job, "cancel requested");
        h.cancel_since = Some(Instant::now());
    }
    if view.state.status == JobStatus::Cancelled {
        // Cancelled at the relay before the engine had it: make sure nothing runs.
        if let Some(id) = &h.engine_id {
            let _ = engine.kill(id);
        }
    }
    let _ = opts;
}

/// One look at a held job; whether the agent is done with it.
fn follow(opts: &AgentOptions, relay: &Relay, engine: &dyn Engine, h: &mut Held) -> bool {
    let job = h.launch.job.clone();
    let Some(engine_id) = h.engine_id.clone() else {
        return start(opts, relay, engine, h);
    };
    forward_output(relay, engine, h, &engine_id);
    if let Some(since) = h.cancel_since {
        let grace = if h.stop_command {
            h.launch.cancel_grace_s
        } else {
            0
        };
        let waited = since.elapsed().as_secs();
        if !h.stopped && waited >= grace {
            tracing::info!(job = %job, "cancel: stopping {engine_id} at the engine");
            h.stopped = engine.stop(&engine_id).is_ok();
        }
        if !h.killed && waited >= grace + KILL_AFTER_S {
            tracing::info!(job = %job, "cancel: killing {engine_id}");
            h.killed = engine.kill(&engine_id).is_ok();
        }
    }
    let observed = match engine.status(&engine_id, &h.launch) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(job = %job, "engine status of {engine_id}: {e}");
            return false;
        }
    };
    let report = |kind: &str, reason: Option<String>, exit_code: Option<i32>| Report {
        agent: opts.name.clone(),
        kind: kind.to_string(),
        engine_id: Some(engine_id.clone()),
        reason,
        exit_code,
    };
    let sent = match &observed {
        Observed::Pending { reason } if h.reason.as_ref() != Some(reason) => {
            h.reason = Some(reason.clone());
            relay.report(&job, &report("engine_status", Some(reason.clone()), None))
        }
        Observed::Running if !h.running => {
            h.running = true;
            relay.report(&job, &report("running", None, None))
        }
        Observed::Pending { .. } | Observed::Running => return false,
        final_state => {
            forward_output(relay, engine, h, &engine_id);
            let r = final_report(final_state, h, &report);
            relay.report(&job, &r)
        }
    };
    match sent {
        Ok(_) => observed.is_final(),
        Err(CallError::Refused { message, .. }) => {
            // The relay's state moved on (the job was cancelled or finished there).
            tracing::info!(job = %job, "report refused: {message}");
            observed.is_final()
        }
        Err(e) => {
            tracing::warn!(job = %job, "report: {e}");
            if !observed.is_final() {
                // Say it again next tick.
                h.reason = None;
                h.running = false;
            }
            false
        }
    }
}

fn final_report(observed: &Observed, h: &Held, report: &ReportFn<'_>) -> Report {
    let cancelled = h.cancel_since.is_some();
    match observed {
        Observed::Succeeded if !cancelled => report("succeeded", None, None),
        Observed::Failed { reason, exit_code } if !cancelled => {
            report("failed", Some(reason.clone()), *exit_code)
        }
        Observed::Gone if !cancelled => report(
            "failed",
            Some("the engine no longer knows the job and recorded no end".into()),
            None,
        ),
        Observed::Cancelled { reason } if !cancelled => {
            report("cancelled", Some(reason.clone()), None)
        }
        _ => {
            let how = if h.killed {
                format!(
                    "killed after the {} s grace period",
                    h.launch.cancel_grace_s
                )
            } else if h.stopped {
                "stopped at the engine (SIGTERM)".to_string()
            } else {
                "ended after the stop command".to_string()
            };
            report("cancelled", Some(how), None)
        }
    }
}

/// Hands a claimed job to the engine (which finds it instead if a dead agent started it).
fn start(opts: &AgentOptions, relay: &Relay, engine: &dyn Engine, h: &mut Held) -> bool {
    let job = h.launch.job.clone();
    if h.cancel_since.is_some() {
        let _ = relay.report(
            &job,
            &Report {
                agent: opts.name.clone(),
                kind: "cancelled".into(),
                reason: Some("cancelled before it started".into()),
                ..Report::default()
            },
        );
        return true;
    }
    let mut launch = h.launch.clone();
    launch
        .env
        .insert("STEPWATCH_URL".into(), relay.url().to_string());
    match engine.start(&launch) {
        Ok(engine_id) => {
            tracing::info!(job = %job, "started as {engine_id}");
            h.engine_id = Some(engine_id.clone());
            h.launch = launch;
            let sent = relay.report(
                &job,
                &Report {
                    agent: opts.name.clone(),
                    kind: "engine_submitted".into(),
                    engine_id: Some(engine_id.clone()),
                    ..Report::default()
                },
            );
            if let Err(CallError::Refused { message, .. }) = sent {
                // Cancelled (or taken) meanwhile: nothing of ours may keep running.
                tracing::warn!(job = %job, "engine_submitted refused ({message}): killing {engine_id}");
                let _ = engine.kill(&engine_id);
                return true;
            }
            false
        }
        Err(crate::EngineError::Refused(why)) => {
            let _ = relay.report(
                &job,
                &Report {
                    agent: opts.name.clone(),
                    kind: "failed".into(),
                    reason: Some(format!(
                        "the {} engine refused the job: {why}",
                        engine.name()
                    )),
                    ..Report::default()
                },
            );
            true
        }
        Err(crate::EngineError::Unavailable(why)) => {
            tracing::warn!(job = %job, "engine unavailable, will retry: {why}");
            let _ = relay.report(
                &job,
                &Report {
                    agent: opts.name.clone(),
                    kind: "engine_status".into(),
                    reason: Some(format!("waiting for the {} engine: {why}", engine.name())),
                    ..Report::default()
                },
            );
            false
        }
    }
}

/// Sends what the job printed to its run's log, as the agent's own `log` events.
fn forward_output(relay: &Relay, engine: &dyn Engine, h: &mut Held, engine_id: &str) {
    let lines = engine.output(engine_id, LINES_PER_TICK);
    if lines.is_empty() {
        return;
    }
    let src = h.log_src.clone();
    let events: Vec<Value> = lines
        .iter()
        .map(|l| {
            h.log_seq += 1;
            json!({
                "event": "log",
                "level": if l.stream == "stderr" { "warning" } else { "info" },
                "logger": l.stream,
                "message": l.text,
                "src": src,
                "seq": h.log_seq,
            })
        })
        .collect();
    if let Err(e) = relay.post_run_events(&h.launch.run, h.token(), &events) {
        tracing::debug!(job = %h.launch.job, "forwarding output: {e}");
    }
}

/// This machine's name, for the queue page.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
