//! The Ray engine on a real Ray head (`ray start --head`), in a private network namespace
//! so that Ray's traffic stays on loopback (see `stepwatch_e2e::in_private_network`).
//! First the engine alone (exit codes, one Ray job per key, hostile argv byte for byte,
//! time limit, refused extras, stop and kill), then end to end: a relay with a `ray` queue
//! and `stepwatch agent --engine ray` running SDK trainers there (success, cancel, an
//! agent killed with `kill -9` and its job adopted). One head per run: the checks run in
//! sequence in one test, and the head is stopped at the end, on failure too. Each check
//! prints how long Ray took.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use stepwatch_agent::engines::{ray::Ray, EngineOptions};
use stepwatch_agent::{Engine, EngineError, Observed};
use stepwatch_e2e::*;
use stepwatch_events::jobs::Launch;

fn engine(head: &RayHead, state: &TempDir) -> Ray {
    let mut opts = EngineOptions {
        state_dir: state.0.clone(),
        ..EngineOptions::default()
    };
    opts.opts.insert("address".into(), head.address.clone());
    Ray::new(&opts).unwrap()
}

fn launch(key: &str, argv: &[&str]) -> Launch {
    Launch {
        job: format!("job-{key}"),
        name: key.into(),
        queue: "ray".into(),
        run: format!("run-{key}"),
        attempt: 1,
        key: key.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        status: "claimed".into(),
        lease_s: 30,
        cancel_grace_s: 5,
        ..Launch::default()
    }
}

fn py() -> String {
    python().to_string_lossy().into_owned()
}

/// Starts the job, trying again while the head's job agent is not ready yet.
fn start(engine: &Ray, launch: &Launch) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match engine.start(launch) {
            Ok(id) => return id,
            Err(EngineError::Unavailable(why)) if Instant::now() < deadline => {
                eprintln!("ray not ready yet: {why}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("start {}: {e}", launch.key),
        }
    }
}

/// What one job went through: every distinct status, its output lines, and when it was
/// first seen running.
#[derive(Default)]
struct Followed {
    seen: Vec<Observed>,
    lines: Vec<String>,
    running_at: Option<Instant>,
}

impl Followed {
    fn last(&self) -> &Observed {
        self.seen.last().unwrap()
    }
}

/// Polls status and output (as the agent does) until `done` holds for the status.
fn follow(engine: &Ray, id: &str, launch: &Launch, done: impl Fn(&Observed) -> bool) -> Followed {
    let mut f = Followed::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        f.lines
            .extend(engine.output(id, 500).into_iter().map(|l| l.text));
        let now = engine.status(id, launch).unwrap();
        if now == Observed::Running && f.running_at.is_none() {
            f.running_at = Some(Instant::now());
        }
        if f.seen.last() != Some(&now) {
            f.seen.push(now.clone());
        }
        if done(&now) {
            f.lines
                .extend(engine.output(id, 500).into_iter().map(|l| l.text));
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: timed out, seen {:?}",
            f.seen
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Words a shell would act on if the entrypoint were not quoted right (harmless commands
/// only: a quoting bug shows as a failed comparison).
fn hostile() -> Vec<String> {
    let marker = std::env::temp_dir().join("pwned");
    let m = marker.display();
    vec![
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("a; touch {m}"),
        format!("x\ntouch {m}"),
        "it's".into(),
        "'".into(),
        "'\\''".into(),
        "  two  spaces ".into(),
        String::new(),
        "-n".into(),
        "--version".into(),
        "$HOME \\ \"dq\" * ? ~ | & > < { } ( ) # !".into(),
        "ünïcödé ✓".into(),
    ]
}

/// A job that fails with exit 3 after a second: running, then failed, its env and cwd
/// applied and its output read back once; a second start with its key starts nothing.
fn fails_with_its_exit_code(head: &RayHead, engine: &Ray, state: &TempDir) {
    let cwd = TempDir::new("ray-cwd");
    let code = "import os, sys, time; print('hi', os.environ['SW_GREETING'], os.getcwd()); \
                sys.stdout.flush(); time.sleep(1.5); print('bye'); sys.exit(3)";
    let mut l = launch("sw-fail-1", &[&py(), "-c", code]);
    l.env.insert("SW_GREETING".into(), "hello there".into());
    l.cwd = Some(cwd.0.to_string_lossy().into_owned());
    l.resources.cpus = Some(1);
    let submitted = Instant::now();
    let id = start(engine, &l);
    assert_eq!(id, "sw-fail-1");
    assert_eq!(start(engine, &l), id, "a second start returns the same job");
    let f = follow(engine, &id, &l, Observed::is_final);
    let jobs = head.jobs();
    let ours: Vec<&Value> = jobs
        .iter()
        .filter(|j| j["submission_id"] == "sw-fail-1")
        .collect();
    assert_eq!(ours.len(), 1, "Ray lists one job for the key");
    assert_eq!(ours[0]["metadata"]["stepwatch_job"], "job-sw-fail-1");
    // Ray's job record shows neither the entrypoint's resources nor a working_dir upload.
    let entrypoint = ours[0]["entrypoint"].as_str().unwrap();
    assert!(entrypoint.starts_with("cd '"), "{entrypoint}");
    assert_eq!(
        ours[0]["runtime_env"]["env_vars"]["SW_GREETING"],
        "hello there"
    );
    assert!(ours[0]["runtime_env"].get("working_dir").is_none());
    let running = f.running_at.expect("seen running");
    eprintln!(
        "submit → running took {:.1} s",
        (running - submitted).as_secs_f64()
    );
    assert!(f.seen.contains(&Observed::Running), "seen {:?}", f.seen);
    let Observed::Failed { exit_code, reason } = f.last() else {
        panic!("ended as {:?}", f.last())
    };
    assert_eq!(*exit_code, Some(3), "{reason}");
    assert!(!reason.contains('\n'), "{reason}");
    let greeting = format!("hi hello there {}", cwd.0.display());
    assert_eq!(
        f.lines,
        [greeting.as_str(), "bye"],
        "each line once, Ray's own left out"
    );
    // An agent restarted on the same state folder hands none of them over again, nor
    // does one with a fresh folder: it adopted the job, its lines were the dead agent's.
    assert!(self::engine(head, state).output(&id, 500).is_empty());
    let fresh = TempDir::new("ray-agent-state-2");
    assert!(self::engine(head, &fresh).output(&id, 500).is_empty());
}

/// A time limit ends the job (coreutils' timeout inside the entrypoint): failed, 124.
fn time_limit_ends_a_job(engine: &Ray) {
    let mut l = launch("sw-limit-1", &["sleep", "60"]);
    l.resources.time_limit_s = Some(2);
    let id = start(engine, &l);
    let f = follow(engine, &id, &l, Observed::is_final);
    let Observed::Failed { exit_code, reason } = f.last() else {
        panic!("ended as {:?}", f.seen)
    };
    assert_eq!(*exit_code, Some(124), "{reason}");
    assert!(reason.contains("time limit"), "{reason}");
}

/// Every argv word reaches the job byte for byte (it prints its `sys.argv` as JSON).
fn hostile_argv_arrives_byte_exact(engine: &Ray) {
    let words = hostile();
    let code = "import json, sys; print(json.dumps(sys.argv[1:]))";
    let python = py();
    let mut argv: Vec<&str> = vec![&python, "-c", code];
    argv.extend(words.iter().map(String::as_str));
    let l = launch("sw-hostile-1", &argv);
    let id = start(engine, &l);
    let f = follow(engine, &id, &l, Observed::is_final);
    assert_eq!(f.last(), &Observed::Succeeded, "{:?}", f.lines);
    assert_eq!(f.lines.len(), 1, "{:?}", f.lines);
    let got: Vec<String> = serde_json::from_str(&f.lines[0]).unwrap();
    assert_eq!(got, words);
    assert!(
        !std::env::temp_dir().join("pwned").exists(),
        "a word ran as a command"
    );
}

/// Extras outside the allow-list are refused by name, and Ray gets no job.
fn refuses_unknown_extras(head: &RayHead, engine: &Ray) {
    let mut l = launch("sw-extras-1", &["true"]);
    l.extras
        .insert("runtime_env".into(), json!({"pip": ["requests"]}));
    let Err(EngineError::Refused(why)) = engine.start(&l) else {
        panic!("extras accepted")
    };
    assert!(why.contains("extras.ray.runtime_env"), "{why}");
    assert!(head.job("sw-extras-1").is_none());
    // A job Ray never had is gone.
    assert_eq!(engine.status("sw-never", &l).unwrap(), Observed::Gone);
}

/// Stop ends a long job: cancelled, Ray says STOPPED. A job that ignores SIGTERM is
/// killed by Ray after its wait, and its process is gone.
fn stop_ends_a_long_job(head: &RayHead, engine: &Ray) {
    let code = "import time; print('started', flush=True); time.sleep(600)";
    let l = launch("sw-long-1", &[&py(), "-c", code]);
    let id = start(engine, &l);
    follow(engine, &id, &l, |o| *o == Observed::Running);
    let stopped = Instant::now();
    engine.stop(&id).unwrap();
    let f = follow(engine, &id, &l, Observed::is_final);
    eprintln!(
        "stop → cancelled took {:.1} s",
        stopped.elapsed().as_secs_f64()
    );
    assert!(
        matches!(f.last(), Observed::Cancelled { .. }),
        "{:?}",
        f.seen
    );
    assert_eq!(head.job(&id).unwrap()["status"], "STOPPED");

    let code = "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); \
                print(os.getpid(), flush=True); time.sleep(600)";
    let l = launch("sw-stubborn-1", &[&py(), "-c", code]);
    let id = start(engine, &l);
    let f = follow(engine, &id, &l, |o| *o == Observed::Running);
    let pid = wait_until("the stubborn job's pid", Duration::from_secs(30), || {
        f.lines
            .first()
            .cloned()
            .or_else(|| engine.output(&id, 10).first().map(|l| l.text.clone()))
    });
    let stopped = Instant::now();
    engine.kill(&id).unwrap();
    let f = follow(engine, &id, &l, Observed::is_final);
    eprintln!(
        "kill of a SIGTERM-ignoring job → cancelled took {:.1} s",
        stopped.elapsed().as_secs_f64()
    );
    assert!(
        matches!(f.last(), Observed::Cancelled { .. }),
        "{:?}",
        f.seen
    );
    wait_until(
        "the stubborn process to be gone",
        Duration::from_secs(10),
        || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
            // Gone, or a zombie nobody reaped yet.
            (stat.is_err() || stat.is_ok_and(|s| s.contains(") Z "))).then_some(())
        },
    );
}

/// A trainer that steps until it is killed: its Stop only sets a flag it never reads, so
/// the agent's engine stop after the grace period ends it (the SDK would otherwise end
/// the loop itself, and Ray would see a normal exit).
const STUBBORN_TRAINER: &str = r#"
import time, stepwatch
from stepwatch import emit_training_start, emit_batch_end
stepwatch.connect(stop="flag")
emit_training_start(total_epochs=1, total_batches=100000)
for step in range(1, 100000):
    emit_batch_end(batch_idx=step, loss=1.0 / step, lr=0.1)
    time.sleep(0.05)
"#;

/// A queue `ray` on the Ray engine (grace 2 s) and a template `train` on it running
/// the harness's launch trainer.
fn ray_launch_config(dir: &std::path::Path) -> std::path::PathBuf {
    let trainer = write_launch_trainer(dir);
    let text = format!(
        r#"
[[queues]]
name = "ray"
engine = "ray"
cancel_grace_s = 2
lease_s = 5

[[templates]]
name = "train"
queue = "ray"
argv = [{py:?}, {trainer:?}, "--steps={{steps}}", "--sleep=0.1"]
env = {{ PYTHONPATH = {pp:?} }}
params = [{{ name = "steps", kind = {{ type = "int", min = 1, max = 1000 }}, default = 30 }}]
"#,
        py = py(),
        trainer = trainer.to_string_lossy(),
        pp = repo().join("clients/python/src").to_string_lossy(),
    );
    let path = dir.join("launch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits until the job's status is `status`, failing at once on another final one.
fn wait_status(relay: &Relay, job: &str, status: &str) -> Value {
    wait_until(
        &format!("job {job} {status}"),
        Duration::from_secs(120),
        || {
            let v = relay.job(job);
            let now = v["status"].as_str().unwrap_or("").to_string();
            assert!(
                now == status || !["succeeded", "failed", "cancelled"].contains(&now.as_str()),
                "job {job} ended {now}, not {status}: {v}"
            );
            (now == status).then_some(v)
        },
    )
}

fn events_of(relay: &Relay, run: &str, kind: &str) -> Vec<Value> {
    relay
        .all_events(run)
        .into_iter()
        .filter(|e| e["event"] == kind)
        .collect()
}

/// `stepwatch agent --engine ray` runs the template's SDK trainer at Ray to success: the
/// run gets its events and, once each, the lines it printed.
fn agent_runs_a_template_to_success(relay: &Relay, head: &RayHead) {
    let submitted = Instant::now();
    let answer = relay.submit(&json!({
        "name": "ray-train", "queue": "ray", "entry": { "template": "train" },
    }));
    let (job, run) = (
        answer["job"].as_str().unwrap(),
        answer["run"].as_str().unwrap(),
    );
    wait_status(relay, job, "running");
    let running = submitted.elapsed();
    let v = wait_status(relay, job, "succeeded");
    eprintln!(
        "agent: submit → running took {:.1} s, → succeeded {:.1} s",
        running.as_secs_f64(),
        submitted.elapsed().as_secs_f64()
    );
    let kinds = history_kinds(&v);
    assert!(kinds.contains(&"engine_submitted".to_string()), "{kinds:?}");
    let engine_id = v["engine_id"].as_str().unwrap();
    let at_ray = head.job(engine_id).expect("Ray knows the job");
    assert_eq!(at_ray["status"], "SUCCEEDED");
    assert_eq!(at_ray["metadata"]["stepwatch_job"], job);
    assert_eq!(at_ray["metadata"]["stepwatch_run"], run);
    assert_eq!(events_of(relay, run, "batch_end").len(), 30);
    assert_eq!(events_of(relay, run, "training_end").len(), 1);
    let printed: Vec<String> = wait_until("the printed lines", Duration::from_secs(10), || {
        let lines: Vec<String> = events_of(relay, run, "log")
            .iter()
            .filter_map(|e| e["message"].as_str().map(String::from))
            .collect();
        lines.iter().any(|l| l == "step 30").then_some(lines)
    });
    let wanted = [
        format!("run {run} job {job} from step 0"),
        "step 10".into(),
        "step 20".into(),
        "step 30".into(),
    ];
    for line in &wanted {
        let n = printed.iter().filter(|l| *l == line).count();
        assert_eq!(n, 1, "{line:?} forwarded {n} times: {printed:?}");
    }
}

/// A cancel sends the trainer the stop command, and after the grace period the agent's
/// engine stop ends a trainer that ignores it: cancelled, Ray says STOPPED.
fn agent_cancel_stops_the_job_at_ray(relay: &Relay, head: &RayHead) {
    let answer = relay.submit(&json!({
        "name": "ray-stubborn",
        "queue": "ray",
        "entry": {
            "argv": [py(), "-c", STUBBORN_TRAINER],
            "env": { "PYTHONPATH": repo().join("clients/python/src") },
        },
    }));
    let (job, run) = (
        answer["job"].as_str().unwrap(),
        answer["run"].as_str().unwrap(),
    );
    wait_status(relay, job, "running");
    wait_until(
        "the stubborn trainer's steps",
        Duration::from_secs(60),
        || {
            // The run exists once the trainer's first events arrived.
            let (code, page) = relay.get(&format!("/api/runs/{run}/events?limit=100"));
            let steps = page
                .as_array()
                .is_some_and(|p| p.iter().any(|e| e["event"] == "batch_end"));
            (code == 200 && steps).then_some(())
        },
    );
    let cancelled = Instant::now();
    let (code, body) = relay.post_json(&format!("/api/jobs/{job}/cancel"), &json!({}), None);
    assert_eq!(code, 202, "{body}");
    let v = wait_status(relay, job, "cancelled");
    let took = cancelled.elapsed();
    eprintln!(
        "agent: cancel → cancelled took {:.1} s (grace 2 s)",
        took.as_secs_f64()
    );
    assert!(
        took >= Duration::from_secs(2),
        "the engine stop waited for the grace"
    );
    let engine_id = v["engine_id"].as_str().unwrap();
    assert_eq!(head.job(engine_id).unwrap()["status"], "STOPPED");
    let acks = events_of(relay, run, "command_ack");
    assert!(
        !acks.is_empty(),
        "the trainer was sent the stop command first"
    );
}

/// An agent killed with `kill -9` while its job runs at Ray: once the lease runs out the
/// next agent adopts the job by its key (Ray still has one job for it), follows it to
/// success, and hands over only what the job prints after the adoption.
fn killed_agents_job_is_adopted_not_restarted(
    relay: &Relay,
    head: &RayHead,
    dir: &std::path::Path,
    first: &mut Agent,
) -> Agent {
    let answer = relay.submit(&json!({
        "name": "ray-adopted", "queue": "ray",
        "entry": { "template": "train", "params": { "steps": 100 } },
    }));
    let (job, run) = (
        answer["job"].as_str().unwrap(),
        answer["run"].as_str().unwrap(),
    );
    wait_status(relay, job, "running");
    wait_until("a forwarded line", Duration::from_secs(30), || {
        let (code, page) = relay.get(&format!("/api/runs/{run}/events?limit=100000"));
        let logs = page
            .as_array()
            .is_some_and(|p| p.iter().any(|e| e["message"] == "step 10"));
        (code == 200 && logs).then_some(())
    });
    first.kill9();
    let killed = Instant::now();
    let second = Agent::start(
        relay,
        dir,
        "ray",
        "ray",
        "ray-2",
        &["--engine-opt", &format!("address={}", head.address)],
    );
    let v = wait_status(relay, job, "succeeded");
    eprintln!(
        "agent: kill -9 → adopted job succeeded {:.1} s later (lease 5 s)",
        killed.elapsed().as_secs_f64()
    );
    let at_ray: Vec<Value> = head
        .jobs()
        .into_iter()
        .filter(|j| j["metadata"]["stepwatch_job"] == job)
        .collect();
    assert_eq!(at_ray.len(), 1, "started once: {at_ray:?}");
    assert_eq!(v["engine_id"], at_ray[0]["submission_id"]);
    let printed: Vec<String> = events_of(relay, run, "log")
        .iter()
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect();
    for n in (10..=100).step_by(10) {
        let line = format!("step {n}");
        let times = printed.iter().filter(|l| **l == line).count();
        assert!(times <= 1, "{line:?} forwarded {times} times: {printed:?}");
    }
    assert!(printed.iter().any(|l| l == "step 100"), "{printed:?}");
    second
}

/// The relay with the `ray` queue, and `stepwatch agent --queue ray --engine ray`.
fn agent_end_to_end(head: &RayHead) {
    let dir = TempDir::new("ray-relay");
    let config = ray_launch_config(&dir.0);
    let relay = Relay::start(&dir.0, &["--launch", config.to_str().unwrap()]);
    let address = format!("address={}", head.address);
    let opt = ["--engine-opt", address.as_str()];
    let mut agent = Agent::start(&relay, &dir.0, "ray", "ray", "ray-1", &opt);
    let mut second = None;
    let checks = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        agent_runs_a_template_to_success(&relay, head);
        agent_cancel_stops_the_job_at_ray(&relay, head);
        second = Some(killed_agents_job_is_adopted_not_restarted(
            &relay, head, &dir.0, &mut agent,
        ));
    }));
    if let Err(e) = checks {
        eprintln!("the agent's log:\n{}", agent.log_text());
        if let Ok(text) = std::fs::read_to_string(dir.0.join("agent-ray-2.log")) {
            eprintln!("the second agent's log:\n{text}");
        }
        std::panic::resume_unwind(e);
    }
    drop(second);
}

#[test]
fn ray_engine_on_a_real_head() {
    if !in_private_network("ray_engine_on_a_real_head") {
        return;
    }
    let head = RayHead::start();
    eprintln!("ray start took {:.1} s", head.start_took.as_secs_f64());
    let state = TempDir::new("ray-agent-state");
    let engine = engine(&head, &state);
    fails_with_its_exit_code(&head, &engine, &state);
    time_limit_ends_a_job(&engine);
    hostile_argv_arrives_byte_exact(&engine);
    refuses_unknown_extras(&head, &engine);
    stop_ends_a_long_job(&head, &engine);
    agent_end_to_end(&head);
}
