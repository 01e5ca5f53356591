//! `open`: runs of 1M and 10M steps: storing them, their series overview and zoom, and
//! opening them in the browser.

use super::browser::open_long_run;
use super::load::ingest_run;
use super::relay::BenchRelay;
use super::table::row;
use anyhow::Result;
use std::time::Instant;

/// `GET /series` for the loss of a long run: the overview a chart opens with, and a
/// zoom into 0.1 % of it (full fidelity).
pub fn series_latency(relay: &BenchRelay, run: &str, n: usize, ingest_rate: f64) -> Result<()> {
    let get = |q: &str| -> Result<(f64, serde_json::Value)> {
        let t0 = Instant::now();
        let v: serde_json::Value = ureq::get(&format!("{}/api/runs/{run}/series?{q}", relay.url))
            .call()?
            .into_json()?;
        Ok((t0.elapsed().as_secs_f64() * 1000.0, v))
    };
    let _ = get("metric=loss&points=1500")?; // loads the index into memory once
    let (overview, v) = get("metric=loss&points=1500")?;
    let mid = n / 2;
    let (zoom, z) = get(&format!(
        "metric=loss&points=1500&from={mid}&to={}",
        mid + n / 1000
    ))?;
    row(
        &format!("series of a {}M-step run: overview / zoom", n / 1_000_000),
        format!("{overview:.0} / {zoom:.0} ms"),
        "chart < 500 ms at 10M steps",
    );
    row(
        "  … points returned (overview / zoom), exact",
        format!(
            "{} / {} ({}/{})",
            v["points"].as_array().map_or(0, Vec::len),
            z["points"].as_array().map_or(0, Vec::len),
            v["exact"],
            z["exact"]
        ),
        &format!("(stored at {ingest_rate:.0} ev/s)"),
    );
    // The page's log and system tails: the newest of a kind the run holds few of.
    let t0 = Instant::now();
    for tail in [
        "event=log&order=desc&limit=500",
        "event=system&order=desc&limit=300",
    ] {
        ureq::get(&format!("{}/api/runs/{run}/events?{tail}", relay.url)).call()?;
    }
    row(
        "  … its log and system tails (newest 500 / 300)",
        format!("{:.1} ms", t0.elapsed().as_secs_f64() * 1000.0),
        "(part of opening the run page)",
    );
    Ok(())
}

/// Stores runs of 1M and 10M steps, then times their series and opening them.
pub fn open_long_runs(relay: &BenchRelay) -> Result<()> {
    for (run, n) in [("bench-1m", 1_000_000), ("bench-10m", 10_000_000)] {
        let t0 = Instant::now();
        ingest_run(relay, run, n)?;
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        series_latency(relay, run, n, rate)?;
        open_long_run(relay, run)?;
    }
    Ok(())
}
