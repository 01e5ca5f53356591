//! Answering a request for the dashboard: the file it names inside dist (never outside),
//! its brotli copy when fresh and accepted, else the file as it is now; caching headers
//! (immutable for hashed names, `no-cache` with a weak ETag otherwise, 304 on a match);
//! 404 for a missing file name, index.html for client-side routes.

use super::copies::Dashboard;
use super::devbuild::prepare;
use super::files::{compressible, content_type, is_hashed, names_a_file, segment_ok, MAX_DEPTH};
use super::stamp::Stamp;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use std::fs::Metadata;
use std::path::PathBuf;
use std::sync::Arc;

pub(super) const IMMUTABLE: &str = "public, max-age=31536000, immutable";

const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>Stepwatch</title>\
<body style=\"font-family:sans-serif;padding:2em\"><h1>Stepwatch relay is running</h1>\
<p>The dashboard is not built. Run <code>cargo xtask run</code>, or <code>trunk build --release</code> \
and start the relay with <code>--dist dist</code>.</p><p>The API is under <code>/api</code>.</p>";

/// A dashboard file a request names.
struct Found {
    rel: String,
    full: PathBuf,
    meta: Metadata,
}

impl Dashboard {
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
            match self.fresh_copy(rel, stamp) {
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

pub(super) fn accepts_br(req: &HttpRequest) -> bool {
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
pub(super) fn if_none_match(req: &HttpRequest, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || bare(t) == bare(etag))
}

pub(super) fn not_found() -> HttpResponse {
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
