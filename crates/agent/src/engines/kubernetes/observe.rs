//! Where a Job stands, read from the Job object and its pods as `batch/v1` and `v1`
//! define them: the `Complete` / `Failed` conditions, `spec.suspend` (Kueue), the pods'
//! phases, their containers' waiting reasons and exit codes, and `PodScheduled` = False.

use crate::engine::Observed;
use serde_json::Value;

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// The Job's state, given its pods (those labelled `job-name=<name>`).
pub fn job(job: &Value, pods: &[Value]) -> Observed {
    if condition(job, "Complete").is_some() {
        return Observed::Succeeded;
    }
    if let Some(c) = condition(job, "Failed") {
        let exit = exit_of(pods);
        let mut reason = match (text(&c["reason"]), text(&c["message"])) {
            ("", "") => "the Job failed".to_string(),
            (r, "") => r.to_string(),
            ("", m) => m.to_string(),
            (r, m) => format!("{r}: {m}"),
        };
        if let Some((code, why)) = &exit {
            reason.push_str(&format!("; the container exited with code {code}"));
            if !why.is_empty() {
                reason.push_str(&format!(" ({why})"));
            }
        }
        return Observed::Failed {
            reason,
            exit_code: exit.map(|(c, _)| c),
        };
    }
    if job["spec"]["suspend"] == Value::Bool(true) {
        return Observed::Pending {
            reason: "the Job is suspended (waiting for its queue to admit it)".into(),
        };
    }
    if pods.iter().any(|p| p["status"]["phase"] == "Running") {
        return Observed::Running;
    }
    // Ended pods before the Job's condition is written: still going, as far as we know.
    if pods
        .iter()
        .any(|p| matches!(text(&p["status"]["phase"]), "Succeeded" | "Failed"))
    {
        return Observed::Running;
    }
    match pods.iter().find_map(pending_reason) {
        Some(reason) => Observed::Pending { reason },
        None => Observed::Pending {
            reason: "waiting for the Job's pod".into(),
        },
    }
}

/// Why a pending pod waits: its container's waiting reason (ImagePullBackOff …), or the
/// scheduler's word (Unschedulable: 0/3 nodes are available …).
pub fn pending_reason(pod: &Value) -> Option<String> {
    let statuses = pod["status"]["containerStatuses"].as_array();
    for s in statuses.into_iter().flatten() {
        let w = &s["state"]["waiting"];
        if let Some(r) = w["reason"].as_str() {
            return Some(match text(&w["message"]) {
                "" => r.to_string(),
                m => format!("{r}: {m}"),
            });
        }
    }
    let conds = pod["status"]["conditions"].as_array();
    for c in conds.into_iter().flatten() {
        if c["type"] == "PodScheduled" && c["status"] == "False" {
            return Some(format!("{}: {}", text(&c["reason"]), text(&c["message"])));
        }
    }
    pod["status"]["phase"].as_str().map(|p| format!("pod {p}"))
}

/// The first failing container's exit code and reason (`Error`, `OOMKilled`), else the
/// first ended one's.
pub fn exit_of(pods: &[Value]) -> Option<(i32, String)> {
    let mut ended = Vec::new();
    for p in pods {
        for s in p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for state in [&s["state"]["terminated"], &s["lastState"]["terminated"]] {
                if let Some(code) = state["exitCode"].as_i64() {
                    ended.push((code as i32, text(&state["reason"]).to_string()));
                }
            }
        }
    }
    ended
        .iter()
        .find(|(c, _)| *c != 0)
        .or(ended.first())
        .cloned()
}

/// A Job deleted while its ended pods stay (orphaned): how they ended, or gone.
pub fn orphans(pods: &[Value]) -> Observed {
    if pods.is_empty() {
        return Observed::Gone;
    }
    if pods.iter().all(|p| p["status"]["phase"] == "Succeeded") {
        return Observed::Succeeded;
    }
    let exit = exit_of(pods);
    Observed::Failed {
        reason: match &exit {
            Some((code, _)) => format!("the Job was deleted; its pod exited with code {code}"),
            None => "the Job was deleted; its pod failed".into(),
        },
        exit_code: exit.map(|(c, _)| c),
    }
}

/// Whether any of these pods still runs (or is about to).
pub fn any_alive(pods: &[Value]) -> bool {
    pods.iter()
        .any(|p| !matches!(text(&p["status"]["phase"]), "Succeeded" | "Failed"))
}

/// The pod whose log to read: the newest that has started (a running one before an
/// ended one of the same second).
pub fn log_pod(pods: &[Value]) -> Option<String> {
    pods.iter()
        .filter(|p| p["status"]["phase"] != "Pending")
        .max_by_key(|p| {
            let created = text(&p["metadata"]["creationTimestamp"]).to_string();
            (created, p["status"]["phase"] == "Running")
        })
        .and_then(|p| p["metadata"]["name"].as_str().map(String::from))
}

/// An RFC 3339 time as (seconds part, nanoseconds), comparable whatever its precision.
pub fn time_key(ts: &str) -> (String, u32) {
    let ts = ts.trim_end_matches('Z');
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    let digits: String = frac
        .chars()
        .take_while(char::is_ascii_digit)
        .take(9)
        .collect();
    let nanos = format!("{digits:0<9}").parse().unwrap_or(0);
    (secs.to_string(), nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_compare_whatever_their_precision() {
        assert!(time_key("2026-01-01T00:00:00.12Z") > time_key("2026-01-01T00:00:00.1Z"));
        assert!(time_key("2026-01-01T00:00:01Z") > time_key("2026-01-01T00:00:00.999999999Z"));
    }

    #[test]
    fn a_failed_job_says_its_reason_and_the_containers_exit_code() {
        let job = json!({"status": {"failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"}]}});
        let pods = [json!({"status": {"phase": "Failed", "containerStatuses": [
            {"name": "main", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}})];
        let Observed::Failed { reason, exit_code } = super::job(&job, &pods) else {
            panic!("not failed")
        };
        assert_eq!(exit_code, Some(3));
        assert!(
            reason.starts_with("BackoffLimitExceeded: Job has reached"),
            "{reason}"
        );
        assert!(reason.contains("code 3 (Error)"), "{reason}");
    }

    #[test]
    fn a_pending_pod_says_why() {
        let job = json!({"status": {"active": 1}});
        let pull = json!({"status": {"phase": "Pending", "containerStatuses": [
            {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}});
        assert_eq!(
            super::job(&job, &[pull]),
            Observed::Pending {
                reason: "ImagePullBackOff: Back-off pulling image".into()
            }
        );
        let unsched = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]}});
        assert_eq!(
            super::job(&job, &[unsched]),
            Observed::Pending {
                reason: "Unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
                    .into()
            }
        );
        let suspended = json!({"spec": {"suspend": true}, "status": {}});
        assert!(matches!(
            super::job(&suspended, &[]),
            Observed::Pending { .. }
        ));
    }
}
