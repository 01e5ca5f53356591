//! The Rust SDK against a real relay process.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use stepwatch_client::Client;
use stepwatch_events::event::Log;
use stepwatch_events::EventBody;

struct Relay {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Relay {
    fn start(port: u16, dir: PathBuf) -> Relay {
        let bin = std::env::var_os("STEPWATCH_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/stepwatch")
            });
        assert!(
            bin.exists(),
            "build the relay first: cargo build -p stepwatch-relay"
        );
        let child = Command::new(bin)
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while ureq::get(&format!("{url}/healthz")).call().is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "relay did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Relay { child, url, dir }
    }

    fn events(&self, run: &str) -> Vec<serde_json::Value> {
        ureq::get(&format!("{}/api/runs/{run}/events?limit=100000", self.url))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tmp(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("stepwatch-client-{tag}-{}", std::process::id()))
}

#[test]
fn events_emitted_while_the_relay_is_down_arrive_in_order_once_it_is_up() {
    let p = port();
    let client = Client::connect(&format!("http://127.0.0.1:{p}"), "rust-outage");
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
    let relay = Relay::start(p, tmp("outage"));
    client.training_end("completed");
    assert!(client.close(Duration::from_secs(30)));
    let events = relay.events("rust-outage");
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
    let relay = Relay::start(port(), tmp("bad"));
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
    let msgs: Vec<_> = relay
        .events("rust-bad")
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(msgs, vec!["before", "after"]);
}
