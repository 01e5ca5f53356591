//! Serving the built dashboard: files from `--dist` with SPA fallback to index.html,
//! brotli-compressed (quality 11) for browsers that accept it, gzip on the fly otherwise.
//! Paths never leave the dist directory.
//!
//! The brotli copies are made at start by a short-lived child process
//! (`stepwatch precompress`) into `<data-dir>/dashboard-br/`, so the compressor's large
//! working memory never stays in the relay (idle RSS target: 20 MB); the relay then
//! keeps only the compressed bytes.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The dashboard's files and their brotli copies.
pub struct Dashboard {
    dist: PathBuf,
    brotli: RwLock<HashMap<String, web::Bytes>>,
}

const COMPRESSIBLE: [&str; 6] = ["wasm", "js", "css", "html", "json", "svg"];

const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>Stepwatch</title>\
<body style=\"font-family:sans-serif;padding:2em\"><h1>Stepwatch relay is running</h1>\
<p>The dashboard is not built. Run <code>cargo xtask run</code>, or <code>trunk build --release</code> \
and start the relay with <code>--dist dist</code>.</p><p>The API is under <code>/api</code>.</p>";

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "wasm" => "application/wasm",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// Compresses with brotli at the highest quality.
pub fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 3);
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, 11, 22);
        let _ = w.write_all(data);
    }
    out
}

/// Writes `<name>.br` into `out` for every compressible file of `dist` whose copy is
/// missing or older. Run by `stepwatch precompress` in a child process.
pub fn precompress_to(dist: &Path, out: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(out)?;
    let mut n = 0;
    for entry in std::fs::read_dir(dist)?.flatten() {
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let Some(name) = path.file_name() else {
            continue;
        };
        if !path.is_file() || !COMPRESSIBLE.contains(&ext) {
            continue;
        }
        let target = out.join(format!("{}.br", name.to_string_lossy()));
        let fresh = match (target.metadata(), path.metadata()) {
            (Ok(t), Ok(s)) => t.modified().ok() >= s.modified().ok(),
            _ => false,
        };
        if !fresh {
            let compressed = brotli(&std::fs::read(&path)?);
            let tmp = target.with_extension("br.tmp");
            std::fs::write(&tmp, compressed)?;
            std::fs::rename(&tmp, &target)?;
            n += 1;
        }
    }
    Ok(n)
}

impl Dashboard {
    /// Serves `dist`; makes brotli copies under `cache` in a child process, then loads them.
    pub fn new(dist: PathBuf, cache: PathBuf) -> Arc<Dashboard> {
        let d = Arc::new(Dashboard {
            dist,
            brotli: RwLock::new(HashMap::new()),
        });
        let bg = d.clone();
        let _ = std::thread::Builder::new()
            .name("stepwatch-brotli".into())
            .spawn(move || bg.load_compressed(&cache));
        d
    }

    fn load_compressed(&self, cache: &Path) {
        if !self.dist.join("index.html").is_file() {
            return;
        }
        let ran = std::env::current_exe().ok().and_then(|exe| {
            std::process::Command::new(exe)
                .arg("precompress")
                .arg("--dist")
                .arg(&self.dist)
                .arg("--out")
                .arg(cache)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .ok()
        });
        if !ran.is_some_and(|s| s.success()) {
            tracing::warn!("could not precompress the dashboard; serving it with gzip");
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.dist) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let br = cache.join(format!("{name}.br"));
            if let (Ok(data), Ok(orig)) = (std::fs::read(&br), entry.metadata()) {
                if (data.len() as u64) < orig.len() {
                    if let Ok(mut map) = self.brotli.write() {
                        map.insert(name, data.into());
                    }
                }
            }
        }
    }

    /// The file a request path names inside dist, if it is a plain relative path.
    fn resolve(&self, path: &str) -> Option<(String, PathBuf)> {
        let rel = path.trim_start_matches('/');
        let rel = if rel.is_empty() { "index.html" } else { rel };
        let safe = rel
            .split('/')
            .all(|seg| !seg.is_empty() && !seg.starts_with('.') && !seg.contains('\\'));
        if !safe {
            return None;
        }
        let full = self.dist.join(rel);
        full.is_file().then(|| (rel.to_string(), full))
    }

    fn respond(&self, req: &HttpRequest, rel: &str, full: &Path) -> HttpResponse {
        let immutable = rel != "index.html" && rel != "stepwatch-config.json";
        let cache = if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        let accepts_br = req
            .headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("br")));
        if accepts_br {
            let cached = self.brotli.read().ok().and_then(|m| m.get(rel).cloned());
            if let Some(body) = cached {
                return HttpResponse::Ok()
                    .content_type(content_type(full))
                    .insert_header((header::CONTENT_ENCODING, "br"))
                    .insert_header((header::VARY, "Accept-Encoding"))
                    .insert_header((header::CACHE_CONTROL, cache))
                    .body(body);
            }
        }
        match std::fs::read(full) {
            Ok(bytes) => HttpResponse::Ok()
                .content_type(content_type(full))
                .insert_header((header::VARY, "Accept-Encoding"))
                .insert_header((header::CACHE_CONTROL, cache))
                .body(bytes),
            Err(_) => HttpResponse::NotFound().finish(),
        }
    }
}

/// Any GET outside `/api`: a dashboard file, or index.html for client-side routes.
pub async fn serve(req: HttpRequest, dash: web::Data<Arc<Dashboard>>) -> HttpResponse {
    if let Some((rel, full)) = dash.resolve(req.path()) {
        return dash.respond(&req, &rel, &full);
    }
    match dash.resolve("/index.html") {
        Some((rel, full)) => dash.respond(&req, &rel, &full),
        None => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(NOT_BUILT),
    }
}
