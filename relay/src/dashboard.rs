//! Serving the built dashboard: the files of `--dist` as they are on disk now, brotli
//! (quality 11) for browsers that accept it, gzip on the fly otherwise. Paths never leave
//! the dist directory.
//!
//! - **What is on disk, under every encoding.** Each request stats its file (size, mtime,
//!   ctime, inode: its [`Stamp`]). A brotli copy is served only when it was made from a
//!   file with that same stamp; otherwise the file is read and sent as it is (gzip on the
//!   fly), and the background thread is woken to make a fresh copy. So a rebuilt `dist/`
//!   (new hashed names, a new `index.html`) is served at once, files that appear are
//!   served, files that go away answer 404, and `br` and plain requests never disagree.
//! - **The compressor stays out of the relay.** Brotli copies are made by a short-lived
//!   child process (`stepwatch precompress`) into `<data-dir>/dashboard-br/`, each with
//!   the stamp of the file it was made from, so the compressor's large working memory
//!   never stays in the relay (idle RSS target: 20 MB); the relay keeps only the
//!   compressed bytes, and a restart reuses copies whose stamp still matches.
//! - **Caching.** Names trunk hashed (`style-1a2b3c4d5e6f7a8b.css`) are immutable for a
//!   year; every other file (`index.html`, `stepwatch-config.json`) is `no-cache` with a
//!   weak ETag made from its stamp, so browsers revalidate it on every load and get 304
//!   while it is unchanged.
//! - **Routes, not assets, get the SPA page.** A path whose last segment has a file
//!   extension and names no file answers 404 (plain text); other paths get index.html.
//! - **Dev builds.** An `index.html` written by `trunk serve` carries trunk's autoreload
//!   script, which can only reach trunk's own dev server. The relay logs a warning (at
//!   start and whenever index.html changes) and leaves that script out when serving.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

/// The brotli copies of the dashboard's files and the state that keeps them fresh.
pub struct Dashboard {
    dist: PathBuf,
    cache: PathBuf,
    brotli: RwLock<HashMap<String, Compressed>>,
    /// Set when a request saw a file without a fresh copy; wakes the background thread.
    dirty: Mutex<bool>,
    wake: Condvar,
    /// The index.html last checked for a dev build.
    index_seen: Mutex<Option<Stamp>>,
    /// The last `stepwatch precompress` failed (warned once until one succeeds).
    child_failed: AtomicBool,
}

/// A brotli copy of one file, as it was when its `stamp` was taken.
struct Compressed {
    stamp: Stamp,
    /// `None`: brotli would not make it smaller (or could not be made); serve it plain.
    br: Option<web::Bytes>,
}

/// What identifies one version of a file on disk. A rebuild that renames new files in
/// changes the inode; a rewrite in place changes the mtime and ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

/// The first line of every cache file; bump when [`prepare`] or the format changes.
const FORMAT: &str = "stepwatch-br 2";
/// How long a woken background thread waits for a rebuild to finish writing.
const SETTLE: Duration = Duration::from_millis(300);
/// How long it waits after the child failed before trying again.
const BACKOFF: Duration = Duration::from_secs(30);
/// Directory levels below dist that are served and compressed.
const MAX_DEPTH: usize = 8;

const COMPRESSIBLE: [&str; 9] = [
    "wasm", "js", "mjs", "css", "html", "json", "svg", "map", "txt",
];

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>Stepwatch</title>\
<body style=\"font-family:sans-serif;padding:2em\"><h1>Stepwatch relay is running</h1>\
<p>The dashboard is not built. Run <code>cargo xtask run</code>, or <code>trunk build --release</code> \
and start the relay with <code>--dist dist</code>.</p><p>The API is under <code>/api</code>.</p>";

/// What only trunk's autoreload script (injected by `trunk serve`) contains: the
/// placeholders trunk's dev server fills in as it serves the page, and its WebSocket path.
const DEV_MARKERS: [&str; 4] = [
    "{{__TRUNK_ADDRESS__}}",
    "{{__TRUNK_WS_BASE__}}",
    ".well-known/trunk/ws",
    "/_trunk/ws",
];

impl Stamp {
    fn of(m: &Metadata) -> Stamp {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
            Stamp {
                len: m.len(),
                mtime_ns: ns(m.mtime(), m.mtime_nsec()),
                ctime_ns: ns(m.ctime(), m.ctime_nsec()),
                ino: m.ino(),
            }
        }
        #[cfg(not(unix))]
        {
            let mtime_ns = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            Stamp {
                len: m.len(),
                mtime_ns,
                ctime_ns: 0,
                ino: 0,
            }
        }
    }

    fn header(&self) -> String {
        format!(
            "{FORMAT} {} {} {} {}\n",
            self.len, self.mtime_ns, self.ctime_ns, self.ino
        )
    }

    fn parse(line: &str) -> Option<Stamp> {
        let rest = line.strip_prefix(FORMAT)?.strip_prefix(' ')?;
        let mut it = rest.split_ascii_whitespace();
        let stamp = Stamp {
            len: it.next()?.parse().ok()?,
            mtime_ns: it.next()?.parse().ok()?,
            ctime_ns: it.next()?.parse().ok()?,
            ino: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(stamp)
    }

    /// Weak: the same validator for the brotli, gzip and plain bodies of one version.
    fn etag(&self) -> String {
        format!(
            "W/\"{:x}-{:x}-{:x}-{:x}\"",
            self.len, self.mtime_ns, self.ctime_ns, self.ino
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ext(rel: &str) -> &str {
    Path::new(rel)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
}

fn content_type(rel: &str) -> &'static str {
    match ext(rel) {
        "wasm" => "application/wasm",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn compressible(rel: &str) -> bool {
    COMPRESSIBLE.contains(&ext(rel))
}

/// A path segment that may be served: no `.`/`..`, no hidden files, no backslashes.
fn segment_ok(seg: &str) -> bool {
    !seg.is_empty() && !seg.starts_with('.') && !seg.contains('\\')
}

/// Whether a request path names a file (its last segment has an extension such as
/// `.css` or `.wasm`) rather than a client-side route: such a path never gets index.html.
fn names_a_file(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or("");
    match last.rfind('.') {
        Some(i) if i > 0 => {
            let ext = &last[i + 1..];
            (1..=10).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        }
        _ => false,
    }
}

/// Whether trunk put a content hash in the name (`style-1a2b3c4d5e6f7a8b.css`,
/// `stepwatch-frontend-…_bg.wasm`, `snippets/<crate>-<hash>/…`): a new build gives
/// changed content a new name, so the old name may be cached for good.
fn is_hashed(rel: &str) -> bool {
    rel.split(['/', '-', '_', '.']).any(|t| {
        (8..=16).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && t.bytes().any(|b| b.is_ascii_alphabetic())
    })
}

/// Where trunk's autoreload `<script>` element is in `html`, if it has one.
fn dev_snippet(html: &str) -> Option<std::ops::Range<usize>> {
    let at = DEV_MARKERS.iter().filter_map(|m| html.find(m)).min()?;
    let start = html[..at].rfind("<script")?;
    if html[start..at].contains("</script") {
        return None;
    }
    let end = at + html[at..].find("</script>")? + "</script>".len();
    Some(start..end)
}

/// Whether `html` is an index.html written by `trunk serve` (autoreload script inside).
pub fn is_dev_build(html: &[u8]) -> bool {
    std::str::from_utf8(html)
        .ok()
        .and_then(dev_snippet)
        .is_some()
}

/// The bytes served for a file: as on disk, except that index.html loses trunk's
/// autoreload script (it can only reach `trunk serve`; from the relay it fails forever).
fn prepare(rel: &str, bytes: Vec<u8>) -> Vec<u8> {
    if rel != "index.html" {
        return bytes;
    }
    let mut html = match String::from_utf8(bytes) {
        Ok(html) => html,
        Err(e) => return e.into_bytes(),
    };
    for _ in 0..4 {
        match dev_snippet(&html) {
            Some(range) => html.replace_range(range, ""),
            None => break,
        }
    }
    html.into_bytes()
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

/// Every file under `dist` a request can name (no hidden segments), with its metadata.
fn scan(dist: &Path) -> Vec<(String, Metadata)> {
    let mut out = Vec::new();
    let mut dirs = vec![(dist.to_path_buf(), String::new(), 0)];
    while let Some((dir, prefix, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| segment_ok(n)) else {
                continue;
            };
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            // As a request would see it: symbolic links followed.
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if meta.is_file() {
                out.push((rel, meta));
            } else if meta.is_dir() && depth < MAX_DEPTH {
                dirs.push((entry.path(), rel, depth + 1));
            }
        }
    }
    out
}

/// The cache file of `rel`: its path with every byte outside `[A-Za-z0-9._-]` escaped.
fn cache_name(rel: &str) -> String {
    let mut name = String::with_capacity(rel.len() + 3);
    for b in rel.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push_str(".br");
    name
}

/// The stamp in a cache file's first line.
fn cached_stamp(path: &Path) -> Option<Stamp> {
    let mut head = [0u8; 128];
    let mut f = std::fs::File::open(path).ok()?;
    let n = f.read(&mut head).ok()?;
    let line = head[..n].split(|&b| b == b'\n').next()?;
    Stamp::parse(std::str::from_utf8(line).ok()?)
}

/// Reads `rel` and compresses what is served for it; `None` when it changed while read.
fn compress_file(dist: &Path, rel: &str) -> std::io::Result<Option<(Stamp, Vec<u8>)>> {
    let path = dist.join(rel);
    let mut f = std::fs::File::open(&path)?;
    let before = Stamp::of(&f.metadata()?);
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    if Stamp::of(&f.metadata()?) != before || Stamp::of(&std::fs::metadata(&path)?) != before {
        return Ok(None);
    }
    Ok(Some((before, brotli(&prepare(rel, bytes)))))
}

/// Writes a brotli copy into `out` for every compressible file of `dist` (subdirectories
/// included) whose copy is missing or was made from another version of the file, and
/// removes copies of files that are gone. Each copy starts with a line holding the
/// stamp of the file it was made from. Run by `stepwatch precompress` in a child process.
pub fn precompress_to(dist: &Path, out: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(out)?;
    let mut keep = HashSet::new();
    let mut n = 0;
    for (rel, meta) in scan(dist) {
        if !compressible(&rel) {
            continue;
        }
        let name = cache_name(&rel);
        let target = out.join(&name);
        keep.insert(name);
        if cached_stamp(&target) == Some(Stamp::of(&meta)) {
            continue;
        }
        match compress_file(dist, &rel) {
            Ok(Some((stamp, compressed))) => {
                let tmp = out.join(format!("{}.tmp", cache_name(&rel)));
                let mut data = stamp.header().into_bytes();
                data.extend_from_slice(&compressed);
                std::fs::write(&tmp, data)?;
                std::fs::rename(&tmp, &target)?;
                n += 1;
            }
            // Changing as we read it: the relay asks again once it has settled.
            Ok(None) => {}
            Err(e) => eprintln!("stepwatch precompress: {rel}: {e}"),
        }
    }
    for entry in std::fs::read_dir(out)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(n)
}

/// A dashboard file a request names.
struct Found {
    rel: String,
    full: PathBuf,
    meta: Metadata,
}

impl Dashboard {
    /// Serves `dist`; keeps brotli copies under `cache`, made in a child process by a
    /// background thread at start and whenever a file changes. Warns now if dist holds a
    /// dev build.
    pub fn new(dist: PathBuf, cache: PathBuf) -> Arc<Dashboard> {
        let d = Arc::new(Dashboard {
            dist,
            cache,
            brotli: RwLock::new(HashMap::new()),
            dirty: Mutex::new(true),
            wake: Condvar::new(),
            index_seen: Mutex::new(None),
            child_failed: AtomicBool::new(false),
        });
        d.check_index();
        let bg = d.clone();
        let _ = std::thread::Builder::new()
            .name("stepwatch-brotli".into())
            .spawn(move || loop {
                bg.next_round();
                if !bg.refresh() {
                    std::thread::sleep(BACKOFF);
                }
            });
        d
    }

    /// Asks the background thread for fresh brotli copies.
    fn mark_dirty(&self) {
        let mut dirty = lock(&self.dirty);
        if !*dirty {
            *dirty = true;
            self.wake.notify_one();
        }
    }

    /// Waits until a copy is wanted, then a little longer for a rebuild to finish.
    fn next_round(&self) {
        let mut dirty = lock(&self.dirty);
        while !*dirty {
            dirty = self.wake.wait(dirty).unwrap_or_else(|e| e.into_inner());
        }
        drop(dirty);
        std::thread::sleep(SETTLE);
        *lock(&self.dirty) = false;
    }

    /// Brings the brotli copies in line with dist: drops those of changed or deleted
    /// files, loads fresh ones from the cache directory, and runs the child for the rest.
    /// `false`: the child could not run.
    fn refresh(&self) -> bool {
        self.check_index();
        let files: HashMap<String, Stamp> = scan(&self.dist)
            .into_iter()
            .filter(|(rel, _)| compressible(rel))
            .map(|(rel, meta)| (rel, Stamp::of(&meta)))
            .collect();
        if let Ok(mut map) = self.brotli.write() {
            map.retain(|rel, c| files.get(rel) == Some(&c.stamp));
        }
        let mut missing = Vec::new();
        for (rel, stamp) in &files {
            if self.has_copy(rel, *stamp) {
                continue;
            }
            if !self.load(rel, *stamp) {
                missing.push((rel, *stamp));
            }
        }
        if missing.is_empty() {
            return true;
        }
        if !self.run_child() {
            if !self.child_failed.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "could not make brotli copies of the dashboard; serving it with gzip for now"
                );
            }
            return false;
        }
        self.child_failed.store(false, Ordering::Relaxed);
        for (rel, stamp) in missing {
            if self.load(rel, stamp) {
                continue;
            }
            let now = std::fs::metadata(self.dist.join(rel)).map(|m| Stamp::of(&m));
            if now.as_ref().ok() == Some(&stamp) {
                // The child made none (unreadable?): serve it plain rather than retry.
                if let Ok(mut map) = self.brotli.write() {
                    map.insert(rel.clone(), Compressed { stamp, br: None });
                }
            } else {
                self.mark_dirty();
            }
        }
        true
    }

    fn has_copy(&self, rel: &str, stamp: Stamp) -> bool {
        self.brotli
            .read()
            .is_ok_and(|m| m.get(rel).is_some_and(|c| c.stamp == stamp))
    }

    /// Takes the cache directory's copy of `rel` if it was made from version `stamp`.
    fn load(&self, rel: &str, stamp: Stamp) -> bool {
        let Ok(data) = std::fs::read(self.cache.join(cache_name(rel))) else {
            return false;
        };
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            return false;
        };
        let header = std::str::from_utf8(&data[..nl]).ok().and_then(Stamp::parse);
        if header != Some(stamp) {
            return false;
        }
        let body = web::Bytes::from(data).slice(nl + 1..);
        // Kept only when smaller than the file.
        let br = ((body.len() as u64) < stamp.len).then_some(body);
        if let Ok(mut map) = self.brotli.write() {
            map.insert(rel.to_string(), Compressed { stamp, br });
        }
        true
    }

    fn run_child(&self) -> bool {
        // On Linux the running image itself: it still runs after an upgrade replaced or
        // deleted the file the relay was started from (current_exe() would then name a
        // missing or different program).
        let proc_exe = Path::new("/proc/self/exe");
        let exe = if proc_exe.exists() {
            Some(proc_exe.to_path_buf())
        } else {
            std::env::current_exe().ok()
        };
        let ran = exe.and_then(|exe| {
            std::process::Command::new(exe)
                .arg("precompress")
                .arg("--dist")
                .arg(&self.dist)
                .arg("--out")
                .arg(&self.cache)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .ok()
        });
        ran.is_some_and(|s| s.success())
    }

    fn check_index(&self) {
        if let Ok(meta) = std::fs::metadata(self.dist.join("index.html")) {
            self.note_index(Stamp::of(&meta));
        }
    }

    /// Warns once per version of index.html that is a dev build.
    fn note_index(&self, stamp: Stamp) {
        let mut seen = lock(&self.index_seen);
        if *seen == Some(stamp) {
            return;
        }
        *seen = Some(stamp);
        let index = self.dist.join("index.html");
        if std::fs::read(&index).is_ok_and(|html| is_dev_build(&html)) {
            tracing::warn!(
                "{} is a trunk dev build (autoreload snippet): run `trunk build --release` \
                 for the dashboard the relay serves (`trunk serve` writes its dev build into \
                 the same dist/); serving it without the snippet, which only trunk's dev \
                 server can answer",
                index.display()
            );
        }
    }

    /// The file a request path names inside dist, if it is a plain relative path.
    fn find(&self, path: &str) -> Option<Found> {
        let rel = path.trim_start_matches('/');
        let rel = if rel.is_empty() { "index.html" } else { rel };
        if !rel.split('/').all(segment_ok) || rel.split('/').count() > MAX_DEPTH + 1 {
            return None;
        }
        let full = self.dist.join(rel);
        let meta = std::fs::metadata(&full).ok().filter(Metadata::is_file)?;
        Some(Found {
            rel: rel.to_string(),
            full,
            meta,
        })
    }

    fn respond(&self, req: &HttpRequest, file: &Found) -> HttpResponse {
        let rel = file.rel.as_str();
        // Taken before the file is read, so an ETag never names a newer body than it has.
        let stamp = Stamp::of(&file.meta);
        let etag = stamp.etag();
        let cache = if is_hashed(rel) {
            IMMUTABLE
        } else {
            "no-cache"
        };
        if rel == "index.html" {
            self.note_index(stamp);
        }
        let mut br = None;
        if compressible(rel) {
            match self.brotli.read().ok().and_then(|m| {
                m.get(rel)
                    .filter(|c| c.stamp == stamp)
                    .map(|c| c.br.clone())
            }) {
                Some(copy) => br = copy,
                None => self.mark_dirty(),
            }
        }
        let mut ok = HttpResponse::Ok();
        ok.insert_header((header::VARY, "Accept-Encoding"))
            .insert_header((header::CACHE_CONTROL, cache))
            .insert_header((header::ETAG, etag.clone()));
        if let Ok(modified) = file.meta.modified() {
            ok.insert_header((header::LAST_MODIFIED, header::HttpDate::from(modified)));
        }
        if if_none_match(req, &etag) {
            return HttpResponse::NotModified()
                .insert_header((header::VARY, "Accept-Encoding"))
                .insert_header((header::CACHE_CONTROL, cache))
                .insert_header((header::ETAG, etag))
                .finish();
        }
        if let Some(body) = br.filter(|_| accepts_br(req)) {
            return ok
                .content_type(content_type(rel))
                .insert_header((header::CONTENT_ENCODING, "br"))
                .body(body);
        }
        match std::fs::read(&file.full) {
            Ok(bytes) => ok.content_type(content_type(rel)).body(prepare(rel, bytes)),
            Err(_) => not_found(),
        }
    }
}

fn accepts_br(req: &HttpRequest) -> bool {
    let Some(v) = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    v.split(',').any(|coding| {
        let mut parts = coding.split(';');
        let named = parts
            .next()
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("br"));
        // `br;q=0` refuses brotli.
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        named && !refused
    })
}

/// Whether the request's `If-None-Match` names `etag` (weak comparison, as for GET).
fn if_none_match(req: &HttpRequest, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || bare(t) == bare(etag))
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body("404 not found: no such file in the dashboard build\n")
}

/// Any GET outside `/api`: a dashboard file; 404 for a file name that is not there;
/// index.html for client-side routes.
pub async fn serve(req: HttpRequest, dash: web::Data<Arc<Dashboard>>) -> HttpResponse {
    if let Some(file) = dash.find(req.path()) {
        return dash.respond(&req, &file);
    }
    if names_a_file(req.path()) {
        return not_found();
    }
    match dash.find("/index.html") {
        Some(file) => dash.respond(&req, &file),
        None => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(NOT_BUILT),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_names_and_routes() {
        for p in ["/style-1a2b.css", "/a/b.wasm", "/x.map", "/..%2fsecret.txt"] {
            assert!(names_a_file(p), "{p}");
        }
        for p in ["/", "/runs/x", "/.hidden", "/runs/", "/..", "/a.b/c"] {
            assert!(!names_a_file(p), "{p}");
        }
        assert!(is_hashed("style-1a2b3c4d5e6f7a8b.css"));
        assert!(is_hashed("stepwatch-frontend-0f1e2d3c4b5a6978_bg.wasm"));
        assert!(is_hashed(
            "snippets/stepwatch-frontend-9abcdef012345678/inline0.js"
        ));
        for rel in [
            "index.html",
            "stepwatch-config.json",
            "report-20240101.json",
        ] {
            assert!(!is_hashed(rel), "{rel}");
        }
    }

    #[test]
    fn the_autoreload_script_is_found_and_left_out() {
        let dev = "<html><body><script type=module>import init from './app.js';</script>\
            <script nonce=\"n\">\"use strict\";(function(){const address='{{__TRUNK_ADDRESS__}}';\
            const url='ws://'+address+'/.well-known/trunk/ws';new WebSocket(url);})()</script></body></html>";
        assert!(is_dev_build(dev.as_bytes()));
        let served = String::from_utf8(prepare("index.html", dev.as_bytes().to_vec())).unwrap();
        assert_eq!(
            served,
            "<html><body><script type=module>import init from './app.js';</script></body></html>"
        );
        assert!(!is_dev_build(served.as_bytes()));
        // Only index.html is rewritten.
        assert_eq!(prepare("other.html", dev.into()), dev.as_bytes());
    }

    #[test]
    fn stamps_round_trip_through_the_cache_header() {
        let s = Stamp {
            len: 12,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: -5,
            ino: 42,
        };
        assert_eq!(Stamp::parse(s.header().trim_end()), Some(s));
        assert_eq!(Stamp::parse("stepwatch-br 1 12 1 2 3"), None);
        assert_eq!(
            cache_name("snippets/a b/x.js"),
            "snippets%2Fa%20b%2Fx.js.br"
        );
    }
}
