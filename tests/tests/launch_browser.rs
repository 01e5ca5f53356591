//! Launching from the browser, end to end on the local engine: a real relay with
//! `--demo` (a `local` queue, the `demo` template, a local agent), the built dashboard
//! in headless Chromium. Fill the demo template (a bad value is refused beside its
//! field), Preview shows the exact argv, Submit opens the Queue page on the new job,
//! which runs; its run page shows the job and live charts; Pause from the run page;
//! Cancel from the Queue page; Re-run with changes shows the config diff; Retry queues
//! the cancelled job again. Needs `dist/` and chromium-driver (`cargo xtask test`).
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::time::Duration;
use stepwatch_e2e::*;

const WAIT: Duration = Duration::from_secs(60);

/// Types `value` into the Launch form's field `key` as a user would (an `input` event).
fn set(b: &Browser, key: &str, value: &str) {
    let sel = serde_json::to_string(&format!("[data-f=\"{key}\"]")).unwrap();
    let value = serde_json::to_string(value).unwrap();
    b.eval(&format!(
        "const e = document.querySelector({sel});
         e.value = {value}; e.dispatchEvent(new Event('input', {{bubbles: true}})); return 1;"
    ));
}

/// The error line of the Launch form's field `key`.
fn field_error(b: &Browser, key: &str) -> String {
    b.text(&format!("[data-err=\"{key}\"]"))
}

fn click(b: &Browser, sel: &str) {
    let sel = serde_json::to_string(sel).unwrap();
    b.eval(&format!("document.querySelector({sel}).click(); return 1;"));
}

/// Pixels of the loss line's colour on the run page's chart.
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

/// Launch, preview, submit, watch, pause, cancel: the form's checks and the job pages.
fn launch_from_the_form(b: &Browser) -> (String, String) {
    b.wait_for(
        "launch form",
        WAIT,
        "return document.querySelector('[data-f=\"params.epochs\"]') !== null;",
    );
    assert_eq!(
        b.eval("return document.querySelector('[data-f=queue]').value;"),
        "local"
    );
    assert_eq!(
        b.eval("return document.querySelector('[data-f=template]').value;"),
        "demo"
    );
    // The demo agent serves the queue: no warning that the job would wait.
    assert_eq!(
        b.eval("return document.querySelector('[data-testid=no-agent-warning]') === null;"),
        true
    );
    // A value the template refuses: the same words as the relay's, beside the field,
    // and no preview.
    set(b, "params.lr", "2");
    b.wait_for(
        "lr refused",
        WAIT,
        "return document.querySelector('[data-err=\"params.lr\"]').textContent;",
    );
    assert_eq!(
        field_error(b, "params.lr"),
        "must be a number between 0 and 1"
    );
    assert_eq!(
        b.eval("return document.querySelector('[data-testid=preview-button]').disabled;"),
        true
    );
    set(b, "params.lr", "0.01");
    set(b, "params.epochs", "2");
    set(b, "params.batches", "2000");
    set(b, "params.step_ms", "20");
    set(b, "name", "Browser launch");
    b.wait_for(
        "lr accepted",
        WAIT,
        "return document.querySelector('[data-err=\"params.lr\"]').textContent === ''
            && !document.querySelector('[data-testid=preview-button]').disabled;",
    );
    // Submit comes after Preview, which shows the exact argv, one element each.
    assert_eq!(
        b.eval("return document.querySelector('[data-testid=submit]').disabled;"),
        true
    );
    click(b, "[data-testid=preview-button]");
    let argv = b.wait_for(
        "preview",
        WAIT,
        "const e = document.querySelector('[data-testid=preview-argv]'); return e && e.dataset.argv;",
    );
    let argv: Vec<String> = serde_json::from_str(argv.as_str().unwrap()).unwrap();
    for a in ["--epochs=2", "--lr=0.01", "--batches=2000", "--step-ms=20"] {
        assert!(argv.iter().any(|x| x == a), "{a} not in {argv:?}");
    }
    assert_eq!(
        b.eval("return document.querySelectorAll('[data-testid=preview-argv] li').length;"),
        argv.len()
    );
    b.wait_for(
        "submit offered",
        WAIT,
        "return !document.querySelector('[data-testid=submit]').disabled;",
    );
    click(b, "[data-testid=submit]");

    // The Queue page, the new job highlighted; it runs.
    let job = b.wait_for(
        "queue page",
        WAIT,
        "const m = location.hash.match(/^#\\/queue\\?job=(.+)$/); return m && m[1];",
    );
    let job = job.as_str().unwrap().to_string();
    let row = format!("tr[data-job=\"{job}\"]");
    b.wait_for(
        "running",
        WAIT,
        &format!(
            "const r = document.querySelector('{row}');
             return r && r.classList.contains('hl') && r.dataset.status === 'running'
                && r.querySelector('[data-testid=job-run]') !== null;"
        ),
    );
    let why = b.text(&format!("{row} [data-testid=job-why]"));
    assert!(!why.is_empty(), "a running job shows why it stands there");
    let run = b.eval(&format!(
        "return document.querySelector('{row} [data-testid=job-run]').textContent;"
    ));
    let run = run.as_str().unwrap().to_string();
    assert!(run.starts_with("browser-launch-"), "{run}");
    (job, run)
}

#[test]
fn a_job_is_launched_watched_paused_and_cancelled_from_the_browser() {
    let dir = TempDir::new("launch-browser");
    let dist = dist();
    let relay = Relay::start(
        &dir.0.join("data"),
        &["--dist", dist.to_str().unwrap(), "--demo"],
    );
    wait_until("the demo agent", WAIT, || {
        let q = relay.get_ok("/api/queues");
        (q[0]["agents"][0]["alive"] == true).then_some(())
    });
    let b = Browser::start();
    b.goto(&format!("{}/#/launch", relay.url));
    let (job, run) = launch_from_the_form(&b);

    // Its run page: the job panel and live charts.
    click(&b, &format!("tr[data-job=\"{job}\"] [data-testid=job-run]"));
    b.wait_for(
        "run page",
        WAIT,
        &format!(
            "const p = document.querySelector('[data-testid=job-panel]');
             return location.hash === '#/runs/{run}' && p
                && p.querySelector('[data-testid=job-status]')?.dataset.status === 'running'
                && document.querySelector('[data-testid=conn]')?.dataset.state === 'live';"
        ),
    );
    assert!(b.text("[data-testid=job-panel]").contains("local"));
    let steps = |b: &Browser| b.text("[data-testid=step]").parse::<u64>().unwrap_or(0);
    let first = b.wait_for(
        "steps",
        WAIT,
        "return +document.querySelector('[data-testid=step]').textContent;",
    );
    b.wait_for(
        "live steps",
        WAIT,
        &format!("return +document.querySelector('[data-testid=step]').textContent > {first};"),
    );
    b.wait_for("loss line", WAIT, LINE_PIXELS);
    b.screenshot(&repo().join("target/screenshots/launch-run-page.png"));

    // Pause from the run page (the existing control): the trainer stops stepping.
    click(&b, "[data-testid=pause]");
    b.wait_for(
        "paused",
        WAIT,
        "return document.querySelector('[data-testid=status]')?.dataset.status === 'paused';",
    );
    let at = steps(&b);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(steps(&b), at, "a paused run kept stepping");

    // Cancel from the Queue page: the job ends cancelled, in the recent section.
    b.goto(&format!("{}/#/queue?job={job}", relay.url));
    let row = format!("tr[data-job=\"{job}\"]");
    b.wait_for(
        "cancel button",
        WAIT,
        &format!("return document.querySelector('{row} [data-testid=job-cancel]') !== null;"),
    );
    click(&b, &format!("{row} [data-testid=job-cancel]"));
    b.wait_for(
        "cancelled",
        WAIT,
        &format!(
            "const r = document.querySelector('[data-testid=recent] {row}');
             return r && r.dataset.status === 'cancelled';"
        ),
    );
    let v: Value = relay.get_ok(&format!("/api/jobs/{job}"));
    assert_eq!(v["status"], "cancelled", "{v}");
    b.screenshot(&repo().join("target/screenshots/launch-queue-page.png"));

    // Re-run with changes: the job's values pre-filled, the config diff before submit.
    b.goto(&format!("{}/#/runs/{run}", relay.url));
    b.wait_for(
        "rerun",
        WAIT,
        "return document.querySelector('[data-testid=rerun]') !== null;",
    );
    click(&b, "[data-testid=rerun]");
    b.wait_for(
        "pre-filled",
        WAIT,
        "const e = document.querySelector('[data-f=\"params.epochs\"]'); return e && e.value === '2';",
    );
    assert_eq!(
        b.eval("return document.querySelector('[data-f=\"params.lr\"]').value;"),
        "0.01"
    );
    set(&b, "params.lr", "0.02");
    b.wait_for(
        "preview offered",
        WAIT,
        "return !document.querySelector('[data-testid=preview-button]').disabled;",
    );
    click(&b, "[data-testid=preview-button]");
    let diff = b.wait_for(
        "config diff",
        WAIT,
        "const d = document.querySelector('[data-testid=preview-diff]'); return d && d.textContent;",
    );
    assert!(diff.as_str().unwrap().contains("0.02"), "{diff}");

    // Retry the cancelled job from the Queue page: a new job, highlighted.
    b.goto(&format!("{}/#/queue?job={job}", relay.url));
    b.wait_for(
        "retry button",
        WAIT,
        &format!("return document.querySelector('{row} [data-testid=job-retry]') !== null;"),
    );
    click(&b, &format!("{row} [data-testid=job-retry]"));
    let new = b.wait_for(
        "retried",
        WAIT,
        &format!(
            "const m = location.hash.match(/job=(.+)$/); return m && m[1] !== '{job}' && m[1];"
        ),
    );
    let new = new.as_str().unwrap();
    b.wait_for(
        "new job listed",
        WAIT,
        &format!("return document.querySelector('tr.hl[data-job=\"{new}\"]') !== null;"),
    );
    let _ = relay.post_json(&format!("/api/jobs/{new}/cancel"), &json!({}), None);
}

#[test]
fn the_launch_page_says_before_submitting_that_no_agent_serves_the_queue() {
    let dir = TempDir::new("launch-browser-noagent");
    let cfg = local_launch_config(&dir.0, 10, 5, "");
    let dist = dist();
    let relay = Relay::start(
        &dir.0.join("data"),
        &[
            "--dist",
            dist.to_str().unwrap(),
            "--launch",
            cfg.to_str().unwrap(),
        ],
    );
    let b = Browser::start_with(&["--lang=zh-CN"]);
    b.goto(&format!("{}/#/launch?template=train", relay.url));
    let warning = b.wait_for(
        "warning",
        WAIT,
        "const w = document.querySelector('[data-testid=no-agent-warning]'); return w && w.textContent;",
    );
    let warning = warning.as_str().unwrap();
    assert!(warning.contains("没有在线代理服务队列 local"), "{warning}");
    // The free-form entry is offered (no login: everyone is admin), an argv per line.
    assert_eq!(
        b.eval("return document.querySelector('[data-f=argv]') === null;"),
        true
    );
    b.eval(
        "const e = document.querySelector('[data-f=free]'); e.checked = true;
            e.dispatchEvent(new Event('input', {bubbles: true})); return 1;",
    );
    b.wait_for(
        "free-form",
        WAIT,
        "return document.querySelector('[data-f=argv]') !== null;",
    );
    set(&b, "argv", "echo\nhello world\n$(touch /tmp/x)");
    set(&b, "env", "STEPWATCH_TOKEN=stolen");
    click(&b, "[data-testid=preview-button]");
    // A variable the agent sets itself is refused, in the relay's words, beside the field.
    let err = b.wait_for(
        "env refused",
        WAIT,
        "return document.querySelector('[data-err=env]').textContent;",
    );
    assert!(err.as_str().unwrap().contains("STEPWATCH_"), "{err}");
    set(&b, "env", "GREETING=hi");
    b.wait_for(
        "preview offered",
        WAIT,
        "return !document.querySelector('[data-testid=preview-button]').disabled
            && document.querySelector('[data-err=env]').textContent === '';",
    );
    click(&b, "[data-testid=preview-button]");
    let argv = b.wait_for(
        "preview",
        WAIT,
        "const e = document.querySelector('[data-testid=preview-argv]'); return e && e.dataset.argv;",
    );
    let argv: Vec<String> = serde_json::from_str(argv.as_str().unwrap()).unwrap();
    assert_eq!(argv, ["echo", "hello world", "$(touch /tmp/x)"]);
    b.wait_for(
        "submit offered",
        WAIT,
        "return !document.querySelector('[data-testid=submit]').disabled;",
    );
    click(&b, "[data-testid=submit]");
    // The answer's warning on the Queue page, and the job says why it waits.
    let job = b.wait_for(
        "queue page",
        WAIT,
        "const m = location.hash.match(/job=(.+)$/); return m && m[1];",
    );
    let job = job.as_str().unwrap();
    let shown = b.wait_for(
        "submit warning",
        WAIT,
        "const w = document.querySelector('[data-testid=submit-warnings]'); return w && w.textContent;",
    );
    assert!(shown.as_str().unwrap().contains("no live agent"), "{shown}");
    let why = b.wait_for(
        "why it waits",
        WAIT,
        &format!("return document.querySelector('tr[data-job=\"{job}\"] [data-testid=job-why]')?.textContent;"),
    );
    assert!(why.as_str().unwrap().contains("no live agent"), "{why}");
    assert!(b.text("[data-testid=no-agent]").contains("local"));
    // A waiting job moves up its queue (priority +1).
    click(
        &b,
        &format!("tr[data-job=\"{job}\"] [data-testid=job-move]"),
    );
    b.wait_for(
        "moved up",
        WAIT,
        &format!("return document.querySelector('tr[data-job=\"{job}\"] td:nth-child(3)')?.textContent === '1';"),
    );
    assert_eq!(relay.job(job)["priority"], 1);

    // The Launch page follows the queue's agents while it is open: one starts, the
    // warning goes.
    b.goto(&format!("{}/#/launch?template=train", relay.url));
    b.wait_for(
        "warning again",
        WAIT,
        "return document.querySelector('[data-testid=no-agent-warning]') !== null;",
    );
    let _agent = Agent::start(&relay, &dir.0, "local", "local", "a1", &[]);
    b.wait_for(
        "agent seen",
        WAIT,
        "return document.querySelector('[data-testid=no-agent-warning]') === null
            && document.querySelector('[data-testid=queue-agents]')?.textContent.includes('local');",
    );
}
