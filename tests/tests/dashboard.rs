//! The full dashboard (issue 3) in headless Chromium against a real relay fed by real
//! Python trainers: every panel shows what the trainer sent; charts hover, zoom, switch
//! scale and axis, and keep their settings in the URL; runs list filters and sorts;
//! compare overlays runs and diffs their configs.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::time::Duration;
use stepwatch_e2e::{python_trainer, repo, Browser, Relay, TempDir};

const WAIT: Duration = Duration::from_secs(30);

const EVERYTHING: &str = r#"
import stepwatch
from stepwatch import *
emit_training_start(total_epochs=2, total_batches=20, config={"lr": 0.01, "optimizer": "sgd", "seed": 1}, name="panels")
step = 0
for epoch in (1, 2):
    emit_epoch_start(epoch=epoch, total_epochs=2)
    for b in range(20):
        step += 1
        emit_batch_end(batch_idx=b, loss=3.0 / step, lr=0.01, epoch=epoch, metrics={"train/acc": step / 40})
    emit_epoch_end(epoch=epoch, metrics={"val/loss": 2.0 / epoch, "val/acc": 0.5 + epoch / 10})
    emit_metric_update(name="val/bleu", value=10.0 * epoch, step=step)
    emit_checkpoint_saved(checkpoint_path=f"/ckpt/run/epoch{epoch}.pt", epoch=epoch, step=step,
                          size_bytes=1500000000 * epoch, metrics={"val_loss": 2.0 / epoch})
emit_log("data loader ready", level="info")
emit_log("grad norm clipped at 5.0", level="warning")
emit_log("CUDA error: device-side assert", level="error")
stepwatch.training_emitter.emit("system", cpu_percent=42.0, mem_used_bytes=8000000000, mem_total_bytes=64000000000,
    gpus=[{"index": 0, "name": "NVIDIA H200", "util_percent": 87.0, "mem_used_bytes": 100000000000,
           "mem_total_bytes": 150000000000, "temperature_c": 66.0, "power_w": 512.0}])
try:
    raise RuntimeError("loss exploded")
except RuntimeError as e:
    emit_error_occurred(e)
emit_batch_end(batch_idx=20, loss=float("nan"), lr=0.01, epoch=2)
assert stepwatch.flush(10)
"#;

fn text(b: &Browser, sel: &str) -> String {
    b.eval(&format!(
        "const e = document.querySelector('{sel}'); return e ? e.textContent : '';"
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

fn num_attr(b: &Browser, sel: &str, attr: &str) -> f64 {
    b.eval(&format!(
        "const e = document.querySelector('{sel}'); return e ? +e.dataset.{attr} : -1;"
    ))
    .as_f64()
    .unwrap_or(-1.0)
}

/// Dispatches a mouse event at an x offset inside the loss canvas.
fn mouse(b: &Browser, kind: &str, frac: f64) {
    b.eval(&format!(
        "const c = document.querySelector('[data-testid=\"canvas-loss\"]'); const r = c.getBoundingClientRect();
         const x = r.left + 70 + (r.width - 100) * {frac}; const y = r.top + r.height / 2;
         c.dispatchEvent(new MouseEvent('{kind}', {{clientX: x, clientY: y, bubbles: true}})); return 1;"
    ));
}

/// The header, the loss chart (with its NaN), the error banner and one chart per metric.
fn assert_header_and_charts(b: &Browser) {
    // Header.
    assert_eq!(text(b, "[data-testid=epoch]"), "2/2");
    assert_eq!(text(b, "[data-testid=loss]"), "NaN");
    assert!(
        b.eval("return document.querySelector('[data-testid=loss]').classList.contains('alert');")
            == Value::Bool(true)
    );
    assert!(
        !text(b, "[data-testid=nonfinite-banner]").is_empty(),
        "NaN not flagged in the header"
    );
    assert_eq!(
        num_attr(b, "[data-testid=canvas-loss]", "nonfinite"),
        1.0,
        "NaN not marked on the chart"
    );
    assert_eq!(num_attr(b, "[data-testid=canvas-loss]", "points"), 40.0);
    // Error banner with expandable traceback.
    assert_eq!(
        text(b, "[data-testid=error-message]"),
        "RuntimeError: loss exploded"
    );
    assert!(text(b, "[data-testid=traceback] pre").contains("Traceback (most recent call last)"));
    // One chart per metric, grouped by prefix.
    for m in ["lr", "train/acc", "val/loss", "val/acc", "val/bleu"] {
        assert!(
            num_attr(b, &format!("[data-testid=\"canvas-{m}\"]"), "points") > 0.0,
            "no chart for {m}"
        );
    }
    let groups = b.eval("return [...document.querySelectorAll('[data-testid=metric-group]')].map(e => e.textContent);");
    assert_eq!(groups, serde_json::json!(["train/", "val/"]));
}

/// Checkpoints, config, where the run started, and the system panel.
fn assert_side_panels(b: &Browser) {
    // Checkpoints: newest first, best marked, size readable.
    let rows = b.eval("return [...document.querySelectorAll('[data-testid=checkpoint]')].map(e => e.textContent);");
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0].contains("epoch2.pt") && rows[0].contains("3.0 GB"),
        "{rows:?}"
    );
    assert!(
        text(
            b,
            "[data-testid=checkpoint]:first-child [data-testid=best-checkpoint]"
        )
        .len()
            > 1
    );
    // Config, and where the run started (recorded by the SDK).
    assert!(text(b, "[data-testid=config]").contains("sgd"));
    let meta = text(b, "[data-testid=run-meta]");
    assert!(meta.contains("python") && meta.contains("host"), "{meta}");
    // System panel with the GPU sample.
    assert!(text(b, "[data-testid=gpu]").contains("H200"));
    assert_eq!(text(b, "[data-testid=gpu0-util] .sys-value"), "87%");
    assert_eq!(text(b, "[data-testid=gpu0-temp] .sys-value"), "66 °C");
    assert_eq!(text(b, "[data-testid=sys-cpu] .sys-value"), "42%");
}

/// Logs: the tail, the level filter and the search.
fn assert_logs(b: &Browser) {
    // Logs: tail, level filter, search.
    let count = |b: &Browser| {
        b.eval("return document.querySelectorAll('[data-testid=log-line]').length;")
            .as_u64()
            .unwrap()
    };
    assert_eq!(count(b), 3);
    b.eval("const s = document.querySelector('[data-testid=log-level]'); s.value = '3'; s.dispatchEvent(new Event('change')); return 1;");
    b.wait_for(
        "level filter",
        WAIT,
        "return document.querySelectorAll('[data-testid=log-line]').length === 1;",
    );
    assert!(text(b, "[data-testid=log-line]").contains("device-side assert"));
    b.eval("const s = document.querySelector('[data-testid=log-level]'); s.value = '0'; s.dispatchEvent(new Event('change'));
            const q = document.querySelector('[data-testid=log-search]'); q.value = 'clipped'; q.dispatchEvent(new Event('input')); return 1;");
    b.wait_for(
        "search",
        WAIT,
        "return document.querySelectorAll('[data-testid=log-line]').length === 1;",
    );
    assert!(text(b, "[data-testid=log-line]").contains("grad norm"));
}

/// Hover, drag-to-zoom, log scale, smoothing and the x axis: kept in the URL, restored
/// by a reload (`all_shown`: the script that says the page is loaded).
fn assert_hover_zoom_and_url(b: &Browser, all_shown: &str) {
    // Hover shows step and value at the cursor.
    mouse(b, "mousemove", 0.5);
    let tip = b.wait_for(
        "tooltip",
        WAIT,
        "return document.querySelector('[data-testid=tooltip]')?.textContent;",
    );
    assert!(tip.as_str().unwrap().contains("step"), "{tip}");
    // Drag to zoom: the x range narrows, the URL keeps it, a reload restores it.
    let x1_before = num_attr(b, "[data-testid=canvas-loss]", "x1");
    mouse(b, "mousedown", 0.1);
    mouse(b, "mousemove", 0.4);
    mouse(b, "mouseup", 0.4);
    b.wait_for("zoom", WAIT, "return location.hash.includes('zoom=');");
    let x1_zoomed = num_attr(b, "[data-testid=canvas-loss]", "x1");
    assert!(
        x1_zoomed < x1_before * 0.6,
        "zoom did not narrow: {x1_before} → {x1_zoomed}"
    );
    let zoomed_points = num_attr(b, "[data-testid=canvas-loss]", "points");
    assert!(
        zoomed_points < 40.0 && zoomed_points > 3.0,
        "zoomed points {zoomed_points}"
    );
    // Log scale, smoothing and the x axis go to the URL too.
    b.eval("document.querySelector('[data-testid=log-loss]').click(); document.querySelector('[data-testid=x-rel]').click();
            const s = document.querySelector('[data-testid=smoothing]'); s.value = '0.6'; s.dispatchEvent(new Event('input')); return 1;");
    b.wait_for("url settings", WAIT, "return location.hash.includes('log=loss') && location.hash.includes('x=rel') && location.hash.includes('smooth=0.60');");
    b.eval("document.querySelector('[data-testid=x-step]').click(); return 1;");
    mouse(b, "mousedown", 0.1);
    mouse(b, "mousemove", 0.4);
    mouse(b, "mouseup", 0.4);
    b.wait_for(
        "zoom again",
        WAIT,
        "return location.hash.includes('zoom=');",
    );
    let hash = b.eval("return location.hash;");
    let x1 = num_attr(b, "[data-testid=canvas-loss]", "x1");
    b.eval("location.reload(); return 1;");
    b.wait_for("reloaded", WAIT, all_shown);
    assert_eq!(
        b.eval("return location.hash;"),
        hash,
        "reload changed the view"
    );
    b.wait_for("zoom restored", WAIT, &format!("return Math.abs(+document.querySelector('[data-testid=canvas-loss]').dataset.x1 - {x1}) < 1e-6;"));
    assert_eq!(
        b.eval("return document.querySelector('[data-testid=log-loss]').classList.contains('on');"),
        true
    );
    // Double-click resets the zoom.
    b.eval("document.querySelector('[data-testid=canvas-loss]').dispatchEvent(new MouseEvent('dblclick', {bubbles: true})); return 1;");
    b.wait_for("unzoomed", WAIT, "return !location.hash.includes('zoom=');");
}

/// CSV export carries every series.
fn assert_csv_export(b: &Browser) {
    // CSV export carries every series.
    b.eval("window.__blobs = []; const orig = URL.createObjectURL; URL.createObjectURL = (blob) => { window.__blobs.push(blob); return orig(blob); };
            document.querySelector('[data-testid=export-csv]').click();
            window.__blobs[0].text().then(t => window.__csv = t); return 1;");
    let csv = b.wait_for("csv", WAIT, "return window.__csv;");
    let csv = csv.as_str().unwrap();
    assert!(csv.starts_with("metric,step,time,value\n"));
    assert_eq!(csv.lines().filter(|l| l.starts_with("loss,")).count(), 41);
    assert!(csv.contains(",NaN\n"));
    assert!(csv.lines().any(|l| l.starts_with("val/bleu,40,")));
}

#[test]
fn every_panel_shows_what_the_trainer_sent_and_charts_are_interactive() {
    let dir = TempDir::new("dash-panels");
    let relay = Relay::with_dashboard(&dir.0);
    let mut trainer = python_trainer(EVERYTHING, &relay.url, "panels");
    assert!(trainer.wait().unwrap().success());

    // 55 events from the trainer, and the relay's record of the default nan-loss alert.
    stepwatch_e2e::wait_until("the nan-loss alert", WAIT, || {
        (relay.get_ok("/api/runs/panels")["alerts"]["fired"] == 1).then_some(())
    });
    let stored = relay.get_ok("/api/runs/panels")["event_count"]
        .as_u64()
        .unwrap();
    assert_eq!(stored, 56);
    // The page shows the run's state at once and turns live once its history (series,
    // logs, system samples) is in.
    let all_shown = format!(
        "return document.querySelector('[data-testid=event-count]')?.textContent === '{stored}'
                && document.querySelector('[data-testid=conn]')?.dataset.state === 'live';"
    );
    let b = Browser::start();
    b.goto(&format!("{}/#/runs/panels", relay.url));
    b.wait_for("all events", WAIT, &all_shown);

    assert_header_and_charts(&b);
    assert_side_panels(&b);
    assert_logs(&b);
    assert_hover_zoom_and_url(&b, &all_shown);
    assert_csv_export(&b);
    b.screenshot(&repo().join("target/screenshots/dashboard-panels.png"));
}

#[test]
fn runs_list_filters_sorts_and_compare_shows_the_diff() {
    let dir = TempDir::new("dash-compare");
    let relay = Relay::with_dashboard(&dir.0);
    for (run, lr, scale) in [
        ("cmp-a", 0.1, 1.0),
        ("cmp-b", 0.01, 2.0),
        ("other-c", 0.1, 3.0),
    ] {
        let code = format!(
            r#"
import stepwatch
from stepwatch import *
emit_training_start(total_epochs=1, total_batches=30, config={{"lr": {lr}, "optimizer": "adamw", "layers": 4}}, name="{run}")
for b in range(30):
    emit_batch_end(batch_idx=b, loss={scale} / (b + 1), lr={lr}, metrics={{"train/acc": b / 30}})
emit_training_end()
assert stepwatch.flush(10)
"#
        );
        assert!(python_trainer(&code, &relay.url, run)
            .wait()
            .unwrap()
            .success());
    }
    let b = Browser::start();
    b.goto(&format!("{}/#/", relay.url));
    b.wait_for(
        "3 runs",
        WAIT,
        "return document.querySelectorAll('[data-testid=run-row]').length === 3;",
    );
    // Filter by name.
    b.eval("const f = document.querySelector('[data-testid=filter]'); f.value = 'cmp'; f.dispatchEvent(new Event('input')); return 1;");
    b.wait_for(
        "filtered",
        WAIT,
        "return document.querySelectorAll('[data-testid=run-row]').length === 2;",
    );
    assert!(b
        .eval("return location.hash;")
        .as_str()
        .unwrap()
        .contains("q=cmp"));
    // Filter by status.
    b.eval("const s = document.querySelector('[data-testid=status-filter]'); s.value = 'running'; s.dispatchEvent(new Event('change')); return 1;");
    b.wait_for(
        "none running",
        WAIT,
        "return document.querySelectorAll('[data-testid=run-row]').length === 0;",
    );
    b.eval("const s = document.querySelector('[data-testid=status-filter]'); s.value = 'completed'; s.dispatchEvent(new Event('change')); return 1;");
    b.wait_for(
        "completed",
        WAIT,
        "return document.querySelectorAll('[data-testid=run-row]').length === 2;",
    );
    // Sort by loss, ascending then descending.
    let order = |b: &Browser| {
        b.eval("return [...document.querySelectorAll('[data-testid=run-row]')].map(r => r.dataset.run);")
    };
    b.eval("const f = document.querySelector('[data-testid=filter]'); f.value = ''; f.dispatchEvent(new Event('input'));
            document.querySelector('[data-testid=sort-loss]').click(); return 1;");
    b.wait_for(
        "sorted",
        WAIT,
        "return document.querySelectorAll('[data-testid=run-row]').length === 3;",
    );
    assert_eq!(order(&b), serde_json::json!(["cmp-a", "cmp-b", "other-c"]));
    b.eval("document.querySelector('[data-testid=sort-loss]').click(); return 1;");
    b.wait_for(
        "reversed",
        WAIT,
        "return document.querySelector('[data-testid=run-row]').dataset.run === 'other-c';",
    );

    // Pick two runs and compare.
    b.eval("for (const r of document.querySelectorAll('[data-testid=run-row]')) { if (r.dataset.run.startsWith('cmp')) r.querySelector('[data-testid=pick]').click(); } return 1;");
    b.wait_for("compare enabled", WAIT, "return document.querySelector('[data-testid=compare-button]').classList.contains('primary');");
    b.eval("document.querySelector('[data-testid=compare-button]').click(); return 1;");
    b.wait_for(
        "compare page",
        WAIT,
        "return document.querySelectorAll('[data-testid=legend-item]').length === 2;",
    );
    b.wait_for(
        "overlay",
        WAIT,
        "return +document.querySelector('[data-testid=canvas-loss]')?.dataset.points === 60;",
    );
    // Only the differing config key is listed.
    let keys = b.wait_for("config diff", WAIT, "const k = [...document.querySelectorAll('[data-testid=config-diff-row]')].map(r => r.dataset.key); return k.length ? k : null;");
    assert_eq!(keys, serde_json::json!(["lr"]));
    // Summary: last loss of b against baseline a: 2/30 vs 1/30 → +100%.
    let diff = b.wait_for("summary", WAIT, "const r = document.querySelector('[data-testid=summary-row][data-metric=loss][data-run-index=\"1\"] [data-testid=summary-diff]'); return r && r.textContent;");
    assert!(diff.as_str().unwrap().contains("+100.0%"), "{diff}");
    // Baseline switch flips the sign; the URL keeps it.
    b.eval("document.querySelector('[data-testid=\"baseline-cmp-b\"]').click(); return 1;");
    b.wait_for(
        "baseline b",
        WAIT,
        "return location.hash.includes('base=cmp-b');",
    );
    let diff = b.wait_for("summary b", WAIT, "const r = document.querySelector('[data-testid=summary-row][data-metric=loss][data-run-index=\"0\"] [data-testid=summary-diff]'); return r && r.textContent;");
    assert!(diff.as_str().unwrap().contains("-50.0%"), "{diff}");
    // Hover lists both runs.
    b.eval("const c = document.querySelector('[data-testid=canvas-loss]'); const r = c.getBoundingClientRect();
            c.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + r.width / 2, clientY: r.top + 50, bubbles: true})); return 1;");
    let tip = b.wait_for(
        "tooltip",
        WAIT,
        "return document.querySelector('[data-testid=tooltip]')?.textContent;",
    );
    assert!(
        tip.as_str().unwrap().contains("cmp-a") && tip.as_str().unwrap().contains("cmp-b"),
        "{tip}"
    );
    b.screenshot(&repo().join("target/screenshots/compare.png"));
    // Reload keeps the compare view.
    b.eval("location.reload(); return 1;");
    b.wait_for("compare after reload", WAIT, "return document.querySelectorAll('[data-testid=legend-item]').length === 2 && location.hash.includes('base=cmp-b');");
}

#[test]
fn a_long_runs_list_draws_its_first_lines_and_shows_more_on_demand() {
    let dir = TempDir::new("dash-many");
    let relay = Relay::with_dashboard(&dir.0);
    for i in 0..450 {
        let run = format!("r{i:03}");
        let (c, v) = relay.post(
            &run,
            &format!(r#"{{"event":"training_start","total_epochs":1,"name":"{run}"}}"#),
            "application/json",
        );
        assert!(c < 300, "{run}: {c} {v}");
    }
    let rows = "return document.querySelectorAll('[data-testid=run-row]').length";
    let b = Browser::start();
    b.goto(&format!("{}/#/", relay.url));
    b.wait_for(
        "the first 200 lines",
        WAIT,
        &format!("{rows} === 200 && document.querySelector('[data-testid=more-runs]')?.textContent.includes('200 / 450');"),
    );
    b.eval("document.querySelector('[data-testid=more-runs]').click(); return 1;");
    b.wait_for("400 lines", WAIT, &format!("{rows} === 400;"));
    b.eval("document.querySelector('[data-testid=more-runs]').click(); return 1;");
    b.wait_for(
        "every line, no button",
        WAIT,
        &format!("{rows} === 450 && !document.querySelector('[data-testid=more-runs]');"),
    );
    // The filter looks at every run, drawn or not (after a reload: 200 drawn again).
    b.eval("location.reload(); return 1;");
    b.wait_for("200 again", WAIT, &format!("{rows} === 200;"));
    b.eval("const f = document.querySelector('[data-testid=filter]'); f.value = 'r44'; f.dispatchEvent(new Event('input')); return 1;");
    b.wait_for(
        "ten matches, no button",
        WAIT,
        &format!("{rows} === 10 && !document.querySelector('[data-testid=more-runs]');"),
    );
    // Clearing the filter draws the first 200 lines of every run again.
    b.eval("const f = document.querySelector('[data-testid=filter]'); f.value = ''; f.dispatchEvent(new Event('input')); return 1;");
    b.wait_for("unfiltered", WAIT, &format!("{rows} === 200;"));
    b.screenshot(&repo().join("target/screenshots/runs-many.png"));
}
