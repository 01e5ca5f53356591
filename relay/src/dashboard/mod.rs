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
//!
//! - **Built in.** A binary built with the `embed-dashboard` feature carries the
//!   dashboard compressed at build time ([`embedded`]) and serves it when no `--dist` is
//!   given (the `stepwatch-server` wheel); `--dist` still serves a folder from disk.
//!
//! Files: [`copies`] keeps the brotli copies fresh (the background thread and its
//! child), [`precompress`] is that child's side, [`respond`] answers a request (headers,
//! ETag, SPA fallback), [`files`] says which paths are files and how they are typed,
//! [`stamp`] identifies a file's version, [`devbuild`] finds trunk's autoreload script.

pub mod copies;
pub mod devbuild;
pub mod embedded;
pub mod files;
pub mod precompress;
pub mod respond;
pub mod stamp;

pub use copies::Dashboard;
pub use devbuild::is_dev_build;
pub use precompress::{brotli, precompress_to};
pub use respond::serve;

/// Which dashboard the relay serves: `--dist` from disk; without it, the one built into
/// the binary when it has one (`None`), else `./dist`. Says which in the log.
pub fn choose(
    dist: Option<&std::path::Path>,
    cache: std::path::PathBuf,
) -> Option<std::sync::Arc<Dashboard>> {
    let dist = match dist {
        Some(d) => d.to_path_buf(),
        None if embedded::present() => {
            let files = embedded::files();
            let br: usize = files
                .iter()
                .map(|f| f.br.map_or(f.raw.len(), <[u8]>::len))
                .sum();
            tracing::info!(
                files = files.len(),
                brotli_kb = br / 1024,
                "serving the built-in dashboard"
            );
            return None;
        }
        None => "dist".into(),
    };
    if !dist.join("index.html").is_file() {
        tracing::warn!(dist = %dist.display(), "no built dashboard found; serving the API only");
    }
    Some(Dashboard::new(dist, cache))
}
