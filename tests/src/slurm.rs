//! A private one-node Slurm cluster (munged, `slurmctld -D`, `slurmd -D`) under a fresh
//! temporary directory, for the Slurm engine's tests; and the cleanup of those that
//! interrupted runs left behind.
//!
//! Needs Debian's `slurmctld slurmd slurm-client munge` (22.05) and root (slurmd runs
//! jobs as their user; munged runs as the `munge` user). No systemd, no cgroups
//! (`proctrack/linuxproc`, `task/none`), no accounting; the node has 2 CPUs, 2000 MB and
//! one GPU (`gres.conf` names /dev/null as its device) whatever the machine has
//! (`SlurmdParameters=config_overrides`).

use crate::relay::{free_port, wait_until};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The node's name in the cluster.
pub const SLURM_NODE: &str = "sw1";
/// CPUs the node offers.
pub const SLURM_CPUS: u32 = 2;
/// GPUs the node offers to Slurm's scheduler (one, its device /dev/null).
pub const SLURM_GPUS: u32 = 1;

const PREFIX: &str = "stepwatch-slurm-";

/// A running one-node cluster. Clients reach it with `SLURM_CONF` = [`SlurmCluster::conf`]
/// ([`SlurmCluster::command`] sets it). Dropping it cancels its jobs, stops its daemons,
/// ends every process left of it and removes the directory.
pub struct SlurmCluster {
    dir: PathBuf,
    conf: PathBuf,
    daemons: Vec<Child>,
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn short_host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    name.trim()
        .split('.')
        .next()
        .unwrap_or("localhost")
        .to_string()
}

fn find_program(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn chown(owner: &str, path: &Path) -> Result<(), String> {
    let ok = Command::new("chown")
        .arg(owner)
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(())
        .ok_or(format!("chown {owner} {} failed", path.display()))
}

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

impl SlurmCluster {
    /// Starts a cluster and waits until its node is idle; panics with the reason when it
    /// cannot.
    pub fn start() -> SlurmCluster {
        SlurmCluster::try_start().unwrap_or_else(|e| panic!("cannot start Slurm: {e}"))
    }

    /// Starts a cluster (removing the stale ones of killed runs first).
    pub fn try_start() -> Result<SlurmCluster, String> {
        for p in [
            "munged",
            "slurmctld",
            "slurmd",
            "sbatch",
            "squeue",
            "scontrol",
            "scancel",
        ] {
            if find_program(p).is_none() {
                return Err(format!(
                    "{p} not found: apt-get install slurmctld slurmd slurm-client munge"
                ));
            }
        }
        if !running_as_root() {
            return Err("the test Slurm cluster needs root (slurmd, munged as munge)".into());
        }
        remove_stale_slurm_clusters();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["munge-key", "munge-run", "state", "spool", "log"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut cluster = SlurmCluster {
            conf: dir.join("slurm.conf"),
            dir,
            daemons: Vec::new(),
        };
        cluster.start_munged()?;
        cluster.write_conf()?;
        cluster.spawn("slurmctld", &["-D", "-c", "-f"])?;
        cluster.spawn("slurmd", &["-D", "-N", SLURM_NODE, "-f"])?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if cluster.node_state().as_deref() == Some("idle") {
                return Ok(cluster);
            }
            if let Some(gone) = cluster.exited() {
                return Err(format!("{gone} exited{}", cluster.log_tails()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "the node was not idle within 60 s (sinfo: {:?}){}",
            cluster.node_state(),
            cluster.log_tails()
        ))
    }

    /// munged as the `munge` user with its own key and socket under the directory.
    fn start_munged(&mut self) -> Result<(), String> {
        let key_dir = self.dir.join("munge-key");
        let run_dir = self.dir.join("munge-run");
        let mut key = vec![0u8; 1024];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        let key_file = key_dir.join("munge.key");
        std::fs::write(&key_file, key).map_err(|e| format!("munge key: {e}"))?;
        chmod(&self.dir, 0o755)?;
        chmod(&key_file, 0o600)?;
        chmod(&key_dir, 0o700)?;
        chmod(&run_dir, 0o755)?;
        for p in [&key_file, &key_dir, &run_dir] {
            chown("munge:munge", p)?;
        }
        let socket = self.munge_socket();
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=munge", "--regid=munge", "--clear-groups"])
            .arg(find_program("munged").unwrap_or_default())
            .arg("-F")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key_file.display()))
            .arg(format!(
                "--pid-file={}",
                run_dir.join("munged.pid").display()
            ))
            .arg(format!(
                "--log-file={}",
                run_dir.join("munged.log").display()
            ))
            .arg(format!(
                "--seed-file={}",
                run_dir.join("munged.seed").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("cannot run munged: {e}"))?;
        self.daemons.push(child);
        let started = Instant::now();
        while !socket.exists() {
            if started.elapsed() > Duration::from_secs(20) || self.exited().is_some() {
                let log = std::fs::read_to_string(run_dir.join("munged.log")).unwrap_or_default();
                return Err(format!("munged did not start:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn munge_socket(&self) -> PathBuf {
        self.dir.join("munge-run/munge.sock")
    }

    fn write_conf(&self) -> Result<(), String> {
        let d = self.dir.display();
        let host = short_host_name();
        let (ctld_port, slurmd_port) = (free_port(), free_port());
        let conf = format!(
            "ClusterName=stepwatch\n\
             SlurmctldHost={host}(127.0.0.1)\n\
             SlurmctldPort={ctld_port}\n\
             SlurmdPort={slurmd_port}\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             AuthType=auth/munge\n\
             CredType=cred/munge\n\
             AuthInfo=socket={sock}\n\
             StateSaveLocation={d}/state\n\
             SlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\n\
             SlurmdPidFile={d}/slurmd.pid\n\
             SlurmctldLogFile={d}/log/slurmctld.log\n\
             SlurmdLogFile={d}/log/slurmd.log\n\
             PlugStackConfig={d}/plugstack.conf\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             MpiDefault=none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             JobCompType=jobcomp/none\n\
             SchedulerType=sched/backfill\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_CPU\n\
             SlurmdParameters=config_overrides\n\
             GresTypes=gpu\n\
             ReturnToService=2\n\
             InactiveLimit=0\n\
             KillWait=2\n\
             MinJobAge=300\n\
             NodeName={SLURM_NODE} NodeHostname={host} NodeAddr=127.0.0.1 \
             CPUs={SLURM_CPUS} RealMemory=2000 Gres=gpu:{SLURM_GPUS} State=UNKNOWN\n\
             PartitionName=debug Nodes={SLURM_NODE} Default=YES MaxTime=INFINITE State=UP\n",
            sock = self.munge_socket().display(),
        );
        // One GPU whose device is /dev/null: Slurm schedules it (and sets
        // CUDA_VISIBLE_DEVICES), nothing uses it.
        let gres = format!("NodeName={SLURM_NODE} Name=gpu File=/dev/null\n");
        std::fs::write(self.dir.join("plugstack.conf"), "")
            .and_then(|()| std::fs::write(self.dir.join("gres.conf"), gres))
            .and_then(|()| std::fs::write(&self.conf, conf))
            .map_err(|e| format!("slurm.conf: {e}"))
    }

    /// Starts a daemon in the foreground, its output in `log/<name>.out`.
    fn spawn(&mut self, name: &str, args: &[&str]) -> Result<(), String> {
        let out = std::fs::File::create(self.dir.join(format!("log/{name}.out")))
            .map_err(|e| format!("{name} log: {e}"))?;
        let child = Command::new(find_program(name).unwrap_or_default())
            .args(args)
            .arg(&self.conf)
            .env("SLURM_CONF", &self.conf)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot run {name}: {e}"))?;
        self.daemons.push(child);
        Ok(())
    }

    /// The first daemon that exited, by name.
    fn exited(&mut self) -> Option<&'static str> {
        const NAMES: [&str; 3] = ["munged", "slurmctld", "slurmd"];
        let i = self
            .daemons
            .iter_mut()
            .position(|c| matches!(c.try_wait(), Ok(Some(_))))?;
        Some(NAMES.get(i).copied().unwrap_or("a daemon"))
    }

    fn log_tails(&self) -> String {
        let mut text = String::new();
        for f in [
            "log/slurmctld.out",
            "log/slurmd.out",
            "log/slurmctld.log",
            "log/slurmd.log",
        ] {
            let log = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            if !tail.is_empty() {
                text.push_str(&format!("\n--- {f}:\n{tail}"));
            }
        }
        text
    }

    /// Freezes slurmctld (SIGSTOP): clients connect but get no answer, as with a hung
    /// controller. [`SlurmCluster::resume_controller`] thaws it.
    pub fn pause_controller(&self) {
        self.signal_controller("STOP");
    }

    /// Thaws slurmctld after [`SlurmCluster::pause_controller`].
    pub fn resume_controller(&self) {
        self.signal_controller("CONT");
    }

    fn signal_controller(&self, signal: &str) {
        if let Some(ctld) = self.daemons.get(1) {
            signal_all(&[ctld.id()], signal);
        }
    }

    /// `sinfo`'s word for the node (`idle`, `alloc`, `mix` …).
    pub fn node_state(&self) -> Option<String> {
        let out = self
            .command("sinfo")
            .args(["-h", "-N", "-o", "%T"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    }

    /// The cluster's `slurm.conf` (what `SLURM_CONF` must name for its clients).
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The directory holding its state, spool, logs and munge socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A Slurm client command (`sbatch`, `squeue` …) aimed at this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(find_program(program).unwrap_or_else(|| program.into()));
        c.env("SLURM_CONF", &self.conf).stdin(Stdio::null());
        c
    }

    /// `squeue`'s `ID|STATE|NAME` lines for the cluster's jobs (`all`: finished ones
    /// still in slurmctld too).
    pub fn squeue(&self, all: bool) -> Vec<String> {
        self.try_squeue(all).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_squeue(&self, all: bool) -> Result<Vec<String>, String> {
        let mut c = self.command("squeue");
        c.args(["-h", "-o", "%i|%T|%j"]);
        if all {
            c.arg("--states=all");
        }
        let out = c.output().map_err(|e| format!("squeue: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "squeue failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// How many jobs (finished ones still in slurmctld included) are named `name`.
    pub fn jobs_named(&self, name: &str) -> usize {
        let suffix = format!("|{name}");
        self.squeue(true)
            .iter()
            .filter(|l| l.ends_with(&suffix))
            .count()
    }

    /// Cancels every job and waits (up to `timeout`) until none is left running.
    pub fn cancel_all(&self, timeout: Duration) {
        let ids: Vec<String> = self
            .try_squeue(false)
            .unwrap_or_default()
            .iter()
            .filter_map(|l| l.split('|').next().map(String::from))
            .collect();
        if ids.is_empty() {
            return;
        }
        let _ = self.command("scancel").args(&ids).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !self.try_squeue(false).unwrap_or_default().is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `squeue` lists no job that has not ended.
    pub fn wait_empty(&self, timeout: Duration) {
        wait_until("squeue to be empty", timeout, || {
            self.squeue(false).is_empty().then_some(())
        });
    }
}

/// Every process (but this one) whose command line or environment names `dir`: the
/// daemons, their `slurmstepd`s, the jobs (Slurm gives each job `SLURM_CONF`) and the
/// agents aimed at the cluster (`--engine-opt conf=<dir>/slurm.conf`).
fn processes_of(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/", dir.display());
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            ["cmdline", "environ"].iter().any(|f| {
                std::fs::read(format!("/proc/{pid}/{f}"))
                    .is_ok_and(|b| String::from_utf8_lossy(&b).contains(&needle))
            })
        })
        .collect()
}

fn signal_all(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// Ends every process of the cluster in `dir` (TERM, then KILL after `grace`) and
/// removes the directory.
fn tear_down(dir: &Path, grace: Duration) {
    signal_all(&processes_of(dir), "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !processes_of(dir).is_empty() {
        std::thread::sleep(Duration::from_millis(100));
    }
    signal_all(&processes_of(dir), "KILL");
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `PID (COMM) STATE …`: COMM may hold spaces and parentheses.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Stops and deletes the clusters that runs no longer alive left behind (a test run
/// interrupted with Ctrl-C cannot drop its cluster); returns how many.
pub fn remove_stale_slurm_clusters() -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<u32>) else {
            continue;
        };
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        tear_down(&entry.path(), Duration::from_secs(2));
        removed += 1;
    }
    removed
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        // Jobs first, while slurmd can still end them the way Slurm does.
        self.resume_controller();
        if self.exited().is_none() {
            self.cancel_all(Duration::from_secs(10));
        }
        for d in self.daemons.iter_mut().rev() {
            let _ = Command::new("kill")
                .arg(d.id().to_string())
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for d in self.daemons.iter_mut() {
            while Instant::now() < deadline && matches!(d.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        tear_down(&self.dir, Duration::from_secs(3));
    }
}
