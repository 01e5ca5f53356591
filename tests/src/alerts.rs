//! Alerts set up for the suites: `--alerts` config files, channel tables, a trainer whose
//! loss turns NaN, and a run's events of one kind.

use crate::hooks::WebhookReceiver;
use crate::relay::{wait_until, Relay};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Writes `body` to `dir/alerts.toml`, for `--alerts`.
pub fn alerts_config_file(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("alerts.toml");
    std::fs::write(&p, body).unwrap();
    p
}

/// An `--alerts` file with no rules at all, for suites about something else whose runs
/// carry NaN losses or failures: the default rules' records, written by the relay's alert
/// thread at a moment of its own, would race what they compare.
pub fn no_alerts_file(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("no-alerts.toml");
    std::fs::write(&p, "[alerts]\ndefaults = false\n").unwrap();
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

    /// Returns once the relay's alert engine has evaluated every event of `run` stored
    /// before this call. The engine takes a run's events in id order, so a rule of the
    /// run's own (`barrier-N`, notifying nobody) that fires on an `alert` posted now
    /// proves every earlier event was looked at: had one of them fired something, its
    /// record would be stored already. The rule is removed again.
    pub fn alerts_barrier(&self, run: &str) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("barrier-{}", N.fetch_add(1, Ordering::Relaxed));
        let rule = json!({"name": name, "kind": "event", "event": "alert", "notify": []});
        let (c, v) = self.post_json(&format!("/api/runs/{run}/alerts/rules"), &rule, None);
        assert_eq!(c, 201, "the barrier rule: {v}");
        self.post_event(
            run,
            &json!({"event": "alert", "title": name, "level": "info"}),
        );
        wait_until(
            &format!("{run}'s alert engine past {name}"),
            Duration::from_secs(30),
            || {
                let fired = self.get_ok(&format!(
                    "/api/runs/{run}/events?event=alert_fired&limit=1000"
                ));
                fired
                    .as_array()
                    .is_some_and(|f| f.iter().any(|r| r["rule"] == name.as_str()))
                    .then_some(())
            },
        );
        let url = format!("{}/api/runs/{run}/alerts/rules/{name}", self.url);
        let gone = ureq::delete(&url).call();
        assert!(gone.is_ok(), "removing the barrier rule: {gone:?}");
    }

    /// A counter or gauge from `/metrics` (summed over its labels); 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        let text = ureq::get(&format!("{}/metrics", self.url))
            .call()
            .expect("GET /metrics")
            .into_string()
            .expect("/metrics text");
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}
