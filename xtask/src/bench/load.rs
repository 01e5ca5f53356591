//! Load generators shared by the benchmarks: NDJSON batches, wall-clock stamps, and a
//! long run stored in batches.

use super::relay::BenchRelay;
use anyhow::Result;

pub fn ndjson_batch(start: usize, n: usize) -> String {
    let mut s = String::with_capacity(n * 80);
    for i in start..start + n {
        s.push_str(&format!(
            "{{\"event\":\"batch_end\",\"batch_idx\":{i},\"loss\":{:.6},\"lr\":0.001,\"step\":{}}}\n",
            1.0 / (i as f64 + 1.0),
            i + 1
        ));
    }
    s
}

/// Milliseconds since the unix epoch.
pub fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Stores `n` steps of `run` in NDJSON batches of 1,000 from 4 clients, in step order
/// per client (the relay numbers them as they arrive).
pub fn ingest_run(relay: &BenchRelay, run: &str, n: usize) -> Result<()> {
    let url = format!("{}/api/runs/{run}/events", relay.url);
    if n <= 1_000_000 {
        let agent = ureq::AgentBuilder::new().build();
        let mut done = 0;
        while done < n {
            agent
                .post(&url)
                .set("Content-Type", "application/x-ndjson")
                .send_string(&ndjson_batch(done, 1000))?;
            done += 1000;
        }
        return Ok(());
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let agent = ureq::AgentBuilder::new().build();
                loop {
                    let start = next.fetch_add(1000, std::sync::atomic::Ordering::Relaxed);
                    if start >= n {
                        return;
                    }
                    let _ = agent
                        .post(&url)
                        .set("Content-Type", "application/x-ndjson")
                        .send_string(&ndjson_batch(start, 1000));
                }
            });
        }
    });
    Ok(())
}
