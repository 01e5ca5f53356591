//! Which request paths name dashboard files: allowed segments, file names against
//! client-side routes, trunk's hashed (immutable) names, content types, and the scan of
//! every file under dist.

use std::fs::Metadata;
use std::path::Path;

/// Directory levels below dist that are served and compressed.
pub const MAX_DEPTH: usize = 8;

const COMPRESSIBLE: [&str; 9] = [
    "wasm", "js", "mjs", "css", "html", "json", "svg", "map", "txt",
];

fn ext(rel: &str) -> &str {
    Path::new(rel)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
}

pub fn content_type(rel: &str) -> &'static str {
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

pub fn compressible(rel: &str) -> bool {
    COMPRESSIBLE.contains(&ext(rel))
}

/// A path segment that may be served: no `.`/`..`, no hidden files, no backslashes.
pub fn segment_ok(seg: &str) -> bool {
    !seg.is_empty() && !seg.starts_with('.') && !seg.contains('\\')
}

/// Whether a request path names a file (its last segment has an extension such as
/// `.css` or `.wasm`) rather than a client-side route: such a path never gets index.html.
pub fn names_a_file(path: &str) -> bool {
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
pub fn is_hashed(rel: &str) -> bool {
    rel.split(['/', '-', '_', '.']).any(|t| {
        (8..=16).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && t.bytes().any(|b| b.is_ascii_alphabetic())
    })
}

/// Every file under `dist` a request can name (no hidden segments), with its metadata.
pub fn scan(dist: &Path) -> Vec<(String, Metadata)> {
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

#[cfg(test)]
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
}
