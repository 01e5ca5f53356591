//! The command line of the relay's binaries (`stepwatch` from source, `stepwatch-server`
//! in the server wheel): `serve` the relay (and dashboard), run an `agent`, the `demo`
//! trainers, and the small tools (`migrate`, `hash-password`, `new-token`, `precompress`).

mod agent;

use crate::{api, storage::sqlite::SyncLevel, ServeOptions};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "stepwatch",
    version,
    about = "Live monitor and control panel for training runs"
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (or a tracing filter such as
    /// `info,stepwatch_relay=debug`). `debug` logs every request.
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "STEPWATCH_LOG_LEVEL"
    )]
    log_level: String,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "STEPWATCH_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Structured logs on stderr; the level names our crates, the server stays quieter.
fn init_logs(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = if level.contains("ureq") {
        level.to_string()
    } else if level.contains('=') || level.contains(',') {
        // ureq's debug lines hold URLs and headers: alert webhooks' secrets.
        format!("{level},ureq=warn")
    } else {
        format!("warn,stepwatch={level},stepwatch_relay={level},stepwatch_client={level}")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| anyhow::anyhow!("--log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay: store events, stream them, serve the dashboard.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080", env = "STEPWATCH_BIND")]
        bind: SocketAddr,
        /// Where the SQLite database lives (and, with --database, the relay's caches).
        #[arg(long, default_value = "./stepwatch-data", env = "STEPWATCH_DATA_DIR")]
        data_dir: PathBuf,
        /// Store in PostgreSQL instead of SQLite: `postgres://user:password@host:5432/db`.
        /// Several relays may share one database. TLS as libpq's URL parameters say:
        /// `?sslmode=verify-full&sslrootcert=ca.pem` (default `prefer`).
        #[arg(long, env = "STEPWATCH_DATABASE")]
        database: Option<String>,
        /// The built dashboard (trunk's output). Default: the dashboard built into this
        /// binary when it has one (the stepwatch-server package), else `./dist`.
        #[arg(long, env = "STEPWATCH_DIST")]
        dist: Option<PathBuf>,
        /// Origin allowed to call the API from a browser (repeatable; `*` for any).
        #[arg(long = "allow-origin")]
        allow_origin: Vec<String>,
        /// SQLite durability: `normal` survives a relay crash, `full` also power loss.
        #[arg(long, value_enum, default_value = "normal")]
        sync: SyncLevel,
        /// Largest ingest request body in bytes.
        #[arg(long, default_value_t = api::DEFAULT_MAX_BODY_BYTES)]
        max_body: usize,
        /// Also run the demo trainers against this relay.
        #[arg(long)]
        demo: bool,
        /// Delete runs whose last event is older than this many days (checked at start
        /// and hourly). Runs are kept forever when not given.
        #[arg(long, env = "STEPWATCH_RETAIN_DAYS", value_parser = positive_days)]
        retain_days: Option<f64>,
        /// Users, roles and tokens (stepwatch.toml). Without it there is no login and the
        /// relay only listens on loopback.
        #[arg(long, env = "STEPWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Listen beyond loopback without authentication (a trusted network only).
        #[arg(long)]
        insecure_no_auth: bool,
        /// Most events in one ingest request.
        #[arg(long, default_value_t = 10_000)]
        max_batch: usize,
        /// Longest string value in an event, in bytes.
        #[arg(long, default_value_t = 64 * 1024)]
        max_string: usize,
        /// Deepest nesting of objects and arrays in an event.
        #[arg(long, default_value_t = 16)]
        max_depth: usize,
        /// Most runs the relay holds.
        #[arg(long, default_value_t = 10_000)]
        max_runs: usize,
        /// Most metric series one run may have.
        #[arg(long, default_value_t = 1000)]
        max_metrics: usize,
        /// Largest uploaded image, in bytes.
        #[arg(long, default_value_t = api::DEFAULT_MEDIA_MAX_ITEM)]
        media_max_item: usize,
        /// Most pixels (width × height) of one uploaded image.
        #[arg(long, default_value_t = api::DEFAULT_MEDIA_MAX_PIXELS)]
        media_max_pixels: u64,
        /// Most bytes of media one run may hold.
        #[arg(long, default_value_t = api::DEFAULT_MEDIA_MAX_RUN)]
        media_max_run: u64,
        /// Queues and templates for launching jobs (docs/LAUNCH.md).
        #[arg(long, env = "STEPWATCH_LAUNCH")]
        launch: Option<PathBuf>,
        /// Also run a local agent for every queue on the local engine.
        #[arg(long)]
        local_agent: bool,
        /// Alert rules and channels: the file's [alerts] table (docs/ALERTS.md). Without
        /// it, the --config file's [alerts], else the default rules and no channels.
        #[arg(long, env = "STEPWATCH_ALERTS")]
        alerts: Option<PathBuf>,
    },
    /// Serve a launch queue: claim its jobs and run them on an engine.
    Agent(agent::AgentArgs),
    /// Runs one job of the local engine (used by `stepwatch agent`).
    #[command(hide = true)]
    JobExec {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Copy every run of a SQLite data dir into a PostgreSQL database.
    Migrate {
        /// The SQLite data dir to copy from (read only).
        #[arg(long, default_value = "./stepwatch-data", env = "STEPWATCH_DATA_DIR")]
        data_dir: PathBuf,
        /// The PostgreSQL database to copy into.
        #[arg(long, env = "STEPWATCH_DATABASE")]
        database: String,
    },
    /// Print an Argon2id hash of a password (read from stdin) for stepwatch.toml.
    HashPassword,
    /// Print a new random API token for stepwatch.toml.
    NewToken,
    /// Write brotli copies of the dashboard's files (run by `serve` in a child process).
    #[command(hide = true)]
    Precompress {
        #[arg(long)]
        dist: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run simulated trainers against a relay.
    Demo {
        /// The relay's address.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "STEPWATCH_URL")]
        url: String,
        /// How many runs at once.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Milliseconds between steps.
        #[arg(long, default_value_t = 50)]
        step_ms: u64,
        /// Start a new run when one finishes, forever.
        #[arg(long)]
        repeat: bool,
        /// One run of this simulated model (gpt2-small, resnet50-imagenet, …), under
        /// STEPWATCH_RUN when set: what the `demo` launch template runs.
        #[arg(long)]
        model: Option<String>,
        #[arg(long, default_value_t = 3)]
        epochs: u64,
        #[arg(long, default_value_t = 200)]
        batches: u64,
        #[arg(long, default_value_t = 3e-4)]
        lr: f64,
    },
}

fn positive_days(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if d.is_finite() && d > 0.0 => Ok(d),
        _ => Err(format!("{s:?} is not a positive number of days")),
    }
}

/// Parses the command line and runs the command.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(&cli.log_level, cli.log_format)?;
    match cli.cmd {
        Cmd::Serve {
            bind,
            data_dir,
            database,
            dist,
            allow_origin,
            sync,
            max_body,
            demo,
            retain_days,
            config,
            insecure_no_auth,
            max_batch,
            max_string,
            max_depth,
            max_runs,
            max_metrics,
            media_max_item,
            media_max_pixels,
            media_max_run,
            launch,
            local_agent,
            alerts,
        } => {
            let alerts = alerts_config(alerts.as_deref(), config.as_deref(), demo)?;
            let mut auth = config
                .as_deref()
                .map(crate::auth::Config::load)
                .transpose()?;
            if demo {
                let url = format!("http://{bind}");
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    crate::demo::run_demo(&url, 3, 50, true);
                });
            }
            let launch = launch_config(launch.as_deref(), demo)?;
            if demo || local_agent {
                start_local_agents(&launch, &mut auth, bind, &data_dir);
            }
            actix_web::rt::System::new().block_on(crate::serve(ServeOptions {
                bind,
                data_dir,
                database,
                dist,
                allow_origins: allow_origin,
                sync,
                max_body,
                retain_days,
                auth,
                insecure_no_auth,
                limits: api::Limits {
                    max_batch,
                    max_string,
                    max_depth,
                    max_runs,
                    max_metrics,
                    media_max_item,
                    media_max_pixels,
                    media_max_run,
                },
                launch,
                alerts,
            }))
        }
        Cmd::Migrate { data_dir, database } => {
            let report = crate::storage::copy::copy_from_sqlite(&data_dir, &database)?;
            println!(
                "copied {} runs, {} events, {} series blocks and {} media items from {} into {}",
                report.runs,
                report.events,
                report.blocks,
                report.media,
                data_dir.join("stepwatch.db").display(),
                crate::storage::pg::redact(&database)
            );
            Ok(())
        }
        Cmd::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                anyhow::bail!("no password on stdin: echo 'secret' | stepwatch hash-password");
            }
            println!("{}", crate::auth::hash_password(password)?);
            Ok(())
        }
        Cmd::NewToken => {
            println!("{}", crate::auth::new_token());
            Ok(())
        }
        Cmd::Precompress { dist, out } => {
            crate::dashboard::precompress_to(&dist, &out)?;
            Ok(())
        }
        Cmd::Agent(args) => agent::agent(args),
        Cmd::JobExec { dir } => stepwatch_agent::engines::local::job_exec(&dir),
        Cmd::Demo {
            url,
            runs,
            step_ms,
            repeat,
            model,
            epochs,
            batches,
            lr,
        } => {
            match model {
                Some(m) => crate::demo::run_single(&url, &m, epochs, batches, lr, step_ms),
                None => crate::demo::run_demo(&url, runs, step_ms, repeat),
            }
            Ok(())
        }
    }
}

/// `--alerts FILE`'s `[alerts]`, else the `--config` file's when it has one, else the
/// default rules with no channels (`--demo`: its `nan-loss` also pauses the run).
fn alerts_config(
    file: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
    demo: bool,
) -> anyhow::Result<std::sync::Arc<crate::alerts::AlertConfig>> {
    use crate::alerts::AlertConfig;
    let loaded = match (file, config) {
        (Some(f), _) => AlertConfig::load(f)?,
        (None, Some(c)) if has_alerts_table(c) => AlertConfig::load(c)?,
        _ if demo => AlertConfig::demo(),
        _ => AlertConfig::builtin(),
    };
    Ok(std::sync::Arc::new(loaded))
}

fn has_alerts_table(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("alerts"))
}

/// `--launch`'s queues and templates, with `--demo`'s `local` queue and `demo` template.
fn launch_config(
    file: Option<&std::path::Path>,
    demo: bool,
) -> anyhow::Result<crate::launch::LaunchConfig> {
    let mut config = file
        .map(crate::launch::LaunchConfig::load)
        .transpose()?
        .unwrap_or_default();
    if demo {
        let exe = std::env::current_exe()?.to_string_lossy().to_string();
        let d = crate::launch::LaunchConfig::demo(&exe);
        for q in d.queues {
            if config.queue(&q.name).is_none() {
                config.queues.push(q);
            }
        }
        for t in d.templates {
            if config.template(&t.template.name).is_none() {
                config.templates.push(t);
            }
        }
    }
    Ok(config)
}

/// A local agent per local queue, in this process; with logins on, it signs in with a
/// token made for it now (a user `local-agent`, role `agent`).
fn start_local_agents(
    launch: &crate::launch::LaunchConfig,
    auth: &mut Option<crate::auth::Config>,
    bind: SocketAddr,
    data_dir: &std::path::Path,
) {
    let token = auth.as_mut().map(|c| {
        let token = crate::auth::new_token();
        c.users.push(crate::auth::UserConfig {
            name: "local-agent".into(),
            role: crate::auth::Role::Agent,
            password_hash: None,
            tokens: vec![token.clone()],
            run_prefix: None,
        });
        token
    });
    let host = if bind.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], bind.port()))
    } else {
        bind
    };
    for q in launch
        .queues
        .iter()
        .filter(|q| q.engine == stepwatch_events::jobs::Engine::Local)
    {
        tracing::info!(queue = %q.name, "running a local agent for queue {}", q.name);
        agent::spawn_local_agent(
            format!("http://{host}"),
            token.clone(),
            q.name.clone(),
            data_dir.join("agent").join(&q.name),
            2,
        );
    }
}
