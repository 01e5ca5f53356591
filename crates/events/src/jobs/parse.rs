//! Reading a submitted job from untrusted JSON: [`JobSpec::from_value`] checks the shape of
//! every field first, so an error names its JSON path (`entry.argv`, `resources.gpus`,
//! `entry.foo`) where serde alone would only say "did not match any variant".

use super::spec::{FieldError, JobSpec, Resources};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const REQUIRED: [&str; 3] = ["name", "queue", "entry"];

impl JobSpec {
    /// Parses and validates a job from a request body's JSON.
    pub fn from_value(v: Value) -> Result<JobSpec, FieldError> {
        let Value::Object(fields) = &v else {
            return Err(FieldError::new("", "a job must be a JSON object"));
        };
        for name in REQUIRED {
            if !fields.contains_key(name) {
                return Err(FieldError::new(name, "missing"));
            }
        }
        for (key, value) in fields {
            check_field(key, value)?;
        }
        let spec: JobSpec =
            serde_json::from_value(v).map_err(|e| FieldError::new("", e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// [`JobSpec::from_value`] for JSON text.
    pub fn from_json(text: &str) -> Result<JobSpec, FieldError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| FieldError::new("", format!("not JSON: {e}")))?;
        JobSpec::from_value(v)
    }
}

/// That `value` reads as `T`, else an error naming `field`.
fn check<T: DeserializeOwned>(field: &str, value: &Value) -> Result<(), FieldError> {
    serde_json::from_value::<T>(value.clone())
        .map(|_| ())
        .map_err(|e| FieldError::new(field, e.to_string()))
}

fn check_field(key: &str, value: &Value) -> Result<(), FieldError> {
    match key {
        "name" | "queue" => check::<String>(key, value),
        "entry" => check_entry(value),
        "resources" => check_resources(value),
        "extras" => check_extras(value),
        "priority" => check::<i32>(key, value),
        "max_retries" => check::<u32>(key, value),
        "clone_of" => check::<Option<String>>(key, value),
        _ => Err(unknown(key)),
    }
}

fn unknown(field: &str) -> FieldError {
    FieldError::new(field, "unknown field")
}

fn object<'a>(
    field: &str,
    value: &'a Value,
    what: &str,
) -> Result<&'a Map<String, Value>, FieldError> {
    value
        .as_object()
        .ok_or_else(|| FieldError::new(field, format!("must be {what}")))
}

fn check_entry(value: &Value) -> Result<(), FieldError> {
    if value.is_string() {
        return Err(FieldError::new(
            "entry",
            "a shell string is never accepted: give {\"argv\": [program, args…]} or {\"template\": name, \"params\": {…}}",
        ));
    }
    let entry = object(
        "entry",
        value,
        "an object: {\"argv\": […]} or {\"template\": …}",
    )?;
    match (entry.contains_key("argv"), entry.contains_key("template")) {
        (true, true) => Err(FieldError::new(
            "entry",
            "give either argv or template, not both",
        )),
        (false, false) => Err(FieldError::new("entry", "needs argv or template")),
        (true, false) => check_argv_entry(entry),
        (false, true) => check_template_entry(entry),
    }
}

fn check_argv_entry(entry: &Map<String, Value>) -> Result<(), FieldError> {
    for (key, value) in entry {
        match key.as_str() {
            "argv" => check_argv(value)?,
            "cwd" => check::<Option<String>>("entry.cwd", value)?,
            "env" => {
                let env = object("entry.env", value, "an object of NAME: \"value\"")?;
                for (name, v) in env {
                    if !v.is_string() {
                        return Err(FieldError::new(
                            format!("entry.env.{name}"),
                            "values are strings",
                        ));
                    }
                }
            }
            _ => return Err(unknown(&format!("entry.{key}"))),
        }
    }
    Ok(())
}

fn check_argv(value: &Value) -> Result<(), FieldError> {
    let Some(items) = value.as_array() else {
        return Err(FieldError::new(
            "entry.argv",
            "must be an array of strings (program, then each argument); a shell string is never accepted",
        ));
    };
    for (i, item) in items.iter().enumerate() {
        if !item.is_string() {
            return Err(FieldError::new(
                format!("entry.argv[{i}]"),
                "arguments are strings",
            ));
        }
    }
    Ok(())
}

fn check_template_entry(entry: &Map<String, Value>) -> Result<(), FieldError> {
    for (key, value) in entry {
        match key.as_str() {
            "template" => check::<String>("entry.template", value)?,
            "params" => {
                object("entry.params", value, "an object of name: value")?;
            }
            _ => return Err(unknown(&format!("entry.{key}"))),
        }
    }
    Ok(())
}

fn check_resources(value: &Value) -> Result<(), FieldError> {
    let fields = object("resources", value, "an object")?;
    for (key, v) in fields {
        let field = format!("resources.{key}");
        match key.as_str() {
            "gpus" | "cpus" | "nodes" => check::<Option<u32>>(&field, v)?,
            "memory_mb" | "time_limit_s" => check::<Option<u64>>(&field, v)?,
            _ => return Err(unknown(&field)),
        }
    }
    check::<Resources>("resources", value)
}

fn check_extras(value: &Value) -> Result<(), FieldError> {
    let fields = object("extras", value, "an object keyed by engine name")?;
    for (key, v) in fields {
        object(&format!("extras.{key}"), v, "an object")?;
    }
    check::<BTreeMap<String, Map<String, Value>>>("extras", value)
}
