//! # stepwatch-relay — the relay between trainers and dashboards
//!
//! Accepts events over HTTP, commits them to SQLite before acknowledging, folds them
//! into each run's [`stepwatch_events::RunState`], and fans them out over
//! Server-Sent Events. It also serves the built dashboard.
//!
//! - [`store`]: durable storage behind the [`store::Storage`] trait (SQLite now).
//! - [`series`]: the metric series index (blocks of points with summaries) behind
//!   `GET /api/runs/{run}/series`, so huge runs chart in milliseconds.
//! - [`hub`]: non-blocking fan-out; a subscriber that falls behind is cut off.
//! - [`http`]: the HTTP API, the only layer that knows HTTP.
//! - [`commands`]: control commands, recorded in the run's stream, delivered to the trainer.
//! - [`dashboard`]: the built dashboard, brotli-precompressed, with SPA fallback.
//! - [`demo`]: simulated trainers for `stepwatch demo`.

pub mod commands;
pub mod dashboard;
pub mod demo;
pub mod http;
pub mod hub;
pub mod series;
pub mod store;

use actix_web::{web, App, HttpServer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// How to run the relay.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub dist: PathBuf,
    pub allow_origins: Vec<String>,
    pub sync: store::SyncLevel,
    pub max_body: usize,
}

fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut c = actix_cors::Cors::default()
        .allowed_methods(vec!["GET", "POST", "OPTIONS"])
        .allowed_headers(vec![
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::HeaderName::from_static("last-event-id"),
        ])
        .max_age(3600);
    for o in origins {
        if o == "*" {
            c = c.allow_any_origin().send_wildcard();
        } else {
            c = c.allowed_origin(o.trim_end_matches('/'));
        }
    }
    c
}

/// Opens storage and serves until the process is stopped.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let store: Arc<dyn store::Storage> =
        Arc::new(store::SqliteStore::open(&opts.data_dir, opts.sync)?);
    let state = web::Data::new(http::AppState::new(store, opts.max_body));
    if !opts.dist.join("index.html").is_file() {
        tracing::warn!(dist = %opts.dist.display(), "no built dashboard found; serving the API only");
    }
    let dashboard = web::Data::new(dashboard::Dashboard::new(
        opts.dist.clone(),
        opts.data_dir.join("dashboard-br"),
    ));
    let origins = opts.allow_origins.clone();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(cors(&origins))
            .wrap(actix_web::middleware::Compress::default())
            .app_data(state.clone())
            .app_data(dashboard.clone())
            .configure(http::configure)
            .default_service(web::get().to(dashboard::serve))
    })
    .workers(2)
    .bind(opts.bind)?;
    tracing::info!(bind = %opts.bind, data_dir = %opts.data_dir.display(), "stepwatch relay listening");
    println!("Stepwatch relay on http://{}", opts.bind);
    server.run().await?;
    Ok(())
}
