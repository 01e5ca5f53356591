//! `cargo xtask bench --database URL`: the PostgreSQL backend, one and two relays on
//! one database, beside the same figures for SQLite.

use super::ingest::ingest_rate;
use super::latency::post_to_stream;
use super::relay::BenchRelay;
use super::table::{header, row};
use anyhow::Result;
use std::path::Path;

/// The PostgreSQL backend with one and with two relays on the database `url`, beside the
/// same figures for SQLite.
pub fn run_postgres(root: &Path, url: &str) -> Result<()> {
    header("benchmark (PostgreSQL backend)", "compare");
    let tag = format!("{}", std::process::id());
    let sqlite = BenchRelay::start(root)?;
    let lite_rate = ingest_rate(&[&sqlite], &format!("lite-{tag}"))?;
    let a = BenchRelay::start_on(root, url)?;
    let one = ingest_rate(&[&a], &format!("one-{tag}"))?;
    row(
        "ingest, 1 relay, NDJSON batches of 1,000",
        format!("{one:.0} events/s"),
        &format!("SQLite: {lite_rate:.0} events/s"),
    );
    let b = BenchRelay::start_on(root, url)?;
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
