//! The Rust SDK against a real relay process.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use stepwatch_client::{Client, Options};
use stepwatch_e2e::{Relay, TempDir};
use stepwatch_events::event::Log;
use stepwatch_events::EventBody;

/// Options with a private spool under `dir`.
fn options(dir: &TempDir, cap: u64) -> Options {
    Options {
        spool_dir: Some(dir.0.join("spool")),
        spool_max_bytes: cap,
        commands: false,
        ..Options::default()
    }
}

fn spool_lines(dir: &TempDir, run: &str) -> usize {
    stepwatch_client::spool::files(&dir.0.join("spool"), run)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum()
}

fn events(relay: &Relay, run: &str) -> Vec<serde_json::Value> {
    relay
        .get_ok(&format!("/api/runs/{run}/events?limit=100000"))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn events_emitted_while_the_relay_is_down_arrive_in_order_once_it_is_up() {
    let dir = TempDir::new("client-outage");
    let mut relay = Relay::start(&dir.0, &[]);
    relay.kill(); // the relay is down while the trainer emits
    let client = Client::with_options(&relay.url, "rust-outage", options(&dir, 1 << 20));
    client.training_start("rust", 1, 500, serde_json::Map::new());
    let t0 = Instant::now();
    for i in 0..500 {
        client.batch_end(1, i, i + 1, 1.0 / (i as f64 + 1.0), 0.01);
    }
    assert!(t0.elapsed() < Duration::from_millis(200), "emit blocked");
    assert!(
        !client.flush(Duration::from_millis(200)),
        "flush claims delivery with no relay"
    );
    // Meanwhile the queue moves to the spool on disk.
    stepwatch_e2e::wait_until(
        "the queue moves to the spool",
        Duration::from_secs(10),
        || (spool_lines(&dir, "rust-outage") == 501).then_some(()),
    );
    relay.restart();
    client.training_end("completed");
    assert!(client.close(Duration::from_secs(30)));
    let events = events(&relay, "rust-outage");
    assert_eq!(events.len(), 502);
    let idx: Vec<u64> = events[1..501]
        .iter()
        .map(|e| e["batch_idx"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, (0..500).collect::<Vec<_>>());
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=502).collect::<Vec<_>>());
}

#[test]
fn a_bad_event_is_dropped_alone() {
    let dir = TempDir::new("client-bad");
    let relay = Relay::start(&dir.0, &[]);
    let client = Client::connect(&relay.url, "rust-bad");
    client.log("info", "before");
    client.emit(EventBody::Custom {
        name: "Bad Name".into(),
        fields: serde_json::Map::new(),
    });
    client.emit(EventBody::Log(Log {
        message: Some("after".into()),
        ..Default::default()
    }));
    assert!(client.flush(Duration::from_secs(10)));
    assert_eq!(client.rejected(), 1);
    assert_eq!(client.sent(), 2);
    let msgs: Vec<_> = events(&relay, "rust-bad")
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(msgs, vec!["before", "after"]);
}

fn command(relay: &Relay, run: &str, body: &str) -> String {
    let v: serde_json::Value = ureq::post(&format!("{}/api/runs/{run}/commands", relay.url))
        .send_string(body)
        .unwrap()
        .into_json()
        .unwrap();
    v["command_id"].as_str().unwrap().to_string()
}

fn command_state(relay: &Relay, run: &str, id: &str) -> serde_json::Value {
    let s = relay.get_ok(&format!("/api/runs/{run}"));
    s["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn control_point_pauses_resumes_stops_and_rejects_what_it_cannot_do() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use stepwatch_client::{Flow, Handlers};
    use stepwatch_e2e::wait_until;
    let dir = TempDir::new("client-control");
    let relay = Relay::start(&dir.0, &[]);
    let steps = std::sync::Arc::new(AtomicU64::new(0));
    let url = relay.url.clone();
    let counter = steps.clone();
    let trainer = std::thread::spawn(move || {
        let client = Client::connect(&url, "rust-ctl");
        client.training_start("rust", 1, 1_000_000, serde_json::Map::new());
        loop {
            let s = counter.fetch_add(1, Ordering::SeqCst) + 1;
            client.batch_end(1, s, s, 1.0 / s as f64, 0.1);
            if client.control_point(&mut Handlers::default()) == Flow::Stop {
                client.training_end("stopped");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        client.close(Duration::from_secs(10))
    });
    let wait = Duration::from_secs(20);
    wait_until("steps", wait, || {
        (steps.load(Ordering::SeqCst) > 5).then_some(())
    });
    let ask = command(
        &relay,
        "rust-ctl",
        r#"{"command":"ask","args":{"input":"x"}}"#,
    );
    let st = wait_until("ask rejected", wait, || {
        Some(command_state(&relay, "rust-ctl", &ask)).filter(|c| c["status"] == "rejected")
    });
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("does not support ask"));
    command(&relay, "rust-ctl", r#"{"command":"pause"}"#);
    wait_until("paused", wait, || {
        (relay.get_ok("/api/runs/rust-ctl")["status"] == "paused").then_some(())
    });
    let at = steps.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300)); // the counter must stand still
    assert_eq!(steps.load(Ordering::SeqCst), at, "stepped while paused");
    command(&relay, "rust-ctl", r#"{"command":"resume"}"#);
    wait_until("resumed", wait, || {
        (steps.load(Ordering::SeqCst) > at).then_some(())
    });
    command(&relay, "rust-ctl", r#"{"command":"stop"}"#);
    assert!(trainer.join().unwrap(), "final flush failed");
    assert_eq!(relay.get_ok("/api/runs/rust-ctl")["status"], "stopped");
}

#[test]
fn a_spool_left_by_a_closed_client_is_sent_by_the_next_one_for_the_run() {
    let dir = TempDir::new("client-spool-next");
    let mut relay = Relay::start(&dir.0, &[]);
    relay.kill();
    let first = Client::with_options(&relay.url, "rust-next", options(&dir, 1 << 20));
    first.training_start("rust", 1, 300, serde_json::Map::new());
    for i in 0..300 {
        first.batch_end(0, i, i + 1, 0.5, 0.01);
    }
    let first_src = first.src().to_string();
    assert!(
        !first.close(Duration::from_millis(300)),
        "no relay, yet delivered"
    );
    assert_eq!(
        spool_lines(&dir, "rust-next"),
        301,
        "the spool lost events at exit"
    );
    relay.restart();
    let second = Client::with_options(&relay.url, "rust-next", options(&dir, 1 << 20));
    second.training_end("completed");
    assert!(second.close(Duration::from_secs(30)));
    let events = events(&relay, "rust-next");
    assert_eq!(events.len(), 302);
    assert!(events[..301].iter().all(|e| e["src"] == first_src.as_str()));
    let idx: Vec<u64> = events[1..301]
        .iter()
        .map(|e| e["batch_idx"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, (0..300).collect::<Vec<_>>(), "lost or out of order");
    assert_eq!(events[301]["event"], "training_end");
    assert_eq!(spool_lines(&dir, "rust-next"), 0, "spool not cleared");
}

#[test]
fn a_full_spool_drops_old_batch_ends_keeps_the_rest_and_reports_the_count() {
    let dir = TempDir::new("client-spool-cap");
    let mut relay = Relay::start(&dir.0, &[]);
    relay.kill();
    let client = Client::with_options(&relay.url, "rust-cap", options(&dir, 32 * 1024));
    client.training_start("rust", 1, 3000, serde_json::Map::new());
    for i in 0..3000 {
        client.batch_end(0, i, i + 1, 0.5, 0.01);
        if i == 10 {
            client.checkpoint_saved("/ckpt/early.pt", 0, 11, 1, Default::default());
        }
    }
    stepwatch_e2e::wait_until("the spool fills up", Duration::from_secs(20), || {
        (client.dropped() > 0).then_some(())
    });
    relay.restart();
    client.training_end("completed");
    assert!(client.flush(Duration::from_secs(30)));
    let dropped = client.dropped();
    let events = events(&relay, "rust-cap");
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for kept in ["training_start", "checkpoint_saved", "training_end"] {
        assert!(names.contains(&kept), "{kept} was dropped");
    }
    let idx: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "batch_end")
        .map(|e| e["batch_idx"].as_u64().unwrap())
        .collect();
    assert_eq!(idx.len() as u64 + dropped, 3000);
    assert_eq!(idx, (3000 - idx.len() as u64..3000).collect::<Vec<_>>());
    let report = events
        .iter()
        .find(|e| e["dropped_events"].is_u64())
        .expect("no drop report");
    assert_eq!(report["dropped_events"].as_u64().unwrap(), dropped);
    assert_eq!(report["level"], "warning");
}

#[test]
fn ranks_of_a_distributed_job_are_one_run_reported_by_rank_zero() {
    let dir = TempDir::new("client-ranks");
    let relay = Relay::start(&dir.0, &[]);
    let env = |rank: &'static str| {
        move |k: &str| {
            let v = match k {
                "RANK" | "LOCAL_RANK" => rank,
                "WORLD_SIZE" | "LOCAL_WORLD_SIZE" => "2",
                "TORCHELASTIC_RUN_ID" => "job-7",
                _ => return None,
            };
            Some(v.to_string())
        }
    };
    let worlds: Vec<_> = ["0", "1"]
        .into_iter()
        .map(|r| stepwatch_client::World::detect_from(&env(r), "node-a", 1).unwrap())
        .collect();
    let run = worlds[0].run_id().unwrap();
    assert_eq!(worlds[1].run_id().as_deref(), Some(run.as_str()));
    let clients: Vec<Client> = worlds
        .into_iter()
        .map(|w| {
            let o = Options {
                world: Some(w),
                ..options(&dir, 1 << 20)
            };
            Client::with_options(&relay.url, &run, o)
        })
        .collect();
    for (i, c) in clients.iter().enumerate() {
        c.training_start("ddp", 1, 10, serde_json::Map::new());
        c.batch_end(1, 0, 1, 0.5 + i as f64, 0.1);
        c.log("info", &format!("hello from {i}"));
    }
    for c in clients {
        assert!(c.close(Duration::from_secs(10)));
    }
    let all = events(&relay, &run);
    let batches: Vec<_> = all.iter().filter(|e| e["event"] == "batch_end").collect();
    assert_eq!(batches.len(), 1, "rank 0 alone reports training: {all:?}");
    assert_eq!(batches[0]["loss"], 0.5);
    let logs: Vec<_> = all.iter().filter(|e| e["event"] == "log").collect();
    assert_eq!(logs.len(), 2);
    assert!(logs
        .iter()
        .any(|e| e["rank"] == 1 && e["message"] == "hello from 1"));
    let state = relay.get_ok(&format!("/api/runs/{run}"));
    let ranks = state["world"]["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 2);
    assert!(
        ranks
            .iter()
            .all(|r| r["host"] == "node-a" && r["state"] == "ended"),
        "{ranks:?}"
    );
}
