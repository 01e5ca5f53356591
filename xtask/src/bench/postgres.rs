//! `cargo xtask bench --database URL`: the PostgreSQL backend, one and two relays on
//! one database, beside the same figures for SQLite.

use super::ingest::{ingest_rate, ingest_rate_with};
use super::latency::post_to_stream;
use super::relay::{cpu_s, BenchRelay};
use super::table::{header, row};
use anyhow::Result;
use std::path::Path;
use std::time::Instant;

/// CPU seconds used so far by the relays, by PostgreSQL's processes (every process
/// named `postgres`: the server and its backends) and by this load generator.
fn cpu_split(relays: &[&BenchRelay]) -> [f64; 3] {
    let mut pg = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "postgres" {
                pg += cpu_s(pid);
            }
        }
    }
    [
        relays.iter().map(|r| r.cpu_s()).sum(),
        pg,
        cpu_s(std::process::id()),
    ]
}

/// Ingest through `relays` with where the CPU went meanwhile: the rate, and the share
/// of one core used by the relays, PostgreSQL and the load generator.
fn ingest_with_cpu(relays: &[&BenchRelay], run: &str, clients: usize) -> Result<(f64, [f64; 3])> {
    let before = cpu_split(relays);
    let t0 = Instant::now();
    let rate = ingest_rate_with(relays, run, clients)?;
    let wall = t0.elapsed().as_secs_f64();
    let after = cpu_split(relays);
    let share = |i: usize| 100.0 * (after[i] - before[i]) / wall;
    Ok((rate, [share(0), share(1), share(2)]))
}

fn cpu_row(cpu: [f64; 3]) {
    row(
        "  … CPU: relays / PostgreSQL / load generator",
        format!("{:.0}% / {:.0}% / {:.0}%", cpu[0], cpu[1], cpu[2]),
        "(200% = both cores)",
    );
}

/// The PostgreSQL backend with one and with two relays on the database `url`, beside the
/// same figures for SQLite.
pub fn run_postgres(root: &Path, url: &str) -> Result<()> {
    header("benchmark (PostgreSQL backend)", "compare");
    let tag = format!("{}", std::process::id());
    let sqlite = BenchRelay::start(root)?;
    let lite_rate = ingest_rate(&[&sqlite], &format!("lite-{tag}"))?;
    let a = BenchRelay::start_on(root, url)?;
    let (one, cpu) = ingest_with_cpu(&[&a], &format!("one-{tag}"), 4)?;
    row(
        "ingest, 1 relay, NDJSON batches of 1,000",
        format!("{one:.0} events/s"),
        &format!("SQLite: {lite_rate:.0} events/s"),
    );
    cpu_row(cpu);
    let b = BenchRelay::start_on(root, url)?;
    let (two, cpu) = ingest_with_cpu(&[&a, &b], &format!("two-{tag}"), 4)?;
    row(
        "ingest, 2 relays, one database",
        format!("{two:.0} events/s"),
        "(2 relays + PostgreSQL on 2 cores)",
    );
    cpu_row(cpu);
    // Four clients leave the cores half idle (each waits on its commit): with eight,
    // what a second relay adds.
    for (relays, label, prefix) in [
        (vec![&a], "1 relay", "one8"),
        (vec![&a, &b], "2 relays", "two8"),
    ] {
        let (rate, cpu) = ingest_with_cpu(&relays, &format!("{prefix}-{tag}"), 8)?;
        row(
            &format!("ingest, {label}, 8 clients"),
            format!("{rate:.0} events/s"),
            "(a second relay adds throughput)",
        );
        cpu_row(cpu);
    }
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
        (&a, "one8"),
        (&a, "two8"),
        (&a, "lat-same"),
        (&a, "lat-cross"),
    ] {
        for t in 0..8 {
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
