//! The dashboard built into the binary (the `embed-dashboard` feature: `build.rs`
//! compressed every file of `dist/` at build time), served when no `--dist` is given:
//! what the `stepwatch-server` wheel runs. The same rules as from disk: brotli when the
//! browser accepts it (gzip on the fly otherwise), hashed names immutable, `no-cache` with
//! an ETag for the rest, 404 for a missing file name, index.html for client-side routes.

use super::files::{content_type, is_hashed, names_a_file, segment_ok, MAX_DEPTH};
use super::respond::{accepts_br, if_none_match, not_found, IMMUTABLE};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

/// One file of the dashboard as built into the binary.
pub struct EmbeddedFile {
    /// Path below dist (`index.html`, `style-….css`).
    pub path: &'static str,
    pub raw: &'static [u8],
    /// Brotli (quality 11), when that is smaller.
    pub br: Option<&'static [u8]>,
    /// Weak ETag made from the content.
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/embedded_dashboard.rs"));

/// Whether this binary carries a built dashboard.
pub fn present() -> bool {
    find("index.html").is_some()
}

/// The embedded files (for the start-up log line: how many, how large compressed).
pub fn files() -> &'static [EmbeddedFile] {
    FILES
}

fn find(rel: &str) -> Option<&'static EmbeddedFile> {
    FILES
        .binary_search_by(|f| f.path.cmp(rel))
        .ok()
        .map(|i| &FILES[i])
}

fn lookup(path: &str) -> Option<&'static EmbeddedFile> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    if !rel.split('/').all(segment_ok) || rel.split('/').count() > MAX_DEPTH + 1 {
        return None;
    }
    find(rel)
}

fn respond(req: &HttpRequest, f: &'static EmbeddedFile) -> HttpResponse {
    let cache = if is_hashed(f.path) {
        IMMUTABLE
    } else {
        "no-cache"
    };
    if if_none_match(req, f.etag) {
        return HttpResponse::NotModified()
            .insert_header((header::VARY, "Accept-Encoding"))
            .insert_header((header::CACHE_CONTROL, cache))
            .insert_header((header::ETAG, f.etag))
            .finish();
    }
    let mut ok = HttpResponse::Ok();
    ok.insert_header((header::VARY, "Accept-Encoding"))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ETAG, f.etag))
        .content_type(content_type(f.path));
    match f.br.filter(|_| accepts_br(req)) {
        Some(br) => ok.insert_header((header::CONTENT_ENCODING, "br")).body(br),
        None => ok.body(f.raw),
    }
}

/// Any GET outside `/api`, from the embedded dashboard.
pub async fn serve(req: HttpRequest) -> HttpResponse {
    if let Some(f) = lookup(req.path()) {
        return respond(&req, f);
    }
    if names_a_file(req.path()) {
        return not_found();
    }
    match find("index.html") {
        Some(f) => respond(&req, f),
        None => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_for_lookup_and_names_stay_inside_dist() {
        assert!(FILES.windows(2).all(|w| w[0].path < w[1].path));
        assert!(lookup("/../Cargo.toml").is_none());
        assert!(lookup("/.hidden").is_none());
        if present() {
            assert_eq!(lookup("/").map(|f| f.path), Some("index.html"));
        }
    }
}
