//! # stepwatch-e2e — helpers for the end-to-end tests
//!
//! Everything here drives real parts: [`Relay`] spawns the `stepwatch` binary on a free
//! port with its own data dir, [`sse_collect`] reads a real SSE stream, [`Browser`] drives
//! headless Chromium through chromedriver's WebDriver API, and [`python_trainer`] runs a
//! real Python process using the SDK.
//!
//! PostgreSQL: [`pg_server`] is the shared test server (`STEPWATCH_TEST_PG`, started by
//! `cargo xtask test`), [`fresh_database`] makes a new database on it, [`PgCluster`]
//! starts a private throwaway server, and with `STEPWATCH_TEST_BACKEND=postgres`
//! every [`Relay::start`] runs on a fresh database of the shared server instead of
//! SQLite. [`FailoverProxy`] stands in for a load balancer in front of several relays.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The relay binary: `$STEPWATCH_BIN`, else `target/debug/stepwatch`.
pub fn relay_bin() -> PathBuf {
    let p = std::env::var_os("STEPWATCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/debug/stepwatch"));
    assert!(
        p.exists(),
        "relay binary {} missing: run `cargo build -p stepwatch-relay` (cargo xtask test does)",
        p.display()
    );
    p
}

/// The built dashboard: `$STEPWATCH_DIST`, else `dist/` (trunk build --release).
pub fn dist() -> PathBuf {
    let d = std::env::var_os("STEPWATCH_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("dist"));
    assert!(
        d.join("index.html").exists(),
        "no built dashboard in {}: run `trunk build --release` (cargo xtask test does)",
        d.display()
    );
    d
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("stepwatch-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running relay process.
pub struct Relay {
    pub port: u16,
    pub url: String,
    pub data_dir: PathBuf,
    /// The PostgreSQL database it runs on (`--database`); `None`: SQLite in `data_dir`.
    pub database: Option<String>,
    child: Option<Child>,
    extra: Vec<String>,
    /// Where the relay's stderr (its logs) goes; discarded when `None`.
    log: Option<PathBuf>,
}

impl Relay {
    /// Starts a relay on a free port over `data_dir`, with extra CLI arguments. With
    /// `STEPWATCH_TEST_BACKEND=postgres` it stores in PostgreSQL instead (see
    /// [`test_backend_database`]).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Relay {
        let database = test_backend_database(data_dir, extra);
        Relay::launch(data_dir, extra, None, database)
    }

    /// As [`Relay::start`], with the relay's logs appended to `log`.
    pub fn start_logged(data_dir: &Path, extra: &[&str], log: &Path) -> Relay {
        let database = test_backend_database(data_dir, extra);
        Relay::launch(data_dir, extra, Some(log.to_path_buf()), database)
    }

    /// A relay storing in SQLite in `data_dir`, whatever `STEPWATCH_TEST_BACKEND` says.
    pub fn start_sqlite(data_dir: &Path, extra: &[&str]) -> Relay {
        Relay::launch(data_dir, extra, None, None)
    }

    /// A relay storing in the PostgreSQL database `database_url`, `data_dir` holding
    /// only its caches. Several relays may share one database.
    pub fn start_on(database_url: &str, data_dir: &Path, extra: &[&str]) -> Relay {
        Relay::launch(data_dir, extra, None, Some(database_url.to_string()))
    }

    /// As [`Relay::start_on`], with the relay's logs appended to `log`.
    pub fn start_on_logged(
        database_url: &str,
        data_dir: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Relay {
        Relay::launch(
            data_dir,
            extra,
            Some(log.to_path_buf()),
            Some(database_url.to_string()),
        )
    }

    fn launch(
        data_dir: &Path,
        extra: &[&str],
        log: Option<PathBuf>,
        database: Option<String>,
    ) -> Relay {
        let port = free_port();
        let mut r = Relay {
            port,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            database,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log,
        };
        r.spawn();
        r
    }

    /// Every event id stored for `run`, oldest first (paged through the API).
    pub fn all_ids(&self, run: &str) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        loop {
            let after = out.last().copied().unwrap_or(0);
            let page = self.get_ok(&format!(
                "/api/runs/{run}/events?after={after}&limit=100000"
            ));
            let page = page.as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return out;
            }
            out.extend(page.iter().filter_map(|e| e["id"].as_u64()));
        }
    }

    /// Every event stored for `run` as the API serves it, oldest first (paged through
    /// `?after=`).
    pub fn all_events(&self, run: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let after = out.last().and_then(|e| e["id"].as_u64()).unwrap_or(0);
            let page = self.get_ok(&format!("/api/runs/{run}/events?after={after}&limit=1000"));
            let page = page.as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its
    /// exit status (`None`: still running, then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(relay_bin());
        cmd.args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{}", self.port),
            "--data-dir",
        ])
        .arg(&self.data_dir)
        .args(&self.extra)
        .env_remove("STEPWATCH_DATABASE")
        .stdout(Stdio::null())
        .stderr(match &self.log {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_or(Stdio::null(), Stdio::from),
            None => Stdio::null(),
        });
        if !self.extra.iter().any(|a| a == "--dist") {
            cmd.arg("--dist").arg(self.data_dir.join("no-dist"));
        }
        if let Some(db) = &self.database {
            cmd.arg("--database").arg(db);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ureq::get(&format!("{}/healthz", self.url))
                .timeout(Duration::from_millis(500))
                .call()
                .is_ok()
            {
                self.child = Some(child);
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "relay on {} exited at start ({status}){}",
                    self.url,
                    self.database
                        .as_ref()
                        .map(|d| format!(", database {d}"))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("relay did not come up on {}", self.url);
    }

    /// The relay's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A relay serving the built dashboard, its data under `dir/data`.
    pub fn with_dashboard(dir: &Path) -> Relay {
        let dist = dist();
        Relay::start(
            &dir.join("data"),
            &["--dist", dist.to_str().unwrap_or("dist")],
        )
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts again on the same port, data dir and database.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// POSTs `body` to the run's events; returns (status, JSON body).
    pub fn post(&self, run: &str, body: &str, content_type: &str) -> (u16, Value) {
        let res = ureq::post(&format!("{}/api/runs/{run}/events", self.url))
            .set("Content-Type", content_type)
            .send_string(body);
        status_json(res)
    }

    /// GETs a path; returns (status, JSON body).
    pub fn get(&self, path: &str) -> (u16, Value) {
        status_json(ureq::get(&format!("{}{path}", self.url)).call())
    }

    /// GETs a path that must answer 200 with JSON.
    pub fn get_ok(&self, path: &str) -> Value {
        let (s, v) = self.get(path);
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

fn status_json(res: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match res {
        Ok(r) => {
            let s = r.status();
            (s, r.into_json().unwrap_or(Value::Null))
        }
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("request failed: {e}"),
    }
}

/// One SSE message.
#[derive(Debug, Clone, PartialEq)]
pub struct SseMessage {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

/// Opens an SSE stream and collects `n` messages (keep-alive comments skipped),
/// failing after `timeout`. `before_read` runs once the stream is open.
pub fn sse_collect(
    url: &str,
    last_event_id: Option<u64>,
    n: usize,
    timeout: Duration,
    before_read: impl FnOnce(),
) -> Vec<SseMessage> {
    let mut req = ureq::get(url).timeout(timeout);
    if let Some(id) = last_event_id {
        req = req.set("Last-Event-ID", &id.to_string());
    }
    let resp = req.call().unwrap();
    assert_eq!(resp.header("Content-Type"), Some("text/event-stream"));
    before_read();
    let deadline = Instant::now() + timeout;
    let mut reader = BufReader::new(resp.into_reader());
    let mut out = Vec::new();
    let (mut id, mut event, mut data) = (None, String::new(), String::new());
    let mut line = String::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "SSE: only {} of {n} messages",
            out.len()
        );
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("SSE stream ended after {} of {n} messages", out.len());
        }
        let l = line.trim_end_matches(['\n', '\r']);
        if l.is_empty() {
            if !data.is_empty() {
                out.push(SseMessage {
                    id,
                    event: std::mem::take(&mut event),
                    data: serde_json::from_str(&data).unwrap(),
                });
                data.clear();
                id = None;
            }
        } else if let Some(v) = l.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(v) = l.strip_prefix("event: ") {
            event = v.to_string();
        } else if let Some(v) = l.strip_prefix("data: ") {
            data.push_str(v);
        }
    }
    out
}

/// Follows an SSE stream, reconnecting with Last-Event-ID whenever it drops (relay
/// restarted, subscriber cut off), until `until` event ids were seen or `deadline`.
pub fn sse_follow_ids(url: &str, until: u64, deadline: Instant) -> Vec<u64> {
    let mut seen: Vec<u64> = Vec::new();
    while (seen.len() as u64) < until && Instant::now() < deadline {
        let mut req = ureq::get(url).timeout(Duration::from_secs(10));
        if let Some(last) = seen.last() {
            req = req.set("Last-Event-ID", &last.to_string());
        }
        let Ok(resp) = req.call() else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let reader = BufReader::new(resp.into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("id: ") {
                if let Ok(id) = id.trim().parse() {
                    seen.push(id);
                }
                if seen.len() as u64 >= until {
                    break;
                }
            }
        }
    }
    seen
}

/// The Python interpreter for trainer processes: `$STEPWATCH_PYTHON`, the repo's
/// `.venv`, else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("STEPWATCH_PYTHON") {
        return p.into();
    }
    let venv = repo().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// A Python trainer (for [`python_trainer`]) that obeys the dashboard: it reports a
/// checkpoint, answers `ask` with the text upper-cased, accepts `load_checkpoint`, and
/// steps every 10 ms until stopped (at most 100,000 steps).
pub const CONTROLLABLE_TRAINER: &str = r#"
import time, stepwatch
from stepwatch import emit_training_start, emit_batch_end, emit_training_end, emit_checkpoint_saved
stepwatch.on_command("load_checkpoint", lambda path: None)
stepwatch.on_command("ask", lambda text: {"echo": str(text).upper()})
emit_training_start(total_epochs=1, total_batches=100000)
emit_checkpoint_saved(checkpoint_path="/ckpt/best.pt", epoch=1, step=0, metrics={"val_loss": 1.0})
step = 0
while not stepwatch.should_stop() and step < 100000:
    step += 1
    emit_batch_end(batch_idx=step, loss=1.0 / step, lr=0.1)
    time.sleep(0.01)
emit_training_end()
assert stepwatch.flush(10)
"#;

/// Starts a real Python trainer running `code` with the SDK importable and
/// `STEPWATCH_URL` / `STEPWATCH_RUN` set.
pub fn python_trainer(code: &str, relay_url: &str, run: &str) -> Child {
    Command::new(python())
        .arg("-c")
        .arg(code)
        .env("PYTHONPATH", repo().join("clients/python/src"))
        .env("STEPWATCH_URL", relay_url)
        .env("STEPWATCH_RUN", run)
        .env(
            "STEPWATCH_SPOOL_DIR",
            std::env::temp_dir().join(format!("stepwatch-e2e-spool-{}", std::process::id())),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Headless Chromium driven over WebDriver (chromedriver).
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub fn start() -> Browser {
        Self::start_with(&[])
    }

    /// As [`Browser::start`], with extra Chromium arguments (e.g. `--lang=zh-CN`).
    pub fn start_with(extra_args: &[&str]) -> Browser {
        let port = free_port();
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver not found: install chromium-driver (cargo xtask test does)");
        let base = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver", Duration::from_secs(20), || {
            ureq::get(&format!("{base}/status")).call().ok()
        });
        let profile = TempDir::new("chrome");
        let chrome = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            "--disable-quic",
            "--window-size=1400,1000",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.0.display()));
        args.extend(extra_args.iter().map(|a| a.to_string()));
        // `--lang=xx` also sets the languages the page sees in navigator.language.
        let prefs = match extra_args.iter().find_map(|a| a.strip_prefix("--lang=")) {
            Some(lang) => json!({ "intl.accept_languages": lang }),
            None => json!({}),
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chrome, "args": args, "prefs": prefs }
        }}});
        let v: Value = ureq::post(&format!("{base}/session"))
            .send_json(caps)
            .unwrap()
            .into_json()
            .unwrap();
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            driver,
            base,
            session,
            _profile: profile,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = ureq::request(method, &url);
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => r.into_json::<Value>().unwrap()["value"].clone(),
            Err(ureq::Error::Status(s, r)) => panic!(
                "webdriver {path}: {s} {}",
                r.into_string().unwrap_or_default()
            ),
            Err(e) => panic!("webdriver {path}: {e}"),
        }
    }

    /// The value of the page's cookie `name` (HttpOnly ones too), if set.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let url = format!("{}/session/{}/cookie/{name}", self.base, self.session);
        let v: Value = ureq::get(&url).call().ok()?.into_json().ok()?;
        v["value"]["value"].as_str().map(str::to_string)
    }

    /// Opens a URL.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The text of the first element matching CSS selector `sel` ("" when none).
    pub fn text(&self, sel: &str) -> String {
        let sel = serde_json::to_string(sel).unwrap_or_default();
        self.eval(&format!(
            "const e = document.querySelector({sel}); return e ? e.textContent : '';"
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Runs JavaScript (a function body; `return` a value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Runs asynchronous JavaScript: the script calls `done(value)` when finished.
    pub fn eval_async(&self, script: &str) -> Value {
        let wrapped = format!("const done = arguments[arguments.length - 1]; {script}");
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({ "script": wrapped, "args": [] })),
        )
    }

    /// Runs `script` in every page before the page's own scripts (Chromium's
    /// `Page.addScriptToEvaluateOnNewDocument`), e.g. to watch what the page opens.
    pub fn on_new_document(&self, script: &str) {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Page.addScriptToEvaluateOnNewDocument",
                "params": { "source": script }
            })),
        );
    }

    /// Polls a script until it returns something truthy, which is returned.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Value {
        wait_until(what, timeout, || {
            let v = self.eval(script);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            truthy.then_some(v)
        })
    }

    /// Saves a PNG screenshot.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The trainer token of [`auth_config`] (role trainer, runs starting with `ci-`).
pub const TRAINER_TOKEN: &str = "ci-trainer-token-0123456789";
/// The admin token of [`auth_config`].
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// An Argon2 hash made by the relay's own `stepwatch hash-password`.
pub fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(relay_bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Writes `dir/stepwatch.toml` with users root (admin, password root-pw and
/// [`ADMIN_TOKEN`]), vera (viewer, vera-pw), otto (operator, otto-pw) and ci (trainer,
/// [`TRAINER_TOKEN`], runs `ci-*`); `extra` goes first (settings).
pub fn auth_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("stepwatch.toml");
    let text = format!(
        r#"{extra}
[[users]]
name = "root"
role = "admin"
password_hash = "{admin}"
tokens = ["{ADMIN_TOKEN}"]

[[users]]
name = "vera"
role = "viewer"
password_hash = "{viewer}"

[[users]]
name = "otto"
role = "operator"
password_hash = "{operator}"

[[users]]
name = "ci"
role = "trainer"
tokens = ["{TRAINER_TOKEN}"]
run_prefix = "ci-"
"#,
        admin = hash_password("root-pw"),
        viewer = hash_password("vera-pw"),
        operator = hash_password("otto-pw"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A background SSE subscriber over one or more relays serving the same run: it starts
/// on `urls[0]`, reconnects with `Last-Event-ID` when the stream drops and moves to the
/// next URL when one is unreachable, for tests that wait on what it has seen so far. It stops
/// when dropped (at the latest when its current request times out).
pub struct SseFollower {
    seen: Arc<Mutex<Vec<(u64, usize)>>>,
    stop: Arc<AtomicBool>,
}

impl SseFollower {
    /// Starts following `urls[0]`.
    pub fn start(urls: &[String]) -> SseFollower {
        assert!(!urls.is_empty());
        let seen: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let urls = urls.to_vec();
        std::thread::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            move || {
                let mut current = 0;
                while !stop.load(Ordering::Relaxed) {
                    let last = seen.lock().unwrap().last().map(|(id, _)| *id);
                    let mut req = ureq::get(&urls[current]).timeout(Duration::from_secs(10));
                    if let Some(last) = last {
                        req = req.set("Last-Event-ID", &last.to_string());
                    }
                    let Ok(resp) = req.call() else {
                        current = (current + 1) % urls.len();
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    for line in BufReader::new(resp.into_reader()).lines() {
                        let Ok(line) = line else { break };
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        if let Some(id) = line.strip_prefix("id: ") {
                            if let Ok(id) = id.trim().parse() {
                                seen.lock().unwrap().push((id, current));
                            }
                        }
                    }
                }
            }
        });
        SseFollower { seen, stop }
    }

    /// The ids seen so far, in the order they came.
    pub fn ids(&self) -> Vec<u64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }

    /// The ids seen so far, each with the index of the URL that delivered it.
    pub fn sources(&self) -> Vec<(u64, usize)> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until it has seen at least `n` ids (or panics after `timeout`); returns all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let ids = self.ids();
            if ids.len() >= n {
                return ids;
            }
            assert!(
                Instant::now() < deadline,
                "SSE subscriber saw only {} of {n} events (last {:?})",
                ids.len(),
                ids.last()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SseFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------

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

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A private throwaway PostgreSQL server on a free loopback port, its data and unix
/// socket in a fresh temporary directory, trusting local connections as `postgres`.
/// As root, its programs run as the `postgres` system user (initdb refuses root).
/// Dropping it stops the server (immediate) and removes the directory.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    /// Starts a cluster; panics with the reason when it cannot.
    pub fn start_new(tag: &str) -> PgCluster {
        PgCluster::try_start(tag).unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"))
    }

    /// Starts a cluster with the programs of [`pg_bin_dir`].
    pub fn try_start(tag: &str) -> Result<PgCluster, String> {
        let bin = pg_bin_dir().ok_or(
            "PostgreSQL server programs not found (initdb, pg_ctl): install PostgreSQL \
             (apt-get install postgresql) or set STEPWATCH_TEST_PG_BIN",
        )?;
        PgCluster::try_start_with(&bin, tag)
    }

    /// Starts a cluster with the programs in `bin`.
    pub fn try_start_with(bin: &Path, tag: &str) -> Result<PgCluster, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("stepwatch-pg-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let as_postgres = running_as_root();
        let cluster = PgCluster {
            dir,
            bin: bin.to_path_buf(),
            port: free_port(),
            as_postgres,
        };
        if as_postgres {
            // initdb refuses to run as root: the directory belongs to `postgres`.
            let _ = std::fs::set_permissions(
                &cluster.dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            );
            cluster.exec(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&cluster.dir),
                "chown",
            )?;
        }
        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(&cluster.dir).args([
            "--auth=trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ]);
        cluster.exec(&mut initdb, "initdb")?;
        cluster.try_start_server()?;
        Ok(cluster)
    }

    /// A `Command` for one of the server programs, as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Runs `cmd` to completion, its output captured into the error.
    fn exec(&self, cmd: &mut Command, what: &str) -> Result<(), String> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed ({}): {}{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            ))
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!("\nserver log:\n{tail}")
        }
    }

    fn try_start_server(&self) -> Result<(), String> {
        self.pg_ctl_start()?;
        pg_connect(&self.url(), Duration::from_secs(30))
            .map(drop)
            .map_err(|e| {
                format!(
                    "PostgreSQL did not accept connections: {e}{}",
                    self.log_tail()
                )
            })
    }

    /// `pg_ctl start -w`: returns once the server is ready.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(&self.dir)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            // pg_ctl leaves the server running with our stdout: do not hold the pipe.
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = start
            .status()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !status.success() {
            return Err(format!("pg_ctl start failed ({status}){}", self.log_tail()));
        }
        Ok(())
    }

    /// Turns TLS on with `certs`' server certificate and replaces the TCP rules of
    /// `pg_hba.conf` with `hba` (e.g. `hostssl all all 127.0.0.1/32 trust`), then
    /// restarts the server. Connections over the socket stay trusted.
    pub fn enable_tls(&self, certs: &TestCerts, hba: &str) {
        let key = self.dir.join("server.key");
        std::fs::copy(&certs.cert, self.dir.join("server.crt")).unwrap();
        std::fs::copy(&certs.key, &key).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        if self.as_postgres {
            for f in ["server.crt", "server.key"] {
                self.exec(
                    Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(self.dir.join(f)),
                    "chown",
                )
                .unwrap();
            }
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(
            &mut conf,
            b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .unwrap();
        std::fs::write(
            self.dir.join("pg_hba.conf"),
            format!("local all all trust\n{hba}\n"),
        )
        .unwrap();
        self.pg_ctl_stop("fast")
            .and_then(|()| self.pg_ctl_start())
            .unwrap_or_else(|e| panic!("restarting PostgreSQL with TLS: {e}"));
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), String> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.dir)
            .args(["-w", "-t", "60", "-m", mode, "stop"]);
        self.exec(&mut stop, "pg_ctl stop")
    }

    /// The server's URL, without a database: `postgres://postgres@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding its data, socket and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the server programs it uses.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Stops the server (`pg_ctl stop -m fast`: clients are disconnected, the server
    /// checkpoints and exits); the data stays.
    pub fn stop(&self) {
        self.pg_ctl_stop("fast")
            .unwrap_or_else(|e| panic!("stopping PostgreSQL: {e}"));
    }

    /// Starts it again after [`PgCluster::stop`], on the same port and data; returns once
    /// it accepts connections.
    pub fn start(&self) {
        self.try_start_server()
            .unwrap_or_else(|e| panic!("starting PostgreSQL again: {e}"));
    }

    /// Stops (fast) and starts again.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }
}

/// A throwaway certificate authority and a server certificate it signed, made with
/// the `openssl` program (Debian's PostgreSQL packages depend on it).
pub struct TestCerts {
    /// The authority's certificate (PEM): what `sslrootcert` names.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM, unencrypted).
    pub key: PathBuf,
}

impl TestCerts {
    /// Makes them in `dir`; the server certificate is valid for `san`
    /// (`subjectAltName`, e.g. `DNS:localhost`).
    pub fn make(dir: &Path, san: &str) -> TestCerts {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .expect(
                    "the openssl program is needed for the TLS tests (apt-get install openssl)",
                );
            assert!(
                out.status.success(),
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-new", "-days", "3", "-keyout", "ca.key"];
        ca.extend(ec);
        ca.extend([
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Stepwatch test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&ca);
        let mut csr = vec!["req", "-new", "-keyout", "server.key"];
        csr.extend(ec);
        csr.extend(["-out", "server.csr", "-subj", "/CN=stepwatch-test-server"]);
        openssl(&csr);
        std::fs::write(
            dir.join("server.ext"),
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ]);
        TestCerts {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        }
    }

    /// A self-signed server certificate, its own root, with the subject `CN=localhost`
    /// and the subjectAltName `san` if given: the PostgreSQL manual's quick setup
    /// (`openssl req -x509`, which makes it a CA certificate, and with no `san` at all).
    pub fn self_signed(dir: &Path, san: Option<&str>) -> TestCerts {
        std::fs::create_dir_all(dir).unwrap();
        let mut req = Command::new("openssl");
        req.args([
            "req", "-new", "-x509", "-days", "3", "-nodes", "-newkey", "ec",
        ])
        .args([
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-subj",
            "/CN=localhost",
        ]);
        if let Some(san) = san {
            req.args(["-addext", &format!("subjectAltName={san}")]);
        }
        let out = req
            .args(["-keyout", "server.key", "-out", "server.crt"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("the openssl program is needed for the TLS tests (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl req -x509: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestCerts {
            ca: dir.join("server.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        }
    }
}

/// Stops and deletes the clusters that [`PgCluster`]s of processes no longer running
/// left behind (a test run interrupted with Ctrl-C cannot drop its cluster); returns how
/// many.
pub fn remove_stale_clusters(bin: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let as_postgres = running_as_root();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("stepwatch-pg-") else {
            continue;
        };
        // stepwatch-pg-{tag}-{pid}-{n}
        let mut parts = rest.rsplit('-');
        let (Some(_n), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let stale = PgCluster {
            dir: entry.path(),
            bin: bin.to_path_buf(),
            port: 0,
            as_postgres,
        };
        drop(stale); // stops it (immediate) if it runs, and deletes the directory
        removed += 1;
    }
    removed
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.dir.join("postmaster.pid").exists() {
            let _ = self.pg_ctl_stop("immediate");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP load balancer for tests: listens on a free loopback port and forwards each
/// new connection to the first of its backends that accepts one, starting at the next
/// backend in round-robin order, so connections alternate between healthy backends and
/// skip dead ones. It knows nothing of HTTP. Stops accepting when dropped.
pub struct FailoverProxy {
    pub port: u16,
    pub url: String,
    stop: Arc<AtomicBool>,
    per_backend: Arc<Vec<AtomicU64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FailoverProxy {
    /// A proxy in front of `relays`.
    pub fn in_front_of(relays: &[&Relay]) -> FailoverProxy {
        let backends: Vec<SocketAddr> = relays
            .iter()
            .map(|r| SocketAddr::from(([127, 0, 0, 1], r.port)))
            .collect();
        FailoverProxy::start(&backends)
    }

    /// A proxy in front of `backends`.
    pub fn start(backends: &[SocketAddr]) -> FailoverProxy {
        assert!(!backends.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let per_backend: Arc<Vec<AtomicU64>> =
            Arc::new(backends.iter().map(|_| AtomicU64::new(0)).collect());
        let backends = backends.to_vec();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            let per_backend = per_backend.clone();
            move || {
                let next = AtomicUsize::new(0);
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    let backend = (0..backends.len()).find_map(|k| {
                        let i = (first + k) % backends.len();
                        TcpStream::connect_timeout(&backends[i], Duration::from_secs(1))
                            .ok()
                            .map(|s| (i, s))
                    });
                    // None accepts: dropping the client's socket makes it retry.
                    let Some((i, backend)) = backend else {
                        continue;
                    };
                    per_backend[i].fetch_add(1, Ordering::Relaxed);
                    let _ = client.set_nodelay(true);
                    let _ = backend.set_nodelay(true);
                    pipe(client, backend);
                }
            }
        });
        FailoverProxy {
            port,
            url: format!("http://127.0.0.1:{port}"),
            stop,
            per_backend,
            thread: Some(thread),
        }
    }

    /// How many connections went to each backend so far.
    pub fn connections(&self) -> Vec<u64> {
        self.per_backend
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

/// Copies bytes both ways until either side closes, then closes both.
fn pipe(client: TcpStream, backend: TcpStream) {
    let (Ok(client2), Ok(backend2)) = (client.try_clone(), backend.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let (mut from, mut to) = (client2, backend2);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let (mut from, mut to) = (backend, client);
        let _ = std::io::copy(&mut from, &mut to);
        // The backend is gone or done: end the client's connection both ways, which
        // also ends the other direction's copy.
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    });
}

impl Drop for FailoverProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
