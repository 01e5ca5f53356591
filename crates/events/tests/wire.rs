//! Wire format: every golden fixture round-trips, bad input names its field.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::PathBuf;
use stepwatch_events::{parse_batch, Event, EventBody, RunState, RunStatus};

fn fixtures() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&text).unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 14, "fixtures missing: {}", out.len());
    out
}

#[test]
fn every_fixture_round_trips_unchanged() {
    for (name, json) in fixtures() {
        let event = Event::from_value(json.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(event.to_value(), json, "{name} changed on the round trip");
        let again = Event::from_json(&event.to_json()).unwrap();
        assert_eq!(
            again.to_value(),
            json,
            "{name} changed on the text round trip"
        );
    }
}

#[test]
fn seed_names_parse_to_typed_bodies_and_others_stay_custom() {
    for (name, json) in fixtures() {
        let event = Event::from_value(json.clone()).unwrap();
        let wire_name = json["event"].as_str().unwrap();
        assert_eq!(event.name(), wire_name);
        let is_custom = matches!(event.body, EventBody::Custom { .. });
        assert_eq!(is_custom, name == "custom", "{name}");
    }
}

#[test]
fn typed_fields_are_read() {
    let e = Event::from_json(
        r#"{"event":"batch_end","batch_idx":100,"loss":2.5,"lr":0.0001,"grad_norm":1.5}"#,
    )
    .unwrap();
    let EventBody::BatchEnd(b) = e.body else {
        panic!("not batch_end")
    };
    assert_eq!(b.batch_idx, Some(100));
    assert_eq!(b.loss, Some(2.5));
    assert_eq!(b.lr, Some(0.0001));
    assert_eq!(b.extra.get("grad_norm"), Some(&serde_json::json!(1.5)));
}

#[test]
fn non_finite_numbers_travel_as_strings() {
    let e = Event::from_json(r#"{"event":"batch_end","loss":"NaN","lr":"-Infinity"}"#).unwrap();
    let EventBody::BatchEnd(b) = &e.body else {
        panic!()
    };
    assert!(b.loss.unwrap().is_nan());
    assert_eq!(b.lr, Some(f64::NEG_INFINITY));
    let v = e.to_value();
    assert_eq!(v["loss"], "NaN");
    assert_eq!(v["lr"], "-Infinity");
}

#[test]
fn invalid_events_name_their_field() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/invalid/cases.json");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.len() > 10);
    for case in cases {
        let why = case["why"].as_str().unwrap();
        let err = Event::from_value(case["event"].clone())
            .err()
            .unwrap_or_else(|| panic!("{why}: accepted"));
        assert_eq!(
            err.field(),
            case["field"].as_str(),
            "{why}: wrong field in {err}"
        );
        if let Some(field) = case["field"].as_str() {
            assert!(err.to_string().contains(field), "{why}: {err}");
        }
    }
}

#[test]
fn batch_accepts_object_array_and_ndjson() {
    let one = parse_batch(r#"{"event":"log","message":"hi"}"#, false).unwrap();
    assert_eq!(one.len(), 1);
    let arr = parse_batch(r#"[{"event":"log"},{"event":"batch_end","loss":1}]"#, false).unwrap();
    assert_eq!(arr.len(), 2);
    let nd = parse_batch(
        "{\"event\":\"log\"}\n\n{\"event\":\"batch_end\",\"loss\":1}\n",
        true,
    )
    .unwrap();
    assert_eq!(nd.len(), 2);
    let sniffed = parse_batch("{\"event\":\"log\"}\n{\"event\":\"log\"}", false).unwrap();
    assert_eq!(sniffed.len(), 2);
}

#[test]
fn batch_error_names_the_bad_index() {
    let err = parse_batch(
        r#"[{"event":"log"},{"event":"batch_end","loss":1},{"event":"batch_end","loss":"x"}]"#,
        false,
    )
    .unwrap_err();
    assert_eq!(err.index, 2);
    assert_eq!(err.error.field(), Some("loss"));
    let err = parse_batch("{\"event\":\"log\"}\n{not json}\n", true).unwrap_err();
    assert_eq!(err.index, 1);
    assert!(parse_batch("", false).is_err());
}

#[test]
fn fixture_run_reduces_to_the_seed_state() {
    let order = [
        "training_start",
        "epoch_start",
        "batch_start",
        "batch_end",
        "epoch_end",
        "checkpoint_saved",
        "metric_update",
        "error_occurred",
        "system",
        "log",
        "custom",
        "command_ack",
        "checkpoint_loaded",
    ];
    let all = fixtures();
    let events: Vec<Event> = order
        .iter()
        .map(|n| {
            let v = &all.iter().find(|(k, _)| k == n).unwrap().1;
            Event::from_value(v.clone()).unwrap()
        })
        .collect();
    let s = RunState::from_events("r1", &events);
    assert_eq!(s.status, RunStatus::Running);
    assert!(s.is_training);
    assert_eq!(s.name, "gpt2-small");
    assert_eq!(s.current_epoch, 3);
    assert_eq!(s.total_epochs, Some(10));
    assert_eq!(s.current_batch, 100);
    assert_eq!(s.total_batches, Some(500));
    assert_eq!(s.current_loss, Some(2.5));
    assert_eq!(s.learning_rate, Some(0.0001));
    assert_eq!(s.step, 1100);
    assert_eq!(s.best_loss, Some(2.5));
    assert_eq!(s.checkpoints.len(), 1);
    assert_eq!(s.checkpoints[0].size_bytes, Some(2_684_354_560));
    assert_eq!(s.metrics.get("val/accuracy"), Some(&0.875));
    assert_eq!(s.metrics.get("tokens_per_s"), Some(&18000.5));
    assert_eq!(s.config["optimizer"], "adamw");
    assert_eq!(s.last_error.as_ref().unwrap().message, "CUDA out of memory");
    assert_eq!(s.system.as_ref().unwrap()["cpu_percent"], 73.5);
    assert_eq!(
        s.loaded_checkpoint.as_deref(),
        Some("./checkpoints/epoch2_step1000.pt")
    );
    assert_eq!(s.event_count, order.len() as u64);

    let end = Event::from_value(
        all.iter()
            .find(|(k, _)| k == "training_end")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    let mut done = s.clone();
    done.apply(&end);
    assert_eq!(done.status, RunStatus::Completed);
    assert!(!done.is_training);
}

#[test]
fn training_start_meta_reaches_the_state() {
    let e = Event::from_json(
        r#"{"event":"training_start","meta":{"host":"n1","git_commit":"abc"},"config":{"lr":1}}"#,
    )
    .unwrap();
    let s = RunState::from_events("r", [&e]);
    assert_eq!(s.meta["host"], "n1");
    assert_eq!(s.meta["git_commit"], "abc");
    let bad = Event::from_json(r#"{"event":"training_start","meta":"n1"}"#).unwrap_err();
    assert_eq!(bad.field(), Some("meta"));
}

#[test]
fn the_direct_writer_writes_the_same_object_as_to_value_and_no_key_twice() {
    use stepwatch_events::event::{BatchEnd, Log};
    let mut events: Vec<Event> = fixtures()
        .into_iter()
        .map(|(_, json)| Event::from_value(json).unwrap())
        .collect();
    // Built in code: extras that shadow typed or metadata names, non-finite numbers.
    let mut extra = serde_json::Map::new();
    extra.insert("loss".into(), Value::from(9.0)); // typed field set: the typed one wins
    extra.insert("lr".into(), Value::from(0.5)); // typed field unset: the extra is written
    extra.insert("time".into(), Value::from(1.0)); // metadata set: metadata wins
    extra.insert("note \"quoted\" ✓".into(), Value::from("a\nb"));
    let mut e = Event::new(EventBody::BatchEnd(BatchEnd {
        loss: Some(f64::NAN),
        metrics: Some([("acc".to_string(), f64::NEG_INFINITY)].into()),
        extra,
        ..Default::default()
    }));
    e.time = Some(12.5);
    e.id = Some(7);
    events.push(e);
    events.push(Event::new(EventBody::Log(Log::default())));
    for e in events {
        let text = e.to_json();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, e.to_value(), "{text}");
        let keys = text.matches("\":").count();
        let mut flat = 0;
        count_keys(&parsed, &mut flat);
        assert_eq!(keys, flat, "a key written twice in {text}");
    }
}

fn count_keys(v: &Value, n: &mut usize) {
    match v {
        Value::Object(m) => {
            for (_, x) in m {
                *n += 1;
                count_keys(x, n);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| count_keys(x, n)),
        _ => {}
    }
}
