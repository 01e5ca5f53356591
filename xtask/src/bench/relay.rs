//! The relay every benchmark loads: the release binary, started by the end-to-end
//! harness's launcher ([`stepwatch_e2e::Relay`]) on a free loopback port over its own
//! temporary data dir, with the CPU and memory figures read from `/proc`.

use anyhow::{anyhow, Result};
use std::path::{Path, PathBuf};
use stepwatch_e2e::TempDir;

/// A relay process for the benchmarks; dropping it kills the process, then deletes its
/// data dir.
pub struct BenchRelay {
    pub url: String,
    relay: stepwatch_e2e::Relay,
    _dir: TempDir,
}

impl BenchRelay {
    /// `target/release/stepwatch serve` serving `dist/`, storing in SQLite
    /// (`$STEPWATCH_BENCH_RELAY` names another relay binary: an older build, for a
    /// before/after figure under the same benchmark code).
    pub fn start(root: &Path) -> Result<BenchRelay> {
        BenchRelay::launch(root, None)
    }

    /// As [`BenchRelay::start`], storing in the PostgreSQL database `url`.
    pub fn start_on(root: &Path, url: &str) -> Result<BenchRelay> {
        BenchRelay::launch(root, Some(url))
    }

    fn launch(root: &Path, database: Option<&str>) -> Result<BenchRelay> {
        let dir = TempDir::new("bench");
        let dist = root.join("dist");
        let extra = ["--dist", dist.to_str().unwrap_or("dist")];
        let bin = std::env::var_os("STEPWATCH_BENCH_RELAY")
            .map_or_else(|| root.join("target/release/stepwatch"), PathBuf::from);
        let relay = stepwatch_e2e::Relay::try_start_bin(&bin, &dir.0, &extra, database)
            .map_err(|e| anyhow!("relay did not start: {e}"))?;
        Ok(BenchRelay {
            url: relay.url.clone(),
            relay,
            _dir: dir,
        })
    }

    /// CPU seconds (user + system) the relay has used so far.
    pub fn cpu_s(&self) -> f64 {
        cpu_s(self.relay.pid().unwrap_or(0))
    }

    /// The relay's resident memory, MB.
    pub fn rss_mb(&self) -> f64 {
        status_mb(self.relay.pid().unwrap_or(0), "VmRSS")
    }
}

/// CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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

/// A memory field of `/proc/PID/status` (`VmRSS`, `VmHWM` …), MB.
pub fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
