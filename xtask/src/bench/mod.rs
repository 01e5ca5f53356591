//! `cargo xtask bench`: programs that print figures next to the targets in docs/DESIGN.md.
//! Every load goes to a release relay process on loopback, started by the e2e harness's
//! launcher with its own data dir ([`relay`]); one module per benchmark group.

use anyhow::{bail, Result};
use std::path::Path;

mod alerts;
mod browser;
mod emit;
mod fanout;
mod growth;
mod growth_page;
mod ingest;
mod latency;
mod launch;
mod launch_engines;
mod load;
mod media;
mod open;
mod postgres;
mod relay;
mod size;
mod table;

use relay::BenchRelay;
use table::row;

/// Benchmark groups `cargo xtask bench NAME…` can pick (all when none is named).
pub const GROUPS: &[&str] = &[
    "size", "ingest", "latency", "fanout", "browser", "open", "emit", "ddp", "media", "launch",
    "alerts", "growth",
];

/// Runs the groups named in `only` (all when empty), or with `--database URL` the
/// PostgreSQL comparison.
pub fn run_all(root: &Path, only: &[String]) -> Result<()> {
    if let Some(i) = only.iter().position(|a| a == "--database") {
        let Some(url) = only.get(i + 1) else {
            bail!(
                "--database needs a URL: cargo xtask bench --database postgres://user@host:port/db"
            );
        };
        return postgres::run_postgres(root, url);
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
    table::header("benchmark", "target (docs/DESIGN.md)");
    let relay = BenchRelay::start(root)?;
    if want("size") {
        size::download_size(root, &relay)?;
    }
    row(
        "relay RSS, idle",
        format!("{:.1} MB", relay.rss_mb()),
        "< 20 MB",
    );
    if want("ingest") {
        ingest::ingest_batched(&relay)?;
        ingest::parse_cost()?;
        row(
            "relay RSS after storing 1,000,000 events",
            format!("{:.1} MB", relay.rss_mb()),
            "< 50 MB",
        );
        ingest::ingest_single(&relay)?;
    }
    if want("latency") {
        latency::delivery_latency(&relay)?;
    }
    if want("fanout") {
        fanout::fan_out(&relay)?;
    }
    if want("browser") {
        browser::browser_latency(&relay)?;
        browser::open_long_run(&relay, "bench-live-long")?;
        browser::frame_time(&relay)?;
    }
    if want("open") {
        open::open_long_runs(&relay)?;
    }
    if want("emit") {
        emit::rust_emit_cost(&relay.url);
        emit::rust_emit_cost("http://127.0.0.1:9");
        emit::python_emit_cost(root, &relay)?;
    }
    if want("ddp") {
        emit::ddp_cost(root, &relay)?;
    }
    if want("media") {
        media::media(root, &relay)?;
    }
    if want("launch") {
        launch::launch(root)?;
        let bin = root.join("target/release/stepwatch");
        if let Err(e) = launch_engines::slurm(&bin) {
            row("launch on Slurm", format!("not measured: {e}"), "");
        }
        launch_engines::kubernetes(&bin)?;
    }
    if want("alerts") {
        alerts::alerts(root)?;
    }
    if want("growth") {
        growth::growth(root)?;
    }
    println!();
    Ok(())
}
