//! Users, roles and hostile input against a real relay process with a real config file.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use stepwatch_e2e::{auth_config, relay_bin, Relay, TempDir, ADMIN_TOKEN, TRAINER_TOKEN};

const NDJSON: &str = "application/x-ndjson";
fn write_config(dir: &Path, extra: &str) -> String {
    auth_config(dir, extra).to_string_lossy().into_owned()
}

/// A request as some caller: a session cookie, a bearer token, or nobody.
#[derive(Clone)]
enum Who {
    Nobody,
    Cookie(String),
    Token(&'static str),
}

fn call(relay: &Relay, who: &Who, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut req =
        ureq::request(method, &format!("{}{path}", relay.url)).timeout(Duration::from_secs(5));
    match who {
        Who::Nobody => {}
        Who::Cookie(c) => req = req.set("Cookie", c),
        Who::Token(t) => req = req.set("Authorization", &format!("Bearer {t}")),
    }
    let res = match body {
        Some(b) => req.set("Content-Type", NDJSON).send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) => {
            let s = r.status();
            // Streams: the status is all we need; do not wait for the body.
            if r.content_type() == "text/event-stream" {
                return (s, Value::Null);
            }
            (s, r.into_json().unwrap_or(Value::Null))
        }
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// Logs in; returns the Cookie header value and the raw Set-Cookie.
fn login(relay: &Relay, name: &str, password: &str) -> (String, String) {
    let r = ureq::post(&format!("{}/api/login", relay.url))
        .send_json(json!({ "name": name, "password": password }))
        .unwrap();
    let set = r.header("Set-Cookie").unwrap().to_string();
    let pair = set.split(';').next().unwrap().to_string();
    (pair, set)
}

/// One caller per role, in [`ROLE_MATRIX`]'s order: nobody, viewer, operator, trainer,
/// admin (cookie), admin (token).
fn callers(relay: &Relay) -> [(&'static str, Who); 6] {
    let cookie = |n: &str, p: &str| Who::Cookie(login(relay, n, p).0);
    [
        ("nobody", Who::Nobody),
        ("viewer", cookie("vera", "vera-pw")),
        ("operator", cookie("otto", "otto-pw")),
        ("trainer", Who::Token(TRAINER_TOKEN)),
        ("admin", cookie("root", "root-pw")),
        ("admin-token", Who::Token(ADMIN_TOKEN)),
    ]
}

/// The log line [`ROLE_MATRIX`] posts.
const LOG: &str = r#"{"event":"log","message":"hi"}"#;

/// (method, path, body, expected status per caller in the order of [`callers`]).
const ROLE_MATRIX: &[(&str, &str, Option<&str>, [u16; 6])] = &[
    ("GET", "/healthz", None, [200, 200, 200, 200, 200, 200]),
    ("GET", "/api/runs", None, [401, 200, 200, 403, 200, 200]),
    (
        "GET",
        "/api/runs/ci-1",
        None,
        [401, 200, 200, 403, 200, 200],
    ),
    (
        "GET",
        "/api/runs/ci-1/events",
        None,
        [401, 200, 200, 403, 200, 200],
    ),
    (
        "GET",
        "/api/runs/ci-1/series?metric=loss",
        None,
        [401, 200, 200, 403, 200, 200],
    ),
    (
        "GET",
        "/api/runs/ci-1/stream",
        None,
        [401, 200, 200, 403, 200, 200],
    ),
    ("GET", "/api/stream", None, [401, 200, 200, 403, 200, 200]),
    ("GET", "/metrics", None, [401, 200, 200, 403, 200, 200]),
    (
        "POST",
        "/api/runs/ci-1/events",
        Some(LOG),
        [401, 403, 403, 200, 200, 200],
    ),
    (
        "POST",
        "/api/runs/prod/events",
        Some(LOG),
        [401, 403, 403, 403, 200, 200],
    ),
    (
        "POST",
        "/api/runs/ci-1/meta",
        Some(r#"{"tags":["baseline"]}"#),
        [401, 403, 200, 403, 200, 200],
    ),
    ("GET", "/api/values", None, [401, 200, 200, 403, 200, 200]),
    (
        "GET",
        "/api/runs/ci-1/commands/stream",
        None,
        [401, 403, 403, 200, 200, 200],
    ),
    (
        "GET",
        "/api/runs/prod/commands/stream",
        None,
        [401, 403, 403, 403, 200, 200],
    ),
];

/// Every request of [`ROLE_MATRIX`] as every caller.
fn assert_role_matrix(relay: &Relay, callers: &[(&str, Who)]) {
    for (method, path, body, want) in ROLE_MATRIX {
        for ((name, who), want) in callers.iter().zip(want) {
            let (got, v) = call(relay, who, method, path, *body);
            assert_eq!(got, *want, "{name} {method} {path}: {v}");
            if got == 401 || got == 403 {
                assert!(v["error"].as_str().is_some_and(|e| e.len() > 10), "{v}");
            }
        }
    }
}

/// Commands: operators and admins may send and cancel them; each records who sent it.
fn assert_commands_by_role(relay: &Relay, callers: &[(&str, Who)]) {
    let pause = r#"{"command":"pause"}"#;
    for (name, who, want) in [
        ("nobody", &callers[0].1, 401),
        ("viewer", &callers[1].1, 403),
        ("trainer", &callers[3].1, 403),
        ("operator", &callers[2].1, 202),
    ] {
        let (got, v) = call(relay, who, "POST", "/api/runs/ci-1/commands", Some(pause));
        assert_eq!(got, want, "{name}: {v}");
    }
    let state = call(relay, &callers[4].1, "GET", "/api/runs/ci-1", None).1;
    let cmd = state["commands"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(cmd["sender"], "otto", "{cmd}");
    let cancel = format!(
        "/api/runs/ci-1/commands/{}/cancel",
        cmd["id"].as_str().unwrap()
    );
    assert_eq!(call(relay, &callers[1].1, "POST", &cancel, Some("")).0, 403);
    let (got, _) = call(relay, &callers[2].1, "POST", &cancel, Some(""));
    assert_eq!(got, 200);
    let state = call(relay, &callers[4].1, "GET", "/api/runs/ci-1", None).1;
    let cmd = state["commands"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(cmd["message"], "cancelled by otto", "{cmd}");
}

/// Deleting: admins only; a bad token and a forged cookie are 401s.
fn assert_deletes_and_bad_credentials(relay: &Relay, callers: &[(&str, Who)]) {
    // Deleting: admins only.
    for (i, want) in [(1, 403), (2, 403), (3, 403), (4, 200)] {
        let (got, v) = call(relay, &callers[i].1, "DELETE", "/api/runs/prod", None);
        assert_eq!(got, want, "{}: {v}", callers[i].0);
    }
    // A bad token and a forged cookie are 401s that say so.
    let (s, v) = call(
        relay,
        &Who::Token("not-a-real-token-at-all"),
        "GET",
        "/api/runs",
        None,
    );
    assert_eq!(s, 401);
    assert!(v["error"].as_str().unwrap().contains("unknown token"));
    let (s, _) = call(
        relay,
        &Who::Cookie("stepwatch_session=forged".into()),
        "GET",
        "/api/runs",
        None,
    );
    assert_eq!(s, 401);
}

#[test]
fn each_role_gets_exactly_what_it_should() {
    let dir = TempDir::new("roles");
    let config = write_config(&dir.0, "");
    let relay = Relay::start(&dir.0.join("data"), &["--config", &config]);
    // A run to act on, written by the trainer.
    let start = r#"{"event":"training_start"}
{"event":"checkpoint_saved","checkpoint_path":"/c/1.pt"}"#;
    assert_eq!(
        call(
            &relay,
            &Who::Token(TRAINER_TOKEN),
            "POST",
            "/api/runs/ci-1/events",
            Some(start)
        )
        .0,
        200
    );
    let callers = callers(&relay);
    assert_role_matrix(&relay, &callers);
    assert_commands_by_role(&relay, &callers);
    assert_deletes_and_bad_credentials(&relay, &callers);
}

#[test]
fn sessions_are_httponly_strict_cookies_that_end_at_logout_and_expiry() {
    let dir = TempDir::new("sessions");
    // 0.001 h = 3.6 s.
    let config = write_config(&dir.0, "session_hours = 0.001\nmax_streams_per_user = 2\n");
    let relay = Relay::start(&dir.0.join("data"), &["--config", &config]);
    let (bad, _) = {
        let r = ureq::post(&format!("{}/api/login", relay.url))
            .send_json(json!({"name": "vera", "password": "nope"}));
        match r {
            Err(ureq::Error::Status(s, r)) => (s, r.into_json::<Value>().unwrap()),
            _ => panic!("a wrong password logged in"),
        }
    };
    assert_eq!(bad, 401);
    let (cookie, set) = login(&relay, "vera", "vera-pw");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3"] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    assert!(!set.contains("Secure"), "Secure over plain http: {set}");
    // Behind a TLS proxy the cookie is Secure.
    let r = ureq::post(&format!("{}/api/login", relay.url))
        .set("X-Forwarded-Proto", "https")
        .send_json(json!({"name": "vera", "password": "vera-pw"}))
        .unwrap();
    assert!(r.header("Set-Cookie").unwrap().contains("Secure"));
    let who = Who::Cookie(cookie.clone());
    let me = call(&relay, &who, "GET", "/api/me", None).1;
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("vera"), Some("viewer"))
    );
    // Streams per user are capped.
    let open = |c: &str| {
        ureq::get(&format!("{}/api/stream", relay.url))
            .set("Cookie", c)
            .call()
    };
    let s1 = open(&cookie).unwrap();
    let _s2 = open(&cookie).unwrap();
    match open(&cookie) {
        Err(ureq::Error::Status(429, r)) => {
            let v: Value = r.into_json().unwrap();
            assert!(v["error"].as_str().unwrap().contains("open streams"), "{v}");
        }
        other => panic!("third stream: {:?}", other.map(|r| r.status())),
    }
    // The session expires: open streams end, requests get 401.
    let t0 = Instant::now();
    let mut body = String::new();
    use std::io::Read;
    let _ = s1.into_reader().read_to_string(&mut body);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the stream outlived the session"
    );
    assert_eq!(call(&relay, &who, "GET", "/api/runs", None).0, 401);
    // Logout ends a session at once and clears the cookie.
    let (cookie, _) = login(&relay, "otto", "otto-pw");
    let r = ureq::post(&format!("{}/api/logout", relay.url))
        .set("Cookie", &cookie)
        .call()
        .unwrap();
    assert!(r.header("Set-Cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        call(&relay, &Who::Cookie(cookie), "GET", "/api/runs", None).0,
        401
    );
}

#[test]
fn signing_out_ends_the_sessions_open_streams_within_seconds() {
    use std::io::Read;
    let dir = TempDir::new("signout-streams");
    let config = write_config(&dir.0, "session_hours = 12\n");
    let relay = Relay::start(&dir.0.join("data"), &["--config", &config]);
    // The session's open streams (the runs list and a run) end within seconds of the
    // sign-out, not hours later at the session's end.
    let (cookie, _) = login(&relay, "otto", "otto-pw");
    let readers: Vec<_> = ["/api/stream", "/api/runs/any/stream"]
        .iter()
        .map(|path| {
            let stream = ureq::get(&format!("{}{path}", relay.url))
                .set("Cookie", &cookie)
                .timeout(Duration::from_secs(20))
                .call()
                .unwrap();
            std::thread::spawn(move || {
                let mut body = String::new();
                let _ = stream.into_reader().read_to_string(&mut body);
                Instant::now()
            })
        })
        .collect();
    let signed_out = Instant::now();
    let r = ureq::post(&format!("{}/api/logout", relay.url))
        .set("Cookie", &cookie)
        .call()
        .unwrap();
    assert!(r.header("Set-Cookie").unwrap().contains("Max-Age=0"));
    for reader in readers {
        let ended = reader.join().unwrap();
        assert!(
            ended.duration_since(signed_out) < Duration::from_secs(8),
            "a stream outlived its sign-out by {:?}",
            ended.duration_since(signed_out)
        );
    }
    // Another user's session, and its streams, go on.
    let (other, _) = login(&relay, "vera", "vera-pw");
    assert_eq!(
        call(&relay, &Who::Cookie(other), "GET", "/api/runs", None).0,
        200
    );
}

#[test]
fn cross_site_requests_are_refused_with_and_without_auth() {
    for with_auth in [false, true] {
        let dir = TempDir::new("origin");
        let mut args = vec![];
        let config;
        if with_auth {
            config = write_config(&dir.0, "");
            args = vec!["--config", config.as_str()];
        }
        let relay = Relay::start(&dir.0.join("data"), &args);
        let auth = |r: ureq::Request| {
            if with_auth {
                r.set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
            } else {
                r
            }
        };
        let post = |origin: Option<&str>| {
            let mut r = auth(ureq::post(&format!("{}/api/runs/x/events", relay.url)));
            if let Some(o) = origin {
                r = r.set("Origin", o);
            }
            match r.send_string(r#"{"event":"training_start"}"#) {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(s, _)) => s,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(post(Some("http://evil.example")), 403, "auth {with_auth}");
        assert_eq!(post(Some(&relay.url)), 200, "same origin, auth {with_auth}");
        assert_eq!(
            post(None),
            200,
            "no Origin (not a browser), auth {with_auth}"
        );
    }
}

#[test]
fn listening_beyond_loopback_needs_auth_or_an_explicit_override() {
    let dir = TempDir::new("bind");
    let port = stepwatch_e2e::free_port();
    let serve = |extra: &[&str]| {
        let mut c = Command::new(relay_bin());
        c.args(["serve", "--bind", &format!("0.0.0.0:{port}"), "--data-dir"])
            .arg(dir.0.join("data"))
            .args(["--dist", "none"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c
    };
    let out = serve(&[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen") && err.contains("--insecure-no-auth"),
        "{err}"
    );
    let config = write_config(&dir.0, "");
    for extra in [
        vec!["--insecure-no-auth"],
        vec!["--config", config.as_str()],
    ] {
        let mut child = serve(&extra).spawn().unwrap();
        let ok = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(25));
            ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
                .call()
                .is_ok()
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(ok, "did not start with {extra:?}");
    }
    // A config file with a mistake is refused with the reason.
    std::fs::write(
        dir.0.join("bad.toml"),
        "[[users]]\nname='x'\nrole='admin'\npassword_hash='plain'\n",
    )
    .unwrap();
    let out = Command::new(relay_bin())
        .args(["serve", "--config"])
        .arg(dir.0.join("bad.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an Argon2 hash"));
}

#[test]
fn hostile_bodies_get_clear_4xx_and_store_nothing() {
    let dir = TempDir::new("hostile");
    let relay = Relay::start(
        &dir.0,
        &[
            "--max-batch",
            "100",
            "--max-string",
            "1000",
            "--max-depth",
            "4",
            "--max-runs",
            "2",
            "--max-metrics",
            "3",
        ],
    );
    let check = |run: &str, body: &str, want: u16, words: &[&str]| {
        let (s, v) = relay.post(run, body, NDJSON);
        assert_eq!(s, want, "{body:.80}: {v}");
        for w in words {
            assert!(v["error"].as_str().unwrap().contains(w), "{w}: {v}");
        }
    };
    let deep = format!(
        "{{\"event\":\"log\",\"x\":{}1{}}}",
        "[".repeat(10),
        "]".repeat(10)
    );
    check("a", &deep, 400, &["nested deeper than 4", "--max-depth"]);
    let long = format!("{{\"event\":\"log\",\"message\":\"{}\"}}", "x".repeat(2000));
    check("a", &long, 400, &["2000 bytes", "--max-string"]);
    let many: String = (0..101).map(|_| "{\"event\":\"log\"}\n").collect();
    check("a", &many, 413, &["101 events", "--max-batch"]);
    let metrics = r#"{"event":"batch_end","loss":1,"lr":0.1,"metrics":{"a":1,"b":2}}"#;
    check("a", metrics, 400, &["4 metric series", "--max-metrics"]);
    let bad_name = format!(
        "{{\"event\":\"metric_update\",\"name\":\"{}\",\"value\":1}}",
        "m".repeat(300)
    );
    check("a", &bad_name, 400, &["metric name"]);
    // Nothing of the refused requests was stored: run "a" does not even exist.
    assert_eq!(relay.get("/api/runs/a").0, 404);
    check("r1", "{\"event\":\"log\"}", 200, &[]);
    check("r2", "{\"event\":\"log\"}", 200, &[]);
    check("r3", "{\"event\":\"log\"}", 409, &["--max-runs"]);
    check("r1", "{\"event\":\"log\"}", 200, &[]);
}
