//! The engine on a real SQLite store: records written once even when two relays' engines
//! see the same commits, the action sent by `alert:<rule>`, a restart that does not fire again.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::storage::sqlite::{SqliteStore, SyncLevel};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use stepwatch_events::Event;

fn temp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sw-alerts-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(rules: Value) -> Arc<AlertConfig> {
    Arc::new(AlertConfig::from_value(&json!({"defaults": false, "rules": rules})).unwrap())
}

fn events(v: Value) -> Vec<Event> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| Event::from_value(e.clone()).unwrap())
        .collect()
}

/// Waits until `f` holds (the engine works on its own thread).
fn until(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn names(store: &dyn Storage, run: &str) -> Vec<String> {
    store
        .events(run, 0, 1000, None)
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string())
        .collect()
}

#[test]
fn two_relays_seeing_the_same_commits_store_one_record_and_one_action() {
    let dir = temp("two");
    let store: Arc<dyn Storage> = Arc::new(SqliteStore::open(&dir, SyncLevel::Normal).unwrap());
    let rules = config(json!([{"name": "nan", "kind": "non_finite", "action": "pause"}]));
    let (a, b) = (Arc::new(Hub::default()), Arc::new(Hub::default()));
    let (ma, mb) = (Arc::new(Metrics::default()), Arc::new(Metrics::default()));
    engine::start(
        rules.clone(),
        store.clone(),
        a.clone(),
        ma.clone(),
        "http://x".into(),
    )
    .unwrap();
    engine::start(
        rules,
        store.clone(),
        b.clone(),
        mb.clone(),
        "http://x".into(),
    )
    .unwrap();
    let batch = events(json!([
        {"event": "training_start"},
        {"event": "batch_end", "loss": 1.0},
        {"event": "batch_end", "loss": "NaN"},
    ]));
    // Relay A stores the batch; relay B learns of it as a peer's commit.
    store
        .append("r", batch, 1.0, &|c| {
            a.publish(c);
            b.publish(c);
        })
        .unwrap();
    until("the alert is recorded", || {
        names(&*store, "r").contains(&"alert_fired".to_string())
    });
    until("the pause is sent", || {
        names(&*store, "r").contains(&"command".to_string())
    });
    // Both engines decided the firing; the one that came second found it stored.
    let elsewhere = || {
        ma.stored_elsewhere.load(Ordering::Relaxed) + mb.stored_elsewhere.load(Ordering::Relaxed)
    };
    until("the second engine's record is a duplicate", || {
        elsewhere() == 1
    });
    let all = names(&*store, "r");
    assert_eq!(
        all.iter().filter(|n| *n == "alert_fired").count(),
        1,
        "{all:?}"
    );
    assert_eq!(all.iter().filter(|n| *n == "command").count(), 1, "{all:?}");
    let fired = ma.fired.load(Ordering::Relaxed) + mb.fired.load(Ordering::Relaxed);
    assert_eq!(fired, 1, "only the relay that stored it counts it");
    let state = store.state("r").unwrap();
    let cmd = state.commands.last().unwrap();
    assert_eq!(cmd.command, "pause");
    assert_eq!(cmd.sender.as_deref(), Some("alert:nan"));
    assert_eq!(state.alerts.active.len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_restarted_engine_resolves_but_does_not_fire_again() {
    let dir = temp("restart");
    let store: Arc<dyn Storage> = Arc::new(SqliteStore::open(&dir, SyncLevel::Normal).unwrap());
    let rules = config(json!([{"name": "nan", "kind": "non_finite"}]));
    let hub = Arc::new(Hub::default());
    engine::start(
        rules.clone(),
        store.clone(),
        hub.clone(),
        Default::default(),
        "http://x".into(),
    )
    .unwrap();
    let nan = || events(json!([{"event": "batch_end", "loss": "NaN"}]));
    store.append("r", nan(), 1.0, &|c| hub.publish(c)).unwrap();
    until("fired", || store.state("r").unwrap().alerts.fired == 1);
    // A new process: a fresh hub and engine over the same database.
    let hub2 = Arc::new(Hub::default());
    engine::start(
        rules,
        store.clone(),
        hub2.clone(),
        Default::default(),
        "http://x".into(),
    )
    .unwrap();
    store.append("r", nan(), 2.0, &|c| hub2.publish(c)).unwrap();
    let fine = events(json!([{"event": "batch_end", "loss": 0.5}]));
    store.append("r", fine, 3.0, &|c| hub2.publish(c)).unwrap();
    until("resolved", || {
        store.state("r").unwrap().alerts.active.is_empty()
    });
    let s = store.state("r").unwrap();
    assert_eq!(s.alerts.fired, 1, "{:?}", s.alerts.recent);
    let _ = std::fs::remove_dir_all(dir);
}
