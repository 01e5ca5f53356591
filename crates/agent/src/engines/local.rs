//! The local engine: each job a process group on the agent's machine, under
//! `stepwatch job-exec` (a small supervisor that records the job's exit code and output in
//! the job's folder, so an agent that restarts can adopt it), a slot per GPU through
//! `CUDA_VISIBLE_DEVICES`.
//!
//! A job's folder is `<state_dir>/<key>/`: `launch.json` (what was started), `pid` (the
//! supervisor's, which leads the process group), `stdout.log`, `stderr.log`, and `exit`
//! once it ended. A folder for the key means the job was started: `start` never starts it
//! twice.

use super::output::Tail;
use super::EngineOptions;
use crate::engine::{Engine, EngineError, Observed, OutputLine};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use stepwatch_events::jobs::Launch;

/// The local engine.
pub struct Local {
    dir: PathBuf,
    exe: PathBuf,
    /// GPUs to hand out, and which job key holds each.
    gpus: Vec<String>,
    taken: Mutex<BTreeMap<String, Vec<String>>>,
    /// How far each job's output has been read.
    tail: Tail,
}

/// The log files `job-exec` writes, and the stream each is.
const LOGS: &[(&str, &str)] = &[("stdout.log", "stdout"), ("stderr.log", "stderr")];

fn unavailable(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(format!("{what}: {e}"))
}

impl Local {
    pub fn new(opts: &EngineOptions) -> anyhow::Result<Local> {
        std::fs::create_dir_all(&opts.state_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the agent's state folder {}: {e}",
                opts.state_dir.display()
            )
        })?;
        let local = Local {
            dir: opts.state_dir.clone(),
            exe: opts.exe.clone(),
            gpus: opts.gpus.clone(),
            taken: Mutex::new(BTreeMap::new()),
            tail: Tail::new(),
        };
        // GPUs of jobs still running from before a restart stay taken.
        if let Ok(entries) = std::fs::read_dir(&local.dir) {
            for e in entries.flatten() {
                let key = e.file_name().to_string_lossy().to_string();
                if local.alive(&key) {
                    if let Ok(g) = std::fs::read_to_string(e.path().join("gpus")) {
                        let list = g
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect();
                        local.lock_taken().insert(key, list);
                    }
                }
            }
        }
        Ok(local)
    }

    fn lock_taken(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<String>>> {
        self.taken.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn job_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    fn pid(&self, key: &str) -> Option<i32> {
        std::fs::read_to_string(self.job_dir(key).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the job's supervisor still runs (and is the one this folder started).
    fn alive(&self, key: &str) -> bool {
        let Some(pid) = self.pid(key) else {
            return false;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let dir = self.job_dir(key);
        let needle = dir.to_string_lossy();
        String::from_utf8_lossy(&cmdline).contains(needle.as_ref())
    }

    /// The GPUs a job of `want` GPUs gets, or why it must wait.
    fn take_gpus(&self, key: &str, want: u32) -> Result<Vec<String>, EngineError> {
        if want == 0 || self.gpus.is_empty() {
            return Ok(Vec::new());
        }
        let mut taken = self.lock_taken();
        // Ended jobs give theirs back.
        let ended: Vec<String> = taken.keys().filter(|k| !self.alive(k)).cloned().collect();
        for k in ended {
            taken.remove(&k);
        }
        let busy: BTreeSet<&String> = taken.values().flatten().collect();
        let free: Vec<String> = self
            .gpus
            .iter()
            .filter(|g| !busy.contains(g))
            .cloned()
            .collect();
        if free.len() < want as usize {
            return Err(EngineError::Unavailable(format!(
                "waiting for {want} free GPU(s): {} of {} free",
                free.len(),
                self.gpus.len()
            )));
        }
        let mine: Vec<String> = free.into_iter().take(want as usize).collect();
        taken.insert(key.to_string(), mine.clone());
        Ok(mine)
    }

    fn signal(&self, engine_id: &str, sig: Signal) -> Result<(), EngineError> {
        let key = key_of(engine_id);
        if !self.alive(key) {
            return Ok(());
        }
        let Some(pid) = self.pid(key) else {
            return Ok(());
        };
        match killpg(Pid::from_raw(pid), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(unavailable("signal", e)),
        }
    }
}

/// A local engine id is `local:<key>`.
fn key_of(engine_id: &str) -> &str {
    engine_id.strip_prefix("local:").unwrap_or(engine_id)
}

impl Engine for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn start(&self, launch: &Launch) -> Result<String, EngineError> {
        let key = &launch.key;
        let id = format!("local:{key}");
        let dir = self.job_dir(key);
        if dir.join("pid").exists() {
            return Ok(id);
        }
        let want = launch
            .resources
            .gpus
            .unwrap_or(if self.gpus.is_empty() { 0 } else { 1 });
        let gpus = self.take_gpus(key, want)?;
        std::fs::create_dir_all(&dir).map_err(|e| unavailable("job folder", e))?;
        let spec = serde_json::to_vec_pretty(launch).map_err(|e| unavailable("launch", e))?;
        std::fs::write(dir.join("launch.json"), spec).map_err(|e| unavailable("launch.json", e))?;
        std::fs::write(dir.join("gpus"), gpus.join(",")).map_err(|e| unavailable("gpus", e))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("job-exec").arg("--dir").arg(&dir);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| EngineError::Refused(format!("cannot run {}: {e}", self.exe.display())))?;
        // The supervisor writes its pid too; writing it here closes the gap before it runs.
        std::fs::write(dir.join("pid"), child.id().to_string())
            .map_err(|e| unavailable("pid", e))?;
        // Reap the supervisor when it ends, so it does not linger as a zombie.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(id)
    }

    fn status(&self, engine_id: &str, _launch: &Launch) -> Result<Observed, EngineError> {
        let key = key_of(engine_id);
        let dir = self.job_dir(key);
        if let Ok(text) = std::fs::read_to_string(dir.join("exit")) {
            return Ok(exit_observed(text.trim()));
        }
        if self.alive(key) {
            return Ok(Observed::Running);
        }
        // Between the supervisor's exit and our read of its file, or killed with it.
        if let Ok(text) = std::fs::read_to_string(dir.join("exit")) {
            return Ok(exit_observed(text.trim()));
        }
        if dir.join("pid").exists() {
            Ok(Observed::Cancelled {
                reason: "the job's processes were killed".into(),
            })
        } else {
            Ok(Observed::Gone)
        }
    }

    fn stop(&self, engine_id: &str) -> Result<(), EngineError> {
        self.signal(engine_id, Signal::SIGTERM)
    }

    fn kill(&self, engine_id: &str) -> Result<(), EngineError> {
        self.signal(engine_id, Signal::SIGKILL)
    }

    fn output(&self, engine_id: &str, max: usize) -> Vec<OutputLine> {
        let key = key_of(engine_id);
        self.tail.read(key, &self.job_dir(key), LOGS, max)
    }
}

/// The `exit` file: `0`, a code, `signal N`, or `error WHY`.
pub(crate) fn exit_observed(text: &str) -> Observed {
    if text == "0" {
        return Observed::Succeeded;
    }
    if let Some(sig) = text.strip_prefix("signal ") {
        return Observed::Failed {
            reason: format!("killed by signal {sig}"),
            exit_code: sig.parse::<i32>().ok().map(|s| 128 + s),
        };
    }
    if let Some(why) = text.strip_prefix("error ") {
        return Observed::Failed {
            reason: why.to_string(),
            exit_code: None,
        };
    }
    let code = text.parse::<i32>().ok();
    Observed::Failed {
        reason: format!("exited with status {text}"),
        exit_code: code,
    }
}

/// `stepwatch job-exec --dir DIR`: runs the job `DIR/launch.json` describes, with its
/// output in `DIR/stdout.log` and `DIR/stderr.log`, and writes `DIR/exit` when it ends.
/// A SIGTERM to the process group reaches the job; the supervisor outlives it to record
/// the exit.
pub fn job_exec(dir: &Path) -> anyhow::Result<()> {
    let term = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, term)?;
    std::fs::write(dir.join("pid"), std::process::id().to_string())?;
    let outcome = run_job(dir);
    let text = match outcome {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(c), _) => c.to_string(),
                (None, Some(s)) => format!("signal {s}"),
                (None, None) => "error unknown exit".into(),
            }
        }
        Err(e) => format!("error {e}"),
    };
    let tmp = dir.join("exit.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, dir.join("exit"))?;
    Ok(())
}

fn run_job(dir: &Path) -> anyhow::Result<std::process::ExitStatus> {
    let launch: Launch = serde_json::from_slice(&std::fs::read(dir.join("launch.json"))?)?;
    let gpus = std::fs::read_to_string(dir.join("gpus")).unwrap_or_default();
    let Some((program, args)) = launch.argv.split_first() else {
        anyhow::bail!("the job has an empty argv");
    };
    let stdout = std::fs::File::create(dir.join("stdout.log"))?;
    let stderr = std::fs::File::create(dir.join("stderr.log"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(&launch.env)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    if !gpus.is_empty() || launch.resources.gpus == Some(0) {
        cmd.env("CUDA_VISIBLE_DEVICES", gpus.trim());
    }
    if let Some(cwd) = &launch.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {program:?}: {e}"))?;
    Ok(child.wait()?)
}
