//! Launching on Slurm end to end: a relay with a `slurm` queue, `stepwatch agent --engine
//! slurm` on a real one-node cluster ([`SlurmCluster`]), and real Python trainers on the
//! SDK submitted through `POST /api/jobs`: a job runs, reports and succeeds; a cancel sends
//! the stop command, then SIGTERM through `scancel` after the grace; an agent that dies is
//! replaced by one that adopts its job without submitting it again.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use stepwatch_e2e::*;

/// A trainer on the SDK: prints, reports steps, and finishes (or, with `STEPS=0`, runs
/// until SIGTERM, saying when the stop command arrives but not obeying it).
const TRAINER: &str = r#"
import os, signal, sys, time
import stepwatch
from stepwatch import emit_training_start, emit_batch_end, emit_training_end

def on_term(*_):
    print("got TERM", flush=True)
    stepwatch.flush(5)
    os._exit(143)

signal.signal(signal.SIGTERM, on_term)
steps = int(os.environ["STEPS"])
print("hello from slurm job", os.environ.get("SLURM_JOB_ID"), flush=True)
emit_training_start(total_epochs=1, total_batches=steps or 100000, config={"engine": "slurm"})
step, told = 0, False
while steps == 0 or step < steps:
    step += 1
    emit_batch_end(batch_idx=step, loss=1.0 / step, lr=0.1)
    if stepwatch.should_stop() and not told:
        print("stop command seen; not stopping", flush=True)
        told = True
    time.sleep(0.05)
emit_training_end()
assert stepwatch.flush(10)
print("done", flush=True)
"#;

const LAUNCH_TOML: &str = r#"
[[queues]]
name = "slurm"
engine = "slurm"
description = "the test's one-node Slurm cluster"
cancel_grace_s = 2
lease_s = 10
extras = { slurm = { partition = "debug" } }
"#;

fn submit_trainer(relay: &Relay, name: &str, steps: u32) -> (String, String) {
    submit_trainer_with(relay, name, steps, json!({}))
}

fn submit_trainer_with(relay: &Relay, name: &str, steps: u32, extras: Value) -> (String, String) {
    let body = json!({
        "name": name,
        "queue": "slurm",
        "entry": {
            "argv": [python().to_string_lossy(), "-c", TRAINER],
            "env": {
                "PYTHONPATH": repo().join("clients/python/src").to_string_lossy(),
                "STEPS": steps.to_string(),
            },
        },
        "resources": {"cpus": 1, "time_limit_s": 600},
        "extras": extras,
    });
    let answer = relay.submit(&body);
    (
        answer["job"].as_str().unwrap().to_string(),
        answer["run"].as_str().unwrap().to_string(),
    )
}

/// Waits until the job is `want`; fails at once when it ends otherwise.
fn wait_status(relay: &Relay, job: &str, want: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + timeout;
    loop {
        let v = relay.job(job);
        if v["status"] == want {
            return v;
        }
        let terminal =
            ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""));
        assert!(
            !terminal && Instant::now() < deadline,
            "job {job} is not {want}: {v}\nwas: {last}"
        );
        last = v;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The run's log lines (the agent forwards what the job prints).
fn log_lines(relay: &Relay, run: &str) -> Vec<String> {
    relay
        .all_events(run)
        .iter()
        .filter(|e| e["event"] == "log")
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect()
}

/// A cluster, a relay with the `slurm` queue, and a folder for the agents' state and logs.
fn setup() -> (SlurmCluster, Relay, TempDir) {
    let cluster = SlurmCluster::start();
    let data = TempDir::new("slurm-relay");
    let launch = data.0.join("launch.toml");
    std::fs::write(&launch, LAUNCH_TOML).unwrap();
    let relay = Relay::start(
        &data.0.join("relay"),
        &["--launch", launch.to_str().unwrap()],
    );
    (cluster, relay, data)
}

/// `stepwatch agent --queue slurm --engine slurm`, aimed at the cluster.
fn agent(cluster: &SlurmCluster, relay: &Relay, data: &TempDir, name: &str) -> Agent {
    let conf = format!("conf={}", cluster.conf().display());
    Agent::start(
        relay,
        &data.0,
        "slurm",
        "slurm",
        name,
        &["--engine-opt", &conf],
    )
}

#[test]
fn jobs_submitted_to_a_slurm_queue_run_report_and_cancel_end_to_end() {
    let (cluster, relay, data) = setup();
    let agent1 = agent(&cluster, &relay, &data, "agent-1");
    let agent_log = || agent1.log_text();

    // A trainer that finishes: running with its run receiving events, then succeeded.
    let (job, run) = submit_trainer(&relay, "slurm ok", 20);
    let v = wait_status(&relay, &job, "running", Duration::from_secs(60));
    assert_eq!(v["run"], run.as_str(), "{v}");
    let engine_id = v["engine_id"].as_str().unwrap().to_string();
    assert!(engine_id.bytes().all(|b| b.is_ascii_digit()), "{v}");
    let v = wait_status(&relay, &job, "succeeded", Duration::from_secs(60));
    assert!(v["exit_code"].is_null() || v["exit_code"] == 0, "{v}");
    let events = relay.all_events(&run);
    let steps = events.iter().filter(|e| e["event"] == "batch_end").count();
    assert_eq!(steps, 20, "agent log:\n{}", agent_log());
    assert!(events.iter().any(|e| e["event"] == "training_end"));
    let hello = format!("hello from slurm job {engine_id}");
    wait_until(
        "the job's output in the run's log",
        Duration::from_secs(10),
        || log_lines(&relay, &run).contains(&hello).then_some(()),
    );
    assert_eq!(cluster.jobs_named(&format!("sw-{job}-1")), 1);

    // A trainer that ignores the stop command: after the grace, SIGTERM through scancel.
    let (job, run) = submit_trainer(&relay, "slurm cancel", 0);
    wait_status(&relay, &job, "running", Duration::from_secs(60));
    wait_until("the trainer's steps", Duration::from_secs(30), || {
        // The run exists once the trainer's first events arrive.
        let (status, _) = relay.get(&format!("/api/runs/{run}/events?limit=1"));
        let events = if status == 200 {
            relay.all_events(&run)
        } else {
            Vec::new()
        };
        (events.iter().filter(|e| e["event"] == "batch_end").count() > 5).then_some(())
    });
    let res = ureq::post(&format!("{}/api/jobs/{job}/cancel", relay.url)).call();
    assert!(res.is_ok(), "cancel: {res:?}");
    let v = wait_status(&relay, &job, "cancelled", Duration::from_secs(60));
    let lines = log_lines(&relay, &run);
    let seen = |l: &str| lines.iter().position(|x| x == l);
    let (Some(stop), Some(term)) = (seen("stop command seen; not stopping"), seen("got TERM"))
    else {
        panic!(
            "the trainer saw no stop command or TERM: {lines:?}\n{v}\n{}",
            agent_log()
        );
    };
    assert!(stop < term, "{lines:?}");
    // The TERM came through Slurm (scancel --signal=TERM), and the trainer's exit with it.
    let shown = cluster
        .command("scontrol")
        .args(["show", "job", v["engine_id"].as_str().unwrap()])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("ExitCode=143:0"), "{shown}");
    cluster.wait_empty(Duration::from_secs(20));

    // A hostile extra fails the job at the agent, naming the field; nothing reaches sbatch.
    let bad = json!({"slurm": {"partition": "x; rm -rf /"}});
    let (job, _) = submit_trainer_with(&relay, "slurm bad extra", 1, bad);
    let v = wait_status(&relay, &job, "failed", Duration::from_secs(30));
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("extras.slurm.partition"), "{v}");
    assert_eq!(cluster.jobs_named(&format!("sw-{job}-1")), 0);
}

#[test]
fn a_job_outlives_its_agent_and_the_next_agent_adopts_it_without_resubmitting() {
    let (cluster, relay, data) = setup();
    let mut first = agent(&cluster, &relay, &data, "agent-1");
    let (job, run) = submit_trainer(&relay, "slurm adopt", 300);
    let v = wait_status(&relay, &job, "running", Duration::from_secs(60));
    assert_eq!(v["agent"], "agent-1", "{v}");
    first.kill9(); // the job keeps running at Slurm
    assert_eq!(cluster.jobs_named(&format!("sw-{job}-1")), 1);
    let _second = agent(&cluster, &relay, &data, "agent-2");
    // Once the first agent's lease runs out, the second (with a state folder of its own)
    // claims the job and finds it at Slurm by its key; it follows it to the end.
    let v = wait_status(&relay, &job, "succeeded", Duration::from_secs(90));
    let claims: Vec<&Value> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "claimed")
        .map(|h| &h["reason"])
        .collect();
    assert_eq!(
        claims,
        [&json!("agent agent-1"), &json!("agent agent-2")],
        "{v}"
    );
    assert_eq!(v["attempts"], 1, "{v}");
    assert_eq!(
        cluster.jobs_named(&format!("sw-{job}-1")),
        1,
        "{:?}",
        cluster.squeue(true)
    );
    let steps = relay
        .all_events(&run)
        .iter()
        .filter(|e| e["event"] == "batch_end")
        .count();
    assert_eq!(steps, 300);
}
