//! `cargo xtask bench alerts`: a release relay with an `--alerts` config and a webhook
//! receiver (the e2e harness's [`WebhookReceiver`]). A trainer-like loop posts
//! `batch_end` events, then one NaN: the time from that POST until the receiver has the
//! `fired` notice, and until the `alert_fired` event is on the run's SSE stream (what the
//! dashboard's banner reads), 200 times, resolved in between (`cooldown_s = 0`). Then the
//! ingest rate (NDJSON batches of 1,000 from 4 clients, [`ndjson_batch`]) with no rules
//! against 20 rules on every run.

use super::load::ndjson_batch;
use super::table::{percentile, row};
use anyhow::{anyhow, bail, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stepwatch_e2e::{Relay, TempDir, WebhookReceiver};

const REPS: usize = 200;
const T: Duration = Duration::from_secs(30);

/// The relay program: `$STEPWATCH_BIN` (set by the launch group), else the release build.
fn bin(root: &Path) -> PathBuf {
    std::env::var_os("STEPWATCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/stepwatch"))
}

/// A relay over `dir/data` with `config` as its `--alerts` file.
fn relay_with(root: &Path, dir: &Path, config: &str) -> Result<Relay> {
    let cfg = dir.join("alerts.toml");
    std::fs::write(&cfg, config)?;
    Relay::try_start_bin(
        &bin(root),
        &dir.join("data"),
        &["--alerts", cfg.to_str().unwrap_or_default()],
        None,
    )
    .map_err(|e| anyhow!("relay did not start: {e}"))
}

/// The alert figures.
pub fn alerts(root: &Path) -> Result<()> {
    latency(root)?;
    ingest_cost(root)
}

/// Condition → notice at the receiver, and → `alert_fired` on the stream.
fn latency(root: &Path) -> Result<()> {
    let dir = TempDir::new("bench-alerts");
    let hook = WebhookReceiver::start();
    let config = format!(
        "[alerts]\ndefaults = false\n\n[[alerts.rules]]\nname = \"nan\"\nkind = \"non_finite\"\n\
         cooldown_s = 0\n\n[alerts.channels.hook]\nkind = \"webhook\"\nurl = \"{}\"\n",
        hook.url("/hook")
    );
    let relay = relay_with(root, &dir.0, &config)?;
    let run = "bench-alerts";
    let post = format!("{}/api/runs/{run}/events", relay.url);
    let agent = ureq::AgentBuilder::new().build();
    agent
        .post(&post)
        .send_string("{\"event\":\"training_start\"}")?;
    let fired_on_stream = follow_fired(&format!("{}/api/runs/{run}/stream?after=0", relay.url))?;
    let (mut to_hook, mut to_stream) = (Vec::new(), Vec::new());
    let mut step = 0;
    for i in 0..REPS {
        // A trainer's steps: finite values, which also resolve the last firing.
        let mut batch = String::new();
        for _ in 0..20 {
            step += 1;
            batch.push_str(&format!(
                "{{\"event\":\"batch_end\",\"batch_idx\":{step},\"loss\":{:.4}}}\n",
                1.0 / step as f64
            ));
        }
        agent
            .post(&post)
            .set("Content-Type", "application/x-ndjson")
            .send_string(&batch)?;
        if i > 0 {
            wait_notices(&hook, "resolved", i)?;
        }
        step += 1;
        let t0 = Instant::now();
        agent.post(&post).send_string(&format!(
            "{{\"event\":\"batch_end\",\"batch_idx\":{step},\"loss\":\"NaN\"}}"
        ))?;
        let at = wait_notices(&hook, "fired", i + 1)?;
        to_hook.push(at.duration_since(t0).as_secs_f64() * 1e3);
        let seen = wait_len(&fired_on_stream, i + 1)?;
        to_stream.push(seen.saturating_duration_since(t0).as_secs_f64() * 1e3);
    }
    to_hook.sort_by(f64::total_cmp);
    to_stream.sort_by(f64::total_cmp);
    row(
        "alerts: NaN → webhook received, p50 / p99",
        format!(
            "{:.2} / {:.2} ms",
            percentile(&to_hook, 0.5),
            percentile(&to_hook, 0.99)
        ),
        "(reported)",
    );
    row(
        "alerts: NaN → alert_fired on SSE, p50 / p99",
        format!(
            "{:.2} / {:.2} ms",
            percentile(&to_stream, 0.5),
            percentile(&to_stream, 0.99)
        ),
        "(the banner's source)",
    );
    Ok(())
}

/// Waits until the receiver has `n` notices in `state`; the arrival of the `n`th.
fn wait_notices(hook: &WebhookReceiver, state: &str, n: usize) -> Result<Instant> {
    let t0 = Instant::now();
    loop {
        let got: Vec<Instant> = hook
            .requests()
            .iter()
            .filter(|r| r.body["state"] == state)
            .map(|r| r.at)
            .collect();
        if got.len() >= n {
            return Ok(got[n - 1]);
        }
        if t0.elapsed() > T {
            bail!("the receiver has {} of {n} {state} notices", got.len());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Follows an SSE stream in a thread; the arrival time of each `alert_fired` event.
fn follow_fired(url: &str) -> Result<Arc<Mutex<Vec<Instant>>>> {
    let resp = ureq::get(url).call()?;
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let out = seen.clone();
    std::thread::spawn(move || {
        let reader = BufReader::new(resp.into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if line == "event: alert_fired" {
                if let Ok(mut v) = out.lock() {
                    v.push(Instant::now());
                }
            }
        }
    });
    Ok(seen)
}

fn wait_len(seen: &Mutex<Vec<Instant>>, n: usize) -> Result<Instant> {
    let t0 = Instant::now();
    loop {
        if let Some(at) = seen.lock().ok().and_then(|v| v.get(n - 1).copied()) {
            return Ok(at);
        }
        if t0.elapsed() > T {
            bail!("alert_fired #{n} never came on the stream");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// 20 rules on every run, of every kind, none of which the load makes fire.
fn twenty_rules() -> String {
    let rules = [
        "kind = \"non_finite\"",
        "kind = \"non_finite\"\nmetric = \"*\"",
        "kind = \"non_finite\"\nmetric = \"val_loss\"",
        "kind = \"above\"\nthreshold = 1e6\nfor = 3",
        "kind = \"below\"\nthreshold = -1.0",
        "kind = \"above\"\nmetric = \"lr\"\nthreshold = 10.0",
        "kind = \"below\"\nmetric = \"lr\"\nthreshold = -1.0",
        "kind = \"above\"\nmetric = \"val_loss\"\nthreshold = 10.0",
        "kind = \"below\"\nmetric = \"acc\"\nthreshold = 0.0",
        "kind = \"spike\"\nfactor = 1e6\nwindow = 20",
        "kind = \"spike\"\nmetric = \"lr\"\nfactor = 1e6\nwindow = 100",
        "kind = \"spike\"\nmetric = \"val_loss\"",
        "kind = \"plateau\"\nwindow = 1000000000",
        "kind = \"plateau\"\nmetric = \"lr\"\nmode = \"max\"\nwindow = 1000000000",
        "kind = \"stale\"\nafter_s = 3600",
        "kind = \"failed\"",
        "kind = \"finished\"",
        "kind = \"gpu_idle\"\nafter_s = 3600",
        "kind = \"event\"",
        "kind = \"event\"\nevent = \"oom\"",
    ];
    let mut s = String::from("[alerts]\ndefaults = false\n");
    for (i, r) in rules.iter().enumerate() {
        s.push_str(&format!("\n[[alerts.rules]]\nname = \"r{i:02}\"\n{r}\n"));
    }
    s
}

/// Events/s stored by 4 clients posting batches of 1,000 to their own runs.
fn rate(relay: &Relay, tag: &str) -> Result<f64> {
    const BATCH: usize = 1000;
    const BATCHES: usize = 400;
    let threads = 4;
    let bodies: Vec<String> = (0..8).map(|i| ndjson_batch(i * BATCH, BATCH)).collect();
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (bodies, failed) = (&bodies, &failed);
            let url = format!("{}/api/runs/bench-{tag}-{t}/events", relay.url);
            s.spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                for b in 0..BATCHES / threads {
                    let sent = agent
                        .post(&url)
                        .set("Content-Type", "application/x-ndjson")
                        .send_string(&bodies[b % bodies.len()]);
                    if sent.is_err() {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let dt = t0.elapsed().as_secs_f64();
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} ingest requests failed");
    }
    Ok((BATCH * BATCHES) as f64 / dt)
}

/// Ingest with no rules against 20 rules on every run: the best of two rounds each.
fn ingest_cost(root: &Path) -> Result<()> {
    let (none_dir, twenty_dir) = (
        TempDir::new("bench-rules-0"),
        TempDir::new("bench-rules-20"),
    );
    let none = relay_with(root, &none_dir.0, "[alerts]\ndefaults = false\n")?;
    let twenty = relay_with(root, &twenty_dir.0, &twenty_rules())?;
    let (mut r0, mut r20) = (0f64, 0f64);
    for round in 0..2 {
        r0 = r0.max(rate(&none, &format!("r0-{round}"))?);
        r20 = r20.max(rate(&twenty, &format!("r20-{round}"))?);
    }
    row(
        "ingest, NDJSON batches, 0 alert rules",
        format!("{r0:.0} events/s"),
        "",
    );
    row(
        "ingest, NDJSON batches, 20 rules per run",
        format!("{r20:.0} events/s"),
        "",
    );
    row(
        "ingest cost of 20 alert rules",
        format!("{:+.1} %", 100.0 * (r20 - r0) / r0),
        "(reported)",
    );
    Ok(())
}
