//! The agent's side of the relay's launch API, over HTTP only: heartbeat, claim, report,
//! and the run's log for a job's output.

use serde_json::{json, Value};
use std::time::Duration;
use stepwatch_events::jobs::{Heartbeat, HeartbeatAnswer, JobView, Launch, Report};

/// An answer worth telling apart.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The relay refused the call (4xx): its `error` message.
    #[error("relay refused ({status}): {message}")]
    Refused { status: u16, message: String },
    /// No answer, or a 5xx: try again.
    #[error("relay unavailable: {0}")]
    Unavailable(String),
}

/// A relay, as the agent calls it.
#[derive(Clone)]
pub struct Relay {
    base: String,
    token: Option<String>,
    http: ureq::Agent,
}

impl Relay {
    pub fn new(url: &str, token: Option<String>) -> Relay {
        Relay {
            base: url.trim_end_matches('/').to_string(),
            token,
            http: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(Duration::from_secs(20))
                .build(),
        }
    }

    /// The relay's address, as the agent reaches it (jobs get it as `STEPWATCH_URL`).
    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: &str, path: &str, token: Option<&str>) -> ureq::Request {
        let mut req = self.http.request(method, &format!("{}{path}", self.base));
        if let Some(t) = token.or(self.token.as_deref()) {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        req
    }

    fn call(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Option<Value>, CallError> {
        match self.request("POST", path, token).send_json(body) {
            Ok(resp) if resp.status() == 204 => Ok(None),
            Ok(resp) => resp
                .into_json::<Value>()
                .map(Some)
                .map_err(|e| CallError::Unavailable(format!("unreadable answer: {e}"))),
            Err(ureq::Error::Status(status, resp)) if status < 500 => {
                let text = resp.into_string().unwrap_or_default();
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("error").and_then(Value::as_str).map(String::from))
                    .unwrap_or(text);
                Err(CallError::Refused { status, message })
            }
            Err(e) => Err(CallError::Unavailable(e.to_string())),
        }
    }

    /// Renews the leases of the jobs held; their states as they stand.
    pub fn heartbeat(&self, hb: &Heartbeat) -> Result<HeartbeatAnswer, CallError> {
        let v = self
            .call("/api/agents/heartbeat", &json!(hb), None)?
            .unwrap_or_default();
        serde_json::from_value(v)
            .map_err(|e| CallError::Unavailable(format!("heartbeat answer: {e}")))
    }

    /// The next job of the queue for this agent, if any.
    pub fn claim(&self, queue: &str, agent: &str) -> Result<Option<Launch>, CallError> {
        let path = format!("/api/queues/{queue}/claim");
        match self.call(&path, &json!({ "agent": agent }), None)? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| CallError::Unavailable(format!("claim answer: {e}"))),
        }
    }

    /// Tells the relay what became of a job.
    pub fn report(&self, job: &str, report: &Report) -> Result<JobView, CallError> {
        let v = self
            .call(&format!("/api/jobs/{job}/report"), &json!(report), None)?
            .unwrap_or_default();
        serde_json::from_value(v).map_err(|e| CallError::Unavailable(format!("report answer: {e}")))
    }

    /// Appends `events` to the job's run, with the job's own token.
    pub fn post_run_events(
        &self,
        run: &str,
        token: Option<&str>,
        events: &[Value],
    ) -> Result<(), CallError> {
        self.call(
            &format!("/api/runs/{run}/events"),
            &Value::Array(events.to_vec()),
            token,
        )
        .map(|_| ())
    }
}
