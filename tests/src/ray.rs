//! A real local Ray head for the Ray engine's tests, kept off the real network.
//!
//! Ray binds the machine's non-loopback address whatever `--node-ip-address` says, so the
//! test runs where no other address exists: [`in_private_network`] re-runs the calling
//! test in new network and PID namespaces (`unshare --net --pid --fork --kill-child
//! --mount-proc`, with only `lo`, brought up). Ray, the relay, the agent and the test's
//! own HTTP calls all live in there, on loopback; nothing can reach the host's network.
//! The PID namespace is the cleanup guarantee: when the re-run ends, or its parent dies
//! (`setpriv --pdeathsig KILL`, `--kill-child`), the kernel kills every Ray process left.
//! [`RayHead::start`] then runs `ray start --head` in there; dropping it runs
//! `ray stop --force` and removes its folder.
//!
//! Needs root (or user namespaces) and Ray (`$STEPWATCH_RAY`, the repo's `.venv/bin/ray`,
//! else `ray` on PATH): without them the test says why and passes, unless
//! `STEPWATCH_REQUIRE_RAY=1`, which makes it fail.

use crate::relay::repo;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the re-run: the outer test process's pid.
const INSIDE: &str = "STEPWATCH_RAY_NETNS_OWNER";
/// Where each run keeps its Ray folder and temp files: `<prefix><outer pid>`.
const DIR_PREFIX: &str = "/tmp/stepwatch-ray-";
/// The dashboard port inside the namespace (its own port space: no clash with the host).
pub const RAY_DASHBOARD_PORT: u16 = 8265;

/// The `ray` program: `$STEPWATCH_RAY`, the repo's `.venv/bin/ray`, else `ray` on PATH;
/// `None` when the one named is not there.
pub fn ray_bin() -> Option<PathBuf> {
    let named = std::env::var_os("STEPWATCH_RAY").map(PathBuf::from);
    let venv = repo().join(".venv/bin/ray");
    let ray = named.unwrap_or(if venv.exists() { venv } else { "ray".into() });
    if ray.components().count() > 1 {
        return ray.exists().then_some(ray);
    }
    let on_path = Command::new(&ray)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    on_path.then_some(ray)
}

fn require_ray() -> bool {
    std::env::var("STEPWATCH_REQUIRE_RAY").is_ok_and(|v| v == "1")
}

/// Whether this process runs in a network namespace with loopback only (its own
/// `/proc/self/net/dev`: `/sys/class/net` shows the namespace sysfs was mounted in).
pub fn only_loopback() -> bool {
    std::fs::read_to_string("/proc/self/net/dev").is_ok_and(|dev| {
        dev.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .all(|name| name.trim() == "lo")
    })
}

/// Runs the test named `test` (its full name, as `--exact` wants it) again in a private
/// network and PID namespace, and waits for it. Returns `true` in that re-run (go on with
/// the test there), `false` in the outer run once the re-run passed or when Ray cannot run
/// here (skipped, with the reason printed); panics when the re-run failed.
pub fn in_private_network(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        assert!(
            only_loopback(),
            "the re-run of {test} sees interfaces other than lo"
        );
        return true;
    }
    if let Err(why) = can_run() {
        assert!(!require_ray(), "STEPWATCH_REQUIRE_RAY=1 but {why}");
        eprintln!("skipped {test}: {why} (STEPWATCH_REQUIRE_RAY=1 makes this fail)");
        return false;
    }
    remove_stale_heads();
    let owner = std::process::id();
    let dir = run_dir(owner);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let exe = std::env::current_exe().unwrap();
    // `sh` stays as the namespace's PID 1 (it reaps orphans); the test runs under it.
    let status = Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .args([
            "unshare",
            "--net",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
        ])
        .args(["--", "/bin/sh", "-c", "ip link set lo up && \"$0\" \"$@\""])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, owner.to_string())
        // Temp files named by pid must not meet another namespace's (pids start at 1).
        .env("TMPDIR", dir.join("tmp"))
        .status()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.success(),
        "{test} failed in its private network namespace ({status}); its output is above"
    );
    false
}

/// Why a Ray head cannot run here, if it cannot.
fn can_run() -> Result<(), String> {
    if ray_bin().is_none() {
        return Err("Ray is not installed (no $STEPWATCH_RAY, .venv/bin/ray or ray)".into());
    }
    let probe = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--mount-proc", "true"])
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "cannot make a private network namespace (unshare: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run unshare: {e}")),
    }
}

fn run_dir(owner: u32) -> PathBuf {
    PathBuf::from(format!("{DIR_PREFIX}{owner}"))
}

/// Kills Ray processes and removes folders that runs killed before their cleanup left
/// (their owner pid is dead). The PID namespace normally leaves none.
fn remove_stale_heads() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(&DIR_PREFIX["/tmp/".len()..])
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        for stale in processes_mentioning(&dir) {
            let _ = Command::new("kill")
                .args(["-9", &stale.to_string()])
                .status();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Pids whose command line names `dir`.
fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// A Ray head (`ray start --head`) on loopback in the private namespace. Dropping it stops
/// the head (`ray stop --force`) and removes its folder.
pub struct RayHead {
    /// The dashboard: the Jobs REST API's base, `http://127.0.0.1:8265`.
    pub address: String,
    /// Ray's `--temp-dir` (sessions, logs).
    pub dir: PathBuf,
    /// How long `ray start` took, to the Jobs API answering.
    pub start_took: Duration,
    ray: PathBuf,
}

impl RayHead {
    /// Starts a head; panics with Ray's output when it cannot. Call it in the re-run of
    /// [`in_private_network`] only.
    pub fn start() -> RayHead {
        let owner = std::env::var(INSIDE)
            .expect("RayHead::start runs only inside in_private_network's re-run");
        assert!(
            only_loopback(),
            "RayHead::start outside a loopback-only namespace"
        );
        let ray = ray_bin().expect("no ray program");
        let dir = run_dir(owner.parse().unwrap()).join("ray");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("start.log");
        let began = Instant::now();
        let out = Command::new(&ray)
            .args(["start", "--head", "--node-ip-address=127.0.0.1"])
            .arg("--dashboard-host=127.0.0.1")
            .arg(format!("--dashboard-port={RAY_DASHBOARD_PORT}"))
            .arg(format!("--temp-dir={}", dir.display()))
            .args([
                "--num-cpus=2",
                "--disable-usage-stats",
                "--include-dashboard=true",
            ])
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .status()
            .unwrap();
        let head = RayHead {
            address: format!("http://127.0.0.1:{RAY_DASHBOARD_PORT}"),
            dir,
            start_took: Duration::ZERO,
            ray,
        };
        assert!(
            out.success(),
            "ray start failed ({out}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        head.wait_ready(began)
    }

    /// Waits until the Jobs API lists jobs.
    fn wait_ready(mut self, began: Instant) -> RayHead {
        let url = format!("{}/api/jobs/", self.address);
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build();
        while agent.get(&url).call().is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(180),
                "the Ray dashboard did not answer at {url} within 180 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.start_took = began.elapsed();
        self
    }

    /// Ray's jobs (`GET /api/jobs/`), as Ray lists them.
    pub fn jobs(&self) -> Vec<serde_json::Value> {
        let url = format!("{}/api/jobs/", self.address);
        let body: serde_json::Value = ureq::get(&url).call().unwrap().into_json().unwrap();
        body.as_array().cloned().unwrap_or_default()
    }

    /// One job (`GET /api/jobs/{id}`), or `None` when Ray does not know it.
    pub fn job(&self, id: &str) -> Option<serde_json::Value> {
        let url = format!("{}/api/jobs/{id}", self.address);
        match ureq::get(&url).call() {
            Ok(r) => Some(r.into_json().unwrap()),
            Err(ureq::Error::Status(404, _)) => None,
            Err(e) => panic!("GET {url}: {e}"),
        }
    }

    /// Stops the head (`ray stop --force`); how long that took.
    pub fn stop(&mut self) -> Duration {
        let began = Instant::now();
        let _ = Command::new(&self.ray)
            .args(["stop", "--force"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        began.elapsed()
    }
}

impl Drop for RayHead {
    fn drop(&mut self) {
        let took = self.stop();
        eprintln!("ray stop --force took {:.1} s", took.as_secs_f64());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
