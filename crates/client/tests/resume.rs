//! A retried launched job: with `STEPWATCH_RESUME_FROM` set, the first control point loads
//! that checkpoint through the trainer's `load_checkpoint` handler (once), so the run goes
//! on from it; `Client::resume_from` lets a script claim it and load it itself. Its own
//! test binary: the variable is process-wide.

use std::time::Duration;
use stepwatch_client::{Client, Flow, Handlers, Options};
use stepwatch_e2e::*;

#[test]
fn the_first_control_point_loads_the_checkpoint_to_resume_from_once() {
    let dir = TempDir::new("client-resume");
    let relay = Relay::start(&dir.0, &[]);
    std::env::set_var("STEPWATCH_RESUME_FROM", "/ckpt/step-40.pt");
    let options = Options {
        spool_dir: Some(dir.0.join("spool")),
        ..Default::default()
    };
    let client = Client::with_options(&relay.url, "resumed", options);
    let mut loaded = Vec::new();
    for _ in 0..3 {
        let mut load = |path: &str| {
            loaded.push(path.to_string());
            Ok(format!("loaded {path}"))
        };
        let mut handlers = Handlers {
            load_checkpoint: Some(&mut load),
            ask: None,
        };
        assert_eq!(client.control_point(&mut handlers), Flow::Continue);
    }
    assert_eq!(
        loaded,
        ["/ckpt/step-40.pt"],
        "loaded once, at the first control point"
    );
    assert_eq!(client.resume_from(), None, "already taken");
    assert!(client.flush(Duration::from_secs(10)));
    let events = relay.all_events("resumed");
    let loads: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "checkpoint_loaded")
        .collect();
    assert_eq!(loads.len(), 1, "{events:?}");
    assert_eq!(loads[0]["checkpoint_path"], "/ckpt/step-40.pt");

    // A script that claims it loads it itself: the control point then does nothing.
    let other = Client::with_options(
        &relay.url,
        "claimed",
        Options {
            spool_dir: Some(dir.0.join("spool2")),
            ..Default::default()
        },
    );
    assert_eq!(other.resume_from().as_deref(), Some("/ckpt/step-40.pt"));
    let mut calls = 0;
    let mut load = |_: &str| {
        calls += 1;
        Ok(String::new())
    };
    let mut handlers = Handlers {
        load_checkpoint: Some(&mut load),
        ask: None,
    };
    other.control_point(&mut handlers);
    assert_eq!(calls, 0);
}
