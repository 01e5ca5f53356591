//! # stepwatch-relay — the relay between trainers and dashboards
//!
//! Accepts events over HTTP, commits them to SQLite before acknowledging, folds them
//! into each run's [`stepwatch_events::RunState`], and fans them out over
//! Server-Sent Events. It also serves the built dashboard.
//!
//! - [`store`]: durable storage behind the [`store::Storage`] trait (SQLite now).
//! - [`hub`]: non-blocking fan-out; a subscriber that falls behind is cut off.
//! - [`http`]: the HTTP API, the only layer that knows HTTP.
//! - [`demo`]: simulated trainers for `stepwatch demo`.

pub mod demo;
pub mod http;
pub mod hub;
pub mod store;

use actix_web::{web, App, HttpServer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>Stepwatch</title>\
<body style=\"font-family:sans-serif;padding:2em\"><h1>Stepwatch relay is running</h1>\
<p>The dashboard is not built. Run <code>cargo xtask run</code>, or <code>trunk build --release</code> \
and start the relay with <code>--dist dist</code>.</p><p>The API is under <code>/api</code>.</p>";

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

async fn spa_fallback(dist: web::Data<PathBuf>) -> actix_web::HttpResponse {
    match std::fs::read(dist.join("index.html")) {
        Ok(bytes) => actix_web::HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("Cache-Control", "no-cache"))
            .body(bytes),
        Err(_) => actix_web::HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(NOT_BUILT),
    }
}

/// Opens storage and serves until the process is stopped.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let store: Arc<dyn store::Storage> =
        Arc::new(store::SqliteStore::open(&opts.data_dir, opts.sync)?);
    let state = web::Data::new(http::AppState::new(store, opts.max_body));
    let dist = opts.dist.clone();
    let has_dist = Path::new(&dist).join("index.html").is_file();
    if !has_dist {
        tracing::warn!(dist = %dist.display(), "no built dashboard found; serving the API only");
    }
    let origins = opts.allow_origins.clone();
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .wrap(cors(&origins))
            .wrap(actix_web::middleware::Compress::default())
            .app_data(state.clone())
            .app_data(web::Data::new(dist.clone()))
            .configure(http::configure);
        if has_dist {
            app = app.service(
                actix_files::Files::new("/", &dist)
                    .index_file("index.html")
                    .default_handler(web::to(spa_fallback)),
            );
        } else {
            app = app.default_service(web::to(spa_fallback));
        }
        app
    })
    .workers(2)
    .bind(opts.bind)?;
    tracing::info!(bind = %opts.bind, data_dir = %opts.data_dir.display(), "stepwatch relay listening");
    println!("Stepwatch relay on http://{}", opts.bind);
    server.run().await?;
    Ok(())
}
