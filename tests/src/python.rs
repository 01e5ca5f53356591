//! Python trainer processes: the interpreter to use and a real trainer on the SDK.

use crate::relay::repo;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The Python interpreter for trainer processes: `$STEPWATCH_PYTHON`, the repo's
/// `.venv`, else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("STEPWATCH_PYTHON") {
        return p.into();
    }
    let venv = repo().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// A Python trainer (for [`python_trainer`]) that obeys the dashboard: it reports a
/// checkpoint, answers `ask` with the text upper-cased, accepts `load_checkpoint`, and
/// steps every 10 ms until stopped (at most 100,000 steps).
pub const CONTROLLABLE_TRAINER: &str = r#"
import time, stepwatch
from stepwatch import emit_training_start, emit_batch_end, emit_training_end, emit_checkpoint_saved
stepwatch.on_command("load_checkpoint", lambda path: None)
stepwatch.on_command("ask", lambda text: {"echo": str(text).upper()})
emit_training_start(total_epochs=1, total_batches=100000)
emit_checkpoint_saved(checkpoint_path="/ckpt/best.pt", epoch=1, step=0, metrics={"val_loss": 1.0})
step = 0
while not stepwatch.should_stop() and step < 100000:
    step += 1
    emit_batch_end(batch_idx=step, loss=1.0 / step, lr=0.1)
    time.sleep(0.01)
emit_training_end()
assert stepwatch.flush(10)
"#;

/// Starts a real Python trainer running `code` with the SDK importable and
/// `STEPWATCH_URL` / `STEPWATCH_RUN` set.
pub fn python_trainer(code: &str, relay_url: &str, run: &str) -> Child {
    Command::new(python())
        .arg("-c")
        .arg(code)
        .env("PYTHONPATH", repo().join("clients/python/src"))
        .env("STEPWATCH_URL", relay_url)
        .env("STEPWATCH_RUN", run)
        .env(
            "STEPWATCH_SPOOL_DIR",
            std::env::temp_dir().join(format!("stepwatch-e2e-spool-{}", std::process::id())),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}
