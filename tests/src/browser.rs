//! Headless Chromium through chromedriver's WebDriver API.

use crate::relay::{free_port, wait_until, TempDir};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
        match self.try_cmd(method, path, body) {
            Ok(v) => v,
            Err(why) => panic!("{why}"),
        }
    }

    fn try_cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = ureq::request(method, &url);
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => r
                .into_json::<Value>()
                .map(|v| v["value"].clone())
                .map_err(|e| format!("webdriver {path}: {e}")),
            Err(ureq::Error::Status(s, r)) => Err(format!(
                "webdriver {path}: {s} {}",
                r.into_string().unwrap_or_default()
            )),
            Err(e) => Err(format!("webdriver {path}: {e}")),
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

    /// As [`Browser::eval`], `None` when the call fails (a page too busy to answer
    /// within the script timeout, say).
    pub fn try_eval(&self, script: &str) -> Option<Value> {
        self.try_cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .ok()
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

    /// Sets the `<select>` of `data-testid=testid` to `value` and tells the page, as a
    /// person choosing would (a bubbling `change` event).
    pub fn choose(&self, testid: &str, value: &str) {
        let value = serde_json::to_string(value).unwrap_or_default();
        self.eval(&format!(
            "const s = document.querySelector('[data-testid={testid}]'); s.value = {value}; \
             s.dispatchEvent(new Event('change', {{bubbles: true}})); return 1;"
        ));
    }

    /// Polls a script until it returns something truthy, which is returned.
    /// On timeout the panic says what the page showed (its address and first text), so
    /// a failure seen only in CI can be read.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let v = self.eval(script);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if std::time::Instant::now() >= deadline {
                let page = self.try_eval(
                    "return location.href + ' | ' + (document.body ? document.body.innerText.slice(0, 600) : '(no body)');",
                );
                panic!("timed out waiting for {what}; the page showed: {page:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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
