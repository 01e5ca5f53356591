//! The Kubernetes engine: each job a `batch/v1` Job named by its key, created, read and
//! deleted through the API server's REST API.
//!
//! Settings (`--engine-opt KEY=VALUE`): `api` (the API server's URL; default, inside a
//! cluster, `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`), `namespace`
//! (default: the service account's namespace inside a cluster, else `default`),
//! `token_file` (a bearer token, re-read on every call; default the service account's
//! token when present), `ca_file` (PEM roots for https; default the service account's
//! `ca.crt` when present, else the built-in Mozilla roots) and `manifest` (a JSON
//! `batch/v1` Job template with the placeholders of [`manifest::PLACEHOLDERS`], for Kueue
//! labels, volumes, sidecars …; default [`manifest::default_template`]).
//!
//! Per job, the extras (`extras.kubernetes`) take `image` (required), `service_account`,
//! `node_selector` and `tolerations`; anything else is refused by name.
//!
//! - start: `POST …/jobs`; a 409 AlreadyExists is this job's own Job when its
//!   `stepwatch.dev/job` label and `stepwatch.dev/key` annotation match (an agent died
//!   after creating it), so a job never gets two.
//! - status: the Job's conditions, its pods (`job-name=<name>`) for the pending reason and
//!   the exit code; a Job that is gone while its pods still run counts as running.
//! - stop: `DELETE` the Job with `propagationPolicy: Background` (the pods get their
//!   grace period: SIGTERM first); kill: the same with `gracePeriodSeconds: 0`, then each
//!   pod deleted with `gracePeriodSeconds: 0`, since the garbage collector would give the
//!   pods their full grace period.
//! - output: the newest started pod's log, with timestamps, from where the last read ended
//!   (kept in `<state_dir>/kubernetes/`, so an agent that adopts the job goes on from there).
//!
//! The agent's service account needs, in its namespace: `jobs` (batch) create, get,
//! delete; `pods` list, delete; `pods/log` get. The job's environment, `STEPWATCH_TOKEN`
//! included (a token for its run only, valid while the job is open), is in the Job's spec:
//! whoever may read Jobs in the namespace can read it.

mod api;
pub mod manifest;
mod observe;
#[cfg(test)]
mod tests;

use super::EngineOptions;
use crate::engine::{Engine, EngineError, Observed, OutputLine};
use api::{Api, ApiError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use stepwatch_events::jobs::Launch;

/// Where a pod finds its service account's token, CA and namespace.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The settings this engine takes.
const SETTINGS: &[&str] = &["api", "namespace", "token_file", "ca_file", "manifest"];
/// Most bytes of log read per call.
const LOG_BYTES: &str = "1048576";

/// How far a job's log has been read: the pod, the newest time seen and how many lines
/// carried exactly that time. Kept in the state folder too, so an agent that adopts the
/// job after a restart goes on from there instead of forwarding the log again.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Cursor {
    pod: Option<String>,
    last: Option<(String, u32)>,
    same: usize,
}

/// The Kubernetes engine.
pub struct Kubernetes {
    api: Api,
    namespace: String,
    template: Value,
    logs: Mutex<BTreeMap<String, Cursor>>,
    /// `<state_dir>/kubernetes/`, where the log cursors are kept (none in tests without one).
    state: Option<PathBuf>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(format!("{what}: {e}"))
}

fn is_404(r: &Result<Value, ApiError>) -> bool {
    matches!(r, Err(e) if e.code() == Some(404))
}

impl Kubernetes {
    pub fn new(opts: &EngineOptions) -> anyhow::Result<Kubernetes> {
        let o = &opts.opts;
        if let Some(k) = o.keys().find(|k| !SETTINGS.contains(&k.as_str())) {
            anyhow::bail!(
                "kubernetes engine: unknown --engine-opt {k:?}; it takes {}",
                SETTINGS.join(", ")
            );
        }
        let sa = Path::new(SERVICE_ACCOUNT);
        let present = |f: &str| Some(sa.join(f)).filter(|p| p.exists());
        let api = match o.get("api") {
            Some(a) => a.clone(),
            None => in_cluster_api()?,
        };
        anyhow::ensure!(
            api.starts_with("http://") || api.starts_with("https://"),
            "kubernetes engine: api must be an http:// or https:// URL, got {api:?}"
        );
        let namespace = match o.get("namespace") {
            Some(n) => n.clone(),
            None => present("namespace")
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|| "default".into()),
        };
        anyhow::ensure!(
            manifest::is_dns_label(&namespace),
            "kubernetes engine: namespace {namespace:?} is not a DNS-1123 label"
        );
        let token_file = o
            .get("token_file")
            .map(PathBuf::from)
            .or_else(|| present("token"));
        let ca_file = o
            .get("ca_file")
            .map(PathBuf::from)
            .or_else(|| present("ca.crt"));
        let template = match o.get("manifest") {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("kubernetes engine: manifest {path}: {e}"))?;
                manifest::parse_template(&text)
                    .map_err(|e| anyhow::anyhow!("kubernetes engine: manifest {path}: {e}"))?
            }
            None => manifest::default_template(),
        };
        let ca = ca_file.as_deref().filter(|_| api.starts_with("https://"));
        let state = Some(opts.state_dir.join("kubernetes"))
            .filter(|_| !opts.state_dir.as_os_str().is_empty());
        if let Some(dir) = &state {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("kubernetes engine: state folder {}: {e}", dir.display())
            })?;
        }
        Ok(Kubernetes {
            state,
            api: Api::new(&api, token_file, ca)?,
            namespace,
            template,
            logs: Mutex::new(BTreeMap::new()),
        })
    }

    fn jobs_path(ns: &str) -> String {
        format!("/apis/batch/v1/namespaces/{ns}/jobs")
    }

    fn job_path(ns: &str, name: &str) -> String {
        format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}")
    }

    fn pod_path(ns: &str, pod: &str) -> String {
        format!("/api/v1/namespaces/{ns}/pods/{pod}")
    }

    /// The Job's pods, by the label its controller puts on them.
    fn pods(&self, ns: &str, name: &str) -> Result<Vec<Value>, ApiError> {
        let selector = format!("job-name={name}");
        let list = self.api.get(
            &format!("/api/v1/namespaces/{ns}/pods"),
            &[("labelSelector", selector.as_str())],
        )?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// After a 409: whether the Job of that name is this job's.
    fn adopt(&self, launch: &Launch, name: &str) -> Result<(), EngineError> {
        let ns = &self.namespace;
        let job = self
            .api
            .get(&Self::job_path(ns, name), &[])
            .map_err(|e| unavailable(&format!("reading Job {ns}/{name}"), e))?;
        let meta = &job["metadata"];
        let label = manifest::label_value(&launch.job);
        if meta["labels"][manifest::JOB_LABEL] == label.as_str()
            && meta["annotations"][manifest::KEY_ANNOTATION] == launch.key.as_str()
        {
            tracing::info!(job = %launch.job, "Job {ns}/{name} exists already: adopting it");
            return Ok(());
        }
        Err(EngineError::Refused(format!(
            "a Job named {name} already exists in namespace {ns} and is not this job's \
             (its label {}={}, expected {label})",
            manifest::JOB_LABEL,
            meta["labels"][manifest::JOB_LABEL]
        )))
    }

    /// Deletes each of the Job's pods, with `grace` seconds (None: the pod's own).
    fn delete_pods(&self, ns: &str, name: &str, grace: Option<u64>) -> Result<(), EngineError> {
        let pods = self
            .pods(ns, name)
            .map_err(|e| unavailable("listing the Job's pods", e))?;
        let mut options = json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if let Some(g) = grace {
            options["gracePeriodSeconds"] = json!(g);
        }
        for pod in pods {
            let Some(pod_name) = pod["metadata"]["name"].as_str() else {
                continue;
            };
            if grace.is_none() && !pod["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let r = self.api.delete(&Self::pod_path(ns, pod_name), &options);
            if !is_404(&r) {
                r.map_err(|e| unavailable(&format!("deleting pod {ns}/{pod_name}"), e))?;
            }
        }
        Ok(())
    }

    /// Deletes the Job with these options; whether it was there.
    fn delete_job(&self, ns: &str, name: &str, options: &Value) -> Result<bool, EngineError> {
        let r = self.api.delete(&Self::job_path(ns, name), options);
        if is_404(&r) {
            return Ok(false);
        }
        r.map_err(|e| unavailable(&format!("deleting Job {ns}/{name}"), e))?;
        Ok(true)
    }

    /// New log lines of the job's pod, from `c` on; `c` advances past what is returned.
    /// When a retry started a new pod, the old one's log is finished first.
    fn read_log(&self, ns: &str, name: &str, c: &mut Cursor, max: usize) -> Vec<OutputLine> {
        let newest = self.pods(ns, name).ok().and_then(|p| observe::log_pod(&p));
        match (c.pod.clone(), newest) {
            (None, newest) => c.pod = newest,
            (Some(old), Some(newest)) if old != newest => {
                let rest = self.read_pod_log(ns, &old, c, max);
                if !rest.is_empty() {
                    return rest;
                }
                *c = Cursor {
                    pod: Some(newest),
                    ..Cursor::default()
                };
            }
            _ => {}
        }
        let Some(pod) = c.pod.clone() else {
            return Vec::new();
        };
        self.read_pod_log(ns, &pod, c, max)
    }

    /// New lines of one pod's log.
    fn read_pod_log(&self, ns: &str, pod: &str, c: &mut Cursor, max: usize) -> Vec<OutputLine> {
        let since = c.last.as_ref().map(|(secs, _)| format!("{secs}Z"));
        let mut query = vec![("timestamps", "true"), ("limitBytes", LOG_BYTES)];
        if let Some(s) = &since {
            query.push(("sinceTime", s.as_str()));
        }
        let text = match self
            .api
            .get_text(&format!("{}/log", Self::pod_path(ns, pod)), &query)
        {
            Ok(t) => t,
            Err(e) => {
                if e.code() == Some(404) {
                    // That pod is gone: start over with the next one found.
                    *c = Cursor::default();
                }
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        let mut seen_same = 0;
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            if out.len() >= max {
                break;
            }
            let line = line.trim_end_matches(['\n', '\r']);
            let (ts, rest) = line.split_once(' ').unwrap_or((line, ""));
            let key = observe::time_key(ts);
            match &c.last {
                Some(last) if key < *last => continue,
                Some(last) if key == *last => {
                    if seen_same < c.same {
                        seen_same += 1;
                        continue;
                    }
                    c.same += 1;
                    seen_same += 1;
                }
                _ => {
                    c.last = Some(key);
                    c.same = 1;
                    seen_same = 1;
                }
            }
            out.push(OutputLine {
                stream: "stdout",
                text: rest.to_string(),
            });
        }
        out
    }
}

/// The API server as a pod sees it.
fn in_cluster_api() -> anyhow::Result<String> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .ok()
        .filter(|h| !h.is_empty());
    let Some(host) = host else {
        anyhow::bail!(
            "kubernetes engine: give --engine-opt api=URL (KUBERNETES_SERVICE_HOST is not set: \
             not inside a cluster)"
        );
    };
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!("https://{host}:{port}"))
}

/// An engine id is `<namespace>/<job name>`.
fn split_id(engine_id: &str) -> Result<(&str, &str), EngineError> {
    engine_id
        .split_once('/')
        .filter(|(ns, name)| manifest::is_dns_label(ns) && manifest::is_dns_label(name))
        .ok_or_else(|| {
            EngineError::Refused(format!(
                "{engine_id:?} is not a kubernetes engine id (namespace/name)"
            ))
        })
}

impl Engine for Kubernetes {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn start(&self, launch: &Launch) -> Result<String, EngineError> {
        let extras = manifest::extras(&launch.extras).map_err(EngineError::Refused)?;
        let ns = &self.namespace;
        let name = manifest::job_name(&launch.key);
        let values = manifest::values(launch, &extras, &name, ns);
        let body = manifest::build(&self.template, &values).map_err(EngineError::Refused)?;
        let id = format!("{ns}/{name}");
        match self.api.post(&Self::jobs_path(ns), &body) {
            Ok(_) => Ok(id),
            Err(ApiError::Status { code: 409, .. }) => self.adopt(launch, &name).map(|()| id),
            Err(
                e @ ApiError::Status {
                    code: 400 | 422, ..
                },
            ) => Err(EngineError::Refused(format!(
                "the API server refused Job {ns}/{name}: {e}"
            ))),
            Err(e) => Err(unavailable(&format!("creating Job {ns}/{name}"), e)),
        }
    }

    fn status(&self, engine_id: &str, _launch: &Launch) -> Result<Observed, EngineError> {
        let (ns, name) = split_id(engine_id)?;
        let job = self.api.get(&Self::job_path(ns, name), &[]);
        let gone = is_404(&job);
        let job = match job {
            Ok(j) => Some(j),
            Err(_) if gone => None,
            Err(e) => return Err(unavailable(&format!("reading Job {engine_id}"), e)),
        };
        let pods = self
            .pods(ns, name)
            .map_err(|e| unavailable("listing the Job's pods", e))?;
        Ok(match job {
            Some(job) => observe::job(&job, &pods),
            // Deleted (by a stop) while its pods wind down: not over yet.
            None if observe::any_alive(&pods) => Observed::Running,
            // Deleted without its pods (orphaned): they say how it ended.
            None => observe::orphans(&pods),
        })
    }

    fn stop(&self, engine_id: &str) -> Result<(), EngineError> {
        let (ns, name) = split_id(engine_id)?;
        let options = json!({"kind": "DeleteOptions", "apiVersion": "v1",
                             "propagationPolicy": "Background"});
        if !self.delete_job(ns, name, &options)? {
            // The Job is gone already: make sure its pods are asked to end too.
            self.delete_pods(ns, name, None)?;
        }
        Ok(())
    }

    fn kill(&self, engine_id: &str) -> Result<(), EngineError> {
        let (ns, name) = split_id(engine_id)?;
        let options = json!({"kind": "DeleteOptions", "apiVersion": "v1",
                             "propagationPolicy": "Background", "gracePeriodSeconds": 0});
        self.delete_job(ns, name, &options)?;
        // The garbage collector gives the pods their own grace period: end them now.
        self.delete_pods(ns, name, Some(0))
    }

    fn output(&self, engine_id: &str, max: usize) -> Vec<OutputLine> {
        let Ok((ns, name)) = split_id(engine_id) else {
            return Vec::new();
        };
        let lock = || self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let file = self
            .state
            .as_ref()
            .map(|d| d.join(format!("{ns}.{name}.log-cursor")));
        let saved = || {
            let text = std::fs::read(file.as_ref()?).ok()?;
            serde_json::from_slice::<Cursor>(&text).ok()
        };
        let known = lock().get(engine_id).cloned();
        let mut cursor = known.or_else(saved).unwrap_or_default();
        let lines = self.read_log(ns, name, &mut cursor, max);
        if let (Some(file), false) = (&file, lines.is_empty()) {
            let tmp = file.with_extension("tmp");
            let text = serde_json::to_vec(&cursor).unwrap_or_default();
            if std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, file))
                .is_err()
            {
                tracing::debug!("cannot save the log cursor {}", file.display());
            }
        }
        lock().insert(engine_id.to_string(), cursor);
        lines
    }
}
