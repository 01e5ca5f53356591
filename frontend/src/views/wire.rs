//! The launch API's answers (`docs/LAUNCH.md`) read into the shared wire types
//! (`stepwatch_events::jobs`, `stepwatch_events::template`) from a `serde_json::Value`,
//! by hand: serde's derived readers for these types (a flattened state, untagged and
//! tagged enums) cost more WASM than the dashboard's download budget has room for.
//! Unknown fields are ignored and missing ones take their defaults, as serde's would;
//! the tests read back what serde writes, so the two cannot drift apart.

use super::launch_form::Offered;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use stepwatch_events::jobs::{
    AgentInfo, Entry, HistoryEntry, JobSpec, JobState, JobStatus, JobView, Preview, QueueInfo,
    Resources,
};
use stepwatch_events::template::{ParamKind, ParamSpec, Rendered, Template};

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn opt_text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_default()
}

fn small(v: &Value) -> u32 {
    u32::try_from(num(v)).unwrap_or_default()
}

fn opt_small(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn texts(v: &Value) -> Vec<String> {
    v.as_array()
        .map_or_else(Vec::new, |a| a.iter().map(text).collect())
}

fn text_map(v: &Value) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (k, v) in v.as_object().into_iter().flatten() {
        m.insert(k.clone(), text(v));
    }
    m
}

fn object(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// A job status by its wire name (`queued` for anything else).
pub fn status(v: &Value) -> JobStatus {
    match v.as_str().unwrap_or_default() {
        "claimed" => JobStatus::Claimed,
        "submitted" => JobStatus::Submitted,
        "running" => JobStatus::Running,
        "succeeded" => JobStatus::Succeeded,
        "failed" => JobStatus::Failed,
        "cancelled" => JobStatus::Cancelled,
        _ => JobStatus::Queued,
    }
}

/// What a job asks for.
pub fn resources(v: &Value) -> Resources {
    Resources {
        gpus: opt_small(&v["gpus"]),
        cpus: opt_small(&v["cpus"]),
        memory_mb: v["memory_mb"].as_u64(),
        nodes: opt_small(&v["nodes"]),
        time_limit_s: v["time_limit_s"].as_u64(),
    }
}

/// A submitted job's spec (`None` when it has none).
pub fn spec(v: &Value) -> Option<JobSpec> {
    let e = &v["entry"];
    let entry = if e.get("argv").is_some() {
        Entry::Argv {
            argv: texts(&e["argv"]),
            cwd: opt_text(&e["cwd"]),
            env: text_map(&e["env"]),
        }
    } else {
        Entry::Template {
            template: e["template"].as_str()?.to_string(),
            params: object(&e["params"]),
        }
    };
    let mut extras = BTreeMap::new();
    for (k, x) in v["extras"].as_object().into_iter().flatten() {
        extras.insert(k.clone(), object(x));
    }
    Some(JobSpec {
        name: text(&v["name"]),
        queue: text(&v["queue"]),
        entry,
        resources: resources(&v["resources"]),
        extras,
        priority: v["priority"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_default(),
        max_retries: small(&v["max_retries"]),
        clone_of: opt_text(&v["clone_of"]),
    })
}

fn launch(v: &Value) -> Option<Rendered> {
    let mut values = BTreeMap::new();
    for (k, x) in v
        .as_object()?
        .get("values")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        values.insert(k.clone(), x.clone());
    }
    Some(Rendered {
        argv: texts(&v["argv"]),
        env: text_map(&v["env"]),
        cwd: opt_text(&v["cwd"]),
        values,
    })
}

/// A job as the API shows it (`GET /api/jobs/{id}`, the jobs stream).
pub fn job_view(v: &Value) -> JobView {
    let history = v["history"].as_array().map_or_else(Vec::new, |h| {
        h.iter()
            .map(|r| HistoryEntry {
                ts: r["ts"].as_f64().unwrap_or_default(),
                kind: text(&r["kind"]),
                status: status(&r["status"]),
                reason: opt_text(&r["reason"]),
            })
            .collect()
    });
    let state = JobState {
        job: text(&v["job"]),
        spec: spec(&v["spec"]),
        status: status(&v["status"]),
        by: opt_text(&v["by"]),
        priority: v["priority"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_default(),
        attempts: small(&v["attempts"]),
        retries_left: small(&v["retries_left"]),
        agent: opt_text(&v["agent"]),
        lease_s: v["lease_s"].as_u64(),
        lease_until: v["lease_until"].as_f64(),
        engine_id: opt_text(&v["engine_id"]),
        run: opt_text(&v["run"]),
        launch: launch(&v["launch"]),
        reason: opt_text(&v["reason"]),
        exit_code: v["exit_code"].as_i64().and_then(|c| i32::try_from(c).ok()),
        cancel_requested_by: opt_text(&v["cancel_requested_by"]),
        cancel_stop_command: v["cancel_stop_command"].as_bool().unwrap_or_default(),
        resume_from: opt_text(&v["resume_from"]),
        created_at: v["created_at"].as_f64(),
        updated_at: v["updated_at"].as_f64(),
        history,
    };
    JobView {
        state,
        queue: text(&v["queue"]),
        engine: text(&v["engine"]),
        position: v["position"].as_u64().and_then(|p| usize::try_from(p).ok()),
        agent_alive: v["agent_alive"].as_bool().unwrap_or_default(),
        waiting: opt_text(&v["waiting"]),
        run_live: v["run_live"].as_bool().unwrap_or_default(),
    }
}

/// A queue (`GET /api/queues`).
pub fn queue_info(v: &Value) -> QueueInfo {
    let agents = v["agents"].as_array().map_or_else(Vec::new, |a| {
        a.iter()
            .map(|a| AgentInfo {
                agent: text(&a["agent"]),
                queue: text(&a["queue"]),
                engine: text(&a["engine"]),
                host: text(&a["host"]),
                slots: small(&a["slots"]),
                busy: small(&a["busy"]),
                last_seen: a["last_seen"].as_f64().unwrap_or_default(),
                alive: a["alive"].as_bool().unwrap_or_default(),
                version: text(&a["version"]),
            })
            .collect()
    });
    QueueInfo {
        name: text(&v["name"]),
        engine: text(&v["engine"]),
        description: text(&v["description"]),
        submit_roles: texts(&v["submit_roles"]),
        free_form_roles: texts(&v["free_form_roles"]),
        defaults: resources(&v["defaults"]),
        limits: resources(&v["limits"]),
        cancel_grace_s: num(&v["cancel_grace_s"]),
        agents,
        queued: usize::try_from(num(&v["queued"])).unwrap_or_default(),
        active: usize::try_from(num(&v["active"])).unwrap_or_default(),
        may_submit: v["may_submit"].as_bool().unwrap_or_default(),
        may_free_form: v["may_free_form"].as_bool().unwrap_or_default(),
    }
}

/// A list answer, item by item.
pub fn list<T>(v: &Value, item: fn(&Value) -> T) -> Vec<T> {
    v.as_array()
        .map_or_else(Vec::new, |a| a.iter().map(item).collect())
}

fn param_kind(v: &Value) -> Option<ParamKind> {
    let max_len = || {
        v["max_len"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(256)
    };
    Some(match v["type"].as_str()? {
        "int" => ParamKind::Int {
            min: v["min"].as_i64(),
            max: v["max"].as_i64(),
        },
        "float" => ParamKind::Float {
            min: v["min"].as_f64(),
            max: v["max"].as_f64(),
        },
        "bool" => ParamKind::Bool,
        "string" => ParamKind::String {
            max_len: max_len(),
            choices: v["choices"].as_array().map(|_| texts(&v["choices"])),
        },
        "choice" => ParamKind::Choice {
            values: texts(&v["values"]),
        },
        "path" => ParamKind::Path { max_len: max_len() },
        _ => return None,
    })
}

/// A template as `GET /api/templates` offers it, with its queue; `None` for a
/// parameter kind this dashboard does not know.
pub fn offered(v: &Value) -> Option<Offered> {
    let mut params = Vec::new();
    for p in v["params"].as_array().into_iter().flatten() {
        params.push(ParamSpec {
            name: text(&p["name"]),
            kind: param_kind(&p["kind"])?,
            default: p.get("default").filter(|d| !d.is_null()).cloned(),
            required: p["required"].as_bool(),
            help: opt_text(&p["help"]),
        });
    }
    let tpl = Template {
        name: text(&v["name"]),
        description: text(&v["description"]),
        argv: texts(&v["argv"]),
        cwd: opt_text(&v["cwd"]),
        env: text_map(&v["env"]),
        params,
    };
    Some(Offered {
        tpl,
        queue: opt_text(&v["queue"]),
    })
}

/// `POST /api/jobs/preview`'s answer.
pub fn preview(v: &Value) -> Preview {
    let mut values = BTreeMap::new();
    for (k, x) in v["values"].as_object().into_iter().flatten() {
        values.insert(k.clone(), x.clone());
    }
    let diff = v["diff"].as_array().map_or_else(Vec::new, |d| {
        d.iter()
            .map(|r| (text(&r[0]), r[1].clone(), r[2].clone()))
            .collect()
    });
    Preview {
        argv: texts(&v["argv"]),
        cwd: opt_text(&v["cwd"]),
        env: text_map(&v["env"]),
        values,
        resources: resources(&v["resources"]),
        diff,
        warnings: texts(&v["warnings"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stepwatch_events::jobs::{JobEvent, JobEventBody};

    fn a_job() -> JobView {
        let spec: JobSpec = serde_json::from_value(json!({
            "name": "demo run", "queue": "gpu",
            "entry": {"template": "demo", "params": {"lr": 0.1, "epochs": 3}},
            "resources": {"gpus": 2, "time_limit_s": 600},
            "extras": {"slurm": {"partition": "debug"}},
            "priority": -4, "max_retries": 2, "clone_of": "old-run"
        }))
        .unwrap();
        let events = [
            JobEventBody::Submitted {
                spec: Box::new(spec),
                by: "ann".into(),
                run: Some("demo-run-j1".into()),
                launch: Some(Box::new(Rendered {
                    argv: vec!["train".into(), "--lr=0.1".into()],
                    values: [("lr".to_string(), json!(0.1))].into_iter().collect(),
                    ..Default::default()
                })),
                resume_from: None,
            },
            JobEventBody::Claimed {
                agent: "a1".into(),
                lease_s: 30,
            },
            JobEventBody::EngineSubmitted {
                engine_id: "123".into(),
            },
            JobEventBody::EngineStatus {
                reason: "Priority".into(),
            },
            JobEventBody::CancelRequested {
                by: "bob".into(),
                stop_command: true,
            },
        ];
        let events: Vec<JobEvent> = events
            .into_iter()
            .enumerate()
            .map(|(i, body)| JobEvent {
                ts: 100.0 + i as f64,
                body,
            })
            .collect();
        JobView {
            state: JobState::from_events("j1", &events).unwrap(),
            queue: "gpu".into(),
            engine: "slurm".into(),
            position: Some(3),
            agent_alive: true,
            waiting: Some("2 jobs ahead".into()),
            run_live: true,
        }
    }

    #[test]
    fn job_views_read_back_as_serde_writes_them() {
        let j = a_job();
        assert_eq!(job_view(&serde_json::to_value(&j).unwrap()), j);
        let argv = JobSpec {
            entry: Entry::Argv {
                argv: vec!["python".into(), "a b.py".into()],
                cwd: Some("/w".into()),
                env: [("K".to_string(), "v".to_string())].into_iter().collect(),
            },
            ..j.state.spec.clone().unwrap()
        };
        assert_eq!(spec(&serde_json::to_value(&argv).unwrap()), Some(argv));
    }

    #[test]
    fn queues_templates_and_previews_read_back() {
        let q = QueueInfo {
            name: "gpu".into(),
            engine: "slurm".into(),
            description: "d".into(),
            submit_roles: vec!["operator".into()],
            free_form_roles: vec!["admin".into()],
            defaults: Resources {
                cpus: Some(2),
                ..Default::default()
            },
            limits: Resources {
                gpus: Some(8),
                memory_mb: Some(9000),
                ..Default::default()
            },
            cancel_grace_s: 30,
            agents: vec![AgentInfo {
                agent: "a".into(),
                queue: "gpu".into(),
                engine: "slurm".into(),
                host: "h".into(),
                slots: 2,
                busy: 1,
                last_seen: 5.5,
                alive: true,
                version: "1".into(),
            }],
            queued: 4,
            active: 1,
            may_submit: true,
            may_free_form: false,
        };
        assert_eq!(queue_info(&serde_json::to_value(&q).unwrap()), q);
        let t: Template = serde_json::from_value(json!({
            "name": "demo", "description": "x", "argv": ["run", "--lr={lr}", "{tag}"],
            "cwd": "w", "env": {"A": "{tag}"},
            "params": [
                {"name": "lr", "kind": {"type": "float", "min": 0.0, "max": 1.0}, "default": 0.1, "help": "h"},
                {"name": "n", "kind": {"type": "int", "min": 1}, "required": true},
                {"name": "on", "kind": {"type": "bool"}},
                {"name": "tag", "kind": {"type": "string", "max_len": 9, "choices": ["a", "b"]}},
                {"name": "m", "kind": {"type": "choice", "values": ["x"]}},
                {"name": "p", "kind": {"type": "path"}}
            ]
        }))
        .unwrap();
        let mut v = serde_json::to_value(&t).unwrap();
        v["queue"] = json!("gpu");
        let o = offered(&v).unwrap();
        assert_eq!((o.tpl, o.queue.as_deref()), (t, Some("gpu")));
        let p = Preview {
            argv: vec!["a".into()],
            cwd: Some("c".into()),
            env: [("E".to_string(), "1".to_string())].into_iter().collect(),
            values: [("lr".to_string(), json!(0.5))].into_iter().collect(),
            resources: Resources {
                gpus: Some(1),
                ..Default::default()
            },
            diff: vec![("lr".into(), json!(0.1), json!(0.5))],
            warnings: vec!["w".into()],
        };
        assert_eq!(preview(&serde_json::to_value(&p).unwrap()), p);
    }
}
