//! `size`: what a browser downloads to open the dashboard, brotli as served and gzip -9.

use super::relay::BenchRelay;
use super::table::row;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// What a browser downloads: every dist file as the relay serves it with
/// `Accept-Encoding: br, gzip` (brotli, precompressed at start), and gzip -9 for comparison.
pub fn download_size(root: &Path, relay: &BenchRelay) -> Result<()> {
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
