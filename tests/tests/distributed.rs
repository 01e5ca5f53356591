//! Distributed runs on real parts: `torchrun --nproc_per_node=N` with the gloo backend
//! on CPU runs `examples/ddp_train.py` (instrumented as README says, no run id passed)
//! against a real relay. The ranks are one run with per-rank system samples; Pause
//! clicked in the dashboard holds every rank at the same step, Resume goes on, Stop ends
//! every rank with rank 0's final checkpoint; a rank killed with `kill -9` fails the run
//! naming it.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use stepwatch_e2e::{python, repo, wait_until, Browser, Relay, TempDir};

const WAIT: Duration = Duration::from_secs(90);

/// A torchrun job in its own process group, killed with all its ranks when dropped
/// (a failing test leaves no rank behind).
struct Job(Child);

impl Job {
    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().unwrap()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let group = format!("-{}", self.0.id());
            let _ = Command::new("kill").args(["-9", "--", &group]).status();
            let _ = self.0.wait();
        }
    }
}

/// The run's state once it exists.
fn state(relay: &Relay, run: &str) -> Option<Value> {
    let (status, v) = relay.get(&format!("/api/runs/{run}"));
    (status == 200).then_some(v)
}

/// `torchrun --nproc_per_node=nproc examples/ddp_train.py` against `url`.
fn torchrun(url: &str, dir: &TempDir, nproc: u32, steps: u32) -> Job {
    let fast = [("STEPWATCH_SYSTEM_INTERVAL", "0.5")];
    torchrun_script("examples/ddp_train.py", url, dir, nproc, steps, &fast)
}

/// `torchrun --nproc_per_node=nproc <script>` (a path in the repo) against `url`.
fn torchrun_script(
    script: &str,
    url: &str,
    dir: &TempDir,
    nproc: u32,
    steps: u32,
    env: &[(&str, &str)],
) -> Job {
    let child = Command::new(python())
        .args(["-m", "torch.distributed.run", "--nproc_per_node"])
        .arg(nproc.to_string())
        .arg("--master_port")
        .arg(stepwatch_e2e::listen_port().to_string())
        .arg(repo().join(script))
        .envs(env.iter().copied())
        .env("PYTHONPATH", repo().join("clients/python/src"))
        .env("STEPWATCH_URL", url)
        .env("STEPWATCH_SPOOL_DIR", dir.0.join("spool"))
        .env("DDP_STEPS", steps.to_string())
        .env("DDP_CKPT", dir.0.join("final.pt"))
        .env("OMP_NUM_THREADS", "1")
        .env_remove("STEPWATCH_RUN")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .unwrap();
    Job(child)
}

/// The one run the ranks made (waits for it), with its state.
fn the_run(relay: &Relay, ranks: usize) -> (String, Value) {
    let run = wait_until("the ranks' run", WAIT, || {
        let runs = relay.get_ok("/api/runs");
        let runs = runs.as_array()?.clone();
        let r = runs.first()?["run"].as_str()?.to_string();
        assert_eq!(runs.len(), 1, "every rank joins one run: {runs:?}");
        Some(r)
    });
    assert!(run.starts_with("ddp-"), "{run}");
    let state = wait_until("every rank sampled", WAIT, || {
        let s = state(relay, &run)?;
        let w = s["world"]["ranks"].as_array()?;
        (w.len() == ranks && w.iter().all(|r| r["step"].as_u64().unwrap_or(0) > 3)).then_some(s)
    });
    (run, state)
}

fn acks(relay: &Relay, run: &str, command: &str, status: &str) -> Vec<Value> {
    relay
        .get_ok(&format!(
            "/api/runs/{run}/events?event=command_ack&limit=1000"
        ))
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["command"] == command && e["status"] == status)
        .cloned()
        .collect()
}

fn click(b: &Browser, testid: &str) {
    b.eval(&format!(
        "document.querySelector('[data-testid={testid}]').click(); return 1;"
    ));
}

#[test]
fn torchrun_ranks_are_one_run_paused_resumed_and_stopped_at_one_step() {
    let dir = TempDir::new("ddp");
    let relay = Relay::with_dashboard(&dir.0);
    let mut job = torchrun(&relay.url, &dir, 2, 100_000);
    let (run, state) = the_run(&relay, 2);
    let ranks = state["world"]["ranks"].as_array().unwrap();
    assert_eq!(state["world"]["size"], 2);
    for (i, r) in ranks.iter().enumerate() {
        assert_eq!(r["rank"], i as u64);
        assert_eq!(r["local_rank"], i as u64);
        assert!(r["host"].as_str().is_some_and(|h| !h.is_empty()), "{r}");
        assert!(r["step_ms"].as_f64().is_some_and(|ms| ms > 5.0), "{r}");
    }
    // Training events come once (from rank 0): one batch_end per step.
    let s = relay.get_ok(&format!("/api/runs/{run}"));
    assert!(s["batch_count"].as_u64().unwrap() <= s["step"].as_u64().unwrap() + 1);

    let b = Browser::start();
    b.goto(&format!("{}/#/runs/{run}", relay.url));
    // The world: both ranks, with step times and heat strips; the log filtered by rank.
    b.wait_for(
        "the world panel",
        WAIT,
        "return document.querySelectorAll('[data-testid=world] [data-testid=rank]').length === 2
            && document.querySelectorAll('[data-testid=heat-util] rect').length > 0;",
    );
    let world = b.eval(
        "return [...document.querySelectorAll('[data-testid=world] [data-testid=rank]')]
            .map(r => r.dataset.rank + ':' + r.dataset.state + ':' + r.textContent.includes('ms'));",
    );
    assert_eq!(
        world,
        serde_json::json!(["0:running:true", "1:running:true"])
    );
    b.wait_for(
        "a log line from each rank",
        WAIT,
        "return [...document.querySelectorAll('[data-testid=log-line]')]
            .filter(l => l.textContent.includes('ready')).length === 2;",
    );
    b.choose("log-rank", "1");
    let lines = b.eval(
        "return [...document.querySelectorAll('[data-testid=log-line]')].map(l => l.textContent);",
    );
    let lines = lines.as_array().unwrap();
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|l| l.as_str().unwrap().contains("#1")),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.as_str().unwrap().contains("rank 1 of 2 ready")));
    b.wait_for(
        "pause button",
        WAIT,
        "return document.querySelector('[data-testid=pause]') !== null;",
    );
    click(&b, "pause");
    b.wait_for(
        "paused on every rank",
        WAIT,
        "return document.querySelector('[data-testid=status]')?.dataset.status === 'paused';",
    );
    let paused = acks(&relay, &run, "pause", "accepted");
    assert_eq!(paused.len(), 2, "{paused:?}");
    let steps: Vec<u64> = paused.iter().map(|a| a["step"].as_u64().unwrap()).collect();
    assert_eq!(
        steps[0], steps[1],
        "the ranks paused at different steps: {paused:?}"
    );
    std::thread::sleep(Duration::from_millis(1500)); // longer than a few steps
    let held = relay.get_ok(&format!("/api/runs/{run}"));
    assert_eq!(held["step"], steps[0], "rank 0 trained on while paused");

    click(&b, "resume");
    wait_until("training again", WAIT, || {
        let s = relay.get_ok(&format!("/api/runs/{run}"));
        (s["status"] == "running" && s["step"].as_u64()? > steps[0] + 5).then_some(())
    });
    assert_eq!(acks(&relay, &run, "resume", "done").len(), 2);

    click(&b, "stop"); // Stop asks for confirmation: a second click sends it
    click(&b, "stop");
    let status = wait_until("every rank ended", WAIT, || job.try_wait());
    assert!(status.success(), "torchrun: {status}");
    let end = wait_until("stopped", WAIT, || {
        let s = relay.get_ok(&format!("/api/runs/{run}"));
        (s["status"] == "stopped").then_some(s)
    });
    let ranks = end["world"]["ranks"].as_array().unwrap();
    assert!(
        ranks
            .iter()
            .all(|r| r["state"] == "ended" && r["status"] == "stopped"),
        "{ranks:?}"
    );
    assert_eq!(ranks[0]["step"], ranks[1]["step"], "stopped at one step");
    let ckpt = dir.0.join("final.pt");
    assert!(ckpt.exists(), "rank 0 saves the final checkpoint");
    assert_eq!(
        end["checkpoints"][0]["path"].as_str(),
        ckpt.to_str(),
        "{end}"
    );
    let stop = end["commands"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(stop["status"], "done", "{stop}");
    assert_eq!(stop["ranks"][0], "done");
    assert_eq!(stop["ranks"][1], "done");
}

#[test]
fn a_rank_killed_with_sigkill_fails_the_run_naming_it() {
    let dir = TempDir::new("ddp-kill");
    let relay = Relay::start(&dir.0, &[]);
    let mut job = torchrun(&relay.url, &dir, 4, 100_000);
    let (run, state) = the_run(&relay, 4);
    let victim = &state["world"]["ranks"][2];
    let pid = victim["pid"].as_u64().unwrap();
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_until("torchrun gives up", WAIT, || job.try_wait());
    assert!(!status.success());
    let failed = wait_until("the run failed naming rank 2", WAIT, || {
        let s = relay.get_ok(&format!("/api/runs/{run}"));
        let lost = s["world"]["ranks"][2]["state"] == "lost";
        (s["status"] == "failed" && lost).then_some(s)
    });
    let err = &failed["last_error"];
    assert_eq!(err["rank"], 2, "{err}");
    let message = err["message"].as_str().unwrap();
    assert!(message.starts_with("rank 2 ("), "{message}");
    assert!(message.contains("died"), "{message}");
    // The others ended as the launcher stopped them, or failed on the broken collective.
    for r in [0, 1, 3] {
        let rank = &failed["world"]["ranks"][r];
        assert!(
            rank["state"] == "ended" || rank["state"] == "failed",
            "{rank}"
        );
    }
}

/// The run's training events come from one sender (rank 0), once.
fn reported_once(relay: &Relay, run: &str) {
    let events = relay.get_ok(&format!(
        "/api/runs/{run}/events?event=training_start,batch_end&limit=1000"
    ));
    let events = events.as_array().unwrap();
    let starts = events
        .iter()
        .filter(|e| e["event"] == "training_start")
        .count();
    assert_eq!(starts, 1, "training_start once, not once per rank");
    let mut senders: Vec<&str> = events.iter().filter_map(|e| e["src"].as_str()).collect();
    senders.dedup();
    assert_eq!(senders.len(), 1, "batch_end from rank 0 only: {senders:?}");
    assert!(events.len() > 3, "{events:?}");
}

#[test]
fn hugging_face_and_lightning_under_ddp_report_one_run_and_stop_on_every_rank() {
    let dir = TempDir::new("ddp-frameworks");
    let relay = Relay::start(&dir.0, &[]);
    // Hugging Face: stopped from the API mid-run; every rank ends, torchrun exits 0.
    let run = [("DDP_TEST_RUN", "hf-ddp")];
    let mut job = torchrun_script("tests/ddp/hf_ddp.py", &relay.url, &dir, 2, 100_000, &run);
    wait_until("both ranks training", WAIT, || {
        let s = state(&relay, "hf-ddp")?;
        let ranks = s["world"]["ranks"].as_array()?.len();
        (ranks == 2 && s["step"].as_u64()? > 10).then_some(())
    });
    let sent = ureq::post(&format!("{}/api/runs/hf-ddp/commands", relay.url))
        .send_json(serde_json::json!({"command": "stop"}));
    assert!(sent.is_ok(), "{sent:?}");
    let status = wait_until("every rank ended", WAIT, || job.try_wait());
    assert!(status.success(), "torchrun: {status}");
    let s = wait_until("stopped", WAIT, || {
        let s = relay.get_ok("/api/runs/hf-ddp");
        (s["status"] == "stopped").then_some(s)
    });
    for r in s["world"]["ranks"].as_array().unwrap() {
        assert_eq!(r["status"], "stopped", "{r}");
    }
    let stop = s["commands"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&stop["ranks"][0], &stop["ranks"][1]),
        (&"done".into(), &"done".into()),
        "{stop}"
    );
    reported_once(&relay, "hf-ddp");

    // Lightning's ddp strategy under torchrun: runs to the end, reported once.
    let run = [("DDP_TEST_RUN", "pl-ddp")];
    let mut job = torchrun_script("tests/ddp/lightning_ddp.py", &relay.url, &dir, 2, 30, &run);
    let status = wait_until("lightning ended", WAIT, || job.try_wait());
    assert!(status.success(), "torchrun: {status}");
    let s = wait_until("completed", WAIT, || {
        let s = relay.get_ok("/api/runs/pl-ddp");
        (s["status"] == "completed").then_some(s)
    });
    assert_eq!(s["step"], 30);
    let ranks = s["world"]["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 2);
    assert!(
        ranks.iter().all(|r| r["status"] == "completed"),
        "{ranks:?}"
    );
    reported_once(&relay, "pl-ddp");
    // One run per job. (Before a framework names the run, a connection made at import
    // from STEPWATCH_URL may have sent a system sample under the default id: no training
    // is reported there.)
    let runs = relay.get_ok("/api/runs");
    let trained: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["step"].as_u64().unwrap_or(0) > 0 || r["status"] != "pending")
        .filter_map(|r| r["run"].as_str())
        .collect();
    assert_eq!(trained.len(), 2, "one run per job: {runs}");
}
