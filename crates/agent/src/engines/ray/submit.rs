//! The body of Ray's `POST /api/jobs/` for one launch: the entrypoint shell line (built only
//! from a single-quoted argv), the environment, the entrypoint's resources, the typed
//! allow-list of Ray extras, and the metadata that ties the Ray job to its Stepwatch job.
//! Pure: no IO, so every refusal is unit-tested.

use crate::engine::EngineError;
use serde_json::{json, Map, Value};
use stepwatch_events::jobs::Launch;

/// The Ray extras a queue or job may set (`extras = { ray = { ... } }`), each with its type.
pub const ALLOWED_EXTRAS: [&str; 2] = ["entrypoint_resources", "entrypoint_label_selector"];

/// Seconds between the time limit's SIGTERM and its SIGKILL (`timeout -k`).
pub const TIME_LIMIT_KILL_AFTER_S: u64 = 30;

/// Quotes one word for a POSIX shell: wrapped in single quotes, each embedded `'` written
/// as `'\''`. Inside single quotes the shell expands nothing (`$`, backticks, `\`, newlines
/// are literal), so the word reaches the program byte for byte.
pub fn shell_quote(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The line Ray hands to `/bin/sh -c`: `cd 'CWD' && exec [timeout ...] 'ARG0' 'ARG1' …`.
/// `exec` makes the job the process Ray signals on a stop. An argv[0] that begins with `-`
/// is refused: `exec` (dash's takes no `--`) and `timeout` would read it as an option.
pub fn entrypoint(launch: &Launch) -> Result<String, EngineError> {
    if launch.argv.is_empty() {
        return Err(EngineError::Refused("the job has an empty argv".into()));
    }
    if launch.argv[0].starts_with('-') {
        return Err(EngineError::Refused(format!(
            "argv[0] {:?} begins with '-': name the program (a path or a command)",
            launch.argv[0]
        )));
    }
    for (i, word) in launch.argv.iter().enumerate() {
        if word.contains('\0') {
            return Err(EngineError::Refused(format!(
                "argv[{i}] holds a NUL byte, which no process argument can carry"
            )));
        }
    }
    let mut line = String::new();
    if let Some(cwd) = &launch.cwd {
        if cwd.contains('\0') {
            return Err(EngineError::Refused("cwd holds a NUL byte".into()));
        }
        line.push_str("cd ");
        line.push_str(&shell_quote(cwd));
        line.push_str(" && ");
    }
    line.push_str("exec ");
    if let Some(limit) = launch.resources.time_limit_s {
        // Ray has no time limit of its own: coreutils' timeout sends SIGTERM at the limit.
        line.push_str(&format!("timeout -k {TIME_LIMIT_KILL_AFTER_S} {limit} "));
    }
    let words: Vec<String> = launch.argv.iter().map(|w| shell_quote(w)).collect();
    line.push_str(&words.join(" "));
    Ok(line)
}

/// The whole `POST /api/jobs/` body.
pub fn body(launch: &Launch) -> Result<Value, EngineError> {
    let mut env = Map::new();
    for (k, v) in &launch.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(EngineError::Refused(format!(
                "environment variable {k:?}: a name must be non-empty without '=' or NUL, \
                 a value without NUL"
            )));
        }
        env.insert(k.clone(), Value::String(v.clone()));
    }
    // Output reaches Ray's log as it is printed, not when a buffer fills.
    env.entry("PYTHONUNBUFFERED")
        .or_insert_with(|| Value::String("1".into()));
    let mut body = json!({
        "submission_id": launch.key,
        "entrypoint": entrypoint(launch)?,
        "runtime_env": { "env_vars": env },
        "metadata": { "stepwatch_job": launch.job, "stepwatch_run": launch.run },
    });
    let Some(fields) = body.as_object_mut() else {
        return Err(EngineError::Refused(
            "internal: body is not an object".into(),
        ));
    };
    resources(launch, fields)?;
    extras(&launch.extras, fields)?;
    Ok(body)
}

/// `resources` → Ray's entrypoint resources. Ray places the entrypoint; with GPUs it sets
/// `CUDA_VISIBLE_DEVICES` itself.
fn resources(launch: &Launch, fields: &mut Map<String, Value>) -> Result<(), EngineError> {
    let r = &launch.resources;
    if let Some(cpus) = r.cpus {
        fields.insert("entrypoint_num_cpus".into(), json!(cpus));
    }
    if let Some(gpus) = r.gpus {
        fields.insert("entrypoint_num_gpus".into(), json!(gpus));
    }
    if let Some(mb) = r.memory_mb {
        let bytes = mb.checked_mul(1024 * 1024).ok_or_else(|| {
            EngineError::Refused(format!("resources.memory_mb {mb} is too large"))
        })?;
        fields.insert("entrypoint_memory".into(), json!(bytes));
    }
    if let Some(nodes) = r.nodes.filter(|n| *n > 1) {
        return Err(EngineError::Refused(format!(
            "resources.nodes = {nodes}: a Ray job's entrypoint runs on one node and asks Ray \
             for its workers itself; leave nodes unset or 1"
        )));
    }
    Ok(())
}

/// The allow-listed extras, each checked for its type; any other key is refused by name.
fn extras(extras: &Map<String, Value>, fields: &mut Map<String, Value>) -> Result<(), EngineError> {
    for (key, value) in extras {
        match key.as_str() {
            "entrypoint_resources" => {
                let map = object_of(key, value, |v| {
                    v.as_f64().is_some_and(|n| n.is_finite() && n >= 0.0)
                })?;
                fields.insert(key.clone(), Value::Object(map));
            }
            "entrypoint_label_selector" => {
                let map = object_of(key, value, Value::is_string)?;
                fields.insert(key.clone(), Value::Object(map));
            }
            other => {
                return Err(EngineError::Refused(format!(
                    "extras.ray.{other} is not allowed: the Ray engine takes only {}",
                    ALLOWED_EXTRAS.join(", ")
                )));
            }
        }
    }
    Ok(())
}

fn object_of(
    key: &str,
    value: &Value,
    ok: impl Fn(&Value) -> bool,
) -> Result<Map<String, Value>, EngineError> {
    let what = if key == "entrypoint_resources" {
        "an object of resource name to a non-negative number"
    } else {
        "an object of label to string"
    };
    let Some(map) = value.as_object() else {
        return Err(EngineError::Refused(format!(
            "extras.ray.{key} must be {what}"
        )));
    };
    for (name, v) in map {
        if name.is_empty() || !ok(v) {
            return Err(EngineError::Refused(format!(
                "extras.ray.{key}.{name} must be {what}"
            )));
        }
    }
    Ok(map.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `line` with `/bin/sh -c`, as Ray does, and returns what it printed.
    fn sh(line: &str) -> String {
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(line)
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Words a shell would act on unquoted. Only harmless commands: a quoting bug must show
    /// as a failed test, not as damage.
    const HOSTILE: [&str; 11] = [
        "$(touch /tmp/stepwatch-pwned)",
        "`touch /tmp/stepwatch-pwned`",
        "a; echo pwned",
        "line one\nline two",
        "it's",
        "'",
        "''\\''",
        "two  spaces ",
        "",
        "-n",
        "$HOME \\ \"dq\" * ? ~ | & > <",
    ];

    #[test]
    fn shell_quote_wraps_and_escapes_single_quotes() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("'"), "''\\'''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_quote("a\nb;c`d`"), "'a\nb;c`d`'");
        assert_eq!(shell_quote("-n"), "'-n'");
    }

    #[test]
    fn hostile_words_reach_the_program_byte_exact() {
        for word in HOSTILE {
            // printf's format is itself quoted: the word arrives as its one argument.
            let line = format!("printf '%s' {}", shell_quote(word));
            assert_eq!(sh(&line), word, "{word:?}");
        }
        // All of them at once, as one argv, through the entrypoint Ray would run.
        let launch = Launch {
            argv: ["printf", "[%s]"]
                .iter()
                .chain(HOSTILE.iter())
                .map(|s| s.to_string())
                .collect(),
            cwd: Some("/tmp".into()),
            ..Launch::default()
        };
        let expected: String = HOSTILE.iter().map(|w| format!("[{w}]")).collect();
        assert_eq!(sh(&entrypoint(&launch).unwrap()), expected);
        assert!(!std::path::Path::new("/tmp/stepwatch-pwned").exists());
    }

    #[test]
    fn entrypoint_changes_folder_and_execs() {
        let launch = Launch {
            argv: vec!["pwd".into()],
            cwd: Some("/tmp/it's a dir".into()),
            ..Launch::default()
        };
        assert_eq!(
            entrypoint(&launch).unwrap(),
            "cd '/tmp/it'\\''s a dir' && exec 'pwd'"
        );
        let launch = Launch {
            argv: vec!["pwd".into()],
            cwd: Some("/".into()),
            ..Launch::default()
        };
        assert_eq!(sh(&entrypoint(&launch).unwrap()), "/\n");
    }

    #[test]
    fn a_program_name_with_a_leading_dash_is_refused_an_argument_is_not() {
        let launch = Launch {
            argv: vec!["-c".into(), "x".into()],
            ..Launch::default()
        };
        let Err(EngineError::Refused(why)) = entrypoint(&launch) else {
            panic!("accepted")
        };
        assert!(why.contains("argv[0]"), "{why}");
        let launch = Launch {
            argv: vec!["printf".into(), "%s".into(), "-n".into()],
            ..Launch::default()
        };
        assert_eq!(sh(&entrypoint(&launch).unwrap()), "-n");
    }

    #[test]
    fn time_limit_wraps_the_job_in_timeout() {
        let mut launch = Launch {
            argv: vec!["sleep".into(), "5".into()],
            ..Launch::default()
        };
        launch.resources.time_limit_s = Some(1);
        let line = entrypoint(&launch).unwrap();
        assert_eq!(line, "exec timeout -k 30 1 'sleep' '5'");
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg(&line)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(124));
    }

    #[test]
    fn refuses_what_no_process_can_carry() {
        let empty = Launch::default();
        assert!(matches!(entrypoint(&empty), Err(EngineError::Refused(_))));
        let nul = Launch {
            argv: vec!["echo".into(), "a\0b".into()],
            ..Launch::default()
        };
        let Err(EngineError::Refused(why)) = entrypoint(&nul) else {
            panic!("NUL accepted")
        };
        assert!(why.contains("argv[1]"), "{why}");
        let mut env = Launch {
            argv: vec!["true".into()],
            ..Launch::default()
        };
        env.env.insert("A=B".into(), "x".into());
        assert!(matches!(body(&env), Err(EngineError::Refused(_))));
    }

    #[test]
    fn body_carries_key_env_resources_metadata() {
        let mut launch = Launch {
            job: "j1".into(),
            run: "r-j1".into(),
            key: "sw-j1-1".into(),
            argv: vec!["python".into(), "-c".into(), "print(1)".into()],
            ..Launch::default()
        };
        launch.env.insert("STEPWATCH_RUN".into(), "r-j1".into());
        launch.resources.cpus = Some(2);
        launch.resources.gpus = Some(1);
        launch.resources.memory_mb = Some(512);
        launch
            .extras
            .insert("entrypoint_resources".into(), json!({"special": 1.5}));
        let b = body(&launch).unwrap();
        assert_eq!(b["submission_id"], "sw-j1-1");
        assert_eq!(b["entrypoint"], "exec 'python' '-c' 'print(1)'");
        assert_eq!(b["runtime_env"]["env_vars"]["STEPWATCH_RUN"], "r-j1");
        assert_eq!(b["runtime_env"]["env_vars"]["PYTHONUNBUFFERED"], "1");
        assert!(b["runtime_env"]["env_vars"]
            .get("CUDA_VISIBLE_DEVICES")
            .is_none());
        assert!(b["runtime_env"].get("working_dir").is_none());
        assert_eq!(b["entrypoint_num_cpus"], 2);
        assert_eq!(b["entrypoint_num_gpus"], 1);
        assert_eq!(b["entrypoint_memory"], 512 * 1024 * 1024);
        assert_eq!(b["entrypoint_resources"]["special"], 1.5);
        assert_eq!(
            b["metadata"],
            json!({"stepwatch_job": "j1", "stepwatch_run": "r-j1"})
        );
    }

    #[test]
    fn extras_outside_the_allow_list_or_of_the_wrong_type_are_refused_by_name() {
        for (key, value, needle) in [
            (
                "runtime_env",
                json!({"pip": ["evil"]}),
                "extras.ray.runtime_env",
            ),
            ("pip", json!(["x"]), "extras.ray.pip"),
            (
                "entrypoint_resources",
                json!({"x": -1}),
                "entrypoint_resources.x",
            ),
            (
                "entrypoint_resources",
                json!({"x": "1"}),
                "entrypoint_resources.x",
            ),
            (
                "entrypoint_resources",
                json!([1]),
                "extras.ray.entrypoint_resources",
            ),
            (
                "entrypoint_label_selector",
                json!({"zone": 1}),
                "entrypoint_label_selector.zone",
            ),
        ] {
            let mut launch = Launch {
                argv: vec!["true".into()],
                ..Launch::default()
            };
            launch.extras.insert(key.into(), value);
            let Err(EngineError::Refused(why)) = body(&launch) else {
                panic!("{key} accepted")
            };
            assert!(why.contains(needle), "{why}");
        }
        let mut launch = Launch {
            argv: vec!["true".into()],
            ..Launch::default()
        };
        launch.resources.nodes = Some(2);
        assert!(matches!(body(&launch), Err(EngineError::Refused(_))));
    }
}
