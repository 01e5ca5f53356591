//! Golden fixtures (`tests/golden/*.json`), shared with the Python SDK's `WebUIHooks`
//! (`clients/python/tests/test_golden.py`): events in, the state after each step out,
//! folded here with the real reducer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::path::PathBuf;
use stepwatch_events::{Event, RunState};

fn fixtures() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The state's value for one `expect` field, named as `WebUIHooks` names it.
fn field(state: &RunState, name: &str) -> Value {
    let v = serde_json::to_value(state).unwrap();
    match name {
        "checkpoints" => json!(state
            .checkpoints
            .iter()
            .map(|c| c.path.clone())
            .collect::<Vec<_>>()),
        "last_error" => json!(state.last_error.as_ref().map(|e| e.message.clone())),
        "commands" => {
            let map: serde_json::Map<String, Value> = state
                .commands
                .iter()
                .map(|c| (c.id.clone(), json!(c.status)))
                .collect();
            Value::Object(map)
        }
        other => {
            assert!(
                v.get(other).is_some(),
                "the state has no field {other:?}: fix the fixture"
            );
            v[other].clone()
        }
    }
}

#[test]
fn every_golden_fixture_folds_to_its_expected_state() {
    let all = fixtures();
    assert!(all.len() >= 5, "golden fixtures missing: {}", all.len());
    for (name, fixture) in all {
        let mut state = RunState::new("golden");
        let steps = fixture["steps"].as_array().expect("steps");
        for (i, step) in steps.iter().enumerate() {
            for raw in step["events"].as_array().expect("events") {
                let e = Event::from_value(raw.clone())
                    .unwrap_or_else(|e| panic!("{name} step {i}: bad event {raw}: {e}"));
                state.apply(&e);
            }
            for (key, want) in step["expect"].as_object().expect("expect") {
                let got = field(&state, key);
                if key == "commands" {
                    for (id, status) in want.as_object().unwrap() {
                        assert_eq!(&got[id], status, "{name} step {i}: command {id}");
                    }
                } else {
                    assert_eq!(&got, want, "{name} step {i}: {key}");
                }
            }
        }
    }
}

#[test]
fn a_fixture_that_disagrees_with_the_reducer_is_caught() {
    // The comparison itself can fail: a wrong expectation does not pass.
    let mut state = RunState::new("golden");
    let e = Event::from_value(json!({"event": "batch_end", "step": 0, "batch_idx": 0})).unwrap();
    state.apply(&e);
    assert_eq!(field(&state, "step"), json!(0));
    assert_ne!(field(&state, "step"), json!(1));
    assert_eq!(field(&state, "status"), json!("running"));
}
