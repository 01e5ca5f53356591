//! What a user submits: [`JobSpec`] (name, queue, an argv entry point or a template with
//! parameters, resources, per-engine extras, priority, retries) and
//! [`JobSpec::validate`], which names the first field that is wrong.

use crate::event::is_valid_run_id;
pub use crate::field_error::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Longest job name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// Most argv items.
pub const MAX_ARGS: usize = 1024;
/// Longest argv item, env value, or working directory, in bytes.
pub const MAX_ARG_BYTES: usize = 32 * 1024;
/// Most environment variables.
pub const MAX_ENV: usize = 256;
/// Most template parameters.
pub const MAX_PARAMS: usize = 256;
/// Largest template parameter value, as JSON, in bytes.
pub const MAX_PARAM_BYTES: usize = 64 * 1024;
/// Largest per-engine extras object, as JSON, in bytes.
pub const MAX_EXTRA_BYTES: usize = 64 * 1024;
/// Highest `max_retries`.
pub const MAX_RETRIES: u32 = 10;
/// Priorities run from `-MAX_PRIORITY` to `MAX_PRIORITY`.
pub const MAX_PRIORITY: i32 = 1_000_000;
/// Environment variables the agent sets itself (`STEPWATCH_URL`, `STEPWATCH_RUN`, the token,
/// `STEPWATCH_RESUME_FROM`); a job may not set any name with this prefix, in any case.
pub const RESERVED_ENV_PREFIX: &str = "STEPWATCH_";

/// The engines an agent can hand a job to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Local,
    Slurm,
    Ray,
    Kubernetes,
}

/// The engines' wire names, the keys `extras` may use.
pub const ENGINES: [&str; 4] = ["local", "slurm", "ray", "kubernetes"];

impl Engine {
    /// The wire name (`local`, `slurm`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Local => "local",
            Engine::Slurm => "slurm",
            Engine::Ray => "ray",
            Engine::Kubernetes => "kubernetes",
        }
    }

    /// The engine a wire name names.
    pub fn parse(name: &str) -> Option<Engine> {
        match name {
            "local" => Some(Engine::Local),
            "slurm" => Some(Engine::Slurm),
            "ray" => Some(Engine::Ray),
            "kubernetes" => Some(Engine::Kubernetes),
            _ => None,
        }
    }
}

/// What a job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Entry {
    /// A free-form command: an argv array, never a shell string.
    Argv {
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
    /// A template the admin defined, and values for its parameters.
    Template {
        template: String,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        params: Map<String, Value>,
    },
}

/// What a job asks for; every field optional (the queue's defaults apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_s: Option<u64>,
}

/// A job as a user submits it. Parse untrusted input with [`JobSpec::from_value`], which
/// names the field at fault and validates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    pub queue: String,
    pub entry: Entry,
    #[serde(default)]
    pub resources: Resources,
    /// Per-engine settings, keyed by engine name (see [`ENGINES`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extras: BTreeMap<String, Map<String, Value>>,
    /// Higher goes first.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub max_retries: u32,
    /// The run this job re-runs (with changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_of: Option<String>,
}

/// Inclusive bounds of each resource.
const GPUS: (u64, u64) = (0, 64);
const CPUS: (u64, u64) = (1, 4096);
const MEMORY_MB: (u64, u64) = (1, 64 * 1024 * 1024);
const NODES: (u64, u64) = (1, 1024);
const TIME_LIMIT_S: (u64, u64) = (1, 366 * 24 * 3600);

impl JobSpec {
    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_name(&self.name)?;
        if !is_valid_run_id(&self.queue) {
            return Err(FieldError::new(
                "queue",
                "queue names are 1-128 characters of A-Z a-z 0-9 _ . -",
            ));
        }
        match &self.entry {
            Entry::Argv { argv, cwd, env } => {
                check_argv(argv)?;
                if let Some(cwd) = cwd {
                    check_text("entry.cwd", cwd, MAX_ARG_BYTES)?;
                }
                check_env(env)?;
            }
            Entry::Template { template, params } => check_template(template, params)?,
        }
        self.resources.validate()?;
        check_extras(&self.extras)?;
        if self.priority.unsigned_abs() > MAX_PRIORITY.unsigned_abs() {
            return Err(FieldError::new(
                "priority",
                format!("must be between -{MAX_PRIORITY} and {MAX_PRIORITY}"),
            ));
        }
        if self.max_retries > MAX_RETRIES {
            return Err(FieldError::new(
                "max_retries",
                format!("at most {MAX_RETRIES}"),
            ));
        }
        if let Some(run) = &self.clone_of {
            if !is_valid_run_id(run) {
                return Err(FieldError::new(
                    "clone_of",
                    "not a run id (1-128 characters of A-Z a-z 0-9 _ . -)",
                ));
            }
        }
        Ok(())
    }

    /// The template this job fills, if it is not free-form.
    pub fn template(&self) -> Option<&str> {
        match &self.entry {
            Entry::Template { template, .. } => Some(template),
            Entry::Argv { .. } => None,
        }
    }
}

impl Resources {
    /// Each resource within its bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        let rows = [
            ("gpus", self.gpus.map(u64::from), GPUS),
            ("cpus", self.cpus.map(u64::from), CPUS),
            ("memory_mb", self.memory_mb, MEMORY_MB),
            ("nodes", self.nodes.map(u64::from), NODES),
            ("time_limit_s", self.time_limit_s, TIME_LIMIT_S),
        ];
        for (name, value, (lo, hi)) in rows {
            if let Some(v) = value {
                if v < lo || v > hi {
                    return Err(FieldError::new(
                        format!("resources.{name}"),
                        format!("{v} is out of range {lo}..={hi}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), FieldError> {
    if name.trim().is_empty() {
        return Err(FieldError::new("name", "must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(FieldError::new(
            "name",
            format!("longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new("name", "contains a control character"));
    }
    Ok(())
}

/// Text handed to the operating system: bounded, and no NUL (which would cut it short).
fn check_text(field: &str, text: &str, max: usize) -> Result<(), FieldError> {
    if text.len() > max {
        return Err(FieldError::new(field, format!("longer than {max} bytes")));
    }
    if text.contains('\0') {
        return Err(FieldError::new(field, "contains a NUL byte"));
    }
    Ok(())
}

fn check_argv(argv: &[String]) -> Result<(), FieldError> {
    if argv.is_empty() {
        return Err(FieldError::new(
            "entry.argv",
            "must name a program: argv is empty",
        ));
    }
    if argv.len() > MAX_ARGS {
        return Err(FieldError::new(
            "entry.argv",
            format!("more than {MAX_ARGS} items"),
        ));
    }
    if argv[0].is_empty() {
        return Err(FieldError::new(
            "entry.argv[0]",
            "the program must not be empty",
        ));
    }
    for (i, arg) in argv.iter().enumerate() {
        check_text(&format!("entry.argv[{i}]"), arg, MAX_ARG_BYTES)?;
    }
    Ok(())
}

/// `[A-Za-z_][A-Za-z0-9_]*`, the names a shell and `execve` agree on.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_env(env: &BTreeMap<String, String>) -> Result<(), FieldError> {
    if env.len() > MAX_ENV {
        return Err(FieldError::new(
            "entry.env",
            format!("more than {MAX_ENV} variables"),
        ));
    }
    for (name, value) in env {
        let field = format!("entry.env.{name}");
        if name.len() > 256 || !is_identifier(name) {
            return Err(FieldError::new(
                field,
                "variable names match [A-Za-z_][A-Za-z0-9_]* (at most 256 bytes)",
            ));
        }
        if name.to_ascii_uppercase().starts_with(RESERVED_ENV_PREFIX) {
            return Err(FieldError::new(
                field,
                "STEPWATCH_* variables are set by the agent and cannot be given",
            ));
        }
        check_text(&field, value, MAX_ARG_BYTES)?;
    }
    Ok(())
}

fn check_template(template: &str, params: &Map<String, Value>) -> Result<(), FieldError> {
    if !is_valid_run_id(template) {
        return Err(FieldError::new(
            "entry.template",
            "template names are 1-128 characters of A-Z a-z 0-9 _ . -",
        ));
    }
    if params.len() > MAX_PARAMS {
        return Err(FieldError::new(
            "entry.params",
            format!("more than {MAX_PARAMS} parameters"),
        ));
    }
    for (name, value) in params {
        let field = format!("entry.params.{name}");
        if name.len() > 128 || !is_identifier(name) {
            return Err(FieldError::new(
                field,
                "parameter names match [A-Za-z_][A-Za-z0-9_]* (at most 128 bytes)",
            ));
        }
        if value.to_string().len() > MAX_PARAM_BYTES {
            return Err(FieldError::new(
                field,
                format!("larger than {MAX_PARAM_BYTES} bytes of JSON"),
            ));
        }
    }
    Ok(())
}

fn check_extras(extras: &BTreeMap<String, Map<String, Value>>) -> Result<(), FieldError> {
    for (engine, value) in extras {
        let field = format!("extras.{engine}");
        if Engine::parse(engine).is_none() {
            return Err(FieldError::new(
                field,
                format!("unknown engine: extras are keyed by {}", ENGINES.join(", ")),
            ));
        }
        if Value::Object(value.clone()).to_string().len() > MAX_EXTRA_BYTES {
            return Err(FieldError::new(
                field,
                format!("larger than {MAX_EXTRA_BYTES} bytes of JSON"),
            ));
        }
    }
    Ok(())
}
