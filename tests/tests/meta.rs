//! Tags, group and notes of a run (`run_meta`) and the runs' config values
//! (`GET /api/values`), against a real relay process: from a trainer's events, from the
//! API with the sender recorded, every bad shape refused naming its field with nothing
//! stored, and kept across a restart. Runs on SQLite, and on PostgreSQL with `--pg`.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::time::Duration;
use stepwatch_e2e::{Relay, TempDir};

const JSON: &str = "application/json";

fn set_meta(relay: &Relay, run: &str, body: &str) -> (u16, Value) {
    let res = ureq::post(&format!("{}/api/runs/{run}/meta", relay.url))
        .set("Content-Type", JSON)
        .timeout(Duration::from_secs(10))
        .send_string(body);
    match res {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{e}"),
    }
}

fn meta_events(relay: &Relay, run: &str) -> Vec<Value> {
    relay
        .all_events(run)
        .into_iter()
        .filter(|e| e["event"] == "run_meta")
        .collect()
}

#[test]
fn tags_group_and_notes_from_trainer_and_api_with_who_changed_what() {
    let dir = TempDir::new("meta");
    let mut relay = Relay::start(&dir.0, &[]);
    let start = json!({"event": "training_start", "config": {"lr": 0.01, "opt": {"name": "adam"}}});
    let meta = json!({"event": "run_meta", "tags": [" baseline ", "lr sweep", "baseline"], "group": "sweep-1"});
    let (s, v) = relay.post("r1", &format!("{start}\n{meta}\n"), "application/x-ndjson");
    assert_eq!(s, 200, "{v}");
    let state = relay.get_ok("/api/runs/r1");
    assert_eq!(state["tags"], json!(["baseline", "lr sweep"]));
    assert_eq!(state["group"], "sweep-1");
    let runs = relay.get_ok("/api/runs");
    assert_eq!(runs[0]["tags"], json!(["baseline", "lr sweep"]));
    assert_eq!(runs[0]["group"], "sweep-1");

    // A trainer cannot say who changed it, nor send a bad tag: the batch is refused whole.
    let forged = json!({"event": "run_meta", "tags": ["x"], "sender": "admin"});
    let (s, v) = relay.post(
        "r1",
        &format!("{{\"event\":\"log\",\"message\":\"hi\"}}\n{forged}\n"),
        "application/x-ndjson",
    );
    assert_eq!(
        (s, v["field"].as_str(), v["index"].as_u64()),
        (400, Some("sender"), Some(1)),
        "{v}"
    );
    let bad_tag = json!({"event": "run_meta", "tags": ["ok", "a,b"]});
    let (s, v) = relay.post("r1", &bad_tag.to_string(), JSON);
    assert_eq!((s, v["field"].as_str()), (400, Some("tags[1]")), "{v}");
    assert_eq!(
        relay.all_events("r1").len(),
        2,
        "nothing of a refused batch is stored"
    );

    // From the API: the fields given replace, the others stay; the sender is recorded.
    let (s, v) = set_meta(&relay, "r1", r##"{"notes": "# Why\nlr **too** high"}"##);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tags"], json!(["baseline", "lr sweep"]));
    assert_eq!(v["notes"], "# Why\nlr **too** high");
    let (s, v) = set_meta(&relay, "r1", r#"{"tags": ["diverged"], "group": ""}"#);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["tags"].clone(), v["group"].clone()),
        (json!(["diverged"]), Value::Null)
    );
    let history = meta_events(&relay, "r1");
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(
        history[0].get("sender").is_none(),
        "the trainer's change has no sender"
    );
    assert_eq!(history[1]["sender"], "anonymous", "{:?}", history[1]);
    assert_eq!(history[2]["tags"], json!(["diverged"]));

    // Every bad shape names its field and stores nothing.
    let long_tag = format!(r#"{{"tags": ["{}"]}}"#, "x".repeat(65));
    let long_notes = json!({"notes": "x".repeat(16 * 1024 + 1)}).to_string();
    let many = json!({"tags": (0..33).map(|i| format!("t{i}")).collect::<Vec<_>>()}).to_string();
    for (body, field) in [
        (r#"{"tags": "baseline"}"#, "tags"),
        (r#"{"tags": [1]}"#, "tags"),
        (long_tag.as_str(), "tags[0]"),
        (many.as_str(), "tags"),
        (r#"{"group": "a\nb"}"#, "group"),
        (r#"{"group": 3}"#, "group"),
        (long_notes.as_str(), "notes"),
        (r#"{"colour": "red"}"#, "colour"),
        (r#"{}"#, "tags"),
    ] {
        let (s, v) = set_meta(&relay, "r1", body);
        assert_eq!((s, v["field"].as_str()), (400, Some(field)), "{body}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| e.len() > 10), "{v}");
    }
    let (s, v) = set_meta(&relay, "r1", "not json");
    assert_eq!(s, 400, "{v}");
    let (s, v) = set_meta(&relay, "nope", r#"{"tags": ["a"]}"#);
    assert_eq!(s, 404, "{v}");
    assert_eq!(
        meta_events(&relay, "r1").len(),
        3,
        "refusals stored nothing"
    );

    values_for_columns_and_sweeps(&relay);

    // Kept across a restart (the reducer's snapshot and the events agree).
    relay.restart();
    let state = relay.get_ok("/api/runs/r1");
    assert_eq!(state["tags"], json!(["diverged"]));
    assert_eq!(state["notes"], "# Why\nlr **too** high");
    assert!(state.get("group").is_none(), "{state}");
}

/// `GET /api/values`: config values and metrics for the runs list's columns, narrowed
/// by run, tag or group for the parameter view.
fn values_for_columns_and_sweeps(relay: &Relay) {
    // Config values and metrics for the runs list's columns.
    let end = json!({"event": "epoch_end", "epoch": 0, "metrics": {"val_loss": 0.25}});
    relay.post("r1", &end.to_string(), JSON);
    let start2 = json!({"event": "training_start", "config": {"lr": 0.1, "opt": {"name": "sgd"}}});
    relay.post("r2", &start2.to_string(), JSON);
    let v = relay.get_ok("/api/values?config=lr,opt.name&metrics=val_loss");
    assert_eq!(v["config_keys"], json!(["lr", "opt.name"]));
    assert!(
        v["metric_keys"]
            .as_array()
            .unwrap()
            .contains(&json!("val_loss")),
        "{v}"
    );
    assert_eq!(
        v["runs"]["r1"]["config"],
        json!({"lr": 0.01, "opt.name": "adam"})
    );
    assert_eq!(v["runs"]["r1"]["metrics"]["val_loss"], 0.25);
    assert_eq!(v["runs"]["r2"]["config"]["opt.name"], "sgd");
    let only = relay.get_ok("/api/values?config=*&runs=r2");
    assert_eq!(only["runs"].as_object().unwrap().len(), 1);
    assert_eq!(only["runs"]["r2"]["config"]["lr"], 0.1);
    assert_eq!(only["runs"]["r2"]["name"], "r2");
    // By tag and by group (the parameter view of a sweep asks for those).
    let tagged = relay.get_ok("/api/values?config=lr&tag=diverged");
    let ids = |v: &serde_json::Value| {
        v["runs"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&tagged), ["r1"]);
    assert_eq!(
        ids(&relay.get_ok("/api/values?tag=nope")),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&relay.get_ok("/api/values?group=nope")),
        Vec::<String>::new()
    );
}
