//! What the Slurm engine hands `sbatch`: the options from the job's resources and its
//! typed extras (each checked to be a plain token), and the batch script.
//!
//! The batch script holds no text from the job's submitter. It only runs
//! `<stepwatch> job-exec --dir <job folder>`, which reads the job's argv, environment and
//! cwd from `launch.json` in that folder and runs the argv directly (no shell). So no argv
//! element, environment value or cwd can become shell code or an `sbatch` option: the
//! only words of the script are the agent's own executable and folder (quoted), and the
//! only `sbatch` options from the job are numbers and extras that passed [`plain_token`].
//! The job's environment is not put on the `sbatch` line either (`--export=NAME=VALUE`
//! would split values at commas and show them to every `scontrol` user); `--export`
//! names only the agent's plain variables a job may see ([`DEFAULT_EXPORT`]), so the
//! agent's own secrets (its token) do not reach the job.

use crate::engine::EngineError;
use serde_json::{Map, Value};
use std::path::Path;
use stepwatch_events::jobs::Resources;

/// The extras a Slurm job may carry, each becoming `--KEY=VALUE`.
pub const EXTRAS: [&str; 5] = ["partition", "account", "qos", "constraint", "reservation"];

/// The agent's environment variables a job sees (`--engine-opt export=` to change).
pub const DEFAULT_EXPORT: &str = "PATH,HOME,USER,LOGNAME,LANG,LC_ALL,TZ,TMPDIR";

/// Whether `text` is a plain token: 1-200 of `A-Z a-z 0-9 _ . , : = -`, not starting
/// with `-` (so it never reads as an option, wherever it lands).
pub fn plain_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 200
        && !text.starts_with('-')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.,:=-".contains(&b))
}

/// Whether `key` may name a job at Slurm and its folder: 1-128 of `A-Z a-z 0-9 _ . -`,
/// not starting with a dot (no `..`, no hidden folder).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// `sbatch`'s options for the job's resources and extras (not its name or files).
pub fn resource_args(
    resources: &Resources,
    extras: &Map<String, Value>,
) -> Result<Vec<String>, EngineError> {
    let mut args = Vec::new();
    if let Some(g) = resources.gpus.filter(|g| *g > 0) {
        args.push(format!("--gres=gpu:{g}"));
    }
    if let Some(c) = resources.cpus {
        args.push(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = resources.memory_mb {
        args.push(format!("--mem={m}M"));
    }
    if let Some(n) = resources.nodes {
        args.push(format!("--nodes={n}"));
    }
    if let Some(s) = resources.time_limit_s {
        args.push(format!("--time={}", s.div_ceil(60).max(1)));
    }
    for (key, value) in extras {
        if !EXTRAS.contains(&key.as_str()) {
            return Err(EngineError::Refused(format!(
                "extras.slurm.{key}: unknown Slurm setting (expected one of {})",
                EXTRAS.join(", ")
            )));
        }
        let Some(text) = value.as_str() else {
            return Err(EngineError::Refused(format!(
                "extras.slurm.{key}: must be a string, not {value}"
            )));
        };
        if !plain_token(text) {
            return Err(EngineError::Refused(format!(
                "extras.slurm.{key}: {text:?} is not a plain name \
                 (1-200 of A-Z a-z 0-9 _ . , : = -, not starting with -)"
            )));
        }
        args.push(format!("--{key}={text}"));
    }
    Ok(args)
}

/// `text` in single quotes for `sh`, any `'` in it closed, escaped and reopened.
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The batch script for the job in folder `dir`: records Slurm's job id, runs
/// `exe job-exec --dir dir`, then exits with the job's own status (from the `exit` file
/// job-exec writes) so that Slurm's `ExitCode` and `FAILED` / `COMPLETED` tell the truth.
///
/// The shell traps TERM (the trap does nothing) so that `scancel --signal=TERM --full`,
/// which signals every process of the job, does not end the script before job-exec has
/// recorded the exit; a trapped signal is reset to its default in the children, so the
/// job itself still gets the TERM.
pub fn batch_script(exe: &Path, dir: &Path) -> String {
    let exe = sh_quote(&exe.to_string_lossy());
    let d = dir.to_string_lossy();
    let id_file = sh_quote(&format!("{d}/slurm_job_id"));
    let exit_file = sh_quote(&format!("{d}/exit"));
    let dir = sh_quote(&d);
    format!(
        "#!/bin/sh\n\
         # Written by the stepwatch agent's Slurm engine. The job's argv, environment and\n\
         # cwd are in launch.json in the job's folder; job-exec runs them without a shell.\n\
         trap : TERM INT\n\
         printf '%s\\n' \"$SLURM_JOB_ID\" > {id_file}\n\
         {exe} job-exec --dir {dir}\n\
         status=$?\n\
         code=\n\
         read -r code < {exit_file} 2>/dev/null\n\
         case \"$code\" in\n\
         \x20 'signal '[0-9]*) exit $((128 + ${{code#signal }})) ;;\n\
         \x20 ''|*[!0-9]*) [ \"$status\" -ne 0 ] && exit \"$status\"; exit 1 ;;\n\
         \x20 *) exit \"$code\" ;;\n\
         esac\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn extras(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn resources_become_sbatch_options() {
        let r = Resources {
            gpus: Some(2),
            cpus: Some(4),
            memory_mb: Some(1536),
            nodes: Some(1),
            time_limit_s: Some(61),
        };
        let args = resource_args(&r, &extras(json!({"partition": "gpu", "qos": "high"})));
        assert_eq!(
            args.unwrap(),
            [
                "--gres=gpu:2",
                "--cpus-per-task=4",
                "--mem=1536M",
                "--nodes=1",
                "--time=2",
                "--partition=gpu",
                "--qos=high"
            ]
        );
        let none = Resources {
            gpus: Some(0),
            ..Resources::default()
        };
        assert!(resource_args(&none, &Map::new()).unwrap().is_empty());
    }

    #[test]
    fn hostile_extras_are_refused_naming_the_key() {
        for (bad, key) in [
            (json!({"partition": "x; rm -rf /"}), "partition"),
            (json!({"account": "a b"}), "account"),
            (json!({"account": "--wrap=id"}), "account"),
            (json!({"qos": ""}), "qos"),
            (json!({"constraint": "$(id)"}), "constraint"),
            (json!({"reservation": 3}), "reservation"),
            (json!({"export": "ALL"}), "export"),
            (json!({"wrap": "rm -rf /"}), "wrap"),
        ] {
            match resource_args(&Resources::default(), &extras(bad)) {
                Err(EngineError::Refused(why)) => {
                    assert!(why.contains(&format!("extras.slurm.{key}")), "{why}")
                }
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn keys_are_plain_names() {
        assert!(valid_key("sw-12-1"));
        for bad in ["", "..", ".x", "a/b", "a b", "a;b", "a,b"] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_script_quotes_the_agents_paths() {
        let s = batch_script(
            Path::new("/opt/it's/stepwatch"),
            Path::new("/var/sw/sw-1-1"),
        );
        assert!(s.contains(r"'/opt/it'\''s/stepwatch' job-exec --dir '/var/sw/sw-1-1'"));
        assert!(s.contains("> '/var/sw/sw-1-1/slurm_job_id'"));
        assert!(s.starts_with("#!/bin/sh\n"));
    }
}
