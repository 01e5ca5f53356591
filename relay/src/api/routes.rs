//! The route table: which handler answers each method and path of the API.

use super::error::ApiError;
use super::{access, alerts, commands, health, ingest, jobs, media, meta, metrics, reads, sse};
use actix_web::{web, HttpRequest};

/// Wires the API routes into an actix app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/api/login", web::post().to(access::login))
        .route("/api/logout", web::post().to(access::logout))
        .route("/api/me", web::get().to(access::me))
        .route("/metrics", web::get().to(metrics::metrics))
        .service(
            web::scope("/api")
                .route("/runs", web::get().to(reads::list_runs))
                .route("/stream", web::get().to(sse::summary_stream))
                .route("/runs/{run}", web::get().to(reads::get_run))
                .route("/runs/{run}", web::delete().to(reads::delete_run))
                .route("/runs/{run}/events", web::post().to(ingest::post_events))
                .route("/runs/{run}/events", web::get().to(reads::get_events))
                .route("/runs/{run}/stream", web::get().to(sse::run_stream))
                .route("/runs/{run}/series", web::get().to(reads::get_series))
                .route(
                    "/runs/{run}/commands",
                    web::post().to(commands::post_command),
                )
                .route(
                    "/runs/{run}/commands/stream",
                    web::get().to(commands::command_stream),
                )
                .route(
                    "/runs/{run}/commands/{id}/cancel",
                    web::post().to(commands::cancel_command),
                )
                .route("/runs/{run}/job", web::get().to(jobs::of_run))
                .route("/runs/{run}/meta", web::post().to(meta::set))
                .route("/runs/{run}/media/{sha}", web::put().to(media::put))
                .route("/runs/{run}/media/{sha}", web::get().to(media::get))
                .route("/values", web::get().to(meta::values))
                .route("/alerts/config", web::get().to(alerts::config))
                .route("/runs/{run}/alerts", web::get().to(alerts::of_run))
                .route("/runs/{run}/alerts/rules", web::post().to(alerts::set_rule))
                .route(
                    "/runs/{run}/alerts/rules/{name}",
                    web::delete().to(alerts::remove_rule),
                )
                .route(
                    "/runs/{run}/alerts/{alert_id}/dismiss",
                    web::post().to(alerts::dismiss),
                )
                .route("/queues", web::get().to(jobs::queues))
                .route("/queues/{queue}/claim", web::post().to(jobs::claim))
                .route("/templates", web::get().to(jobs::templates))
                .route("/jobs", web::get().to(jobs::list))
                .route("/jobs", web::post().to(jobs::submit))
                .route("/jobs/preview", web::post().to(jobs::preview))
                .route("/jobs/stream", web::get().to(jobs::stream))
                .route("/jobs/{id}", web::get().to(jobs::get))
                .route("/jobs/{id}/cancel", web::post().to(jobs::cancel))
                .route("/jobs/{id}/retry", web::post().to(jobs::retry))
                .route("/jobs/{id}/priority", web::post().to(jobs::priority))
                .route("/jobs/{id}/report", web::post().to(jobs::report))
                .route("/agents/heartbeat", web::post().to(jobs::heartbeat))
                .default_service(web::to(no_endpoint)),
        );
}

async fn no_endpoint(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no API endpoint {} {}",
        req.method(),
        req.path()
    )))
}
