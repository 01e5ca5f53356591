//! # stepwatch-relay — the relay between trainers and dashboards
//!
//! Accepts events over HTTP, commits them to SQLite before acknowledging, folds them
//! into each run's [`stepwatch_events::RunState`], and fans them out over
//! Server-Sent Events. It also serves the built dashboard.
//!
//! - [`auth`]: users, roles, sessions and tokens (off unless a config file names users),
//!   sessions shared through the database in [`auth::sessions`];
//!   [`access`]: the HTTP guard in front of every route, login/logout/me.
//! - [`storage`]: durable storage behind the [`storage::Storage`] trait, with one
//!   append recipe: SQLite (`storage::sqlite`), the embedded default for one machine,
//!   and PostgreSQL (`storage::pg`), for several relays sharing one history
//!   (LISTEN/NOTIFY carries each commit to the other relays); the metric series index
//!   (`storage::series`) behind `GET /api/runs/{run}/series`.
//! - [`hub`]: non-blocking fan-out; a subscriber that falls behind is cut off.
//!   [`fanout`]: the hub as the storage's [`storage::peers::Fanout`], so other relays'
//!   commits reach this relay's subscribers.
//! - [`http`]: the HTTP API, the only layer that knows HTTP.
//! - [`commands`]: control commands, recorded in the run's stream, delivered to the trainer.
//! - [`dashboard`]: the built dashboard as it is on disk now, brotli copies remade when a
//!   file changes, SPA fallback for routes (never for a missing asset: 404).
//! - [`demo`]: simulated trainers for `stepwatch demo`.

pub mod access;
pub mod auth;
pub mod clock;
pub mod commands;
pub mod dashboard;
pub mod demo;
pub mod fanout;
pub mod http;
pub mod hub;
pub mod storage;

use actix_web::{web, App, HttpServer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// How to run the relay.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// PostgreSQL URL (`--database`); SQLite in `data_dir` when `None`.
    pub database: Option<String>,
    pub dist: PathBuf,
    pub allow_origins: Vec<String>,
    pub sync: storage::sqlite::SyncLevel,
    pub max_body: usize,
    /// Delete runs whose last event is older than this many days (checked hourly).
    pub retain_days: Option<f64>,
    /// Users and roles (`--config`); `None` runs without authentication.
    pub auth: Option<auth::Config>,
    /// Listen beyond loopback without authentication (`--insecure-no-auth`).
    pub insecure_no_auth: bool,
    /// Ingest limits.
    pub limits: http::Limits,
}

fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut c = actix_cors::Cors::default()
        .allowed_methods(vec!["GET", "POST", "DELETE", "OPTIONS"])
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
    check_bind(&opts)?;
    let (store, shared): (Arc<dyn storage::Storage>, _) = match &opts.database {
        Some(url) => {
            let pg = Arc::new(
                storage::pg::PgStore::open(url)?.with_max_metrics(opts.limits.max_metrics),
            );
            tracing::info!(database = pg.target(), "storing in PostgreSQL");
            (pg.clone(), Some(pg))
        }
        None => (
            Arc::new(
                storage::sqlite::SqliteStore::open(&opts.data_dir, opts.sync)?
                    .with_max_metrics(opts.limits.max_metrics),
            ),
            None,
        ),
    };
    let mut app_state = http::AppState::new(store, opts.max_body);

    app_state.limits = opts.limits.clone();
    app_state.allowed_origins = opts.allow_origins.clone();
    if let Some(config) = opts.auth.clone() {
        tracing::info!(users = config.users.len(), "authentication on");
        app_state.auth = Arc::new(auth::Auth::with_config(config));
    }
    if let Some(pg) = &shared {
        // Other relays' commits reach this relay's subscribers, and sign-ins are shared.
        let sessions = app_state.auth.enabled().then(|| {
            let job: Arc<dyn storage::peers::ListenerJob> =
                auth::sessions::SharedSessions::share(&app_state.auth, pg.clone());
            job
        });
        storage::pg::listen::listen(pg, app_state.hub.clone(), sessions);
    }
    let state = web::Data::new(app_state);
    if let Some(days) = opts.retain_days {
        // Once before serving, so no request sees a run that is past the limit; then
        // every hour (below). Off the async thread: the PostgreSQL client blocks.
        let (s, h) = (state.store.clone(), state.hub.clone());
        let _ = web::block(move || http::apply_retention(&*s, &h, days, clock::now())).await;
    }
    if !opts.dist.join("index.html").is_file() {
        tracing::warn!(dist = %opts.dist.display(), "no built dashboard found; serving the API only");
    }
    let dashboard = web::Data::new(dashboard::Dashboard::new(
        opts.dist.clone(),
        opts.data_dir.join("dashboard-br"),
    ));
    let origins = opts.allow_origins.clone();
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .wrap_fn(access::guard)
            .wrap_fn(log_request)
            .wrap(cors(&origins))
            .wrap(actix_web::middleware::Compress::default())
            .app_data(app_state.clone())
            .app_data(dashboard.clone())
            .configure(http::configure)
            .default_service(web::get().to(dashboard::serve))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
    .bind(opts.bind)?
    .run();
    tracing::info!(bind = %opts.bind, data_dir = %opts.data_dir.display(), "stepwatch relay listening");
    println!("Stepwatch relay on http://{}", opts.bind);
    if let Some(days) = opts.retain_days {
        let (store, hub) = (state.store.clone(), state.hub.clone());
        actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
            every.tick().await; // the first tick is now: done above
            loop {
                every.tick().await;
                let (s, h) = (store.clone(), hub.clone());
                let _ =
                    web::block(move || http::apply_retention(&*s, &h, days, clock::now())).await;
            }
        });
    }
    let handle = server.handle();
    let hub = state.hub.clone();
    actix_web::rt::spawn(async move {
        let signal = shutdown_signal().await;
        tracing::info!(signal, "shutting down: no new connections, closing streams");
        // Streams end first, so their clients reconnect (elsewhere) with Last-Event-ID;
        // requests in flight finish, within the grace period.
        hub.shut_down();
        handle.stop(true).await;
    });
    server.await?;
    let started = std::time::Instant::now();
    match state.store.flush() {
        Ok(()) => tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "storage flushed; bye"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "storage flush at shutdown failed (no acknowledged event is lost)")
        }
    }
    Ok(())
}

/// Logs each request (debug; server errors as warnings) with its status and time.
fn log_request<S, B>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>>
where
    S: actix_web::dev::Service<
        actix_web::dev::ServiceRequest,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    let started = std::time::Instant::now();
    let method = req.method().to_string();
    let path = req.path().to_string();
    let fut = srv.call(req);
    async move {
        let res = fut.await?;
        let status = res.status().as_u16();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::warn!(%method, %path, status, ms, "request failed");
        } else {
            tracing::debug!(%method, %path, status, ms, "request");
        }
        Ok(res)
    }
}

/// Refuses to listen beyond loopback without authentication, unless told to.
pub fn check_bind(opts: &ServeOptions) -> anyhow::Result<()> {
    if opts.bind.ip().is_loopback() || opts.auth.is_some() {
        return Ok(());
    }
    if opts.insecure_no_auth {
        tracing::warn!(bind = %opts.bind, "listening beyond loopback WITHOUT authentication: anyone who can reach this address can read every run and stop it");
        return Ok(());
    }
    anyhow::bail!(
        "refusing to listen on {} without authentication: anyone on the network could read \
         and stop your runs. Give users and roles with --config stepwatch.toml, bind to \
         127.0.0.1, or pass --insecure-no-auth if this network is trusted",
        opts.bind
    )
}

/// How long requests in flight may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for SIGTERM or SIGINT (Ctrl-C); returns its name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // No signal handling here: wait forever, the process is killed the hard way.
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
