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
        "< 2 µs",
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
            "under 3 % slower than plain",
        );
    }
    python_delivery(&v);
    Ok(())
}

/// The Python SDK keeping up: a burst of emits (events/s emitted and stored, spooled
/// and dropped), and emit → the relay's stream, from `emit_bench.py`'s answer.
fn python_delivery(v: &serde_json::Value) {
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    row(
        &format!(
            "Python burst of {:.1}M emits: events/s emitted / stored",
            f("burst_n") / 1e6
        ),
        format!(
            "{:.0}k / {:.0}k",
            f("burst_emit_per_s") / 1e3,
            f("burst_stored_per_s") / 1e3
        ),
        "300k events/s stored, one process",
    );
    row(
        "  … went through the spool / dropped",
        format!("{:.0} / {:.0}", f("burst_spilled"), f("burst_dropped")),
        "0 dropped while the spool has room",
    );
    for (label, what) in [
        ("idle", "spaced 20–50 ms"),
        ("busy", "from a 1 ms-step loop"),
    ] {
        row(
            &format!("Python emit → relay stream, {what}: p50 / p99"),
            format!(
                "{:.1} / {:.1} ms",
                f(&format!("lat_{label}_p50_ms")),
                f(&format!("lat_{label}_p99_ms"))
            ),
            if label == "idle" {
                "p99 < 10 ms"
            } else {
                "p99 < 50 ms (emit → pixel)"
            },
        );
    }
}

/// A distributed run's cost per step on each rank and command → every rank paused:
/// `clients/python/bench/ddp_bench.py` under `torchrun --nproc_per_node=2` (gloo, CPU,
/// 10 ms steps).
pub fn ddp_cost(root: &Path, relay: &BenchRelay) -> Result<()> {
    let out = Command::new(stepwatch_e2e::python())
        .args(["-m", "torch.distributed.run", "--nproc_per_node=2"])
        .arg("--master_port")
        .arg(stepwatch_e2e::free_port().to_string())
        .arg(root.join("clients/python/bench/ddp_bench.py"))
        .arg(&relay.url)
        .env("PYTHONPATH", root.join("clients/python/src"))
        .env("OMP_NUM_THREADS", "1")
        .env("BENCH_RUN", format!("bench-ddp-{}", std::process::id()))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(line).with_context(|| {
        format!(
            "ddp benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    for r in v["ranks"].as_array().cloned().unwrap_or_default().iter() {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        row(
            "DDP 10 ms step: plain / with Stepwatch / plain again (ms)",
            format!(
                "{:.2} / {:.2} / {:.2} (+{:.0} µs)",
                f("plain_ms"),
                f("with_ms"),
                f("plain2_ms"),
                1000.0 * (f("with_ms") - (f("plain_ms") + f("plain2_ms")) / 2.0)
            ),
            "within noise",
        );
    }
    let lat: Vec<f64> = v["pause_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    let max = lat.iter().copied().fold(f64::NAN, f64::max);
    row(
        "pause → every rank paused (median / max of 5)",
        format!(
            "{:.0} / {max:.0} ms",
            v["pause_median_ms"].as_f64().unwrap_or(f64::NAN)
        ),
        "< one step + 100 ms",
    );
    Ok(())
}
