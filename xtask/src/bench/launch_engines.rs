//! `cargo xtask bench launch`, the other engines: the same Python trainer launched on a
//! private one-node Slurm cluster and on the Kubernetes stand-in (Ray needs a network
//! namespace of its own: its figures come from its suite, `launch_ray`). Submit →
//! running (the run reports), cancel → the engine reports the job gone.

use super::table::{percentile, row};
use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use stepwatch_e2e::{
    python, repo, write_launch_trainer, Agent, KubeStandin, Relay, SlurmCluster, TempDir,
};

const T: Duration = Duration::from_secs(120);

fn until(relay: &Relay, job: &str, t0: Instant, done: impl Fn(&Value) -> bool) -> Result<f64> {
    while t0.elapsed() < T {
        let (c, v) = relay.get(&format!("/api/jobs/{job}"));
        if c == 200 && done(&v) {
            return Ok(t0.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(anyhow!("job {job} did not get there within {T:?}"))
}

/// A launch file with one queue on `engine` and a template `train` running the launch
/// trainer.
fn config(dir: &Path, queue: &str, engine: &str, extras: &str) -> Result<String> {
    let trainer = write_launch_trainer(dir);
    let text = format!(
        r#"
[[queues]]
name = "{queue}"
engine = "{engine}"
lease_s = 10
cancel_grace_s = 2
extras = {extras}

[[templates]]
name = "train"
queue = "{queue}"
argv = [{py:?}, {trainer:?}, "--steps={{steps}}", "--sleep=0.02"]
env = {{ PYTHONPATH = {pp:?} }}
params = [{{ name = "steps", kind = {{ type = "int", min = 1, max = 1000000 }}, default = 5 }}]
"#,
        py = python().to_string_lossy(),
        trainer = trainer.to_string_lossy(),
        pp = repo().join("clients/python/src").to_string_lossy(),
    );
    let path = dir.join("launch.toml");
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().to_string())
}

/// Three submissions to running, then one cancel of a long job; `gone` says when the
/// engine no longer runs it.
fn figures(relay: &Relay, queue: &str, engine: &str, gone: &dyn Fn(&Value) -> bool) -> Result<()> {
    let mut running = Vec::new();
    for i in 0..3 {
        let spec = json!({"name": format!("bench {i}"), "queue": queue,
            "entry": {"template": "train", "params": {"steps": 5}}});
        let t0 = Instant::now();
        let (c, v) = relay.post_json("/api/jobs", &spec, None);
        if c != 201 {
            return Err(anyhow!("submit on {engine}: {c} {v}"));
        }
        let job = v["job"].as_str().unwrap_or_default().to_string();
        running.push(until(relay, &job, t0, |v| {
            v["status"] == "running" || v["status"] == "succeeded"
        })?);
        until(relay, &job, t0, |v| v["status"] == "succeeded")?;
    }
    running.sort_by(f64::total_cmp);
    row(
        &format!("launch on {engine}: submit → running"),
        format!(
            "p50 {:.2} s, max {:.2} s",
            percentile(&running, 0.5),
            percentile(&running, 1.0)
        ),
        "",
    );
    let spec = json!({"name": "long", "queue": queue,
        "entry": {"template": "train", "params": {"steps": 1000000}}});
    let (_, v) = relay.post_json("/api/jobs", &spec, None);
    let job = v["job"].as_str().unwrap_or_default().to_string();
    until(relay, &job, Instant::now(), |v| v["run_live"] == true)?;
    let t0 = Instant::now();
    relay.post_json(&format!("/api/jobs/{job}/cancel"), &json!({}), None);
    let cancelled = until(relay, &job, t0, |v| v["status"] == "cancelled")?;
    let view = relay.get_ok(&format!("/api/jobs/{job}"));
    let mut engine_gone = f64::NAN;
    while t0.elapsed() < T {
        if gone(&view) {
            engine_gone = t0.elapsed().as_secs_f64();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    row(
        &format!("launch on {engine}: cancel → cancelled, gone"),
        format!("{cancelled:.2} s, {engine_gone:.2} s"),
        "stop command first",
    );
    Ok(())
}

/// Slurm: a private one-node cluster.
pub fn slurm(bin: &Path) -> Result<()> {
    let cluster = SlurmCluster::try_start().map_err(|e| anyhow!("no Slurm cluster: {e}"))?;
    let dir = TempDir::new("bench-slurm");
    let cfg = config(
        &dir.0,
        "slurm",
        "slurm",
        "{ slurm = { partition = \"debug\" } }",
    )?;
    let relay = Relay::try_start_bin(bin, &dir.0.join("data"), &["--launch", &cfg], None)
        .map_err(|e| anyhow!("relay: {e}"))?;
    let conf = format!("conf={}", cluster.conf().display());
    let _agent = Agent::start(
        &relay,
        &dir.0,
        "slurm",
        "slurm",
        "bench-slurm",
        &["--engine-opt", &conf, "--tick-ms", "200"],
    );
    figures(&relay, "slurm", "Slurm", &|_| {
        cluster.squeue(false).is_empty()
    })
}

/// Kubernetes: the stand-in API server (it runs each Job's command as a local process).
pub fn kubernetes(bin: &Path) -> Result<()> {
    let standin = KubeStandin::start();
    let dir = TempDir::new("bench-kube");
    let cfg = config(
        &dir.0,
        "k8s",
        "kubernetes",
        "{ kubernetes = { image = \"python:3.11\" } }",
    )?;
    let relay = Relay::try_start_bin(bin, &dir.0.join("data"), &["--launch", &cfg], None)
        .map_err(|e| anyhow!("relay: {e}"))?;
    let _agent = standin.agent(&relay, &dir.0, "bench-kube");
    figures(&relay, "k8s", "Kubernetes (stand-in)", &|v| {
        let id = v["engine_id"].as_str().unwrap_or_default();
        let name = id.rsplit('/').next().unwrap_or(id).to_string();
        !standin
            .pods()
            .iter()
            .any(|p| p["job"] == name.as_str() && p["alive"] == true)
    })
}
