//! `GET /healthz` (the process answers) and `GET /readyz` (it can serve: storage
//! reachable, not shutting down), for supervisors and load balancers.

use super::error::ApiError;
use super::state::Data;
use actix_web::{web, HttpResponse};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Readiness, for load balancers: 503 with the reason while the database cannot be
/// reached (another relay may still reach it) or while shutting down.
pub async fn readyz(data: Data) -> Result<HttpResponse, ApiError> {
    if data.hub.is_closing() {
        return Err(ApiError::unavailable("shutting down"));
    }
    let store = data.store.clone();
    web::block(move || store.ready())
        .await
        .map_err(|_| ApiError::unavailable("storage check failed"))?
        .map_err(|e| ApiError::unavailable(format!("storage: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain")
        .body("ready\n"))
}
