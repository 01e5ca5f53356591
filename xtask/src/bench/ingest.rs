//! `ingest`: events/s stored, in NDJSON batches from several clients and one per POST.

use super::load::ndjson_batch;
use super::relay::BenchRelay;
use super::table::row;
use anyhow::{bail, Result};
use std::time::Instant;
use stepwatch_events::{parse_batch, Event};

pub fn ingest_batched(relay: &BenchRelay) -> Result<()> {
    const BATCH: usize = 1000;
    const BATCHES: usize = 1000;
    let threads = 4;
    let bodies: Vec<String> = (0..8).map(|i| ndjson_batch(i * BATCH, BATCH)).collect();
    let cpu0 = relay.cpu_s();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let bodies = &bodies;
            let url = format!("{}/api/runs/bench-ingest-{t}/events", relay.url);
            s.spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                for b in 0..BATCHES / threads {
                    let _ = agent
                        .post(&url)
                        .set("Content-Type", "application/x-ndjson")
                        .send_string(&bodies[b % bodies.len()]);
                }
            });
        }
    });
    let dt = t0.elapsed().as_secs_f64();
    row(
        "ingest, NDJSON batches of 1,000 (4 clients)",
        format!("{:.0} events/s", (BATCH * BATCHES) as f64 / dt),
        "1,000,000 events/s on 2 cores",
    );
    // The relay's own CPU per event: what the rate would be with the cores to itself
    // (and what a busy machine's wall-clock rate hides).
    let cpu_us = (relay.cpu_s() - cpu0) * 1e6 / (BATCH * BATCHES) as f64;
    row(
        "  … relay CPU per event stored",
        format!("{cpu_us:.2} µs ({:.0} events/s per core)", 1e6 / cpu_us),
        "< 2 µs (1M/s on 2 cores)",
    );
    Ok(())
}

pub fn ingest_single(relay: &BenchRelay) -> Result<()> {
    let n = 3000;
    let agent = ureq::AgentBuilder::new().build();
    let url = format!("{}/api/runs/bench-single/events", relay.url);
    let t0 = Instant::now();
    for i in 0..n {
        agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&format!("{{\"event\":\"batch_end\",\"loss\":{i}}}"))?;
    }
    row(
        "ingest, one event per POST (keep-alive)",
        format!("{:.0} req/s", n as f64 / t0.elapsed().as_secs_f64()),
        "(reported)",
    );
    Ok(())
}

/// Events/s stored by 4 clients posting batches of 1,000 to their own runs, spread
/// over `relays`.
pub fn ingest_rate(relays: &[&BenchRelay], tag: &str) -> Result<f64> {
    ingest_rate_with(relays, tag, 4)
}

/// As [`ingest_rate`] with `threads` clients (400 batches in all, whatever their number).
pub fn ingest_rate_with(relays: &[&BenchRelay], tag: &str, threads: usize) -> Result<f64> {
    const BATCH: usize = 1000;
    const BATCHES: usize = 400;
    let bodies: Vec<String> = (0..8).map(|i| ndjson_batch(i * BATCH, BATCH)).collect();
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let first_error = std::sync::Mutex::new(None::<String>);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (bodies, failed, first_error) = (&bodies, &failed, &first_error);
            let url = format!(
                "{}/api/runs/bench-{tag}-{t}/events",
                relays[t % relays.len()].url
            );
            s.spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                for b in 0..BATCHES / threads {
                    let sent = agent
                        .post(&url)
                        .set("Content-Type", "application/x-ndjson")
                        .send_string(&bodies[b % bodies.len()]);
                    if let Err(e) = sent {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let why = match e {
                            ureq::Error::Status(code, r) => {
                                format!("{code} {}", r.into_string().unwrap_or_default())
                            }
                            other => other.to_string(),
                        };
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert(why);
                        }
                    }
                }
            });
        }
    });
    let dt = t0.elapsed().as_secs_f64();
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        let why = first_error
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        bail!("{failed} ingest requests failed (first: {why})");
    }
    Ok((BATCH * BATCHES) as f64 / dt)
}

/// Where the relay's parse time goes: a batch of 1,000 NDJSON lines read as the relay
/// reads them ([`parse_batch`]: keys borrowed from the text) and through a generic JSON
/// value first (its fallback, and how it read every event before), µs per event (the
/// best of 30 rounds, in this process: xtask and the events crate build optimised).
pub fn parse_cost() -> Result<()> {
    let plain = ndjson_batch(0, 1000);
    let with_metrics: String = plain
        .lines()
        .map(|l| format!("{},\"metrics\":{{\"acc\":0.5,\"grad_norm\":1.0}},\"src\":\"py-0123456789ab\",\"seq\":7}}\n", &l[..l.len() - 1]))
        .collect();
    for (what, body) in [
        ("loss, lr, step", &plain),
        ("+ 2 metrics, src, seq", &with_metrics),
    ] {
        let best = |f: &dyn Fn() -> usize| -> Result<f64> {
            let mut best = f64::MAX;
            for _ in 0..30 {
                let t0 = Instant::now();
                if f() != 1000 {
                    bail!("the bench batch did not parse");
                }
                best = best.min(t0.elapsed().as_secs_f64() * 1e6 / 1000.0);
            }
            Ok(best)
        };
        let direct = best(&|| parse_batch(body, true).map_or(0, |v| v.len()))?;
        let generic = best(&|| {
            body.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| Event::from_value(v).ok())
                .count()
        })?;
        row(
            &format!("  … parse per event ({what}): direct / via a JSON value"),
            format!("{direct:.2} / {generic:.2} µs"),
            "(where the time goes)",
        );
    }
    Ok(())
}
