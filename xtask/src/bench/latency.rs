//! `latency`: from a POST to a relay until an SSE subscriber (of the same relay or
//! another on the same database) receives it.

use super::relay::BenchRelay;
use super::table::{percentile, row};
use anyhow::{bail, Result};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

pub fn delivery_latency(relay: &BenchRelay) -> Result<()> {
    let (p50, p99) = post_to_stream(relay, relay, "bench-latency")?;
    row(
        "POST → SSE subscriber, p50 / p99",
        format!("{p50:.2} / {p99:.2} ms"),
        "emit → pixel p99 < 50 ms",
    );
    Ok(())
}

/// p50 / p99 ms from a POST to relay `to` until relay `from`'s stream delivers it.
pub fn post_to_stream(to: &BenchRelay, from: &BenchRelay, run: &str) -> Result<(f64, f64)> {
    let agent = ureq::AgentBuilder::new().build();
    let post = format!("{}/api/runs/{run}/events", to.url);
    agent
        .post(&post)
        .send_string("{\"event\":\"training_start\"}")?;
    // The other relay learns of the run from the notification.
    let t0 = Instant::now();
    while ureq::get(&format!("{}/api/runs/{run}", from.url))
        .call()
        .is_err()
    {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("relay {} never saw run {run}", from.url);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let resp = ureq::get(&format!("{}/api/runs/{run}/stream?after=1", from.url)).call()?;
    let mut reader = BufReader::new(resp.into_reader());
    let mut lat = Vec::new();
    let mut line = String::new();
    for i in 0..500 {
        let t0 = Instant::now();
        agent
            .post(&post)
            .send_string(&format!("{{\"event\":\"batch_end\",\"loss\":{i}}}"))?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("stream closed");
            }
            if line.starts_with("data: ") {
                break;
            }
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    Ok((percentile(&lat, 0.5), percentile(&lat, 0.99)))
}
