//! The Slurm engine on a real one-node Slurm cluster ([`SlurmCluster`]): a job is
//! submitted once per key, its state, exit code, output and Slurm's pending reason come
//! back; stop sends the job SIGTERM, kill cancels it; hostile extras never reach sbatch.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwatch_agent::engines::{build, EngineOptions};
use stepwatch_agent::{Engine, EngineError, Observed};
use stepwatch_e2e::*;
use stepwatch_events::jobs::{Launch, Resources};

fn slurm_engine(cluster: &SlurmCluster, state: &Path) -> Arc<dyn Engine> {
    slurm_engine_with(cluster, state, &[])
}

fn slurm_engine_with(
    cluster: &SlurmCluster,
    state: &Path,
    opts: &[(&str, &str)],
) -> Arc<dyn Engine> {
    let mut settings = BTreeMap::from([(
        "conf".to_string(),
        cluster.conf().to_string_lossy().into_owned(),
    )]);
    settings.extend(opts.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let opts = EngineOptions {
        state_dir: state.to_path_buf(),
        exe: relay_bin(),
        gpus: Vec::new(),
        opts: settings,
    };
    build("slurm", &opts).unwrap()
}

fn launch(job: &str, argv: &[&str]) -> Launch {
    Launch {
        job: job.into(),
        name: format!("test {job}"),
        queue: "slurm".into(),
        run: format!("test-{job}"),
        attempt: 1,
        key: format!("sw-{job}-1"),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        status: "claimed".into(),
        lease_s: 30,
        cancel_grace_s: 5,
        ..Launch::default()
    }
}

/// Polls the job's status until `done` says so; every status seen, in order.
fn follow(
    engine: &dyn Engine,
    id: &str,
    launch: &Launch,
    timeout: Duration,
    done: impl Fn(&Observed) -> bool,
) -> Vec<Observed> {
    let deadline = Instant::now() + timeout;
    let mut seen: Vec<Observed> = Vec::new();
    loop {
        let o = engine.status(id, launch).unwrap();
        if seen.last() != Some(&o) {
            seen.push(o.clone());
        }
        if done(&o) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not get there within {timeout:?}; seen {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The output lines the engine hands over, as `stream: text`, read until `want` shows
/// (or 10 s passed).
fn output_until(engine: &dyn Engine, id: &str, want: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines.iter().any(|l: &String| l.contains(want)) && Instant::now() < deadline {
        lines.extend(
            engine
                .output(id, 100)
                .into_iter()
                .map(|l| format!("{}: {}", l.stream, l.text)),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    lines
}

#[test]
fn a_job_runs_once_per_key_and_its_exit_code_and_output_come_back() {
    let cluster = SlurmCluster::start();
    let state = TempDir::new("slurm-state");
    let engine = slurm_engine(&cluster, &state.0);
    let mut l = launch(
        "1",
        &[
            "/bin/sh",
            "-c",
            "echo hi; echo \"greeting=$GREETING\"; echo \"agent=${CARGO_PKG_NAME:-none}\"; \
             echo \"gpus=$CUDA_VISIBLE_DEVICES\"; \
             echo oops >&2; sleep 1; exit 3",
        ],
    );
    // Hostile text in the environment reaches the job as it is, and nowhere else.
    l.env
        .insert("GREETING".into(), "a,b c;$(touch /tmp/pwned)'\"".into());
    l.extras = json!({"partition": "debug"}).as_object().unwrap().clone();
    l.resources = Resources {
        gpus: Some(SLURM_GPUS),
        cpus: Some(1),
        memory_mb: Some(100),
        time_limit_s: Some(90),
        ..Resources::default()
    };
    let id = engine.start(&l).unwrap();
    assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
    assert_eq!(
        engine.start(&l).unwrap(),
        id,
        "a second start finds the job"
    );
    assert_eq!(cluster.jobs_named(&l.key), 1, "{:?}", cluster.squeue(true));

    let seen = follow(
        engine.as_ref(),
        &id,
        &l,
        Duration::from_secs(60),
        Observed::is_final,
    );
    assert!(
        matches!(seen[0], Observed::Pending { .. } | Observed::Running),
        "{seen:?}"
    );
    assert!(
        matches!(
            seen.last(),
            Some(Observed::Failed {
                exit_code: Some(3),
                ..
            })
        ),
        "{seen:?}"
    );
    let lines = output_until(engine.as_ref(), &id, "oops");
    for want in [
        "stdout: hi",
        "stdout: greeting=a,b c;$(touch /tmp/pwned)'\"",
        // The agent's own environment (cargo's variables here) does not reach the job.
        "stdout: agent=none",
        // Slurm's own variables do (it gave the job the node's GPU).
        "stdout: gpus=0",
        "stderr: oops",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want:?} not in {lines:?}");
    }
    // Slurm's own record says the job's code, as the batch script passes it on.
    let shown = cluster
        .command("scontrol")
        .args(["show", "job", &id])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("JobState=FAILED"), "{shown}");
    assert!(shown.contains("ExitCode=3:0"), "{shown}");
    assert!(shown.contains("Comment=stepwatch:1"), "{shown}");
    assert!(shown.contains("Partition=debug"), "{shown}");
    assert!(shown.contains("TimeLimit=00:02:00"), "{shown}");
    assert!(shown.contains("MinMemoryNode=100M"), "{shown}");
    assert!(shown.contains("TresPerNode=gres:gpu:1"), "{shown}");

    // A new agent (a fresh engine) finds the job again, from its folder or from Slurm.
    let again = engine_after_restart(&cluster, &state.0, &l);
    assert_eq!(again.start(&l).unwrap(), id);
    // So does an agent with a state folder of its own (another machine's), which then
    // reads the job's end from the folder of the agent that started it.
    let elsewhere = TempDir::new("slurm-state");
    let other = slurm_engine(&cluster, &elsewhere.0);
    assert_eq!(other.start(&l).unwrap(), id);
    assert_eq!(
        other.status(&id, &l).unwrap(),
        Observed::Failed {
            reason: "exited with status 3".into(),
            exit_code: Some(3)
        }
    );
    assert_eq!(cluster.jobs_named(&l.key), 1, "{:?}", cluster.squeue(true));

    // Once slurmctld has forgotten a job, its exit file still tells how it ended.
    assert_eq!(
        engine.status("999999", &l).unwrap(),
        Observed::Failed {
            reason: "exited with status 3".into(),
            exit_code: Some(3)
        }
    );
    let mut other = l.clone();
    other.key = "sw-never-1".into();
    assert_eq!(engine.status("999998", &other).unwrap(), Observed::Gone);
}

/// An engine of an agent that restarted, over a job folder that lost its records of the
/// id: only Slurm (`squeue --name`) can say it.
fn engine_after_restart(cluster: &SlurmCluster, state: &Path, l: &Launch) -> Arc<dyn Engine> {
    for f in ["job_id", "slurm_job_id"] {
        std::fs::remove_file(state.join(&l.key).join(f)).unwrap();
    }
    slurm_engine(cluster, state)
}

#[test]
fn stop_sends_the_job_sigterm_and_kill_cancels_it() {
    let cluster = SlurmCluster::start();
    let state = TempDir::new("slurm-state");
    let engine = slurm_engine(&cluster, &state.0);
    let trap = "trap 'echo got TERM; exit 143' TERM; echo ready; while :; do sleep 0.2; done";
    let l = launch("2", &["/bin/sh", "-c", trap]);
    let id = engine.start(&l).unwrap();
    follow(engine.as_ref(), &id, &l, Duration::from_secs(60), |o| {
        *o == Observed::Running
    });
    let lines = output_until(engine.as_ref(), &id, "ready");
    assert!(lines.contains(&"stdout: ready".to_string()), "{lines:?}");
    engine.stop(&id).unwrap();
    let seen = follow(
        engine.as_ref(),
        &id,
        &l,
        Duration::from_secs(30),
        Observed::is_final,
    );
    // The job caught the TERM and ended itself: Slurm says FAILED with its code 143.
    assert_eq!(
        seen.last(),
        Some(&Observed::Failed {
            reason: "exited with status 143".into(),
            exit_code: Some(143)
        }),
        "{seen:?}"
    );
    let lines = output_until(engine.as_ref(), &id, "got TERM");
    assert!(lines.contains(&"stdout: got TERM".to_string()), "{lines:?}");

    // A job that ignores TERM is ended by kill (Slurm's KILL after KillWait).
    let deaf = launch(
        "3",
        &["/bin/sh", "-c", "trap '' TERM; echo deaf; sleep 600"],
    );
    let id = engine.start(&deaf).unwrap();
    follow(engine.as_ref(), &id, &deaf, Duration::from_secs(60), |o| {
        *o == Observed::Running
    });
    output_until(engine.as_ref(), &id, "deaf");
    engine.kill(&id).unwrap();
    let seen = follow(
        engine.as_ref(),
        &id,
        &deaf,
        Duration::from_secs(30),
        Observed::is_final,
    );
    assert!(
        matches!(seen.last(), Some(Observed::Cancelled { reason }) if reason.contains("CANCELLED")),
        "{seen:?}"
    );
    cluster.wait_empty(Duration::from_secs(10));
    // Stopping or killing an ended job is no error.
    engine.stop(&id).unwrap();
    engine.kill(&id).unwrap();
}

fn extras(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn hostile_or_unknown_extras_are_refused_before_sbatch() {
    let cluster = SlurmCluster::start();
    let state = TempDir::new("slurm-state");
    let engine = slurm_engine(&cluster, &state.0);
    for (i, (bad, field)) in [
        (
            json!({"partition": "x; rm -rf /"}),
            "extras.slurm.partition",
        ),
        (json!({"account": "--wrap=id"}), "extras.slurm.account"),
        (json!({"wrap": "rm -rf /"}), "extras.slurm.wrap"),
        (json!({"qos": ["a"]}), "extras.slurm.qos"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut l = launch(&format!("bad{i}"), &["/bin/true"]);
        l.extras = extras(bad);
        match engine.start(&l) {
            Err(EngineError::Refused(why)) => assert!(why.contains(field), "{why}"),
            other => panic!("{field}: {other:?}"),
        }
        assert!(
            !state.0.join(&l.key).exists(),
            "nothing written for {field}"
        );
    }
    // A plain name Slurm does not know is Slurm's refusal, in its words.
    let mut l = launch("nopart", &["/bin/true"]);
    l.extras = extras(json!({"partition": "nosuch"}));
    match engine.start(&l) {
        Err(EngineError::Refused(why)) => {
            assert!(why.contains("sbatch") && why.contains("partition"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        cluster.squeue(true).is_empty(),
        "{:?}",
        cluster.squeue(true)
    );
}

/// Polls until Slurm gives the pending job a reason of its own.
fn pending_reason(engine: &dyn Engine, id: &str, l: &Launch) -> String {
    let seen = follow(
        engine,
        id,
        l,
        Duration::from_secs(30),
        |o| matches!(o, Observed::Pending { reason } if reason.contains('(')),
    );
    match seen.last() {
        Some(Observed::Pending { reason }) => reason.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_job_that_cannot_start_shows_slurms_pending_reason() {
    let cluster = SlurmCluster::start();
    let state = TempDir::new("slurm-state");
    let engine = slurm_engine(&cluster, &state.0);
    // More CPUs than the node has: it waits for good.
    let mut big = launch("big", &["/bin/true"]);
    big.resources.cpus = Some(SLURM_CPUS * 4);
    let big_id = engine.start(&big).unwrap();
    assert_eq!(
        pending_reason(engine.as_ref(), &big_id, &big),
        "Slurm: PENDING (PartitionConfig)"
    );
    engine.kill(&big_id).unwrap();

    // The node full: the next job waits for resources.
    let mut hog = launch("hog", &["/bin/sh", "-c", "sleep 600"]);
    hog.resources.cpus = Some(SLURM_CPUS);
    let hog_id = engine.start(&hog).unwrap();
    follow(
        engine.as_ref(),
        &hog_id,
        &hog,
        Duration::from_secs(60),
        |o| *o == Observed::Running,
    );
    let next = launch("next", &["/bin/true"]);
    let next_id = engine.start(&next).unwrap();
    assert_eq!(
        pending_reason(engine.as_ref(), &next_id, &next),
        "Slurm: PENDING (Resources)"
    );

    // Stopping a waiting job takes it off the queue at once.
    engine.stop(&next_id).unwrap();
    let seen = follow(
        engine.as_ref(),
        &next_id,
        &next,
        Duration::from_secs(20),
        Observed::is_final,
    );
    assert!(
        matches!(seen.last(), Some(Observed::Cancelled { .. })),
        "{seen:?}"
    );
    engine.kill(&hog_id).unwrap();
    cluster.wait_empty(Duration::from_secs(20));
}

#[test]
fn a_hung_controller_makes_the_engine_wait_not_fail_the_job() {
    let cluster = SlurmCluster::start();
    let state = TempDir::new("slurm-state");
    let engine = slurm_engine_with(&cluster, &state.0, &[("timeout_s", "2")]);
    let l = launch("hung", &["/bin/sh", "-c", "sleep 600"]);
    let id = engine.start(&l).unwrap();
    follow(engine.as_ref(), &id, &l, Duration::from_secs(60), |o| {
        *o == Observed::Running
    });
    cluster.pause_controller();
    let started = Instant::now();
    let err = engine.status(&id, &l).unwrap_err();
    assert!(
        matches!(&err, EngineError::Unavailable(why) if why.contains("squeue did not answer within 2 s")),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // A new job is not refused (which would fail it) but waits for Slurm.
    let later = launch("later", &["/bin/true"]);
    assert!(
        matches!(engine.start(&later), Err(EngineError::Unavailable(_))),
        "a hung controller must not fail the job"
    );
    assert!(matches!(engine.stop(&id), Err(EngineError::Unavailable(_))));
    cluster.resume_controller();
    assert_eq!(engine.status(&id, &l).unwrap(), Observed::Running);
    assert_eq!(
        cluster.jobs_named(&later.key),
        0,
        "{:?}",
        cluster.squeue(true)
    );
    engine.kill(&id).unwrap();
    cluster.wait_empty(Duration::from_secs(20));
}
