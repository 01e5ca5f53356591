//! # stepwatch-agent — claims launched jobs and hands them to the team's engine
//!
//! `stepwatch agent --queue NAME --engine local|slurm|ray|kubernetes` runs [`run`]: it
//! talks to the relay over HTTP only ([`client`]), claims jobs of one queue under a lease
//! it renews with every heartbeat, starts each on its [`Engine`] (at most once: the engine
//! is asked for the job's key before anything is started), follows it there, and reports
//! every change (engine id, the engine's reason, running, the exit) as the job's history.
//! It forwards what a job prints to its run's log, and on a cancel it waits the queue's
//! grace period after the relay's `stop` command before the engine's stop, then kill.
//!
//! Engines ([`engines`]): `local` (a process group per job, a slot per GPU through
//! `CUDA_VISIBLE_DEVICES`), `slurm` (`sbatch`, `squeue`, `scontrol`, `scancel`), `ray` (the
//! Jobs REST API) and `kubernetes` (`batch/v1` Jobs). Placement is the engine's job:
//! the agent holds no scheduler of its own.

pub mod client;
pub mod engine;
pub mod engines;
mod held;

pub use client::{CallError, Relay};
pub use engine::{Engine, EngineError, Observed, OutputLine};
pub use held::{host_name, run, AgentOptions};
