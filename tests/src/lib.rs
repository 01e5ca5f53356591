//! # stepwatch-e2e — helpers for the end-to-end tests
//!
//! Everything here drives real parts: [`Relay`] spawns the `stepwatch` binary on a free
//! port with its own data dir, [`sse_collect`] reads a real SSE stream, [`Browser`] drives
//! headless Chromium through chromedriver's WebDriver API, and [`python_trainer`] runs a
//! real Python process using the SDK.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    child: Option<Child>,
    extra: Vec<String>,
    /// Where the relay's stderr (its logs) goes; discarded when `None`.
    log: Option<PathBuf>,
}

impl Relay {
    /// Starts a relay on a free port over `data_dir`, with extra CLI arguments.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Relay {
        Relay::launch(data_dir, extra, None)
    }

    /// As [`Relay::start`], with the relay's logs appended to `log`.
    pub fn start_logged(data_dir: &Path, extra: &[&str], log: &Path) -> Relay {
        Relay::launch(data_dir, extra, Some(log.to_path_buf()))
    }

    fn launch(data_dir: &Path, extra: &[&str], log: Option<PathBuf>) -> Relay {
        let port = free_port();
        let mut r = Relay {
            port,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
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
        self.child = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ureq::get(&format!("{}/healthz", self.url))
                .timeout(Duration::from_millis(500))
                .call()
                .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        panic!("relay did not come up on {}", self.url);
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

    /// Kills and starts again on the same port and data dir.
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

    /// Opens a URL.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
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
