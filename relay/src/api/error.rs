//! The API's one error type: a status and a message, answered as `{"error": message}`
//! (plus any detail fields), with the one table from storage errors to statuses, and
//! `Retry-After` on every 503. Handlers return `Result<HttpResponse, ApiError>` and use `?`.

use crate::storage::StoreError;
use actix_web::error::BlockingError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use serde_json::{json, Map, Value};
use stepwatch_events::is_valid_run_id;

/// Seconds a client is asked to wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: &str = "2";

/// A refusal: status and a message naming what is wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Fields answered beside `error` (ingest names the event's `index` and `field`).
    detail: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            detail: Map::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 503: the relay cannot serve this now; retrying later may work.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// `GET /api/runs/{run}` and friends for a run that does not exist.
    pub fn no_run(run: &str) -> Self {
        ApiError::not_found(format!("no run {run:?}"))
    }

    /// Adds a field beside `error` in the answer.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.detail.insert(key.to_string(), value.into());
        self
    }

    /// Appends `more` to the message.
    #[must_use]
    pub fn with_suffix(mut self, more: &str) -> Self {
        self.message.push_str(more);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "error": self.message });
        if let Value::Object(map) = &mut body {
            map.extend(self.detail.clone());
        }
        let mut resp = HttpResponse::build(self.status).json(body);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        resp
    }
}

/// The table: a storage error's status. `Limit` is the client's to fix (400); every
/// other failure is the relay's storage not serving now (503, with `Retry-After`).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::Limit(_) => StatusCode::BAD_REQUEST,
            StoreError::Full
            | StoreError::Unavailable(_)
            | StoreError::Corrupt(_)
            | StoreError::Incompatible(_)
            | StoreError::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The blocking thread pool failed the call (it panicked or was shut down).
impl From<BlockingError> for ApiError {
    fn from(e: BlockingError) -> Self {
        ApiError::unavailable(e.to_string())
    }
}

/// Runs a blocking storage call off the async workers; both its failure and the pool's
/// come back as an [`ApiError`].
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    Ok(web::block(f).await??)
}

/// A run id from a path, checked: 400 naming the rule otherwise.
pub fn check_run(run: &str) -> Result<(), ApiError> {
    if is_valid_run_id(run) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid run id {:?}: run ids match [A-Za-z0-9._-]{{1,128}}",
            truncate(run, 160)
        )))
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn answer(e: &ApiError) -> (u16, Option<String>, Value) {
        let resp = e.error_response();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let status = resp.status().as_u16();
        let bytes = resp.into_body().try_into_bytes().unwrap_or_default();
        (
            status,
            retry,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[test]
    fn every_storage_error_but_limit_is_a_503_with_retry_after() {
        let unavailable = [
            StoreError::Full,
            StoreError::Unavailable("database unavailable".into()),
            StoreError::Corrupt("bad page".into()),
            StoreError::Incompatible("schema 9".into()),
            StoreError::Backend("oops".into()),
        ];
        for e in unavailable {
            let message = e.to_string();
            let (status, retry, body) = answer(&ApiError::from(e));
            assert_eq!(status, 503, "{message}");
            assert_eq!(retry.as_deref(), Some(RETRY_AFTER_SECONDS), "{message}");
            assert_eq!(body, json!({ "error": message }));
        }
        let (status, retry, body) = answer(&ApiError::from(StoreError::Limit("too many".into())));
        assert_eq!((status, retry), (400, None));
        assert_eq!(body, json!({ "error": "too many" }));
    }

    #[test]
    fn only_503s_carry_retry_after_and_details_sit_beside_the_error() {
        let (status, retry, body) = answer(&ApiError::unavailable("shutting down"));
        assert_eq!((status, retry.as_deref()), (503, Some("2")));
        assert_eq!(body, json!({ "error": "shutting down" }));
        let e = ApiError::bad_request("event 3: bad")
            .with("index", 3)
            .with("field", "step");
        let (status, retry, body) = answer(&e);
        assert_eq!((status, retry), (400, None));
        assert_eq!(
            body,
            json!({ "error": "event 3: bad", "index": 3, "field": "step" })
        );
        assert_eq!(answer(&ApiError::no_run("x")).0, 404);
    }

    #[test]
    fn run_ids_are_checked_and_long_ones_cut_in_the_message() {
        assert!(check_run("run-1.a_b").is_ok());
        let e = check_run(&"é".repeat(300)).err().map(|e| e.message);
        let message = e.unwrap_or_default();
        assert!(message.starts_with("invalid run id"), "{message}");
        assert_eq!(message.matches('é').count(), 160);
    }
}
