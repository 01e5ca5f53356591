//! Alerts end to end (docs/ALERTS.md): real relays with an `--alerts` config, real Python
//! trainers on the SDK, a real webhook receiver and a real SMTP server (aiosmtpd with
//! STARTTLS and AUTH). A NaN loss pauses the run and notifies every channel once; a
//! trainer killed with `kill -9` goes stale and comes back; a flapping metric fires once
//! within its cooldown; failed deliveries are retried and recorded, secrets stay out of
//! every answer and log; alerts survive a restart; two relays on one PostgreSQL database
//! notify once. (Where rules come from and how bad ones are refused: `alerts_rules`.)

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use stepwatch_e2e::*;

const T: Duration = Duration::from_secs(30);

/// A secret in the webhook's path: it must never come back out of the relay.
const SECRET: &str = "tok-3f9a1c7e5b2d";

/// Three channels: `hook` (webhook) and `chat` (slack) on `hook` with the secret in their
/// paths, and `mail` (email) on the sink with STARTTLS and AUTH.
fn three_channels(hook: &WebhookReceiver, sink: &SmtpSink) -> String {
    let slack = format!(
        "[alerts.channels.chat]\nkind = \"slack\"\nurl = \"{}\"\n",
        hook.url(&format!("/slack/{SECRET}"))
    );
    let mail = format!(
        "[alerts.channels.mail]\nkind = \"email\"\nsmtp = \"{}\"\ntls = \"starttls\"\n\
         username = \"{}\"\npassword = \"{}\"\nfrom = \"stepwatch@example.com\"\n\
         to = [\"oncall@example.com\"]\nca_file = \"{}\"\n",
        sink.addr(),
        sink.username,
        sink.password,
        sink.certs.ca.display()
    );
    format!(
        "{}{slack}\n{mail}",
        webhook_channel("hook", &hook.url(&format!("/hook/{SECRET}")))
    )
}

/// The webhook notice of the NaN firing: every field of docs/ALERTS.md, the right values.
fn check_fired_notice(fired: &HookRequest, run: &str) {
    let b = &fired.body;
    for key in [
        "alert_id", "state", "run", "run_name", "rule", "kind", "level", "title", "text", "metric",
        "value", "step", "action", "url", "time",
    ] {
        assert!(b.get(key).is_some(), "webhook notice lacks {key}: {b}");
    }
    assert_eq!(
        (&b["state"], &b["run"], &b["rule"], &b["kind"]),
        (
            &json!("fired"),
            &json!(run),
            &json!("nan"),
            &json!("non_finite")
        ),
        "{b}"
    );
    assert_eq!(
        (&b["level"], &b["metric"], &b["action"]),
        (&json!("error"), &json!("loss"), &json!("pause")),
        "{b}"
    );
    assert_eq!(b["step"], 20, "{b}");
    assert!(b["alert_id"].as_str().unwrap().starts_with("nan#"), "{b}");
    assert!(
        b["url"]
            .as_str()
            .unwrap()
            .starts_with("http://stepwatch.test:8080")
            && b["url"].as_str().unwrap().contains(run),
        "{b}"
    );
    assert_eq!(
        fired
            .header("content-type")
            .map(|c| c.starts_with("application/json")),
        Some(true)
    );
}

/// Slack's `{"text"}`, and the e-mail through STARTTLS + AUTH with its subject.
fn check_slack_and_mail(hook: &WebhookReceiver, sink: &SmtpSink, run: &str) {
    let slack = hook.wait_for("/slack/", 1, T);
    let text = slack[0].body["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", slack[0].raw));
    assert!(text.contains(run) && !text.contains('\n'), "{text}");
    assert_eq!(
        slack[0].body.as_object().unwrap().len(),
        1,
        "{}",
        slack[0].raw
    );
    let mail = sink.wait_for(1, T);
    assert_eq!(mail[0]["login"], "stepwatch");
    assert_eq!(mail[0]["tls"], true);
    assert_eq!(mail[0]["rcpt_tos"], json!(["oncall@example.com"]));
    let subject = mail_subject(&mail[0]).unwrap();
    assert!(
        subject.starts_with("[stepwatch] error: ") && subject.ends_with(&format!("— {run}")),
        "{subject}"
    );
}

#[test]
fn a_nan_loss_pauses_the_run_and_notifies_the_webhook_slack_and_email_once() {
    let dir = TempDir::new("alerts-nan");
    let hook = WebhookReceiver::start();
    let sink = SmtpSink::start("stepwatch", "mail-pass-81c2");
    let rules = "[[alerts.rules]]\nname = \"nan\"\nkind = \"non_finite\"\naction = \"pause\"\n";
    let channels = three_channels(&hook, &sink);
    let relay = relay_with_alerts(&dir.0, &alerts_toml(rules, &channels));
    let run = "nan-run";
    let mut trainer = python_trainer(&nan_trainer(20), &relay.url, run);

    let fired = hook.wait_for("/hook/", 1, T);
    let b = &fired[0].body;
    check_fired_notice(&fired[0], run);

    // The action: a pause sent by alert:nan, accepted by the trainer.
    let st = wait_until("the run paused", T, || {
        let st = relay.get_ok(&format!("/api/runs/{run}"));
        (st["status"] == "paused").then_some(st)
    });
    let pauses: Vec<&Value> = st["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["command"] == "pause")
        .collect();
    assert_eq!(pauses.len(), 1, "{st}");
    assert_eq!(pauses[0]["sender"], "alert:nan", "{st}");

    check_slack_and_mail(&hook, &sink, run);

    // The history: one firing, delivered to each of the three channels.
    let fired_ev = relay.wait_events(run, "alert_fired", 1, T);
    assert_eq!(fired_ev[0]["alert_id"], b["alert_id"]);
    assert_eq!(fired_ev[0]["action"], "pause");
    let deliveries = relay.wait_events(run, "alert_delivery", 3, T);
    let mut ok: Vec<(String, bool)> = deliveries
        .iter()
        .map(|d| (d["channel"].as_str().unwrap().to_string(), d["ok"] == true))
        .collect();
    ok.sort();
    assert_eq!(
        ok,
        [
            ("chat".into(), true),
            ("hook".into(), true),
            ("mail".into(), true)
        ],
        "{deliveries:?}"
    );
    let alerts = relay.get_ok(&format!("/api/runs/{run}/alerts"));
    assert_eq!(alerts["active"].as_array().unwrap().len(), 1, "{alerts}");

    // Every event so far evaluated (the paused trainer keeps sending): still one firing,
    // one notice per channel.
    relay.alerts_barrier(run);
    let nan_fired = |r: &Relay| {
        let all = r.events_of(run, "alert_fired");
        all.iter().filter(|f| f["rule"] == "nan").count()
    };
    assert_eq!(nan_fired(&relay), 1);
    assert_eq!(hook.requests_to("/hook/").len(), 1);
    assert_eq!(sink.messages().len(), 1);
    // The channels are shown by name and kind only; no secret anywhere.
    let cfg = relay.get_ok("/api/alerts/config");
    let mut shown: Vec<String> = cfg["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    shown.sort();
    assert_eq!(
        shown,
        [
            r#"{"kind":"email","name":"mail"}"#,
            r#"{"kind":"slack","name":"chat"}"#,
            r#"{"kind":"webhook","name":"hook"}"#
        ]
    );
    let log = std::fs::read_to_string(dir.0.join("relay.log")).unwrap_or_default();
    for text in [
        cfg.to_string(),
        alerts.to_string(),
        relay.all_events(run).iter().map(Value::to_string).collect(),
        log,
    ] {
        assert!(
            !text.contains(SECRET) && !text.contains(&sink.password),
            "a secret leaked: {text}"
        );
    }
    let _ = trainer.kill();
    let _ = trainer.wait();
}

#[test]
fn a_trainer_killed_with_kill_9_goes_stale_and_a_new_event_resolves_it() {
    let dir = TempDir::new("alerts-stale");
    let hook = WebhookReceiver::start();
    let rules =
        "[[alerts.rules]]\nname = \"quiet\"\nkind = \"stale\"\nafter_s = 2\ncooldown_s = 0\n";
    let relay = relay_with_alerts(
        &dir.0,
        &alerts_toml(rules, &webhook_channel("hook", &hook.url("/hook"))),
    );
    let run = "stale-run";
    let mut trainer = python_trainer(CONTROLLABLE_TRAINER, &relay.url, run);
    wait_until("the trainer's steps", T, || {
        let (c, st) = relay.get(&format!("/api/runs/{run}"));
        (c == 200 && st["status"] == "running" && st["step"].as_u64() > Some(10)).then_some(())
    });
    trainer.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    let _ = trainer.wait();
    assert!(hook.requests().is_empty(), "fired while the trainer ran");
    let fired = hook.wait_body("a fired notice", Duration::from_secs(10), |b| {
        b["state"] == "fired"
    });
    let after = fired.at.duration_since(killed);
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(6),
        "{after:?}"
    );
    assert_eq!(
        (&fired.body["run"], &fired.body["rule"], &fired.body["kind"]),
        (&json!(run), &json!("quiet"), &json!("stale"))
    );
    assert_eq!(fired.body["level"], "warning");

    relay.post_event(
        run,
        &json!({"event": "batch_end", "batch_idx": 99999, "loss": 0.5}),
    );
    let resolved = hook.wait_body("a resolved notice", T, |b| b["state"] == "resolved");
    assert_eq!(resolved.body["alert_id"], fired.body["alert_id"]);
    assert_eq!(resolved.body["run"], run);
    let r = relay.wait_events(run, "alert_resolved", 1, T);
    assert_eq!(r[0]["alert_id"], fired.body["alert_id"]);
    let alerts = relay.get_ok(&format!("/api/runs/{run}/alerts"));
    assert!(alerts["active"].as_array().unwrap().is_empty(), "{alerts}");
}

#[test]
fn a_flapping_metric_fires_once_within_its_cooldown() {
    let dir = TempDir::new("alerts-flap");
    let hook = WebhookReceiver::start();
    let rules = "[[alerts.rules]]\nname = \"nan\"\nkind = \"non_finite\"\ncooldown_s = 60\n";
    let relay = relay_with_alerts(
        &dir.0,
        &alerts_toml(rules, &webhook_channel("hook", &hook.url("/hook"))),
    );
    let run = "flap-run";
    let code = r#"
import time, stepwatch
from stepwatch import emit_training_start, emit_batch_end, emit_training_end
stepwatch.connect()
emit_training_start(total_epochs=1, total_batches=200)
for step in range(1, 201):
    emit_batch_end(batch_idx=step, loss=float("nan") if step % 2 else 1.0, lr=0.1)
    time.sleep(0.005)
emit_training_end()
assert stepwatch.flush(10)
"#;
    let mut trainer = python_trainer(code, &relay.url, run);
    assert!(trainer.wait().unwrap().success());
    wait_until("the run completed", T, || {
        (relay.get_ok(&format!("/api/runs/{run}"))["status"] == "completed").then_some(())
    });
    hook.wait_for("/hook", 1, T);
    relay.alerts_barrier(run);
    let fired: Vec<Value> = relay.events_of(run, "alert_fired");
    assert_eq!(
        fired.iter().filter(|f| f["rule"] == "nan").count(),
        1,
        "{fired:?}"
    );
    assert_eq!(
        notices(&hook, "/hook", "fired").len(),
        1,
        "{:?}",
        hook.requests()
    );
    assert!(
        notices(&hook, "/hook", "resolved").len() <= 1,
        "{:?}",
        hook.requests()
    );
}

/// A run with one NaN, through the ingest API.
fn post_nan(relay: &Relay, run: &str) {
    relay.post_event(
        run,
        &json!({"event": "training_start", "total_batches": 10}),
    );
    relay.post_event(
        run,
        &json!({"event": "batch_end", "batch_idx": 1, "loss": 1.0}),
    );
    relay.post_event(
        run,
        &json!({"event": "batch_end", "batch_idx": 2, "loss": "NaN"}),
    );
}

#[test]
fn a_failing_receiver_is_retried_and_every_attempt_recorded() {
    let dir = TempDir::new("alerts-retry");
    let hook = WebhookReceiver::with_statuses(&[500, 500]);
    let rules = "[[alerts.rules]]\nname = \"nan\"\nkind = \"non_finite\"\ncooldown_s = 0\n";
    let relay = relay_with_alerts(
        &dir.0,
        &alerts_toml(rules, &webhook_channel("hook", &hook.url("/hook"))),
    );
    let run = "retry-run";
    post_nan(&relay, run);
    let got = hook.wait_for("/hook", 3, T);
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    // Retried after about 1 s, then 2 s.
    let gap = |a: &HookRequest, b: &HookRequest| b.at.duration_since(a.at).as_secs_f64();
    assert!(
        (0.8..3.0).contains(&gap(&got[0], &got[1])),
        "{}",
        gap(&got[0], &got[1])
    );
    assert!(
        (1.6..5.0).contains(&gap(&got[1], &got[2])),
        "{}",
        gap(&got[1], &got[2])
    );
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the same notice each time"
    );
    let d = relay.wait_events(run, "alert_delivery", 3, T);
    let seen: Vec<(u64, bool, bool)> = d
        .iter()
        .map(|d| {
            (
                d["attempt"].as_u64().unwrap(),
                d["ok"] == true,
                d["last_attempt"] == true,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [(1, false, false), (2, false, false), (3, true, true)],
        "{d:?}"
    );
    assert!(
        d.iter().all(|d| d["channel"] == "hook"
            && d["channel_kind"] == "webhook"
            && d["notice"] == "fired"),
        "{d:?}"
    );
    assert!(d[0]["error"].as_str().unwrap().contains("500"), "{d:?}");
    // The relay counts what it did: two failed attempts and one that worked.
    assert_eq!(
        (
            relay.metric("stepwatch_alert_deliveries_total{result=\"ok\"}"),
            relay.metric("stepwatch_alert_deliveries_total{result=\"failed\"}")
        ),
        (1.0, 2.0)
    );
    assert_eq!(hook.requests().len(), 3, "{:?}", hook.requests());
}

#[test]
fn a_receiver_that_is_down_gets_every_attempt_recorded_and_no_secret_leaks() {
    let dir = TempDir::new("alerts-down");
    let down = format!("http://127.0.0.1:{}/hook/{SECRET}", free_port());
    let rules = "[[alerts.rules]]\nname = \"nan\"\nkind = \"non_finite\"\ncooldown_s = 0\n";
    let relay = relay_with_alerts(&dir.0, &alerts_toml(rules, &webhook_channel("down", &down)));
    let run = "down-run";
    post_nan(&relay, run);
    let d = wait_until("the last attempt", Duration::from_secs(60), || {
        let d = relay.events_of(run, "alert_delivery");
        d.iter().any(|d| d["last_attempt"] == true).then_some(d)
    });
    assert_eq!(
        d.iter()
            .map(|d| d["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "{d:?}"
    );
    assert!(
        d.iter()
            .all(|d| d["ok"] == false && !d["error"].as_str().unwrap().is_empty()),
        "{d:?}"
    );
    let metrics = ureq::get(&format!("{}/metrics", relay.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let failed = metrics
        .lines()
        .find(|l| {
            l.starts_with("stepwatch_alert_deliveries_total") && l.contains("result=\"failed\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no failed deliveries counted:\n{metrics}"));
    assert!(failed >= 5.0, "{failed}");
    assert!(
        metrics.contains("stepwatch_alerts_fired_total"),
        "{metrics}"
    );

    // The secret in the URL's path: nowhere.
    let cfg = relay.get_ok("/api/alerts/config");
    assert_eq!(
        cfg["channels"],
        json!([{"name": "down", "kind": "webhook"}]),
        "{cfg}"
    );
    assert_eq!(cfg["defaults"], false);
    let answers = [
        relay.get_ok(&format!("/api/runs/{run}")).to_string(),
        relay
            .get_ok(&format!("/api/runs/{run}/events?limit=100000"))
            .to_string(),
        relay.get_ok(&format!("/api/runs/{run}/alerts")).to_string(),
        relay.get_ok("/api/runs").to_string(),
        cfg.to_string(),
        metrics,
        std::fs::read_to_string(dir.0.join("relay.log")).unwrap_or_default(),
    ];
    for (i, a) in answers.iter().enumerate() {
        assert!(
            !a.contains(SECRET),
            "answer {i} holds the webhook's secret: {a}"
        );
        assert!(
            !a.contains("/hook/"),
            "answer {i} holds the webhook's path: {a}"
        );
    }
}

#[test]
fn alerts_survive_a_restart_and_an_active_one_does_not_notify_again() {
    let dir = TempDir::new("alerts-restart");
    let hook = WebhookReceiver::start();
    let rules = "[[alerts.rules]]\nname = \"nan\"\nkind = \"non_finite\"\ncooldown_s = 0\n";
    let mut relay = relay_with_alerts(
        &dir.0,
        &alerts_toml(rules, &webhook_channel("hook", &hook.url("/hook"))),
    );
    let run = "restart-run";
    post_nan(&relay, run);
    let fired = hook.wait_for("/hook", 1, T)[0].body.clone();
    relay.wait_events(run, "alert_delivery", 1, T);
    relay.restart();
    let alerts = relay.get_ok(&format!("/api/runs/{run}/alerts"));
    assert_eq!(alerts["active"].as_array().unwrap().len(), 1, "{alerts}");
    assert!(
        !alerts["history"].as_array().unwrap().is_empty(),
        "{alerts}"
    );
    // Still NaN after the restart: no second notice.
    relay.post_event(
        run,
        &json!({"event": "batch_end", "batch_idx": 3, "loss": "NaN"}),
    );
    // A finite value resolves the alert that fired before the restart. The engine takes a
    // run's events in order, so once the resolution is recorded the NaN before it has been
    // evaluated: had it fired again, its record would be there too.
    relay.post_event(
        run,
        &json!({"event": "batch_end", "batch_idx": 4, "loss": 0.5}),
    );
    let resolved = hook.wait_body("the resolved notice", T, |b| b["state"] == "resolved");
    assert_eq!(resolved.body["alert_id"], fired["alert_id"]);
    assert_eq!(relay.events_of(run, "alert_fired").len(), 1);
    let fired_notices = hook
        .requests()
        .iter()
        .filter(|r| r.body["state"] == "fired")
        .count();
    assert_eq!(fired_notices, 1, "{:?}", hook.requests());
}

#[test]
fn two_relays_on_one_postgresql_database_send_one_notice() {
    let Some(_) = pg_server_or_skip("alerts_two_relays") else {
        return;
    };
    let db = fresh_database("alerts-two");
    let dir = TempDir::new("alerts-pg");
    let hook = WebhookReceiver::start();
    let rules = "[[alerts.rules]]\nname = \"nan\"\nkind = \"non_finite\"\naction = \"pause\"\ncooldown_s = 0\n";
    let cfg = alerts_config_file(
        &dir.0,
        &alerts_toml(rules, &webhook_channel("hook", &hook.url("/hook"))),
    );
    let extra = ["--alerts", cfg.to_str().unwrap()];
    let a = Relay::start_on(&db, &dir.0.join("a"), &extra);
    let b = Relay::start_on(&db, &dir.0.join("b"), &extra);
    let run = "pg-run";
    let mut trainer = python_trainer(&nan_trainer(15), &a.url, run);
    hook.wait_for("/hook", 1, T);
    wait_until("the run paused, seen by both", T, || {
        let pa = a.get_ok(&format!("/api/runs/{run}"))["status"] == "paused";
        let pb = b.get(&format!("/api/runs/{run}")).1["status"] == "paused";
        (pa && pb).then_some(())
    });
    // Every event so far evaluated by relay A's engine (it follows the run: the trainer
    // posts there). Then a barrier through relay B: B meets the run there (restoring its
    // alerts from the database, so the active NaN alert does not fire again), and A sees
    // B's batch through the database too; both decide the barrier's record, one stores
    // it and the other counts it stored elsewhere.
    a.alerts_barrier(run);
    b.alerts_barrier(run);
    let both = |m: &str| a.metric(m) + b.metric(m);
    wait_until("one relay found the other's record", T, || {
        (both("stepwatch_alert_records_elsewhere_total") >= 1.0).then_some(())
    });
    assert_eq!(
        both("stepwatch_alerts_fired_total"),
        3.0,
        "the NaN's and the two barriers', each stored once"
    );
    let nan_delivered = hook
        .requests()
        .iter()
        .filter(|r| r.body["rule"] == "nan")
        .count();
    assert_eq!(nan_delivered, 1, "{:?}", hook.requests());
    for r in [&a, &b] {
        let fired = r.events_of(run, "alert_fired");
        assert_eq!(fired.iter().filter(|f| f["rule"] == "nan").count(), 1);
        assert_eq!(r.events_of(run, "alert_delivery").len(), 1);
        let st = r.get_ok(&format!("/api/runs/{run}"));
        let pauses = st["commands"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["command"] == "pause")
            .count();
        assert_eq!(pauses, 1, "{st}");
    }
    let _ = trainer.kill();
    let _ = trainer.wait();
}
