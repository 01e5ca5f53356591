//! Wire format: every golden fixture round-trips, bad input names its field.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::path::PathBuf;
use stepwatch_events::api::{self, RunAnswer};
use stepwatch_events::series::{SeriesInfo, SeriesPage, SeriesPoint};
use stepwatch_events::{parse_batch, Event, EventBody, RunState, RunStatus, KNOWN_EVENTS};

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

/// Events that touch every field of the state.
const RICH: &[&str] = &[
    r#"{"id":1,"time":10,"event":"training_start","total_epochs":3,"total_batches":4,"name":"rich","config":{"lr":0.1,"opt":"sgd"},"meta":{"host":"h"}}"#,
    r#"{"id":2,"time":11,"event":"epoch_start","epoch":1}"#,
    r#"{"id":3,"time":12,"event":"batch_end","batch_idx":0,"loss":2.0,"lr":0.1,"metrics":{"acc":0.5}}"#,
    r#"{"id":4,"time":13,"event":"batch_end","batch_idx":1,"loss":"NaN","lr":0.1}"#,
    r#"{"id":5,"time":14,"event":"checkpoint_saved","checkpoint_path":"/c/1.pt","epoch":1,"size_bytes":5,"metrics":{"val_loss":"Infinity"}}"#,
    r#"{"id":6,"time":15,"event":"checkpoint_loaded","checkpoint_path":"/c/1.pt"}"#,
    r#"{"id":7,"time":16,"event":"error_occurred","message":"boom","traceback":"tb","fatal":false}"#,
    r#"{"id":8,"time":17,"event":"system","cpu_percent":50,"gpus":[{"index":0}]}"#,
    r#"{"id":9,"time":18,"event":"command","command_id":"c1","command":"ask","args":{"input":"x"},"sender":"web"}"#,
    r#"{"id":10,"time":19,"event":"command_ack","command_id":"c1","status":"done","message":"ok","output":{"y":1}}"#,
    r#"{"id":11,"time":20,"event":"metric_update","name":"val/acc","value":0.7,"step":2,"metrics":{"val/loss":0.9}}"#,
    r#"{"id":12,"time":21,"event":"batch_end","batch_idx":2,"loss":4.0,"lr":0.05}"#,
    r#"{"id":13,"time":22,"event":"command","command_id":"c2","command":"pause","args":{}}"#,
    r#"{"id":14,"time":23,"event":"command_ack","command_id":"c2","status":"accepted"}"#,
];

fn rich() -> RunState {
    let events: Vec<Event> = RICH.iter().map(|j| Event::from_json(j).unwrap()).collect();
    RunState::from_events("rich", &events)
}

/// What the relay's `GET /api/runs/{run}` handler has written since before
/// [`RunAnswer`] existed: the state flattened, and its progress.
#[derive(serde::Serialize)]
struct StateOut<'a> {
    #[serde(flatten)]
    state: &'a RunState,
    progress: stepwatch_events::Progress,
}

#[test]
fn a_run_answer_is_the_relays_bytes_and_decodes_to_the_same_state() {
    let state = rich();
    let text = serde_json::to_string(&RunAnswer::new(&state)).unwrap();
    let old = StateOut {
        state: &state,
        progress: state.progress(),
    };
    assert_eq!(
        text,
        serde_json::to_string(&old).unwrap(),
        "the API changed"
    );
    let back = api::decode_state(&text).unwrap();
    // Every field comes back, the private running loss sums and the pace too.
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&state).unwrap()
    );
    assert_eq!(back.progress(), state.progress());
    assert_eq!(back.status, RunStatus::Paused);
    // Events after the load fold on as they do on the relay's copy.
    let (mut a, mut b) = (state, back);
    for j in [
        r#"{"id":15,"time":24,"event":"batch_end","loss":1.0}"#,
        r#"{"id":16,"time":25,"event":"epoch_start","epoch":2}"#,
        r#"{"id":17,"time":26,"event":"batch_end","loss":3.0}"#,
    ] {
        let e = Event::from_json(j).unwrap();
        a.apply(&e);
        b.apply(&e);
        assert_eq!(a.avg_loss, b.avg_loss, "after {j}");
    }
    assert_eq!(a.summary(), b.summary());
    assert!(api::decode_state(r#"{"error":"no run \"x\""}"#).is_none());
    assert!(api::decode_state("not json").is_none());
}

#[test]
fn summaries_decode_as_the_runs_list_and_stream_write_them() {
    let mut s = rich().summary();
    let text = serde_json::to_string(&s).unwrap();
    assert!(!text.contains("deleted"), "only a deletion says deleted");
    assert_eq!(api::decode_summary(&text), Some(s.clone()));
    assert!(
        s.progress.epoch.is_some(),
        "the relay's progress comes along"
    );
    s.deleted = true;
    let gone = serde_json::to_string(&s).unwrap();
    assert_eq!(api::decode_summary(&gone).map(|s| s.deleted), Some(true));
    let list = serde_json::to_string(&vec![s.clone(), RunState::new("b").summary()]).unwrap();
    let runs = api::decode_runs(&list);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0], s);
    assert!(api::decode_summary(r#"{"error":"x"}"#).is_none());
    assert!(api::decode_runs(r#"{"error":"x"}"#).is_empty());
}

#[test]
fn series_pages_and_lists_decode_as_the_relay_writes_them() {
    let page = SeriesPage {
        metric: "loss".into(),
        total: 9,
        exact: false,
        last_id: 7,
        points: vec![
            SeriesPoint {
                step: 1.0,
                time: 101.0,
                value: 0.5,
            },
            SeriesPoint {
                step: 2.0,
                time: 102.0,
                value: f64::NEG_INFINITY,
            },
        ],
    };
    let back = api::decode_series_page(&serde_json::to_string(&page).unwrap()).unwrap();
    assert_eq!(back, page);
    assert!(api::decode_series_page(r#"{"error":"no such run"}"#).is_none());
    let list = vec![
        SeriesInfo {
            metric: "loss".into(),
            count: 3,
            first_step: Some(1.0),
            last_step: Some(f64::INFINITY),
        },
        SeriesInfo {
            metric: "val/acc".into(),
            count: 0,
            first_step: None,
            last_step: None,
        },
    ];
    let text = serde_json::to_string(&list).unwrap();
    assert_eq!(api::decode_series_list(&text), list);
    assert!(api::decode_series_list("null").is_empty());
}

#[test]
fn an_events_page_decodes_every_event_and_skips_what_is_not_one() {
    let events: Vec<Event> = RICH.iter().map(|j| Event::from_json(j).unwrap()).collect();
    let text =
        serde_json::to_string(&events.iter().map(Event::to_value).collect::<Vec<_>>()).unwrap();
    let back = api::decode_events(&text);
    // (NaN is not equal to itself: compare the JSON.)
    let json = |es: &[Event]| es.iter().map(Event::to_json).collect::<Vec<_>>();
    assert_eq!(json(&back), json(&events));
    let mixed = r#"[{"id":1,"event":"log","message":"a"},{"event":"bad name!"},{"id":3,"event":"my_custom","x":1}]"#;
    let got = api::decode_events(mixed);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].name(), "my_custom");
    assert!(api::decode_events(r#"{"error":"x"}"#).is_empty());
}

#[test]
fn the_known_names_are_exactly_the_typed_bodies() {
    for name in KNOWN_EVENTS {
        let e = Event::from_json(&format!(r#"{{"event":"{name}"}}"#)).unwrap();
        assert!(
            !matches!(e.body, EventBody::Custom { .. }),
            "{name} has no typed body"
        );
        assert_eq!(e.name(), name);
    }
    let unique: std::collections::BTreeSet<_> = KNOWN_EVENTS.iter().collect();
    assert_eq!(unique.len(), KNOWN_EVENTS.len());
    // Every typed fixture's name is listed (the fixtures cover every body).
    for (name, json) in fixtures() {
        let e = Event::from_value(json).unwrap();
        if !matches!(e.body, EventBody::Custom { .. }) {
            assert!(KNOWN_EVENTS.contains(&e.name()), "{name}: {}", e.name());
        }
    }
}

/// Events that fill what [`RICH`] leaves empty: alerts (active, records, the run's
/// rules), ranks, tags, group and notes, a best validation loss, media.
const MORE: &[&str] = &[
    r#"{"id":15,"time":24,"event":"alert_fired","alert_id":"nan#1","rule":"nan","kind":"non_finite","level":"error","title":"t","text":"x","metric":"loss","value":"NaN","step":3,"channels":["a","b"]}"#,
    r#"{"id":16,"time":25,"event":"alert_delivery","alert_id":"nan#1","channel":"a","ok":false,"attempt":1}"#,
    r#"{"id":17,"time":26,"event":"alert_rule","rule":{"name":"x","kind":"stale"},"sender":"ana"}"#,
    r#"{"id":18,"time":27,"event":"rank","rank":1,"state":"started","world_size":2,"host":"h1","interval":1,"received":100}"#,
    r#"{"id":19,"time":28,"event":"run_meta","tags":["a","b"],"group":"g","notes":"n"}"#,
    r#"{"id":20,"time":29,"event":"metric_update","name":"val_loss","value":0.25,"step":4}"#,
    r#"{"id":21,"time":30,"event":"text_sample","name":"samples","step":4,"text":"hi"}"#,
];

#[test]
fn the_field_readers_decode_what_the_derived_decoders_do() {
    let events: Vec<Event> = RICH
        .iter()
        .chain(MORE)
        .map(|j| Event::from_json(j).unwrap())
        .collect();
    let state = RunState::from_events("more", &events);
    assert!(!state.alerts.active.is_empty() && !state.alerts.recent.is_empty());
    assert!(!state.alerts.rules.is_empty() && state.world.is_some());
    assert!(state.best_val.is_some() && state.group.is_some() && !state.tags.is_empty());
    assert!(!state.media.is_empty() && state.commands[0].step.is_some());
    let text = serde_json::to_string(&RunAnswer::new(&state)).unwrap();
    // Compared as JSON: the state holds a NaN, unequal to itself.
    let derived: RunState = serde_json::from_str(&text).unwrap();
    let read = api::decode_state(&text).unwrap();
    assert_eq!(
        serde_json::to_value(&read).unwrap(),
        serde_json::to_value(&derived).unwrap()
    );
    assert_eq!(
        serde_json::to_value(&read).unwrap(),
        serde_json::to_value(&state).unwrap()
    );
    let summary = serde_json::to_string(&state.summary()).unwrap();
    assert_eq!(api::decode_summary(&summary), Some(state.summary()));
    // A field that must be there, or a part that does not read, fails the answer.
    for (key, bad) in [
        ("run", Value::Null),
        ("checkpoints", json!([{}])),
        ("pace", json!(1)),
    ] {
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v[key] = bad;
        assert!(api::decode_state(&v.to_string()).is_none(), "{key}");
        assert!(serde_json::from_value::<RunState>(v).is_err(), "{key}");
    }
}
