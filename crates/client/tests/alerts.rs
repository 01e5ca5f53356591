//! Alerts from the Rust SDK against a real relay process: `Client::alert` and
//! `Options::alerts` (checked when the client is created, sent as `alert_rule` events
//! right after connecting).
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use stepwatch_client::{Client, Options};
use stepwatch_e2e::{Relay, TempDir};

fn options(dir: &TempDir, alerts: Vec<Value>) -> Options {
    Options {
        spool_dir: Some(dir.0.join("spool")),
        commands: false,
        alerts,
        ..Options::default()
    }
}

fn good() -> Value {
    json!({"name": "loss-high", "kind": "above", "threshold": 10, "for": 3, "action": "pause"})
}

/// What the relay writes itself on its alert thread, at a moment of its own.
const RELAY_RECORDS: [&str; 3] = ["alert_fired", "alert_resolved", "alert_delivery"];

/// The events the trainer sent, in order (the relay's own alert records left out).
fn events(relay: &Relay, run: &str) -> Vec<Value> {
    relay
        .get_ok(&format!("/api/runs/{run}/events?limit=1000"))
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !RELAY_RECORDS.contains(&e["event"].as_str().unwrap()))
        .cloned()
        .collect()
}

/// The relay's `alert_fired` records for the run, once there are `n`.
fn fired(relay: &Relay, run: &str, n: usize) -> Vec<Value> {
    stepwatch_e2e::wait_until("alert_fired records", Duration::from_secs(10), || {
        let got = relay.get_ok(&format!("/api/runs/{run}/events?event=alert_fired"));
        let got = got.as_array().unwrap();
        (got.len() >= n).then(|| got.clone())
    })
}

fn names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

#[test]
fn rules_then_alerts_arrive_in_order_and_the_run_state_holds_the_rules() {
    let dir = TempDir::new("client-alerts");
    let relay = Relay::start(&dir.0, &[]);
    let mine = json!({"name": "mine", "kind": "event", "level": "error"});
    let client =
        Client::try_with_options(&relay.url, "rs-alerts", options(&dir, vec![good(), mine]))
            .unwrap();
    client.training_start("rust", 1, 10, serde_json::Map::new());
    client.alert("loss high", "loss 12 at step 3", "warn");
    client.batch_end(1, 0, 1, 1.0, 0.1);
    client.alert(&"x".repeat(300), "", "fatal");
    assert!(client.close(Duration::from_secs(10)));

    let got = events(&relay, "rs-alerts");
    assert_eq!(
        names(&got),
        [
            "alert_rule",
            "alert_rule",
            "training_start",
            "alert",
            "batch_end",
            "alert"
        ]
    );
    assert_eq!(got[0]["rule"], good());
    assert_eq!(
        (&got[3]["title"], &got[3]["text"], &got[3]["level"]),
        (
            &json!("loss high"),
            &json!("loss 12 at step 3"),
            &json!("warning")
        )
    );
    assert_eq!(got[5]["title"], json!("x".repeat(200)));
    assert_eq!(got[5]["level"], "error");
    let state = relay.get_ok("/api/runs/rs-alerts");
    let rules = state["alerts"]["rules"].as_array().unwrap();
    let rule_names: Vec<_> = rules.iter().map(|r| &r["rule"]["name"]).collect();
    assert_eq!(rule_names, [&json!("loss-high"), &json!("mine")]);
    assert_eq!(rules[0]["rule"]["for"], 3);
    assert_eq!(rules[1]["rule"]["event"], "alert");

    // The first alert fires the default rule and the run's own, each decided by event
    // #4; both stay until dismissed, so the second alert fires nothing new.
    let records = fired(&relay, "rs-alerts", 2);
    let ids: Vec<_> = records
        .iter()
        .map(|r| r["alert_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alert#4", "mine#4"], "{records:?}");
}

#[test]
fn a_bad_rule_is_refused_naming_its_field_before_anything_is_sent() {
    let dir = TempDir::new("client-alerts-bad");
    let relay = Relay::start(&dir.0, &[]);
    let bad = json!({"name": "s", "kind": "spike", "window": -5});
    let refused = Client::try_with_options(
        &relay.url,
        "rs-refused",
        options(&dir, vec![good(), bad.clone()]),
    );
    let e = refused.err().unwrap();
    assert_eq!(e.field, "alerts[1].window");
    assert!(e.message.contains("negative"), "{e}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        relay.get("/api/runs/rs-refused").0,
        404,
        "something was sent"
    );

    // The infallible constructor sends no rule and says why in the run's log.
    let client = Client::with_options(&relay.url, "rs-logged", options(&dir, vec![good(), bad]));
    client.batch_end(1, 0, 1, 1.0, 0.1);
    assert!(client.close(Duration::from_secs(10)));
    let got = events(&relay, "rs-logged");
    assert_eq!(names(&got), ["log", "batch_end"]);
    assert_eq!(got[0]["level"], "error");
    let message = got[0]["message"].as_str().unwrap();
    assert!(message.contains("alerts[1].window"), "{message}");
}

#[test]
fn an_alert_with_the_relay_down_returns_at_once_and_arrives_once_it_is_up() {
    let dir = TempDir::new("client-alerts-down");
    let mut relay = Relay::start(&dir.0, &[]);
    relay.kill();
    let client =
        Client::try_with_options(&relay.url, "rs-later", options(&dir, vec![good()])).unwrap();
    let t0 = Instant::now();
    client.alert("relay is down", "training goes on", "error");
    assert!(t0.elapsed() < Duration::from_millis(200), "alert blocked");
    relay.restart();
    assert!(client.close(Duration::from_secs(30)));
    let got = events(&relay, "rs-later");
    assert_eq!(names(&got), ["alert_rule", "alert"]);
    assert_eq!(got[1]["title"], "relay is down");
    assert_eq!(got[1]["level"], "error");
    assert_eq!(fired(&relay, "rs-later", 1)[0]["level"], "error");
}
