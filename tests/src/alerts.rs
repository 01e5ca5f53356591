//! Alerts set up for the suites: `--alerts` config files, channel tables, a trainer whose
//! loss turns NaN, and a run's events of one kind.

use crate::hooks::WebhookReceiver;
use crate::relay::{wait_until, Relay};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes `body` to `dir/alerts.toml`, for `--alerts`.
pub fn alerts_config_file(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("alerts.toml");
    std::fs::write(&p, body).unwrap();
    p
}

/// An `[alerts]` config with no default rules, a `base_url`, then `rules` and `channels`
/// (TOML tables).
pub fn alerts_toml(rules: &str, channels: &str) -> String {
    format!(
        "[alerts]\ndefaults = false\nbase_url = \"http://stepwatch.test:8080\"\n\n{rules}\n{channels}\n"
    )
}

/// A `webhook` channel table named `name`.
pub fn webhook_channel(name: &str, url: &str) -> String {
    format!("[alerts.channels.{name}]\nkind = \"webhook\"\nurl = \"{url}\"\n")
}

/// A relay over `dir/data` with `config` as its `--alerts` file and its stderr in
/// `dir/relay.log`.
pub fn relay_with_alerts(dir: &Path, config: &str) -> Relay {
    let path = alerts_config_file(dir, config);
    Relay::start_logged(
        &dir.join("data"),
        &["--alerts", path.to_str().unwrap()],
        &dir.join("relay.log"),
    )
}

/// A Python trainer on the SDK whose loss turns NaN at step `nan_at` and stays NaN, a
/// step every 20 ms until stopped.
pub fn nan_trainer(nan_at: u64) -> String {
    format!(
        r#"
import time, stepwatch
from stepwatch import emit_training_start, emit_batch_end, emit_training_end
stepwatch.connect()
emit_training_start(total_epochs=1, total_batches=100000)
step = 0
while not stepwatch.should_stop() and step < 100000:
    step += 1
    emit_batch_end(batch_idx=step, loss=float("nan") if step >= {nan_at} else 1.0 / step, lr=0.1)
    time.sleep(0.02)
emit_training_end()
stepwatch.flush(10)
"#
    )
}

/// The webhook notices (JSON bodies) in `state` (`fired`, `resolved`) at paths starting
/// with `prefix`.
pub fn notices(hook: &WebhookReceiver, prefix: &str, state: &str) -> Vec<Value> {
    hook.requests_to(prefix)
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b["state"] == state)
        .collect()
}

impl Relay {
    /// The run's stored events of kind `event`, oldest first.
    pub fn events_of(&self, run: &str, event: &str) -> Vec<Value> {
        let mut v = self.all_events(run);
        v.retain(|e| e["event"] == event);
        v
    }

    /// Waits until the run has at least `n` events of kind `event`; returns them.
    pub fn wait_events(&self, run: &str, event: &str, n: usize, timeout: Duration) -> Vec<Value> {
        wait_until(&format!("{n} {event} events of {run}"), timeout, || {
            let v = self.events_of(run, event);
            (v.len() >= n).then_some(v)
        })
    }

    /// POSTs one JSON event to the run, which must be taken.
    pub fn post_event(&self, run: &str, event: &Value) {
        let (c, v) = self.post(run, &event.to_string(), "application/json");
        assert!(c < 300, "POST {event}: {c} {v}");
    }
}
