//! PostgreSQL backend tests (they need `STEPWATCH_TEST_PG`; skipped without it).

#![allow(clippy::unwrap_used)]
use super::schema::MIGRATIONS;
use super::*;
use postgres::Client;

/// A fresh database on the test server (`STEPWATCH_TEST_PG`), or `None` to skip.
fn fresh_database(tag: &str) -> Option<String> {
    let Ok(server) = std::env::var("STEPWATCH_TEST_PG") else {
        assert!(
            std::env::var("STEPWATCH_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "STEPWATCH_TEST_PG is not set but PostgreSQL tests are required"
        );
        eprintln!("skipped: no PostgreSQL (set STEPWATCH_TEST_PG=postgres://…)");
        return None;
    };
    let name = format!(
        "sw_unit_{tag}_{}_{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let admin = format!("{}/postgres", server.trim_end_matches('/'));
    std::thread::spawn(move || {
        let mut c = Client::connect(&admin, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        format!("{}/{name}", server.trim_end_matches('/'))
    })
    .join()
    .ok()
}

fn batch(src: &str, seqs: std::ops::Range<u64>) -> Vec<Event> {
    seqs.map(|seq| {
        Event::from_json(&format!(
            r#"{{"event":"batch_end","loss":{},"src":"{src}","seq":{seq}}}"#,
            1.0 / (seq as f64 + 1.0)
        ))
        .unwrap()
    })
    .collect()
}

#[test]
fn two_stores_on_one_database_keep_ids_gapless_and_deduplicate_across_them() {
    let Some(url) = fresh_database("gapless") else {
        return;
    };
    let a = Arc::new(PgStore::open(&url).unwrap());
    let b = Arc::new(PgStore::open(&url).unwrap());
    let mut threads = Vec::new();
    for t in 0..4u64 {
        let (a, b) = (a.clone(), b.clone());
        threads.push(std::thread::spawn(move || {
            let src = format!("trainer-{t}");
            for k in 0..25u64 {
                let store = if (t + k) % 2 == 0 { &a } else { &b };
                store
                    .append("r", batch(&src, k * 4..k * 4 + 4), 1.0, &|_| {})
                    .unwrap();
                // The same batch again on the other store: a retry, stored once.
                let other = if (t + k) % 2 == 0 { &b } else { &a };
                let again = other
                    .append("r", batch(&src, k * 4..k * 4 + 4), 1.0, &|_| {})
                    .unwrap();
                assert_eq!((again.accepted, again.duplicates), (0, 4));
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let events = a.events("r", 0, 10_000, None).unwrap();
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=400).collect::<Vec<_>>());
    let mut seen = std::collections::HashSet::new();
    for e in &events {
        let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
        assert!(seen.insert((v["src"].clone(), v["seq"].clone())), "{v}");
    }
    // Each store's state follows the other's writes (b learns on its next append
    // or from the database; here it reads through a series query).
    let page = b
        .series(
            "r",
            "loss",
            SeriesQuery {
                points: 10_000,
                from: None,
                to: None,
                exact_limit: u64::MAX,
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!(page.total, 400);
    assert_eq!(page.last_id, 400);
}

#[test]
fn the_urls_own_options_are_kept_and_win_over_the_relays_defaults() {
    let Some(url) = fresh_database("options") else {
        return;
    };
    let store = PgStore::open(&format!(
        "{url}?options=-c%20statement_timeout%3D1234%20-c%20search_path%3Dpublic"
    ))
    .unwrap();
    let mut conn = store.pool.connect().unwrap();
    let show = |c: &mut Conn, what: &str| -> String {
        c.client
            .query_one(&format!("SHOW {what}"), &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(show(&mut conn, "statement_timeout"), "1234ms");
    assert_eq!(show(&mut conn, "search_path"), "public");
    // The relay's other limits stay.
    assert_eq!(show(&mut conn, "lock_timeout"), "10s");
    assert_eq!(
        show(&mut conn, "idle_in_transaction_session_timeout"),
        "1min"
    );
}

#[test]
fn a_run_deleted_and_written_again_elsewhere_is_not_mistaken_for_the_old_one() {
    let Some(url) = fresh_database("regen") else {
        return;
    };
    let a = PgStore::open(&url).unwrap();
    let b = PgStore::open(&url).unwrap();
    let life = |started: f64| {
        let mut events =
            vec![
                Event::from_json(&format!(r#"{{"event":"training_start","time":{started}}}"#))
                    .unwrap(),
            ];
        events.extend(batch("x", 1..3));
        events
    };
    // B writes and knows the first incarnation: ids 1..3, with series in memory.
    b.append("r", life(1.0), 1.0, &|_| {}).unwrap();
    let query = SeriesQuery {
        points: 100,
        from: None,
        to: None,
        exact_limit: u64::MAX,
    };
    assert_eq!(b.series("r", "loss", query).unwrap().unwrap().total, 2);
    // A deletes it and a new run of the same name reaches the same last_id.
    assert_eq!(a.delete_run("r").unwrap(), Some(3));
    a.append("r", life(2.0), 2.0, &|_| {}).unwrap();
    // B's next batch continues the new run, not the one it remembers.
    let c = b.append("r", batch("y", 1..2), 3.0, &|_| {}).unwrap();
    assert_eq!(c.last_id, 4);
    assert_eq!(c.state.started_at, Some(2.0));
    assert_eq!(b.state("r").unwrap().started_at, Some(2.0));
    let page = b.series("r", "loss", query).unwrap().unwrap();
    assert_eq!(
        page.total, 3,
        "old points leaked into the new run: {page:?}"
    );
    assert_eq!(a.events("r", 0, 100, None).unwrap().len(), 4);
}

#[test]
fn a_database_from_a_newer_stepwatch_is_refused_with_a_clear_message() {
    let Some(url) = fresh_database("newer") else {
        return;
    };
    drop(PgStore::open(&url).unwrap());
    let u = url.clone();
    std::thread::spawn(move || {
        let mut c = Client::connect(&u, postgres::NoTls).unwrap();
        c.execute("UPDATE stepwatch_schema SET version = 99", &[])
            .unwrap();
    })
    .join()
    .unwrap();
    let err = PgStore::open(&url).err().unwrap().to_string();
    assert!(err.contains("newer Stepwatch"), "{err}");
}

#[test]
fn an_older_schema_is_migrated_in_place_keeping_its_runs() {
    let Some(url) = fresh_database("older") else {
        return;
    };
    let u = url.clone();
    std::thread::spawn(move || {
        // What the first PostgreSQL release wrote: schema 1, one run.
        let mut c = Client::connect(&u, postgres::NoTls).unwrap();
        c.batch_execute(MIGRATIONS[0].1).unwrap();
        c.batch_execute(
            "CREATE TABLE stepwatch_schema (version BIGINT NOT NULL);
             INSERT INTO stepwatch_schema VALUES (1);",
        )
        .unwrap();
        // A run stored one row per event, as every schema before 6 did.
        let (state, rows) = old_rows();
        c.execute(
            "INSERT INTO runs (run, last_id, state, created, updated) VALUES ('old', $1, $2, 0, 0)",
            &[
                &(state.last_id as i64),
                &serde_json::to_string(&state).unwrap(),
            ],
        )
        .unwrap();
        for (id, name, data) in &rows {
            c.execute(
                "INSERT INTO events (run, id, name, data) VALUES ('old', $1, $2, $3)",
                &[&(*id as i64), name, data],
            )
            .unwrap();
        }
    })
    .join()
    .unwrap();
    {
        // Opening migrates schema 1 to the current one in place.
        let store = PgStore::open(&url).unwrap();
        store.append("r", batch("s", 1..4), 1.0, &|_| {}).unwrap();
    }
    let u = url.clone();
    let (version, sessions) = std::thread::spawn(move || {
        let mut c = Client::connect(&u, postgres::NoTls).unwrap();
        let v: i64 = c
            .query_one("SELECT version FROM stepwatch_schema", &[])
            .unwrap()
            .get(0);
        let n: i64 = c
            .query_one("SELECT COUNT(*) FROM sessions", &[])
            .unwrap()
            .get(0);
        (v, n)
    })
    .join()
    .unwrap();
    assert_eq!((version, sessions), (PG_SCHEMA_VERSION, 0));
    let store = PgStore::open(&url).unwrap();
    assert_eq!(store.state("r").unwrap().last_id, 3);
    // The old rows moved into chunks: every read answers as before.
    let (_, rows) = old_rows();
    let all = store.events("old", 0, 10_000, None).unwrap();
    let got: Vec<(u64, String, String)> = all
        .into_iter()
        .map(|e| (e.id, e.name.to_string(), e.json))
        .collect();
    assert_eq!(got, rows);
    let logs = store
        .events_desc("old", None, 3, Some(&["log".to_string()]))
        .unwrap();
    let want: Vec<u64> = rows
        .iter()
        .rev()
        .filter(|r| r.1 == "log")
        .take(3)
        .map(|r| r.0)
        .collect();
    assert_eq!(logs.iter().map(|e| e.id).collect::<Vec<_>>(), want);
    let more = store.append("old", batch("s", 1..3), 2.0, &|_| {}).unwrap();
    assert_eq!(more.last_id, rows.len() as u64 + 2);
}

/// A run's events as rows (id, name, wire JSON) and its state after them: 2,500
/// events, every 7th a log.
fn old_rows() -> (RunState, Vec<(u64, String, String)>) {
    let mut state = RunState::new("old");
    let rows = (1..=2500u64)
        .map(|id| {
            let json = if id % 7 == 0 {
                format!(r#"{{"event":"log","message":"line {id}"}}"#)
            } else {
                format!(r#"{{"event":"batch_end","loss":{id}}}"#)
            };
            let mut e = Event::from_json(&json).unwrap();
            e.id = Some(id);
            state.apply(&e);
            (id, e.name().to_string(), e.to_json())
        })
        .collect();
    (state, rows)
}

#[test]
fn a_missing_database_is_created_when_the_user_may_and_named_when_not() {
    let Ok(server) = std::env::var("STEPWATCH_TEST_PG") else {
        return;
    };
    let server = server.trim_end_matches('/').to_string();
    let name = format!(
        "sw_unit_created_{}_{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let url = format!("{server}/{name}");
    let store = PgStore::open(&url).unwrap();
    store.append("r", batch("t", 0..3), 1.0, &|_| {}).unwrap();
    drop(store);
    // Relays starting together: whoever creates it first, both open it.
    let name2 = format!("{name}_b");
    let url2 = format!("{server}/{name2}");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| PgStore::open(&url2).map(drop));
        let b = s.spawn(|| PgStore::open(&url2).map(drop));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    // A user who may not create databases gets the reason and what to do.
    let role = format!("sw_nocreate_{}", rand::random::<u32>());
    let admin = format!("{server}/postgres");
    let create_role = format!("CREATE ROLE {role} LOGIN NOCREATEDB");
    std::thread::spawn(move || {
        let mut c = Client::connect(&admin, postgres::NoTls).unwrap();
        c.batch_execute(&create_role).unwrap();
    })
    .join()
    .unwrap();
    let host = server.split_once('@').map_or(server.as_str(), |(_, h)| h);
    let err = PgStore::open(&format!("postgres://{role}@{host}/{name}_none"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("does not exist")
            && err.contains("creating it failed")
            && err.contains("permission denied")
            && err.contains("createdb"),
        "{err}"
    );
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let err = PgStore::open("postgres://nobody@127.0.0.1:9/none")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cannot connect to PostgreSQL at postgres://nobody@127.0.0.1:9/none"),
        "{err}"
    );
    let err = PgStore::open("mysql:/x").err().unwrap().to_string();
    assert!(err.contains("not a PostgreSQL URL"), "{err}");
}
