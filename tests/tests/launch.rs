//! Launching jobs end to end on the local engine: a real relay with a launch config, real
//! `stepwatch agent` processes, real Python trainers as the jobs. Submit → claimed →
//! started → running (its run live) → succeeded; two-stage cancel; retry resuming from
//! the last checkpoint; an agent killed with `kill -9` hands its job on, started once;
//! who may launch what; the run token's reach; the job stream.

use serde_json::{json, Value};
use std::time::Duration;
use stepwatch_e2e::*;

const T: Duration = Duration::from_secs(60);

fn job_spec(name: &str, params: Value) -> Value {
    json!({"name": name, "queue": "local", "entry": {"template": "train", "params": params}})
}

#[test]
fn a_template_job_runs_live_reports_its_output_and_succeeds() {
    let dir = TempDir::new("launch-ok");
    let cfg = local_launch_config(&dir.0, 10, 5, "");
    let relay = Relay::start(&dir.0.join("data"), &["--launch", cfg.to_str().unwrap()]);
    // No agent yet: the submission says so at once, and the job says why it waits.
    let s = relay.submit(&job_spec("Resnet 50 / lr 0.1", json!({"steps": 40})));
    let (job, run) = (s["job"].as_str().unwrap(), s["run"].as_str().unwrap());
    assert!(run.starts_with("resnet-50-lr-0-1-"), "{run}");
    assert!(
        s["warnings"][0].as_str().unwrap().contains("no live agent"),
        "{s}"
    );
    assert_eq!(s["position"], 1);
    // A second job waits behind it, until it is moved up.
    let second = relay.submit(&job_spec("urgent", json!({"steps": 5})));
    let second = second["job"].as_str().unwrap();
    assert_eq!(relay.job(second)["position"], 2);
    let (c, v) = relay.post_json(
        &format!("/api/jobs/{second}/priority"),
        &json!({"priority": 10}),
        None,
    );
    assert_eq!((c, v["position"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(relay.job(job)["position"], 2);
    let v = relay.job(job);
    assert!(
        v["waiting"].as_str().unwrap().contains("no live agent"),
        "{v}"
    );
    assert_eq!(v["agent_alive"], false);

    let agent = Agent::start(&relay, &dir.0, "local", "local", "a1", &[]);
    let v = relay.wait_job(job, "running", T);
    assert_eq!(v["run"], run);
    assert_eq!(v["agent"], "a1");
    assert_eq!(v["agent_alive"], true);
    // The urgent one went first.
    let claimed_at = |view: &Value| {
        view["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["kind"] == "claimed")
            .and_then(|h| h["ts"].as_f64())
            .unwrap()
    };
    let urgent = relay.wait_job(second, "succeeded", T);
    assert!(
        claimed_at(&urgent) < claimed_at(&v),
        "the job moved up is claimed first"
    );
    let (c, _) = relay.post_json(
        &format!("/api/jobs/{job}/priority"),
        &json!({"priority": 1}),
        None,
    );
    assert_eq!(c, 409, "a running job is not moved");
    let v = relay.wait_job(job, "succeeded", T);
    assert_eq!(v["attempts"], 1);
    assert_eq!(
        history_kinds(&v),
        [
            "submitted",
            "claimed",
            "engine_submitted",
            "running",
            "succeeded"
        ]
    );
    // The trainer reported to the job's run, with no code of its own for it.
    let st = relay.get_ok(&format!("/api/runs/{run}"));
    assert_eq!(st["status"], "completed", "{st}");
    assert_eq!(st["step"], 40);
    // What it printed reached the run's log through the agent.
    let events = relay.all_events(run);
    let printed: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "log" && e["logger"] == "stdout")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        printed
            .iter()
            .any(|m| m.starts_with(&format!("run {run} job {job}"))),
        "{printed:?}"
    );
    assert!(printed.contains(&"step 40"), "{printed:?}");
    // The run knows its job.
    assert_eq!(relay.get_ok(&format!("/api/runs/{run}/job"))["job"], job);
    let queues = relay.get_ok("/api/queues");
    assert_eq!(queues[0]["agents"][0]["agent"], "a1");
    drop(agent);
}

#[test]
fn a_failed_job_is_retried_and_its_run_continues_from_the_last_checkpoint() {
    let dir = TempDir::new("launch-retry");
    let cfg = local_launch_config(&dir.0, 10, 5, "");
    let relay = Relay::start(&dir.0.join("data"), &["--launch", cfg.to_str().unwrap()]);
    let _agent = Agent::start(&relay, &dir.0, "local", "local", "a1", &[]);
    let mut spec = job_spec("flaky", json!({"steps": 50, "fail_at": 25}));
    spec["max_retries"] = json!(1);
    let s = relay.submit(&spec);
    let (job, run) = (s["job"].as_str().unwrap(), s["run"].as_str().unwrap());
    let v = relay.wait_job(job, "succeeded", T);
    assert_eq!(v["attempts"], 2, "{v}");
    assert_eq!(v["retries_left"], 0);
    assert_eq!(v["resume_from"], "/tmp/ckpt/step-20.pt");
    let kinds = history_kinds(&v);
    assert!(
        kinds.windows(2).any(|w| w == ["failed", "requeued"]),
        "{kinds:?}"
    );
    let failed = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["kind"] == "failed")
        .unwrap();
    assert!(
        failed["reason"].as_str().unwrap().contains("status 3"),
        "{failed}"
    );
    // One run across both attempts: the second starts after step 20, not from 0.
    let steps: Vec<u64> = relay
        .all_events(run)
        .iter()
        .filter(|e| e["event"] == "batch_end")
        .filter_map(|e| e["step"].as_u64())
        .collect();
    let restart = steps.windows(2).position(|w| w[1] <= w[0]).unwrap();
    assert_eq!(steps[restart], 25, "{steps:?}");
    assert_eq!(steps[restart + 1], 21, "{steps:?}");
    assert_eq!(*steps.last().unwrap(), 50);
}

#[test]
fn cancel_stops_the_trainer_first_and_kills_what_ignores_it() {
    let dir = TempDir::new("launch-cancel");
    let stubborn = format!(
        r#"
[[templates]]
name = "stubborn"
queue = "local"
cwd = {cwd:?}
argv = ["/bin/sh", "-c", "trap '' TERM; echo $$ > {{pidfile}}; while true; do sleep 0.2; done"]
params = [{{ name = "pidfile", kind = {{ type = "path" }} }}]
"#,
        cwd = dir.0.to_string_lossy()
    );
    let cfg = local_launch_config(&dir.0, 10, 2, &stubborn);
    let relay = Relay::start(&dir.0.join("data"), &["--launch", cfg.to_str().unwrap()]);
    let _agent = Agent::start(&relay, &dir.0, "local", "local", "a1", &[]);

    // A trainer on the SDK: the stop command ends it within the grace period.
    let s = relay.submit(&job_spec("long", json!({"steps": 100000})));
    let (job, run) = (s["job"].as_str().unwrap(), s["run"].as_str().unwrap());
    relay.wait_job(job, "running", T);
    wait_until("the run is live", T, || {
        let (c, st) = relay.get(&format!("/api/runs/{run}"));
        (c == 200 && st["status"] == "running").then_some(())
    });
    let (c, ans) = relay.post_json(&format!("/api/jobs/{job}/cancel"), &json!({}), None);
    assert_eq!(c, 202, "{ans}");
    assert!(ans["stop_command"]["command_id"].is_string(), "{ans}");
    let v = relay.wait_job(job, "cancelled", T);
    assert_eq!(v["reason"], "ended after the stop command", "{v}");
    let st = relay.get_ok(&format!("/api/runs/{run}"));
    assert_eq!(st["status"], "stopped", "{st}");
    let cmd = st["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["command"] == "stop")
        .cloned()
        .unwrap();
    assert_eq!(cmd["sender"], "job-cancel:dashboard", "{cmd}");

    // A job that ignores SIGTERM (and has no trainer to hear the command) is killed.
    let pidfile = "stubborn.pid";
    let mut spec = json!({"name": "stubborn", "queue": "local",
        "entry": {"template": "stubborn", "params": {"pidfile": pidfile}}});
    let s = relay.submit(&spec);
    let job = s["job"].as_str().unwrap();
    let pid: u32 = wait_until("the job's pid", T, || {
        std::fs::read_to_string(dir.0.join(pidfile))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    });
    assert!(pid_alive(pid));
    relay.post_json(&format!("/api/jobs/{job}/cancel"), &json!({}), None);
    let v = relay.wait_job(job, "cancelled", T);
    assert!(
        v["reason"].as_str().unwrap().starts_with("killed after"),
        "{v}"
    );
    assert!(
        !pid_alive(pid),
        "the job's process {pid} outlived the cancel"
    );
    // A finished job cannot be cancelled twice; it can be retried.
    let (c, _) = relay.post_json(&format!("/api/jobs/{job}/cancel"), &json!({}), None);
    assert_eq!(c, 409);
    spec["name"] = json!("again");
    let (c, again) = relay.post_json(&format!("/api/jobs/{job}/retry"), &json!({}), None);
    assert_eq!(c, 201, "{again}");
    assert_eq!(again["run"], s["run"], "a retry reports to the same run");
    relay.post_json(
        &format!("/api/jobs/{}/cancel", again["job"].as_str().unwrap()),
        &json!({}),
        None,
    );
}

#[test]
fn an_agent_killed_with_kill_9_hands_its_running_job_on_and_it_is_started_once() {
    let dir = TempDir::new("launch-kill9");
    let cfg = local_launch_config(&dir.0, 20, 5, "");
    let relay = Relay::start(&dir.0.join("data"), &["--launch", cfg.to_str().unwrap()]);
    let marker = dir.0.join("starts.txt");
    let mut a1 = Agent::start(&relay, &dir.0, "local", "local", "a1", &[]);
    let s = relay.submit(&job_spec(
        "survivor",
        json!({"steps": 1500, "marker": marker.to_str().unwrap()}),
    ));
    let job = s["job"].as_str().unwrap();
    relay.wait_job(job, "running", T);
    a1.kill9();
    // The job runs on without its agent; the relay says its agent stopped answering.
    let v = wait_until("the agent is seen dead", T, || {
        let v = relay.job(job);
        (v["agent_alive"] == false).then_some(v)
    });
    assert!(
        v["waiting"].as_str().unwrap().contains("stopped answering"),
        "{v}"
    );
    // A second agent (on the same machine, sharing the engine's state) adopts it once the
    // lease has run out, and does not start it again.
    let state = dir.0.join("agent-a1");
    let _a2 = Agent::start(
        &relay,
        &dir.0,
        "local",
        "local",
        "a2",
        &["--state-dir", state.to_str().unwrap()],
    );
    let v = wait_until("a2 holds the job", T, || {
        let v = relay.job(job);
        (v["agent"] == "a2").then_some(v)
    });
    assert_eq!(v["status"], "running");
    assert_eq!(v["attempts"], 1);
    let v = relay.wait_job(job, "succeeded", Duration::from_secs(90));
    assert_eq!(v["attempts"], 1);
    let kinds = history_kinds(&v);
    assert!(kinds.contains(&"lease_lost".to_string()), "{kinds:?}");
    let starts = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(
        starts.lines().count(),
        1,
        "started more than once: {starts}"
    );
}

/// A relay with logins (an operator, a viewer, an agent, besides auth_config's users) and
/// the local launch config.
fn auth_relay(dir: &TempDir) -> Relay {
    let users = r#"
[[users]]
name = "opal"
role = "operator"
tokens = ["operator-token-0123456789"]

[[users]]
name = "vik"
role = "viewer"
tokens = ["viewer-token-0123456789ab"]

[[users]]
name = "agent7"
role = "agent"
tokens = ["agent-token-0123456789abc"]
"#;
    let auth = auth_config(&dir.0, users);
    let cfg = local_launch_config(&dir.0, 10, 5, "");
    Relay::start(
        &dir.0.join("data"),
        &[
            "--launch",
            cfg.to_str().expect("a UTF-8 temp path"),
            "--config",
            auth.to_str().expect("a UTF-8 temp path"),
        ],
    )
}

#[test]
fn only_the_queues_roles_may_launch_and_the_run_token_writes_one_run() {
    let dir = TempDir::new("launch-auth");
    let relay = auth_relay(&dir);
    let (op, viewer, agent) = (
        Some("operator-token-0123456789"),
        Some("viewer-token-0123456789ab"),
        Some("agent-token-0123456789abc"),
    );
    let spec = job_spec("t", json!({"steps": 30}));
    let (c, v) = relay.post_json("/api/jobs", &spec, viewer);
    assert_eq!(c, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("viewer"), "{v}");
    let (c, _) = relay.post_json("/api/jobs", &spec, agent);
    assert_eq!(c, 403);
    let free = json!({"name": "x", "queue": "local", "entry": {"argv": ["/bin/echo", "hi"]}});
    let (c, v) = relay.post_json("/api/jobs", &free, op);
    assert_eq!(c, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("free-form"), "{v}");
    let (c, _) = relay.post_json("/api/jobs/preview", &free, Some(ADMIN_TOKEN));
    assert_eq!(c, 200);
    // An operator submits; only an agent (or admin) may claim.
    let (c, s) = relay.post_json("/api/jobs", &spec, op);
    assert_eq!(c, 201, "{s}");
    let (c, _) = relay.post_json("/api/queues/local/claim", &json!({"agent": "x"}), op);
    assert_eq!(c, 403);
    let (c, launch) = relay.post_json("/api/queues/local/claim", &json!({"agent": "x"}), agent);
    assert_eq!(c, 200, "{launch}");
    let token = launch["env"]["STEPWATCH_TOKEN"]
        .as_str()
        .unwrap()
        .to_string();
    let run = launch["run"].as_str().unwrap();
    assert_eq!(launch["env"]["STEPWATCH_RUN"], run);
    // The job's token writes its run, and no other.
    let ev = json!({"event": "training_start", "total_epochs": 1});
    let (c, v) = relay.post_json(&format!("/api/runs/{run}/events"), &ev, Some(&token));
    assert_eq!(c, 200, "{v}");
    let (c, v) = relay.post_json("/api/runs/ci-other/events", &ev, Some(&token));
    assert_eq!(c, 403, "{v}");
    let (c, _) = relay.post_json("/api/jobs", &spec, Some(&token));
    assert_eq!(c, 403);
    let last = if token.ends_with('0') { "1" } else { "0" };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    let (c, _) = relay.post_json(&format!("/api/runs/{run}/events"), &ev, Some(&forged));
    assert_eq!(c, 401);
    // A report from an agent that does not hold the job is refused.
    let job = launch["job"].as_str().unwrap();
    let (c, v) = relay.post_json(
        &format!("/api/jobs/{job}/report"),
        &json!({"agent": "y", "kind": "succeeded"}),
        agent,
    );
    assert_eq!(c, 409, "{v}");
    // Once the job has ended, its token writes nothing.
    let (c, v) = relay.post_json(
        &format!("/api/jobs/{job}/report"),
        &json!({"agent": "x", "kind": "failed", "reason": "test"}),
        agent,
    );
    assert_eq!(c, 200, "{v}");
    let (c, _) = relay.post_json(&format!("/api/runs/{run}/events"), &ev, Some(&token));
    assert_eq!(c, 401);
}

#[test]
fn the_job_stream_shows_each_change_live() {
    let dir = TempDir::new("launch-stream");
    let cfg = local_launch_config(&dir.0, 10, 5, "");
    let relay = Relay::start(&dir.0.join("data"), &["--launch", cfg.to_str().unwrap()]);
    let _agent = Agent::start(&relay, &dir.0, "local", "local", "a1", &[]);
    let url = format!("{}/api/jobs/stream?queue=local", relay.url);
    let msgs = sse_collect(&url, None, 5, T, || {
        relay.submit(&job_spec("streamed", json!({"steps": 10})));
    });
    let statuses: Vec<&str> = msgs
        .iter()
        .filter(|m| m.event == "job")
        .filter_map(|m| m.data["status"].as_str())
        .collect();
    assert_eq!(statuses[0], "queued", "{statuses:?}");
    assert!(
        statuses.contains(&"running") || statuses.contains(&"submitted"),
        "{statuses:?}"
    );
}

#[test]
fn parameters_are_typed_and_secrets_stay_with_admins() {
    let dir = TempDir::new("launch-params");
    let relay = auth_relay(&dir);
    let op = Some("operator-token-0123456789");
    let spec = job_spec("t", json!({"steps": 30}));
    // An admin's free-form job: its environment's values are shown to admins only.
    let secret = json!({"name": "s", "queue": "local",
        "entry": {"argv": ["/bin/true"], "env": {"API_KEY": "s3cret"}}});
    let (c, s) = relay.post_json("/api/jobs", &secret, Some(ADMIN_TOKEN));
    assert_eq!(c, 201, "{s}");
    let sid = s["job"].as_str().unwrap().to_string();
    let (_, seen) = relay.get_as(&format!("/api/jobs/{sid}"), "operator-token-0123456789");
    assert_eq!(seen["launch"]["env"]["API_KEY"], "(hidden)", "{seen}");
    assert_eq!(
        seen["spec"]["entry"]["env"]["API_KEY"], "(hidden)",
        "{seen}"
    );
    let (_, seen) = relay.get_as(&format!("/api/jobs/{sid}"), ADMIN_TOKEN);
    assert_eq!(seen["launch"]["env"]["API_KEY"], "s3cret");
    let (c, _) = relay.post_json(&format!("/api/jobs/{sid}/cancel"), &json!({}), op);
    assert_eq!(c, 202);
    // Typed parameters: a bad value is refused naming its field; nothing is queued.
    for (params, field) in [
        (json!({"steps": "30; rm -rf /"}), "entry.params.steps"),
        (json!({"steps": 0}), "entry.params.steps"),
        (json!({"steps": 5, "shell": "x"}), "entry.params.shell"),
        (json!({"steps": 5, "marker": "a\nb"}), "entry.params.marker"),
    ] {
        let (c, v) = relay.post_json("/api/jobs", &job_spec("t", params.clone()), op);
        assert_eq!(
            (c, v["field"].as_str()),
            (400, Some(field)),
            "{params}: {v}"
        );
    }
    let mut bad = spec.clone();
    bad["entry"] = json!({"argv": ["x"], "env": {"STEPWATCH_TOKEN": "mine"}});
    let (c, v) = relay.post_json("/api/jobs", &bad, Some(ADMIN_TOKEN));
    assert_eq!(
        (c, v["field"].as_str()),
        (400, Some("entry.env.STEPWATCH_TOKEN")),
        "{v}"
    );
    let mut big = spec.clone();
    big["resources"] = json!({"gpus": 3});
    let (c, v) = relay.post_json("/api/jobs", &big, op);
    assert_eq!(
        (c, v["field"].as_str()),
        (400, Some("resources.gpus")),
        "{v}"
    );
    let (c, list) = relay.get_as("/api/jobs?open=1", "operator-token-0123456789");
    assert_eq!(
        (c, list.as_array().map(Vec::len)),
        (200, Some(0)),
        "nothing queued: {list}"
    );
}
