//! A long run opens from the relay's history endpoints, not by replaying every event:
//! the chart is drawn from the series overview, zooming fetches the raw points of the
//! range, and events after the page opened still stream in.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::time::{Duration, Instant};
use stepwatch_e2e::{repo, Browser, Relay, TempDir};

const WAIT: Duration = Duration::from_secs(60);
const STEPS: u64 = 300_000;
const SPIKE: u64 = 150_000;

/// The loss at step `s`: a gentle saw-tooth around 1, one spike.
fn loss(s: u64) -> f64 {
    if s == SPIKE {
        1000.0
    } else {
        1.0 + (s % 7) as f64 * 0.01
    }
}

/// Posts steps 1..=STEPS as batch_end events in NDJSON batches of 1,000.
fn post_long_run(relay: &Relay, run: &str) {
    let mut body = String::new();
    for s in 1..=STEPS {
        body.push_str(&format!(
            "{{\"event\":\"batch_end\",\"batch_idx\":{s},\"loss\":{},\"lr\":0.001,\"time\":{}}}\n",
            loss(s),
            1_700_000_000 + s
        ));
        if s % 1000 == 0 {
            let (status, v) = relay.post(run, &body, "application/x-ndjson");
            assert_eq!(status, 200, "{v}");
            body.clear();
        }
    }
}

fn attr(b: &Browser, attr: &str) -> f64 {
    b.eval(&format!(
        "return +document.querySelector('[data-testid=canvas-loss]')?.dataset.{attr};"
    ))
    .as_f64()
    .unwrap_or(-1.0)
}

/// Presses a key on the loss chart.
fn key(b: &Browser, k: &str, times: usize) {
    b.eval(&format!(
        "const c = document.querySelector('[data-testid=canvas-loss]'); c.focus();
         for (let i = 0; i < {times}; i++) c.dispatchEvent(new KeyboardEvent('keydown', {{key: '{k}', bubbles: true}}));
         return 1;"
    ));
}

/// The steps in `x0..=x1` (every step of the run is stored).
fn steps_in(x0: f64, x1: f64) -> f64 {
    (x1.floor().min(STEPS as f64) - x0.ceil().max(1.0) + 1.0).max(0.0)
}

/// Opens the run page and checks it is drawn from the series overview and streams only
/// what comes after the loaded state; returns the overview's number of points.
fn open_from_history(b: &Browser, relay: &Relay, state: &Value) -> f64 {
    let t0 = Instant::now();
    b.goto(&format!("{}/#/runs/long", relay.url));
    b.wait_for(
        "loss chart drawn",
        WAIT,
        &format!(
            "return +document.querySelector('[data-testid=canvas-loss]')?.dataset.points > 0
                 && document.querySelector('[data-testid=step]')?.textContent === '{STEPS}';"
        ),
    );
    let opened = t0.elapsed();
    // Drawn from the series overview (at most 4 points per bucket), not a replay.
    let overview = attr(b, "points");
    assert!(
        overview > 500.0 && overview < 10_000.0,
        "overview has {overview} points"
    );
    assert_eq!(
        b.eval("return document.querySelector('[data-testid=event-count]').textContent;"),
        STEPS.to_string()
    );
    assert!(attr(b, "y1") > 1000.0, "the spike is not in the overview");
    let series_requests = b.eval(
        "return performance.getEntriesByType('resource').filter(r => r.name.includes('/series?metric=loss')).length;",
    );
    assert_eq!(series_requests, 1);
    // index.html asked for the state and the loss overview before the dashboard ran, and
    // the dashboard took both answers instead of asking again.
    assert_eq!(
        b.eval("return window.__sw_prefetch && Object.keys(window.__sw_prefetch).length;"),
        0
    );
    let state_requests = b.eval(
        "return performance.getEntriesByType('resource').filter(r => r.name.endsWith('/api/runs/long')).length;",
    );
    assert_eq!(state_requests, 1);
    let streams = b.wait_for(
        "stream",
        WAIT,
        "return window.__streams.length && window.__streams;",
    );
    assert_eq!(
        streams,
        serde_json::json!([format!("/api/runs/long/stream?after={}", state["last_id"])]),
        "the stream must start after the loaded state, not replay the run"
    );
    let lr = b.eval("return +document.querySelector('[data-testid=canvas-lr]')?.dataset.points;");
    assert!(lr.as_f64().unwrap() > 0.0, "no lr chart: {lr}");
    eprintln!(
        "opened a {STEPS}-step run with its loss chart in {:.0} ms (WebDriver polling included)",
        opened.as_secs_f64() * 1000.0
    );
    overview
}

/// Live: an event posted now appears once, on the header and the chart.
fn stays_live(b: &Browser, relay: &Relay, overview: f64) {
    b.wait_for(
        "live",
        WAIT,
        "return document.querySelector('[data-testid=conn]')?.dataset.state === 'live';",
    );
    let (status, v) = relay.post(
        "long",
        &format!(
            "{{\"event\":\"batch_end\",\"batch_idx\":0,\"loss\":0.5,\"time\":{}}}",
            1_700_000_000 + STEPS + 1
        ),
        "application/json",
    );
    assert_eq!(status, 200, "{v}");
    b.wait_for(
        "live step",
        WAIT,
        &format!(
            "return document.querySelector('[data-testid=step]')?.textContent === '{}';",
            STEPS + 1
        ),
    );
    b.wait_for(
        "live point",
        WAIT,
        &format!(
            "return +document.querySelector('[data-testid=canvas-loss]').dataset.points === {};",
            overview + 1.0
        ),
    );
}

/// Zooms in around the middle with the keyboard (each + halves the range): the chart
/// asks for the range and draws every raw point of it, the spike included.
fn zooms_to_raw_points(b: &Browser) {
    key(b, "+", 14);
    b.wait_for(
        "zoom in the URL",
        WAIT,
        "return location.hash.includes('zoom=');",
    );
    let (x0, x1) = (attr(b, "x0"), attr(b, "x1"));
    assert!(
        x0 < SPIKE as f64 && x1 > SPIKE as f64 && x1 - x0 < 100.0,
        "{x0}..{x1}"
    );
    let want = steps_in(x0, x1);
    b.wait_for(
        "raw points of the zoomed range",
        WAIT,
        &format!(
            "return +document.querySelector('[data-testid=canvas-loss]').dataset.points === {want};"
        ),
    );
    assert!(attr(b, "y1") > 1000.0, "the spike is missing when zoomed");
    let zoom_requests = b.eval(
        "return performance.getEntriesByType('resource').filter(r => r.name.includes('/series?metric=loss') && r.name.includes('from=')).length;",
    );
    assert_eq!(
        zoom_requests, 1,
        "fourteen key presses in a row make one request"
    );
    // The zoomed range, shared as a link, opens zoomed.
    let hash = b.eval("return location.hash;");
    b.eval("location.reload(); return 1;");
    b.wait_for(
        "zoomed after reload",
        WAIT,
        &format!(
            "return location.hash === {hash} && +document.querySelector('[data-testid=canvas-loss]')?.dataset.points === {want};"
        ),
    );
    b.screenshot(&repo().join("target/screenshots/history-zoomed.png"));
}

#[test]
fn a_long_run_opens_from_history_zooms_to_raw_points_and_stays_live() {
    let dir = TempDir::new("history");
    let relay = Relay::with_dashboard(&dir.0);
    post_long_run(&relay, "long");
    let state = relay.get_ok("/api/runs/long");
    assert_eq!(state["step"], STEPS);

    let b = Browser::start();
    // Record the streams the page opens.
    b.on_new_document(
        "window.__streams = []; const ES = window.EventSource;
         window.EventSource = function (url, opts) { window.__streams.push(String(url)); return new ES(url, opts); };
         window.EventSource.CLOSED = ES.CLOSED;",
    );
    let overview = open_from_history(&b, &relay, &state);
    stays_live(&b, &relay, overview);
    zooms_to_raw_points(&b);

    // 0 resets to the overview.
    key(&b, "0", 1);
    b.wait_for(
        "overview again",
        WAIT,
        "const n = +document.querySelector('[data-testid=canvas-loss]').dataset.points;
         return !location.hash.includes('zoom=') && n > 500 && n < 10000;",
    );
}

#[test]
fn a_run_the_relay_does_not_know_yet_appears_live() {
    let dir = TempDir::new("history-new");
    let relay = Relay::with_dashboard(&dir.0);
    let b = Browser::start();
    b.goto(&format!("{}/#/runs/later", relay.url));
    b.wait_for(
        "not found",
        WAIT,
        "return document.querySelector('[data-testid=conn]')?.dataset.state === 'live';",
    );
    let body: String = (1..=30)
        .map(|s| format!("{{\"event\":\"batch_end\",\"batch_idx\":{s},\"loss\":{s}}}\n"))
        .collect();
    let (status, _) = relay.post("later", &body, "application/x-ndjson");
    assert_eq!(status, 200);
    b.wait_for(
        "streamed from the start",
        WAIT,
        "return +document.querySelector('[data-testid=canvas-loss]')?.dataset.points === 30
                && document.querySelector('[data-testid=step]')?.textContent === '30';",
    );
}
