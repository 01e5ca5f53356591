//! `cargo xtask bench alerts`: a release relay with an `--alerts` config and a webhook
//! receiver (the e2e harness's [`WebhookReceiver`]). A trainer-like loop posts
//! `batch_end` events, then one NaN: the time from that POST until the receiver has the
//! `fired` notice, and until the `alert_fired` event is on the run's SSE stream (what the
//! dashboard's banner reads), 200 times, resolved in between (`cooldown_s = 0`). Then the
//! ingest rate (NDJSON batches of 1,000 from 4 clients, [`ndjson_batch`]) with no rules
//! against 20 rules on every run, and the rules' cost per event in one process.

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
    evaluation()?;
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
fn twenty_rule_values() -> Vec<serde_json::Value> {
    use serde_json::json;
    let rules = [
        json!({"kind": "non_finite"}),
        json!({"kind": "non_finite", "metric": "*"}),
        json!({"kind": "non_finite", "metric": "val_loss"}),
        json!({"kind": "above", "threshold": 1e6, "for": 3}),
        json!({"kind": "below", "threshold": -1.0}),
        json!({"kind": "above", "metric": "lr", "threshold": 10.0}),
        json!({"kind": "below", "metric": "lr", "threshold": -1.0}),
        json!({"kind": "above", "metric": "val_loss", "threshold": 10.0}),
        json!({"kind": "below", "metric": "acc", "threshold": 0.0}),
        json!({"kind": "spike", "factor": 1e6, "window": 20}),
        json!({"kind": "spike", "metric": "lr", "factor": 1e6, "window": 100}),
        json!({"kind": "spike", "metric": "val_loss"}),
        json!({"kind": "plateau", "window": 1_000_000_000u64}),
        json!({"kind": "plateau", "metric": "lr", "mode": "max", "window": 1_000_000_000u64}),
        json!({"kind": "stale", "after_s": 3600}),
        json!({"kind": "failed"}),
        json!({"kind": "finished"}),
        json!({"kind": "gpu_idle", "after_s": 3600}),
        json!({"kind": "event"}),
        json!({"kind": "event", "event": "oom"}),
    ];
    rules
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r["name"] = json!(format!("r{i:02}"));
            r
        })
        .collect()
}

/// The same 20 rules as an `[alerts]` table (a JSON string or number is TOML too).
fn twenty_rules() -> String {
    let mut s = String::from("[alerts]\ndefaults = false\n");
    for r in twenty_rule_values() {
        s.push_str("\n[[alerts.rules]]\n");
        for (k, v) in r.as_object().into_iter().flatten() {
            s.push_str(&format!("{k} = {v}\n"));
        }
    }
    s
}

/// The engine's own cost, in one process and on one core: the bench's `batch_end`
/// events folded into a run's state and observed by its evaluator with no rules, then
/// with the 20 rules; the difference per event is what the rules cost.
fn evaluation() -> Result<()> {
    use stepwatch_events::alerts::{At, Rule, RunAlerts};
    use stepwatch_events::{Event, RunState};
    const N: usize = 400_000;
    let mut events: Vec<Event> = Vec::with_capacity(N);
    for (i, line) in ndjson_batch(0, N).lines().enumerate() {
        let mut e = Event::from_json(line).map_err(|e| anyhow!("bench event: {e:?}"))?;
        e.id = Some(i as u64 + 1);
        e.received = Some(1.0e9 + i as f64 * 1e-4);
        events.push(e);
    }
    let rules: Vec<Arc<Rule>> = twenty_rule_values()
        .iter()
        .map(|v| Rule::parse(v, "rule").map(Arc::new))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("bench rule: {e}"))?;
    let pass = |rules: Vec<Arc<Rule>>| {
        let mut state = RunState::new("bench");
        let mut eval = RunAlerts::new("bench", rules);
        let mut out = Vec::new();
        let t0 = Instant::now();
        for e in &events {
            state.apply(e);
            eval.observe(e, At::after(e, &state), &mut out);
        }
        (t0.elapsed().as_secs_f64(), out.len())
    };
    let (mut none, mut twenty) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        none = none.min(pass(Vec::new()).0);
        let (t, fired) = pass(rules.clone());
        if fired > 0 {
            bail!("the bench's rules fired {fired} times");
        }
        twenty = twenty.min(t);
    }
    let per = |t: f64| t / N as f64 * 1e9;
    row(
        "alert engine: fold + 20 rules, one core",
        format!(
            "{:.0} ns/event (fold alone {:.0}; rules {:.0})",
            per(twenty),
            per(none),
            per(twenty - none)
        ),
        "(reported)",
    );
    Ok(())
}

/// The relay process's CPU seconds so far (user + system, from /proc).
fn cpu_s(relay: &Relay) -> f64 {
    let stat = relay
        .pid()
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (f.get(10).copied().unwrap_or(0.0) + f.get(11).copied().unwrap_or(0.0)) / 100.0
}

/// Events/s stored by 4 clients posting batches of 1,000 to their own runs, and the
/// relay's CPU seconds per million events meanwhile.
fn rate(relay: &Relay, tag: &str) -> Result<(f64, f64)> {
    const BATCH: usize = 1000;
    const BATCHES: usize = 400;
    let threads = 4;
    let bodies: Vec<String> = (0..8).map(|i| ndjson_batch(i * BATCH, BATCH)).collect();
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let cpu0 = cpu_s(relay);
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
    // The engine thread may still be evaluating the last batches: let it finish.
    std::thread::sleep(Duration::from_millis(300));
    let cpu = (cpu_s(relay) - cpu0) / (BATCH * BATCHES) as f64 * 1e6;
    Ok(((BATCH * BATCHES) as f64 / dt, cpu))
}

/// Ingest with no rules against 20 rules on every run, in alternating rounds (A B A B…,
/// so a machine that slows down or speeds up meanwhile hits both): the median of each.
fn ingest_cost(root: &Path) -> Result<()> {
    const ROUNDS: usize = 5;
    let (none_dir, twenty_dir) = (
        TempDir::new("bench-rules-0"),
        TempDir::new("bench-rules-20"),
    );
    let none = relay_with(root, &none_dir.0, "[alerts]\ndefaults = false\n")?;
    let twenty = relay_with(root, &twenty_dir.0, &twenty_rules())?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut ca, mut cb) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (r, c) = rate(&none, &format!("r0-{round}"))?;
        a.push(r);
        ca.push(c);
        let (r, c) = rate(&twenty, &format!("r20-{round}"))?;
        b.push(r);
        cb.push(c);
    }
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), x| (l.min(*x), h.max(*x)));
        format!("{lo:.0}–{hi:.0}")
    };
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (sa, sb) = (spread(&a), spread(&b));
    let (r0, r20) = (median(&mut a), median(&mut b));
    let (c0, c20) = (median(&mut ca), median(&mut cb));
    row(
        "ingest, NDJSON batches, 0 alert rules",
        format!("{r0:.0} events/s"),
        &format!("(median of {ROUNDS}; {sa})"),
    );
    row(
        "ingest, NDJSON batches, 20 rules per run",
        format!("{r20:.0} events/s"),
        &format!("(median of {ROUNDS}; {sb})"),
    );
    row(
        "relay CPU per 1M events: 0 / 20 rules",
        format!("{c0:.2} / {c20:.2} s ({:+.1} %)", 100.0 * (c20 - c0) / c0),
        "(median of the same rounds)",
    );
    row(
        "ingest cost of 20 alert rules",
        format!("{:+.1} %", 100.0 * (r20 - r0) / r0),
        "(reported)",
    );
    Ok(())
}
