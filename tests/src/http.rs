//! HTTP requests to a relay's API: events posted, paths fetched, a run's whole history
//! paged through.

use crate::relay::Relay;
use serde_json::Value;

impl Relay {
    /// Every event id stored for `run`, oldest first (paged through the API).
    pub fn all_ids(&self, run: &str) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        loop {
            let after = out.last().copied().unwrap_or(0);
            let page = self.get_ok(&format!(
                "/api/runs/{run}/events?after={after}&limit=100000"
            ));
            let page = page.as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return out;
            }
            out.extend(page.iter().filter_map(|e| e["id"].as_u64()));
        }
    }

    /// Every event stored for `run` as the API serves it, oldest first (paged through
    /// `?after=`).
    pub fn all_events(&self, run: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let after = out.last().and_then(|e| e["id"].as_u64()).unwrap_or(0);
            let page = self.get_ok(&format!("/api/runs/{run}/events?after={after}&limit=1000"));
            let page = page.as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// POSTs `body` to the run's events; returns (status, JSON body).
    pub fn post(&self, run: &str, body: &str, content_type: &str) -> (u16, Value) {
        let res = ureq::post(&format!("{}/api/runs/{run}/events", self.url))
            .set("Content-Type", content_type)
            .send_string(body);
        status_json(res)
    }

    /// GETs a path; returns (status, JSON body).
    pub fn get(&self, path: &str) -> (u16, Value) {
        status_json(ureq::get(&format!("{}{path}", self.url)).call())
    }

    /// GETs a path that must answer 200 with JSON.
    pub fn get_ok(&self, path: &str) -> Value {
        let (s, v) = self.get(path);
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }
}

fn status_json(res: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match res {
        Ok(r) => {
            let s = r.status();
            (s, r.into_json().unwrap_or(Value::Null))
        }
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("request failed: {e}"),
    }
}
