//! Alerts in the browser: a real Python trainer's loss turns NaN, the relay's rule pauses
//! it, and the run page in headless Chromium shows the banner (its alert, level and the
//! pause by the rule), the runs list counts it, and Dismiss clears it.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::time::Duration;
use stepwatch_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_nan_loss_shows_the_banner_with_the_pause_and_dismiss_clears_it() {
    let dir = TempDir::new("alerts-browser");
    let hook = WebhookReceiver::start();
    let cfg = dir.0.join("alerts.toml");
    std::fs::write(
        &cfg,
        format!(
            "[alerts]\ndefaults = false\n\n[[alerts.rules]]\nname = \"nan\"\nkind = \"non_finite\"\n\
             action = \"pause\"\n\n[alerts.channels.hook]\nkind = \"webhook\"\nurl = \"{}\"\n",
            hook.url("/hook")
        ),
    )
    .unwrap();
    let dist = dist();
    let relay = Relay::start(
        &dir.0.join("data"),
        &[
            "--dist",
            dist.to_str().unwrap(),
            "--alerts",
            cfg.to_str().unwrap(),
        ],
    );
    let run = "nan-browser";
    let mut trainer = python_trainer(&nan_trainer(20), &relay.url, run);
    let b = Browser::start();
    b.goto(&format!("{}/#/runs/{run}", relay.url));
    let id = b.wait_for(
        "the alert banner",
        WAIT,
        "return document.querySelector('.alert-banner [data-alert-id]')?.dataset.alertId;",
    );
    let id = id.as_str().unwrap().to_string();
    assert!(id.starts_with("nan#"), "{id}");
    let fired = hook.wait_for("/hook", 1, WAIT);
    assert_eq!(fired[0].body["alert_id"], json!(id));
    let item = "document.querySelector('.alert-banner [data-alert-id]')";
    assert_eq!(
        b.eval(&format!("return {item}.dataset.level;")),
        json!("error")
    );
    b.wait_for(
        "the pause by the rule in the banner",
        WAIT,
        &format!(
            "const a = {item}.querySelector('[data-testid=alert-action]'); \
             return a && a.dataset.action === 'pause' && a.textContent.includes('nan');"
        ),
    );
    b.wait_for(
        "the run paused",
        WAIT,
        "return document.querySelector('[data-testid=status]')?.dataset.status === 'paused';",
    );
    // The headline in the page's language (the relay's English title as its tooltip),
    // and the step named once: the relay's text says it.
    let title = format!("return {item}.querySelector('.alert-title').textContent;");
    assert_eq!(b.eval(&title), json!("loss is NaN"));
    let banner_text = b.eval(&format!("return {item}.textContent;"));
    let banner_text = banner_text.as_str().unwrap();
    assert_eq!(banner_text.matches("step 20").count(), 1, "{banner_text}");
    b.eval("document.querySelector('[data-testid=lang-zh]').click(); return 1;");
    b.wait_for(
        "the headline in Chinese",
        WAIT,
        &format!("return {item}.querySelector('.alert-title').textContent === 'loss 变为 NaN';"),
    );
    assert_eq!(
        b.eval(&format!(
            "return {item}.querySelector('.alert-title').title;"
        )),
        json!("loss is NaN")
    );
    b.eval("document.querySelector('[data-testid=lang-en]').click(); return 1;");

    // Dismiss: the banner goes, the relay records who dismissed it.
    b.eval(&format!(
        "{item}.querySelector('[data-testid=dismiss]').click(); return 1;"
    ));
    b.wait_for(
        "the banner gone",
        WAIT,
        "return document.querySelector('.alert-banner [data-alert-id]') === null;",
    );
    let resolved = wait_until("alert_resolved", WAIT, || {
        let ev = relay.all_events(run);
        ev.into_iter().find(|e| e["event"] == "alert_resolved")
    });
    assert_eq!(resolved["alert_id"], json!(id));
    assert!(
        !resolved["sender"].as_str().unwrap_or_default().is_empty(),
        "{resolved}"
    );
    let _ = trainer.kill();
    let _ = trainer.wait();
}

/// A script: the text of the alert count in the runs list's row of `run` ("" when none).
fn count_in_row(run: &str) -> String {
    format!(
        "const c = document.querySelector('[data-testid=run-row][data-run={run}] [data-testid=alert-count]'); \
         return c ? c.textContent.trim() : '';"
    )
}

#[test]
fn the_runs_list_counts_a_runs_active_alerts() {
    let dir = TempDir::new("alerts-browser-list");
    let cfg = dir.0.join("alerts.toml");
    std::fs::write(
        &cfg,
        "[alerts]\ndefaults = false\n\n[[alerts.rules]]\nname = \"nan\"\nkind = \"non_finite\"\n",
    )
    .unwrap();
    let dist = dist();
    let relay = Relay::start(
        &dir.0.join("data"),
        &[
            "--dist",
            dist.to_str().unwrap(),
            "--alerts",
            cfg.to_str().unwrap(),
        ],
    );
    for (run, loss) in [("calm", json!(0.5)), ("broken", json!("NaN"))] {
        for e in [
            json!({"event": "training_start"}),
            json!({"event": "batch_end", "batch_idx": 1, "loss": loss}),
        ] {
            let (c, v) = relay.post(run, &e.to_string(), "application/json");
            assert!(c < 300, "{c} {v}");
        }
    }
    wait_until("the alert on broken", WAIT, || {
        let a = relay.get_ok("/api/runs/broken/alerts");
        (a["active"].as_array().map(Vec::len) == Some(1)).then_some(())
    });
    let b = Browser::start();
    b.goto(&format!("{}/", relay.url));
    let n = b.wait_for(
        "the alert count on broken's row",
        WAIT,
        &count_in_row("broken"),
    );
    assert_eq!(n, json!("1"));
    b.wait_for(
        "calm's row",
        WAIT,
        "return document.querySelector('[data-testid=run-row][data-run=calm]') !== null;",
    );
    let calm = b.eval(&count_in_row("calm"));
    assert!(calm == json!("") || calm == json!("0"), "{calm}");
}
