//! With the `embed-dashboard` feature, builds the dashboard into the binary: every file
//! of the built `dist/` (trunk's output), brotli-compressed here (quality 11, as the
//! relay's own copies) when that makes it smaller, into `$OUT_DIR`, and a table of them
//! (`embedded_dashboard.rs`, read by `src/dashboard/embedded.rs`). Without the feature
//! the table is empty and `--dist` serves from disk as before.
//!
//! Where `dist/` is: `$STEPWATCH_EMBED_DIST`, else the workspace's `dist/` when built,
//! else `dashboard-dist/` beside this file (what the server's source distribution carries).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Directory levels below dist that are embedded (as the relay serves from disk).
const MAX_DEPTH: usize = 8;
const COMPRESSIBLE: [&str; 9] = [
    "wasm", "js", "mjs", "css", "html", "json", "svg", "map", "txt",
];
/// What only an index.html written by `trunk serve` contains (its autoreload script).
const DEV_MARKERS: [&str; 2] = ["{{__TRUNK_ADDRESS__}}", ".well-known/trunk/ws"];

fn main() {
    println!("cargo:rerun-if-env-changed=STEPWATCH_EMBED_DIST");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let table = out.join("embedded_dashboard.rs");
    if std::env::var_os("CARGO_FEATURE_EMBED_DASHBOARD").is_none() {
        write(&table, "pub static FILES: &[EmbeddedFile] = &[];\n");
        return;
    }
    let dist = find_dist();
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    walk(&dist, "", 0, &mut files);
    files.sort();
    let index = dist.join("index.html");
    match std::fs::read_to_string(&index) {
        Ok(html) if DEV_MARKERS.iter().any(|m| html.contains(m)) => fail(&format!(
            "{} was written by `trunk serve` (a dev build): run `trunk build --release`",
            index.display()
        )),
        Ok(_) => {}
        Err(e) => fail(&format!(
            "no built dashboard at {} ({e}): run `trunk build --release` first, or set \
             STEPWATCH_EMBED_DIST to trunk's output",
            index.display()
        )),
    }
    let dir = out.join("dashboard");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create $OUT_DIR/dashboard");
    let mut code = String::from("pub static FILES: &[EmbeddedFile] = &[\n");
    for (i, rel) in files.iter().enumerate() {
        let full = dist.join(rel);
        println!("cargo:rerun-if-changed={}", full.display());
        let raw = std::fs::read(&full).unwrap_or_else(|e| fail(&format!("{rel}: {e}")));
        let raw_path = dir.join(format!("{i}.raw"));
        write_bytes(&raw_path, &raw);
        let br = compressible(rel)
            .then(|| brotli(&raw))
            .filter(|b| b.len() < raw.len())
            .map(|b| {
                let p = dir.join(format!("{i}.br"));
                write_bytes(&p, &b);
                p
            });
        let br = match br {
            Some(p) => format!("Some(include_bytes!({:?}))", p.display().to_string()),
            None => "None".to_string(),
        };
        let _ = writeln!(
            code,
            "    EmbeddedFile {{ path: {rel:?}, raw: include_bytes!({:?}), br: {br}, etag: \"W/\\\"{:016x}\\\"\" }},",
            raw_path.display().to_string(),
            fnv1a(&raw)
        );
    }
    code.push_str("];\n");
    write(&table, &code);
}

fn find_dist() -> PathBuf {
    if let Some(d) = std::env::var_os("STEPWATCH_EMBED_DIST") {
        return PathBuf::from(d);
    }
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let workspace = here.join("../dist");
    if workspace.join("index.html").is_file() {
        return workspace;
    }
    here.join("dashboard-dist")
}

/// The files a request could name, as `dashboard::files::scan` lists them at run time (a
/// build script cannot call the crate it builds, so the rule is restated here: no hidden
/// segments, links followed, at most `MAX_DEPTH` levels).
fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || name.contains('\\') {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_file() {
            out.push(rel);
        } else if meta.is_dir() && depth < MAX_DEPTH {
            walk(&entry.path(), &rel, depth + 1, out);
        }
    }
}

fn compressible(rel: &str) -> bool {
    let ext = rel.rsplit('.').next().unwrap_or("");
    rel.contains('.') && COMPRESSIBLE.contains(&ext)
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 3);
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, 11, 22);
        w.write_all(data).expect("brotli");
    }
    out
}

/// A content hash for the ETag (not for security: it only tells versions apart).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn write(path: &Path, text: &str) {
    write_bytes(path, text.as_bytes());
}

fn write_bytes(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
}

fn fail(why: &str) -> ! {
    eprintln!("stepwatch-relay (embed-dashboard): {why}");
    std::process::exit(1);
}
