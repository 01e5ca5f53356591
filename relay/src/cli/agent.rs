//! `stepwatch agent` and `stepwatch job-exec`, and the local agents `serve --demo` (or
//! `serve --local-agent`) runs beside the relay.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use stepwatch_agent::engines::EngineOptions;
use stepwatch_agent::AgentOptions;

/// `stepwatch agent`'s flags.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// The relay, as the agent (and the jobs it starts) reach it.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "STEPWATCH_URL")]
    url: String,
    /// A token of a user with role `agent` (or `admin`), when the relay has logins.
    #[arg(long, env = "STEPWATCH_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The queue to serve.
    #[arg(long)]
    queue: String,
    /// Where jobs run: local, slurm, ray or kubernetes (the queue's own engine).
    #[arg(long)]
    engine: String,
    /// This agent's name among the queue's agents (default: host and pid).
    #[arg(long)]
    name: Option<String>,
    /// Jobs run at once (default: 1, or one per GPU of --gpus for the local engine).
    #[arg(long)]
    slots: Option<u32>,
    /// Local engine: GPUs to hand out, one per job via CUDA_VISIBLE_DEVICES (`0,1,2` or
    /// `auto` for every GPU nvidia-smi lists).
    #[arg(long)]
    gpus: Option<String>,
    /// Where the engine keeps its per-job files (default ~/.cache/stepwatch/agent/<queue>).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Engine settings, `KEY=VALUE` (Ray: address; Kubernetes: api, namespace, token_file …).
    #[arg(long = "engine-opt", value_parser = key_value)]
    engine_opt: Vec<(String, String)>,
    /// Milliseconds between two looks at the relay and the engine.
    #[arg(long, default_value_t = 1000)]
    tick_ms: u64,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn gpu_list(spec: Option<&str>) -> anyhow::Result<Vec<String>> {
    match spec {
        None | Some("") => Ok(Vec::new()),
        Some("auto") => {
            let out = std::process::Command::new("nvidia-smi")
                .args(["--query-gpu=index", "--format=csv,noheader"])
                .output()
                .map_err(|e| anyhow::anyhow!("--gpus auto: cannot run nvidia-smi: {e}"))?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect())
        }
        Some(list) => {
            let gpus: Vec<String> = list.split(',').map(|g| g.trim().to_string()).collect();
            if gpus
                .iter()
                .any(|g| g.is_empty() || !g.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            {
                anyhow::bail!("--gpus {list:?}: expected indices or UUIDs separated by commas");
            }
            Ok(gpus)
        }
    }
}

fn default_state_dir(queue: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("stepwatch").join("agent").join(queue)
}

/// Runs `stepwatch agent` until SIGTERM or Ctrl-C (jobs keep running at their engine).
pub fn agent(a: AgentArgs) -> anyhow::Result<()> {
    let gpus = gpu_list(a.gpus.as_deref())?;
    let opts = EngineOptions {
        state_dir: a.state_dir.unwrap_or_else(|| default_state_dir(&a.queue)),
        exe: std::env::current_exe()?,
        gpus: gpus.clone(),
        opts: a.engine_opt.into_iter().collect::<BTreeMap<_, _>>(),
    };
    let engine = stepwatch_agent::engines::build(&a.engine, &opts)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let slots = a.slots.unwrap_or(if gpus.is_empty() {
        1
    } else {
        gpus.len() as u32
    });
    let options = AgentOptions {
        url: a.url,
        token: a.token,
        name: a
            .name
            .unwrap_or_else(|| format!("{}-{}", stepwatch_agent::host_name(), std::process::id())),
        queue: a.queue,
        slots: slots.max(1),
        tick: Duration::from_millis(a.tick_ms.clamp(50, 60_000)),
    };
    stepwatch_agent::run(&options, engine, &stop)
}

/// Starts a local agent for `queue` in this process, on a thread of its own.
pub fn spawn_local_agent(
    url: String,
    token: Option<String>,
    queue: String,
    state_dir: PathBuf,
    slots: u32,
) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => return tracing::error!("local agent: {e}"),
        };
        let opts = EngineOptions {
            state_dir,
            exe,
            ..EngineOptions::default()
        };
        let engine = match stepwatch_agent::engines::build("local", &opts) {
            Ok(e) => e,
            Err(e) => return tracing::error!("local agent: {e}"),
        };
        let options = AgentOptions {
            url,
            token,
            name: format!("{}-local", stepwatch_agent::host_name()),
            queue,
            slots,
            tick: Duration::from_millis(500),
        };
        let never = AtomicBool::new(false);
        if let Err(e) = stepwatch_agent::run(&options, engine, &never) {
            tracing::error!("local agent stopped: {e}");
        }
    });
}
