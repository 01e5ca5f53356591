//! The relay on PostgreSQL (`stepwatch serve --database`): several relay processes
//! sharing one database, a relay killed mid-run behind a load balancer, PostgreSQL
//! restarted under ingest, `stepwatch migrate` from SQLite, and TLS to the database.
//!
//! Needs a PostgreSQL server: `STEPWATCH_TEST_PG=postgres://USER@HOST:PORT` (and its
//! programs, found on PATH, in /usr/lib/postgresql/*/bin or `STEPWATCH_TEST_PG_BIN`, for
//! the restart test). `cargo xtask test` starts one; without it each test prints why it
//! is skipped, unless `STEPWATCH_REQUIRE_POSTGRES=1`, which makes them fail instead.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use stepwatch_e2e::{
    fresh_database, fresh_database_on, no_alerts_file, pg_bin_dir, pg_required, pg_server_or_skip,
    python_trainer, sse_follow_ids, wait_until, FailoverProxy, PgCluster, Relay, SseFollower,
    TempDir, TestCerts, CONTROLLABLE_TRAINER,
};

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";
const WAIT: Duration = Duration::from_secs(30);

/// The relay's `stepwatch_sse_streams` gauge.
fn open_streams(relay: &Relay) -> u64 {
    ureq::get(&format!("{}/metrics", relay.url))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("stepwatch_sse_streams "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

/// `(src, seq)` of every stored event that has both, in id order.
fn origins(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter_map(|e| Some((e["src"].as_str()?.to_string(), e["seq"].as_u64()?)))
        .collect()
}

/// Asserts each `(src, seq)` is stored once and each sender's events are in seq order.
fn assert_each_origin_once_in_order(events: &[Value]) {
    let all = origins(events);
    let distinct: HashSet<&(String, u64)> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "some (src, seq) is stored twice");
    let mut per_src: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (src, seq) in &all {
        per_src.entry(src).or_default().push(*seq);
    }
    for (src, seqs) in per_src {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "events of {src} are not stored in seq order"
        );
    }
}

fn ids_of(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["id"].as_u64()).collect()
}

/// POSTs a command; returns (status, body).
fn post_command(relay: &Relay, run: &str, body: &str) -> (u16, Value) {
    match ureq::post(&format!("{}/api/runs/{run}/commands", relay.url))
        .set("Content-Type", JSON)
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("POST command: {e}"),
    }
}

/// The command `id` in the run's state on `relay`, if listed.
fn command_in_state(relay: &Relay, run: &str, id: &str) -> Option<Value> {
    let (s, state) = relay.get(&format!("/api/runs/{run}"));
    if s != 200 {
        return None;
    }
    state["commands"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
}

/// NDJSON `log` events of sender `src` with seqs `seqs`.
/// Two relays on one fresh database (with the data dir holding their caches, and the
/// database's URL), or `None` after saying why when there is no PostgreSQL server.
fn two_relays(test: &str, tag: &str, extra: &[&str]) -> Option<((TempDir, String), Relay, Relay)> {
    pg_server_or_skip(test)?;
    let db = fresh_database(tag);
    let dir = TempDir::new(&format!("pg-{tag}"));
    let a = Relay::start_on(&db, &dir.0.join("a"), extra);
    let b = Relay::start_on(&db, &dir.0.join("b"), extra);
    Some(((dir, db), a, b))
}

fn log_batch(src: &str, seqs: std::ops::RangeInclusive<u64>) -> String {
    seqs.map(|s| {
        format!("{{\"event\":\"log\",\"src\":\"{src}\",\"seq\":{s},\"message\":\"{src}-{s}\"}}\n")
    })
    .collect()
}

#[test]
fn two_relays_on_one_database_give_one_gapless_exactly_once_history_and_both_stream_it() {
    let Some(((_dir, _db), a, b)) = two_relays("two_relays_on_one_database", "two-relays", &[])
    else {
        return;
    };
    const RUN: &str = "shared";
    const THREADS: u64 = 6;
    const BATCHES: u64 = 20;
    const PER: u64 = 25;
    let n = THREADS * BATCHES * PER;

    // One subscriber on each relay, connected before anything is posted.
    let deadline = Instant::now() + Duration::from_secs(120);
    let subscribers: Vec<_> = [&a, &b]
        .iter()
        .map(|r| {
            let url = format!("{}/api/runs/{RUN}/stream", r.url);
            std::thread::spawn(move || sse_follow_ids(&url, n, deadline))
        })
        .collect();
    for r in [&a, &b] {
        wait_until("the subscriber's stream open", WAIT, || {
            (open_streams(r) >= 1).then_some(())
        });
    }

    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (a, b) = (&a, &b);
            s.spawn(move || {
                let src = format!("w{t}");
                for k in 0..BATCHES {
                    let seqs = k * PER + 1..=(k + 1) * PER;
                    let body = log_batch(&src, seqs.clone());
                    // Alternate relays per batch, and per thread.
                    let (first, other) = if (t + k) % 2 == 0 { (a, b) } else { (b, a) };
                    if k % 5 == 3 {
                        // A retry of the previous batch that also carries this one.
                        let prev = log_batch(&src, (k - 1) * PER + 1..=k * PER);
                        let (s, v) = first.post(RUN, &format!("{prev}{body}"), NDJSON);
                        assert_eq!(s, 200, "{v}");
                        assert_eq!(
                            (v["accepted"].as_u64(), v["duplicates"].as_u64()),
                            (Some(PER), Some(PER)),
                            "retry + new batch of {src}: {v}"
                        );
                    } else {
                        let (s, v) = first.post(RUN, &body, NDJSON);
                        assert_eq!(s, 200, "{v}");
                        assert_eq!(
                            (v["accepted"].as_u64(), v["duplicates"].as_u64()),
                            (Some(PER), Some(0)),
                            "batch {k} of {src}: {v}"
                        );
                    }
                    if k % 4 == 1 {
                        // The same batch again on the other relay, as an SDK retries a
                        // request whose answer it did not get.
                        let (s, v) = other.post(RUN, &body, NDJSON);
                        assert_eq!(s, 200, "{v}");
                        assert_eq!(
                            (v["accepted"].as_u64(), v["duplicates"].as_u64()),
                            (Some(0), Some(PER)),
                            "a retry on the other relay was stored again: {v}"
                        );
                    }
                }
            });
        }
    });

    let expected: Vec<u64> = (1..=n).collect();
    let from_a = a.all_events(RUN);
    assert_eq!(ids_of(&from_a), expected, "ids are not exactly 1..={n}");
    assert_each_origin_once_in_order(&from_a);
    let mut want: Vec<(String, u64)> = (0..THREADS)
        .flat_map(|t| (1..=BATCHES * PER).map(move |s| (format!("w{t}"), s)))
        .collect();
    let mut got = origins(&from_a);
    want.sort();
    got.sort();
    assert_eq!(got, want, "stored events are not every (src, seq) once");
    for e in &from_a {
        assert_eq!(
            e["message"].as_str().unwrap(),
            format!("{}-{}", e["src"].as_str().unwrap(), e["seq"]),
            "an event's body does not belong to its (src, seq)"
        );
    }
    assert_eq!(
        b.all_events(RUN),
        from_a,
        "the relays serve different histories"
    );
    let state_a = a.get_ok(&format!("/api/runs/{RUN}"));
    assert_eq!(state_a["last_id"], n);
    assert_eq!(state_a["event_count"], n);
    wait_until("the same run state on both relays", WAIT, || {
        (b.get_ok(&format!("/api/runs/{RUN}")) == state_a).then_some(())
    });
    for (name, s) in ["A", "B"].iter().zip(subscribers) {
        assert_eq!(
            s.join().unwrap(),
            expected,
            "the subscriber on relay {name} missed, repeated or reordered events"
        );
    }
    let summaries = |r: &Relay| r.get_ok("/api/runs");
    assert_eq!(summaries(&a), summaries(&b));
}

#[test]
fn commands_posted_on_one_relay_reach_a_trainer_on_another_and_its_answers_come_back() {
    let Some(((_dir, _db), a, b)) = two_relays("commands_across_relays", "commands", &[]) else {
        return;
    };
    const RUN: &str = "xctl";
    let mut trainer = python_trainer(CONTROLLABLE_TRAINER, &a.url, RUN);
    let state_b = || b.get(&format!("/api/runs/{RUN}"));
    let step_b = || state_b().1["step"].as_u64().unwrap_or(0);
    let status_b = |want: &str| {
        let want = want.to_string();
        move || (state_b().1["status"] == want.as_str()).then_some(())
    };
    wait_until("relay B sees the trainer's steps", WAIT, || {
        (step_b() > 5).then_some(())
    });

    // Pause from B: the trainer (on A) stops stepping; B shows paused from its ack.
    let (s, v) = post_command(&b, RUN, r#"{"command":"pause"}"#);
    assert_eq!(s, 202, "{v}");
    let pause = v["command_id"].as_str().unwrap().to_string();
    wait_until("paused, seen on B", WAIT, status_b("paused"));
    let paused_at = step_b();
    std::thread::sleep(Duration::from_millis(500)); // watch the counter stand still
    assert_eq!(step_b(), paused_at, "training went on while paused");
    assert_eq!(
        a.get_ok(&format!("/api/runs/{RUN}"))["status"],
        "paused",
        "relay A disagrees"
    );

    // Ask from B while paused: the handler's output comes back to B.
    let (s, v) = post_command(
        &b,
        RUN,
        r#"{"command":"ask","args":{"input":"hello model"}}"#,
    );
    assert_eq!(s, 202, "{v}");
    let ask = v["command_id"].as_str().unwrap().to_string();
    let answered = wait_until("the ask answered, seen on B", WAIT, || {
        command_in_state(&b, RUN, &ask).filter(|c| c["status"] == "done")
    });
    assert!(
        answered["output"].to_string().contains("HELLO MODEL"),
        "{answered}"
    );

    // Resume from A this time, then stop from B.
    let (s, v) = post_command(&a, RUN, r#"{"command":"resume"}"#);
    assert_eq!(s, 202, "{v}");
    let resume = v["command_id"].as_str().unwrap().to_string();
    wait_until("running again, seen on B", WAIT, status_b("running"));
    wait_until("steps advance again", WAIT, || {
        (step_b() > paused_at).then_some(())
    });
    let (s, v) = post_command(&b, RUN, r#"{"command":"stop"}"#);
    assert_eq!(s, 202, "{v}");
    let stop = v["command_id"].as_str().unwrap().to_string();
    wait_until("stopped, seen on B", WAIT, status_b("stopped"));
    let exit = wait_until("the trainer exits", WAIT, || trainer.try_wait().unwrap());
    assert!(exit.success(), "trainer: {exit}");

    // Every command is done, on both relays, from the trainer's own answers.
    for id in [&pause, &ask, &resume, &stop] {
        for r in [&a, &b] {
            wait_until(&format!("{id} done on {}", r.url), WAIT, || {
                command_in_state(r, RUN, id).filter(|c| c["status"] == "done")
            });
        }
    }
    let acks = b.get_ok(&format!(
        "/api/runs/{RUN}/events?event=command_ack&limit=1000"
    ));
    for id in [&pause, &ask, &resume, &stop] {
        assert!(
            acks.as_array()
                .unwrap()
                .iter()
                .any(|e| e["command_id"] == id.as_str() && e["status"] == "done"),
            "no done ack for {id} on B: {acks}"
        );
    }
    // The commands posted on B are in the run's stream as A serves it too.
    let cmds = a.get_ok(&format!("/api/runs/{RUN}/events?event=command&limit=1000"));
    let on_a: Vec<&str> = cmds
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["command_id"].as_str())
        .collect();
    for id in [&pause, &ask, &stop] {
        assert!(on_a.contains(&id.as_str()), "{id} missing on A: {cmds}");
    }
    assert_eq!(a.all_events(RUN), b.all_events(RUN));
}

#[test]
fn kill_9_of_one_relay_behind_a_load_balancer_loses_nothing_and_streams_move_to_the_other() {
    let Some(((_dir, _db), mut a, b)) = two_relays("kill_9_of_one_relay", "kill9", &[]) else {
        return;
    };
    let proxy = FailoverProxy::in_front_of(&[&a, &b]);
    const RUN: &str = "k9";
    let total = 4000u64;
    let killed = Arc::new(AtomicBool::new(false));
    // The trainer: the Rust SDK through the load balancer, retrying through the crash.
    // Its second half waits for the kill, so that the crash falls mid-run however fast
    // or slow the machine is.
    let trainer = std::thread::spawn({
        let (url, killed) = (proxy.url.clone(), killed.clone());
        move || {
            let client = rust_trainer(&url, RUN);
            for i in 0..total {
                while i == total / 2 && !killed.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                client.batch_end(0, i, i + 1, 1.0 / (i as f64 + 1.0), 0.01);
                std::thread::sleep(Duration::from_micros(500));
            }
            assert!(client.close(Duration::from_secs(60)), "not all delivered");
        }
    });
    // A dashboard reading from A, moving to B when A is gone.
    let subscriber = SseFollower::start(&[
        format!("{}/api/runs/{RUN}/stream", a.url),
        format!("{}/api/runs/{RUN}/stream", b.url),
    ]);
    wait_until("the trainer streaming", WAIT, || {
        let (_, state) = b.get(&format!("/api/runs/{RUN}"));
        state["last_id"].as_u64().filter(|id| *id >= 1000)
    });
    wait_until("the subscriber reading from A", WAIT, || {
        (subscriber.ids().len() >= 500).then_some(())
    });
    a.kill(); // SIGKILL, not started again
    killed.store(true, Ordering::SeqCst);
    trainer.join().unwrap();

    let events = b.all_events(RUN);
    assert_eq!(
        ids_of(&events),
        (1..=total).collect::<Vec<_>>(),
        "lost or doubled"
    );
    let idx: Vec<u64> = events
        .iter()
        .map(|e| e["batch_idx"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, (0..total).collect::<Vec<_>>(), "out of order");
    assert_each_origin_once_in_order(&events);
    let seen = subscriber.wait_for(total as usize, Duration::from_secs(60));
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "the subscriber missed or repeated events across the failover"
    );
    let sources = subscriber.sources();
    assert_eq!(sources[0].1, 0, "the subscriber did not start on A");
    assert_eq!(
        sources.last().unwrap().1,
        1,
        "the subscriber did not move to B"
    );
    assert!(
        proxy.connections()[1] > 0,
        "no request went to B: {:?}",
        proxy.connections()
    );
}

/// One POST of the direct writer: status, or 0 for a transport error.
/// A trainer on the Rust SDK for `run` at `url`: no spool (so what is acknowledged is
/// what the relay stored), no command stream.
/// True (after saying why) when a private cluster cannot be started: the server
/// programs are missing and PostgreSQL is not required.
fn no_private_cluster(test: &str) -> bool {
    if pg_bin_dir().is_some() {
        return false;
    }
    assert!(
        !pg_required(),
        "STEPWATCH_REQUIRE_POSTGRES=1 but PostgreSQL's initdb/pg_ctl were not found \
         (PATH, /usr/lib/postgresql/*/bin, STEPWATCH_TEST_PG_BIN)"
    );
    eprintln!("skipping {test}: no initdb/pg_ctl");
    true
}

fn rust_trainer(url: &str, run: &str) -> stepwatch_client::Client {
    stepwatch_client::Client::with_options(
        url,
        run,
        stepwatch_client::Options {
            spool_dir: None,
            commands: false,
            ..Default::default()
        },
    )
}

fn post_status(url: &str, body: &str) -> u16 {
    match ureq::post(url)
        .timeout(Duration::from_secs(30))
        .set("Content-Type", NDJSON)
        .send_string(body)
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(_) => 0,
    }
}

/// The run of the PostgreSQL restart test.
const OUTAGE_RUN: &str = "outage";

/// The trainer: the Rust SDK on `url`, until `stop`; returns how many it emitted.
fn spawn_trainer(url: String, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let client = rust_trainer(&url, OUTAGE_RUN);
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            client.batch_end(0, i, i + 1, 1.0, 0.01);
            i += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(client.close(Duration::from_secs(60)), "not all delivered");
        i
    })
}

/// A direct writer to the events at `url`: batches of 10 with src "direct", each
/// retried until a 2xx (as an SDK does), until `stop`; counts the batches stored in
/// `acked` and the answers it got in `statuses`; returns how many batches it stored.
fn spawn_direct_writer(
    url: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    statuses: Arc<Mutex<BTreeMap<u16, u64>>>,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut k = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let body = log_batch("direct", k * 10 + 1..=k * 10 + 10);
            let s = post_status(&url, &body);
            *statuses.lock().unwrap().entry(s).or_default() += 1;
            if (200..300).contains(&s) {
                k += 1;
                acked.store(k, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(20)); // pace
        }
        // Finish the batch in hand, as a retrying SDK would.
        let deadline = Instant::now() + WAIT;
        loop {
            let body = log_batch("direct", k * 10 + 1..=k * 10 + 10);
            if (200..300).contains(&post_status(&url, &body)) {
                k += 1;
                return k;
            }
            assert!(Instant::now() < deadline, "ingest did not come back");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// `GET /readyz`: the status and the body (0 and the error when the request failed).
fn ready(relay: &Relay) -> (u16, String) {
    match ureq::get(&format!("{}/readyz", relay.url)).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// 80 reads of the run on `relay`, 16 in parallel; the ones that failed.
fn failed_parallel_reads(relay: &Relay) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    (0..5)
                        .map(|_| relay.get(&format!("/api/runs/{OUTAGE_RUN}")))
                        .filter(|(s, _)| *s != 200)
                        .map(|(s, v)| format!("{s} {v}"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Both relays serve the same gapless history of everything the trainer (`emitted`
/// events) and the direct writer (`direct` batches) stored, each event once and in
/// order, and B's subscriber saw all of it live.
fn assert_nothing_lost(a: &Relay, b: &Relay, subscriber: &SseFollower, emitted: u64, direct: u64) {
    const RUN: &str = OUTAGE_RUN;
    let n = emitted + direct * 10;
    let events = all_events_retrying(a, RUN);
    assert_eq!(
        ids_of(&events),
        (1..=n).collect::<Vec<_>>(),
        "not gapless 1..={n} ({emitted} from the trainer, {direct} direct batches)"
    );
    assert_each_origin_once_in_order(&events);
    let direct_seqs: Vec<u64> = origins(&events)
        .into_iter()
        .filter(|(src, _)| src == "direct")
        .map(|(_, seq)| seq)
        .collect();
    assert_eq!(direct_seqs, (1..=direct * 10).collect::<Vec<_>>());
    let batches: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "batch_end")
        .map(|e| e["batch_idx"].as_u64().unwrap())
        .collect();
    assert_eq!(batches, (0..emitted).collect::<Vec<_>>());
    assert_eq!(
        all_events_retrying(b, RUN),
        events,
        "relay B serves another history"
    );
    // B's subscriber saw everything live, through both outages.
    let seen = subscriber.wait_for(n as usize, Duration::from_secs(60));
    assert_eq!(
        seen,
        (1..=n).collect::<Vec<_>>(),
        "the subscriber on B missed or repeated events across the restarts"
    );
}

#[test]
fn postgres_restarting_under_ingest_answers_503_then_resumes_by_itself_losing_nothing() {
    if no_private_cluster("postgres_restarting_under_ingest") {
        return;
    }
    // A private server: stopping it must not disturb the shared one.
    let cluster = PgCluster::start_new("restart");
    let db = fresh_database_on(&cluster.url(), "restart");
    let dir = TempDir::new("pg-restart");
    let a = Relay::start_on_logged(&db, &dir.0.join("a"), &[], &dir.0.join("a.log"));
    let b = Relay::start_on_logged(&db, &dir.0.join("b"), &[], &dir.0.join("b.log"));
    const RUN: &str = OUTAGE_RUN;
    // A dashboard on B, which learns of A's events through the database.
    let subscriber = SseFollower::start(&[format!("{}/api/runs/{RUN}/stream", b.url)]);
    let stop = Arc::new(AtomicBool::new(false));
    let trainer = spawn_trainer(a.url.clone(), stop.clone());
    let acked = Arc::new(AtomicU64::new(0));
    let statuses: Arc<Mutex<BTreeMap<u16, u64>>> = Arc::default();
    let writer = spawn_direct_writer(
        format!("{}/api/runs/{RUN}/events", a.url),
        stop.clone(),
        acked.clone(),
        statuses.clone(),
    );
    let acked_now = || acked.load(Ordering::SeqCst);
    let resumes = |what: &str| {
        let from = acked_now();
        wait_until(what, Duration::from_secs(60), || {
            (acked_now() >= from + 5).then_some(())
        });
    };
    resumes("ingest running");

    // 1: a fast restart (pg_ctl stop -m fast, start).
    cluster.restart();
    resumes("ingest resuming by itself after a restart");

    // 2: a longer outage: ingest must answer 503 meanwhile, then come back by itself.
    let before = statuses.lock().unwrap().get(&503).copied().unwrap_or(0);
    assert_eq!(ready(&a).0, 200);
    cluster.stop();
    wait_until("a 503 while PostgreSQL is down", WAIT, || {
        (statuses.lock().unwrap().get(&503).copied().unwrap_or(0) > before).then_some(())
    });
    // Readiness says so, with the reason, for a load balancer's health check.
    let (status, why) = ready(&b);
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("storage"), "{why}");
    cluster.start();
    resumes("ingest resuming by itself after an outage");
    wait_until("relay B ready again", WAIT, || {
        (ready(&b).0 == 200).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let emitted = trainer.join().unwrap();
    let direct = writer.join().unwrap();
    let statuses = statuses.lock().unwrap().clone();
    assert!(
        statuses.get(&503).copied().unwrap_or(0) >= 1,
        "no 503 seen: {statuses:?}"
    );
    for s in statuses.keys() {
        assert!(
            (200..300).contains(s) || *s == 503,
            "ingest answered {s} during the outage (want 503 with nothing stored): {statuses:?}"
        );
    }

    // Reads work at once too, many in parallel: no request may be handed a pooled
    // connection that the restart killed. (Checked now, reported last.)
    let failed_reads = failed_parallel_reads(&a);
    assert_nothing_lost(&a, &b, &subscriber, emitted, direct);
    assert_eq!(a.get("/healthz").0, 200);
    assert!(
        failed_reads.is_empty(),
        "{} of 80 reads failed after PostgreSQL was back and ingest had resumed: {:?}",
        failed_reads.len(),
        failed_reads
    );
}

/// [`Relay::all_events`], retrying a page that fails (the checks of what was stored
/// must not depend on whether a read right after an outage succeeds).
fn all_events_retrying(relay: &Relay, run: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let after = out.last().and_then(|e| e["id"].as_u64()).unwrap_or(0);
        let page = wait_until("a page of events", WAIT, || {
            let (s, v) = relay.get(&format!("/api/runs/{run}/events?after={after}&limit=1000"));
            (s == 200).then_some(v)
        });
        let page = page.as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Posts a small but complete history to `relay`: finished, running and failed runs,
/// metrics, checkpoints, logs, system samples, a NaN loss, commands and their answers,
/// and events with `(src, seq)`.
fn post_history(relay: &Relay) {
    let post = |run: &str, body: &str| {
        let (s, v) = relay.post(run, body, NDJSON);
        assert_eq!(s, 200, "{run}: {v}");
    };
    // "done": two epochs, batch_end with metrics, checkpoints, completed.
    let mut body = String::from(
        r#"{"event":"training_start","src":"py-1","seq":1,"total_epochs":2,"total_batches":1500,"name":"finished","config":{"lr":0.01,"layers":[4,4]}}
"#,
    );
    let mut seq = 1;
    for epoch in 1..=2u64 {
        body.push_str(&format!(
            "{{\"event\":\"epoch_start\",\"epoch\":{epoch},\"total_epochs\":2}}\n"
        ));
        for b in 0..1500u64 {
            seq += 1;
            let step = (epoch - 1) * 1500 + b + 1;
            let loss = if step == 2222 {
                "\"NaN\"".to_string()
            } else {
                format!("{}", 2.0 / step as f64)
            };
            body.push_str(&format!(
                "{{\"event\":\"batch_end\",\"src\":\"py-1\",\"seq\":{seq},\"epoch\":{epoch},\"batch_idx\":{b},\"step\":{step},\"loss\":{loss},\"lr\":0.001,\"metrics\":{{\"grad_norm\":{}}},\"tokens_per_s\":{}}}\n",
                1.0 + (step % 7) as f64 / 10.0,
                1000 + step % 13
            ));
            if step % 500 == 0 {
                body.push_str(&format!(
                    "{{\"event\":\"metric_update\",\"name\":\"val/acc\",\"value\":{},\"step\":{step}}}\n",
                    step as f64 / 3000.0
                ));
            }
        }
        body.push_str(&format!(
            "{{\"event\":\"epoch_end\",\"epoch\":{epoch},\"metrics\":{{\"avg_loss\":{},\"val_loss\":{}}}}}\n",
            1.0 / epoch as f64,
            1.1 / epoch as f64
        ));
        body.push_str(&format!(
            "{{\"event\":\"checkpoint_saved\",\"checkpoint_path\":\"/ckpt/e{epoch}.pt\",\"epoch\":{epoch},\"step\":{},\"size_bytes\":1234,\"metrics\":{{\"val_loss\":{}}}}}\n",
            epoch * 1500,
            1.1 / epoch as f64
        ));
    }
    body.push_str(r#"{"event":"log","level":"warning","message":"grad norm clipped","logger":"trainer"}
{"event":"system","cpu_percent":73.5,"mem_used_bytes":17179869184,"mem_total_bytes":68719476736,"gpus":[{"index":0,"name":"GPU","util_percent":97.0}]}
{"event":"training_end","status":"completed"}
"#);
    post("done", &body);

    // "live": running, a pause answered (accepted, then done), a stop still open.
    post(
        "live",
        r#"{"event":"training_start","total_epochs":1,"total_batches":100}
{"event":"batch_end","batch_idx":0,"loss":1.5,"lr":0.1}
{"event":"checkpoint_saved","checkpoint_path":"/ckpt/live.pt","epoch":1,"step":1}
"#,
    );
    let (s, v) = post_command(relay, "live", r#"{"command":"pause"}"#);
    assert_eq!(s, 202, "{v}");
    let pause = v["command_id"].as_str().unwrap().to_string();
    post(
        "live",
        &format!(
            "{{\"event\":\"command_ack\",\"command_id\":\"{pause}\",\"command\":\"pause\",\"status\":\"accepted\"}}\n\
             {{\"event\":\"command_ack\",\"command_id\":\"{pause}\",\"command\":\"pause\",\"status\":\"done\"}}\n\
             {{\"event\":\"batch_end\",\"batch_idx\":1,\"loss\":1.25,\"lr\":0.1}}\n"
        ),
    );
    let (s, v) = post_command(
        relay,
        "live",
        r#"{"command":"load_checkpoint","args":{"path":"/ckpt/live.pt"}}"#,
    );
    assert_eq!(s, 202, "{v}");
    let (s, v) = post_command(relay, "live", r#"{"command":"stop"}"#);
    assert_eq!(s, 202, "{v}");

    // "crashed": failed with an error and traceback.
    post(
        "crashed",
        r#"{"event":"training_start","total_epochs":3}
{"event":"batch_end","batch_idx":0,"loss":"Infinity"}
{"event":"error_occurred","message":"CUDA out of memory","traceback":"Traceback (most recent call last):\n  File \"train.py\", line 10\nRuntimeError: CUDA out of memory","fatal":true}
{"event":"training_end","status":"failed"}
"#,
    );
}

/// An image for `run`: its bytes uploaded, its event posted; returns the bytes and hash.
fn post_image(relay: &Relay, run: &str) -> (Vec<u8>, String) {
    let img = stepwatch_e2e::png(12, 9, |x, y| [x as u8 * 20, y as u8 * 25, 99]);
    let sha = stepwatch_e2e::sha256_hex(&img);
    let (s, v) = stepwatch_e2e::put_media(&relay.url, run, &img, None, "image/png");
    assert_eq!(s, 200, "{v}");
    let image = format!(r#"{{"event":"image","name":"recon","media":"{sha}"}}"#);
    let (s, v) = relay.post(run, &image, JSON);
    assert_eq!(s, 200, "{v}");
    (img, sha)
}

#[test]
fn migrate_copies_a_sqlite_history_into_postgres_exactly_and_refuses_to_copy_twice() {
    let Some(_) = pg_server_or_skip("migrate") else {
        return;
    };
    let dir = TempDir::new("pg-migrate");
    let sqlite_dir = dir.0.join("sqlite");
    // No alert rules: the history's NaN and failure would have each relay add records at
    // a moment of its own, racing the snapshots.
    let quiet = no_alerts_file(&dir.0.join("cfg"));
    let quiet = ["--alerts", quiet.to_str().unwrap()];
    let mut old = Relay::start_sqlite(&sqlite_dir, &quiet);
    post_history(&old);
    let (img, sha) = post_image(&old, "done");
    let runs = ["crashed", "done", "live"];
    // What the SQLite relay serves.
    let snapshot = |r: &Relay| -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let mut list = r.get_ok("/api/runs").as_array().unwrap().clone();
        list.sort_by_key(|s| s["run"].as_str().unwrap_or_default().to_string());
        out.push(("runs".to_string(), Value::Array(list)));
        for run in runs {
            out.push((
                format!("{run} state"),
                r.get_ok(&format!("/api/runs/{run}")),
            ));
            out.push((format!("{run} events"), Value::Array(r.all_events(run))));
            out.push((
                format!("{run} metrics"),
                r.get_ok(&format!("/api/runs/{run}/series")),
            ));
        }
        // Every metric of every run, whole and zoomed, as the charts ask for them.
        for run in runs {
            let metrics = r.get_ok(&format!("/api/runs/{run}/series"));
            let names: Vec<String> = metrics
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|i| i["metric"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for metric in names {
                for q in ["points=50", "points=1000", "points=20&from=100&to=2000"] {
                    let path = format!("/api/runs/{run}/series?metric={metric}&{q}");
                    out.push((path.clone(), r.get_ok(&path)));
                }
            }
        }
        out
    };
    let before = snapshot(&old);
    assert!(
        before
            .iter()
            .any(|(what, _)| what.starts_with("/api/runs/done/series?metric=loss&")),
        "the loss series of run done is not listed"
    );
    let total_events: usize = runs.iter().map(|run| old.all_ids(run).len()).sum();
    assert!(total_events > 3000, "{total_events}");
    old.terminate(Duration::from_secs(10))
        .expect("the SQLite relay did not stop");

    let db = fresh_database("migrate");
    let migrate = || {
        std::process::Command::new(stepwatch_e2e::relay_bin())
            .args(["migrate", "--data-dir"])
            .arg(&sqlite_dir)
            .args(["--database", &db])
            .env_remove("STEPWATCH_DATABASE")
            .output()
            .unwrap()
    };
    let out = migrate();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "migrate failed: {said}");
    assert!(
        said.contains(&format!("{} runs", runs.len()))
            && said.contains(&format!("{total_events} events")),
        "the summary does not count {} runs and {total_events} events: {said}",
        runs.len()
    );

    assert!(said.contains("1 media items"), "{said}");

    // A relay on the database (and an empty data dir) serves exactly the same.
    let new = Relay::start_on(&db, &dir.0.join("pg-cache"), &quiet);
    let (s, _, bytes) = stepwatch_e2e::get_media(&new.url, "done", &sha, &[]);
    assert_eq!(
        (s, bytes == img),
        (200, true),
        "the image's bytes were not copied"
    );
    let after = snapshot(&new);
    assert_eq!(before.len(), after.len());
    for ((what, want), (_, got)) in before.iter().zip(&after) {
        assert_eq!(got, want, "{what} differs after the migration");
    }
    // The dedup state came along: a retry of an event sent before is not stored again.
    let (s, v) = new.post(
        "done",
        r#"{"event":"batch_end","src":"py-1","seq":5,"batch_idx":3,"loss":1}"#,
        JSON,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(1)),
        "a retry from before the migration was stored again: {v}"
    );
    // New events continue the ids.
    let last = new.get_ok("/api/runs/live")["last_id"].as_u64().unwrap();
    let (s, v) = new.post("live", r#"{"event":"log","message":"after"}"#, JSON);
    assert_eq!((s, v["last_id"].as_u64()), (200, Some(last + 1)), "{v}");
    drop(new);

    // A second copy into the same database is refused, naming a run that exists.
    let out = migrate();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "a second migrate succeeded: {said}");
    assert!(
        runs.iter().any(|run| said.contains(run)),
        "the refusal does not name the run: {said}"
    );
}

/// GET `path` with a session cookie; the status.
fn status_with_cookie(relay: &Relay, cookie: &str, path: &str) -> u16 {
    match ureq::get(&format!("{}{path}", relay.url))
        .set("Cookie", cookie)
        .timeout(Duration::from_secs(5))
        .call()
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("GET {path}: {e}"),
    }
}

#[test]
fn a_browser_signed_in_on_one_relay_is_signed_in_on_the_other_until_it_signs_out() {
    let users = TempDir::new("pg-sessions-config");
    let config = stepwatch_e2e::auth_config(&users.0, "");
    let config = config.to_str().unwrap();
    let Some(((dir, db), a, b)) = two_relays("sessions_shared", "sessions", &["--config", config])
    else {
        return;
    };
    let r = ureq::post(&format!("{}/api/login", a.url))
        .send_json(serde_json::json!({ "name": "otto", "password": "otto-pw" }))
        .unwrap();
    let cookie = r
        .header("Set-Cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(status_with_cookie(&a, &cookie, "/api/runs"), 200);
    // Relay B knows the session (a load balancer may send the next request anywhere).
    wait_until("relay B knows the session", WAIT, || {
        (status_with_cookie(&b, &cookie, "/api/me") == 200).then_some(())
    });
    let me: Value = ureq::get(&format!("{}/api/me", b.url))
        .set("Cookie", &cookie)
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(me["name"], "otto", "{me}");
    assert_eq!(me["role"], "operator", "{me}");
    // A made-up cookie is refused by both.
    assert_eq!(
        status_with_cookie(&b, "stepwatch_session=0123", "/api/runs"),
        401
    );
    // A dashboard's stream on A, open when the user signs out on B.
    let stream = ureq::get(&format!("{}/api/stream", a.url))
        .set("Cookie", &cookie)
        .timeout(Duration::from_secs(30))
        .call()
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(&mut stream.into_reader(), &mut body);
        Instant::now()
    });
    // Signing out on B ends the session on A too, and the stream on A with it.
    let signed_out = Instant::now();
    ureq::post(&format!("{}/api/logout", b.url))
        .set("Cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(status_with_cookie(&b, &cookie, "/api/runs"), 401);
    wait_until("relay A drops the session", WAIT, || {
        (status_with_cookie(&a, &cookie, "/api/runs") == 401).then_some(())
    });
    let ended = reader.join().unwrap().duration_since(signed_out);
    assert!(
        ended < Duration::from_secs(10),
        "the stream on A outlived the sign-out on B by {ended:?}"
    );
    // A relay started later learns the sessions already there.
    let r = ureq::post(&format!("{}/api/login", b.url))
        .send_json(serde_json::json!({ "name": "vera", "password": "vera-pw" }))
        .unwrap();
    let vera = r
        .header("Set-Cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let c = Relay::start_on(&db, &dir.0.join("c"), &["--config", config]);
    wait_until("relay C knows the earlier session", WAIT, || {
        (status_with_cookie(&c, &vera, "/api/runs") == 200).then_some(())
    });
}

#[test]
fn a_relay_that_loses_its_notifications_catches_up_from_the_table() {
    let Some(((_dir, db), a, b)) = two_relays("lost_notifications", "lost-notes", &[]) else {
        return;
    };
    const RUN: &str = "deaf";
    let post = |from: u64, to: u64| {
        let url = format!("{}/api/runs/{RUN}/events", a.url);
        assert_eq!(post_status(&url, &log_batch("t", from..=to)), 200);
    };
    post(1, 10);
    let follower = SseFollower::start(&[format!("{}/api/runs/{RUN}/stream", b.url)]);
    follower.wait_for(10, WAIT);
    // Cut every relay's listening connection: what A stores now is notified to nobody.
    let mut admin = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let cut = |admin: &mut postgres::Client| {
        admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE 'LISTEN%'",
                &[],
            )
            .unwrap()
            .len()
    };
    assert_eq!(cut(&mut admin), 2, "expected one listener per relay");
    post(11, 40);
    // B reconnects, reads what it missed from the table, and delivers it in order.
    let ids = follower.wait_for(40, WAIT);
    assert_eq!(ids, (1..=40).collect::<Vec<_>>());
    // And it hears notifications again afterwards.
    wait_until("B listening again", WAIT, || {
        let n: i64 = admin
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE 'LISTEN%'",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 2).then_some(())
    });
    post(41, 50);
    assert_eq!(follower.wait_for(50, WAIT), (1..=50).collect::<Vec<_>>());
}

/// Runs `stepwatch serve --database url`, which must refuse to start; what it said.
fn refused_start(url: &str) -> String {
    let dir = TempDir::new("pg-refused");
    let mut child = std::process::Command::new(stepwatch_e2e::relay_bin())
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&dir.0)
        .args(["--database", url])
        .env_remove("STEPWATCH_DATABASE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the relay started on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the relay exited 0 on {url}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `pg_hba.conf`'s TCP rules for a server that takes TCP connections over TLS only.
const TLS_ONLY: &str = "hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n\
                        hostnossl all all all reject";

/// A private PostgreSQL server for the TLS test, with one database.
struct TlsServer {
    cluster: PgCluster,
    port: u16,
    /// The database's name.
    name: String,
    dir: TempDir,
}

impl TlsServer {
    /// The database's URL at `host`, with the parameters `query`.
    fn at(&self, host: &str, query: &str) -> String {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("postgres://postgres@{host}:{}/{}{q}", self.port, self.name)
    }

    /// What the server says of the relay's connections (over its socket, which trusts).
    fn tls_of_relay_connections(&self) -> Vec<bool> {
        let mut c = postgres::Client::connect(
            &format!(
                "host={} port={} user=postgres dbname={}",
                self.cluster.dir().display(),
                self.port,
                self.name
            ),
            postgres::NoTls,
        )
        .unwrap();
        c.query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'stepwatch-relay'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    }
}

/// The URL parameters `sslmode=mode` with `root`'s CA as `sslrootcert`.
fn ca(mode: &str, root: &TestCerts) -> String {
    format!("sslmode={mode}&sslrootcert={}", root.ca.display())
}

/// The modes that connect to a server with `certs`, all encrypted.
fn assert_tls_accepted(srv: &TlsServer, certs: &TestCerts) {
    let accepted = [
        // libpq's default (prefer): encrypted because the server offers it.
        srv.at("127.0.0.1", ""),
        srv.at("127.0.0.1", "sslmode=require"),
        srv.at("localhost", &ca("verify-full", certs)),
        // verify-ca checks the chain, not the name.
        srv.at("127.0.0.1", &ca("verify-ca", certs)),
    ];
    for (i, url) in accepted.iter().enumerate() {
        let relay = Relay::start_on(url, &srv.dir.0.join(format!("relay-{i}")), &[]);
        let run = format!("tls-{i}");
        let (status, v) = relay.post(&run, r#"{"event":"log","message":"over tls"}"#, JSON);
        assert_eq!(status, 200, "{url}: {v}");
        assert_eq!(relay.all_ids(&run), vec![1], "{url}");
        let tls = srv.tls_of_relay_connections();
        assert!(
            !tls.is_empty() && tls.iter().all(|&on| on),
            "{url}: the relay's connections are not all encrypted: {tls:?}"
        );
        drop(relay);
    }
}

/// Connections the relay refuses, each with a message that says why.
fn assert_bad_tls_refused(srv: &TlsServer, certs: &TestCerts, stranger: &TestCerts) {
    // The name is checked under verify-full: the certificate names localhost only.
    let said = refused_start(&srv.at("127.0.0.1", &ca("verify-full", certs)));
    assert!(
        said.contains("cannot connect to PostgreSQL") && said.contains("not valid for name"),
        "{said}"
    );
    // A certificate from an authority the relay was not told to trust.
    let said = refused_start(&srv.at("localhost", &ca("verify-full", stranger)));
    assert!(
        said.contains("invalid peer certificate") && said.contains("sslrootcert"),
        "{said}"
    );
    // Without encryption this server refuses, and the relay says so.
    let said = refused_start(&srv.at("127.0.0.1", "sslmode=disable"));
    assert!(said.contains("no encryption"), "{said}");
    // Mistakes in the parameters are named.
    let said = refused_start(&srv.at("127.0.0.1", "sslmode=verify_full"));
    assert!(said.contains("sslmode=verify_full"), "{said}");
    let said = refused_start(&srv.at(
        "localhost",
        "sslmode=verify-full&sslrootcert=/nonexistent.pem",
    ));
    assert!(said.contains("sslrootcert /nonexistent.pem"), "{said}");
    // The system's CAs only with the name check, as libpq has it.
    let said = refused_start(&srv.at("localhost", "sslmode=require&sslrootcert=system"));
    assert!(said.contains("needs sslmode=verify-full"), "{said}");
    // A password in the URL is never printed, nor one in the URL's parameters.
    let said = refused_start(&format!(
        "postgres://postgres:hunter2@127.0.0.1:{}/{}?sslmode=disable",
        srv.port, srv.name
    ));
    assert!(
        !said.contains("hunter2") && said.contains("no encryption"),
        "{said}"
    );
    let said = refused_start(&format!(
        "postgres://postgres@127.0.0.1:{}/{}?password=hunter2&sslmode=disable",
        srv.port, srv.name
    ));
    assert!(
        !said.contains("hunter2") && said.contains("no encryption"),
        "{said}"
    );
}

/// Self-signed server certificates: trusted as themselves, their names still checked.
fn assert_self_signed_trusted(srv: &TlsServer, certs: &TestCerts) {
    // The PostgreSQL manual's quick setup: a self-signed server certificate that is its
    // own root. It is trusted as itself, and its name is still checked.
    let own = TestCerts::self_signed(&srv.dir.0.join("self-signed"), Some("DNS:localhost"));
    srv.cluster.enable_tls(&own, TLS_ONLY);
    let relay = Relay::start_on(
        &srv.at("localhost", &ca("verify-full", &own)),
        &srv.dir.0.join("relay-self-signed"),
        &[],
    );
    let (status, v) = relay.post("tls-own", r#"{"event":"log","message":"pinned"}"#, JSON);
    assert_eq!(status, 200, "{v}");
    drop(relay);
    let said = refused_start(&srv.at("127.0.0.1", &ca("verify-full", &own)));
    assert!(said.contains("not valid for name"), "{said}");
    // The first CA no longer vouches for this server.
    let said = refused_start(&srv.at("localhost", &ca("verify-ca", certs)));
    assert!(said.contains("invalid peer certificate"), "{said}");

    // The manual's setup exactly: no subjectAltName, the host in the CN only. As in
    // libpq, the CN names the host then.
    let cn_only = TestCerts::self_signed(&srv.dir.0.join("cn-only"), None);
    srv.cluster.enable_tls(&cn_only, TLS_ONLY);
    let relay = Relay::start_on(
        &srv.at("localhost", &ca("verify-full", &cn_only)),
        &srv.dir.0.join("relay-cn-only"),
        &[],
    );
    let (status, v) = relay.post("tls-cn", r#"{"event":"log","message":"by CN"}"#, JSON);
    assert_eq!(status, 200, "{v}");
    drop(relay);
    let said = refused_start(&srv.at("127.0.0.1", &ca("verify-full", &cn_only)));
    assert!(said.contains("not valid for"), "{said}");
}

#[test]
fn tls_to_postgresql_follows_libpq_sslmode_and_checks_the_server_certificate() {
    if no_private_cluster("tls_to_postgresql") {
        return;
    }
    // A private server that takes TCP connections over TLS only.
    let cluster = PgCluster::start_new("tls");
    let db = fresh_database_on(&cluster.url(), "tls");
    let name = db.rsplit('/').next().unwrap().to_string();
    let dir = TempDir::new("pg-tls");
    let certs = TestCerts::make(&dir.0.join("good"), "DNS:localhost");
    let stranger = TestCerts::make(&dir.0.join("stranger"), "DNS:localhost");
    cluster.enable_tls(&certs, TLS_ONLY);
    let port = cluster.port();
    let srv = TlsServer {
        cluster,
        port,
        name,
        dir,
    };
    assert_tls_accepted(&srv, &certs);
    assert_bad_tls_refused(&srv, &certs, &stranger);
    assert_self_signed_trusted(&srv, &certs);
}
