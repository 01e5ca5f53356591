//! `browser`: emit → pixel latency in Chromium, opening a long run, and frame times
//! while points stream in.

use super::load::{ingest_run, ndjson_batch, now_ms};
use super::relay::BenchRelay;
use super::table::{percentile, row};
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// Records, in the page, when the header's step counter shows each value.
const OBSERVE_STEPS: &str = r#"
window.__seen = {};
const el = document.querySelector('[data-testid=step]');
new MutationObserver(() => { window.__seen[el.textContent] = Date.now(); })
  .observe(el, { childList: true, characterData: true, subtree: true });
return true;
"#;

fn post_steps(
    relay: &BenchRelay,
    run: &str,
    from: u64,
    n: u64,
    gap: Duration,
) -> Result<Vec<(u64, f64)>> {
    let agent = ureq::AgentBuilder::new().build();
    let url = format!("{}/api/runs/{run}/events", relay.url);
    let mut sent = Vec::new();
    for step in from..from + n {
        let t = now_ms();
        agent.post(&url).send_string(&format!(
            "{{\"event\":\"batch_end\",\"step\":{step},\"loss\":{}}}",
            1.0 / step as f64
        ))?;
        sent.push((step, t));
        std::thread::sleep(gap);
    }
    Ok(sent)
}

fn latencies(browser: &stepwatch_e2e::Browser, sent: &[(u64, f64)]) -> Vec<f64> {
    std::thread::sleep(Duration::from_millis(300));
    let seen = browser.eval("return window.__seen;");
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(step, t)| seen[step.to_string()].as_f64().map(|o| o - t))
        .collect();
    lat.sort_by(f64::total_cmp);
    lat
}

/// emit (HTTP POST) → the new value rendered in Chromium's DOM, with the chart redrawn in
/// the same animation frame; on a fresh run and on one that already holds 100,000 events.
pub fn browser_latency(relay: &BenchRelay) -> Result<()> {
    let browser = stepwatch_e2e::Browser::start();
    for (run, history) in [("bench-live-fresh", 0u64), ("bench-live-long", 100_000)] {
        let mut done = 0;
        while done < history {
            let body = ndjson_batch(done as usize, 1000);
            ureq::post(&format!("{}/api/runs/{run}/events", relay.url))
                .set("Content-Type", "application/x-ndjson")
                .send_string(&body)?;
            done += 1000;
        }
        if history == 0 {
            ureq::post(&format!("{}/api/runs/{run}/events", relay.url))
                .send_string("{\"event\":\"training_start\"}")?;
        }
        browser.goto(&format!("{}/#/runs/{run}", relay.url));
        browser.wait_for("run page", Duration::from_secs(60), "return document.querySelector('.conn.live') !== null && document.querySelector('[data-testid=step]') !== null;");
        browser.eval(OBSERVE_STEPS);
        let sent = post_steps(relay, run, history + 10, 300, Duration::from_millis(25))?;
        let lat = latencies(&browser, &sent);
        if lat.len() < sent.len() / 2 {
            bail!("the page showed only {} of {} steps", lat.len(), sent.len());
        }
        row(
            &format!("emit → browser DOM, p50 / p99 ({} stored)", history),
            format!(
                "{:.1} / {:.1} ms",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            ),
            "p99 < 50 ms",
        );
    }
    Ok(())
}

/// Opening a run page: until its loss chart is drawn with every stored point.
pub fn open_long_run(relay: &BenchRelay, run: &str) -> Result<()> {
    let browser = stepwatch_e2e::Browser::start();
    let state: serde_json::Value = ureq::get(&format!("{}/api/runs/{run}", relay.url))
        .call()?
        .into_json()?;
    let n = state["batch_count"].as_u64().unwrap_or(0);
    let t0 = Instant::now();
    browser.goto(&format!("{}/#/runs/{run}", relay.url));
    // Timed in the page, from its navigation start: the first animation frame in which
    // the loss chart shows points and the step counter the run's step.
    let drawn = format!(
        "const c = document.querySelector('[data-testid=canvas-loss]'); return c && c.dataset.points > 0 && document.querySelector('[data-testid=step]')?.textContent === '{}';",
        state["step"]
    );
    browser.eval(&format!(
        "window.__drawn = null; const ok = () => {{ {drawn} }}; const check = () => {{ if (ok()) window.__drawn = performance.now(); else requestAnimationFrame(check); }}; check(); return 1;"
    ));
    let at = browser.wait_for(
        "chart drawn",
        Duration::from_secs(300),
        "return window.__drawn;",
    );
    let wall = t0.elapsed().as_secs_f64() * 1000.0;
    row(
        &format!("open a run of {n} steps, chart drawn"),
        format!("{:.0} ms", at.as_f64().unwrap_or(f64::NAN)),
        "< 300 ms, any length",
    );
    // Where the time went: when each response the chart waits for had arrived.
    let phases = browser.eval(&format!(
        "const e = performance.getEntriesByType('resource'); const end = (f) => {{ const x = e.find(f); return x ? Math.round(x.responseEnd) : null; }}; const nav = performance.getEntriesByType('navigation')[0]; return [Math.round(nav.responseEnd), end(x => x.name.endsWith('.wasm')), end(x => x.name.endsWith('/api/runs/{run}')), end(x => x.name.includes('/series?metric=loss'))];"
    ));
    let p = |i: usize| phases[i].as_f64().map_or("–".into(), |v| format!("{v:.0}"));
    row(
        "  … page / wasm / state / loss series arrived at (ms)",
        format!("{} / {} / {} / {}", p(0), p(1), p(2), p(3)),
        &format!("(wall clock with WebDriver: {wall:.0} ms)"),
    );
    Ok(())
}

/// Frame intervals on an open run page while 10,000 points/s stream in.
pub fn frame_time(relay: &BenchRelay) -> Result<()> {
    let run = "bench-frames";
    ingest_run(relay, run, 1000)?;
    let browser = stepwatch_e2e::Browser::start();
    browser.goto(&format!("{}/#/runs/{run}", relay.url));
    browser.wait_for("page", Duration::from_secs(60), "return document.querySelector('.conn.live') !== null && +document.querySelector('[data-testid=canvas-loss]')?.dataset.points > 0;");
    browser.eval("window.__frames = []; let last = performance.now(); const tick = (t) => { window.__frames.push(t - last); last = t; if (window.__frames.length < 100000) requestAnimationFrame(tick); }; requestAnimationFrame(tick); return 1;");
    let t0 = Instant::now();
    let mut sent = 1000;
    let agent = ureq::AgentBuilder::new().build();
    while t0.elapsed() < Duration::from_secs(5) {
        let tick = Instant::now();
        agent
            .post(&format!("{}/api/runs/{run}/events", relay.url))
            .set("Content-Type", "application/x-ndjson")
            .send_string(&ndjson_batch(sent, 100))?;
        sent += 100;
        if let Some(rest) = Duration::from_millis(10).checked_sub(tick.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let rate = (sent - 1000) as f64 / t0.elapsed().as_secs_f64();
    let frames: Vec<f64> =
        serde_json::from_value(browser.eval("return window.__frames.slice(5);"))?;
    let mut sorted = frames.clone();
    sorted.sort_by(f64::total_cmp);
    let fps = frames.len() as f64 / (frames.iter().sum::<f64>() / 1000.0);
    row(
        &format!("frames while {:.0} points/s stream in", rate),
        format!("{fps:.0} fps, p99 {:.1} ms", percentile(&sorted, 0.99)),
        "60 frames/s at 10,000 points/s",
    );
    Ok(())
}
