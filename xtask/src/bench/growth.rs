//! `growth`: how the relay's start, its runs list and its memory grow with the runs and
//! events it holds. One data dir grows point by point: 100, 1,000 and 10,000 small runs
//! (a sweep's few events each, statuses spread), then events in a few long runs up to
//! 1M in all (10M and 100M too with `STEPWATCH_BENCH_BIG=1`). At each point the relay
//! is stopped (SIGTERM) and started again on the same dir, then asked for its runs.
//! `STEPWATCH_BENCH_GROWTH_DIR=DIR` keeps the data in DIR and carries on from what it
//! holds (a 100M fill takes long).

use super::load::ndjson_batch;
use super::relay::{cpu_s, status_mb};
use super::table::{percentile, row};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The runs each point holds, then the events (in all) of the points after them.
const RUN_POINTS: [usize; 3] = [100, 1_000, 10_000];
const EVENT_POINTS: [u64; 1] = [1_000_000];
const BIG_EVENT_POINTS: [u64; 2] = [10_000_000, 100_000_000];
/// The runs the event points make long (sweep members still running: `long_run`),
/// posting in batches of 1,000; the relay holds at most 10,000 runs (`--max-runs`).
const LONG_RUNS: usize = 8;
const CLIENTS: usize = 4;
/// Warm `GET /api/runs` requests per point (their median is reported).
const LIST_TRIES: usize = 10;
/// How long the relay's CPU is watched while idle.
const IDLE: Duration = Duration::from_secs(3);
/// How long a start may take before the bench gives up.
const START_LIMIT: Duration = Duration::from_secs(900);

/// A relay process over the growing data dir.
struct Proc {
    child: Child,
    url: String,
}

impl Proc {
    /// Starts `bin serve` on `dir`; returns it and the seconds until `/readyz` answered.
    fn start(bin: &Path, dir: &Path, dist: &Path) -> Result<(Proc, f64)> {
        let port = stepwatch_e2e::free_port();
        let t0 = Instant::now();
        let child = Command::new(bin)
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .arg("--dist")
            .arg(dist)
            .env_remove("STEPWATCH_DATABASE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut p = Proc {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        while t0.elapsed() < START_LIMIT {
            if ureq::get(&format!("{}/readyz", p.url))
                .timeout(Duration::from_millis(500))
                .call()
                .is_ok()
            {
                return Ok((p, t0.elapsed().as_secs_f64()));
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("relay exited at start ({status})");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("relay did not answer /readyz within {START_LIMIT:?}")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the exit (the relay flushes and checkpoints); seconds.
    fn stop(mut self) -> Result<f64> {
        let t0 = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(t0.elapsed().as_secs_f64())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the data dir holds so far.
#[derive(Default)]
struct Fill {
    small: usize,
    /// Steps stored per long run.
    long: Vec<u64>,
    events: u64,
}

impl Fill {
    /// What a kept data dir already holds, from the relay's runs list.
    fn read(url: &str) -> Result<Fill> {
        let runs: Vec<serde_json::Value> =
            ureq::get(&format!("{url}/api/runs")).call()?.into_json()?;
        let mut f = Fill {
            long: vec![0; LONG_RUNS],
            ..Fill::default()
        };
        for r in &runs {
            let id = r["run"].as_str().unwrap_or_default();
            f.events += r["last_id"].as_u64().unwrap_or(0);
            if id.starts_with("growth-") {
                f.small += 1;
            }
            if let Some(s) = (0..LONG_RUNS)
                .find(|&k| id == long_run(k))
                .and_then(|k| f.long.get_mut(k))
            {
                *s = r["step"].as_u64().unwrap_or(0);
            }
        }
        Ok(f)
    }
}

/// How the sweep's runs end, one in twenty each: 14 complete, 3 fail, 2 stop and one
/// is still running (as far as its trainer said).
const ENDS: [&str; 19] = [
    "completed",
    "completed",
    "completed",
    "completed",
    "completed",
    "completed",
    "completed",
    "completed",
    "completed",
    "completed",
    "completed",
    "completed",
    "completed",
    "completed",
    "failed",
    "failed",
    "failed",
    "stopped",
    "stopped",
];

/// The `k`th long run: a sweep member that has not ended (`small_run`).
fn long_run(k: usize) -> String {
    format!("growth-{:05}", (ENDS.len() + 1) * k + ENDS.len())
}

/// A sweep member's events: its start with config, four steps, an epoch's validation
/// and, for most, its end ([`ENDS`]).
fn small_run(i: usize, now: f64) -> String {
    let t = now - (RUN_POINTS[2] - i) as f64 * 30.0;
    let lr = [1e-4, 3e-4, 1e-3, 3e-3][i % 4];
    let bs = [32, 64, 128][i % 3];
    let mut s = format!(
        "{{\"event\":\"training_start\",\"time\":{t},\"name\":\"sweep-{i}\",\"total_epochs\":2,\"total_batches\":2,\"config\":{{\"lr\":{lr},\"batch_size\":{bs},\"optimizer\":\"adam\",\"seed\":{i}}}}}\n"
    );
    for k in 0..4u64 {
        let loss = 2.0 / (k as f64 + 1.0) + (i % 97) as f64 / 100.0;
        s.push_str(&format!(
            "{{\"event\":\"batch_end\",\"time\":{},\"batch_idx\":{},\"epoch\":{},\"step\":{},\"loss\":{loss},\"lr\":{lr}}}\n",
            t + k as f64 + 1.0,
            k % 2,
            k / 2,
            k + 1
        ));
    }
    s.push_str(&format!(
        "{{\"event\":\"epoch_end\",\"time\":{},\"epoch\":0,\"metrics\":{{\"val_loss\":{}}}}}\n",
        t + 5.0,
        1.0 + (i % 89) as f64 / 100.0
    ));
    if let Some(status) = ENDS.get(i % (ENDS.len() + 1)) {
        s.push_str(&format!(
            "{{\"event\":\"training_end\",\"time\":{},\"status\":\"{status}\"}}\n",
            t + 6.0
        ));
    }
    s
}

/// POSTs an NDJSON body; the events the relay stored.
fn post(agent: &ureq::Agent, url: &str, body: &str) -> Result<u64> {
    let answer: serde_json::Value = agent
        .post(url)
        .set("Content-Type", "application/x-ndjson")
        .send_string(body)
        .map_err(|e| anyhow!("POST {url}: {e}"))?
        .into_json()?;
    Ok(answer["accepted"].as_u64().unwrap_or(0))
}

/// Adds small runs up to `runs`, from [`CLIENTS`] clients.
fn add_runs(url: &str, fill: &mut Fill, runs: usize) -> Result<()> {
    let next = AtomicUsize::new(fill.small);
    let stored = AtomicU64::new(0);
    let now = super::load::now_ms() / 1000.0;
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let agent = ureq::AgentBuilder::new().build();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= runs {
                            return Ok(());
                        }
                        let run = format!("{url}/api/runs/growth-{i:05}/events");
                        let n = post(&agent, &run, &small_run(i, now))?;
                        stored.fetch_add(n, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow!("a fill client panicked"))??;
        }
        Ok(())
    })?;
    fill.small = fill.small.max(runs);
    fill.events += stored.load(Ordering::Relaxed);
    Ok(())
}

/// Adds `batch_end` events to the long runs, 1,000 per POST, until `events` in all.
fn add_events(url: &str, fill: &mut Fill, events: u64) -> Result<()> {
    if fill.long.is_empty() {
        // The sweep's runs hold steps 1 to 4.
        fill.long = vec![4; LONG_RUNS];
    }
    let need = events.saturating_sub(fill.events);
    let batches = need.div_ceil(1000) as usize;
    let stored = AtomicU64::new(0);
    let steps: Vec<AtomicU64> = fill.long.iter().map(|&s| AtomicU64::new(s)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (steps, next, stored) = (&steps, &next, &stored);
                s.spawn(move || -> Result<()> {
                    let agent = ureq::AgentBuilder::new().build();
                    // Each client owns the long runs k ≡ c (mod CLIENTS): steps stay in order.
                    let mine: Vec<usize> = (c..LONG_RUNS).step_by(CLIENTS).collect();
                    for round in 0.. {
                        if next.fetch_add(1, Ordering::Relaxed) >= batches {
                            return Ok(());
                        }
                        let k = mine[round % mine.len()];
                        let step = steps[k].load(Ordering::Relaxed);
                        let body = ndjson_batch(step as usize, 1000);
                        let run = format!("{url}/api/runs/{}/events", long_run(k));
                        stored.fetch_add(post(&agent, &run, &body)?, Ordering::Relaxed);
                        steps[k].store(step + 1000, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow!("a fill client panicked"))??;
        }
        Ok(())
    })?;
    fill.long = steps.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    fill.events += stored.load(Ordering::Relaxed);
    Ok(())
}

/// What one point measured.
struct Point {
    runs: usize,
    events: u64,
    fill_s: f64,
    stop_s: f64,
    start_s: f64,
    rss_start: f64,
    first_list_ms: f64,
    list_ms: f64,
    list_kb: f64,
    stream_ms: f64,
    /// CPU % while nobody asks anything (the alert engine's clock over every run).
    idle_cpu: f64,
    rss_list: f64,
    peak: f64,
    disk_mb: f64,
    page: Option<super::growth_page::PageTimes>,
}

/// `GET /api/runs`: (ms, bytes).
fn list_once(url: &str) -> Result<(f64, usize)> {
    let t0 = Instant::now();
    let body = ureq::get(&format!("{url}/api/runs"))
        .call()?
        .into_string()?;
    Ok((t0.elapsed().as_secs_f64() * 1000.0, body.len()))
}

/// `GET /api/stream` until its `ready` event (every run's summary sent), ms.
fn stream_ready(url: &str) -> Result<f64> {
    let t0 = Instant::now();
    let resp = ureq::get(&format!("{url}/api/stream")).call()?;
    let mut reader = BufReader::new(resp.into_reader());
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the runs stream ended before `ready`");
        }
        if line.trim_end() == "event: ready" {
            return Ok(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
}

/// Bytes in the files under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Restarts the relay on the dir and measures it.
fn measure(relay: Proc, ctx: &Ctx, fill: &Fill, fill_s: f64) -> Result<(Proc, Point)> {
    let stop_s = relay.stop()?;
    let (relay, start_s) = Proc::start(&ctx.bin, &ctx.dir, &ctx.dist)?;
    let pid = relay.pid();
    let rss_start = status_mb(pid, "VmRSS");
    let (first_list_ms, bytes) = list_once(&relay.url)?;
    let mut tries = Vec::new();
    for _ in 0..LIST_TRIES {
        tries.push(list_once(&relay.url)?.0);
    }
    tries.sort_by(f64::total_cmp);
    let stream_ms = stream_ready(&relay.url)?;
    let cpu0 = cpu_s(pid);
    std::thread::sleep(IDLE);
    let idle_cpu = (cpu_s(pid) - cpu0) / IDLE.as_secs_f64() * 100.0;
    let runs = fill.small;
    let page = ctx
        .page
        .as_ref()
        .map(|b| b.measure(&relay.url, runs))
        .transpose()?;
    let point = Point {
        runs,
        events: fill.events,
        fill_s,
        stop_s,
        start_s,
        rss_start,
        first_list_ms,
        list_ms: percentile(&tries, 0.5),
        list_kb: bytes as f64 / 1024.0,
        stream_ms,
        idle_cpu,
        rss_list: status_mb(pid, "VmRSS"),
        peak: status_mb(pid, "VmHWM"),
        disk_mb: disk_bytes(&ctx.dir) as f64 / 1e6,
        page,
    };
    Ok((relay, point))
}

/// What every point uses.
struct Ctx {
    bin: PathBuf,
    dir: PathBuf,
    dist: PathBuf,
    page: Option<super::growth_page::RunsPage>,
}

const HEAD: &str = "\n| runs   | events      | fill s | stop s | start s | list ms first / p50 | list KB | stream ms | idle CPU | RSS MB start / list / peak | disk MB | runs page |\n|--------|-------------|--------|--------|---------|---------------------|---------|-----------|----------|----------------------------|---------|-----------|";

fn print_point(p: &Point) {
    let page = p.page.as_ref().map_or("–".to_string(), |t| t.to_string());
    println!(
        "| {:>6} | {:>11} | {:>6.1} | {:>6.2} | {:>7.3} | {:>8.1} / {:>8.1} | {:>7.0} | {:>9.1} | {:>7.1}% | {:>7.1} / {:>6.1} / {:>6.1} | {:>7.0} | {page} |",
        p.runs, p.events, p.fill_s, p.stop_s, p.start_s, p.first_list_ms, p.list_ms, p.list_kb,
        p.stream_ms, p.idle_cpu, p.rss_start, p.rss_list, p.peak, p.disk_mb
    );
}

/// The growth table, then the 10,000-run figures next to their targets.
pub fn growth(root: &Path) -> Result<()> {
    let big = std::env::var_os("STEPWATCH_BENCH_BIG").is_some_and(|v| v == "1");
    let kept = std::env::var_os("STEPWATCH_BENCH_GROWTH_DIR").map(PathBuf::from);
    let temp = stepwatch_e2e::TempDir::new("growth");
    let dir = kept.clone().unwrap_or_else(|| temp.0.join("data"));
    let dist = root.join("dist");
    let (page, no_page) = match super::growth_page::RunsPage::open(&dist) {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(e)),
    };
    let ctx = Ctx {
        bin: root.join("target/release/stepwatch"),
        dist: if dist.join("index.html").exists() {
            dist
        } else {
            temp.0.join("no-dist")
        },
        dir,
        page,
    };
    let (mut relay, _) = Proc::start(&ctx.bin, &ctx.dir, &ctx.dist)?;
    let mut fill = if kept.is_some() {
        Fill::read(&relay.url)?
    } else {
        Fill::default()
    };
    println!("{HEAD}");
    let mut points = Vec::new();
    let events: Vec<u64> = EVENT_POINTS
        .iter()
        .chain(if big { &BIG_EVENT_POINTS[..] } else { &[] })
        .copied()
        .collect();
    let steps = RUN_POINTS
        .iter()
        .map(|&r| (Some(r), None))
        .chain(events.iter().map(|&e| (None, Some(e))));
    for (runs, total) in steps {
        let t0 = Instant::now();
        match (runs, total) {
            (Some(r), _) if r > fill.small => add_runs(&relay.url, &mut fill, r)?,
            (_, Some(e)) if e > fill.events => add_events(&relay.url, &mut fill, e)?,
            _ => {}
        }
        let fill_s = t0.elapsed().as_secs_f64();
        let (next, point) = measure(relay, &ctx, &fill, fill_s)?;
        relay = next;
        print_point(&point);
        points.push(point);
    }
    if let Some(e) = no_page {
        println!("(runs page not measured: {e})");
    }
    drop(relay);
    summary(&points);
    Ok(())
}

/// The figures of the first point with 10,000 runs, and of the largest, beside the
/// targets.
fn summary(points: &[Point]) {
    let first = points.iter().find(|p| p.runs >= RUN_POINTS[2]);
    let largest = points.last().filter(|p| p.runs >= RUN_POINTS[2]);
    println!();
    for p in first
        .into_iter()
        .chain(largest.filter(|l| l.events != first.map_or(0, |f| f.events)))
    {
        target_rows(p);
    }
}

fn target_rows(p: &Point) {
    let what = format!("{} runs, {} events", p.runs, p.events);
    row(
        &format!("relay start ({what})"),
        format!("{:.2} s", p.start_s),
        "< 2 s",
    );
    row(
        "  … GET /api/runs, first / p50",
        format!("{:.1} / {:.1} ms", p.first_list_ms, p.list_ms),
        "< 100 ms",
    );
    row(
        "  … runs stream until `ready`",
        format!("{:.0} ms", p.stream_ms),
        "(the dashboard's runs list)",
    );
    row(
        "  … relay RSS after start / list / peak",
        format!("{:.1} / {:.1} / {:.1} MB", p.rss_start, p.rss_list, p.peak),
        "< 100 MB",
    );
    if let Some(t) = &p.page {
        row(
            "  … runs page: shown / filter / unfilter",
            t.to_string(),
            "smooth at 10,000 runs",
        );
    }
}
