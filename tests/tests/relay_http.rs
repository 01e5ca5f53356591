//! The relay over HTTP on a real port, as a separate process with a real SQLite file.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::time::Duration;
use stepwatch_e2e::{sse_collect, Relay, TempDir};

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

fn ids(relay: &Relay, run: &str) -> Vec<u64> {
    relay.all_ids(run)
}

#[test]
fn batch_ingest_in_every_shape_gets_gapless_ids() {
    let dir = TempDir::new("ingest");
    let relay = Relay::start(&dir.0, &[]);
    let (s, v) = relay.post("r1", r#"{"event":"training_start","total_epochs":2}"#, JSON);
    assert_eq!(
        (s, v["accepted"].as_u64(), v["last_id"].as_u64()),
        (200, Some(1), Some(1))
    );
    let arr: Vec<Value> = (0..10)
        .map(|i| json!({"event":"batch_end","batch_idx":i,"loss":1.0/(i as f64 + 1.0)}))
        .collect();
    let (s, v) = relay.post("r1", &serde_json::to_string(&arr).unwrap(), JSON);
    assert_eq!((s, v["last_id"].as_u64()), (200, Some(11)));
    let nd: String = (10..20)
        .map(|i| format!("{{\"event\":\"batch_end\",\"batch_idx\":{i},\"loss\":0.5}}\n"))
        .collect();
    let (s, v) = relay.post("r1", &nd, NDJSON);
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(10)));
    assert_eq!(ids(&relay, "r1"), (1..=21).collect::<Vec<_>>());
    let state = relay.get_ok("/api/runs/r1");
    assert_eq!(state["batch_count"], 20);
    assert_eq!(state["step"], 20);
    assert_eq!(state["current_batch"], 19);
    assert_eq!(state["total_epochs"], 2);
    assert_eq!(state["status"], "running");
    for field in [
        "current_epoch",
        "current_loss",
        "learning_rate",
        "is_training",
    ] {
        assert!(state.get(field).is_some(), "seed field {field} missing");
    }
    let runs = relay.get_ok("/api/runs");
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["run"], "r1");
}

#[test]
fn concurrent_writers_to_one_run_leave_no_gaps() {
    let dir = TempDir::new("concurrent");
    let relay = Relay::start(&dir.0, &[]);
    std::thread::scope(|s| {
        for t in 0..4 {
            let relay = &relay;
            s.spawn(move || {
                for b in 0..10 {
                    let body: String = (0..25)
                        .map(|i| format!("{{\"event\":\"log\",\"message\":\"{t}-{b}-{i}\"}}\n"))
                        .collect();
                    assert_eq!(relay.post("busy", &body, NDJSON).0, 200);
                }
            });
        }
    });
    assert_eq!(ids(&relay, "busy"), (1..=1000).collect::<Vec<_>>());
}

#[test]
fn a_bad_event_rejects_the_whole_batch_and_names_its_index() {
    let dir = TempDir::new("atomic");
    let relay = Relay::start(&dir.0, &[]);
    relay.post("r", r#"{"event":"log","message":"first"}"#, JSON);
    let body =
        r#"[{"event":"log"},{"event":"batch_end","loss":1},{"event":"batch_end","loss":"high"}]"#;
    let (s, v) = relay.post("r", body, JSON);
    assert_eq!(s, 400);
    assert_eq!(v["index"], 2);
    assert_eq!(v["field"], "loss");
    assert!(v["error"].as_str().unwrap().contains("loss"), "{v}");
    assert_eq!(
        ids(&relay, "r"),
        vec![1],
        "part of a rejected batch was stored"
    );
    // A rejected first batch does not create the run.
    let (s, _) = relay.post("never", r#"[{"event":"log"},{"event":"BAD"}]"#, JSON);
    assert_eq!(s, 400);
    assert_eq!(relay.get("/api/runs/never").0, 404);
}

#[test]
fn duplicates_by_src_and_seq_are_stored_once() {
    let dir = TempDir::new("dups");
    let relay = Relay::start(&dir.0, &[]);
    let batch: String = (1..=5)
        .map(|i| format!("{{\"event\":\"batch_end\",\"src\":\"a\",\"seq\":{i},\"loss\":{i}}}\n"))
        .collect();
    let (_, v) = relay.post("d", &batch, NDJSON);
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(5), Some(0))
    );
    // A retry of the same batch, plus one new event, plus a duplicate inside the batch.
    let retry = format!(
        "{batch}{}\n{}\n",
        r#"{"event":"batch_end","src":"a","seq":6,"loss":6}"#,
        r#"{"event":"batch_end","src":"a","seq":6,"loss":6}"#
    );
    let (s, v) = relay.post("d", &retry, NDJSON);
    assert_eq!(s, 200);
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(1), Some(6))
    );
    assert_eq!(v["last_id"], 6);
    // Another sender may reuse the same seq numbers.
    let (_, v) = relay.post("d", r#"{"event":"log","src":"b","seq":1}"#, JSON);
    assert_eq!(v["accepted"], 1);
    assert_eq!(ids(&relay, "d"), (1..=7).collect::<Vec<_>>());
}

#[test]
fn bad_input_of_every_shape_gets_a_clear_4xx_and_the_relay_keeps_serving() {
    let dir = TempDir::new("bad");
    let relay = Relay::start(&dir.0, &["--max-body", "2000"]);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("r", "{not json".into(), 400, "invalid JSON"),
        ("r", "".into(), 400, "empty body"),
        ("r", "[]".into(), 400, "no events"),
        ("r", "42".into(), 400, "JSON object"),
        ("r", r#"{"loss":1}"#.into(), 400, "missing field \"event\""),
        (
            "r",
            r#"{"event":"batch_end","batch_idx":"seven"}"#.into(),
            400,
            "batch_idx",
        ),
        (
            "r",
            r#"{"event":"epoch_end","metrics":{"acc":"x"}}"#.into(),
            400,
            "acc",
        ),
        (
            "r",
            r#"{"event":"has space"}"#.into(),
            400,
            "invalid event name",
        ),
        (
            "bad%20run",
            r#"{"event":"log"}"#.into(),
            400,
            "invalid run id",
        ),
        (
            "r",
            format!(
                "[{}]",
                vec![r#"{"event":"log","message":"xxxxxxxxxx"}"#; 100].join(",")
            ),
            413,
            "limit",
        ),
    ];
    for (run, body, status, needle) in cases {
        let (s, v) = relay.post(run, &body, JSON);
        assert_eq!(s, status, "{needle}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "error {msg:?} does not mention {needle:?}"
        );
    }
    let long_run = "x".repeat(129);
    assert_eq!(relay.post(&long_run, r#"{"event":"log"}"#, JSON).0, 400);
    let (s, v) = relay.get("/api/runs/r/events?limit=0");
    assert_eq!(s, 400, "{v}");
    let (s, v) = relay.get("/api/nope");
    assert_eq!(s, 404);
    assert!(v["error"].as_str().unwrap().contains("/api/nope"));
    // Non-UTF-8 body.
    let res =
        ureq::post(&format!("{}/api/runs/r/events", relay.url)).send_bytes(&[0xff, 0xfe, 0x7b]);
    assert!(matches!(res, Err(ureq::Error::Status(400, _))));
    // Nothing was stored, and the relay still works.
    assert_eq!(relay.get("/api/runs/r").0, 404);
    assert_eq!(relay.post("r", r#"{"event":"log"}"#, JSON).0, 200);
    let metrics = ureq::get(&format!("{}/metrics", relay.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("stepwatch_events_accepted_total 1"),
        "{metrics}"
    );
}

#[test]
fn events_endpoint_filters_and_pages() {
    let dir = TempDir::new("page");
    let relay = Relay::start(&dir.0, &[]);
    let body: String = (0..30)
        .map(|i| {
            if i % 3 == 0 {
                "{\"event\":\"log\"}\n".to_string()
            } else {
                format!("{{\"event\":\"batch_end\",\"loss\":{i}}}\n")
            }
        })
        .collect();
    relay.post("p", &body, NDJSON);
    let page = relay.get_ok("/api/runs/p/events?after=10&limit=5");
    let got: Vec<u64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![11, 12, 13, 14, 15]);
    let logs = relay.get_ok("/api/runs/p/events?event=log");
    assert_eq!(logs.as_array().unwrap().len(), 10);
    assert!(logs.as_array().unwrap().iter().all(|e| e["event"] == "log"));
    assert_eq!(relay.get("/api/runs/p/events?event=BAD!").0, 400);
    assert_eq!(relay.get("/api/runs/missing/events").0, 404);
}

#[test]
fn sse_replays_after_last_event_id_then_streams_live() {
    let dir = TempDir::new("sse");
    let relay = Relay::start(&dir.0, &[]);
    let body: String = (1..=10)
        .map(|i| format!("{{\"event\":\"batch_end\",\"batch_idx\":{i},\"loss\":{i}}}\n"))
        .collect();
    relay.post("s", &body, NDJSON);
    let url = format!("{}/api/runs/s/stream", relay.url);
    let msgs = sse_collect(&url, Some(4), 8, Duration::from_secs(10), || {
        let live = r#"[{"event":"log","message":"live-1"},{"event":"batch_end","loss":0.1}]"#;
        assert_eq!(relay.post("s", live, JSON).0, 200);
    });
    let got: Vec<u64> = msgs.iter().map(|m| m.id.unwrap()).collect();
    assert_eq!(got, (5..=12).collect::<Vec<_>>(), "gap or duplicate");
    assert_eq!(msgs[0].event, "batch_end");
    assert_eq!(msgs[0].data["batch_idx"], 5);
    assert_eq!(msgs[6].event, "log");
    assert_eq!(msgs[6].data["message"], "live-1");
    // `?after=` works the same as the header.
    let again = sse_collect(
        &format!("{url}?after=10"),
        None,
        2,
        Duration::from_secs(10),
        || {},
    );
    assert_eq!(
        again.iter().map(|m| m.id.unwrap()).collect::<Vec<_>>(),
        vec![11, 12]
    );
    // The runs stream sends every run's summary.
    let sums = sse_collect(
        &format!("{}/api/stream", relay.url),
        None,
        1,
        Duration::from_secs(10),
        || {},
    );
    assert_eq!(sums[0].event, "run");
    assert_eq!(sums[0].data["run"], "s");
    assert_eq!(sums[0].data["last_id"], 12);
}

#[test]
fn sse_replay_larger_than_a_page_has_no_gap() {
    let dir = TempDir::new("sse-big");
    let relay = Relay::start(&dir.0, &[]);
    let body: String = (0..2500)
        .map(|i| format!("{{\"event\":\"batch_end\",\"loss\":{i}}}\n"))
        .collect();
    relay.post("big", &body, NDJSON);
    let msgs = sse_collect(
        &format!("{}/api/runs/big/stream", relay.url),
        None,
        2500,
        Duration::from_secs(30),
        || {},
    );
    assert!(msgs
        .iter()
        .enumerate()
        .all(|(i, m)| m.id == Some(i as u64 + 1)));
}

#[test]
fn restart_on_the_same_data_dir_keeps_every_run_and_event() {
    let dir = TempDir::new("restart");
    let mut relay = Relay::start(&dir.0, &[]);
    // Live and ready (readiness asks the storage; no login needed for either).
    assert_eq!(relay.get("/healthz").0, 200);
    assert_eq!(relay.get("/readyz").0, 200);
    relay.post(
        "keep",
        r#"[{"event":"training_start","total_epochs":3,"name":"kept","config":{"lr":0.1}},
            {"event":"batch_end","loss":2.0,"src":"a","seq":1},
            {"event":"checkpoint_saved","checkpoint_path":"/c/e1.pt","epoch":1}]"#,
        JSON,
    );
    relay.post("other", r#"{"event":"log"}"#, JSON);
    let before_state = relay.get_ok("/api/runs/keep");
    let before_events = relay.get_ok("/api/runs/keep/events");
    relay.restart(); // SIGKILL, then start again
    assert_eq!(relay.get_ok("/api/runs/keep"), before_state);
    assert_eq!(relay.get_ok("/api/runs/keep/events"), before_events);
    assert_eq!(relay.get_ok("/api/runs").as_array().unwrap().len(), 2);
    // Ids continue, and a retried event is still recognised.
    let (_, v) = relay.post(
        "keep",
        r#"[{"event":"batch_end","loss":2.0,"src":"a","seq":1},{"event":"batch_end","loss":1.0}]"#,
        JSON,
    );
    assert_eq!(
        (
            v["accepted"].as_u64(),
            v["duplicates"].as_u64(),
            v["last_id"].as_u64()
        ),
        (Some(1), Some(1), Some(4))
    );
    assert_eq!(relay.get_ok("/api/runs/keep")["name"], "kept");
}

#[test]
fn cors_answers_allowed_origins_only() {
    let dir = TempDir::new("cors");
    let relay = Relay::start(&dir.0, &["--allow-origin", "http://dash.example:9000"]);
    let allowed = |origin: &str| -> Option<String> {
        ureq::request("OPTIONS", &format!("{}/api/runs", relay.url))
            .set("Origin", origin)
            .set("Access-Control-Request-Method", "GET")
            .call()
            .ok()
            .and_then(|r| r.header("Access-Control-Allow-Origin").map(String::from))
    };
    assert_eq!(
        allowed("http://dash.example:9000").as_deref(),
        Some("http://dash.example:9000")
    );
    assert_eq!(allowed("http://evil.example"), None);
}

#[test]
fn serves_the_dashboard_with_spa_fallback_brotli_and_no_escape() {
    use std::io::Read;
    let dir = TempDir::new("static");
    let dist = dir.0.join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dir.0.join("secret.txt"), "top-secret").unwrap();
    std::fs::write(dist.join(".hidden"), "hidden").unwrap();
    std::fs::write(dist.join("index.html"), "<html>stepwatch-index</html>").unwrap();
    let js = "console.log('stepwatch');\n".repeat(2000);
    std::fs::write(dist.join("app.js"), &js).unwrap();
    let relay = Relay::start(&dir.0.join("data"), &["--dist", dist.to_str().unwrap()]);
    // Any status: a missing file answers 404 (dashboard_files.rs checks those).
    let get = |p: &str| match ureq::get(&format!("{}{p}", relay.url)).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r.into_string().unwrap(),
        Err(e) => panic!("GET {p}: {e}"),
    };
    assert!(get("/").contains("stepwatch-index"));
    assert_eq!(get("/app.js"), js);
    // Client-side routes fall back to index.html.
    assert!(get("/runs/some-run").contains("stepwatch-index"));
    // Nothing outside dist, nor hidden files, is served.
    for p in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/.hidden",
        "/..%2fsecret.txt",
    ] {
        let body = get(p);
        assert!(
            !body.contains("top-secret") && !body.contains("hidden"),
            "{p}: {body}"
        );
    }
    // Brotli for browsers that accept it, once precompressed; identical once decoded.
    let br = stepwatch_e2e::wait_until("brotli copy", Duration::from_secs(30), || {
        let r = ureq::get(&format!("{}/app.js", relay.url))
            .set("Accept-Encoding", "gzip, br")
            .call()
            .unwrap();
        (r.header("Content-Encoding") == Some("br")).then(|| {
            let mut raw = Vec::new();
            r.into_reader().read_to_end(&mut raw).unwrap();
            raw
        })
    });
    assert!(br.len() < js.len() / 10, "not compressed: {}", br.len());
    let mut decoded = String::new();
    brotli::Decompressor::new(&br[..], 4096)
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, js);
}

#[test]
fn a_subscriber_that_stops_reading_is_cut_off_and_catches_up_on_reconnect() {
    use std::io::Read;
    let dir = TempDir::new("slow");
    let relay = Relay::start(&dir.0, &[]);
    relay.post("slow", r#"{"event":"training_start"}"#, JSON);
    // A subscriber that never reads: its socket buffers fill, then its channel lags.
    let stalled = ureq::get(&format!("{}/api/runs/slow/stream?after=1", relay.url))
        .call()
        .unwrap();
    let mut stalled_reader = stalled.into_reader();
    let mut first = [0u8; 16];
    stalled_reader.read_exact(&mut first).unwrap(); // the stream is open
    let pad = "x".repeat(2000);
    let total = 20_000;
    // A healthy subscriber alongside: it must get every event, in order, meanwhile.
    // (If it ever falls behind too, it reconnects and catches up, as clients do.)
    let url = format!("{}/api/runs/slow/stream?after=1", relay.url);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let healthy =
        std::thread::spawn(move || stepwatch_e2e::sse_follow_ids(&url, total as u64, deadline));
    for chunk in 0..(total / 500) {
        let body: String = (0..500)
            .map(|i| {
                format!(
                    "{{\"event\":\"log\",\"message\":\"{pad}\",\"n\":{}}}\n",
                    chunk * 500 + i
                )
            })
            .collect();
        let (s, _) = relay.post("slow", &body, NDJSON);
        assert_eq!(s, 200, "ingest stalled behind a slow subscriber");
    }
    let metrics = wait_for_metric(&relay, "stepwatch_sse_cut_off_total");
    assert!(metrics >= 1.0, "the stalled subscriber was not cut off");
    assert_eq!(
        healthy.join().unwrap(),
        (2..=total as u64 + 1).collect::<Vec<_>>(),
        "the healthy subscriber was held back or lost events"
    );
    // Reconnecting from the last id it saw, it gets everything after, in order.
    let msgs = sse_collect(
        &format!("{}/api/runs/slow/stream", relay.url),
        Some(total as u64 - 99),
        100,
        Duration::from_secs(20),
        || {},
    );
    let ids: Vec<u64> = msgs.iter().map(|m| m.id.unwrap()).collect();
    assert_eq!(
        ids,
        ((total as u64 - 98)..=(total as u64 + 1)).collect::<Vec<_>>()
    );
    drop(stalled_reader);
}

fn wait_for_metric(relay: &Relay, name: &str) -> f64 {
    stepwatch_e2e::wait_until(name, Duration::from_secs(10), || {
        let text = ureq::get(&format!("{}/metrics", relay.url))
            .call()
            .ok()?
            .into_string()
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| *v >= 1.0)
    })
}

fn post_command(relay: &Relay, run: &str, body: &str) -> (u16, Value) {
    let res = ureq::post(&format!("{}/api/runs/{run}/commands", relay.url))
        .set("Content-Type", "application/json")
        .send_string(body);
    match res {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn commands_are_recorded_delivered_until_answered_and_survive_a_restart() {
    let dir = TempDir::new("commands");
    let mut relay = Relay::start(&dir.0, &[]);
    relay.post("c", r#"{"event":"training_start","total_epochs":1}"#, JSON);
    let (s, v) = post_command(&relay, "c", r#"{"command":"pause"}"#);
    assert_eq!(s, 202, "{v}");
    let pause = v["command_id"].as_str().unwrap().to_string();
    // Recorded in the run's own stream, so every dashboard sees it.
    let events = relay.get_ok("/api/runs/c/events?event=command");
    assert_eq!(events[0]["command_id"], pause.as_str());
    assert_eq!(events[0]["command"], "pause");
    let stream = format!("{}/api/runs/c/commands/stream", relay.url);
    let first = sse_collect(&stream, None, 1, Duration::from_secs(10), || {});
    assert_eq!(first[0].event, "command");
    assert_eq!(first[0].data["command_id"], pause.as_str());
    // A trainer that reconnects before answering gets it again, also after a relay restart.
    relay.restart();
    let again = sse_collect(&stream, None, 1, Duration::from_secs(10), || {});
    assert_eq!(again[0].data["command_id"], pause.as_str());
    // Accepted is still open; done is not delivered again.
    let ack = |status: &str| {
        format!(
            r#"{{"event":"command_ack","command_id":"{pause}","command":"pause","status":"{status}"}}"#
        )
    };
    relay.post("c", &ack("accepted"), JSON);
    assert_eq!(relay.get_ok("/api/runs/c")["status"], "paused");
    relay.post("c", &ack("done"), JSON);
    assert_eq!(relay.get_ok("/api/runs/c")["status"], "running");
    let live = sse_collect(&stream, None, 1, Duration::from_secs(10), || {
        assert_eq!(post_command(&relay, "c", r#"{"command":"stop"}"#).0, 202);
    });
    assert_eq!(
        live[0].data["command"], "stop",
        "an answered command came again"
    );
    // Cancel withdraws an open command; it is not delivered any more.
    let stop = live[0].data["command_id"].as_str().unwrap().to_string();
    let cancel = |id: &str| -> u16 {
        match ureq::post(&format!("{}/api/runs/c/commands/{id}/cancel", relay.url)).call() {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(cancel(&stop), 200);
    assert_eq!(cancel(&stop), 409);
    assert_eq!(cancel("c-unknown"), 404);
    let state = relay.get_ok("/api/runs/c");
    let cmds = state["commands"].as_array().unwrap();
    assert_eq!(cmds.last().unwrap()["status"], "cancelled");
    let resumed = sse_collect(&stream, None, 1, Duration::from_secs(10), || {
        assert_eq!(post_command(&relay, "c", r#"{"command":"resume"}"#).0, 202);
    });
    assert_eq!(
        resumed[0].data["command"], "resume",
        "a cancelled command came again"
    );
    // Duplicate clicks return the open command instead of a new one.
    let (_, a) = post_command(&relay, "c", r#"{"command":"resume"}"#);
    assert_eq!(a["command_id"], resumed[0].data["command_id"]);
    assert_eq!(a["duplicate"], true);
    // Commands to a finished run are refused.
    relay.post(
        "c",
        r#"{"event":"training_end","status":"completed"}"#,
        JSON,
    );
    let (s, v) = post_command(&relay, "c", r#"{"command":"pause"}"#);
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("has ended"));
}

#[test]
fn history_pages_back_newest_first() {
    let dir = TempDir::new("paging");
    let relay = Relay::start(&dir.0, &[]);
    let body: String = (0..30)
        .map(|i| {
            format!(
                "{{\"event\":\"log\",\"message\":\"m{i}\"}}\n{{\"event\":\"batch_end\",\"loss\":1}}\n"
            )
        })
        .collect();
    assert_eq!(relay.post("p", &body, NDJSON).0, 200);
    let messages = |q: &str| -> Vec<String> {
        relay
            .get_ok(&format!("/api/runs/p/events?{q}"))
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    let newest = messages("event=log&order=desc&limit=3");
    assert_eq!(newest, vec!["m29", "m28", "m27"]);
    let page = relay.get_ok("/api/runs/p/events?event=log&order=desc&limit=3");
    let oldest_id = page[2]["id"].as_u64().unwrap();
    let next = messages(&format!("event=log&order=desc&limit=3&before={oldest_id}"));
    assert_eq!(next, vec!["m26", "m25", "m24"]);
    assert_eq!(
        messages("order=desc&limit=1"),
        vec!["-"],
        "newest is a batch_end"
    );
    for (q, word) in [
        ("order=sideways", "order"),
        ("before=5", "before"),
        ("order=desc&after=5", "after"),
    ] {
        let (s, v) = relay.get(&format!("/api/runs/p/events?{q}"));
        assert_eq!(s, 400, "{q}");
        assert!(v["error"].as_str().unwrap().contains(word), "{q}: {v}");
    }
}

#[test]
fn sigterm_closes_streams_finishes_requests_and_exits_quickly_losing_nothing() {
    let dir = TempDir::new("sigterm");
    let log = dir.0.join("relay.log");
    let mut relay = Relay::start_logged(
        &dir.0.join("data"),
        &["--log-level", "debug", "--log-format", "json"],
        &log,
    );
    let body: String = (0..500)
        .map(|i| format!("{{\"event\":\"batch_end\",\"loss\":{i}}}\n"))
        .collect();
    assert_eq!(relay.post("t", &body, NDJSON).0, 200);
    // A subscriber reading the stream: it must see the stream end, not hang.
    let url = format!("{}/api/runs/t/stream", relay.url);
    let (replayed_tx, replayed) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let resp = ureq::get(&url).call().unwrap();
        let mut seen = 0;
        for line in std::io::BufReader::new(resp.into_reader()).lines() {
            let Ok(line) = line else { break };
            if line == "event: batch_end" {
                seen += 1;
                if seen == 500 {
                    let _ = replayed_tx.send(());
                }
            }
        }
        seen // the loop ends only when the relay closes the stream
    });
    replayed
        .recv_timeout(Duration::from_secs(10))
        .expect("the subscriber never got the backlog");
    let t0 = std::time::Instant::now();
    let status = relay
        .terminate(Duration::from_secs(10))
        .expect("the relay did not exit after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(t0.elapsed() < Duration::from_secs(7), "{:?}", t0.elapsed());
    assert_eq!(
        reader.join().unwrap(),
        500,
        "the stream did not end cleanly"
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).expect("a log line is not JSON"))
        .collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(
        messages.iter().any(|m| m.starts_with("shutting down")),
        "{logs}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("storage flushed")),
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["path"] == "/api/runs/t/events" && l["status"] == 200),
        "debug logs name each request: {logs}"
    );
    // Everything acknowledged is there after a restart.
    relay.restart();
    assert_eq!(ids(&relay, "t"), (1..=500).collect::<Vec<_>>());
}

#[test]
fn a_deleted_run_is_gone_everywhere_and_retention_deletes_old_runs() {
    let dir = TempDir::new("delete");
    let mut relay = Relay::start(&dir.0, &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let batch = |t: f64| -> String {
        (0..50)
            .map(|i| {
                format!(
                    "{{\"event\":\"batch_end\",\"loss\":{i},\"time\":{}}}\n",
                    t + i as f64
                )
            })
            .collect()
    };
    for (run, t) in [
        ("gone", now),
        ("old", now - 10.0 * 86_400.0),
        ("fresh", now - 3600.0),
    ] {
        assert_eq!(relay.post(run, &batch(t), NDJSON).0, 200);
    }
    let url = format!("{}/api/stream", relay.url);
    let relay_url = relay.url.clone();
    let runs_stream = sse_collect(&url, None, 5, Duration::from_secs(10), move || {
        let r = ureq::delete(&format!("{relay_url}/api/runs/gone"))
            .call()
            .unwrap();
        assert_eq!(r.into_json::<Value>().unwrap()["events"], 50);
    });
    let last = runs_stream.last().unwrap();
    assert_eq!(
        (last.data["run"].as_str(), last.data["deleted"].as_bool()),
        (Some("gone"), Some(true))
    );
    assert_eq!(relay.get("/api/runs/gone").0, 404);
    assert_eq!(relay.get("/api/runs/gone/series?metric=loss").0, 404);
    let (s, v) = ureq::delete(&format!("{}/api/runs/gone", relay.url))
        .call()
        .map_or_else(
            |e| match e {
                ureq::Error::Status(s, r) => (s, r.into_json::<Value>().unwrap()),
                e => panic!("{e}"),
            },
            |r| (r.status(), Value::Null),
        );
    assert_eq!(s, 404, "{v}");
    // A new run under the same name starts again from id 1.
    let (_, v) = relay.post("gone", &batch(now), NDJSON);
    assert_eq!(v["last_id"], 50);
    // Retention: at start, runs silent for longer than the limit go; others stay.
    let data = relay.data_dir.clone();
    relay.kill();
    let relay = Relay::start(&data, &["--retain-days", "5"]);
    let names: Vec<String> = relay
        .get_ok("/api/runs")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"fresh".to_string()) && names.contains(&"gone".to_string()));
    assert!(!names.contains(&"old".to_string()), "{names:?}");
    assert_eq!(relay.get("/api/runs/old/events").0, 404);
    let bad = std::process::Command::new(stepwatch_e2e::relay_bin())
        .args(["serve", "--retain-days=0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("positive number of days"));
}

/// (status, Retry-After, JSON body) of a GET.
fn get_with_retry_after(relay: &Relay, path: &str) -> (u16, Option<String>, Value) {
    let res = ureq::get(&format!("{}{path}", relay.url)).call();
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let retry = r.header("Retry-After").map(str::to_string);
    (r.status(), retry, r.into_json().unwrap_or(Value::Null))
}

#[test]
fn a_read_that_storage_cannot_serve_answers_503_with_retry_after() {
    let dir = TempDir::new("read-503");
    let relay = Relay::start_sqlite(&dir.0, &[]);
    let batch: String = (0..5)
        .map(|i| format!("{{\"event\":\"batch_end\",\"batch_idx\":{i},\"loss\":0.5}}\n"))
        .collect();
    assert_eq!(relay.post("r", &batch, NDJSON).0, 200);
    // Reads open their own connections, on the first read: with the database file moved
    // away (the writer keeps its open file), storage cannot serve one.
    let db = dir.0.join("stepwatch.db");
    let away = dir.0.join("stepwatch.db.away");
    std::fs::rename(&db, &away).unwrap();
    for path in ["/api/runs/r/events", "/api/runs/r/series?metric=loss"] {
        let (status, retry, body) = get_with_retry_after(&relay, path);
        assert_eq!(status, 503, "GET {path}: {body}");
        assert_eq!(retry.as_deref(), Some("2"), "GET {path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    // A 4xx carries none, and the state (in memory) is still served.
    let (status, retry, _) = get_with_retry_after(&relay, "/api/runs/no-such-run/events");
    assert_eq!((status, retry), (404, None));
    assert_eq!(relay.get_ok("/api/runs/r")["batch_count"], 5);
    // Storage back: the same read answers.
    std::fs::rename(&away, &db).unwrap();
    assert_eq!(ids(&relay, "r"), (1..=5).collect::<Vec<_>>());
}
