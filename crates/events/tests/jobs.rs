//! Jobs: hostile submissions name their field, the state machine's legal and refused
//! transitions, lease loss, retries, cancel, and queue order.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::cmp::Ordering;
use stepwatch_events::jobs::{MAX_HISTORY, MAX_REASON_BYTES};
use stepwatch_events::{queue_order, JobEvent, JobSpec, JobState, JobStatus};

fn good() -> Value {
    json!({
        "name": "resnet sweep 3",
        "queue": "gpu-a100",
        "entry": {"argv": ["python", "train.py", "--lr", "0.1"], "cwd": "/work", "env": {"SEED": "1"}},
        "resources": {"gpus": 2, "cpus": 8, "memory_mb": 32000, "nodes": 1, "time_limit_s": 3600},
        "extras": {"slurm": {"partition": "gpu"}},
        "priority": 5,
        "max_retries": 2
    })
}

/// The field a hostile body is refused for.
fn refused(v: Value) -> String {
    JobSpec::from_value(v).unwrap_err().field
}

fn with(path: &[&str], value: Value) -> Value {
    let mut v = good();
    let mut at = &mut v;
    for key in &path[..path.len() - 1] {
        at = at.get_mut(*key).unwrap();
    }
    at[path[path.len() - 1]] = value;
    v
}

#[test]
fn a_good_job_parses_and_round_trips() {
    let spec = JobSpec::from_value(good()).unwrap();
    assert_eq!(spec.priority, 5);
    assert_eq!(spec.resources.gpus, Some(2));
    let again: JobSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
    assert_eq!(again, spec);
    let t = JobSpec::from_value(json!({
        "name": "t", "queue": "q",
        "entry": {"template": "finetune", "params": {"lr": 0.001, "epochs": 3}}
    }))
    .unwrap();
    assert_eq!(t.template(), Some("finetune"));
    assert_eq!(t.max_retries, 0);
}

#[test]
fn hostile_entries_name_their_field() {
    let v = with(&["entry"], json!("python train.py; rm -rf /"));
    assert_eq!(refused(v), "entry");
    let v = with(&["entry", "argv"], json!("python train.py && curl evil"));
    let err = JobSpec::from_value(v).unwrap_err();
    assert_eq!(err.field, "entry.argv");
    assert!(err.message.contains("shell string"), "{}", err.message);
    assert_eq!(
        refused(with(&["entry", "argv"], json!(["python", "a\u{0}b"]))),
        "entry.argv[1]"
    );
    assert_eq!(
        refused(with(&["entry", "argv"], json!(["python", 3]))),
        "entry.argv[1]"
    );
    assert_eq!(refused(with(&["entry", "argv"], json!([]))), "entry.argv");
    assert_eq!(
        refused(with(&["entry", "argv"], json!([""]))),
        "entry.argv[0]"
    );
    let many: Vec<String> = (0..2000).map(|i| i.to_string()).collect();
    assert_eq!(refused(with(&["entry", "argv"], json!(many))), "entry.argv");
    let long = "x".repeat(40_000);
    assert_eq!(
        refused(with(&["entry", "argv"], json!(["python", "ok", long]))),
        "entry.argv[2]"
    );
    assert_eq!(
        refused(with(&["entry", "cwd"], json!("/a\u{0}"))),
        "entry.cwd"
    );
    assert_eq!(
        refused(with(&["entry", "shell"], json!(true))),
        "entry.shell"
    );
    let both = with(&["entry", "template"], json!("t"));
    assert_eq!(refused(both), "entry");
}

#[test]
fn hostile_env_names_their_variable() {
    for (name, field) in [
        ("STEPWATCH_URL", "entry.env.STEPWATCH_URL"),
        ("stepwatch_token", "entry.env.stepwatch_token"),
        ("1BAD", "entry.env.1BAD"),
        ("A=B", "entry.env.A=B"),
        ("", "entry.env."),
    ] {
        let v = with(&["entry", "env"], json!({ name: "x" }));
        assert_eq!(refused(v), field, "{name}");
    }
    let v = with(&["entry", "env"], json!({"OK": "a\u{0}"}));
    assert_eq!(refused(v), "entry.env.OK");
    let v = with(&["entry", "env"], json!({"OK": 1}));
    assert_eq!(refused(v), "entry.env.OK");
}

#[test]
fn hostile_fields_name_themselves() {
    let mut v = good();
    v["run_as_root"] = json!(true);
    assert_eq!(refused(v), "run_as_root");
    assert_eq!(
        refused(with(&["resources", "gpus"], json!(1000))),
        "resources.gpus"
    );
    assert_eq!(
        refused(with(&["resources", "gpus"], json!(-1))),
        "resources.gpus"
    );
    assert_eq!(
        refused(with(&["resources", "nodes"], json!(0))),
        "resources.nodes"
    );
    assert_eq!(
        refused(with(&["resources", "time_limit_s"], json!(0))),
        "resources.time_limit_s"
    );
    assert_eq!(
        refused(with(&["resources", "tpus"], json!(1))),
        "resources.tpus"
    );
    assert_eq!(refused(with(&["max_retries"], json!(11))), "max_retries");
    assert_eq!(refused(with(&["priority"], json!("high"))), "priority");
    assert_eq!(refused(with(&["priority"], json!(2_000_000))), "priority");
    assert_eq!(refused(with(&["name"], json!(""))), "name");
    assert_eq!(refused(with(&["name"], json!("x".repeat(201)))), "name");
    assert_eq!(refused(with(&["name"], json!("a\nb"))), "name");
    assert_eq!(refused(with(&["queue"], json!("gpu queue"))), "queue");
    assert_eq!(refused(with(&["queue"], json!("../etc"))), "queue");
    assert_eq!(refused(with(&["clone_of"], json!("run/../x"))), "clone_of");
    assert_eq!(refused(with(&["extras", "aws"], json!({}))), "extras.aws");
    assert_eq!(refused(with(&["extras", "ray"], json!("x"))), "extras.ray");
    let mut v = good();
    v.as_object_mut().unwrap().remove("queue");
    assert_eq!(refused(v), "queue");
    assert_eq!(refused(json!([1, 2])), "");
    let t = json!({"name": "t", "queue": "q", "entry": {"template": "a b"}});
    assert_eq!(refused(t), "entry.template");
    let t = json!({"name": "t", "queue": "q", "entry": {"template": "a", "params": {"x-y": 1}}});
    assert_eq!(refused(t), "entry.params.x-y");
}

#[test]
fn validate_alone_checks_a_spec_built_in_code() {
    let mut spec = JobSpec::from_value(good()).unwrap();
    assert!(spec.validate().is_ok());
    spec.resources.gpus = Some(65);
    assert_eq!(spec.validate().unwrap_err().field, "resources.gpus");
}

fn ev(ts: f64, body: Value) -> JobEvent {
    let mut v = body;
    v["ts"] = json!(ts);
    serde_json::from_value(v).unwrap()
}

fn submitted(ts: f64, retries: u32, priority: i32) -> JobEvent {
    let mut spec = good();
    spec["max_retries"] = json!(retries);
    spec["priority"] = json!(priority);
    ev(ts, json!({"kind": "submitted", "spec": spec, "by": "ada"}))
}

fn job(retries: u32) -> JobState {
    let mut s = JobState::new("j1");
    s.apply(&submitted(1.0, retries, 0)).unwrap();
    s
}

fn apply(s: &mut JobState, ts: f64, body: Value) {
    s.apply(&ev(ts, body)).unwrap();
}

fn to_running(s: &mut JobState) {
    apply(
        s,
        2.0,
        json!({"kind": "claimed", "agent": "gpu-1", "lease_s": 30}),
    );
    apply(
        s,
        3.0,
        json!({"kind": "engine_submitted", "engine_id": "4242"}),
    );
    apply(s, 4.0, json!({"kind": "running", "run": "run-7"}));
}

#[test]
fn the_happy_path() {
    let mut s = job(0);
    assert_eq!(s.status, JobStatus::Queued);
    assert_eq!(s.created_at, Some(1.0));
    assert!(s.is_open());
    apply(
        &mut s,
        2.0,
        json!({"kind": "claimed", "agent": "gpu-1", "lease_s": 30}),
    );
    assert_eq!(
        (s.status, s.agent.as_deref()),
        (JobStatus::Claimed, Some("gpu-1"))
    );
    assert_eq!(s.lease_until, Some(32.0));
    apply(
        &mut s,
        10.0,
        json!({"kind": "lease_renewed", "agent": "gpu-1"}),
    );
    assert_eq!(s.lease_until, Some(40.0));
    apply(
        &mut s,
        11.0,
        json!({"kind": "engine_submitted", "engine_id": "4242"}),
    );
    assert_eq!((s.status, s.attempts), (JobStatus::Submitted, 1));
    apply(
        &mut s,
        12.0,
        json!({"kind": "engine_status", "reason": "Priority"}),
    );
    apply(
        &mut s,
        13.0,
        json!({"kind": "engine_status", "reason": "Priority"}),
    );
    assert_eq!(s.reason.as_deref(), Some("Priority"));
    apply(&mut s, 14.0, json!({"kind": "running", "run": "run-7"}));
    assert_eq!(
        (s.status, s.run.as_deref()),
        (JobStatus::Running, Some("run-7"))
    );
    apply(&mut s, 20.0, json!({"kind": "succeeded"}));
    assert_eq!(s.status, JobStatus::Succeeded);
    assert!(!s.is_open());
    assert_eq!(s.agent, None);
    // A renewal is not a change anyone reads: it stays out of the history.
    let kinds: Vec<&str> = s.history.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "submitted",
            "claimed",
            "engine_submitted",
            "engine_status",
            "running",
            "succeeded"
        ]
    );
    assert_eq!(s.history[3].reason.as_deref(), Some("Priority"));
    let again: JobState = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert_eq!(again, s);
}

#[test]
fn events_are_flat_json_with_a_kind() {
    let e = ev(
        5.5,
        json!({"kind": "failed", "reason": "OOM", "exit_code": 137}),
    );
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        v,
        json!({"kind": "failed", "ts": 5.5, "reason": "OOM", "exit_code": 137})
    );
    assert_eq!(e.body.kind(), "failed");
    let bad = json!({"kind": "exploded", "ts": 1.0});
    assert!(serde_json::from_value::<JobEvent>(bad).is_err());
}

#[test]
fn lease_lost_before_the_engine_requeues_without_an_attempt() {
    let mut s = job(0);
    apply(
        &mut s,
        2.0,
        json!({"kind": "claimed", "agent": "gpu-1", "lease_s": 30}),
    );
    apply(
        &mut s,
        40.0,
        json!({"kind": "lease_lost", "agent": "gpu-1"}),
    );
    assert_eq!(
        (s.status, s.attempts, s.agent.clone()),
        (JobStatus::Queued, 0, None)
    );
    apply(
        &mut s,
        41.0,
        json!({"kind": "claimed", "agent": "gpu-2", "lease_s": 30}),
    );
    apply(
        &mut s,
        42.0,
        json!({"kind": "engine_submitted", "engine_id": "1"}),
    );
    assert_eq!(s.attempts, 1);
}

#[test]
fn lease_lost_at_the_engine_keeps_the_job_there_for_another_agent() {
    let mut s = job(0);
    to_running(&mut s);
    apply(
        &mut s,
        40.0,
        json!({"kind": "lease_lost", "agent": "gpu-1"}),
    );
    assert_eq!((s.status, s.agent.clone()), (JobStatus::Running, None));
    apply(
        &mut s,
        41.0,
        json!({"kind": "claimed", "agent": "gpu-2", "lease_s": 30}),
    );
    assert_eq!((s.status, s.attempts), (JobStatus::Running, 1));
    // Adopted, not started again.
    let again = s.apply(&ev(
        42.0,
        json!({"kind": "engine_submitted", "engine_id": "2"}),
    ));
    assert!(again.is_err());
}

#[test]
fn only_the_holder_renews_or_loses_the_lease() {
    let mut s = job(0);
    apply(
        &mut s,
        2.0,
        json!({"kind": "claimed", "agent": "gpu-1", "lease_s": 30}),
    );
    let stolen = ev(
        3.0,
        json!({"kind": "claimed", "agent": "gpu-2", "lease_s": 30}),
    );
    assert!(s.apply(&stolen).unwrap_err().why.contains("gpu-1"));
    let other = ev(3.0, json!({"kind": "lease_renewed", "agent": "gpu-2"}));
    assert!(s.apply(&other).is_err());
    let other = ev(3.0, json!({"kind": "lease_lost", "agent": "gpu-2"}));
    assert!(s.apply(&other).is_err());
    assert_eq!(s.agent.as_deref(), Some("gpu-1"));
}

#[test]
fn retries_are_counted_and_run_out() {
    let mut s = job(2);
    assert_eq!(s.retries_left, 2);
    for round in 0..2u32 {
        to_running(&mut s);
        apply(
            &mut s,
            5.0,
            json!({"kind": "failed", "reason": "node died", "exit_code": 1}),
        );
        assert!(s.is_open(), "retries left, round {round}");
        let resume = json!({"kind": "requeued", "reason": "retry", "resume_from": "/ck/3.pt"});
        apply(&mut s, 6.0, resume);
        assert_eq!(s.status, JobStatus::Queued);
        assert_eq!(s.retries_left, 1 - round);
        assert_eq!(s.resume_from.as_deref(), Some("/ck/3.pt"));
        assert_eq!(s.engine_id, None);
    }
    to_running(&mut s);
    assert_eq!(s.attempts, 3);
    apply(
        &mut s,
        7.0,
        json!({"kind": "failed", "reason": "node died"}),
    );
    assert!(!s.is_open());
    let err = s
        .apply(&ev(8.0, json!({"kind": "requeued", "reason": "again"})))
        .unwrap_err();
    assert_eq!((err.state, err.event), ("failed", "requeued"));
}

#[test]
fn requeue_needs_a_failure() {
    let mut s = job(3);
    to_running(&mut s);
    let e = ev(5.0, json!({"kind": "requeued", "reason": "why not"}));
    assert_eq!(s.apply(&e).unwrap_err().state, "running");
    assert_eq!(s.retries_left, 3);
}

#[test]
fn cancel_from_each_open_state() {
    let steps = [
        json!({"kind": "claimed", "agent": "gpu-1", "lease_s": 30}),
        json!({"kind": "engine_submitted", "engine_id": "9"}),
        json!({"kind": "running", "run": "run-7"}),
    ];
    for n in 0..=steps.len() {
        let mut s = job(0);
        for (i, step) in steps[..n].iter().enumerate() {
            apply(&mut s, 2.0 + i as f64, step.clone());
        }
        let before = s.status;
        apply(
            &mut s,
            10.0,
            json!({"kind": "cancel_requested", "by": "ada"}),
        );
        assert_eq!(s.status, before, "a request alone changes nothing");
        assert_eq!(s.cancel_requested_by.as_deref(), Some("ada"));
        let twice = ev(11.0, json!({"kind": "cancel_requested", "by": "bob"}));
        assert!(s.apply(&twice).is_err());
        apply(
            &mut s,
            12.0,
            json!({"kind": "cancelled", "reason": "by ada"}),
        );
        assert_eq!(s.status, JobStatus::Cancelled, "from {before:?}");
        assert!(!s.is_open());
    }
    // A queued job with a cancel requested is not handed out.
    let mut s = job(0);
    apply(
        &mut s,
        2.0,
        json!({"kind": "cancel_requested", "by": "ada"}),
    );
    let claim = ev(
        3.0,
        json!({"kind": "claimed", "agent": "gpu-1", "lease_s": 30}),
    );
    assert!(s.apply(&claim).is_err());
}

#[test]
fn terminal_states_are_final() {
    let ends = [
        json!({"kind": "succeeded"}),
        json!({"kind": "failed", "reason": "x"}),
        json!({"kind": "cancelled", "reason": "x"}),
    ];
    let later = [
        json!({"kind": "claimed", "agent": "gpu-1", "lease_s": 30}),
        json!({"kind": "engine_status", "reason": "Resources"}),
        json!({"kind": "running", "run": "r"}),
        json!({"kind": "succeeded"}),
        json!({"kind": "cancel_requested", "by": "ada"}),
        json!({"kind": "cancelled", "reason": "x"}),
        json!({"kind": "requeued", "reason": "x"}),
    ];
    for end in &ends {
        let mut s = job(0);
        to_running(&mut s);
        apply(&mut s, 5.0, end.clone());
        let frozen = s.clone();
        for e in &later {
            let err = s.apply(&ev(6.0, e.clone())).unwrap_err();
            assert_eq!(err.state, frozen.status.as_str());
            assert_eq!(err.event, e["kind"].as_str().unwrap());
            assert!(err.to_string().contains(err.event));
            assert_eq!(s, frozen, "a refused event changes nothing");
        }
    }
}

#[test]
fn out_of_order_events_are_refused() {
    let mut s = JobState::new("j");
    let claim = ev(1.0, json!({"kind": "claimed", "agent": "a", "lease_s": 5}));
    assert_eq!(s.apply(&claim).unwrap_err().state, "unsubmitted");
    let mut s = job(0);
    assert!(s.apply(&submitted(2.0, 0, 0)).is_err());
    for e in [
        json!({"kind": "engine_submitted", "engine_id": "1"}),
        json!({"kind": "running", "run": "r"}),
        json!({"kind": "succeeded"}),
        json!({"kind": "failed", "reason": "x"}),
        json!({"kind": "lease_renewed", "agent": "a"}),
    ] {
        assert_eq!(s.apply(&ev(2.0, e)).unwrap_err().state, "queued");
    }
    apply(
        &mut s,
        2.0,
        json!({"kind": "claimed", "agent": "a", "lease_s": 5}),
    );
    let bad_run = ev(3.0, json!({"kind": "running", "run": "r"}));
    assert!(
        s.apply(&bad_run).is_err(),
        "running before the engine has it"
    );
    let zero = ev(3.0, json!({"kind": "engine_submitted", "engine_id": ""}));
    assert!(s.apply(&zero).is_err());
    let mut nan = ev(3.0, json!({"kind": "engine_submitted", "engine_id": "1"}));
    nan.ts = f64::NAN;
    assert!(s.apply(&nan).is_err());
    assert_eq!(s.status, JobStatus::Claimed);
}

#[test]
fn a_hostile_submission_event_is_refused() {
    let mut spec = good();
    spec["resources"]["gpus"] = json!(1000);
    let e = ev(1.0, json!({"kind": "submitted", "spec": spec, "by": "eve"}));
    let mut s = JobState::new("j");
    assert!(s.apply(&e).unwrap_err().why.contains("resources.gpus"));
    assert_eq!(s, JobState::new("j"));
}

#[test]
fn reasons_and_history_are_bounded() {
    let mut s = job(0);
    to_running(&mut s);
    for i in 0..(MAX_HISTORY * 2) {
        let reason = format!("{i} {}", "é".repeat(MAX_REASON_BYTES));
        apply(
            &mut s,
            5.0 + i as f64,
            json!({"kind": "engine_status", "reason": reason}),
        );
    }
    assert_eq!(s.history.len(), MAX_HISTORY);
    assert_eq!(s.history[0].kind, "submitted");
    assert!(s.reason.as_ref().unwrap().len() <= MAX_REASON_BYTES);
}

#[test]
fn queue_order_is_priority_then_first_come_then_id() {
    let make = |id: &str, ts: f64, priority: i32| {
        let mut s = JobState::new(id);
        s.apply(&submitted(ts, 0, priority)).unwrap();
        s
    };
    let mut jobs = [
        make("c", 3.0, 0),
        make("b", 1.0, 0),
        make("a", 1.0, 0),
        make("z", 9.0, 10),
        make("low", 0.5, -1),
    ];
    jobs.sort_by(queue_order);
    let ids: Vec<&str> = jobs.iter().map(|j| j.job.as_str()).collect();
    assert_eq!(ids, ["z", "a", "b", "c", "low"]);
    assert_eq!(queue_order(&jobs[1], &jobs[1]), Ordering::Equal);
}

#[test]
fn a_waiting_job_can_be_moved_in_its_queue_and_only_then() {
    let mut s = job(0);
    apply(
        &mut s,
        2.0,
        json!({"kind": "priority_changed", "priority": 50, "by": "ada"}),
    );
    assert_eq!(s.priority, 50);
    assert_eq!(
        s.history.last().unwrap().reason.as_deref(),
        Some("priority 0 → 50 by ada")
    );
    let big = ev(
        3.0,
        json!({"kind": "priority_changed", "priority": 2_000_000, "by": "ada"}),
    );
    assert!(s.apply(&big).is_err());
    to_running(&mut s);
    let late = ev(
        9.0,
        json!({"kind": "priority_changed", "priority": 1, "by": "ada"}),
    );
    assert_eq!(s.apply(&late).unwrap_err().state, "running");
    assert_eq!(s.priority, 50);
}
