//! # stepwatch-relay — the relay between trainers and dashboards
//!
//! Accepts events over HTTP, commits them to SQLite before acknowledging, folds them
//! into each run's [`stepwatch_events::RunState`], and fans them out over
//! Server-Sent Events. It also serves the built dashboard.
//!
//! - [`auth`]: users, roles, sessions and tokens (off unless a config file names users),
//!   sessions shared through the database in [`auth::sessions`].
//! - [`storage`]: durable storage behind the [`storage::Storage`] trait, with one
//!   append recipe: SQLite (`storage::sqlite`), the embedded default for one machine,
//!   and PostgreSQL (`storage::pg`), for several relays sharing one history
//!   (LISTEN/NOTIFY carries each commit to the other relays); the metric series index
//!   (`storage::series`) behind `GET /api/runs/{run}/series`.
//! - [`hub`]: non-blocking fan-out; a subscriber that falls behind is cut off.
//!   [`fanout`]: the hub as the storage's [`storage::peers::Fanout`], so other relays'
//!   commits reach this relay's subscribers.
//! - [`api`]: the HTTP API, the only layer besides dashboard serving that knows HTTP:
//!   ingest, reads, SSE streams, control commands, metrics, health, and the access guard
//!   in front of every route (login/logout/me), with one error type.
//! - [`launch`]: launched jobs: queues and templates (`--launch`), submissions checked
//!   against the queue's roles and the template's typed parameters, agents' leases,
//!   claims and reports, run tokens; the API in `api::jobs`, the agent in `stepwatch-agent`.
//! - [`alerts`]: alert rules run on every committed batch and on a clock, records in the
//!   run's stream (once across relays), notices to webhooks / Slack / e-mail with retries,
//!   pause / stop actions; the API in `api::alerts`.
//! - [`retention`]: `--retain-days`, old runs deleted at start and hourly.
//! - [`dashboard`]: the built dashboard as it is on disk now, brotli copies remade when a
//!   file changes, SPA fallback for routes (never for a missing asset: 404); or the one
//!   built into the binary (`embed-dashboard`, for the server wheel).
//! - [`cli`]: the command line of the `stepwatch` / `stepwatch-server` binaries.
//! - [`demo`]: simulated trainers for `stepwatch demo`.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod dashboard;
pub mod demo;
pub mod fanout;
pub mod hub;
pub mod launch;
pub mod retention;
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
    /// The dashboard folder; `None`: the built-in one, else `./dist`.
    pub dist: Option<PathBuf>,
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
    pub limits: api::Limits,
    /// Queues and templates (`--launch`, or `--demo`'s).
    pub launch: launch::LaunchConfig,
    /// Alert rules and channels (`--alerts`, or the `--config` file's `[alerts]`).
    pub alerts: Arc<alerts::AlertConfig>,
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
    let mut app_state = api::AppState::new(store.clone(), opts.max_body);
    if !opts.launch.queues.is_empty() {
        tracing::info!(
            queues = opts.launch.queues.len(),
            templates = opts.launch.templates.len(),
            "launching on"
        );
    }
    app_state.launch = Arc::new(launch::Launcher::new(store, opts.launch.clone()));

    app_state.alerts = start_alerts(&opts, &app_state)?;
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
        // every hour (below).
        retention::sweep(state.store.clone(), state.hub.clone(), days).await;
    }
    let dashboard = dashboard::choose(opts.dist.as_deref(), opts.data_dir.join("dashboard-br"))
        .map(web::Data::new);
    let origins = opts.allow_origins.clone();
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        let app = App::new()
            .wrap_fn(api::access::guard)
            .wrap_fn(api::middleware::log_request)
            .wrap(api::middleware::cors(&origins))
            .wrap(actix_web::middleware::Compress::default())
            .app_data(app_state.clone())
            .configure(api::configure);
        match &dashboard {
            Some(disk) => app
                .app_data(disk.clone())
                .default_service(web::get().to(dashboard::serve)),
            None => app.default_service(web::get().to(dashboard::embedded::serve)),
        }
    })
    .workers(2)
    // Storage calls run on each worker's blocking pool. Its default (256 threads a
    // worker) grew to ~330 threads when 1,000 streams opened at once, each replaying
    // from storage: most of the memory an idle subscriber seemed to cost. The database
    // is the limit there anyway (SQLite's one writer, a pool of 16 on PostgreSQL).
    .worker_max_blocking_threads(BLOCKING_THREADS)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
    .bind(opts.bind)?
    .run();
    tracing::info!(bind = %opts.bind, data_dir = %opts.data_dir.display(), "stepwatch relay listening");
    println!("Stepwatch relay on http://{}", opts.bind);
    if let Some(days) = opts.retain_days {
        let (store, hub) = (state.store.clone(), state.hub.clone());
        actix_web::rt::spawn(retention::hourly(store, hub, days));
    }
    let launcher = state.launch.clone();
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            let l = launcher.clone();
            let _ = web::block(move || l.sweep()).await;
        }
    });
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

/// The alert engine, hooked to the hub before anything is served.
fn start_alerts(opts: &ServeOptions, app: &api::AppState) -> anyhow::Result<Arc<alerts::Alerts>> {
    let a = Arc::new(alerts::Alerts {
        config: opts.alerts.clone(),
        metrics: Default::default(),
    });
    let base = opts
        .alerts
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", opts.bind));
    a.start(app.store.clone(), app.hub.clone(), base)?;
    tracing::info!(
        rules = opts.alerts.rules.len(),
        channels = opts.alerts.channels.len(),
        "alerts on"
    );
    Ok(a)
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

/// Blocking threads per HTTP worker (storage calls); see where the server is built.
const BLOCKING_THREADS: usize = 32;

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
