//! The Job manifest of one launch: the extras' allow-list, DNS-1123 names and label
//! values, and the template (the built-in `batch/v1` Job or the queue's own JSON file)
//! with its placeholders substituted as JSON values, then checked the way the API server
//! would check it, before any request.
//!
//! A placeholder is a JSON string that is exactly `"{{name}}"`; it is replaced by a JSON
//! value (a string, a number, an array, an object), never spliced into text. A
//! placeholder whose value is absent (`null`) removes its key from the enclosing object.
//! The names are [`PLACEHOLDERS`]; any other `{{` in a template string is refused when
//! the template is loaded.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use stepwatch_events::jobs::Launch;

/// The placeholders a manifest template may use, with what each becomes.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    ("name", "the Job's name (the job key made DNS-1123 safe)"),
    ("namespace", "the engine's namespace"),
    ("key", "the job key, as the relay gave it"),
    ("job", "the Stepwatch job id"),
    ("run", "the Stepwatch run name"),
    ("image", "extras `image`"),
    ("command", "the job's argv, an array of strings"),
    ("env", "the job's environment, a list of {name, value}"),
    ("working_dir", "the job's cwd, or absent"),
    ("resources", "{limits: {nvidia.com/gpu, cpu, memory}}"),
    (
        "labels",
        "the stepwatch.dev/job and stepwatch.dev/run labels",
    ),
    ("annotations", "the stepwatch.dev/key annotation"),
    ("service_account", "extras `service_account`, or absent"),
    ("node_selector", "extras `node_selector`, or absent"),
    ("tolerations", "extras `tolerations`, or absent"),
    ("active_deadline_seconds", "the job's time limit, or absent"),
];

/// The label naming the Stepwatch job on the Job and its pods.
pub const JOB_LABEL: &str = "stepwatch.dev/job";
/// The label naming the Stepwatch run.
pub const RUN_LABEL: &str = "stepwatch.dev/run";
/// The annotation holding the job key verbatim.
pub const KEY_ANNOTATION: &str = "stepwatch.dev/key";

/// The built-in manifest: one container, no retries (Stepwatch retries), never restarted.
pub fn default_template() -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "{{name}}",
            "namespace": "{{namespace}}",
            "labels": "{{labels}}",
            "annotations": "{{annotations}}"
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": "{{active_deadline_seconds}}",
            "template": {
                "metadata": { "labels": "{{labels}}" },
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": "{{service_account}}",
                    "nodeSelector": "{{node_selector}}",
                    "tolerations": "{{tolerations}}",
                    "containers": [{
                        "name": "main",
                        "image": "{{image}}",
                        "command": "{{command}}",
                        "env": "{{env}}",
                        "workingDir": "{{working_dir}}",
                        "resources": "{{resources}}"
                    }]
                }
            }
        }
    })
}

/// A queue's own template, from its JSON text: a `batch/v1` Job using known placeholders.
pub fn parse_template(text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("apiVersion").and_then(Value::as_str) != Some("batch/v1")
        || v.get("kind").and_then(Value::as_str) != Some("Job")
    {
        return Err("the manifest must be a batch/v1 Job (apiVersion batch/v1, kind Job)".into());
    }
    check_placeholders(&v, "")?;
    Ok(v)
}

fn check_placeholders(v: &Value, at: &str) -> Result<(), String> {
    match v {
        Value::String(s) if s.contains("{{") || s.contains("}}") => match placeholder(s) {
            Some(name) if PLACEHOLDERS.iter().any(|(n, _)| *n == name) => Ok(()),
            Some(name) => Err(format!(
                "{at}: unknown placeholder {{{{{name}}}}}; known: {}",
                PLACEHOLDERS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => Err(format!(
                "{at}: a placeholder must be the whole string (\"{{{{name}}}}\"), got {s:?}"
            )),
        },
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_placeholders(x, &format!("{at}[{i}]"))),
        Value::Object(o) => o
            .iter()
            .try_for_each(|(k, x)| check_placeholders(x, &join(at, k))),
        _ => Ok(()),
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// `{{name}}` → `name`.
fn placeholder(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    (!inner.is_empty() && inner.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .then_some(inner)
}

/// The job's settings from its extras: a typed allow-list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extras {
    pub image: String,
    pub service_account: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Value>,
}

/// The extras keys the engine takes.
pub const EXTRAS: &[&str] = &["image", "service_account", "node_selector", "tolerations"];

const TOLERATION_KEYS: &[&str] = &["key", "operator", "value", "effect", "tolerationSeconds"];

/// Reads the launch's extras: either this engine's object (`{image, …}`) or an object
/// keyed by engine name (`{kubernetes: {image, …}}`). Unknown keys are refused by name.
pub fn extras(given: &Map<String, Value>) -> Result<Extras, String> {
    let ours = match given.get("kubernetes") {
        Some(Value::Object(o)) => o,
        Some(_) => return Err("extras.kubernetes must be an object".into()),
        None => given,
    };
    let mut out = Extras::default();
    for (k, v) in ours {
        let field = format!("extras.kubernetes.{k}");
        match k.as_str() {
            "image" => out.image = image(v, &field)?,
            "service_account" => {
                let s = v.as_str().ok_or(format!("{field} must be a string"))?;
                if !is_dns_subdomain(s) {
                    return Err(format!("{field}: {s:?} is not a DNS-1123 name"));
                }
                out.service_account = Some(s.to_string());
            }
            "node_selector" => {
                let o = v
                    .as_object()
                    .ok_or(format!("{field} must be an object of strings"))?;
                for (nk, nv) in o {
                    let s = nv
                        .as_str()
                        .ok_or(format!("{field}.{nk} must be a string"))?;
                    out.node_selector.insert(nk.clone(), s.to_string());
                }
            }
            "tolerations" => out.tolerations = tolerations(v, &field)?,
            other => {
                return Err(format!(
                    "{field}: unknown setting {other:?}; the kubernetes engine takes {}",
                    EXTRAS.join(", ")
                ))
            }
        }
    }
    if out.image.is_empty() {
        return Err("extras.kubernetes.image is required (the container image to run)".into());
    }
    Ok(out)
}

fn image(v: &Value, field: &str) -> Result<String, String> {
    let s = v.as_str().ok_or(format!("{field} must be a string"))?;
    if s.is_empty() || s.len() > 512 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{field}: {s:?} is not an image reference (no spaces, 1-512 chars)"
        ));
    }
    Ok(s.to_string())
}

fn tolerations(v: &Value, field: &str) -> Result<Vec<Value>, String> {
    let a = v
        .as_array()
        .ok_or(format!("{field} must be a list of objects"))?;
    a.iter()
        .enumerate()
        .map(|(i, t)| {
            let o = t
                .as_object()
                .ok_or(format!("{field}[{i}] must be an object"))?;
            for (k, x) in o {
                let ok = match k.as_str() {
                    "tolerationSeconds" => x.is_i64(),
                    k if TOLERATION_KEYS.contains(&k) => x.is_string(),
                    _ => {
                        return Err(format!(
                            "{field}[{i}]: unknown key {k:?}; a toleration has {}",
                            TOLERATION_KEYS.join(", ")
                        ))
                    }
                };
                if !ok {
                    return Err(format!("{field}[{i}].{k} has the wrong type"));
                }
            }
            Ok(t.clone())
        })
        .collect()
}

/// A DNS-1123 label: 1-63 of a-z 0-9 -, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 chars.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// FNV-1a, 64 bits: a short stable suffix that keeps sanitized names distinct.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `s` cut to `keep` of the allowed characters (others become `-`), trimmed to
/// alphanumeric ends, with `-<hash>` appended when anything had to change.
fn sanitize(s: &str, allowed: impl Fn(char) -> bool, lower: bool) -> String {
    let mapped: String = s
        .chars()
        .map(|c| if lower { c.to_ascii_lowercase() } else { c })
        .map(|c| if allowed(c) { c } else { '-' })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed == s && !s.is_empty() && s.len() <= 63 {
        return s.to_string();
    }
    let base: String = trimmed.chars().take(54).collect();
    let base = base.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let hash = format!("{:08x}", fnv(s) >> 32);
    if base.is_empty() {
        format!("sw-{hash}")
    } else {
        format!("{base}-{hash}")
    }
}

/// The Job's name for a job key: the key itself when it is a DNS-1123 label, else the
/// key lowercased, other characters as `-`, cut to fit, and a hash of the key appended.
pub fn job_name(key: &str) -> String {
    sanitize(
        key,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
        true,
    )
}

/// A label value for any text: 1-63 of A-Z a-z 0-9 - _ ., alphanumeric ends.
pub fn label_value(s: &str) -> String {
    sanitize(
        s,
        |c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.',
        false,
    )
}

/// What one launch puts into the template.
pub fn values(launch: &Launch, ex: &Extras, name: &str, namespace: &str) -> Map<String, Value> {
    let mut env: Vec<Value> = launch
        .env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    if !launch.env.contains_key("PYTHONUNBUFFERED") {
        env.push(json!({"name": "PYTHONUNBUFFERED", "value": "1"}));
    }
    let r = &launch.resources;
    let mut limits = Map::new();
    if let Some(g) = r.gpus.filter(|g| *g > 0) {
        limits.insert("nvidia.com/gpu".into(), json!(g.to_string()));
    }
    if let Some(c) = r.cpus {
        limits.insert("cpu".into(), json!(c.to_string()));
    }
    if let Some(m) = r.memory_mb {
        limits.insert("memory".into(), json!(format!("{m}Mi")));
    }
    let labels = json!({
        JOB_LABEL: label_value(&launch.job),
        RUN_LABEL: label_value(&launch.run),
    });
    let opt = |v: Option<Value>| v.unwrap_or(Value::Null);
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert("namespace".into(), json!(namespace));
    m.insert("key".into(), json!(launch.key));
    m.insert("job".into(), json!(launch.job));
    m.insert("run".into(), json!(launch.run));
    m.insert("image".into(), json!(ex.image));
    m.insert("command".into(), json!(launch.argv));
    m.insert("env".into(), Value::Array(env));
    m.insert(
        "working_dir".into(),
        opt(launch.cwd.clone().map(Value::from)),
    );
    m.insert("resources".into(), json!({ "limits": limits }));
    m.insert("labels".into(), labels);
    m.insert("annotations".into(), json!({ KEY_ANNOTATION: launch.key }));
    m.insert(
        "service_account".into(),
        opt(ex.service_account.clone().map(Value::from)),
    );
    m.insert(
        "node_selector".into(),
        opt((!ex.node_selector.is_empty()).then(|| json!(ex.node_selector))),
    );
    m.insert(
        "tolerations".into(),
        opt((!ex.tolerations.is_empty()).then(|| json!(ex.tolerations))),
    );
    m.insert(
        "active_deadline_seconds".into(),
        opt(r.time_limit_s.map(Value::from)),
    );
    m
}

/// The template with every placeholder replaced by its value (absent ones drop their key).
pub fn substitute(template: &Value, values: &Map<String, Value>) -> Value {
    match template {
        Value::String(s) => match placeholder(s) {
            Some(name) => values.get(name).cloned().unwrap_or(Value::Null),
            None => template.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, values)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), substitute(x, values)))
                .filter(|(_, x)| !x.is_null())
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The manifest for a launch: the template filled in, with the name, namespace, labels and
/// key annotation the engine relies on set whatever the template says.
pub fn build(template: &Value, values: &Map<String, Value>) -> Result<Value, String> {
    let mut m = substitute(template, values);
    let labels = values.get("labels").cloned().unwrap_or_else(|| json!({}));
    let meta = object_at(&mut m, &["metadata"])?;
    meta.insert("name".into(), values["name"].clone());
    meta.insert("namespace".into(), values["namespace"].clone());
    merge(meta, "labels", &labels)?;
    merge(meta, "annotations", &values["annotations"])?;
    let pod_meta = object_at(&mut m, &["spec", "template", "metadata"])?;
    merge(pod_meta, "labels", &labels)?;
    check(&m)?;
    Ok(m)
}

fn object_at<'a>(v: &'a mut Value, path: &[&str]) -> Result<&'a mut Map<String, Value>, String> {
    let mut at = v;
    for (i, key) in path.iter().enumerate() {
        let here = path[..i].join(".");
        let o = at
            .as_object_mut()
            .ok_or(format!("manifest: {here} must be an object"))?;
        at = o.entry(key.to_string()).or_insert_with(|| json!({}));
    }
    at.as_object_mut()
        .ok_or(format!("manifest: {} must be an object", path.join(".")))
}

fn merge(meta: &mut Map<String, Value>, key: &str, add: &Value) -> Result<(), String> {
    let o = meta
        .entry(key.to_string())
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or(format!("manifest: metadata.{key} must be an object"))?;
    if let Some(add) = add.as_object() {
        for (k, v) in add {
            o.insert(k.clone(), v.clone());
        }
    }
    Ok(())
}

/// What the API server would reject in a Job, said before asking it.
pub fn check(m: &Value) -> Result<(), String> {
    let name = m["metadata"]["name"].as_str().unwrap_or_default();
    if !is_dns_label(name) {
        return Err(format!(
            "metadata.name: {name:?} is not a DNS-1123 label (1-63 of a-z 0-9 -)"
        ));
    }
    let spec = &m["spec"]["template"]["spec"];
    match spec["restartPolicy"].as_str() {
        Some("Never" | "OnFailure") => {}
        other => {
            return Err(format!(
            "spec.template.spec.restartPolicy: a Job's pods need Never or OnFailure, got {other:?}"
        ))
        }
    }
    let containers = spec["containers"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or("spec.template.spec.containers: a Job needs at least one container")?;
    for (i, c) in containers.iter().enumerate() {
        let at = format!("spec.template.spec.containers[{i}]");
        if !c["name"].as_str().is_some_and(is_dns_label) {
            return Err(format!("{at}.name: must be a DNS-1123 label"));
        }
        if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
            return Err(format!("{at}.image: required (the container image)"));
        }
        for list in ["command", "args"] {
            let v = &c[list];
            if !v.is_null() && !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                return Err(format!("{at}.{list}: must be a list of strings"));
            }
        }
        if c["command"].as_array().is_some_and(Vec::is_empty) && c["args"].is_null() {
            return Err(format!("{at}.command: the job's argv is empty"));
        }
        if let Some(env) = c["env"].as_array() {
            for (j, e) in env.iter().enumerate() {
                if e["name"].as_str().is_none_or(str::is_empty) {
                    return Err(format!("{at}.env[{j}].name: required"));
                }
                if !e["value"].is_null() && !e["value"].is_string() {
                    return Err(format!("{at}.env[{j}].value: must be a string"));
                }
            }
        } else if !c["env"].is_null() {
            return Err(format!("{at}.env: must be a list of {{name, value}}"));
        }
    }
    Ok(())
}
