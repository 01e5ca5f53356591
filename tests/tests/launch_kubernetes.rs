//! The Kubernetes engine against the API stand-in (`tests/kube-standin/`, NOT a real
//! kube-apiserver: none can be installed here): Jobs created once per key, their processes
//! really run (the image ignored), status from the Job's conditions and pods, argv and env
//! byte-exact, stop / kill deleting with Background propagation and the pods ending, and
//! manifests refused before any request. End to end: a relay, `stepwatch agent --engine
//! kubernetes` and a real Python trainer on the SDK as the Job's command: running with its
//! run live, succeeded; cancelled with no pod left.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use stepwatch_agent::engines::{build, EngineOptions};
use stepwatch_agent::{Engine, EngineError, Observed};
use stepwatch_e2e::*;
use stepwatch_events::jobs::Launch;

fn engine_with(k: &KubeStandin, extra: &[(&str, &str)]) -> std::sync::Arc<dyn Engine> {
    engine_in(k, extra, std::path::Path::new(""))
}

/// An engine keeping its state (the log cursors) in `state_dir`.
fn engine_in(
    k: &KubeStandin,
    extra: &[(&str, &str)],
    state_dir: &std::path::Path,
) -> std::sync::Arc<dyn Engine> {
    let mut opts = BTreeMap::new();
    opts.insert("api".to_string(), k.url());
    opts.insert("namespace".to_string(), "ml".to_string());
    opts.insert("token_file".to_string(), k.token_file.display().to_string());
    for (a, b) in extra {
        opts.insert(a.to_string(), b.to_string());
    }
    build(
        "kubernetes",
        &EngineOptions {
            opts,
            state_dir: state_dir.to_path_buf(),
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

fn engine(k: &KubeStandin) -> std::sync::Arc<dyn Engine> {
    engine_with(k, &[])
}

fn wait_status(e: &dyn Engine, id: &str, l: &Launch, want: fn(&Observed) -> bool) -> Observed {
    wait_until("an engine status", Duration::from_secs(20), || {
        let o = e.status(id, l).unwrap();
        want(&o).then_some(o)
    })
}

#[test]
fn a_job_runs_to_success_and_a_failing_one_reports_its_exit_code() {
    let k = KubeStandin::start();
    let e = engine(&k);
    let ok = kube_launch(
        "j1",
        "import time; print('hello from the pod', flush=True); time.sleep(1.5)",
        &[],
    );
    let id = e.start(&ok).unwrap();
    assert_eq!(id, "ml/sw-j1-1");
    wait_status(e.as_ref(), &id, &ok, |o| *o == Observed::Running);
    let lines = wait_until("the pod's log", Duration::from_secs(10), || {
        let l = e.output(&id, 100);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(lines[0].text, "hello from the pod");
    wait_status(e.as_ref(), &id, &ok, |o| *o == Observed::Succeeded);
    // Nothing printed twice.
    assert!(e.output(&id, 100).is_empty());
    // What the API server got: the Job as batch/v1 defines it.
    let posts = k.requests_to("POST", "/apis/batch/v1/namespaces/ml/jobs");
    let job = &posts[0]["body"];
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(job["metadata"]["labels"]["stepwatch.dev/job"], "j1");
    assert_eq!(job["metadata"]["labels"]["stepwatch.dev/run"], "demo-j1");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "python:3.11");
    assert_eq!(container["command"], json!(ok.argv));

    let bad = kube_launch("j2", "import sys; print('bye'); sys.exit(3)", &[]);
    let id = e.start(&bad).unwrap();
    let Observed::Failed { reason, exit_code } =
        wait_status(e.as_ref(), &id, &bad, Observed::is_final)
    else {
        panic!("not failed")
    };
    assert_eq!(exit_code, Some(3));
    assert!(reason.contains("BackoffLimitExceeded"), "{reason}");
}

#[test]
fn the_same_key_twice_is_one_job_and_a_strangers_job_is_refused() {
    let k = KubeStandin::start();
    let e = engine(&k);
    let l = kube_launch("j3", "import time; time.sleep(30)", &[]);
    let first = e.start(&l).unwrap();
    // An agent that died after creating it: the next one asks again.
    let again = engine(&k).start(&l).unwrap();
    assert_eq!(first, again);
    assert_eq!(k.requests_to("POST", "/jobs").len(), 2);
    assert_eq!(k.pods().len(), 1, "a second Job was created");
    // Another job whose key maps to the same name is not adopted.
    let mut other = kube_launch("j4", "print(1)", &[]);
    other.key = l.key.clone();
    let err = e.start(&other).unwrap_err();
    assert!(
        matches!(&err, EngineError::Refused(m) if m.contains("not this job's")),
        "{err:?}"
    );
    assert_eq!(k.pods().len(), 1);
    e.kill(&first).unwrap();
}

#[test]
fn hostile_argv_env_and_cwd_arrive_byte_exact() {
    let k = KubeStandin::start();
    let e = engine(&k);
    let dir = TempDir::new("kube-cwd");
    let hostile = [
        "$(touch /tmp/pwned)",
        "a; rm -rf /",
        "'\"quoted\"'",
        "`id`",
        "&& echo x || true",
        "{{name}}",
        "line\nbreak",
        "ünï\tcode",
        "",
    ];
    let code = "import sys, json, os; print(json.dumps({'argv': sys.argv[1:], \
                'env': os.environ.get('HOSTILE'), 'cwd': os.getcwd()}))";
    let mut l = kube_launch("j5", code, &hostile);
    l.env.insert("HOSTILE".into(), "$(x); '\"' `y`".into());
    l.cwd = Some(dir.0.display().to_string());
    let id = e.start(&l).unwrap();
    wait_status(e.as_ref(), &id, &l, |o| *o == Observed::Succeeded);
    let lines = e.output(&id, 100);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let got: Value = serde_json::from_str(&lines[0].text).unwrap();
    assert_eq!(got["argv"], json!(hostile));
    assert_eq!(got["env"], "$(x); '\"' `y`");
    assert_eq!(got["cwd"], dir.0.display().to_string());
}

/// A trainer that says when it is asked to stop and exits 143, or ignores SIGTERM.
const TERM_TRAINER: &str = "import signal, sys, time
def on_term(*_):
    print('got SIGTERM', flush=True)
    sys.exit(143)
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[1:] == ['ignore'] else on_term)
print('started', flush=True)
time.sleep(120)";

#[test]
fn stop_deletes_the_job_with_background_propagation_and_the_pod_gets_sigterm() {
    let k = KubeStandin::start();
    let e = engine(&k);
    let l = kube_launch("j6", TERM_TRAINER, &[]);
    let id = e.start(&l).unwrap();
    wait_status(e.as_ref(), &id, &l, |o| *o == Observed::Running);
    wait_until("the trainer started", Duration::from_secs(10), || {
        e.output(&id, 10)
            .iter()
            .any(|x| x.text == "started")
            .then_some(())
    });
    e.stop(&id).unwrap();
    let deletes = k.requests_to("DELETE", "/jobs/sw-j6-1");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0]["body"]["propagationPolicy"], "Background");
    assert!(deletes[0]["body"].get("gracePeriodSeconds").is_none());
    wait_until("the pod's process ended", Duration::from_secs(10), || {
        (!k.pod_alive("sw-j6-1")).then_some(())
    });
    assert_eq!(
        k.pod_of("sw-j6-1")["exit"],
        143,
        "not ended by its SIGTERM handler"
    );
    wait_status(e.as_ref(), &id, &l, |o| *o == Observed::Gone);
}

#[test]
fn kill_ends_a_pod_that_ignores_sigterm_at_once() {
    let k = KubeStandin::start();
    let e = engine(&k);
    let l = kube_launch("j7", TERM_TRAINER, &["ignore"]);
    let id = e.start(&l).unwrap();
    wait_status(e.as_ref(), &id, &l, |o| *o == Observed::Running);
    wait_until("the trainer started", Duration::from_secs(10), || {
        e.output(&id, 10)
            .iter()
            .any(|x| x.text == "started")
            .then_some(())
    });
    e.kill(&id).unwrap();
    let deletes = k.requests_to("DELETE", "/jobs/sw-j7-1");
    assert_eq!(deletes[0]["body"]["propagationPolicy"], "Background");
    assert_eq!(deletes[0]["body"]["gracePeriodSeconds"], 0);
    let pod = k.pod_of("sw-j7-1");
    let pod_deletes = k.requests_to(
        "DELETE",
        &format!("/pods/{}", pod["name"].as_str().unwrap()),
    );
    assert_eq!(pod_deletes[0]["body"]["gracePeriodSeconds"], 0);
    // The garbage collector alone would give the pod 30 s: it must be gone well before.
    wait_until("the pod's process ended", Duration::from_secs(3), || {
        (!k.pod_alive("sw-j7-1")).then_some(())
    });
    wait_status(e.as_ref(), &id, &l, |o| *o == Observed::Gone);
}

#[test]
fn kill_ends_the_pods_of_a_job_deleted_without_propagation() {
    let k = KubeStandin::start();
    let e = engine(&k);
    let l = kube_launch("j8", TERM_TRAINER, &["ignore"]);
    let id = e.start(&l).unwrap();
    wait_status(e.as_ref(), &id, &l, |o| *o == Observed::Running);
    // Someone deletes the Job the way batch/v1 defaults it: the pods are orphaned.
    let (code, _) = k.api("DELETE", "/apis/batch/v1/namespaces/ml/jobs/sw-j8-1", None);
    assert_eq!(code, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        k.pod_alive("sw-j8-1"),
        "the stand-in did not orphan the pod"
    );
    // Its pod still runs: the job is not over.
    assert_eq!(e.status(&id, &l).unwrap(), Observed::Running);
    e.kill(&id).unwrap();
    wait_until(
        "the orphaned pod's process ended",
        Duration::from_secs(3),
        || (!k.pod_alive("sw-j8-1")).then_some(()),
    );
    wait_status(e.as_ref(), &id, &l, |o| *o == Observed::Gone);
}

#[test]
fn an_agent_after_a_restart_forwards_only_new_output_and_orphans_say_how_they_ended() {
    let k = KubeStandin::start();
    let state = TempDir::new("kube-state");
    let code = "import time; print('first', flush=True); time.sleep(1.5); print('second')";
    let l = kube_launch("j16", code, &[]);
    let id = engine_in(&k, &[], &state.0).start(&l).unwrap();
    let before = engine_in(&k, &[], &state.0);
    wait_until("the first line", Duration::from_secs(10), || {
        let lines = before.output(&id, 10);
        (!lines.is_empty()).then(|| assert_eq!(lines[0].text, "first"))
    });
    // A new agent process (same state folder) adopts the job.
    let after = engine_in(&k, &[], &state.0);
    wait_status(after.as_ref(), &id, &l, |o| *o == Observed::Succeeded);
    let texts: Vec<String> = after.output(&id, 10).into_iter().map(|x| x.text).collect();
    assert_eq!(texts, ["second"]);

    // A Job deleted the batch/v1 default way after its pod ended: the pod tells.
    let e = engine(&k);
    let l = kube_launch("j17", "import sys; sys.exit(4)", &[]);
    let id = e.start(&l).unwrap();
    wait_status(e.as_ref(), &id, &l, Observed::is_final);
    let (code, _) = k.api("DELETE", "/apis/batch/v1/namespaces/ml/jobs/sw-j17-1", None);
    assert_eq!(code, 200);
    let Observed::Failed { exit_code, .. } = e.status(&id, &l).unwrap() else {
        panic!("not failed")
    };
    assert_eq!(exit_code, Some(4));
}

#[test]
fn a_queues_manifest_with_retries_forwards_each_pods_output() {
    let k = KubeStandin::start();
    let dir = TempDir::new("kube-retry");
    let path = dir.0.join("job.json");
    let manifest = json!({"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": 1,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main",
        "image": "{{image}}", "command": "{{command}}", "env": "{{env}}"}]}}}});
    std::fs::write(&path, manifest.to_string()).unwrap();
    let e = engine_with(&k, &[("manifest", path.to_str().unwrap())]);
    let code = "import os, sys, time\nm = sys.argv[1]\nif not os.path.exists(m):\n    \
                open(m, 'w').close(); print('attempt 1', flush=True); time.sleep(1); \
                sys.exit(1)\nprint('attempt 2', flush=True); time.sleep(1)";
    let marker = dir.0.join("marker");
    let l = kube_launch("j18", code, &[marker.to_str().unwrap()]);
    let id = e.start(&l).unwrap();
    let mut got = Vec::new();
    wait_until("the second attempt's end", Duration::from_secs(20), || {
        let done = e.status(&id, &l).unwrap() == Observed::Succeeded;
        got.extend(e.output(&id, 100).into_iter().map(|x| x.text));
        done.then_some(())
    });
    got.extend(e.output(&id, 100).into_iter().map(|x| x.text));
    assert_eq!(got, ["attempt 1", "attempt 2"]);
    assert_eq!(k.pods().len(), 2);
}

#[test]
fn a_job_without_an_image_or_with_unknown_extras_is_refused_before_any_request() {
    let k = KubeStandin::start();
    let e = engine(&k);
    let mut l = kube_launch("j9", "print(1)", &[]);
    l.extras.clear();
    let err = e.start(&l).unwrap_err();
    assert!(
        matches!(&err, EngineError::Refused(m) if m.contains("image")),
        "{err:?}"
    );
    l.extras.insert("image".into(), json!("python:3.11"));
    l.extras.insert("host_network".into(), json!(true));
    let err = e.start(&l).unwrap_err();
    assert!(
        matches!(&err, EngineError::Refused(m) if m.contains("host_network")),
        "{err:?}"
    );
    // A queue's manifest whose container names no image.
    let dir = TempDir::new("kube-manifest");
    let path = dir.0.join("job.json");
    let manifest = json!({"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "main", "command": "{{command}}"}]}}}});
    std::fs::write(&path, manifest.to_string()).unwrap();
    let custom = engine_with(&k, &[("manifest", path.to_str().unwrap())]);
    l.extras.remove("host_network");
    let err = custom.start(&l).unwrap_err();
    assert!(
        matches!(&err, EngineError::Refused(m) if m.contains("containers[0].image")),
        "{err:?}"
    );
    assert!(k.requests().is_empty(), "{:?}", k.requests());
    assert!(k.pods().is_empty());
}

#[test]
fn the_stand_in_refuses_what_the_api_server_would() {
    let k = KubeStandin::start();
    let job = |name: &str, container: Value| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
               "spec": {"template": {"spec": {"restartPolicy": "Never",
               "containers": [container]}}}})
    };
    let jobs = "/apis/batch/v1/namespaces/ml/jobs";
    let no_image = job("ok", json!({"name": "c", "command": ["true"]}));
    let (code, status) = k.api("POST", jobs, Some(&no_image));
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.template.spec.containers[0].image"
    );
    let shell = job(
        "ok",
        json!({"name": "c", "image": "i", "command": "echo hi"}),
    );
    assert_eq!(k.api("POST", jobs, Some(&shell)).0, 422);
    let bad_name = job(
        "Not_DNS",
        json!({"name": "c", "image": "i", "command": ["true"]}),
    );
    assert_eq!(k.api("POST", jobs, Some(&bad_name)).0, 422);
    let (code, status) = k.api_get("/apis/batch/v1/namespaces/ml/jobs/nope");
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));
    assert!(k.pods().is_empty());
    // What kubectl itself writes for a Job is taken, and runs.
    let Ok(out) = std::process::Command::new("kubectl")
        .args([
            "create",
            "job",
            "from-kubectl",
            "--image=python:3.11",
            "--dry-run=client",
        ])
        .args([
            "-o",
            "json",
            "--",
            python().to_str().unwrap(),
            "-c",
            "print('hi')",
        ])
        .output()
    else {
        eprintln!("no kubectl here: skipping its manifest");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (code, created) = k.api("POST", jobs, Some(&manifest));
    assert_eq!(code, 201, "{created}");
    assert!(created["metadata"]["uid"].is_string());
    wait_until("kubectl's job ran", Duration::from_secs(10), || {
        let (_, j) = k.api_get(&format!("{jobs}/from-kubectl"));
        (j["status"]["succeeded"] == 1).then_some(())
    });
}

#[test]
fn pending_jobs_say_why_and_a_time_limit_ends_a_job() {
    let k = KubeStandin::start();
    let e = engine(&k);
    let mut gpu = kube_launch("j10", "print(1)", &[]);
    gpu.resources.gpus = Some(1);
    let id = e.start(&gpu).unwrap();
    let Observed::Pending { reason } = e.status(&id, &gpu).unwrap() else {
        panic!("not pending")
    };
    assert!(
        reason.starts_with("Unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu"),
        "{reason}"
    );
    e.kill(&id).unwrap();

    let mut pull = kube_launch("j11", "print(1)", &[]);
    pull.extras
        .insert("image".into(), json!("standin.invalid/nope:1"));
    let id = e.start(&pull).unwrap();
    let Observed::Pending { reason } = e.status(&id, &pull).unwrap() else {
        panic!("not pending")
    };
    assert!(reason.starts_with("ImagePullBackOff"), "{reason}");
    e.kill(&id).unwrap();
    wait_status(e.as_ref(), &id, &pull, |o| *o == Observed::Gone);

    let mut slow = kube_launch("j12", "import time; time.sleep(60)", &[]);
    slow.resources.time_limit_s = Some(1);
    let id = e.start(&slow).unwrap();
    let Observed::Failed { reason, .. } = wait_status(e.as_ref(), &id, &slow, Observed::is_final)
    else {
        panic!("not failed")
    };
    assert!(reason.starts_with("DeadlineExceeded"), "{reason}");
    wait_until("the pod's process ended", Duration::from_secs(40), || {
        (!k.pod_alive("sw-j12-1")).then_some(())
    });
}

#[test]
fn output_pages_through_the_log_without_losing_or_repeating_a_line() {
    let k = KubeStandin::start();
    let e = engine(&k);
    let code = "import time\nfor i in range(60):\n    print(i, flush=True)\n    \
                if i % 20 == 19: time.sleep(1.1)";
    let l = kube_launch("j14", code, &[]);
    let id = e.start(&l).unwrap();
    let mut got = Vec::new();
    wait_until("the job's end", Duration::from_secs(20), || {
        let done = e.status(&id, &l).unwrap() == Observed::Succeeded;
        got.extend(e.output(&id, 7).into_iter().map(|x| x.text));
        done.then_some(())
    });
    for _ in 0..20 {
        let more = e.output(&id, 7);
        if more.is_empty() {
            break;
        }
        got.extend(more.into_iter().map(|x| x.text));
    }
    let want: Vec<String> = (0..60).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
}

#[test]
fn https_with_the_clusters_ca() {
    let dir = TempDir::new("kube-tls");
    let certs = TestCerts::make(&dir.0, "IP:127.0.0.1");
    let k = KubeStandin::start_tls(&certs);
    let l = kube_launch("j15", "print('over tls')", &[]);
    // The built-in roots do not know the cluster's CA.
    let err = engine(&k).start(&l).unwrap_err();
    assert!(
        matches!(&err, EngineError::Unavailable(m) if m.contains("certificate") || m.contains("Certificate")),
        "{err:?}"
    );
    let e = engine_with(&k, &[("ca_file", certs.ca.to_str().unwrap())]);
    let id = e.start(&l).unwrap();
    wait_status(e.as_ref(), &id, &l, |o| *o == Observed::Succeeded);
    assert_eq!(e.output(&id, 10)[0].text, "over tls");
}

// ---- End to end: a relay, `stepwatch agent --engine kubernetes`, the stand-in, a real
// Python trainer on the SDK as the Job's container command.

const T: Duration = Duration::from_secs(60);

fn train(steps: u64) -> Value {
    json!({"name": "k8s train", "queue": "k8s",
           "entry": {"template": "train", "params": {"steps": steps}}})
}

#[test]
fn an_agent_runs_a_trainer_as_a_kubernetes_job_to_success() {
    let dir = TempDir::new("kube-e2e-ok");
    let k = KubeStandin::start();
    let cfg = kube_launch_config(&dir.0, 5, "");
    let relay = Relay::start(&dir.0.join("data"), &["--launch", cfg.to_str().unwrap()]);
    let agent = k.agent(&relay, &dir.0, "k1");
    let s = relay.submit(&train(40));
    let (job, run) = (s["job"].as_str().unwrap(), s["run"].as_str().unwrap());
    let v = relay.wait_job(job, "running", T);
    assert!(v["engine_id"].as_str().unwrap().starts_with("ml/"), "{v}");
    let v = relay.wait_job(job, "succeeded", T);
    assert_eq!(
        history_kinds(&v),
        [
            "submitted",
            "claimed",
            "engine_submitted",
            "running",
            "succeeded"
        ],
        "{}",
        agent.log_text()
    );
    // The trainer in the "pod" reported to the job's run with the run token it was given.
    let st = relay.get_ok(&format!("/api/runs/{run}"));
    assert_eq!(st["status"], "completed", "{st}");
    assert_eq!(st["step"], 40);
    // Its printed lines reached the run's log through the pod's log.
    let printed: Vec<String> = relay
        .all_events(run)
        .iter()
        .filter(|e| e["event"] == "log" && e["logger"] == "stdout")
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect();
    assert!(printed.contains(&"step 40".to_string()), "{printed:?}");
    // One Job, labelled with the job, its command the template's argv.
    let posts = k.requests_to("POST", "/apis/batch/v1/namespaces/ml/jobs");
    assert_eq!(posts.len(), 1);
    let body = &posts[0]["body"];
    assert_eq!(body["metadata"]["labels"]["stepwatch.dev/job"], job);
    let env = body["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert!(env
        .iter()
        .any(|e| e["name"] == "STEPWATCH_RUN" && e["value"] == run));
    assert_eq!(k.pods().len(), 1);
}

#[test]
fn cancel_ends_the_kubernetes_job_and_leaves_no_pod_alive() {
    let dir = TempDir::new("kube-e2e-cancel");
    let k = KubeStandin::start();
    let stubborn = r#"
[[templates]]
name = "stubborn"
queue = "k8s"
argv = ["/bin/sh", "-c", "trap '' TERM; echo started; while true; do sleep 0.2; done"]
"#;
    let cfg = kube_launch_config(&dir.0, 2, stubborn);
    let relay = Relay::start(&dir.0.join("data"), &["--launch", cfg.to_str().unwrap()]);
    let _agent = k.agent(&relay, &dir.0, "k1");

    // A trainer on the SDK hears the stop command and ends within the grace period.
    let s = relay.submit(&train(100_000));
    let (job, run) = (s["job"].as_str().unwrap(), s["run"].as_str().unwrap());
    relay.wait_job(job, "running", T);
    wait_until("the run is live", T, || {
        let (c, st) = relay.get(&format!("/api/runs/{run}"));
        (c == 200 && st["status"] == "running").then_some(())
    });
    let (c, ans) = relay.post_json(&format!("/api/jobs/{job}/cancel"), &json!({}), None);
    assert_eq!(c, 202, "{ans}");
    relay.wait_job(job, "cancelled", T);
    let name = k.pods()[0]["job"].as_str().unwrap().to_string();
    wait_until("the trainer's pod ended", T, || {
        (!k.pod_alive(&name)).then_some(())
    });

    // A command that ignores SIGTERM: stopped (Background), then killed, pods and all.
    let s = relay.submit(&json!({"name": "stubborn", "queue": "k8s",
                                 "entry": {"template": "stubborn"}}));
    let job = s["job"].as_str().unwrap();
    relay.wait_job(job, "running", T);
    let name = wait_until("the stubborn pod", T, || {
        k.pods()
            .iter()
            .find(|p| p["job"] != name.as_str() && p["alive"] == true)
            .map(|p| p["job"].as_str().unwrap().to_string())
    });
    relay.post_json(&format!("/api/jobs/{job}/cancel"), &json!({}), None);
    let v = relay.wait_job(job, "cancelled", T);
    assert!(
        v["reason"].as_str().unwrap().starts_with("killed after"),
        "{v}"
    );
    let pod = k.pod_of(&name);
    assert_eq!(pod["alive"], false, "the pod outlived the cancel: {pod}");
    assert_eq!(pod["in_api"], false, "the pod is still listed: {pod}");
    let deletes = k.requests_to("DELETE", &format!("/jobs/{name}"));
    assert!(!deletes.is_empty());
    assert!(deletes
        .iter()
        .all(|d| d["body"]["propagationPolicy"] == "Background"));
    let (code, _) = k.api_get(&format!("/apis/batch/v1/namespaces/ml/jobs/{name}"));
    assert_eq!(code, 404);
}

#[test]
fn an_agent_killed_with_kill_9_leaves_its_job_to_the_next_one_and_no_second_job() {
    let dir = TempDir::new("kube-e2e-adopt");
    let k = KubeStandin::start();
    let cfg = kube_launch_config(&dir.0, 5, "");
    let relay = Relay::start(&dir.0.join("data"), &["--launch", cfg.to_str().unwrap()]);
    let mut a1 = k.agent(&relay, &dir.0, "k1");
    let s = relay.submit(&train(1000));
    let job = s["job"].as_str().unwrap();
    relay.wait_job(job, "running", T);
    a1.kill9();
    // The Job runs on at the cluster; the next agent adopts it once the lease ran out.
    let _a2 = k.agent(&relay, &dir.0, "k2");
    let v = relay.wait_job(job, "succeeded", T);
    let claims: Vec<&Value> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "claimed")
        .collect();
    assert_eq!(claims.last().unwrap()["reason"], "agent k2", "{v}");
    assert_eq!(
        k.requests_to("POST", "/jobs").len(),
        1,
        "a second Job was asked for"
    );
    assert_eq!(k.pods().len(), 1);
}
