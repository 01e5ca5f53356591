//! The shared PostgreSQL test server: where it is (`STEPWATCH_TEST_PG`), fresh databases
//! on it, relays on it under `STEPWATCH_TEST_BACKEND=postgres`, and the server programs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shared PostgreSQL server for tests: `$STEPWATCH_TEST_PG` (a URL without a
/// database, e.g. `postgres://postgres@127.0.0.1:5433`), or `None`. Panics when there
/// is none but `STEPWATCH_REQUIRE_POSTGRES=1` (as under `cargo xtask test`), so that
/// the PostgreSQL tests fail there rather than skip.
pub fn pg_server() -> Option<String> {
    match std::env::var("STEPWATCH_TEST_PG") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ => {
            assert!(
                !pg_required(),
                "STEPWATCH_REQUIRE_POSTGRES=1 but STEPWATCH_TEST_PG is not set: start a \
                 PostgreSQL server and set STEPWATCH_TEST_PG=postgres://USER@HOST:PORT \
                 (`cargo xtask test` does both)"
            );
            None
        }
    }
}

/// Whether PostgreSQL tests must run rather than skip (`STEPWATCH_REQUIRE_POSTGRES=1`).
pub fn pg_required() -> bool {
    std::env::var("STEPWATCH_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// [`pg_server`], printing why `test` is skipped when there is none.
pub fn pg_server_or_skip(test: &str) -> Option<String> {
    let server = pg_server();
    if server.is_none() {
        eprintln!(
            "skipping {test}: no PostgreSQL server (set STEPWATCH_TEST_PG=postgres://USER@HOST:PORT, \
             or run `cargo xtask test`)"
        );
    }
    server
}

/// Whether relays of [`Relay::start`] run on PostgreSQL (`STEPWATCH_TEST_BACKEND=postgres`).
pub fn test_backend_is_postgres() -> bool {
    std::env::var("STEPWATCH_TEST_BACKEND").is_ok_and(|v| v.eq_ignore_ascii_case("postgres"))
}

/// The database a relay started by [`Relay::start`] on `data_dir` runs on: `None`
/// (SQLite) unless `STEPWATCH_TEST_BACKEND=postgres` and `extra` names no
/// `--database` itself. Each data dir gets its own fresh database on the shared server,
/// the same one every time it is started again, so a test that stops a relay and starts
/// a new one on the same data dir finds its data, as with SQLite.
pub fn test_backend_database(data_dir: &Path, extra: &[&str]) -> Option<String> {
    if !test_backend_is_postgres()
        || extra
            .iter()
            .any(|a| *a == "--database" || a.starts_with("--database="))
    {
        return None;
    }
    static BY_DIR: std::sync::LazyLock<Mutex<HashMap<PathBuf, String>>> =
        std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut map = BY_DIR.lock().unwrap_or_else(|e| e.into_inner());
    let url = map.entry(data_dir.to_path_buf()).or_insert_with(|| {
        // Name it after the test's temp dir: `…/stepwatch-e2e-ingest-123-4/data` → `ingest`.
        let tag = data_dir
            .ancestors()
            .filter_map(|p| p.file_name()?.to_str())
            .find_map(|n| n.strip_prefix("stepwatch-e2e-"))
            .map(|n| n.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-'))
            .or_else(|| data_dir.file_name()?.to_str())
            .unwrap_or("relay")
            .to_string();
        fresh_database(&tag)
    });
    Some(url.clone())
}

/// `server` (a PostgreSQL URL) with its database replaced by `db`.
pub fn database_url(server: &str, db: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server, None),
    };
    let base = match base.find("://") {
        Some(scheme) => match base[scheme + 3..].find('/') {
            Some(slash) => &base[..scheme + 3 + slash],
            None => base,
        },
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Creates a new, uniquely named database on the shared server ([`pg_server`]) and
/// returns its URL. Panics when there is no server.
pub fn fresh_database(tag: &str) -> String {
    let server = pg_server().expect(
        "no PostgreSQL server for a fresh database: set STEPWATCH_TEST_PG (cargo xtask test does)",
    );
    fresh_database_on(&server, tag)
}

/// Creates a new database `sw_<tag>_<pid>_<n>` on `server` and returns its URL.
pub fn fresh_database_on(server: &str, tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut clean: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    clean.truncate(30);
    let name = format!("sw_{clean}_{}_{n}", std::process::id());
    let mut client = pg_connect(server, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {server}: {e}"));
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {server}: {e}"));
    database_url(server, &name)
}

/// Connects to `url`, retrying until `timeout` (the server may be starting).
pub fn pg_connect(url: &str, timeout: Duration) -> Result<postgres::Client, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match postgres::Client::connect(url, postgres::NoTls) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`, `postgres`):
/// `$STEPWATCH_TEST_PG_BIN`, else where `pg_ctl` on `PATH` really lives, else the
/// newest `/usr/lib/postgresql/*/bin` (Debian's layout).
pub fn pg_bin_dir() -> Option<PathBuf> {
    let complete = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| d.join(p).is_file())
    };
    if let Some(d) = std::env::var_os("STEPWATCH_TEST_PG_BIN").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        if complete(&d) {
            return Some(d);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for p in std::env::split_paths(&paths) {
            let pg_ctl = p.join("pg_ctl");
            if let Some(dir) = pg_ctl
                .canonicalize()
                .ok()
                .and_then(|c| c.parent().map(Path::to_path_buf))
            {
                if complete(&dir) {
                    return Some(dir);
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            complete(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}
