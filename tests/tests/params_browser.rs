//! The parameter view of a sweep, driven from the browser: real Python trainers (the SDK,
//! `connect(tags=...)`) report a learning-rate sweep to a real relay; headless Chromium
//! opens the runs list filtered by the sweep's tag, follows its Parameters link and
//! sees each varying config key plotted against the final validation loss, the key
//! that decides it first, the winner marked and ranked first, the goal and metric
//! switchable and kept in the URL, a run that joins later added live, and run names
//! never let through as markup.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::time::Duration;
use stepwatch_e2e::*;

const WAIT: Duration = Duration::from_secs(40);

/// A sweep member: connects with the sweep's tag, reports its config and three epochs
/// whose validation loss is lowest at lr = 1e-3 (and `acc` the other way round).
fn sweep_trainer(lr: f64, optim: &str, name: &str, tags: &str) -> String {
    format!(
        r#"
import math, stepwatch
stepwatch.connect(tags={tags})
stepwatch.emit_training_start(total_epochs=3, name={name:?},
    config={{"lr": {lr}, "optim": {{"name": "{optim}"}}, "seed": 0}})
for epoch in range(1, 4):
    val = (math.log10({lr}) + 3) ** 2 + 0.1 + 0.5 / epoch
    stepwatch.emit_epoch_end(epoch, metrics={{"val_loss": val, "acc": 1 - val / 10}})
stepwatch.emit_training_end()
assert stepwatch.flush(10)
"#
    )
}

fn run_sweep(relay: &Relay, members: &[(&str, f64, &str, &str, &str)]) {
    let mut trainers: Vec<_> = members
        .iter()
        .map(|(run, lr, optim, name, tags)| {
            python_trainer(&sweep_trainer(*lr, optim, name, tags), &relay.url, run)
        })
        .collect();
    for t in &mut trainers {
        assert!(t.wait().unwrap().success());
    }
}

/// What the page shows: the plots' keys in order, the points of the first plot, the
/// marked best point, the table's rows in order.
const SHOWN: &str = "const plots = [...document.querySelectorAll('[data-testid=param-plot]')]; \
    if (!plots.length) return null; \
    return {keys: plots.map(p => p.dataset.key), \
      points: [...plots[0].querySelectorAll('[data-testid=param-point]')].map(c => c.dataset.run).sort(), \
      best: plots.map(p => p.querySelector('.best')?.dataset.run), \
      rows: [...document.querySelectorAll('[data-testid=param-row]')].map(r => r.dataset.run), \
      count: document.querySelector('[data-testid=param-runs]').textContent, \
      images: document.querySelectorAll('[data-testid=param-table] img, .scatters img').length};";

fn shown_when(b: &Browser, what: &str, cond: &str) -> Value {
    b.wait_for(
        what,
        WAIT,
        &format!("const v = (() => {{ {SHOWN} }})(); return v && ({cond}) && v;"),
    )
}

#[test]
fn a_sweep_tagged_on_the_runs_list_opens_as_config_keys_against_the_final_metric() {
    let dir = TempDir::new("params-browser");
    let dist = dist();
    let relay = Relay::start(&dir.0.join("data"), &["--dist", dist.to_str().unwrap()]);
    let sweep = r#"["lr sweep"]"#;
    run_sweep(
        &relay,
        &[
            ("lr-1e-4", 1e-4, "adam", "lr 1e-4", sweep),
            (
                "lr-1e-3",
                1e-3,
                "adam",
                "<img src=x onerror=window.pwned=1>",
                sweep,
            ),
            ("lr-1e-2", 1e-2, "sgd", "lr 1e-2", sweep),
            ("lr-1e-1", 1e-1, "sgd", "lr 1e-1", sweep),
            // Not in the sweep: the tag filter leaves it out.
            ("other", 1.0, "sgd", "other", r#"["baseline"]"#),
        ],
    );
    let b = Browser::start();
    b.on_new_document("window.pwned = 0;");
    b.goto(&format!("{}/#/?tag=lr%20sweep", relay.url));
    b.wait_for(
        "the sweep's runs",
        WAIT,
        "return document.querySelectorAll('[data-testid=run-row]').length === 4;",
    );
    b.eval("document.querySelector('[data-testid=params-button]').click(); return 1;");
    let v = shown_when(&b, "the parameter plots", "v.rows.length === 4");
    // lr decides the loss: its plot comes first; seed is the same everywhere: no plot.
    assert_eq!(v["keys"], json!(["lr", "optim.name"]), "{v}");
    assert_eq!(
        v["points"],
        json!(["lr-1e-1", "lr-1e-2", "lr-1e-3", "lr-1e-4"])
    );
    assert_eq!(v["best"], json!(["lr-1e-3", "lr-1e-3"]));
    assert_eq!(v["rows"][0], "lr-1e-3");
    assert_eq!(v["count"], "4");
    // The run name with markup is text, in the tooltip and the table.
    assert_eq!(v["images"], 0);
    assert_eq!(b.eval("return window.pwned;"), json!(0));
    let tip = b
        .eval("return document.querySelector('[data-testid=param-plot] .best title').textContent;");
    assert!(
        tip.as_str().unwrap().starts_with("<img src=x"),
        "the name as text: {tip}"
    );
    assert!(tip.as_str().unwrap().contains("val_loss = 0.2666"), "{tip}");
    let score = b.text("[data-testid=param-plot] [data-testid=param-score]");
    assert!(score.starts_with("|ρ|"), "{score}");
    let hash = b.eval("return location.hash;");
    assert!(
        hash.as_str()
            .unwrap()
            .starts_with("#/params?tag=lr%20sweep"),
        "{hash}"
    );

    // Higher is better: the worst run wins; then a metric where higher is better by
    // its name (acc), so the 1e-3 run wins again; both kept in the URL over a reload.
    b.choose("param-goal", "max");
    let v = shown_when(&b, "the other way round", "v.rows[0] !== 'lr-1e-3'");
    assert_eq!(v["rows"][0], "lr-1e-1");
    b.choose("param-goal", "");
    b.choose("param-metric", "acc");
    b.eval("location.reload(); return 1;");
    let v = shown_when(
        &b,
        "acc after a reload",
        "location.hash.includes('metric=acc')",
    );
    assert_eq!(v["rows"][0], "lr-1e-3", "{v}");
    assert_eq!(
        b.eval("return document.querySelector('[data-testid=param-goal]').value;"),
        json!("max")
    );

    // A run that joins the sweep later shows up without a reload.
    run_sweep(&relay, &[("lr-3e-4", 3e-4, "adam", "lr 3e-4", sweep)]);
    let v = shown_when(&b, "the late run", "v.rows.length === 5");
    assert_eq!(v["count"], "5");

    // In Chinese; a point links to its run.
    b.eval("document.querySelector('[data-testid=lang-zh]').click(); return 1;");
    b.wait_for(
        "the page in Chinese",
        WAIT,
        "return document.querySelector('.panel-head h1').textContent === '参数分析';",
    );
    b.eval("document.querySelector('[data-testid=param-plot] .best').parentNode.dispatchEvent(new MouseEvent('click', {bubbles: true})); return 1;");
    b.wait_for(
        "the best run's page",
        WAIT,
        "return location.hash === '#/runs/lr-1e-3' && document.querySelector('[data-testid=run-name]');",
    );
}

#[test]
fn picked_runs_and_runs_without_the_metric_or_without_differences() {
    let dir = TempDir::new("params-picked");
    let dist = dist();
    let relay = Relay::start(&dir.0.join("data"), &["--dist", dist.to_str().unwrap()]);
    for (run, lr) in [("p1", 0.1), ("p2", 0.01), ("p3", 0.001)] {
        let start = json!({"event": "training_start", "config": {"lr": lr, "model": "mlp"}});
        let end = json!({"event": "epoch_end", "epoch": 1, "metrics": {"val_loss": lr * 10.0}});
        let (s, v) = relay.post(run, &format!("{start}\n{end}\n"), "application/x-ndjson");
        assert_eq!(s, 200, "{v}");
    }
    let b = Browser::start();
    // Picked on the compare page: only those two.
    b.goto(&format!("{}/#/compare?runs=p1,p3", relay.url));
    b.wait_for(
        "the compare page",
        WAIT,
        "return document.querySelector('[data-testid=params-button]');",
    );
    b.eval("document.querySelector('[data-testid=params-button]').click(); return 1;");
    let v = shown_when(&b, "two runs", "v.rows.length === 2");
    assert_eq!(v["rows"], json!(["p3", "p1"]));
    assert_eq!(v["keys"], json!(["lr"]));
    // Two runs: no score; a metric none of them has; runs that do not differ.
    assert_eq!(
        b.eval("return document.querySelectorAll('[data-testid=param-score]').length;"),
        json!(0)
    );
    b.goto(&format!("{}/#/params?runs=p1,p2&metric=nope", relay.url));
    let empty = b.wait_for(
        "the no-metric message",
        WAIT,
        "return document.querySelector('[data-testid=param-empty]')?.textContent;",
    );
    assert!(empty.as_str().unwrap().contains("reported"), "{empty}");
    b.goto(&format!("{}/#/params?runs=p1", relay.url));
    let empty = b.wait_for(
        "the nothing-differs message",
        WAIT,
        "return document.querySelector('[data-testid=param-empty]')?.textContent.includes('same') && document.querySelectorAll('[data-testid=param-row]').length === 1;",
    );
    assert_eq!(empty, json!(true));
}
