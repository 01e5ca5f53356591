//! Closing the loop in the browser: Pause / Resume / Stop / Load / Ask clicked in
//! headless Chromium reach a real Python trainer through a real relay, and the page
//! shows each state from the trainer's acknowledgement. Also: the demo trainers obey.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::time::Duration;
use stepwatch_e2e::{
    python_trainer, repo, wait_until, Browser, Relay, TempDir, CONTROLLABLE_TRAINER,
};

const WAIT: Duration = Duration::from_secs(30);

fn step(b: &Browser) -> u64 {
    b.eval("return +document.querySelector('[data-testid=step]').textContent;")
        .as_u64()
        .unwrap_or(0)
}

fn status_is(s: &str) -> String {
    format!("return document.querySelector('[data-testid=status]')?.dataset.status === '{s}';")
}

#[test]
fn clicks_pause_ask_load_resume_and_stop_a_real_trainer() {
    let dir = TempDir::new("control");
    let relay = Relay::with_dashboard(&dir.0);
    let mut trainer = python_trainer(CONTROLLABLE_TRAINER, &relay.url, "ctl");
    let b = Browser::start();
    b.goto(&format!("{}/#/runs/ctl", relay.url));
    b.wait_for(
        "running",
        WAIT,
        "return +document.querySelector('[data-testid=step]')?.textContent > 5;",
    );

    b.eval("document.querySelector('[data-testid=pause]').click(); return 1;");
    b.wait_for("paused (from the ack)", WAIT, &status_is("paused"));
    let s = step(&b);
    std::thread::sleep(Duration::from_millis(500)); // watch the counter stand still
    assert_eq!(step(&b), s, "training went on while paused");
    b.wait_for(
        "resume button",
        WAIT,
        "return document.querySelector('[data-testid=resume]') !== null;",
    );

    // Ask while paused: the handler's output and the latency are shown.
    b.eval("const t = document.querySelector('[data-testid=ask-input]'); t.value = 'hello model'; t.dispatchEvent(new Event('input'));
            document.querySelector('[data-testid=ask-send]').click(); return 1;");
    let out = b.wait_for(
        "ask output",
        WAIT,
        "return document.querySelector('[data-testid=ask-output]')?.textContent;",
    );
    assert!(out.as_str().unwrap().contains("HELLO MODEL"), "{out}");
    assert!(b
        .eval("return document.querySelector('[data-testid=ask-latency]')?.textContent || '';")
        .as_str()
        .unwrap()
        .contains("ms"));

    // Load beside the checkpoint.
    b.eval(
        "document.querySelector('[data-testid=checkpoint] [data-testid=load]').click(); return 1;",
    );
    b.wait_for(
        "loaded",
        WAIT,
        "return document.querySelector('[data-testid=load-state]')?.dataset.state === 'done';",
    );
    let state = relay.get_ok("/api/runs/ctl");
    assert_eq!(state["loaded_checkpoint"], "/ckpt/best.pt");

    b.eval("document.querySelector('[data-testid=resume]').click(); return 1;");
    b.wait_for("running again", WAIT, &status_is("running"));
    b.wait_for(
        "steps advance",
        WAIT,
        &format!("return +document.querySelector('[data-testid=step]').textContent > {s};"),
    );

    // Stop asks for confirmation, then ends the run as stopped.
    b.eval("document.querySelector('[data-testid=stop]').click(); return 1;");
    assert_eq!(
        relay.get_ok("/api/runs/ctl")["status"],
        "running",
        "one click must not stop"
    );
    b.eval("document.querySelector('[data-testid=stop]').click(); return 1;");
    b.wait_for("stopped", WAIT, &status_is("stopped"));
    assert!(trainer.wait().unwrap().success());
    b.wait_for(
        "controls gone",
        WAIT,
        "return document.querySelector('[data-testid=controls]') === null;",
    );
    let states: Value = b.eval("return [...document.querySelectorAll('[data-testid=command-row]')].map(r => r.dataset.command + ':' + r.dataset.state);");
    let states: Vec<String> = serde_json::from_value(states).unwrap();
    for want in [
        "pause:done",
        "resume:done",
        "ask:done",
        "load_checkpoint:done",
        "stop:done",
    ] {
        assert!(
            states.iter().any(|s| s == want),
            "{want} missing in {states:?}"
        );
    }
    b.screenshot(&repo().join("target/screenshots/control.png"));
}

#[test]
fn a_command_nobody_answers_shows_unanswered_and_can_be_cancelled() {
    let dir = TempDir::new("control-unanswered");
    let relay = Relay::with_dashboard(&dir.0);
    // A run whose trainer does not listen for commands.
    relay.post(
        "deaf",
        r#"{"event":"training_start","total_epochs":1}"#,
        "application/json",
    );
    let b = Browser::start();
    b.goto(&format!("{}/#/runs/deaf", relay.url));
    b.wait_for(
        "controls",
        WAIT,
        "return document.querySelector('[data-testid=pause]') !== null;",
    );
    b.eval("document.querySelector('[data-testid=pause]').click(); return 1;");
    b.wait_for(
        "pending",
        WAIT,
        "return document.querySelector('[data-testid=command-row]')?.dataset.state === 'pending';",
    );
    b.wait_for("unanswered", Duration::from_secs(20), "return document.querySelector('[data-testid=command-row]')?.dataset.state === 'unanswered';");
    b.eval("document.querySelector('[data-testid=cancel]').click(); return 1;");
    b.wait_for("cancelled", WAIT, "return document.querySelector('[data-testid=command-row]')?.dataset.state === 'cancelled';");
    assert_eq!(relay.get_ok("/api/runs/deaf")["status"], "running");
}

#[test]
fn the_demo_trainers_obey_every_command() {
    let dir = TempDir::new("control-demo");
    let relay = Relay::start(&dir.0.join("data"), &[]);
    let mut demo = std::process::Command::new(stepwatch_e2e::relay_bin())
        .args([
            "demo",
            "--url",
            &relay.url,
            "--runs",
            "1",
            "--step-ms",
            "20",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = wait_until("demo run", WAIT, || {
        let runs = relay.get_ok("/api/runs");
        runs[0]["run"].as_str().map(String::from)
    });
    let post = |body: &str| -> String {
        let r: Value = ureq::post(&format!("{}/api/runs/{run}/commands", relay.url))
            .send_string(body)
            .unwrap()
            .into_json()
            .unwrap();
        r["command_id"].as_str().unwrap().to_string()
    };
    let status_of = |id: &str| -> Option<Value> {
        let s = relay.get_ok(&format!("/api/runs/{run}"));
        s["commands"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
    };
    let done = |id: &str| wait_until(id, WAIT, || status_of(id).filter(|c| c["status"] == "done"));
    let pause = post(r#"{"command":"pause"}"#);
    wait_until("paused", WAIT, || {
        (relay.get_ok(&format!("/api/runs/{run}"))["status"] == "paused").then_some(())
    });
    let ask = post(r#"{"command":"ask","args":{"input":"abc"}}"#);
    assert!(done(&ask)["output"]["answer"]
        .as_str()
        .unwrap()
        .contains("cba"));
    let resume = post(r#"{"command":"resume"}"#);
    done(&resume);
    done(&pause);
    // Wait for a checkpoint to load.
    let ckpt = wait_until("checkpoint", Duration::from_secs(60), || {
        relay.get_ok(&format!("/api/runs/{run}"))["checkpoints"][0]["path"]
            .as_str()
            .map(String::from)
    });
    let load = post(&format!(
        r#"{{"command":"load_checkpoint","args":{{"path":"{ckpt}"}}}}"#
    ));
    done(&load);
    assert_eq!(
        relay.get_ok(&format!("/api/runs/{run}"))["loaded_checkpoint"],
        ckpt.as_str()
    );
    let stop = post(r#"{"command":"stop"}"#);
    done(&stop);
    wait_until("stopped", WAIT, || {
        (relay.get_ok(&format!("/api/runs/{run}"))["status"] == "stopped").then_some(())
    });
    let _ = demo.kill();
    let _ = demo.wait();
}
