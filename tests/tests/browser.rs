//! Browser end to end: a real Python trainer, a real relay process, the built dashboard
//! in headless Chromium. Needs `dist/` (trunk build --release) and chromium-driver;
//! `cargo xtask test` provides both.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;
use stepwatch_e2e::{free_port, python, python_trainer, repo, wait_until, Browser, Relay, TempDir};

const WAIT: Duration = Duration::from_secs(30);

/// The seed's loop, slowed a little, pausing after epoch 2 until `go` exists.
fn trainer_code(go: &std::path::Path) -> String {
    format!(
        r#"
import os, time
from stepwatch import training_emitter, emit_training_start, emit_epoch_start, emit_epoch_end, emit_batch_end, emit_training_end, emit_checkpoint_saved
emit_training_start(total_epochs=3, total_batches=40, config={{"lr": 0.001, "model": "tiny-mlp"}})
step = 0
for epoch in range(1, 4):
    if epoch == 3:
        while not os.path.exists({go:?}):
            time.sleep(0.02)
    emit_epoch_start(epoch=epoch, total_epochs=3)
    for batch_idx in range(40):
        step += 1
        emit_batch_end(batch_idx=batch_idx, loss=4.0 / step, lr=0.001, epoch=epoch)
        time.sleep(0.005)
    emit_epoch_end(epoch=epoch, metrics={{"avg_loss": 1.0}})
    emit_checkpoint_saved(checkpoint_path=f"/ckpt/epoch{{epoch}}.pt", epoch=epoch, step=step, size_bytes=2500000000)
emit_training_end()
"#
    )
}

fn text(b: &Browser, testid: &str) -> String {
    b.eval(&format!(
        "const e = document.querySelector('[data-testid={testid}]'); return e ? e.textContent : null;"
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Pixels of the loss line's colour on the chart canvas.
const LINE_PIXELS: &str = r#"
const c = document.querySelector('[data-testid=canvas-loss]');
if (!c || !c.width) return 0;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4) {
  if (Math.abs(d[i] - 0x4f) < 40 && Math.abs(d[i+1] - 0xc3) < 40 && Math.abs(d[i+2] - 0xf7) < 40) n++;
}
return n;
"#;

#[test]
fn a_python_trainer_is_seen_live_in_the_browser() {
    let dir = TempDir::new("browser-live");
    let relay = Relay::with_dashboard(&dir.0);
    let browser = Browser::start();
    browser.goto(&format!("{}/", relay.url));
    browser.wait_for(
        "runs page",
        WAIT,
        "return document.querySelector('.conn.live') !== null;",
    );

    let go = dir.0.join("go");
    let mut trainer = python_trainer(&trainer_code(&go), &relay.url, "browser-run");

    // The run appears in the list, live, without a reload.
    browser.wait_for(
        "run row",
        WAIT,
        "return document.querySelector('[data-testid=run-row][data-run=\"browser-run\"]') !== null;",
    );
    browser.eval("document.querySelector('[data-testid=run-row] a').click(); return 1;");
    browser.wait_for(
        "run page",
        WAIT,
        "return location.hash === '#/runs/browser-run';",
    );

    // After two epochs the trainer waits: the header shows epoch 2 and its last batch
    // (live: history loaded, the stream open).
    browser.wait_for(
        "epoch 2 done",
        WAIT,
        "return document.querySelector('[data-testid=step]')?.textContent === '80'
                && document.querySelector('[data-testid=conn]')?.dataset.state === 'live';",
    );
    assert_eq!(text(&browser, "epoch"), "2/3");
    // Batch indices 0..=39 of 40: the last one done reads 40/40.
    assert_eq!(text(&browser, "batch"), "40/40");
    assert_eq!(
        text(&browser, "loss"),
        stepwatch_events::num::display(4.0 / 80.0, 5)
    );
    assert_eq!(text(&browser, "lr"), "0.001");
    assert_eq!(
        browser.eval("return document.querySelector('[data-testid=status]').dataset.status;"),
        "running"
    );
    let points =
        browser.eval("return +document.querySelector('[data-testid=canvas-loss]').dataset.points;");
    assert_eq!(points, 80, "chart did not draw every point");
    let drawn = browser.eval(LINE_PIXELS).as_u64().unwrap();
    assert!(
        drawn > 100,
        "the loss line is not on the canvas ({drawn} pixels)"
    );

    // The rest arrives live, without a reload.
    std::fs::write(&go, "").unwrap();
    assert!(trainer.wait().unwrap().success(), "trainer failed");
    browser.wait_for(
        "completed",
        WAIT,
        "return document.querySelector('[data-testid=status]')?.dataset.status === 'completed';",
    );
    assert_eq!(text(&browser, "epoch"), "3/3");
    assert_eq!(text(&browser, "step"), "120");
    assert_eq!(
        text(&browser, "loss"),
        stepwatch_events::num::display(4.0 / 120.0, 5)
    );
    let points =
        browser.eval("return +document.querySelector('[data-testid=canvas-loss]').dataset.points;");
    assert_eq!(points, 120);
    let ckpts = text(&browser, "checkpoints");
    assert!(
        ckpts.contains("epoch3.pt") && ckpts.contains("2.5 GB"),
        "{ckpts}"
    );
    let cfg = text(&browser, "config");
    assert!(cfg.contains("tiny-mlp"), "{cfg}");
    browser.screenshot(&repo().join("target/screenshots/run-page.png"));
}

#[test]
fn the_run_page_resumes_after_a_relay_restart_without_gap_or_duplicate() {
    let dir = TempDir::new("browser-restart");
    let mut relay = Relay::with_dashboard(&dir.0);
    let batch = |from: u64, to: u64| -> String {
        (from..to)
            .map(|i| {
                format!(
                    "{{\"event\":\"batch_end\",\"batch_idx\":{i},\"loss\":{}}}\n",
                    1.0 + i as f64
                )
            })
            .collect()
    };
    relay.post("resume", &batch(0, 50), "application/x-ndjson");
    let browser = Browser::start();
    browser.goto(&format!("{}/#/runs/resume", relay.url));
    browser.wait_for(
        "50 events",
        WAIT,
        "return document.querySelector('[data-testid=event-count]')?.textContent === '50';",
    );

    relay.restart(); // SIGKILL: the page's stream drops
    browser.wait_for(
        "reconnect",
        WAIT,
        "return document.querySelector('[data-testid=conn]')?.classList.contains('live');",
    );
    relay.post("resume", &batch(50, 80), "application/x-ndjson");
    browser.wait_for(
        "80 events",
        WAIT,
        "return document.querySelector('[data-testid=event-count]')?.textContent === '80';",
    );
    assert_eq!(
        text(&browser, "step"),
        "80",
        "a replayed event was counted twice"
    );
    // The chart redraws on its next frame: wait for it (a loaded machine is slow), then
    // make sure no point came twice.
    browser.wait_for(
        "80 chart points",
        WAIT,
        "return +document.querySelector('[data-testid=canvas-loss]').dataset.points >= 80;",
    );
    assert_eq!(
        browser.eval("return +document.querySelector('[data-testid=canvas-loss]').dataset.points;"),
        80
    );
}

#[test]
fn dist_works_from_a_plain_static_server() {
    let dir = TempDir::new("browser-static");
    let site = dir.0.join("site");
    std::fs::create_dir_all(&site).unwrap();
    for entry in std::fs::read_dir(stepwatch_e2e::dist()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, site.join(p.file_name().unwrap())).unwrap();
        }
    }
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let relay = Relay::start(&dir.0.join("data"), &["--allow-origin", &origin]);
    std::fs::write(
        site.join("stepwatch-config.json"),
        format!("{{\"relay\": \"{}\"}}", relay.url),
    )
    .unwrap();
    let mut server = Command::new(python())
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&site)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("static server", WAIT, || {
        ureq::get(&format!("{origin}/")).call().ok()
    });
    relay.post(
        "static-run",
        r#"{"event":"training_start","total_epochs":1,"name":"from-static"}"#,
        "application/json",
    );

    let browser = Browser::start();
    browser.goto(&format!("{origin}/index.html"));
    browser.wait_for(
        "run from config file",
        WAIT,
        "return document.querySelector('[data-testid=run-row][data-run=\"static-run\"]') !== null;",
    );
    // Live from the static page: a new event updates the row.
    relay.post(
        "static-run",
        r#"{"event":"batch_end","loss":0.125}"#,
        "application/json",
    );
    browser.wait_for(
        "live loss",
        WAIT,
        "return document.querySelector('[data-testid=row-loss]')?.textContent === '0.125';",
    );

    // `?relay=` overrides a config file that points nowhere.
    std::fs::write(
        site.join("stepwatch-config.json"),
        format!("{{\"relay\": \"http://127.0.0.1:{}\"}}", free_port()),
    )
    .unwrap();
    browser.goto(&format!(
        "{origin}/index.html?relay={}#/runs/static-run",
        relay.url
    ));
    browser.wait_for(
        "run page via ?relay=",
        WAIT,
        "return document.querySelector('[data-testid=loss]')?.textContent === '0.125';",
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn the_dashboard_follows_the_browser_language_and_can_switch() {
    let dir = TempDir::new("browser-lang");
    let relay = Relay::with_dashboard(&dir.0);
    let zh = Browser::start_with(&["--lang=zh-CN"]);
    zh.goto(&format!("{}/", relay.url));
    zh.wait_for(
        "chinese",
        WAIT,
        "return document.body.innerText.includes('全部任务');",
    );
    assert_eq!(zh.eval("return document.documentElement.lang;"), "zh-CN");
    zh.eval("document.querySelector('[data-testid=lang-en]').click(); return 1;");
    zh.wait_for(
        "english",
        WAIT,
        "return document.body.innerText.includes('All runs');",
    );
    assert_eq!(zh.eval("return document.documentElement.lang;"), "en");
    // The choice is remembered across a reload.
    zh.goto(&format!("{}/", relay.url));
    zh.wait_for(
        "still english",
        WAIT,
        "return document.body.innerText.includes('All runs');",
    );
    zh.eval("document.querySelector('[data-testid=lang-zh]').click(); return 1;");
    zh.wait_for(
        "chinese again",
        WAIT,
        "return document.body.innerText.includes('全部任务');",
    );
}
