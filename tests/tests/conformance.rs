//! One control contract, two SDKs: the same script of dashboard commands (resume when
//! not paused, ask, load_checkpoint, pause, ask while paused, resume, stop) is played
//! against a real Python trainer and a Rust trainer (stepwatch-client), each under a
//! real relay, and what the relay recorded is compared: every command's final state
//! (status, message, output), the order in which the commands' statuses changed (from
//! the `command_ack` events), and the run's end. Any disagreement fails the test, with
//! both transcripts printed. The contract is the table in ARCHITECTURE.md, "The control
//! path".
#![allow(clippy::unwrap_used)]

use serde_json::{json, Map, Value};
use std::time::Duration;
use stepwatch_client::{Client, Flow, Handlers, Options};
use stepwatch_e2e::{python_trainer, wait_until, Relay, TempDir};

const WAIT: Duration = Duration::from_secs(30);

/// The Python side: handlers for load_checkpoint and ask, a loop that checks
/// `should_stop()`, one step every 10 ms.
const PY_TRAINER: &str = r#"
import time, stepwatch
from stepwatch import emit_training_start, emit_batch_end, emit_training_end, emit_checkpoint_saved
stepwatch.on_command("load_checkpoint", lambda path: None)
stepwatch.on_command("ask", lambda text: {"echo": str(text).upper()})
emit_training_start(total_epochs=1, total_batches=100000)
emit_checkpoint_saved(checkpoint_path="/ckpt/a.pt", epoch=1, step=0)
step = 0
while not stepwatch.should_stop() and step < 100000:
    step += 1
    emit_batch_end(batch_idx=step, step=step, loss=1.0 / step, lr=0.1)
    time.sleep(0.01)
emit_training_end()
assert stepwatch.flush(10)
"#;

/// The Rust side: the same trainer with stepwatch-client.
fn rust_trainer(url: String, run: String, spool: std::path::PathBuf) -> impl FnOnce() -> bool {
    move || {
        let client = Client::with_options(
            &url,
            &run,
            Options {
                spool_dir: Some(spool),
                ..Options::default()
            },
        );
        client.training_start("rust", 1, 100_000, Map::new());
        client.checkpoint_saved("/ckpt/a.pt", 1, 0, 0, Default::default());
        let mut load = |path: &str| Ok(format!("loaded {path}"));
        let mut ask = |input: &Value| {
            let text = input
                .as_str()
                .map_or_else(|| input.to_string(), str::to_string);
            Ok(json!({ "echo": text.to_uppercase() }))
        };
        for step in 1..=100_000u64 {
            client.batch_end(1, step, step, 1.0 / step as f64, 0.1);
            let mut handlers = Handlers {
                load_checkpoint: Some(&mut load),
                ask: Some(&mut ask),
            };
            if client.control_point(&mut handlers) == Flow::Stop {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        client.training_end("stopped");
        client.close(Duration::from_secs(10))
    }
}

/// The script: (label, command body); each command is waited for (its final answer, or
/// the pause taking hold) before the next is sent.
fn full_script() -> Vec<(&'static str, Value)> {
    vec![
        ("resume-not-paused", json!({"command": "resume"})),
        ("ask", json!({"command": "ask", "args": {"input": "hello"}})),
        (
            "load",
            json!({"command": "load_checkpoint", "args": {"path": "/ckpt/a.pt"}}),
        ),
        ("pause", json!({"command": "pause"})),
        (
            "ask-paused",
            json!({"command": "ask", "args": {"input": "still here"}}),
        ),
        ("resume", json!({"command": "resume"})),
        ("stop", json!({"command": "stop"})),
    ]
}

fn post(relay: &Relay, run: &str, body: &Value) -> String {
    let v: Value = ureq::post(&format!("{}/api/runs/{run}/commands", relay.url))
        .send_string(&body.to_string())
        .unwrap()
        .into_json()
        .unwrap();
    v["command_id"].as_str().unwrap().to_string()
}

/// The run's state (`null` until the relay has heard of the run).
fn state(relay: &Relay, run: &str) -> Value {
    let (status, v) = relay.get(&format!("/api/runs/{run}"));
    if status == 200 {
        v
    } else {
        Value::Null
    }
}

fn command(state: &Value, id: &str) -> Value {
    state["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

fn is_final(c: &Value) -> bool {
    matches!(
        c["status"].as_str(),
        Some("done" | "rejected" | "failed" | "cancelled")
    )
}

/// What one SDK did with the script, as the relay recorded it.
#[derive(Debug, PartialEq)]
struct Transcript {
    /// Per command, in script order: label, status, message (ask: its start only, the
    /// time differs), output.
    finals: Vec<(String, Value, Value, Value)>,
    /// Every change of a command's status, in event order: (label, status).
    timeline: Vec<(String, String)>,
    /// The run's status and loaded checkpoint at the end.
    run: (Value, Value),
    /// The step stood still while paused.
    paused_still: bool,
}

/// Plays the script against the trainer already running as `run`.
fn play(relay: &Relay, run: &str, script: Vec<(&'static str, Value)>) -> Transcript {
    wait_until("the trainer steps", WAIT, || {
        (state(relay, run)["step"].as_u64().unwrap_or(0) > 5).then_some(())
    });
    let mut ids: Vec<(String, &'static str)> = Vec::new();
    let mut paused_still = false;
    for (label, body) in script {
        let id = post(relay, run, &body);
        ids.push((id.clone(), label));
        match label {
            "pause" => {
                wait_until("paused", WAIT, || {
                    (state(relay, run)["status"] == "paused").then_some(())
                });
                let at = state(relay, run)["step"].clone();
                std::thread::sleep(Duration::from_millis(300));
                paused_still = state(relay, run)["step"] == at;
            }
            "resume" => {
                let pause = ids.iter().find(|(_, l)| *l == "pause").unwrap().0.clone();
                wait_until("resumed", WAIT, || {
                    let s = state(relay, run);
                    (is_final(&command(&s, &id)) && is_final(&command(&s, &pause))).then_some(())
                });
            }
            "stop" => {
                wait_until("stopped", WAIT, || {
                    let s = state(relay, run);
                    (s["status"] == "stopped" && is_final(&command(&s, &id))).then_some(())
                });
            }
            _ => {
                wait_until(label, WAIT, || {
                    is_final(&command(&state(relay, run), &id)).then_some(())
                });
            }
        }
    }
    transcript(relay, run, &ids, paused_still)
}

fn transcript(relay: &Relay, run: &str, ids: &[(String, &str)], paused_still: bool) -> Transcript {
    let s = state(relay, run);
    let label = |id: &str| {
        ids.iter()
            .find(|(i, _)| i == id)
            .map(|(_, l)| l.to_string())
    };
    let finals = ids
        .iter()
        .map(|(id, l)| {
            let c = command(&s, id);
            let mut message = c["message"].clone();
            if l.starts_with("ask") {
                let m = message.as_str().unwrap_or_default();
                message = json!(m.split(" in ").next().unwrap_or_default());
            }
            (
                l.to_string(),
                c["status"].clone(),
                message,
                c["output"].clone(),
            )
        })
        .collect();
    let mut last: std::collections::HashMap<String, String> = Default::default();
    let mut timeline = Vec::new();
    for e in relay.all_events(run) {
        if e["event"] != "command_ack" {
            continue;
        }
        let Some(l) = label(e["command_id"].as_str().unwrap_or_default()) else {
            continue;
        };
        let status = e["status"].as_str().unwrap_or_default().to_string();
        if last.get(&l) != Some(&status) {
            last.insert(l.clone(), status.clone());
            timeline.push((l, status));
        }
    }
    Transcript {
        finals,
        timeline,
        run: (s["status"].clone(), s["loaded_checkpoint"].clone()),
        paused_still,
    }
}

/// Runs `script` against a Python trainer, then a Rust one; both transcripts.
fn both(tag: &str, script: fn() -> Vec<(&'static str, Value)>) -> (Transcript, Transcript) {
    let dir = TempDir::new(tag);
    let relay = Relay::start(&dir.0, &[]);
    let py_run = format!("{tag}-py");
    let mut py = python_trainer(PY_TRAINER, &relay.url, &py_run);
    let python = play(&relay, &py_run, script());
    assert!(py.wait().unwrap().success(), "the Python trainer failed");
    let rs_run = format!("{tag}-rs");
    let trainer = std::thread::spawn(rust_trainer(
        relay.url.clone(),
        rs_run.clone(),
        dir.0.join("spool"),
    ));
    let rust = play(&relay, &rs_run, script());
    assert!(
        trainer.join().unwrap(),
        "the Rust trainer's final flush failed"
    );
    (python, rust)
}

/// Both SDKs answered on the contract's timeline, and alike in everything else.
fn assert_on_contract(python: &Transcript, rust: &Transcript, want: &[(String, String)]) {
    assert_eq!(
        python.timeline, want,
        "Python off the contract: {python:#?}"
    );
    assert_eq!(rust.timeline, want, "Rust off the contract: {rust:#?}");
    assert_eq!(
        python, rust,
        "the SDKs disagree\nPython: {python:#?}\nRust: {rust:#?}"
    );
}

fn timeline(steps: &[(&str, &str)]) -> Vec<(String, String)> {
    steps
        .iter()
        .map(|(l, s)| (l.to_string(), s.to_string()))
        .collect()
}

#[test]
fn the_python_and_rust_sdks_answer_the_same_commands_the_same_way() {
    let (python, rust) = both("conf", full_script);
    // The contract itself, so that two SDKs agreeing on something else fail too.
    let want = timeline(&[
        ("resume-not-paused", "rejected"),
        ("ask", "accepted"),
        ("ask", "done"),
        ("load", "accepted"),
        ("load", "done"),
        ("pause", "accepted"),
        ("ask-paused", "accepted"),
        ("ask-paused", "done"),
        ("resume", "accepted"),
        ("pause", "done"),
        ("resume", "done"),
        ("stop", "accepted"),
        ("stop", "done"),
    ]);
    assert_on_contract(&python, &rust, &want);
    assert!(python.paused_still, "training went on while paused");
    assert_eq!(python.run, (json!("stopped"), json!("/ckpt/a.pt")));
}

#[test]
fn a_stop_while_paused_ends_the_pause_then_the_run_in_both_sdks() {
    let (python, rust) = both("conf-paused-stop", || {
        vec![
            ("pause", json!({"command": "pause"})),
            ("stop", json!({"command": "stop"})),
        ]
    });
    let want = timeline(&[
        ("pause", "accepted"),
        ("stop", "accepted"),
        ("pause", "done"),
        ("stop", "done"),
    ]);
    assert_on_contract(&python, &rust, &want);
    assert_eq!(python.finals[0].2, json!("stopped while paused"));
    assert_eq!(python.run.0, json!("stopped"));
}
