//! HTTP notifiers: a `POST` of JSON to a webhook URL (generic webhooks, Slack and
//! Mattermost incoming webhooks), with `ureq`, redirects not followed.

use super::{tls, Notice};
use serde_json::{json, Value};
use std::error::Error as _;
use std::io;
use std::time::Duration;
use stepwatch_events::num;

/// A webhook URL with its extra headers, both secret, and the agent that posts to it.
pub(crate) struct HttpTarget {
    url: url::Url,
    /// `host[:port]`: what errors may name.
    host: String,
    headers: Vec<(String, String)>,
    agent: ureq::Agent,
}

impl HttpTarget {
    /// Parses a webhook URL: `http` or `https`, with a host. The message never repeats it.
    pub(super) fn check_url(s: &str) -> Result<url::Url, String> {
        let url = url::Url::parse(s.trim())
            .map_err(|e| format!("not a URL ({e}); an http:// or https:// URL is expected"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "the scheme must be http or https, not {}",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        Ok(url)
    }

    pub(super) fn new(url: url::Url, headers: Vec<(String, String)>) -> Result<Self, String> {
        let mut host = url.host_str().unwrap_or_default().to_string();
        if let Some(port) = url.port() {
            host = format!("{host}:{port}");
        }
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .user_agent(concat!("stepwatch-relay/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls::client_config(None)?)
            .build();
        Ok(HttpTarget {
            url,
            host,
            headers,
            agent,
        })
    }

    /// One `POST` of `body`; any 2xx is success.
    pub(super) fn post(&self, body: &Value, timeout: Duration) -> Result<(), String> {
        let mut req = self
            .agent
            .post(self.url.as_str())
            .timeout(timeout)
            .set("Content-Type", "application/json");
        for (k, v) in &self.headers {
            req = req.set(k, v);
        }
        match req.send_string(&body.to_string()) {
            Ok(resp) if (200..300).contains(&resp.status()) => Ok(()),
            Ok(resp) if (300..400).contains(&resp.status()) => Err(format!(
                "HTTP {} from {} (redirects are not followed)",
                resp.status(),
                self.host
            )),
            Ok(resp) => Err(format!("HTTP {} from {}", resp.status(), self.host)),
            Err(ureq::Error::Status(code, _)) => Err(format!("HTTP {code} from {}", self.host)),
            Err(ureq::Error::Transport(t)) => Err(transport_error(&t, &self.host, timeout)),
        }
    }
}

/// A transport failure in words, naming the host only (ureq's own text holds the URL).
fn transport_error(t: &ureq::Transport, host: &str, timeout: Duration) -> String {
    let mut source = t.source();
    let mut ioe: Option<&io::Error> = None;
    while let Some(e) = source {
        if let Some(x) = e.downcast_ref::<io::Error>() {
            ioe = Some(x);
            break;
        }
        source = e.source();
    }
    if let Some(e) = ioe {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => return format!("connection refused ({host})"),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                return format!("timed out after {} s ({host})", timeout.as_secs_f64());
            }
            _ => {}
        }
        if let Some(tls) = e.get_ref().and_then(|x| x.downcast_ref::<rustls::Error>()) {
            return format!("TLS with {host} failed: {tls}");
        }
    }
    let what = match t.kind() {
        ureq::ErrorKind::Dns => "cannot resolve the host name",
        ureq::ErrorKind::ConnectionFailed => "cannot connect",
        ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader => "not an HTTP answer",
        ureq::ErrorKind::TooManyRedirects => "redirected",
        _ => "request failed",
    };
    match ioe {
        Some(e) => format!("{what} ({host}): {e}"),
        None => format!("{what} ({host})"),
    }
}

/// The generic webhook's JSON: every field of the notice; a non-finite value as a string.
pub(super) fn payload(n: &Notice) -> Value {
    json!({
        "alert_id": n.alert_id,
        "state": n.state.as_str(),
        "run": n.run,
        "run_name": n.run_name,
        "rule": n.rule,
        "kind": n.kind,
        "level": n.level,
        "title": n.title,
        "text": n.text,
        "metric": n.metric,
        "value": n.value.map(num::to_json),
        "step": n.step,
        "action": n.action,
        "url": n.url,
        "time": num::to_json(n.time),
    })
}
