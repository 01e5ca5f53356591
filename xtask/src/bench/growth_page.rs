//! The runs page of `growth` in headless Chromium (it needs `dist/`): how long until the
//! list shows every run after opening it, until a name filter's rows are shown, until
//! clearing it shows them all again, and the longest frame while it sits open.

use anyhow::{bail, Result};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Run in every page before its own scripts: each animation frame, the frame's length
/// and, when they change, the table's row count and the run counter (with the time
/// they were seen).
const WATCH: &str = r#"
window.__frames = []; window.__rows = [];
let last = 0, lastRows = -1, lastCount = '';
const tick = (t) => {
  if (last) window.__frames.push([t, t - last]);
  last = t;
  const body = document.querySelector('[data-testid=runs-table] tbody');
  const rows = body ? body.rows.length : 0;
  const c = document.querySelector('[data-testid=run-count]');
  const count = c ? c.textContent : '';
  if (rows !== lastRows || count !== lastCount) {
    // The page's clock now, not the frame's start (which can precede a script's change).
    window.__rows.push([performance.now(), rows, count]); lastRows = rows; lastCount = count;
  }
  requestAnimationFrame(tick);
};
requestAnimationFrame(tick);
"#;

/// A page is settled once its rows have not changed for this long.
const SETTLED: f64 = 1000.0;

/// What the page measured, ms.
pub struct PageTimes {
    pub shown_ms: f64,
    pub rows: u64,
    pub filter_ms: f64,
    pub clear_ms: f64,
    pub worst_frame_ms: f64,
}

impl std::fmt::Display for PageTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} ms ({} rows) / {:.0} / {:.0} ms, frames ≤ {:.0} ms",
            self.shown_ms, self.rows, self.filter_ms, self.clear_ms, self.worst_frame_ms
        )
    }
}

pub struct RunsPage {
    browser: stepwatch_e2e::Browser,
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

impl RunsPage {
    /// Chromium with the watcher installed; an error says why the page cannot be measured.
    pub fn open(dist: &Path) -> Result<RunsPage> {
        if !dist.join("index.html").exists() {
            bail!("no built dashboard in {}", dist.display());
        }
        if !on_path("chromedriver") || !Path::new("/usr/bin/chromium").exists() {
            bail!("no chromium / chromedriver");
        }
        let browser = stepwatch_e2e::Browser::start();
        browser.on_new_document(WATCH);
        Ok(RunsPage { browser })
    }

    /// Waits until the rows changed after `since` (the page's clock), then stopped
    /// changing; the newest change `[t, rows, count]`.
    fn settle(&self, since: f64) -> Result<Value> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(300) {
            // A page busy for longer than the script timeout fails the call: try again.
            let v = self
                .browser
                .try_eval("return [performance.now(), window.__rows[window.__rows.length - 1]];");
            if let Some(v) = v {
                let (now, last) = (v[0].as_f64().unwrap_or(0.0), &v[1]);
                let t = last[0].as_f64().unwrap_or(now);
                if last[1].as_u64().is_some_and(|r| r > 0) && t >= since && now - t > SETTLED {
                    return Ok(last.clone());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the runs page never settled")
    }

    /// Runs a script, again while the page is too busy to answer.
    fn eval(&self, script: &str) -> Result<Value> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(300) {
            if let Some(v) = self.browser.try_eval(script) {
                return Ok(v);
            }
        }
        bail!("the runs page stayed too busy to run a script")
    }

    /// The first frame at or after `since` that showed the rows the page settled on.
    fn first_settled(&self, since: f64) -> Result<(f64, u64)> {
        let last = self.settle(since)?;
        let rows: Vec<Value> = serde_json::from_value(self.eval("return window.__rows;")?)?;
        let t = rows
            .iter()
            .filter(|r| r[0].as_f64().unwrap_or(0.0) >= since)
            .find(|r| r[1] == last[1] && r[2] == last[2])
            .and_then(|r| r[0].as_f64())
            .unwrap_or(f64::NAN);
        Ok((t - since, last[1].as_u64().unwrap_or(0)))
    }

    /// Types `text` into the name filter; the page's clock when it did.
    fn filter(&self, text: &str) -> Result<f64> {
        let text = serde_json::to_string(text).unwrap_or_default();
        let script = format!(
            "const f = document.querySelector('[data-testid=filter]'); const t = performance.now(); \
             f.value = {text}; f.dispatchEvent(new Event('input', {{bubbles: true}})); return t;"
        );
        Ok(self.eval(&script)?.as_f64().unwrap_or(0.0))
    }

    /// Opens the runs page of the relay at `url`, which holds `runs` runs.
    pub fn measure(&self, url: &str, runs: usize) -> Result<PageTimes> {
        self.browser.goto(&format!("{url}/#/"));
        // From navigation start until the list shows every run, its rows drawn.
        let count = runs.to_string();
        let shown = loop {
            let (t, rows) = self.first_settled(0.0)?;
            let last = self.settle(0.0)?;
            if last[2].as_str() == Some(count.as_str()) {
                break (t, rows);
            }
        };
        let idle_from = self
            .eval("return performance.now();")?
            .as_f64()
            .unwrap_or(0.0);
        std::thread::sleep(Duration::from_secs(3));
        let frames: Vec<Value> = serde_json::from_value(self.eval("return window.__frames;")?)?;
        let worst_frame_ms = frames
            .iter()
            .filter(|f| f[0].as_f64().unwrap_or(0.0) > idle_from)
            .filter_map(|f| f[1].as_f64())
            .fold(0.0, f64::max);
        let since = self.filter("sweep-12")?;
        let (filter_ms, _) = self.first_settled(since)?;
        let since = self.filter("")?;
        let (clear_ms, _) = self.first_settled(since)?;
        Ok(PageTimes {
            shown_ms: shown.0,
            rows: shown.1,
            filter_ms,
            clear_ms,
            worst_frame_ms,
        })
    }
}
