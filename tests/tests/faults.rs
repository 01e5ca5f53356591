//! Faults on a real relay process: a full disk, and kill -9 while a trainer streams and
//! browsers-like subscribers follow.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use stepwatch_e2e::{sse_follow_ids, Relay, TempDir};

const NDJSON: &str = "application/x-ndjson";

fn ids(relay: &Relay, run: &str) -> Vec<u64> {
    relay.all_ids(run)
}

/// A small tmpfs mounted for the test, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn padded_batch(from: usize, n: usize) -> String {
    let pad = "x".repeat(1000);
    (from..from + n)
        .map(|i| format!("{{\"event\":\"log\",\"message\":\"{i} {pad}\"}}\n"))
        .collect()
}

#[test]
fn a_full_disk_answers_503_keeps_reads_and_recovers_when_space_returns() {
    let dir = TempDir::new("disk-full");
    let Some(disk) = SmallDisk::mount(&dir.0.join("mnt"), "4m") else {
        // Mounting needs root; CI runs as root, so this only skips on a developer box.
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    };
    let mut relay = Relay::start(&disk.0.join("data"), &[]);
    let mut acked = 0u64;
    let mut refusal: Option<Value> = None;
    for i in 0..100 {
        let (status, v) = relay.post("fill", &padded_batch(i * 200, 200), NDJSON);
        if status == 200 {
            acked = v["last_id"].as_u64().unwrap();
            continue;
        }
        assert_eq!(status, 503, "{v}");
        refusal = Some(v);
        break;
    }
    let refusal = refusal.expect("the disk never filled up");
    assert!(
        refusal["error"].as_str().unwrap().contains("storage full"),
        "{refusal}"
    );
    assert!(acked > 0, "nothing fit at all");
    // Reads keep working, and hold exactly what was acknowledged.
    assert_eq!(
        relay.get_ok("/api/runs/fill")["last_id"].as_u64(),
        Some(acked)
    );
    assert_eq!(ids(&relay, "fill"), (1..=acked).collect::<Vec<_>>());
    let metrics = ureq::get(&format!("{}/metrics", relay.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("stepwatch_storage_errors_total 1"),
        "{metrics}"
    );
    // Space returns: the same relay takes events again, ids continue without a gap.
    disk.resize("64m");
    let (status, v) = relay.post("fill", &padded_batch(0, 10), NDJSON);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["last_id"].as_u64(), Some(acked + 10));
    // Nothing was corrupted: a restart reads the same history.
    relay.restart();
    assert_eq!(ids(&relay, "fill"), (1..=acked + 10).collect::<Vec<_>>());
    drop(relay);
}

#[test]
fn kill_9_of_the_relay_loses_no_acknowledged_event_and_streams_resume_exactly_once() {
    let dir = TempDir::new("kill9");
    let mut relay = Relay::start(&dir.0, &[]);
    let url = relay.url.clone();
    let total = 6000u64;
    // The trainer: the Rust SDK, retrying through every outage.
    let trainer = std::thread::spawn({
        let url = url.clone();
        move || {
            let client = stepwatch_client::Client::with_options(
                &url,
                "k9",
                stepwatch_client::Options {
                    spool_dir: None,
                    commands: false,
                    ..Default::default()
                },
            );
            for i in 0..total {
                client.batch_end(0, i, i + 1, 1.0 / (i as f64 + 1.0), 0.01);
                std::thread::sleep(Duration::from_micros(500));
            }
            assert!(client.close(Duration::from_secs(60)), "not all delivered");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let subscribers: Vec<_> = (0..3)
        .map(|_| {
            let stream = format!("{url}/api/runs/k9/stream");
            std::thread::spawn(move || sse_follow_ids(&stream, total, deadline))
        })
        .collect();
    let mut last = 0;
    for _ in 0..3 {
        // Once the trainer has stored 500 more events, kill -9 and start again.
        last = stepwatch_e2e::wait_until("the trainer streaming", Duration::from_secs(30), || {
            let (_, state) = relay.get("/api/runs/k9");
            state["last_id"].as_u64().filter(|id| *id >= last + 500)
        });
        relay.restart(); // SIGKILL, then start again on the same port and data
    }
    trainer.join().unwrap();
    let stored = ids(&relay, "k9");
    assert_eq!(stored, (1..=total).collect::<Vec<_>>(), "lost or doubled");
    let events = relay.get_ok("/api/runs/k9/events?limit=100000");
    let idx: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["batch_idx"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, (0..total).collect::<Vec<_>>(), "out of order");
    for s in subscribers {
        let seen = s.join().unwrap();
        assert_eq!(
            seen,
            (1..=total).collect::<Vec<_>>(),
            "a subscriber missed or repeated"
        );
    }
}
