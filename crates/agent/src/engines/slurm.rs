//! The Slurm engine: each job a batch job (`sbatch`), followed with `squeue` and
//! `scontrol`, stopped with `scancel --signal=TERM --full`, killed with `scancel`.
//!
//! A job's folder is `<state_dir>/<key>/`, as with the local engine, and must be visible
//! from the compute nodes (a shared file system), as must the `stepwatch` binary:
//! `launch.json` (what to run, read by `stepwatch job-exec` on the node), `job.sh` (the
//! batch script, which holds no text of the submitter's: see [`submit`]), `job_id` (the
//! id `sbatch` gave), `slurm_job_id` (the id, written by the job itself once it runs),
//! `slurm.log` (Slurm's own output for the job), `stdout.log`, `stderr.log` and `exit`.
//!
//! A job is submitted at most once per key: `start` returns the recorded id, else looks
//! the key up at Slurm (`squeue --me --name=KEY`, finished jobs included, matched by
//! the `stepwatch:<job>` comment or the script's path), and only then runs `sbatch`. Without slurmdbd a finished job leaves
//! `scontrol` after `MinJobAge`; its `exit` file still tells how it ended.
//!
//! Settings (`--engine-opt KEY=VALUE`): `conf` (`SLURM_CONF` for the commands), `bin_dir`
//! (where `sbatch` and the others are), `exe` (the `stepwatch` binary as the nodes see
//! it), `timeout_s` (per command, default 30), `export` (the agent's variables a job sees,
//! default [`submit::DEFAULT_EXPORT`]; `ALL` for every one).

mod cli;
mod submit;

use super::local::exit_observed;
use super::output::Tail;
use super::EngineOptions;
use crate::engine::{Engine, EngineError, Observed, OutputLine};
use cli::{Answer, Cli, ShownJob};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use stepwatch_events::jobs::Launch;
use submit::{plain_token, valid_key};

/// The log files of a job's folder, and the stream each is forwarded as.
const LOGS: &[(&str, &str)] = &[
    ("stdout.log", "stdout"),
    ("stderr.log", "stderr"),
    ("slurm.log", "stderr"),
];

/// The settings `--engine-opt` may give.
const OPTS: [&str; 5] = ["conf", "bin_dir", "exe", "timeout_s", "export"];

/// The Slurm engine.
pub struct Slurm {
    dir: PathBuf,
    exe: PathBuf,
    cli: Cli,
    export: String,
    tail: Tail,
    /// Job key and folder by Slurm job id, for `output` (which gets the id only).
    known: Mutex<BTreeMap<String, (String, PathBuf)>>,
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

impl Slurm {
    pub fn new(opts: &EngineOptions) -> anyhow::Result<Slurm> {
        if let Some(bad) = opts.opts.keys().find(|k| !OPTS.contains(&k.as_str())) {
            anyhow::bail!(
                "unknown Slurm engine setting {bad:?}: expected one of {}",
                OPTS.join(", ")
            );
        }
        let opt = |k: &str| opts.opts.get(k).filter(|v| !v.is_empty());
        let dir = absolute(&opts.state_dir)?;
        // sbatch reads `%` and `\` in --output as patterns.
        if dir.to_string_lossy().contains(['%', '\\']) {
            anyhow::bail!("the state folder {} may not hold % or \\", dir.display());
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let timeout_s = match opt("timeout_s") {
            Some(t) => t
                .parse::<u64>()
                .ok()
                .filter(|t| *t > 0)
                .ok_or_else(|| anyhow::anyhow!("timeout_s: {t:?} is not a positive number"))?,
            None => 30,
        };
        let export = opt("export").map_or(submit::DEFAULT_EXPORT, String::as_str);
        if !plain_token(export) {
            anyhow::bail!("export: {export:?} is not a comma-separated list of names");
        }
        let slurm = Slurm {
            exe: absolute(opt("exe").map_or(&opts.exe, |e| Path::new(e)))?,
            cli: Cli {
                bin_dir: opt("bin_dir").map(PathBuf::from),
                conf: opt("conf").map(PathBuf::from),
                timeout: Duration::from_secs(timeout_s),
            },
            export: export.to_string(),
            dir,
            tail: Tail::new(),
            known: Mutex::new(BTreeMap::new()),
        };
        let version = slurm.run("squeue", &["--version"]);
        match version {
            Ok(a) if a.ok => Ok(slurm),
            Ok(a) => anyhow::bail!("squeue --version failed: {}", a.error_text()),
            Err(e) => anyhow::bail!("{e} (install slurm-client, or give --engine-opt bin_dir=)"),
        }
    }

    fn job_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The folder of job `key`: ours, or the one of the agent that started it (from the
    /// `folder` file `start` left when it adopted the job).
    fn folder(&self, key: &str) -> PathBuf {
        let ours = self.job_dir(key);
        match std::fs::read_to_string(ours.join("folder")) {
            Ok(theirs) if Path::new(theirs.trim()).is_absolute() => PathBuf::from(theirs.trim()),
            _ => ours,
        }
    }

    fn remember(&self, id: &str, key: &str) -> PathBuf {
        let folder = self.folder(key);
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), (key.to_string(), folder.clone()));
        folder
    }

    /// Runs a Slurm command; `Err` naming the command when it could not run.
    fn run(&self, program: &str, args: &[&str]) -> Result<Answer, EngineError> {
        self.cli.run(program, args)
    }

    /// A Slurm job of ours for `launch`, still known to slurmctld (finished ones
    /// included): this user's, named by the key, with our comment (`stepwatch:<job>`: an
    /// agent with another state folder started it) or our script.
    /// Returns its id and its folder (its script's).
    fn find(
        &self,
        launch: &Launch,
        script: &Path,
    ) -> Result<Option<(String, PathBuf)>, EngineError> {
        let name = format!("--name={}", launch.key);
        let args = [
            "--me",
            "--noheader",
            "--states=all",
            &name,
            "--format=%i|%k|%o",
        ];
        let a = self.run("squeue", &args)?;
        if !a.ok {
            return Err(failed("squeue --name", &a));
        }
        let script = script.to_string_lossy();
        let comment = comment(launch);
        Ok(a.stdout.lines().find_map(|line| {
            let mut words = line.trim().splitn(3, '|');
            let (id, c, command) = (words.next()?, words.next()?, words.next()?);
            if !job_id(id) || (c != comment && command != script) {
                return None;
            }
            let folder = Path::new(command)
                .parent()
                .filter(|f| f.is_absolute() && command.ends_with("/job.sh"))?;
            Some((id.to_string(), folder.to_path_buf()))
        }))
    }

    /// Writes the job's folder: `launch.json` (private to the agent's user: it holds the
    /// run's token) and the batch script.
    fn prepare(&self, dir: &Path, launch: &Launch) -> Result<PathBuf, EngineError> {
        make_dir(dir)?;
        let spec = serde_json::to_vec_pretty(launch).map_err(|e| unavailable("launch", e))?;
        write_private(&dir.join("launch.json"), &spec)?;
        let script = dir.join("job.sh");
        write_private(&script, submit::batch_script(&self.exe, dir).as_bytes())?;
        Ok(script)
    }

    /// `sbatch`: the new job's id.
    fn submit(&self, launch: &Launch, dir: &Path, script: &Path) -> Result<String, EngineError> {
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", launch.key),
            format!("--comment={}", comment(launch)),
            format!("--output={}", dir.join("slurm.log").display()),
            "--open-mode=append".into(),
            // Retries are the relay's: a job Slurm requeued would run its argv again.
            "--no-requeue".into(),
            format!("--export={}", self.export),
        ];
        args.extend(submit::resource_args(&launch.resources, &launch.extras)?);
        args.push(script.to_string_lossy().into_owned());
        let a = self.cli.run("sbatch", &args)?;
        if !a.ok {
            let why = a.error_text();
            return Err(if cli::transient(&why) {
                EngineError::Unavailable(format!("sbatch failed: {why}"))
            } else {
                EngineError::Refused(format!("sbatch: {why}"))
            });
        }
        // `--parsable` prints `ID` or `ID;CLUSTER`.
        let id = a.stdout.trim().split(';').next().unwrap_or("").to_string();
        if !job_id(&id) {
            return Err(EngineError::Unavailable(format!(
                "sbatch answered {:?}, not a job id",
                a.stdout.trim()
            )));
        }
        Ok(id)
    }

    fn scancel(&self, args: &[&str]) -> Result<(), EngineError> {
        let a = self.run("scancel", args)?;
        let why = a.error_text();
        // An ended job cannot be signalled: that is no failure of a stop.
        if a.ok || cli::unknown_job(&why) || why.contains("already complet") {
            Ok(())
        } else {
            Err(EngineError::Unavailable(format!(
                "scancel {} failed: {why}",
                args.join(" ")
            )))
        }
    }
}

/// How a job ended, from the `exit` file job-exec wrote in its folder (`Gone` without).
fn exit_file(dir: &Path) -> Observed {
    match std::fs::read_to_string(dir.join("exit")) {
        Ok(text) => exit_observed(text.trim()),
        Err(_) => Observed::Gone,
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(format!("{what}: {e}"))
}

fn failed(what: &str, a: &Answer) -> EngineError {
    EngineError::Unavailable(format!("{what} failed: {}", a.error_text()))
}

/// The comment that marks a job as this launch's at Slurm.
fn comment(launch: &Launch) -> String {
    format!("stepwatch:{}", launch.job)
}

/// Whether `id` is a Slurm job id (digits, `_` for an array task).
fn job_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit() || b == b'_')
}

/// Creates a job's folder, private to the agent's user.
fn make_dir(dir: &Path) -> Result<(), EngineError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| unavailable("job folder", e))
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let tmp = path.with_extension("tmp");
    let name = path.display().to_string();
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| unavailable(&name, e))?;
    f.write_all(bytes).map_err(|e| unavailable(&name, e))?;
    std::fs::rename(&tmp, path).map_err(|e| unavailable(&name, e))
}

/// The id recorded in the job's folder by `start` or by the job itself.
fn recorded_id(dir: &Path) -> Option<String> {
    ["job_id", "slurm_job_id"].iter().find_map(|f| {
        let text = std::fs::read_to_string(dir.join(f)).ok()?;
        let id = text.trim();
        job_id(id).then(|| id.to_string())
    })
}

/// `Slurm: STATE (Reason)`, or `Slurm: STATE` when Slurm gives no reason.
fn words(state: &str, reason: &str) -> String {
    if reason.is_empty() || reason == "None" || reason == "(null)" {
        format!("Slurm: {state}")
    } else {
        format!("Slurm: {state} ({reason})")
    }
}

/// A state of a job that has not ended, as the agent sees it; `None` once it ended.
fn active(state: &str, reason: &str) -> Option<Observed> {
    match state {
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" | "SUSPENDED"
        | "STOPPED" => Some(Observed::Pending {
            reason: words(state, reason),
        }),
        "RUNNING" | "COMPLETING" | "CONFIGURING" | "RESIZING" | "SIGNALING" | "STAGE_OUT" => {
            Some(Observed::Running)
        }
        _ => None,
    }
}

/// How an ended job ended: Slurm's state, with the job's own exit (from its `exit`
/// file, when job-exec wrote one) for the code.
fn ended(job: &ShownJob, exit_file: Option<Observed>) -> Observed {
    let slurm_code = match (job.exit_code, job.signal) {
        (_, Some(s)) if s > 0 => Some(128 + s),
        (c, _) => c,
    };
    let code_of = |o: &Option<Observed>| match o {
        Some(Observed::Failed { exit_code, .. }) => *exit_code,
        Some(Observed::Succeeded) => Some(0),
        _ => slurm_code,
    };
    match job.state.as_str() {
        "CANCELLED" => Observed::Cancelled {
            reason: words(&job.state, &job.reason),
        },
        "COMPLETED" | "FAILED" => match exit_file {
            Some(o) => o,
            None if job.state == "COMPLETED" && slurm_code == Some(0) => Observed::Succeeded,
            None => Observed::Failed {
                reason: words(&job.state, &job.reason),
                exit_code: slurm_code,
            },
        },
        // TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE …
        _ => Observed::Failed {
            reason: words(&job.state, &job.reason),
            exit_code: code_of(&exit_file),
        },
    }
}

impl Engine for Slurm {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn start(&self, launch: &Launch) -> Result<String, EngineError> {
        let key = &launch.key;
        if !valid_key(key) {
            return Err(EngineError::Refused(format!(
                "the job's key {key:?} is not a plain name"
            )));
        }
        if !plain_token(&launch.job) {
            return Err(EngineError::Refused(format!(
                "the job id {:?} is not a plain name",
                launch.job
            )));
        }
        // Refuse bad extras before anything is written or asked.
        submit::resource_args(&launch.resources, &launch.extras)?;
        let dir = self.job_dir(key);
        let script = dir.join("job.sh");
        let id = match recorded_id(&self.folder(key)) {
            Some(id) => id,
            None => match self.find(launch, &script)? {
                Some((id, folder)) => {
                    make_dir(&dir)?;
                    if folder != dir {
                        let text = folder.to_string_lossy();
                        write_private(&dir.join("folder"), text.as_bytes())?;
                    }
                    id
                }
                None => {
                    let script = self.prepare(&dir, launch)?;
                    self.submit(launch, &dir, &script)?
                }
            },
        };
        // Recorded first thing, so that a restarted agent finds it without asking Slurm.
        write_private(&dir.join("job_id"), id.as_bytes())?;
        self.remember(&id, key);
        Ok(id)
    }

    fn status(&self, engine_id: &str, launch: &Launch) -> Result<Observed, EngineError> {
        if !job_id(engine_id) || !valid_key(&launch.key) {
            return Ok(Observed::Gone);
        }
        let dir = self.remember(engine_id, &launch.key);
        let id = engine_id.to_string();
        let a = self.run("squeue", &["-h", "-j", &id, "-o", "%T|%r"])?;
        if a.ok {
            if let Some((state, reason)) = a.stdout.lines().next().and_then(|l| l.split_once('|')) {
                if let Some(o) = active(state.trim(), reason.trim()) {
                    return Ok(o);
                }
            }
        } else if !cli::unknown_job(&a.error_text()) {
            return Err(failed(&format!("squeue -j {id}"), &a));
        }
        let a = self.run("scontrol", &["show", "job", &id])?;
        if !a.ok {
            if cli::unknown_job(&a.error_text()) {
                return Ok(exit_file(&dir));
            }
            return Err(failed(&format!("scontrol show job {id}"), &a));
        }
        let Some(job) = cli::parse_show_job(&a.stdout) else {
            return Err(EngineError::Unavailable(format!(
                "scontrol show job {id}: no JobState in {:?}",
                a.stdout
            )));
        };
        if let Some(o) = active(&job.state, &job.reason) {
            return Ok(o);
        }
        let file = match exit_file(&dir) {
            Observed::Gone => None,
            o => Some(o),
        };
        Ok(ended(&job, file))
    }

    fn stop(&self, engine_id: &str) -> Result<(), EngineError> {
        if !job_id(engine_id) {
            return Ok(());
        }
        // A job still waiting has nothing to save: it is simply taken off the queue.
        self.scancel(&["--state=PENDING", engine_id])?;
        self.scancel(&["--signal=TERM", "--full", engine_id])
    }

    fn kill(&self, engine_id: &str) -> Result<(), EngineError> {
        if !job_id(engine_id) {
            return Ok(());
        }
        self.scancel(&[engine_id])
    }

    fn output(&self, engine_id: &str, max: usize) -> Vec<OutputLine> {
        let known = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(engine_id)
            .cloned();
        match known {
            Some((key, folder)) => self.tail.read(&key, &folder, LOGS, max),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(state: &str, reason: &str, code: i32, sig: i32) -> ShownJob {
        ShownJob {
            state: state.into(),
            reason: reason.into(),
            exit_code: Some(code),
            signal: Some(sig),
        }
    }

    #[test]
    fn pending_says_slurms_reason() {
        assert_eq!(
            active("PENDING", "Resources"),
            Some(Observed::Pending {
                reason: "Slurm: PENDING (Resources)".into()
            })
        );
        assert_eq!(active("COMPLETING", "None"), Some(Observed::Running));
        assert_eq!(active("TIMEOUT", "TimeLimit"), None);
    }

    #[test]
    fn an_ended_job_is_told_by_slurm_and_its_exit_file() {
        let three = Some(exit_observed("3"));
        assert_eq!(
            ended(&shown("FAILED", "NonZeroExitCode", 3, 0), three.clone()),
            exit_observed("3")
        );
        assert_eq!(
            ended(&shown("COMPLETED", "None", 0, 0), None),
            Observed::Succeeded
        );
        assert_eq!(
            ended(&shown("FAILED", "NonZeroExitCode", 0, 9), None),
            Observed::Failed {
                reason: "Slurm: FAILED (NonZeroExitCode)".into(),
                exit_code: Some(137)
            }
        );
        assert_eq!(
            ended(&shown("TIMEOUT", "TimeLimit", 0, 15), three),
            Observed::Failed {
                reason: "Slurm: TIMEOUT (TimeLimit)".into(),
                exit_code: Some(3)
            }
        );
        assert!(matches!(
            ended(&shown("CANCELLED", "None", 0, 15), None),
            Observed::Cancelled { reason } if reason == "Slurm: CANCELLED"
        ));
    }
}
