//! A webhook receiver: a real HTTP/1.1 server on a free loopback port, in a thread, that
//! records every request (path, headers, JSON body, arrival time) and answers with a
//! chosen sequence of statuses (then 200), for the alert notices the relay sends.

use serde_json::Value;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// Header names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub raw: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// When its last byte arrived.
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
}

impl HookRequest {
    /// The value of header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<HookRequest>>,
    statuses: Mutex<VecDeque<u16>>,
    stop: AtomicBool,
}

/// A webhook receiver on `127.0.0.1`; it stops when dropped.
pub struct WebhookReceiver {
    pub port: u16,
    shared: Arc<Shared>,
}

impl WebhookReceiver {
    /// A receiver that answers every request 200.
    pub fn start() -> WebhookReceiver {
        WebhookReceiver::with_statuses(&[])
    }

    /// A receiver that answers its first requests with `statuses`, in order, then 200.
    pub fn with_statuses(statuses: &[u16]) -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared::default());
        shared.statuses.lock().unwrap().extend(statuses);
        let s = shared.clone();
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || serve(conn, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        WebhookReceiver { port, shared }
    }

    /// The URL of `path` (starting with `/`) on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<HookRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests so far to paths starting with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<HookRequest> {
        let mut v = self.requests();
        v.retain(|r| r.path.starts_with(prefix));
        v
    }

    /// Forgets the requests so far.
    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
    }

    /// Waits until at least `n` requests to paths starting with `prefix` arrived (or
    /// panics after `timeout`); returns them.
    pub fn wait_for(&self, prefix: &str, n: usize, timeout: Duration) -> Vec<HookRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.requests_to(prefix);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "webhook receiver: {} of {n} requests to {prefix} within {timeout:?}: {:?}",
                got.len(),
                got.iter().map(|r| &r.raw).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the first request whose JSON body satisfies `pred` (or panics after
    /// `timeout`).
    pub fn wait_body(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> HookRequest {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| pred(&r.body)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "webhook receiver: no {what} within {timeout:?}; got {:?}",
                self.requests().iter().map(|r| &r.raw).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves one connection: requests one after another (keep-alive) until it closes.
fn serve(conn: TcpStream, s: &Shared) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Some((mut req, close)) = read_request(&mut reader) {
        let status = s.statuses.lock().unwrap().pop_front().unwrap_or(200);
        req.status = status;
        s.requests.lock().unwrap().push(req);
        let body = if status < 300 {
            "{}"
        } else {
            "{\"error\":\"no\"}"
        };
        let answer = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
            if status < 300 { "OK" } else { "Error" },
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if out.write_all(answer.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Reads one request; `None` at the end of the connection. The flag: the client asked
/// to close after it.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(HookRequest, bool)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v): &(String, String)| v.to_ascii_lowercase())
    };
    let body = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(reader)?
    } else {
        let len: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut b = vec![0u8; len];
        reader.read_exact(&mut b).ok()?;
        b
    };
    let close = get("connection").is_some_and(|v| v.contains("close"));
    let raw = String::from_utf8_lossy(&body).into_owned();
    let req = HookRequest {
        method,
        path,
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        headers,
        at: Instant::now(),
        status: 0,
    };
    Some((req, close))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_chosen_statuses_then_200_and_records_every_request() {
        let hook = WebhookReceiver::with_statuses(&[500, 503]);
        let agent = ureq::AgentBuilder::new().build(); // one keep-alive connection
        let mut got = Vec::new();
        for i in 0..3 {
            let r = agent
                .post(&hook.url(&format!("/a/{i}?q=1")))
                .set("X-Test", "yes")
                .send_json(serde_json::json!({"n": i}));
            got.push(match r {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(s, _)) => s,
                Err(e) => panic!("{e}"),
            });
        }
        assert_eq!(got, [500, 503, 200]);
        let reqs = hook.wait_for("/a/", 3, Duration::from_secs(5));
        assert_eq!(reqs[2].path, "/a/2?q=1");
        assert_eq!(reqs[1].body["n"], 1);
        assert_eq!(reqs[0].header("x-test"), Some("yes"));
        assert_eq!(reqs[0].method, "POST");
        assert!(reqs[0].at <= reqs[1].at);
        // A chunked body.
        let r = ureq::post(&hook.url("/chunked"))
            .set("Content-Type", "application/json")
            .send(std::io::Cursor::new(b"{\"chunked\":true}".to_vec()))
            .unwrap();
        assert_eq!(r.status(), 200);
        let c = hook.wait_for("/chunked", 1, Duration::from_secs(5));
        assert_eq!(c[0].body["chunked"], true, "{:?}", c[0]);
    }
}
