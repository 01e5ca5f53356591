//! Issue 13 in the browser: what a new user sees on the run page and the runs list
//! when a script shaped like the official examples (a `train()` function, a 0-based
//! epoch loop, `evaluate()`, one `model.pt` overwritten on improvement, a
//! `KeyboardInterrupt` handler, a final test pass) is instrumented as README shows.
//! Real relay, real Python trainer, real Chromium.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use stepwatch_e2e::{python, repo, wait_until, Browser, Relay, TempDir};

const WAIT: Duration = Duration::from_secs(40);

/// The script: README's lines added to an example-shaped loop, nothing else.
const EXAMPLE: &str = r#"
import math, os, sys, time
os.environ.setdefault("STEPWATCH_SYSTEM_INTERVAL", "0.2")
import stepwatch
from stepwatch import (emit_training_start, emit_epoch_start, emit_batch_end,
                       emit_epoch_end, emit_checkpoint_saved, emit_training_end)

SAVE = os.environ["SAVE_PATH"]
EPOCHS, BATCHES = 3, 30
SLOW_FROM = int(os.environ.get("SLOW_FROM", "99"))  # epoch from which steps take 1 s
step = 0

def train(epoch):
    global step
    for i in range(BATCHES):
        step += 1
        time.sleep(1.0 if epoch >= SLOW_FROM else 0.003)
        emit_batch_end(batch_idx=i, loss=5.0 * math.exp(-step / 40) + 1.0, lr=20.0 / (epoch + 1))

def evaluate(epoch):
    time.sleep(0.05)
    return 3.0 - 0.4 * epoch

emit_training_start(total_epochs=EPOCHS, total_batches=BATCHES, config={"lr": 20, "model": "LSTM"})
best = None
try:
    for epoch in range(EPOCHS):
        emit_epoch_start(epoch=epoch, total_epochs=EPOCHS)
        train(epoch)
        val = evaluate(epoch)
        emit_epoch_end(epoch=epoch, metrics={"val_loss": val, "val_ppl": math.exp(val)})
        if best is None or val < best:
            with open(SAVE, "wb") as f:
                f.write(b"w" * 2048)
            emit_checkpoint_saved(checkpoint_path=SAVE, epoch=epoch, step=step)
            best = val
except KeyboardInterrupt:
    print("Exiting from training early", flush=True)
with open(SAVE, "rb") as f:
    f.read()
evaluate(0)
emit_training_end()
assert stepwatch.flush(10)
"#;

/// A TensorBoard user's loop through the shim: no epochs, lr as a scalar tag.
const TENSORBOARD: &str = r#"
import stepwatch
from stepwatch.tensorboard import SummaryWriter
w = SummaryWriter("tb-run")
for step in range(1, 209):
    w.add_scalar("train/loss", 3.0 / (1 + step / 50), step)
    w.add_scalar("train/lr", 0.001 * (1 - step / 300), step)
w.close()
assert stepwatch.flush(10)
"#;

fn trainer(code: &str, relay: &Relay, run: &str, env: &[(&str, String)]) -> Child {
    Command::new(python())
        .arg("-c")
        .arg(code)
        .env("PYTHONPATH", repo().join("clients/python/src"))
        .env("STEPWATCH_URL", &relay.url)
        .env("STEPWATCH_RUN", run)
        .env(
            "STEPWATCH_SPOOL_DIR",
            std::env::temp_dir().join(format!("stepwatch-e2e-spool-{}", std::process::id())),
        )
        .envs(env.iter().map(|(k, v)| (k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn attr(b: &Browser, sel: &str, name: &str) -> String {
    b.eval(&format!(
        "const e = document.querySelector('{sel}'); return e ? (e.getAttribute('{name}') || '') : '';"
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Waits until the run page shows `events` events with its stream open.
fn open_run(b: &Browser, relay: &Relay, run: &str) {
    let stored = relay.get_ok(&format!("/api/runs/{run}"))["event_count"]
        .as_u64()
        .unwrap();
    b.goto(&format!("{}/#/runs/{run}", relay.url));
    b.wait_for(
        "the run page",
        WAIT,
        &format!(
            "return document.querySelector('[data-testid=event-count]')?.textContent === '{stored}'
                && document.querySelector('[data-testid=conn]')?.dataset.state === 'live';"
        ),
    );
}

#[test]
fn a_finished_example_reads_as_its_user_means_it() {
    let dir = TempDir::new("example-done");
    let relay = Relay::with_dashboard(&dir.0);
    let save = dir.0.join("model.pt");
    let mut t = trainer(
        EXAMPLE,
        &relay,
        "wlm",
        &[("SAVE_PATH", save.display().to_string())],
    );
    assert!(t.wait().unwrap().success());
    let mut tb = trainer(TENSORBOARD, &relay, "tb-run", &[]);
    assert!(tb.wait().unwrap().success());

    // The API's summary and state say what the user means, the seed's fields unchanged.
    let state = relay.get_ok("/api/runs/wlm");
    assert_eq!(
        state["current_epoch"], 2,
        "the seed's field is the trainer's own"
    );
    assert_eq!(state["progress"]["epoch"], 3);
    assert_eq!(state["progress"]["batch"], 30);
    assert_eq!(state["progress"]["fraction"], 1.0);
    let runs = relay.get_ok("/api/runs");
    let summary = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run"] == "wlm")
        .unwrap();
    assert_eq!(summary["progress"]["epoch"], 3);
    assert_eq!(summary["best_val"]["metric"], "val_loss");

    let b = Browser::start();
    open_run(&b, &relay, "wlm");
    assert_eq!(b.text("[data-testid=epoch]"), "3/3");
    assert_eq!(
        b.text("[data-testid=batch]"),
        "30/30",
        "the last batch fills the bar"
    );
    assert_eq!(attr(&b, "[data-testid=epoch-bar]", "data-frac"), "1.0000");
    assert_eq!(attr(&b, "[data-testid=batch-bar]", "data-frac"), "1.0000");
    // Best: the validation loss, said so; not the best single batch.
    assert_eq!(
        b.eval("return document.querySelector('[data-testid=best-loss]').previousElementSibling.textContent;"),
        json!("Best val loss")
    );
    let best: f64 = b.text("[data-testid=best-loss]").parse().unwrap();
    assert!((best - 2.2).abs() < 1e-6, "{best}");
    // One checkpoint for one file, saved three times; nothing called best without a
    // metric to say so.
    let rows = b.eval("return [...document.querySelectorAll('[data-testid=checkpoint]')].map(e => e.textContent);");
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert!(b.text("[data-testid=checkpoint-saves]").starts_with('3'));
    assert_eq!(
        b.eval("return document.querySelectorAll('[data-testid=best-checkpoint]').length;"),
        json!(0)
    );
    // The run has ended: no green "live", and the system figures say when they are from.
    assert_eq!(
        attr(&b, "[data-testid=conn]", "data-ended"),
        "true",
        "an ended run's stream is not 'live'"
    );
    assert!(b.text("[data-testid=sys-when]").contains("last sample"));
    // No log lines: the panel says how print() output gets there.
    assert!(b.text("[data-testid=logs]").contains("capture_stdout=True"));
    // val_ppl is not drawn in the red kept for divergence.
    b.screenshot(&repo().join("target/screenshots/example-finished.png"));

    // The runs list: "Epoch 3/3 · Batch 30/30" and the TensorBoard run by its steps.
    b.goto(&format!("{}/#/", relay.url));
    b.wait_for(
        "both rows",
        WAIT,
        "return document.querySelectorAll('[data-testid=run-row]').length === 2;",
    );
    assert_eq!(
        b.text("[data-run=wlm] [data-testid=row-progress]"),
        "Epoch 3/3 · Batch 30/30"
    );
    assert_eq!(
        b.text("[data-run=tb-run] [data-testid=row-progress]"),
        "Step 208"
    );
    b.screenshot(&repo().join("target/screenshots/example-runs.png"));

    // The TensorBoard run: its lr tag is the run's learning rate, no invented epoch.
    let tb_state = relay.get_ok("/api/runs/tb-run");
    assert!(
        tb_state["learning_rate"].as_f64().is_some(),
        "train/lr lost: {tb_state}"
    );
    open_run(&b, &relay, "tb-run");
    assert_eq!(b.text("[data-testid=epoch]"), "–");
    assert_ne!(b.text("[data-testid=lr]"), "–");
}

#[test]
fn stopping_an_example_mid_epoch_ends_it_stopped_and_says_how() {
    let dir = TempDir::new("example-stop");
    let relay = Relay::with_dashboard(&dir.0);
    let save = dir.0.join("model.pt");
    let t = trainer(
        EXAMPLE,
        &relay,
        "wlm-stop",
        &[
            ("SAVE_PATH", save.display().to_string()),
            ("SLOW_FROM", "1".into()),
        ],
    );
    let b = Browser::start();
    // After epoch 1 (index 0) there is one validation point: drawn, centred, visible.
    wait_until("epoch 1's validation", WAIT, || {
        let s = relay.get("/api/runs/wlm-stop").1;
        (s["pace"]["epoch_batches"].as_u64() >= Some(5) && s["metrics"]["val_loss"].is_number())
            .then_some(())
    });
    b.goto(&format!("{}/#/runs/wlm-stop", relay.url));
    b.wait_for(
        "the val_loss chart",
        WAIT,
        "return document.querySelector('[data-testid=\"canvas-val_loss\"]')?.dataset.points === '1';",
    );
    let x0: f64 = attr(&b, "[data-testid=\"canvas-val_loss\"]", "data-x0")
        .parse()
        .unwrap();
    let x1: f64 = attr(&b, "[data-testid=\"canvas-val_loss\"]", "data-x1")
        .parse()
        .unwrap();
    assert!(
        ((x0 + x1) / 2.0 - 30.0).abs() < 1e-9 && x1 - x0 >= 2.0,
        "one point at step 30 drawn in {x0}..{x1}"
    );
    assert_eq!(b.text("[data-testid=epoch]"), "2/3");
    assert_ne!(b.text("[data-testid=eta]"), "–", "a running run has an ETA");

    // Stop from the page, as a user does: the loop never checks should_stop().
    // (Click once for "Really stop?", once more to send.)
    b.eval(
        "const s = document.querySelector('[data-testid=stop]'); s.click(); s.click(); return 1;",
    );
    let out = t.wait_with_output().unwrap();
    assert!(out.status.success(), "the script ended cleanly");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Exiting from training early"),
        "the script's own KeyboardInterrupt handler ran"
    );
    let state = relay.get_ok("/api/runs/wlm-stop");
    assert_eq!(state["status"], "stopped");
    let stop = state["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["command"] == "stop")
        .unwrap()
        .clone();
    assert_eq!(stop["status"], "done", "{stop}");
    b.wait_for(
        "stopped",
        WAIT,
        "return document.querySelector('[data-testid=status]')?.dataset.status === 'stopped';",
    );
    // The bar is not full and says the run stopped; the command says what happened.
    let frac: f64 = attr(&b, "[data-testid=epoch-bar]", "data-frac")
        .parse()
        .unwrap();
    assert!(frac > 1.0 / 3.0 && frac < 1.0, "{frac}");
    assert!(
        b.eval(
            "return document.querySelector('[data-testid=epoch-bar]').classList.contains('cut');"
        ) == Value::Bool(true)
    );
    assert!(b.text("[data-testid=epoch-note]").starts_with("stopped at"));
    let messages = b.eval("return [...document.querySelectorAll('[data-testid=command-message]')].map(e => e.textContent).join(' | ');");
    // … step by step: the loop does not check should_stop(), so it is interrupted.
    let story = messages.as_str().unwrap();
    assert!(
        story.contains("does not check should_stop()")
            && story.contains("KeyboardInterrupt")
            && story.ends_with("stopped"),
        "{story}"
    );
    // Nothing on the page scrolls sideways.
    assert_eq!(
        b.eval("return document.documentElement.scrollWidth <= window.innerWidth;"),
        Value::Bool(true)
    );
    b.screenshot(&repo().join("target/screenshots/example-stopped.png"));
}
