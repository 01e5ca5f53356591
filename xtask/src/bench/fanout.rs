//! `fanout`: 1,000 SSE subscribers over 10 runs streaming 1,000 events/s each.
//!
//! The load generator has to be cheaper than what it measures on a 2-core machine:
//! the subscribers are a few threads each polling hundreds of non-blocking sockets
//! (mio, as tokio uses it), not a thread per stream, and each run's publisher posts on a
//! fixed 10 ms schedule whatever the schedule owes by now (a late tick catches up with a
//! larger batch) over one keep-alive connection.

use super::load::now_ms;
use super::relay::BenchRelay;
use super::table::{percentile, row};
use anyhow::{anyhow, Result};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Subscribers for the fan-out benchmark, the runs they follow, and each run's rate.
const FAN_SUBSCRIBERS: usize = 1000;
const FAN_RUNS: usize = 10;
const FAN_RATE: usize = 1000;
const FAN_SECONDS: u64 = 10;
/// Threads reading the subscribers' sockets (each polls its share of them).
const POLLERS: usize = 2;
/// The publishers' schedule, and the most events one POST carries when catching up.
const TICK: Duration = Duration::from_millis(10);
const MAX_PER_POST: usize = 1000;
/// Every this many events of a stream, its publish → receipt latency is sampled.
const SAMPLE_EVERY: u64 = 16;

/// What the subscriber threads share.
struct Shared {
    stop: AtomicBool,
    /// Streams that answered 200.
    opened: AtomicUsize,
    /// Events received on every stream so far.
    delivered: AtomicU64,
}

/// One SSE stream on a non-blocking socket.
struct Sub {
    stream: TcpStream,
    request: Option<Vec<u8>>,
    /// The bytes after the last complete line.
    carry: Vec<u8>,
    events: u64,
    open: bool,
    done: bool,
}

impl Sub {
    /// Handles one complete line of the response (status line, headers, chunk sizes
    /// and SSE fields alike: only `HTTP/…` and `data: ` lines matter).
    fn line(&mut self, line: &[u8], now: f64, lat: &mut Vec<f64>, shared: &Shared) -> u64 {
        if let Some(data) = line.strip_prefix(b"data: ") {
            self.events += 1;
            if self.events.is_multiple_of(SAMPLE_EVERY) {
                if let Some(ms) = sent_ms(data) {
                    lat.push(now - ms);
                }
            }
            return 1;
        }
        if !self.open && line.starts_with(b"HTTP/1.1 200") {
            self.open = true;
            shared.opened.fetch_add(1, Ordering::Relaxed);
        }
        0
    }

    /// Splits what was read into lines; returns the events it held.
    fn feed(&mut self, mut data: &[u8], lat: &mut Vec<f64>, shared: &Shared) -> u64 {
        let now = now_ms();
        let mut n = 0;
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            if self.carry.is_empty() {
                n += self.line(&data[..i], now, lat, shared);
            } else {
                let mut line = std::mem::take(&mut self.carry);
                line.extend_from_slice(&data[..i]);
                n += self.line(&line, now, lat, shared);
                line.clear();
                self.carry = line;
            }
            data = &data[i + 1..];
        }
        self.carry.extend_from_slice(data);
        n
    }

    /// Sends the request once connected, then reads everything there is.
    fn ready(&mut self, buf: &mut [u8], lat: &mut Vec<f64>, shared: &Shared) {
        if let Some(req) = self.request.take() {
            if self.stream.take_error().ok().flatten().is_some() || self.stream.peer_addr().is_err()
            {
                self.request = Some(req); // not connected yet
                return;
            }
            if self.stream.write_all(&req).is_err() {
                self.done = true;
                return;
            }
        }
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.done = true;
                    return;
                }
                Ok(k) => {
                    let n = self.feed(&buf[..k], lat, shared);
                    shared.delivered.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.done = true;
                    return;
                }
            }
        }
    }
}

/// The number after `"sent_ms":` in an event's JSON.
fn sent_ms(data: &[u8]) -> Option<f64> {
    const KEY: &[u8] = b"\"sent_ms\":";
    let at = data.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &data[at..];
    let end = rest
        .iter()
        .position(|&b| b == b',' || b == b'}')
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// One subscriber thread: opens a stream per path on `addr` and reads them all until
/// `stop`; returns the sampled latencies (ms).
fn poller(addr: SocketAddr, paths: Vec<String>, shared: &Shared) -> Result<Vec<f64>> {
    let mut poll = Poll::new()?;
    let mut subs = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let mut stream = TcpStream::connect(addr)?;
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        subs.push(Sub {
            stream,
            request: Some(request.into_bytes()),
            carry: Vec::new(),
            events: 0,
            open: false,
            done: false,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut lat = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in &events {
            if let Some(sub) = subs.get_mut(ev.token().0) {
                if !sub.done {
                    sub.ready(&mut buf, &mut lat, shared);
                }
            }
        }
    }
    Ok(lat)
}

/// One run's publisher: every [`TICK`] (from `t0` + `phase`: trainers do not tick in
/// step), one POST of the events the schedule owes by now (`FAN_RATE`/s from `t0`), each
/// stamped with the time it is sent.
fn publisher(url: &str, t0: Instant, phase: Duration, sent: &AtomicUsize) {
    let agent = ureq::AgentBuilder::new().build();
    let mut mine = 0usize;
    let mut tick = t0 + phase;
    let total = FAN_RATE * FAN_SECONDS as usize;
    while mine < total {
        tick += TICK;
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let elapsed = t0.elapsed().as_secs_f64().min(FAN_SECONDS as f64);
        let owed = (elapsed * FAN_RATE as f64) as usize;
        let n = owed.saturating_sub(mine).min(MAX_PER_POST);
        if n == 0 {
            continue;
        }
        let ms = now_ms();
        let one = format!(
            "{{\"event\":\"metric_update\",\"name\":\"x\",\"value\":1,\"sent_ms\":{ms}}}\n"
        );
        let ok = agent
            .post(url)
            .set("Content-Type", "application/x-ndjson")
            .send_string(&one.repeat(n))
            .is_ok();
        mine += n; // a failed POST is not retried: the rate reported is what was stored
        if ok {
            sent.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// CPU seconds this process (the load generator) has used so far.
fn own_cpu_s() -> f64 {
    super::relay::cpu_s(std::process::id())
}

/// Publishes on every run for [`FAN_SECONDS`]: (events stored per run, seconds taken,
/// relay CPU %, load generator CPU %).
fn publish(relay: &BenchRelay, runs: &[String]) -> (Vec<usize>, f64, f64, f64) {
    let (cpu0, own0) = (relay.cpu_s(), own_cpu_s());
    let t0 = Instant::now();
    let sent: Vec<AtomicUsize> = runs.iter().map(|_| AtomicUsize::new(0)).collect();
    std::thread::scope(|s| {
        for (i, (run, sent)) in runs.iter().zip(&sent).enumerate() {
            let url = format!("{}/api/runs/{run}/events", relay.url);
            let phase = TICK * i as u32 / runs.len() as u32;
            s.spawn(move || publisher(&url, t0, phase, sent));
        }
    });
    let dt = t0.elapsed().as_secs_f64();
    let cpu = (relay.cpu_s() - cpu0) / dt * 100.0;
    let own = (own_cpu_s() - own0) / dt * 100.0;
    let sent = sent.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    (sent, dt, cpu, own)
}

/// 1,000 SSE subscribers over 10 runs, each run streaming 1,000 events/s: the rate each
/// run reached, deliveries/s, publish → subscriber latency, relay and generator CPU,
/// RSS, and memory per idle subscriber.
pub fn fan_out(relay: &BenchRelay) -> Result<()> {
    let runs: Vec<String> = (0..FAN_RUNS).map(|r| format!("bench-fan-{r}")).collect();
    for run in &runs {
        ureq::post(&format!("{}/api/runs/{run}/events", relay.url))
            .send_string(r#"{"event":"training_start"}"#)?;
    }
    let addr: SocketAddr = relay
        .url
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| anyhow!("relay address {}: {e}", relay.url))?;
    let rss_before = relay.rss_mb();
    let shared = Shared {
        stop: AtomicBool::new(false),
        opened: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
    };
    let mut paths: Vec<Vec<String>> = vec![Vec::new(); POLLERS];
    for i in 0..FAN_SUBSCRIBERS {
        paths[i % POLLERS].push(format!("/api/runs/{}/stream?after=1", runs[i % FAN_RUNS]));
    }
    let (lat, measured) = std::thread::scope(|s| {
        let pollers: Vec<_> = paths
            .into_iter()
            .map(|p| {
                let shared = &shared;
                s.spawn(move || poller(addr, p, shared))
            })
            .collect();
        let t0 = Instant::now();
        while shared.opened.load(Ordering::Relaxed) < FAN_SUBSCRIBERS
            && t0.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        let opened = shared.opened.load(Ordering::Relaxed);
        let idle_kib = (relay.rss_mb() - rss_before) * 1024.0 / opened.max(1) as f64;
        let got0 = shared.delivered.load(Ordering::Relaxed);
        let (sent, dt, cpu, own) = publish(relay, &runs);
        std::thread::sleep(Duration::from_millis(500)); // let the last ones arrive
        let got = shared.delivered.load(Ordering::Relaxed) - got0;
        let rss = relay.rss_mb();
        shared.stop.store(true, Ordering::Relaxed);
        let mut lat = Vec::new();
        for p in pollers {
            match p.join() {
                Ok(Ok(l)) => lat.extend(l),
                Ok(Err(e)) => eprintln!("fan-out subscriber thread failed: {e}"),
                Err(_) => eprintln!("fan-out subscriber thread panicked"),
            }
        }
        let m = Measured {
            opened,
            idle_kib,
            sent,
            dt,
            cpu,
            own,
            got,
            rss,
        };
        (lat, m)
    });
    report(lat, &measured);
    Ok(())
}

/// What one fan-out run measured, beside the latencies.
struct Measured {
    opened: usize,
    idle_kib: f64,
    /// Events stored per run.
    sent: Vec<usize>,
    dt: f64,
    /// CPU %: the relay's, the load generator's.
    cpu: f64,
    own: f64,
    /// Events the subscribers received while publishing (and 500 ms after).
    got: u64,
    rss: f64,
}

fn report(mut lat: Vec<f64>, m: &Measured) {
    let Measured {
        opened,
        idle_kib,
        ref sent,
        dt,
        cpu,
        own,
        got,
        rss,
    } = *m;
    lat.sort_by(f64::total_cmp);
    let rates: Vec<f64> = sent.iter().map(|&n| n as f64 / dt).collect();
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    let published: usize = sent.iter().sum();
    row(
        &format!("fan-out: rate reached per run ({FAN_RUNS} runs)"),
        format!("{mean:.0} ev/s (slowest {min:.0})"),
        &format!("{FAN_RATE} ev/s each"),
    );
    row(
        &format!("  … deliveries to {opened} SSE subscribers"),
        format!("{:.0}/s", got as f64 / dt),
        &format!(
            "of {:.0}/s published × subscribers",
            published as f64 * (FAN_SUBSCRIBERS / FAN_RUNS) as f64 / dt
        ),
    );
    row(
        "  … publish → subscriber, p50 / p99",
        format!(
            "{:.1} / {:.1} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        ),
        "p99 < 50 ms",
    );
    row(
        "  … CPU: relay / load generator",
        format!("{cpu:.0}% / {own:.0}%"),
        "(reported; 200% = both cores)",
    );
    row(
        "  … relay RSS under that load",
        format!("{rss:.1} MB"),
        "(reported)",
    );
    row(
        "  … memory per idle subscriber",
        format!("{idle_kib:.1} KiB"),
        "< 16 KiB",
    );
}
