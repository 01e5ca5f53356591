//! Webhook, Slack and Mattermost sends to a real HTTP server on 127.0.0.1.

use super::{closed_port, notice};
use crate::alerts::notify::{Channel, Notice};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the server saw of one request.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP server answering `status` to every request, recording each; its port.
fn server(status: u16, extra: &'static str) -> (u16, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_string();
            let path = parts.next().unwrap_or_default().to_string();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let answer = format!(
                "HTTP/1.1 {status} Whatever\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok"
            );
            conn.write_all(answer.as_bytes()).unwrap();
            let _ = tx.send(Request {
                method,
                path,
                headers,
                body,
            });
        }
    });
    (port, rx)
}

fn channel(v: Value) -> Channel {
    Channel::parse("t", &v, "alerts.channels.t").unwrap()
}

const T: Duration = Duration::from_secs(5);

#[test]
fn webhook_posts_every_field() {
    let (port, rx) = server(200, "");
    let url = format!("http://127.0.0.1:{port}/alerts/in?key=s3cret");
    let c = channel(
        json!({"kind": "webhook", "url": url, "headers": {"Authorization": "Bearer s3cret"}}),
    );
    let n = notice();
    c.send(&n, T).unwrap();
    let r = rx.recv_timeout(T).unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/alerts/in?key=s3cret");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("authorization"), Some("Bearer s3cret"));
    let want = json!({
        "alert_id": "r1:nan-loss:120", "state": "fired", "run": "r1", "run_name": "my-run",
        "rule": "nan-loss", "kind": "non_finite", "level": "error", "title": "loss is NaN",
        "text": n.text, "metric": "loss", "value": "NaN", "step": 120, "action": "pause",
        "url": "http://stepwatch.lab:8080/runs/r1", "time": 1_796_195_427.5
    });
    assert_eq!(r.body, want);
    // Resolved, with no metric: nulls, and a finite value as a number.
    let n = Notice {
        metric: None,
        value: Some(2.5),
        step: None,
        action: None,
        state: crate::alerts::notify::NoticeState::Resolved,
        ..notice()
    };
    c.send(&n, T).unwrap();
    let r = rx.recv_timeout(T).unwrap();
    assert_eq!(r.body["state"], "resolved");
    assert_eq!(r.body["value"], 2.5);
    assert!(r.body["metric"].is_null() && r.body["step"].is_null() && r.body["action"].is_null());
}

#[test]
fn slack_and_mattermost_post_text() {
    for kind in ["slack", "mattermost"] {
        let (port, rx) = server(200, "");
        let c =
            channel(json!({"kind": kind, "url": format!("http://127.0.0.1:{port}/hooks/s3cret")}));
        c.send(&notice(), T).unwrap();
        let r = rx.recv_timeout(T).unwrap();
        assert_eq!(r.path, "/hooks/s3cret");
        assert_eq!(
            r.body,
            json!({"text": crate::alerts::notify::one_line(&notice())})
        );
        assert!(r.body["text"]
            .as_str()
            .unwrap()
            .contains("<http://stepwatch.lab:8080/runs/r1|my-run>"));
    }
}

#[test]
fn error_status_names_the_status_and_no_secret() {
    for (status, extra) in [
        (500, ""),
        (404, ""),
        (302, "Location: http://elsewhere.example/s3cret\r\n"),
    ] {
        let (port, rx) = server(status, extra);
        let c = channel(
            json!({"kind": "slack", "url": format!("http://127.0.0.1:{port}/services/s3cret?t=s3cret")}),
        );
        let e = c.send(&notice(), T).unwrap_err();
        assert!(
            e.starts_with(&format!("HTTP {status} from 127.0.0.1:{port}")),
            "{e}"
        );
        assert!(!e.contains("s3cret") && !e.contains("/services"), "{e}");
        assert_eq!(
            rx.recv_timeout(T).unwrap().path,
            "/services/s3cret?t=s3cret"
        );
        assert!(rx.try_recv().is_err(), "the redirect was followed");
    }
    let (port, _rx) = server(204, "");
    let c = channel(json!({"kind": "webhook", "url": format!("http://127.0.0.1:{port}/")}));
    c.send(&notice(), T).unwrap();
}

#[test]
fn connection_refused() {
    let port = closed_port();
    let c = channel(
        json!({"kind": "webhook", "url": format!("http://s3cret@127.0.0.1:{port}/s3cret")}),
    );
    let e = c.send(&notice(), T).unwrap_err();
    assert_eq!(e, format!("connection refused (127.0.0.1:{port})"));
}

#[test]
fn a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let c = channel(json!({"kind": "webhook", "url": format!("http://127.0.0.1:{port}/s3cret")}));
    let t0 = Instant::now();
    let e = c.send(&notice(), Duration::from_millis(500)).unwrap_err();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(
        e.contains("timed out") && e.contains(&format!("127.0.0.1:{port}")),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
}

#[test]
fn loopback_send_time() {
    let (port, rx) = server(200, "");
    let c = channel(json!({"kind": "webhook", "url": format!("http://127.0.0.1:{port}/")}));
    let rounds = 50;
    let t0 = Instant::now();
    for _ in 0..rounds {
        c.send(&notice(), T).unwrap();
        rx.recv_timeout(T).unwrap();
    }
    let each = t0.elapsed() / rounds;
    eprintln!("webhook send on loopback: {each:?} each ({rounds} sends)");
    assert!(each < Duration::from_millis(200), "{each:?}");
}

#[test]
fn https_to_an_untrusted_certificate_is_refused() {
    let cfg = super::certs::certs().1.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let conn = rustls::ServerConnection::new(cfg.clone()).map(|tls| (tls, conn.unwrap()));
            let (tls, tcp) = conn.unwrap();
            let mut s = rustls::StreamOwned::new(tls, tcp);
            let mut buf = [0u8; 64];
            let _ = tx.send(s.read(&mut buf).map(|k| buf[..k].to_vec()));
        }
    });
    let c = channel(json!({
        "kind": "webhook", "url": format!("https://127.0.0.1:{port}/s3cret"),
        "headers": {"Authorization": "Bearer s3cret"}
    }));
    let e = c.send(&notice(), T).unwrap_err();
    assert!(
        e.starts_with(&format!(
            "TLS with 127.0.0.1:{port} failed: invalid peer certificate"
        )),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
    // The handshake failed: no byte of the request reached the server.
    assert!(rx.recv_timeout(T).unwrap().is_err());
}
