//! E-mail sends to the test SMTP server ([`super::smtp_server`]) on 127.0.0.1: plain on
//! loopback, STARTTLS and implicit TLS trusting a private CA through `ca_file`.

use super::certs::certs;
use super::smtp_server::{server, Opts};
use super::{base64_decode, closed_port, notice};
use crate::alerts::notify::{Channel, NoticeState};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn mail(port: u16, extra: Value) -> Channel {
    let mut v = json!({
        "kind": "email", "smtp": format!("127.0.0.1:{port}"), "tls": "none",
        "from": "stepwatch@lab.example", "to": ["oncall@lab.example", "me@lab.example"]
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    Channel::parse("mail", &v, "alerts.channels.mail").unwrap()
}

const T: Duration = Duration::from_secs(10);

#[test]
fn plain_session_with_auth_plain_and_dot_stuffing() {
    let (port, rx) = server(Opts {
        auth: "PLAIN LOGIN",
        eightbit: true,
        ..Opts::default()
    });
    let c = mail(
        port,
        json!({"username": "stepwatch", "password": "s3cret pw", "helo": "relay.lab"}),
    );
    c.send(&notice(), T).unwrap();
    let s = rx.recv_timeout(T).unwrap();
    assert_eq!(
        s.credentials,
        Some(("stepwatch".into(), "s3cret pw".into()))
    );
    let verbs: Vec<&str> = s
        .commands
        .iter()
        .map(|c| c.split([' ', ':']).next().unwrap())
        .collect();
    assert_eq!(
        verbs,
        ["EHLO", "AUTH", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
    );
    assert_eq!(s.commands[0], "EHLO relay.lab");
    assert_eq!(
        s.commands[2],
        "MAIL FROM:<stepwatch@lab.example> BODY=8BITMIME"
    );
    assert_eq!(s.commands[3], "RCPT TO:<oncall@lab.example>");
    assert_eq!(s.commands[4], "RCPT TO:<me@lab.example>");
    assert_eq!(s.header("From").as_deref(), Some("stepwatch@lab.example"));
    assert_eq!(
        s.header("To").as_deref(),
        Some("oncall@lab.example, me@lab.example")
    );
    let subject = s.header("Subject").unwrap();
    let b64 = subject
        .strip_prefix("=?utf-8?b?")
        .unwrap()
        .strip_suffix("?=")
        .unwrap();
    assert_eq!(
        String::from_utf8(base64_decode(b64)).unwrap(),
        "[stepwatch] error: loss is NaN — my-run"
    );
    let date = s.header("Date").unwrap();
    assert!(
        date.ends_with(" +0000") && date.len() == "Wed, 02 Dec 2026 07:10:27 +0000".len(),
        "{date}"
    );
    let id = s.header("Message-ID").unwrap();
    assert!(id.starts_with('<') && id.ends_with("@lab.example>"), "{id}");
    assert_eq!(s.header("MIME-Version").as_deref(), Some("1.0"));
    assert_eq!(
        s.header("Content-Type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        s.header("Content-Transfer-Encoding").as_deref(),
        Some("7bit")
    );
    let body = s.body();
    assert_eq!(body[0], "loss is NaN");
    // Lines starting with a dot go doubled on the wire.
    assert!(body.contains(&"..hidden line".to_string()), "{body:?}");
    assert!(body.contains(&"...two dots".to_string()), "{body:?}");
    for want in [
        "Run: my-run (r1)",
        "Step: 120",
        "Value: loss = NaN",
        "Action: pause",
        "Link: http://stepwatch.lab:8080/runs/r1",
        "Alert: r1:nan-loss:120",
    ] {
        assert!(body.iter().any(|l| l == want), "{want} not in {body:?}");
    }
}

#[test]
fn auth_login_and_base64_body_without_8bitmime() {
    let (port, rx) = server(Opts {
        auth: "LOGIN",
        ..Opts::default()
    });
    let c = mail(port, json!({"username": "u", "password": "p@ss"}));
    let mut n = notice();
    n.state = NoticeState::Resolved;
    n.text = "перезапуск — ok".into();
    c.send(&n, T).unwrap();
    let s = rx.recv_timeout(T).unwrap();
    assert_eq!(s.credentials, Some(("u".into(), "p@ss".into())));
    assert_eq!(s.commands[1], "AUTH LOGIN");
    assert_eq!(s.commands[2], "MAIL FROM:<stepwatch@lab.example>");
    assert_eq!(
        s.header("Content-Transfer-Encoding").as_deref(),
        Some("base64")
    );
    assert!(s.body().iter().all(|l| l.len() <= 76));
    let text = String::from_utf8(base64_decode(&s.body().concat())).unwrap();
    assert!(
        text.contains("перезапуск — ok\r\n") && text.contains("State: resolved"),
        "{text}"
    );
}

#[test]
fn rejected_credentials() {
    let (port, rx) = server(Opts {
        auth: "PLAIN",
        reject_auth: true,
        ..Opts::default()
    });
    let c = mail(port, json!({"username": "u", "password": "s3cret"}));
    let e = c.send(&notice(), T).unwrap_err();
    assert_eq!(
        e,
        "SMTP 535 authentication failed: 5.7.8 Authentication credentials invalid"
    );
    let s = rx.recv_timeout(T).unwrap();
    assert!(s.data.is_empty() && !s.commands.iter().any(|c| c.starts_with("MAIL")));
    // A server that offers no mechanism the client knows.
    let (port, _rx) = server(Opts {
        auth: "CRAM-MD5",
        ..Opts::default()
    });
    let e = mail(port, json!({"username": "u", "password": "s3cret"}))
        .send(&notice(), T)
        .unwrap_err();
    assert!(e.contains("neither AUTH PLAIN nor AUTH LOGIN"), "{e}");
}

#[test]
fn rejected_recipient() {
    let (port, rx) = server(Opts {
        reject_rcpt: "me@lab.example",
        ..Opts::default()
    });
    let e = mail(port, json!({})).send(&notice(), T).unwrap_err();
    assert_eq!(
        e,
        "SMTP 550 after RCPT TO:<me@lab.example>: 5.1.1 no such user"
    );
    let s = rx.recv_timeout(T).unwrap();
    assert!(s.data.is_empty(), "{s:?}");
}

#[test]
fn starttls_with_a_private_ca() {
    let (ca, cfg) = certs();
    let (port, rx) = server(Opts {
        starttls: Some(cfg.clone()),
        auth: "PLAIN",
        eightbit: true,
        ..Opts::default()
    });
    let ca = ca.to_str().unwrap();
    let c = mail(
        port,
        json!({"tls": "starttls", "ca_file": ca, "username": "u", "password": "s3cret"}),
    );
    c.send(&notice(), T).unwrap();
    let s = rx.recv_timeout(T).unwrap();
    assert!(s.commands[0].starts_with("EHLO "));
    assert_eq!(s.commands[1], "STARTTLS");
    assert_eq!(s.over_tls[..3], [false, false, true]);
    assert!(s.commands[2].starts_with("EHLO "));
    assert!(s.commands[3].starts_with("AUTH PLAIN") && s.over_tls[3]);
    assert_eq!(s.credentials, Some(("u".into(), "s3cret".into())));
    assert_eq!(s.body()[0], "loss is NaN");
    // Through localhost too (the certificate names both).
    let c = Channel::parse(
        "m",
        &json!({"kind": "email", "smtp": format!("localhost:{port}"), "ca_file": ca, "from": "a@b.c", "to": ["d@e.f"]}),
        "alerts.channels.m",
    )
    .unwrap();
    match c.send(&notice(), T) {
        Ok(()) => assert_eq!(rx.recv_timeout(T).unwrap().over_tls.last(), Some(&true)),
        // Where localhost is only ::1 (the server listens on 127.0.0.1).
        Err(e) => assert!(e.starts_with("connection refused"), "{e}"),
    }
}

#[test]
fn implicit_tls() {
    let (ca, cfg) = certs();
    let (port, rx) = server(Opts {
        implicit: Some(cfg.clone()),
        ..Opts::default()
    });
    let c = mail(port, json!({"tls": "tls", "ca_file": ca.to_str().unwrap()}));
    c.send(&notice(), T).unwrap();
    let s = rx.recv_timeout(T).unwrap();
    assert!(
        s.over_tls.iter().all(|t| *t) && s.commands.len() == 6,
        "{s:?}"
    );
}

#[test]
fn starttls_refusals() {
    // Not offered: nothing is sent in the clear.
    let (port, rx) = server(Opts {
        auth: "PLAIN",
        ..Opts::default()
    });
    let c = mail(
        port,
        json!({"tls": "starttls", "username": "u", "password": "s3cret"}),
    );
    assert_eq!(
        c.send(&notice(), T).unwrap_err(),
        "the SMTP server does not offer STARTTLS"
    );
    let s = rx.recv_timeout(T).unwrap();
    assert!(s.credentials.is_none() && s.commands.len() == 1, "{s:?}");
    // A certificate no trusted root signed.
    let (_, cfg) = certs();
    let (port, rx) = server(Opts {
        starttls: Some(cfg.clone()),
        ..Opts::default()
    });
    let e = mail(
        port,
        json!({"tls": "starttls", "username": "u", "password": "s3cret"}),
    )
    .send(&notice(), T)
    .unwrap_err();
    assert!(
        e.starts_with("TLS with the SMTP server (127.0.0.1:") && e.contains("certificate"),
        "{e}"
    );
    assert!(!e.contains("s3cret"));
    assert!(rx.recv_timeout(T).unwrap().credentials.is_none());
}

#[test]
fn refused_and_silent_servers() {
    let port = closed_port();
    let e = mail(port, json!({})).send(&notice(), T).unwrap_err();
    assert_eq!(e, format!("connection refused (127.0.0.1:{port})"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let t0 = Instant::now();
    let e = mail(port, json!({}))
        .send(&notice(), Duration::from_millis(500))
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(
        e.starts_with("timed out after 0.5 s") && e.contains(&format!("127.0.0.1:{port}")),
        "{e}"
    );
}
