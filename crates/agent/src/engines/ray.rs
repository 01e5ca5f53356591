//! The Ray engine: each job a Ray job submitted through the Jobs REST API of the cluster's
//! dashboard (`--engine-opt address=http://HOST:8265`, else `RAY_ADDRESS`, else
//! `http://127.0.0.1:8265`), under `submission_id` = the launch's key.
//!
//! - start: `POST /api/jobs/`. Ray refuses a second job with the same `submission_id`, so a
//!   job is never started twice: on that refusal the existing job is read back (and must
//!   carry this Stepwatch job in its metadata) and its id returned. The entrypoint is a
//!   shell line built only from the single-quoted argv (`submit.rs`); the cwd is a `cd`
//!   in it (Ray's `working_dir` would upload a folder), the env `runtime_env.env_vars`
//!   (no `CUDA_VISIBLE_DEVICES` of ours: Ray assigns GPUs). Resources become
//!   `entrypoint_num_cpus` / `_num_gpus` / `_memory` (bytes); `time_limit_s` a coreutils
//!   `timeout` in the entrypoint (exit 124); `nodes > 1` is refused. Extras: only the
//!   typed [`ALLOWED_EXTRAS`]; any other key is refused by name (no `runtime_env.pip`:
//!   it would install from the network).
//! - status: `GET /api/jobs/{id}`: PENDING, RUNNING, SUCCEEDED, FAILED (with
//!   `driver_exit_code`), STOPPED; 404 is gone.
//! - stop: `POST /api/jobs/{id}/stop`. Ray's supervisor sends SIGTERM to the entrypoint and
//!   its children and SIGKILLs them after `RAY_JOB_STOP_WAIT_TIME_S` (set on the cluster,
//!   3 s by default). Ray 2.x has no separate kill: `DELETE /api/jobs/{id}` only removes
//!   a job that already ended, so kill is the same stop again, which Ray ends by SIGKILL.
//!   This engine never deletes: a deleted record frees the `submission_id`, and a later
//!   start under the same key would run the job a second time.
//! - output: `GET /api/jobs/{id}/logs` (the whole text each time, read up to 64 MiB; stdout
//!   and stderr are one stream at Ray), from after Ray's own lines (runtime-env setup, the
//!   `Running entrypoint` line); the offset already handed over is kept per job, in memory
//!   and in `<state_dir>/<key>.ray-offset`, so each line goes out once, across agent
//!   restarts too. A job adopted from an agent that died (not started here, no offset
//!   file) is handed over from the end of its log, as the local engine does.
//!
//! Every call has a timeout; every error names the call and Ray's answer. The job's env
//! (with its run-scoped token) is visible to whoever may read the Ray cluster's job list.

mod submit;

pub use submit::{shell_quote, ALLOWED_EXTRAS};

use super::EngineOptions;
use crate::engine::{Engine, EngineError, Observed, OutputLine};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use stepwatch_events::jobs::Launch;

/// The dashboard address when neither the option nor `RAY_ADDRESS` names one.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8265";
/// The line Ray writes at the top of every job's log, before the job's own output.
const RAY_PREAMBLE: &str = "Running entrypoint for job ";
/// The most of one answer read (a job's whole log comes in one): past it the log's JSON is
/// cut and no more output is forwarded (the job itself runs on).
const ANSWER_CAP: u64 = 64 << 20;
/// `--engine-opt` keys this engine takes.
const OPTS: [&str; 2] = ["address", "timeout_s"];

/// The Ray engine.
pub struct Ray {
    address: String,
    http: ureq::Agent,
    state_dir: PathBuf,
    /// Bytes of each job's log already handed over.
    read: Mutex<BTreeMap<String, usize>>,
    /// Jobs seen ended: their last line goes out even without a newline.
    ended: Mutex<BTreeSet<String>>,
    /// Jobs this engine started (or found under their key at start): their output is
    /// handed over from the top. Others were adopted from an agent that died: from the end.
    started: Mutex<BTreeSet<String>>,
    /// Jobs whose log could not be read, said once each.
    warned: Mutex<BTreeSet<String>>,
}

/// What went wrong with one call to Ray.
fn unavailable(call: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(format!("ray {call}: {e}"))
}

/// A Ray answer's status and text (Ray's refusals are plain text or a traceback: the last
/// line says it).
fn answer_text(resp: ureq::Response) -> (u16, String) {
    use std::io::Read;
    let code = resp.status();
    let mut bytes = Vec::new();
    let _ = resp.into_reader().take(ANSWER_CAP).read_to_end(&mut bytes);
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

fn last_line(text: &str) -> &str {
    text.trim().lines().last().unwrap_or("").trim()
}

/// Percent-encodes a path segment (a submission id).
fn segment(id: &str) -> String {
    let mut out = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The dashboard address from the options, else `RAY_ADDRESS`, else the default.
fn address(opts: &EngineOptions, env: Option<String>) -> anyhow::Result<String> {
    let (addr, from) = match (opts.opts.get("address"), env) {
        (Some(a), _) => (a.clone(), "--engine-opt address"),
        (None, Some(a)) if !a.is_empty() => (a, "RAY_ADDRESS"),
        _ => (DEFAULT_ADDRESS.to_string(), "the default"),
    };
    if !(addr.starts_with("http://") || addr.starts_with("https://")) {
        anyhow::bail!(
            "ray address {addr:?} (from {from}) is not the dashboard's http(s) address: \
             give --engine-opt address=http://HOST:8265"
        );
    }
    Ok(addr.trim_end_matches('/').to_string())
}

impl Ray {
    pub fn new(opts: &EngineOptions) -> anyhow::Result<Ray> {
        if let Some(bad) = opts.opts.keys().find(|k| !OPTS.contains(&k.as_str())) {
            anyhow::bail!(
                "unknown ray engine option {bad:?}: expected {}",
                OPTS.join(", ")
            );
        }
        let address = address(opts, std::env::var("RAY_ADDRESS").ok())?;
        let timeout_s = match opts.opts.get("timeout_s") {
            Some(t) => t
                .parse::<u64>()
                .ok()
                .filter(|t| (1..=600).contains(t))
                .ok_or_else(|| anyhow::anyhow!("ray timeout_s {t:?}: seconds from 1 to 600"))?,
            None => 30,
        };
        if !opts.state_dir.as_os_str().is_empty() {
            std::fs::create_dir_all(&opts.state_dir).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the agent's state folder {}: {e}",
                    opts.state_dir.display()
                )
            })?;
        }
        let http = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5.min(timeout_s)))
            .timeout(Duration::from_secs(timeout_s))
            .build();
        Ok(Ray {
            address,
            http,
            state_dir: opts.state_dir.clone(),
            read: Mutex::new(BTreeMap::new()),
            ended: Mutex::new(BTreeSet::new()),
            started: Mutex::new(BTreeSet::new()),
            warned: Mutex::new(BTreeSet::new()),
        })
    }

    /// The dashboard address this engine talks to.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A GET of a job's resource: `Ok(None)` on 404.
    fn get_json(&self, call: &str, path: &str) -> Result<Option<Value>, EngineError> {
        match self.http.get(&self.url(path)).call() {
            Ok(resp) => {
                let (_, text) = answer_text(resp);
                serde_json::from_str(&text).map(Some).map_err(|e| {
                    unavailable(
                        call,
                        format!("answer is not JSON ({e}): {}", last_line(&text)),
                    )
                })
            }
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(ureq::Error::Status(code, resp)) => {
                let (_, text) = answer_text(resp);
                Err(unavailable(
                    call,
                    format!("HTTP {code}: {}", last_line(&text)),
                ))
            }
            Err(e) => Err(unavailable(call, e)),
        }
    }

    /// The job Ray already has under `launch.key`, if it is this Stepwatch job's.
    fn existing(&self, launch: &Launch) -> Result<Option<String>, EngineError> {
        let path = format!("/api/jobs/{}", segment(&launch.key));
        let Some(job) = self.get_json("GET job", &path)? else {
            return Ok(None);
        };
        let owner = job["metadata"]["stepwatch_job"].as_str().unwrap_or("");
        if owner != launch.job {
            return Err(EngineError::Refused(format!(
                "Ray already has a job with submission_id {} and it is not Stepwatch job {} \
                 (its metadata says {owner:?})",
                launch.key, launch.job
            )));
        }
        Ok(Some(launch.key.clone()))
    }

    fn offset_file(&self, key: &str) -> Option<PathBuf> {
        if self.state_dir.as_os_str().is_empty() {
            None
        } else {
            let safe: String = key
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            Some(self.state_dir.join(format!("{safe}.ray-offset")))
        }
    }

    /// How much of the job's log was handed over (from the state folder after a restart),
    /// if this agent knows.
    fn offset(&self, key: &str) -> Option<usize> {
        let mut read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = read.get(key) {
            return Some(*at);
        }
        let at = self
            .offset_file(key)
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| s.trim().parse().ok())?;
        read.insert(key.to_string(), at);
        Some(at)
    }

    fn mark_started(&self, key: &str) {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string());
    }

    fn set_offset(&self, key: &str, at: usize) {
        self.read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), at);
        if let Some(f) = self.offset_file(key) {
            let _ = std::fs::write(f, at.to_string());
        }
    }

    fn post_stop(&self, call: &str, engine_id: &str) -> Result<(), EngineError> {
        let url = self.url(&format!("/api/jobs/{}/stop", segment(engine_id)));
        match self.http.post(&url).call() {
            Ok(_) | Err(ureq::Error::Status(404, _)) => Ok(()),
            Err(ureq::Error::Status(code, resp)) => {
                let (_, text) = answer_text(resp);
                Err(unavailable(
                    call,
                    format!("HTTP {code}: {}", last_line(&text)),
                ))
            }
            Err(e) => Err(unavailable(call, e)),
        }
    }
}

/// Ray's job record → where the job stands (`time_limited`: the job ran under a time
/// limit, so exit 124 is `timeout`'s).
fn observed(job: &Value, time_limited: bool) -> Result<Observed, EngineError> {
    // Ray's FAILED message goes on with the log's tail: its first line says it.
    let message = job["message"]
        .as_str()
        .unwrap_or("")
        .trim()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let or = |fallback: &str| {
        if message.is_empty() {
            fallback.to_string()
        } else {
            message.clone()
        }
    };
    let exit_code = job["driver_exit_code"]
        .as_i64()
        .and_then(|c| i32::try_from(c).ok());
    Ok(match job["status"].as_str().unwrap_or("") {
        "PENDING" => Observed::Pending {
            reason: or("pending at Ray"),
        },
        "RUNNING" => Observed::Running,
        "SUCCEEDED" => Observed::Succeeded,
        "FAILED" => Observed::Failed {
            reason: match exit_code {
                Some(124) if time_limited => {
                    format!("{} (the job's time limit ran out)", or("failed at Ray"))
                }
                _ => or("failed at Ray"),
            },
            exit_code,
        },
        "STOPPED" => Observed::Cancelled {
            reason: or("stopped at Ray"),
        },
        other => {
            return Err(unavailable(
                "GET job",
                format!("unknown job status {other:?}"),
            ))
        }
    })
}

/// The complete lines of `text` from byte `at` (all of it once `ended`), at most `max`,
/// and the offset after them.
fn new_lines(text: &str, at: usize, max: usize, ended: bool) -> (Vec<OutputLine>, usize) {
    let mut at = if text.is_char_boundary(at) { at } else { 0 };
    let mut out = Vec::new();
    while out.len() < max && at < text.len() {
        let rest = &text[at..];
        let (line, used) = match rest.find('\n') {
            Some(i) => (&rest[..i], i + 1),
            None if ended => (rest, rest.len()),
            None => break,
        };
        at += used;
        out.push(OutputLine {
            stream: "stdout",
            text: line.trim_end_matches('\r').to_string(),
        });
    }
    (out, at)
}

/// Where the job's own output begins in Ray's log: after Ray's runtime-env lines and its
/// `Running entrypoint for job ID: ENTRYPOINT` line (the entrypoint may span lines).
fn after_preamble(text: &str, id: &str, entrypoint: &str) -> Option<usize> {
    let needle = format!("{RAY_PREAMBLE}{id}: {entrypoint}\n");
    text.find(&needle).map(|i| i + needle.len())
}

impl Ray {
    /// Where the job's own lines begin in its Ray log: after Ray's (all of the log when
    /// the job ended before its entrypoint ran: Ray's lines say why); `None` while Ray's
    /// `Running entrypoint` line has not come yet.
    fn job_output_start(&self, engine_id: &str, logs: &str, ended: bool) -> Option<usize> {
        let path = format!("/api/jobs/{}", segment(engine_id));
        let job = self.get_json("GET job", &path).ok().flatten()?;
        let entrypoint = job["entrypoint"].as_str().unwrap_or("");
        match after_preamble(logs, engine_id, entrypoint) {
            Some(start) => Some(start),
            None if ended => Some(0),
            None => None,
        }
    }
}

impl Engine for Ray {
    fn name(&self) -> &'static str {
        "ray"
    }

    fn start(&self, launch: &Launch) -> Result<String, EngineError> {
        let body = submit::body(launch)?;
        match self.http.post(&self.url("/api/jobs/")).send_json(body) {
            Ok(resp) => {
                let (_, text) = answer_text(resp);
                let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let id = answer["submission_id"].as_str().unwrap_or(&launch.key);
                if id != launch.key {
                    return Err(unavailable(
                        "POST jobs",
                        format!("Ray named the job {id:?}, not {:?}", launch.key),
                    ));
                }
                self.mark_started(&launch.key);
                Ok(launch.key.clone())
            }
            Err(ureq::Error::Status(code, resp)) => {
                let (_, text) = answer_text(resp);
                // Ray refuses a second submit with the same submission_id: it has the job.
                if let Some(id) = self.existing(launch)? {
                    self.mark_started(&id);
                    return Ok(id);
                }
                let why = format!("HTTP {code}: {}", last_line(&text));
                if code == 400 {
                    Err(EngineError::Refused(format!("ray POST jobs: {why}")))
                } else {
                    Err(unavailable("POST jobs", why))
                }
            }
            Err(e) => Err(unavailable("POST jobs", e)),
        }
    }

    fn status(&self, engine_id: &str, launch: &Launch) -> Result<Observed, EngineError> {
        let path = format!("/api/jobs/{}", segment(engine_id));
        let limited = launch.resources.time_limit_s.is_some();
        let seen = match self.get_json("GET job", &path)? {
            Some(job) => observed(&job, limited)?,
            None => Observed::Gone,
        };
        if seen.is_final() {
            self.ended
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(engine_id.to_string());
        }
        Ok(seen)
    }

    fn stop(&self, engine_id: &str) -> Result<(), EngineError> {
        self.post_stop("POST stop", engine_id)
    }

    fn kill(&self, engine_id: &str) -> Result<(), EngineError> {
        // Ray's stop already ends in SIGKILL after its wait; there is nothing harder.
        self.post_stop("POST stop (kill)", engine_id)
    }

    fn output(&self, engine_id: &str, max: usize) -> Vec<OutputLine> {
        let path = format!("/api/jobs/{}/logs", segment(engine_id));
        let logs = match self.get_json("GET logs", &path) {
            Ok(Some(v)) => v["logs"].as_str().unwrap_or("").to_string(),
            Ok(None) => return Vec::new(),
            Err(e) => {
                let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
                if warned.insert(engine_id.to_string()) {
                    tracing::warn!("output of {engine_id}: {e}");
                }
                return Vec::new();
            }
        };
        let ended = self
            .ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(engine_id);
        let known = self.offset(engine_id);
        let mut at = known.filter(|a| *a <= logs.len()).unwrap_or(0);
        if at == 0 {
            at = match self.job_output_start(engine_id, &logs, ended) {
                Some(start) => start,
                None => return Vec::new(),
            };
            let mine = self
                .started
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(engine_id);
            if known.is_none() && !mine {
                // Adopted from an agent that died: what was printed before was that
                // agent's to hand over. Go on from the last complete line.
                let end = at + logs[at..].rfind('\n').map_or(0, |i| i + 1);
                self.set_offset(engine_id, end);
                return Vec::new();
            }
        }
        let (lines, after) = new_lines(&logs, at, max, ended);
        if Some(after) != known {
            self.set_offset(engine_id, after);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn address_comes_from_the_option_then_ray_address_then_the_default() {
        let mut opts = EngineOptions::default();
        assert_eq!(address(&opts, None).unwrap(), DEFAULT_ADDRESS);
        assert_eq!(
            address(&opts, Some("http://ray:8265/".into())).unwrap(),
            "http://ray:8265"
        );
        // RAY_ADDRESS often names the GCS (`host:6379`) for ray.init: not ours.
        assert!(address(&opts, Some("10.0.0.1:6379".into())).is_err());
        opts.opts.insert("address".into(), "http://a:1".into());
        assert_eq!(
            address(&opts, Some("http://b:2".into())).unwrap(),
            "http://a:1"
        );
    }

    #[test]
    fn unknown_options_are_refused() {
        let mut opts = EngineOptions::default();
        opts.opts.insert("adress".into(), "http://a:1".into());
        let Err(e) = Ray::new(&opts) else {
            panic!("accepted")
        };
        assert!(e.to_string().contains("adress"), "{e}");
    }

    #[test]
    fn ray_statuses_map_to_observed() {
        let p = observed(
            &json!({"status": "PENDING", "message": "waiting for resources"}),
            false,
        );
        assert_eq!(
            p.unwrap(),
            Observed::Pending {
                reason: "waiting for resources".into()
            }
        );
        assert_eq!(
            observed(&json!({"status": "RUNNING"}), false).unwrap(),
            Observed::Running
        );
        assert_eq!(
            observed(&json!({"status": "SUCCEEDED"}), false).unwrap(),
            Observed::Succeeded
        );
        let f = observed(
            &json!({"status": "FAILED", "message": "exit 3", "driver_exit_code": 3}),
            false,
        );
        assert_eq!(
            f.unwrap(),
            Observed::Failed {
                reason: "exit 3".into(),
                exit_code: Some(3)
            }
        );
        let s = observed(&json!({"status": "STOPPED", "message": null}), false);
        assert_eq!(
            s.unwrap(),
            Observed::Cancelled {
                reason: "stopped at Ray".into()
            }
        );
        assert!(observed(&json!({"status": "EXPLODED"}), false).is_err());
    }

    #[test]
    fn lines_go_out_once_the_partial_one_when_the_job_ended() {
        let log = "setting up\nRunning entrypoint for job sw-1-1: exec 'a\nb'\nhi\nthere\npart";
        let start = after_preamble(log, "sw-1-1", "exec 'a\nb'").unwrap();
        assert!(after_preamble(log, "sw-1-1", "exec 'a'").is_none());
        let (lines, at) = new_lines(log, start, 100, false);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["hi", "there"]);
        assert_eq!(&log[at..], "part");
        let (again, same) = new_lines(log, at, 100, false);
        assert!(again.is_empty());
        assert_eq!(same, at);
        let (last, end) = new_lines(log, at, 100, true);
        assert_eq!(last[0].text, "part");
        assert_eq!(end, log.len());
        // At most `max` at a time.
        let (one, at1) = new_lines("a\nb\nc\n", 0, 1, false);
        assert_eq!((one.len(), at1), (1, 2));
    }

    #[test]
    fn ids_are_escaped_in_paths() {
        assert_eq!(segment("sw-j1-1"), "sw-j1-1");
        assert_eq!(segment("a/../b c"), "a%2F..%2Fb%20c");
    }
}
