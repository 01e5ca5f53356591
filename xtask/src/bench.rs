//! `cargo xtask bench`: programs that print figures next to the targets in DESIGN.md.
//! Every load goes to a relay process on loopback started here, with its own data dir.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Relay {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Relay {
    fn start(root: &Path) -> Result<Relay> {
        Relay::start_with(root, &[])
    }

    /// A relay with extra `serve` flags (`--database URL`, say).
    fn start_with(root: &Path, extra: &[&str]) -> Result<Relay> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("stepwatch-bench-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let child = Command::new(root.join("target/release/stepwatch"))
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&dir)
            .args(["--dist", "dist"])
            .args(extra)
            .current_dir(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while ureq::get(&format!("{url}/healthz")).call().is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("relay did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Relay { child, url, dir })
    }

    /// CPU seconds (user + system) the relay has used so far.
    fn cpu_s(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start after ')'.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // utime and stime are fields 14 and 15 of the line: 11 and 12 after the state.
        let ticks = f.get(10).copied().unwrap_or(0.0) + f.get(11).copied().unwrap_or(0.0);
        ticks / 100.0
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ndjson_batch(start: usize, n: usize) -> String {
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

fn row(what: &str, figure: String, target: &str) {
    println!("| {what:<44} | {figure:>26} | {target:<34} |");
}

/// Benchmark groups `cargo xtask bench NAME…` can pick (all when none is named).
pub const GROUPS: &[&str] = &[
    "size", "ingest", "latency", "fanout", "browser", "open", "emit",
];

pub fn run_all(root: &Path, only: &[String]) -> Result<()> {
    if let Some(i) = only.iter().position(|a| a == "--database") {
        let Some(url) = only.get(i + 1) else {
            bail!(
                "--database needs a URL: cargo xtask bench --database postgres://user@host:port/db"
            );
        };
        return run_postgres(root, url);
    }
    for name in only {
        if !GROUPS.contains(&name.as_str()) {
            bail!(
                "unknown benchmark group {name:?}; groups: {}",
                GROUPS.join(", ")
            );
        }
    }
    let want = |g: &str| only.is_empty() || only.iter().any(|o| o == g);
    println!(
        "\n| {:<44} | {:>26} | {:<34} |",
        "benchmark", "measured", "target (DESIGN.md)"
    );
    println!("|{}|{}|{}|", "-".repeat(46), "-".repeat(28), "-".repeat(36));
    let relay = Relay::start(root)?;
    if want("size") {
        download_size(root, &relay)?;
    }
    row(
        "relay RSS, idle",
        format!("{:.1} MB", relay.rss_mb()),
        "< 20 MB",
    );
    if want("ingest") {
        ingest_batched(&relay)?;
        row(
            "relay RSS after storing 1,000,000 events",
            format!("{:.1} MB", relay.rss_mb()),
            "< 50 MB",
        );
        ingest_single(&relay)?;
    }
    if want("latency") {
        delivery_latency(&relay)?;
    }
    if want("fanout") {
        fan_out(&relay)?;
    }
    if want("browser") {
        browser_latency(&relay)?;
        open_long_run(&relay, "bench-live-long")?;
        frame_time(&relay)?;
    }
    if want("open") {
        for (run, n) in [("bench-1m", 1_000_000), ("bench-10m", 10_000_000)] {
            let t0 = Instant::now();
            ingest_run(&relay, run, n)?;
            let rate = n as f64 / t0.elapsed().as_secs_f64();
            series_latency(&relay, run, n, rate)?;
            open_long_run(&relay, run)?;
        }
    }
    if want("emit") {
        rust_emit_cost(&relay.url);
        rust_emit_cost("http://127.0.0.1:9");
        python_emit_cost(root, &relay)?;
    }
    println!();
    Ok(())
}

/// What a browser downloads: every dist file as the relay serves it with
/// `Accept-Encoding: br, gzip` (brotli, precompressed at start), and gzip -9 for comparison.
fn download_size(root: &Path, relay: &Relay) -> Result<()> {
    let mut files = Vec::new();
    let mut gz = 0usize;
    for entry in std::fs::read_dir(root.join("dist")).context("dist/ missing")? {
        let p = entry?.path();
        if p.is_file() {
            if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                files.push(name.to_string());
            }
            let out = Command::new("gzip").args(["-9", "-c"]).arg(&p).output()?;
            gz += out.stdout.len();
        }
    }
    let t0 = Instant::now();
    let served = loop {
        let mut total = 0usize;
        let mut all_br = true;
        for f in &files {
            let resp = ureq::get(&format!("{}/{f}", relay.url))
                .set("Accept-Encoding", "br, gzip")
                .call()?;
            let enc = resp.header("Content-Encoding").unwrap_or("").to_string();
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut resp.into_reader(), &mut body)?;
            all_br &= enc == "br" || body.len() < 1000;
            total += body.len();
        }
        if all_br || t0.elapsed() > Duration::from_secs(30) {
            break total;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    row(
        "dashboard download as served (brotli)",
        format!("{:.1} KB", served as f64 / 1024.0),
        "< 350 KB",
    );
    row(
        "dashboard download, gzip -9",
        format!("{:.1} KB", gz as f64 / 1024.0),
        "(for static hosts without brotli)",
    );
    Ok(())
}

fn ingest_batched(relay: &Relay) -> Result<()> {
    const BATCH: usize = 1000;
    const BATCHES: usize = 1000;
    let threads = 4;
    let bodies: Vec<String> = (0..8).map(|i| ndjson_batch(i * BATCH, BATCH)).collect();
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
    Ok(())
}

fn ingest_single(relay: &Relay) -> Result<()> {
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

fn delivery_latency(relay: &Relay) -> Result<()> {
    let (p50, p99) = post_to_stream(relay, relay, "bench-latency")?;
    row(
        "POST → SSE subscriber, p50 / p99",
        format!("{p50:.2} / {p99:.2} ms"),
        "emit → pixel p99 < 50 ms",
    );
    Ok(())
}

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
fn fan_out(relay: &Relay) -> Result<()> {
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

fn rust_emit_cost(url: &str) {
    let client = stepwatch_client::Client::with_capacity(url, "bench-emit", 2_000_000);
    let n = 1_000_000u64;
    let t0 = Instant::now();
    for i in 0..n {
        client.batch_end(1, i, i + 1, 1.0 / (i as f64 + 1.0), 0.001);
    }
    let per = t0.elapsed().as_secs_f64() * 1e6 / n as f64;
    let up = !url.ends_with(":9");
    row(
        if up {
            "Rust SDK emit, relay up (mean)"
        } else {
            "Rust SDK emit, relay down (mean)"
        },
        format!("{per:.2} µs"),
        "< 5 µs",
    );
    if up {
        client.close(Duration::from_secs(30));
    }
}

/// The Python SDK's cost to a training loop: `clients/python/bench/emit_bench.py`.
fn python_emit_cost(root: &Path, relay: &Relay) -> Result<()> {
    let py = root.join(".venv/bin/python");
    let py = if py.exists() {
        py
    } else {
        PathBuf::from("python3")
    };
    let spool = std::env::temp_dir().join("stepwatch-bench-spool");
    let out = Command::new(py)
        .arg(root.join("clients/python/bench/emit_bench.py"))
        .arg(&relay.url)
        .env("PYTHONPATH", root.join("clients/python/src"))
        .env("STEPWATCH_EXIT_FLUSH", "0")
        .env("STEPWATCH_SPOOL_DIR", &spool)
        .output()?;
    let _ = std::fs::remove_dir_all(&spool);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "python emit benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    row(
        "Python emit_batch_end, relay up / down (median)",
        format!("{:.2} / {:.2} µs", f("emit_up_us"), f("emit_down_us")),
        "< 5 µs",
    );
    for (label, step) in [("100us", "100 µs"), ("1ms", "1 ms")] {
        let plain = f(&format!("steps_{label}_plain"));
        let with = |k: &str| {
            let v = f(&format!("steps_{label}_{k}"));
            format!("{v:.0} (−{:.1}%)", 100.0 * (1.0 - v / plain))
        };
        row(
            &format!("Python loop, {step} steps: steps/s plain"),
            format!("{plain:.0}"),
            "",
        );
        row(
            "  … with Stepwatch, relay up / relay down",
            format!("{} / {}", with("up"), with("down")),
            "within a few % of plain",
        );
    }
    Ok(())
}

/// Milliseconds since the unix epoch.
fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Records, in the page, when the header's step counter shows each value.
const OBSERVE_STEPS: &str = r#"
window.__seen = {};
const el = document.querySelector('[data-testid=step]');
new MutationObserver(() => { window.__seen[el.textContent] = Date.now(); })
  .observe(el, { childList: true, characterData: true, subtree: true });
return true;
"#;

fn post_steps(
    relay: &Relay,
    run: &str,
    from: u64,
    n: u64,
    gap: Duration,
) -> Result<Vec<(u64, f64)>> {
    let agent = ureq::AgentBuilder::new().build();
    let url = format!("{}/api/runs/{run}/events", relay.url);
    let mut sent = Vec::new();
    for step in from..from + n {
        let t = now_ms();
        agent.post(&url).send_string(&format!(
            "{{\"event\":\"batch_end\",\"step\":{step},\"loss\":{}}}",
            1.0 / step as f64
        ))?;
        sent.push((step, t));
        std::thread::sleep(gap);
    }
    Ok(sent)
}

fn latencies(browser: &stepwatch_e2e::Browser, sent: &[(u64, f64)]) -> Vec<f64> {
    std::thread::sleep(Duration::from_millis(300));
    let seen = browser.eval("return window.__seen;");
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(step, t)| seen[step.to_string()].as_f64().map(|o| o - t))
        .collect();
    lat.sort_by(f64::total_cmp);
    lat
}

/// emit (HTTP POST) → the new value rendered in Chromium's DOM, with the chart redrawn in
/// the same animation frame; on a fresh run and on one that already holds 100,000 events.
fn browser_latency(relay: &Relay) -> Result<()> {
    let browser = stepwatch_e2e::Browser::start();
    for (run, history) in [("bench-live-fresh", 0u64), ("bench-live-long", 100_000)] {
        let mut done = 0;
        while done < history {
            let body = ndjson_batch(done as usize, 1000);
            ureq::post(&format!("{}/api/runs/{run}/events", relay.url))
                .set("Content-Type", "application/x-ndjson")
                .send_string(&body)?;
            done += 1000;
        }
        if history == 0 {
            ureq::post(&format!("{}/api/runs/{run}/events", relay.url))
                .send_string("{\"event\":\"training_start\"}")?;
        }
        browser.goto(&format!("{}/#/runs/{run}", relay.url));
        browser.wait_for("run page", Duration::from_secs(60), "return document.querySelector('.conn.live') !== null && document.querySelector('[data-testid=step]') !== null;");
        browser.eval(OBSERVE_STEPS);
        let sent = post_steps(relay, run, history + 10, 300, Duration::from_millis(25))?;
        let lat = latencies(&browser, &sent);
        if lat.len() < sent.len() / 2 {
            bail!("the page showed only {} of {} steps", lat.len(), sent.len());
        }
        row(
            &format!("emit → browser DOM, p50 / p99 ({} stored)", history),
            format!(
                "{:.1} / {:.1} ms",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            ),
            "p99 < 50 ms",
        );
    }
    Ok(())
}

/// Opening a run page: until its loss chart is drawn with every stored point.
fn open_long_run(relay: &Relay, run: &str) -> Result<()> {
    let browser = stepwatch_e2e::Browser::start();
    let state: serde_json::Value = ureq::get(&format!("{}/api/runs/{run}", relay.url))
        .call()?
        .into_json()?;
    let n = state["batch_count"].as_u64().unwrap_or(0);
    let t0 = Instant::now();
    browser.goto(&format!("{}/#/runs/{run}", relay.url));
    browser.wait_for(
        "chart drawn",
        Duration::from_secs(300),
        &format!("const c = document.querySelector('[data-testid=canvas-loss]'); return c && c.dataset.points > 0 && document.querySelector('[data-testid=step]')?.textContent === '{}';", state["step"]),
    );
    row(
        &format!("open a run of {n} steps, chart drawn"),
        format!("{:.0} ms", t0.elapsed().as_secs_f64() * 1000.0),
        "10M steps < 500 ms (issue 6)",
    );
    Ok(())
}

/// Stores `n` steps of `run` in NDJSON batches of 1,000 from 4 clients, in step order
/// per client (the relay numbers them as they arrive).
fn ingest_run(relay: &Relay, run: &str, n: usize) -> Result<()> {
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

/// `GET /series` for the loss of a long run: the overview a chart opens with, and a
/// zoom into 0.1 % of it (full fidelity).
fn series_latency(relay: &Relay, run: &str, n: usize, ingest_rate: f64) -> Result<()> {
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
    Ok(())
}

/// Frame intervals on an open run page while 10,000 points/s stream in.
fn frame_time(relay: &Relay) -> Result<()> {
    let run = "bench-frames";
    ingest_run(relay, run, 1000)?;
    let browser = stepwatch_e2e::Browser::start();
    browser.goto(&format!("{}/#/runs/{run}", relay.url));
    browser.wait_for("page", Duration::from_secs(60), "return document.querySelector('.conn.live') !== null && +document.querySelector('[data-testid=canvas-loss]')?.dataset.points > 0;");
    browser.eval("window.__frames = []; let last = performance.now(); const tick = (t) => { window.__frames.push(t - last); last = t; if (window.__frames.length < 100000) requestAnimationFrame(tick); }; requestAnimationFrame(tick); return 1;");
    let t0 = Instant::now();
    let mut sent = 1000;
    let agent = ureq::AgentBuilder::new().build();
    while t0.elapsed() < Duration::from_secs(5) {
        let tick = Instant::now();
        agent
            .post(&format!("{}/api/runs/{run}/events", relay.url))
            .set("Content-Type", "application/x-ndjson")
            .send_string(&ndjson_batch(sent, 100))?;
        sent += 100;
        if let Some(rest) = Duration::from_millis(10).checked_sub(tick.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let rate = (sent - 1000) as f64 / t0.elapsed().as_secs_f64();
    let frames: Vec<f64> =
        serde_json::from_value(browser.eval("return window.__frames.slice(5);"))?;
    let mut sorted = frames.clone();
    sorted.sort_by(f64::total_cmp);
    let fps = frames.len() as f64 / (frames.iter().sum::<f64>() / 1000.0);
    row(
        &format!("frames while {:.0} points/s stream in", rate),
        format!("{fps:.0} fps, p99 {:.1} ms", percentile(&sorted, 0.99)),
        "60 frames/s at 10,000 points/s",
    );
    Ok(())
}

/// `cargo xtask bench --database URL`: the PostgreSQL backend with one and with two
/// relays on the database, beside the same figures for SQLite.
fn run_postgres(root: &Path, url: &str) -> Result<()> {
    println!(
        "\n| {:<44} | {:>26} | {:<34} |",
        "benchmark (PostgreSQL backend)", "measured", "compare"
    );
    println!("|{}|{}|{}|", "-".repeat(46), "-".repeat(28), "-".repeat(36));
    let tag = format!("{}", std::process::id());
    let sqlite = Relay::start(root)?;
    let lite_rate = ingest_rate(&[&sqlite], &format!("lite-{tag}"))?;
    let a = Relay::start_with(root, &["--database", url])?;
    let one = ingest_rate(&[&a], &format!("one-{tag}"))?;
    row(
        "ingest, 1 relay, NDJSON batches of 1,000",
        format!("{one:.0} events/s"),
        &format!("SQLite: {lite_rate:.0} events/s"),
    );
    let b = Relay::start_with(root, &["--database", url])?;
    let two = ingest_rate(&[&a, &b], &format!("two-{tag}"))?;
    row(
        "ingest, 2 relays, one database",
        format!("{two:.0} events/s"),
        "(2 relays + PostgreSQL on 2 cores)",
    );
    let (p50, p99) = post_to_stream(&sqlite, &sqlite, &format!("lat-lite-{tag}"))?;
    let (same50, same99) = post_to_stream(&a, &a, &format!("lat-same-{tag}"))?;
    row(
        "POST → SSE, same relay, p50 / p99",
        format!("{same50:.2} / {same99:.2} ms"),
        &format!("SQLite: {p50:.2} / {p99:.2} ms"),
    );
    let (x50, x99) = post_to_stream(&a, &b, &format!("lat-cross-{tag}"))?;
    row(
        "POST on relay A → SSE on relay B, p50 / p99",
        format!("{x50:.2} / {x99:.2} ms"),
        "emit → pixel p99 < 50 ms",
    );
    // Leave the database as it was found.
    let agent = ureq::AgentBuilder::new().build();
    for (relay, prefix) in [
        (&a, "one"),
        (&a, "two"),
        (&a, "lat-same"),
        (&a, "lat-cross"),
    ] {
        for t in 0..4 {
            let _ = agent
                .delete(&format!("{}/api/runs/bench-{prefix}-{tag}-{t}", relay.url))
                .call();
        }
        let _ = agent
            .delete(&format!("{}/api/runs/{prefix}-{tag}", relay.url))
            .call();
    }
    println!();
    Ok(())
}

/// Events/s stored by 4 clients posting batches of 1,000 to their own runs, spread
/// over `relays`.
fn ingest_rate(relays: &[&Relay], tag: &str) -> Result<f64> {
    const BATCH: usize = 1000;
    const BATCHES: usize = 400;
    let threads = 4;
    let bodies: Vec<String> = (0..8).map(|i| ndjson_batch(i * BATCH, BATCH)).collect();
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (bodies, failed) = (&bodies, &failed);
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

/// p50 / p99 ms from a POST to relay `to` until relay `from`'s stream delivers it.
fn post_to_stream(to: &Relay, from: &Relay, run: &str) -> Result<(f64, f64)> {
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
