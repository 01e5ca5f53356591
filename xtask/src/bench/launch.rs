//! `cargo xtask bench launch`: launching on the local engine, with a release relay and a
//! release `stepwatch agent`, real Python trainers as jobs. Submit → started at the
//! engine → running (the run reports); cancel → the job gone (a trainer that obeys the
//! `stop` command, and a process that ignores SIGTERM and is killed after the grace);
//! an agent killed with `kill -9` → its job taken back and adopted by another agent,
//! started once.

use super::table::{percentile, row};
use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use stepwatch_e2e::{local_launch_config, Agent, Relay, TempDir};

const T: Duration = Duration::from_secs(120);

/// Polls the job until `done` says so; the seconds since `t0`.
fn until(relay: &Relay, job: &str, t0: Instant, done: impl Fn(&Value) -> bool) -> Result<f64> {
    while t0.elapsed() < T {
        let (c, v) = relay.get(&format!("/api/jobs/{job}"));
        if c == 200 && done(&v) {
            return Ok(t0.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(anyhow!("job {job} did not get there within {T:?}"))
}

fn submit(relay: &Relay, name: &str, params: Value) -> Result<String> {
    let spec =
        json!({"name": name, "queue": "local", "entry": {"template": "train", "params": params}});
    let (c, v) = relay.post_json("/api/jobs", &spec, None);
    if c != 201 {
        return Err(anyhow!("submit: {c} {v}"));
    }
    Ok(v["job"].as_str().unwrap_or_default().to_string())
}

/// The launch figures.
pub fn launch(root: &Path) -> Result<()> {
    let bin = root.join("target/release/stepwatch");
    std::env::set_var("STEPWATCH_BIN", &bin);
    let dir = TempDir::new("bench-launch");
    let stubborn = format!(
        r#"
[[templates]]
name = "stubborn"
queue = "local"
cwd = {cwd:?}
argv = ["/bin/sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]
"#,
        cwd = dir.0.to_string_lossy()
    );
    let cfg = local_launch_config(&dir.0, 5, 2, &stubborn);
    let data = dir.0.join("data");
    let relay = Relay::try_start_bin(
        &bin,
        &data,
        &["--launch", cfg.to_str().unwrap_or_default()],
        None,
    )
    .map_err(|e| anyhow!("relay did not start: {e}"))?;
    let mut agent = Agent::start(
        &relay,
        &dir.0,
        "local",
        "local",
        "bench-a",
        &["--tick-ms", "100"],
    );
    std::thread::sleep(Duration::from_millis(500));

    let (mut started, mut running) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let t0 = Instant::now();
        let job = submit(
            &relay,
            &format!("bench {i}"),
            json!({"steps": 5, "sleep": 0.0}),
        )?;
        started.push(until(&relay, &job, t0, |v| v["engine_id"].is_string())?);
        running.push(until(&relay, &job, t0, |v| {
            v["status"] == "running" || v["status"] == "succeeded"
        })?);
        until(&relay, &job, t0, |v| v["status"] == "succeeded")?;
    }
    started.sort_by(f64::total_cmp);
    running.sort_by(f64::total_cmp);
    row(
        "launch: submit → started (local engine)",
        format!(
            "p50 {:.0} ms, max {:.0} ms",
            1e3 * percentile(&started, 0.5),
            1e3 * percentile(&started, 1.0)
        ),
        "",
    );
    row(
        "launch: submit → running (its run reports)",
        format!(
            "p50 {:.2} s, max {:.2} s",
            percentile(&running, 0.5),
            percentile(&running, 1.0)
        ),
        "< 2 s",
    );

    cancel_figures(&relay)?;
    kill9_figures(&relay, &dir.0, &mut agent)
}

/// Cancel: a trainer that obeys stop, then a process that ignores SIGTERM.
fn cancel_figures(relay: &Relay) -> Result<()> {
    // Cancel: a trainer that obeys stop, then a process that ignores SIGTERM.
    let job = submit(relay, "cancel me", json!({"steps": 100000}))?;
    until(relay, &job, Instant::now(), |v| v["run_live"] == true)?;
    let t0 = Instant::now();
    relay.post_json(&format!("/api/jobs/{job}/cancel"), &json!({}), None);
    let gone = until(relay, &job, t0, |v| v["status"] == "cancelled")?;
    row(
        "launch: cancel → gone (trainer obeys stop)",
        format!("{gone:.2} s"),
        "",
    );
    let spec = json!({"name": "stubborn", "queue": "local", "entry": {"template": "stubborn"}});
    let (_, v) = relay.post_json("/api/jobs", &spec, None);
    let job = v["job"].as_str().unwrap_or_default().to_string();
    until(relay, &job, Instant::now(), |v| v["status"] == "running")?;
    let t0 = Instant::now();
    relay.post_json(&format!("/api/jobs/{job}/cancel"), &json!({}), None);
    let gone = until(relay, &job, t0, |v| v["status"] == "cancelled")?;
    row(
        "launch: cancel → gone (ignores SIGTERM: killed)",
        format!("{gone:.2} s"),
        "grace 0 s + 10 s to SIGKILL",
    );

    Ok(())
}

/// kill -9 the agent; another adopts its job.
fn kill9_figures(relay: &Relay, dir: &Path, agent: &mut Agent) -> Result<()> {
    // kill -9 the agent: lease 5 s.
    let marker = dir.join("starts.txt");
    let job = submit(
        relay,
        "survivor",
        json!({"steps": 1000, "marker": marker.to_string_lossy()}),
    )?;
    until(relay, &job, Instant::now(), |v| v["status"] == "running")?;
    let t0 = Instant::now();
    agent.kill9();
    let state = dir.join("agent-bench-a");
    let _b = Agent::start(
        relay,
        dir,
        "local",
        "local",
        "bench-b",
        &[
            "--tick-ms",
            "100",
            "--state-dir",
            state.to_str().unwrap_or_default(),
        ],
    );
    let lost = until(relay, &job, t0, |v| v["agent"].is_null())?;
    let adopted = until(relay, &job, t0, |v| v["agent"] == "bench-b")?;
    until(relay, &job, t0, |v| v["status"] == "succeeded")?;
    let starts = std::fs::read_to_string(&marker)
        .unwrap_or_default()
        .lines()
        .count();
    row(
        "launch: agent kill -9 → job back (lease 5 s)",
        format!("{lost:.1} s; adopted {adopted:.1} s"),
        "after the lease",
    );
    row(
        "launch: starts of that job",
        format!("{starts}"),
        "exactly 1",
    );
    Ok(())
}
