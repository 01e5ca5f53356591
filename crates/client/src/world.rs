//! Distributed runs, as the Python SDK sees them (`clients/python/src/stepwatch/_dist.py`):
//! [`World::detect`] reads the launcher's environment (`RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `GROUP_RANK`; Slurm's `SLURM_PROCID` …; Open MPI's
//! `OMPI_COMM_WORLD_*`) and [`World::run_id`] names the run alike on every rank (the
//! same `ddp-<hash>` as the Python SDK computes). A client whose options carry a world
//! tags its samples, logs, errors and command answers with its rank, sends `rank`
//! events when it starts and ends, and, on a rank other than 0, sends nothing else
//! (rank 0 reports the training). Without a process group to agree through, each rank
//! carries out a command when it reaches it.

use sha2::{Digest, Sha256};

/// Where this process sits in a distributed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub rank: u64,
    pub size: u64,
    pub local_rank: u64,
    pub local_size: u64,
    pub node_rank: u64,
    pub host: String,
    pub launcher: &'static str,
    /// What names the job alike on every rank; `None`: nothing shared is known.
    pub key: Option<String>,
}

fn int(get: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> Option<u64> {
    names
        .iter()
        .find_map(|n| get(n).filter(|v| !v.trim().is_empty()))
        .and_then(|v| v.trim().parse().ok())
}

/// The kernel's host name (as Python's `socket.gethostname()`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

impl World {
    /// This process's place in a distributed job from the environment, or `None` for a
    /// single process.
    pub fn detect() -> Option<World> {
        Self::detect_from(&|k| std::env::var(k).ok(), &hostname(), parent_id())
    }

    /// As [`World::detect`], from `get` (an environment), with this host's name and the
    /// launcher's process id.
    pub fn detect_from(
        get: &dyn Fn(&str) -> Option<String>,
        host: &str,
        ppid: u32,
    ) -> Option<World> {
        let has = |n: &str| int(get, &[n]).is_some();
        let (launcher, rank, size, local, local_size, node) = if has("RANK") && has("WORLD_SIZE") {
            let launcher = if get("TORCHELASTIC_RUN_ID").is_some() {
                "torchrun"
            } else {
                "torch"
            };
            (
                launcher,
                int(get, &["RANK"]),
                int(get, &["WORLD_SIZE"]),
                int(get, &["LOCAL_RANK"]),
                int(get, &["LOCAL_WORLD_SIZE"]),
                int(get, &["GROUP_RANK", "NODE_RANK", "SLURM_NODEID"]),
            )
        } else if has("SLURM_PROCID") && has("SLURM_NTASKS") {
            (
                "slurm",
                int(get, &["SLURM_PROCID"]),
                int(get, &["SLURM_NTASKS"]),
                int(get, &["SLURM_LOCALID"]),
                int(get, &["SLURM_NTASKS_PER_NODE"]),
                int(get, &["SLURM_NODEID"]),
            )
        } else if has("OMPI_COMM_WORLD_RANK") {
            (
                "mpi",
                int(get, &["OMPI_COMM_WORLD_RANK"]),
                int(get, &["OMPI_COMM_WORLD_SIZE"]),
                int(get, &["OMPI_COMM_WORLD_LOCAL_RANK"]),
                int(get, &["OMPI_COMM_WORLD_LOCAL_SIZE"]),
                int(get, &["OMPI_COMM_WORLD_NODE_RANK"]),
            )
        } else {
            return None;
        };
        let (rank, size) = (rank.unwrap_or(0), size.unwrap_or(1));
        if size <= 1 || rank >= size {
            return None;
        }
        let local_rank = local.unwrap_or(rank);
        let local_size = local_size.unwrap_or(size);
        let node_rank = node.unwrap_or(rank / local_size.max(1));
        let key = Self::key(get, size, local_size, host, ppid);
        Some(World {
            rank,
            size,
            local_rank,
            local_size,
            node_rank,
            host: host.to_string(),
            launcher,
            key,
        })
    }

    fn key(
        get: &dyn Fn(&str) -> Option<String>,
        size: u64,
        local_size: u64,
        host: &str,
        ppid: u32,
    ) -> Option<String> {
        let var = |k: &str| get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        let elastic = var("TORCHELASTIC_RUN_ID");
        if !elastic.is_empty() && elastic != "none" {
            return Some(format!("elastic:{elastic}"));
        }
        let job = var("SLURM_JOB_ID");
        if !job.is_empty() {
            let step = get("SLURM_STEP_ID").map_or_else(|| "0".into(), |s| s.trim().to_string());
            return Some(format!("slurm:{job}.{step}"));
        }
        let master = format!("{}:{}", var("MASTER_ADDR"), var("MASTER_PORT"));
        if local_size >= size {
            return Some(format!("local:{host}:{ppid}:{master}"));
        }
        (master != ":").then(|| format!("master:{master}"))
    }

    /// The run id every rank computes alike (`ddp-` and 12 hex digits of SHA-256 of the
    /// key), or `None` when the environment names nothing shared.
    pub fn run_id(&self) -> Option<String> {
        let key = self.key.as_ref()?;
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        Some(format!("ddp-{hex}"))
    }
}

/// The launcher's process id (torchrun's agent, mpirun's daemon).
fn parent_id() -> u32 {
    std::os::unix::process::parent_id()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn torchrun_ranks_of_one_job_name_one_run() {
        let rank = |r: &str| {
            let e = env(&[
                ("RANK", r),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", r),
                ("LOCAL_WORLD_SIZE", "2"),
                ("GROUP_RANK", "0"),
                ("TORCHELASTIC_RUN_ID", "none"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", "29500"),
            ]);
            World::detect_from(&e, "h", 77).unwrap()
        };
        let (a, b) = (rank("0"), rank("1"));
        assert_eq!((a.rank, b.rank, b.size, b.local_rank), (0, 1, 2, 1));
        assert_eq!(a.launcher, "torchrun");
        assert_eq!(a.run_id(), b.run_id());
        // The same key as the Python SDK: sha256("local:h:77:127.0.0.1:29500")[:12].
        assert_eq!(a.key.as_deref(), Some("local:h:77:127.0.0.1:29500"));
        // The Python SDK's id for this key (hashlib.sha256(key).hexdigest()[:12]).
        assert_eq!(a.run_id().as_deref(), Some("ddp-1d56dde27ac4"));
    }

    #[test]
    fn slurm_and_single_processes() {
        let e = env(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS_PER_NODE", "2"),
            ("SLURM_NODEID", "1"),
            ("SLURM_JOB_ID", "42"),
        ]);
        let w = World::detect_from(&e, "n1", 1).unwrap();
        assert_eq!((w.rank, w.size, w.local_rank, w.node_rank), (3, 8, 1, 1));
        assert_eq!(w.key.as_deref(), Some("slurm:42.0"));
        assert!(World::detect_from(&env(&[("RANK", "0"), ("WORLD_SIZE", "1")]), "h", 1).is_none());
        assert!(World::detect_from(&env(&[]), "h", 1).is_none());
        assert!(World::detect_from(&env(&[("RANK", "5"), ("WORLD_SIZE", "2")]), "h", 1).is_none());
    }
}
