//! Alert rules end to end (docs/ALERTS.md, "Where rules come from"): a bad rule or channel
//! in the `--alerts` config stops the relay naming the field; a bad rule from the API or in
//! an `alert_rule` event is refused with 400 naming it and nothing is stored; good ones are
//! listed with their source and removed; a trainer's own rules (`stepwatch.connect(alerts=…)`)
//! and `stepwatch.alert()` fire, notify and act.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;
use stepwatch_e2e::*;

const T: Duration = Duration::from_secs(30);

/// A secret in a refused webhook URL: it must not be echoed.
const SECRET: &str = "tok-3f9a1c7e5b2d";

/// Runs the relay with `cfg`, which it must refuse at start; returns its stderr.
fn refused_at_start(cfg: &str) -> String {
    let dir = TempDir::new("alerts-bad");
    let path = alerts_config_file(&dir.0, cfg);
    let mut child = Command::new(relay_bin())
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(dir.0.join("data"))
        .arg("--alerts")
        .arg(&path)
        .env_remove("STEPWATCH_DATABASE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_until(
        "the relay to refuse its config",
        Duration::from_secs(20),
        || child.try_wait().unwrap(),
    );
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "started with a bad config:\n{cfg}");
    err
}

#[test]
fn a_bad_rule_or_channel_in_the_config_stops_the_relay_naming_the_field() {
    let err = refused_at_start(&alerts_toml(
        "[[alerts.rules]]\nname = \"a\"\nkind = \"nan\"\n",
        "",
    ));
    assert!(
        err.contains("rules[0].kind")
            && err.contains("\"nan\"")
            && err.contains("expected one of non_finite"),
        "{err}"
    );
    let err = refused_at_start(&alerts_toml(
        "[[alerts.rules]]\nname = \"a\"\nkind = \"non_finite\"\n\n[[alerts.rules]]\nname = \"b\"\nkind = \"spike\"\nwindow = -5\n",
        "",
    ));
    assert!(err.contains("rules[1].window"), "{err}");
    let err = refused_at_start(&alerts_toml(
        "[[alerts.rules]]\nname = \"a\"\nkind = \"stale\"\nbogus = 1\n",
        "",
    ));
    assert!(err.contains("bogus"), "{err}");
    let err = refused_at_start(&alerts_toml(
        "",
        &webhook_channel("hook", &format!("ftp://127.0.0.1/{SECRET}")),
    ));
    assert!(err.contains("hook.url") && err.contains("http"), "{err}");
    assert!(!err.contains(SECRET), "the refused URL is echoed: {err}");
}

#[test]
fn a_bad_rule_from_the_api_or_a_trainer_is_refused_with_400_and_nothing_stored() {
    let dir = TempDir::new("alerts-api");
    let relay = relay_with_alerts(&dir.0, "[alerts]\ndefaults = false\n");
    let run = "api-run";
    relay.post_event(run, &json!({"event": "training_start"}));
    let count = || relay.all_ids(run).len();
    let before = count();
    let post_rule =
        |rule: &Value| relay.post_json(&format!("/api/runs/{run}/alerts/rules"), rule, None);
    for (rule, field) in [
        (json!({"name": "w", "kind": "spike", "window": 1}), "window"),
        (json!({"name": "k", "kind": "nan"}), "kind"),
        (
            json!({"name": "b", "kind": "stale", "bogus": true}),
            "bogus",
        ),
        (json!({"name": "bad name!", "kind": "stale"}), "name"),
        (json!({"name": "t", "kind": "above"}), "threshold"),
    ] {
        let (c, v) = post_rule(&rule);
        assert_eq!(c, 400, "{rule}: {v}");
        assert!(
            v.to_string().contains(field),
            "{rule}: {v} does not name {field}"
        );
    }
    let bad = json!({"event": "alert_rule", "rule": {"name": "x", "kind": "spike", "factor": 0.5}});
    let (c, v) = relay.post(run, &bad.to_string(), "application/json");
    assert_eq!(c, 400, "{v}");
    assert!(v.to_string().contains("factor"), "{v}");
    assert_eq!(count(), before, "a refused rule was stored");

    // A good one is stored, listed as the run's own, and removed.
    let (c, v) = post_rule(&json!({"name": "high", "kind": "above", "threshold": 5.0}));
    assert_eq!(c, 201, "{v}");
    assert_eq!(count(), before + 1);
    let alerts = relay.get_ok(&format!("/api/runs/{run}/alerts"));
    let rules = alerts["rules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["name"] == "high" && r["source"] == "run"),
        "{alerts}"
    );
    let del = |name: &str| {
        let url = format!("{}/api/runs/{run}/alerts/rules/{name}", relay.url);
        match ureq::delete(&url).call() {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(del("high"), 200);
    assert_eq!(del("high"), 404);
    let last = relay.all_events(run).pop().unwrap();
    assert_eq!(
        (&last["event"], &last["removed"]),
        (&json!("alert_rule"), &json!(true)),
        "{last}"
    );
}

/// A trainer declaring its own rule (loss above 5 → stop) and raising its own alert.
const OWN_RULES_TRAINER: &str = r#"
import time, stepwatch
from stepwatch import emit_training_start, emit_batch_end, emit_training_end
stepwatch.connect(alerts=[{"name": "too-high", "kind": "above", "threshold": 5.0, "action": "stop"}])
emit_training_start(total_epochs=1, total_batches=100000)
stepwatch.alert("disk almost full", "95% of /data used", "error")
step = 0
while not stepwatch.should_stop() and step < 100000:
    step += 1
    emit_batch_end(batch_idx=step, loss=1.0 if step < 30 else 10.0, lr=0.1)
    time.sleep(0.02)
emit_training_end()
assert stepwatch.flush(10)
"#;

#[test]
fn a_trainers_own_rule_stops_it_and_its_own_alert_notifies() {
    let dir = TempDir::new("alerts-own");
    let hook = WebhookReceiver::start();
    let rules = "[[alerts.rules]]\nname = \"said\"\nkind = \"event\"\n";
    let relay = relay_with_alerts(
        &dir.0,
        &alerts_toml(rules, &webhook_channel("hook", &hook.url("/hook"))),
    );
    let run = "own-rules";
    let mut trainer = python_trainer(OWN_RULES_TRAINER, &relay.url, run);
    let said = hook.wait_body("the trainer's alert", T, |b| b["rule"] == "said");
    assert_eq!(
        (&said.body["title"], &said.body["level"], &said.body["kind"]),
        (&json!("disk almost full"), &json!("error"), &json!("event")),
        "{}",
        said.raw
    );
    let high = hook.wait_body("the trainer's rule", T, |b| b["rule"] == "too-high");
    assert_eq!(
        (&high.body["action"], &high.body["step"]),
        (&json!("stop"), &json!(30)),
        "{}",
        high.raw
    );
    assert!(
        trainer.wait().unwrap().success(),
        "the trainer did not end on the stop"
    );
    let st = relay.get_ok(&format!("/api/runs/{run}"));
    assert_eq!(st["status"], "stopped", "{st}");
    let stop = st["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["command"] == "stop")
        .cloned()
        .unwrap_or_else(|| panic!("no stop command: {st}"));
    assert_eq!(stop["sender"], "alert:too-high", "{stop}");
    let alerts = relay.get_ok(&format!("/api/runs/{run}/alerts"));
    let listed: Vec<(Value, Value)> = alerts["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].clone(), r["source"].clone()))
        .collect();
    assert!(
        listed.contains(&(json!("said"), json!("config"))),
        "{alerts}"
    );
    assert!(
        listed.contains(&(json!("too-high"), json!("run"))),
        "{alerts}"
    );
    assert_eq!(relay.events_of(run, "alert_rule").len(), 1);
}

#[test]
fn the_sdk_refuses_a_bad_rule_before_sending_anything() {
    let dir = TempDir::new("alerts-sdk-bad");
    let relay = relay_with_alerts(&dir.0, "[alerts]\ndefaults = false\n");
    let code = r#"
import os, stepwatch
try:
    stepwatch.connect(os.environ["RELAY"], alerts=[{"name": "w", "kind": "spike", "window": 1}])
except ValueError as e:
    assert "window" in str(e), e
    print("refused:", e)
else:
    raise SystemExit("a bad rule was taken")
"#;
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .env("PYTHONPATH", repo().join("clients/python/src"))
        .env("STEPWATCH_RUN", "sdk-bad")
        .env_remove("STEPWATCH_URL")
        .env("RELAY", &relay.url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(relay.get("/api/runs/sdk-bad").0, 404, "something was sent");
}
