//! The engines an agent can hand jobs to, and how `stepwatch agent` builds one.

pub mod kubernetes;
pub mod local;
pub mod output;
pub mod ray;
pub mod slurm;

use crate::engine::Engine;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What `stepwatch agent` gives an engine.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Where the engine keeps what it must remember across agent restarts (per job key).
    pub state_dir: PathBuf,
    /// The `stepwatch` binary itself (the local engine runs jobs under `stepwatch job-exec`).
    pub exe: PathBuf,
    /// GPUs the local engine hands out, one slot each (`--gpus 0,1` or `--gpus auto`).
    pub gpus: Vec<String>,
    /// `--engine-opt KEY=VALUE`: engine settings (Ray's address, the Kubernetes API …).
    pub opts: BTreeMap<String, String>,
}

/// The engine `name` names, built with `opts`.
pub fn build(name: &str, opts: &EngineOptions) -> anyhow::Result<Arc<dyn Engine>> {
    match name {
        "local" => Ok(Arc::new(local::Local::new(opts)?)),
        "slurm" => Ok(Arc::new(slurm::Slurm::new(opts)?)),
        "ray" => Ok(Arc::new(ray::Ray::new(opts)?)),
        "kubernetes" => Ok(Arc::new(kubernetes::Kubernetes::new(opts)?)),
        other => {
            anyhow::bail!("unknown engine {other:?}: expected local, slurm, ray or kubernetes")
        }
    }
}
