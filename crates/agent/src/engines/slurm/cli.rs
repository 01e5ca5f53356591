//! Runs Slurm's commands (`sbatch`, `squeue`, `scontrol`, `scancel`) with an argv, never
//! a shell, under a time limit (a hung `slurmctld` must not hang the agent), and reads
//! their answers.

use crate::engine::EngineError;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the engine reaches Slurm.
#[derive(Debug, Clone)]
pub struct Cli {
    /// Where the commands are (`--engine-opt bin_dir=`), or `None` for `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// `SLURM_CONF` for the commands (`--engine-opt conf=`), or `None` for Slurm's default.
    pub conf: Option<PathBuf>,
    pub timeout: Duration,
}

/// What a command printed, once it exited.
#[derive(Debug)]
pub struct Answer {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Answer {
    /// The error the command printed, on one line, for a job's history.
    pub fn error_text(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

impl Cli {
    /// Runs `program args…` to its end or the time limit. `Err` when it could not run
    /// or ran out of time; a nonzero exit is an `Answer` with `ok: false`.
    pub fn run<S: AsRef<std::ffi::OsStr>>(
        &self,
        program: &str,
        args: &[S],
    ) -> Result<Answer, EngineError> {
        let path = match &self.bin_dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        let mut cmd = Command::new(&path);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(conf) = &self.conf {
            cmd.env("SLURM_CONF", conf);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| EngineError::Unavailable(format!("cannot run {}: {e}", path.display())))?;
        let out = read_in_thread(child.stdout.take());
        let err = read_in_thread(child.stderr.take());
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(EngineError::Unavailable(format!(
                        "{program} did not answer within {} s (is slurmctld up?)",
                        self.timeout.as_secs()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    let _ = child.kill();
                    return Err(EngineError::Unavailable(format!("{program}: {e}")));
                }
            }
        };
        Ok(Answer {
            ok: status.success(),
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        })
    }
}

fn read_in_thread<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Whether Slurm's error says the job id is unknown to it (purged after `MinJobAge`).
pub fn unknown_job(text: &str) -> bool {
    text.contains("Invalid job id")
}

/// Whether Slurm's error says it could not be reached or was busy, so the same request may
/// succeed later (anything else from `sbatch` is a refusal of the job).
pub fn transient(text: &str) -> bool {
    const SIGNS: [&str; 7] = [
        "Unable to contact slurm controller",
        "Socket timed out",
        "Connection refused",
        "Zero Bytes were transmitted",
        "Slurm temporarily unable",
        "try again",
        "Resource temporarily unavailable",
    ];
    SIGNS.iter().any(|s| text.contains(s))
}

/// A job as `scontrol show job` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShownJob {
    pub state: String,
    pub reason: String,
    /// `ExitCode=CODE:SIGNAL`.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

/// Reads `scontrol show job ID`'s `Key=Value` words (values with spaces, like a comment,
/// come later on their own lines and are not needed).
pub fn parse_show_job(text: &str) -> Option<ShownJob> {
    let mut job = ShownJob::default();
    for word in text.split_whitespace() {
        if let Some(v) = word.strip_prefix("JobState=") {
            job.state = v.to_string();
        } else if let Some(v) = word.strip_prefix("Reason=") {
            job.reason = v.to_string();
        } else if let Some(v) = word.strip_prefix("ExitCode=") {
            let (code, sig) = v.split_once(':').unwrap_or((v, "0"));
            job.exit_code = code.parse().ok();
            job.signal = sig.parse().ok();
        }
    }
    (!job.state.is_empty()).then_some(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scontrol_show_job() {
        let text = "JobId=7 JobName=sw-1-1\n   UserId=root(0) GroupId=root(0)\n   \
                    JobState=FAILED Reason=NonZeroExitCode Dependency=(null)\n   \
                    Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0\n   \
                    Comment=stepwatch:1 with words\n";
        assert_eq!(
            parse_show_job(text),
            Some(ShownJob {
                state: "FAILED".into(),
                reason: "NonZeroExitCode".into(),
                exit_code: Some(3),
                signal: Some(0),
            })
        );
        assert_eq!(
            parse_show_job("slurm_load_jobs error: Invalid job id"),
            None
        );
    }

    #[test]
    fn tells_transient_errors_from_refusals() {
        assert!(transient(
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
        ));
        assert!(!transient(
            "sbatch: error: Batch job submission failed: Invalid partition name specified"
        ));
        assert!(unknown_job(
            "slurm_load_jobs error: Invalid job id specified"
        ));
    }

    #[test]
    fn a_command_that_hangs_is_cut_off() {
        let cli = Cli {
            bin_dir: None,
            conf: None,
            timeout: Duration::from_millis(300),
        };
        let started = Instant::now();
        let err = cli.run("sleep", &["30"]).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("sleep did not answer"), "{err}");
        let ok = cli.run("sh", &["-c", "echo out; echo bad >&2; exit 2"]);
        let ok = ok.unwrap();
        assert!(!ok.ok);
        assert_eq!(ok.stdout.trim(), "out");
        assert_eq!(ok.error_text(), "bad");
    }
}
