//! `media`: what media cost. The training thread's cost of the Python SDK's media calls
//! (`clients/python/bench/media_bench.py`), and the relay with images flowing: 256×256
//! RGB PNGs uploaded by 2 clients (bytes, then the image event) while 4 clients post
//! NDJSON batches, against the batches alone.

use super::ingest::ingest_rate;
use super::relay::BenchRelay;
use super::table::row;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

pub fn media(root: &Path, relay: &BenchRelay) -> Result<()> {
    python_media_cost(root, relay)?;
    let alone = ingest_rate(&[relay], "media-alone")?;
    // Distinct images (a PNG of stored deflate blocks: 196 KB, the size of a camera-like
    // 256×256 picture that does not compress), uploaded while batches flow.
    let images: Vec<Vec<u8>> = (0..64u32)
        .map(|k| {
            stepwatch_e2e::png(256, 256, |x, y| {
                [(x * 7 + k) as u8, (y * 13 + k * 3) as u8, (x ^ y ^ k) as u8]
            })
        })
        .collect();
    let size = images[0].len();
    let (done, sent, failed) = (
        AtomicBool::new(false),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let mut with = 0.0;
    let t0 = Instant::now();
    let mut dt = 0.0;
    std::thread::scope(|s| -> Result<()> {
        for t in 0..2 {
            let (images, done, sent, failed) = (&images, &done, &sent, &failed);
            let base = relay.url.clone();
            s.spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                let run = format!("bench-media-{t}");
                let mut i = t;
                while !done.load(Ordering::Relaxed) {
                    let img = &images[i % images.len()];
                    let sha = stepwatch_e2e::sha256_hex(img);
                    let put = agent
                        .put(&format!("{base}/api/runs/{run}/media/{sha}"))
                        .send_bytes(img);
                    let event =
                        format!(r#"{{"event":"image","name":"recon","step":{i},"media":"{sha}"}}"#);
                    let post = agent
                        .post(&format!("{base}/api/runs/{run}/events"))
                        .set("Content-Type", "application/json")
                        .send_string(&event);
                    if put.is_ok() && post.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 2;
                }
            });
        }
        let rate = ingest_rate(&[relay], "media-with");
        dt = t0.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        with = rate?;
        Ok(())
    })?;
    let n = sent.load(Ordering::Relaxed);
    row(
        "relay with images flowing: images stored (256×256 PNG, 2 clients)",
        format!(
            "{:.0} images/s ({:.1} MB/s), {} failed",
            n as f64 / dt,
            (n * size) as f64 / dt / 1e6,
            failed.load(Ordering::Relaxed)
        ),
        "(reported)",
    );
    row(
        "  … and events/s ingested beside them (batches alone)",
        format!("{with:.0} ({alone:.0})"),
        "(reported)",
    );
    Ok(())
}

/// The Python SDK's media calls on the training thread (median µs).
fn python_media_cost(root: &Path, relay: &BenchRelay) -> Result<()> {
    let spool = std::env::temp_dir().join("stepwatch-bench-media-spool");
    let out = Command::new(stepwatch_e2e::python())
        .arg(root.join("clients/python/bench/media_bench.py"))
        .arg(&relay.url)
        .env("PYTHONPATH", root.join("clients/python/src"))
        .env("STEPWATCH_SPOOL_DIR", &spool)
        .output()?;
    let _ = std::fs::remove_dir_all(&spool);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "python media benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let f = |k: &str| {
        v[k].as_f64()
            .map_or("–".to_string(), |x| format!("{x:.1} µs"))
    };
    row(
        "Python log_image, 256×256×3 uint8 numpy (training thread)",
        f("log_image_256x256x3_uint8_us"),
        "never blocks the loop",
    );
    row(
        "Python log_histogram: 1M-element torch tensor / 10k list",
        format!(
            "{} / {}",
            f("log_histogram_tensor_1M_cpu_us"),
            f("log_histogram_list_10k_us")
        ),
        "(reported)",
    );
    row(
        "Python batch_end while watch() waits / plain",
        format!(
            "{} / {}",
            f("batch_end_while_watching_us"),
            f("batch_end_plain_us")
        ),
        "within noise",
    );
    Ok(())
}
