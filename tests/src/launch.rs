//! Launching jobs: a launch config written for a test, `stepwatch agent` processes, the
//! launch API's requests, and a Python trainer made for launched jobs.

use crate::python::python;
use crate::relay::{relay_bin, repo, wait_until, Relay};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Python trainer for launched jobs (`argv`: `python FILE --steps N [--fail-at K]
/// [--marker PATH]`). It reports a checkpoint every 10 steps, obeys stop, resumes after
/// the step named in `STEPWATCH_RESUME_FROM` (`…/step-<N>.pt`), fails with exit status 3
/// at step K unless resumed, prints a line per 10 steps, and appends its pid to the
/// marker file when it starts (so a test can count starts).
pub const LAUNCH_TRAINER: &str = r#"
import argparse, os, sys, time, stepwatch
from stepwatch import emit_training_start, emit_batch_end, emit_training_end, emit_checkpoint_saved
p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=100)
p.add_argument("--fail-at", type=int, default=0)
p.add_argument("--marker", default="")
p.add_argument("--sleep", type=float, default=0.02)
a = p.parse_args()
if a.marker:
    with open(a.marker, "a") as f:
        f.write(f"{os.getpid()}\n")
resume = os.environ.get("STEPWATCH_RESUME_FROM")
start = int(resume.rsplit("step-", 1)[1].split(".")[0]) if resume else 0
print(f"run {os.environ.get('STEPWATCH_RUN')} job {os.environ.get('STEPWATCH_JOB')} from step {start}", flush=True)
emit_training_start(total_epochs=1, total_batches=a.steps)
step = start
while step < a.steps and not stepwatch.should_stop():
    step += 1
    emit_batch_end(batch_idx=step - 1, loss=1.0 / step, lr=0.1, step=step)
    if step % 10 == 0:
        emit_checkpoint_saved(checkpoint_path=f"/tmp/ckpt/step-{step}.pt", epoch=1, step=step, metrics={"val_loss": 1.0 / step})
        print(f"step {step}", flush=True)
    if a.fail_at and step == a.fail_at and not resume:
        stepwatch.flush(10)
        print("boom: simulated crash", file=sys.stderr, flush=True)
        sys.exit(3)
    time.sleep(a.sleep)
emit_training_end()
stepwatch.flush(10)
"#;

/// Writes [`LAUNCH_TRAINER`] into `dir`; its path.
pub fn write_launch_trainer(dir: &Path) -> PathBuf {
    let path = dir.join("launch_trainer.py");
    std::fs::write(&path, LAUNCH_TRAINER).unwrap();
    path
}

/// A launch config in `dir` with one queue `local` (engine local, lease `lease_s`, cancel
/// grace `grace_s`) and a template `train` running [`LAUNCH_TRAINER`] with typed
/// `steps`, `fail_at` and `marker` parameters; `extra` TOML is appended. Its path.
pub fn local_launch_config(dir: &Path, lease_s: u64, grace_s: u64, extra: &str) -> PathBuf {
    let trainer = write_launch_trainer(dir);
    let py = python();
    let text = format!(
        r#"
[[queues]]
name = "local"
engine = "local"
lease_s = {lease_s}
cancel_grace_s = {grace_s}
limits = {{ gpus = 2 }}

[[templates]]
name = "train"
queue = "local"
description = "the test trainer"
argv = [{py:?}, {trainer:?}, "--steps={{steps}}", "--fail-at={{fail_at}}", "--marker={{marker}}", "--sleep={{sleep}}"]
env = {{ PYTHONPATH = {pp:?} }}
params = [
  {{ name = "steps", kind = {{ type = "int", min = 1, max = 100000 }}, default = 60 }},
  {{ name = "fail_at", kind = {{ type = "int", min = 0 }}, default = 0 }},
  {{ name = "marker", kind = {{ type = "string", max_len = 4096 }}, default = "" }},
  {{ name = "sleep", kind = {{ type = "float", min = 0.0, max = 5.0 }}, default = 0.02 }},
]
{extra}
"#,
        py = py.to_string_lossy(),
        trainer = trainer.to_string_lossy(),
        pp = repo().join("clients/python/src").to_string_lossy(),
    );
    let path = dir.join("launch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A `stepwatch agent` process.
pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
    pub state_dir: PathBuf,
}

impl Agent {
    /// Starts `stepwatch agent --url <relay> --queue Q --engine E` with its state in
    /// `dir/agent-<name>` and its log beside it; `extra` flags follow.
    pub fn start(
        relay: &Relay,
        dir: &Path,
        queue: &str,
        engine: &str,
        name: &str,
        extra: &[&str],
    ) -> Agent {
        let state_dir = dir.join(format!("agent-{name}"));
        let log = dir.join(format!("agent-{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(relay_bin());
        cmd.args([
            "agent", "--url", &relay.url, "--queue", queue, "--engine", engine, "--name", name,
        ]);
        if !extra.contains(&"--state-dir") {
            cmd.arg("--state-dir").arg(&state_dir);
        }
        if !extra.contains(&"--tick-ms") {
            cmd.args(["--tick-ms", "250"]);
        }
        let child = cmd
            .args(extra)
            .env("STEPWATCH_LOG_LEVEL", "debug")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            log,
            state_dir,
        }
    }

    /// `kill -9`: the agent dies without a word; its jobs keep running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn call(req: ureq::Request, body: Option<&Value>) -> (u16, Value) {
    let res = match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    };
    match res {
        Ok(r) => {
            let s = r.status();
            (s, r.into_json().unwrap_or(Value::Null))
        }
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("request failed: {e}"),
    }
}

impl Relay {
    /// POSTs JSON to `path`, with a bearer token when given.
    pub fn post_json(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut req = ureq::post(&format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        call(req, Some(body))
    }

    /// GETs `path` with a bearer token.
    pub fn get_as(&self, path: &str, token: &str) -> (u16, Value) {
        call(
            ureq::get(&format!("{}{path}", self.url))
                .set("Authorization", &format!("Bearer {token}")),
            None,
        )
    }

    /// Submits a job; 201 expected: the answer (`job`, `run`, …).
    pub fn submit(&self, spec: &Value) -> Value {
        let (s, v) = self.post_json("/api/jobs", spec, None);
        assert_eq!(s, 201, "submit {spec}: {v}");
        v
    }

    /// A job's view.
    pub fn job(&self, id: &str) -> Value {
        self.get_ok(&format!("/api/jobs/{id}"))
    }

    /// Waits until the job's status is `status`; its view then.
    pub fn wait_job(&self, id: &str, status: &str, timeout: Duration) -> Value {
        wait_until(&format!("job {id} {status}"), timeout, || {
            let v = self.job(id);
            (v["status"] == status).then_some(v)
        })
    }
}

/// The kinds of a job view's history, in order.
pub fn history_kinds(view: &Value) -> Vec<String> {
    view["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|r| r["kind"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process with this pid is alive (and not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split(' ').nth(2).is_none_or(|st| st != "Z"))
        .unwrap_or(false)
}
