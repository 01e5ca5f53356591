//! `emit`: what one emit costs a training loop, in the Rust SDK and the Python SDK.

use super::relay::BenchRelay;
use super::table::row;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub fn rust_emit_cost(url: &str) {
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
pub fn python_emit_cost(root: &Path, relay: &BenchRelay) -> Result<()> {
    // The repo's .venv, else python3 (the e2e harness's choice, `$STEPWATCH_PYTHON` first).
    let py = stepwatch_e2e::python();
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
            // Slower than plain reads −x%; a run that came out faster (noise) +x%.
            let change = 100.0 * (v / plain - 1.0);
            let sign = if change < 0.0 { '−' } else { '+' };
            format!("{v:.0} ({sign}{:.1}%)", change.abs())
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
