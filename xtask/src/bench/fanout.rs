//! `fanout`: 1,000 SSE subscribers over 10 runs streaming 1,000 events/s each.

use super::load::now_ms;
use super::relay::BenchRelay;
use super::table::{percentile, row};
use anyhow::Result;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

/// Subscribers for the fan-out benchmark, the runs they follow, and each run's rate.
const FAN_SUBSCRIBERS: usize = 1000;
const FAN_RUNS: usize = 10;
const FAN_RATE: usize = 1000;
const FAN_SECONDS: u64 = 10;

/// Opens an SSE stream and counts its events until `stop`; every 16th event's
/// publish-to-receipt latency (ms) goes to `lat`.
fn fan_subscriber(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> (u64, Vec<f64>) {
    use std::sync::atomic::Ordering;
    let Ok(resp) = ureq::get(&url).call() else {
        return (0, Vec::new());
    };
    opened.fetch_add(1, Ordering::Relaxed);
    let mut reader = BufReader::new(resp.into_reader());
    let (mut n, mut lat) = (0u64, Vec::new());
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(data) = line.strip_prefix("data: ") {
            n += 1;
            if n % 16 == 0 {
                if let Some(ms) = data
                    .split("\"sent_ms\":")
                    .nth(1)
                    .and_then(|r| r.split([',', '}']).next())
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    lat.push(now_ms() - ms);
                }
            }
        }
    }
    (n, lat)
}

/// 1,000 SSE subscribers over 10 runs, each run streaming 1,000 events/s: deliveries/s,
/// publish → subscriber latency, relay CPU and RSS, and memory per idle subscriber.
pub fn fan_out(relay: &BenchRelay) -> Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let runs: Vec<String> = (0..FAN_RUNS).map(|r| format!("bench-fan-{r}")).collect();
    for run in &runs {
        ureq::post(&format!("{}/api/runs/{run}/events", relay.url))
            .send_string(r#"{"event":"training_start"}"#)?;
    }
    let rss_before = relay.rss_mb();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let subs: Vec<_> = (0..FAN_SUBSCRIBERS)
        .map(|i| {
            let url = format!(
                "{}/api/runs/{}/stream?after=1",
                relay.url,
                runs[i % FAN_RUNS]
            );
            let (stop, opened) = (stop.clone(), opened.clone());
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || fan_subscriber(url, stop, opened))
        })
        .collect::<std::io::Result<_>>()?;
    let t0 = Instant::now();
    while opened.load(Ordering::Relaxed) < FAN_SUBSCRIBERS && t0.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle_kib = (relay.rss_mb() - rss_before) * 1024.0 / FAN_SUBSCRIBERS as f64;
    // Publishers: per run, a batch of 10 events every 10 ms.
    let cpu0 = relay.cpu_s();
    let t0 = Instant::now();
    let sent = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for run in &runs {
            let (url, sent) = (format!("{}/api/runs/{run}/events", relay.url), &sent);
            s.spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                let per_tick = FAN_RATE / 100;
                let mut tick = Instant::now();
                while t0.elapsed() < Duration::from_secs(FAN_SECONDS) {
                    let ms = now_ms();
                    let body: String = (0..per_tick)
                        .map(|_| format!("{{\"event\":\"metric_update\",\"name\":\"x\",\"value\":1,\"sent_ms\":{ms}}}\n"))
                        .collect();
                    if agent
                        .post(&url)
                        .set("Content-Type", "application/x-ndjson")
                        .send_string(&body)
                        .is_ok()
                    {
                        sent.fetch_add(per_tick, Ordering::Relaxed);
                    }
                    tick += Duration::from_millis(10);
                    std::thread::sleep(tick.saturating_duration_since(Instant::now()));
                }
            });
        }
    });
    std::thread::sleep(Duration::from_millis(500)); // let the last ones arrive
    let dt = t0.elapsed().as_secs_f64();
    let cpu = (relay.cpu_s() - cpu0) / dt * 100.0;
    let rss = relay.rss_mb();
    stop.store(true, Ordering::Relaxed);
    // Wake every reader with one more event per run, so its thread sees `stop`.
    for run in &runs {
        let _ = ureq::post(&format!("{}/api/runs/{run}/events", relay.url))
            .send_string(r#"{"event":"log","message":"end"}"#);
    }
    let (mut delivered, mut lat) = (0u64, Vec::new());
    for h in subs {
        if let Ok((n, l)) = h.join() {
            delivered += n;
            lat.extend(l);
        }
    }
    lat.sort_by(f64::total_cmp);
    let published = sent.load(Ordering::Relaxed);
    row(
        &format!("fan-out: {FAN_SUBSCRIBERS} SSE subscribers on {FAN_RUNS} runs"),
        format!("{:.0} deliveries/s", delivered as f64 / dt),
        &format!(
            "of {:.0}/s published ({:.0} ev/s/run)",
            published as f64 * (FAN_SUBSCRIBERS / FAN_RUNS) as f64 / dt,
            published as f64 / FAN_RUNS as f64 / dt
        ),
    );
    row(
        "  … publish → subscriber, p50 / p99",
        format!(
            "{:.1} / {:.1} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        ),
        "emit → pixel p99 < 50 ms",
    );
    row(
        "  … relay CPU / RSS under that load",
        format!("{cpu:.0}% / {rss:.1} MB"),
        "(reported; 200% = both cores)",
    );
    row(
        "  … memory per idle subscriber",
        format!("{idle_kib:.1} KiB"),
        "< 16 KiB",
    );
    Ok(())
}
