//! # stepwatch-e2e — helpers for the end-to-end tests
//!
//! Everything here drives real parts: [`Relay`] spawns the `stepwatch` binary on a free
//! port with its own data dir, [`sse_collect`] reads a real SSE stream, [`Browser`] drives
//! headless Chromium through chromedriver's WebDriver API, and [`python_trainer`] runs a
//! real Python process using the SDK.
//!
//! PostgreSQL: [`pg_server`] is the shared test server (`STEPWATCH_TEST_PG`, started by
//! `cargo xtask test`), [`fresh_database`] makes a new database on it, [`PgCluster`]
//! starts a private throwaway server, and with `STEPWATCH_TEST_BACKEND=postgres`
//! every [`Relay::start`] runs on a fresh database of the shared server instead of
//! SQLite. [`FailoverProxy`] stands in for a load balancer in front of several relays.
//!
//! One module per thing set up; everything public is re-exported here, so tests use
//! `stepwatch_e2e::*` whatever module it lives in:
//!
//! | module       | sets up                                                         |
//! |--------------|-----------------------------------------------------------------|
//! | `relay`      | relay processes, free ports, temp data dirs, repo paths, polling |
//! | `http`       | [`Relay`]'s API requests (`post`, `get`, `all_events`, …)       |
//! | `streams`    | SSE clients ([`sse_collect`], [`sse_follow_ids`], [`SseFollower`]) |
//! | `browser`    | headless Chromium over chromedriver ([`Browser`])               |
//! | `python`     | Python trainer processes and the interpreter they use          |
//! | `launch`     | launch configs, `stepwatch agent` processes, the launch API     |
//! | `auth`       | users, tokens and password hashes ([`auth_config`])             |
//! | `pg`         | the shared PostgreSQL server, fresh databases, the backend switch |
//! | `pg_cluster` | private throwaway PostgreSQL servers ([`PgCluster`])            |
//! | `certs`      | TLS certificates for the TLS tests ([`TestCerts`])              |
//! | `proxy`      | the failover TCP proxy ([`FailoverProxy`])                      |
//! | `slurm`      | private one-node Slurm clusters ([`SlurmCluster`])              |
//! | `ray`        | a Ray head in a private network namespace ([`RayHead`], [`in_private_network`]) |
//! | `kube`       | the Kubernetes API stand-in ([`KubeStandin`]), not a real one    |
//! | `alerts`     | `--alerts` configs, channel tables, a NaN trainer, alert events  |
//! | `hooks`      | a webhook receiver recording alert notices ([`WebhookReceiver`]) |
//! | `smtp`       | an SMTP sink with STARTTLS and AUTH, `aiosmtpd` ([`SmtpSink`])  |
#![allow(clippy::unwrap_used)]

mod alerts;
mod auth;
mod browser;
mod certs;
mod hooks;
mod http;
mod kube;
mod launch;
mod media;
mod pg;
mod pg_cluster;
mod proxy;
mod python;
mod ray;
mod relay;
mod slurm;
mod smtp;
mod streams;

pub use alerts::*;
pub use auth::*;
pub use browser::*;
pub use certs::*;
pub use hooks::*;
pub use kube::*;
pub use launch::*;
pub use media::*;
pub use pg::*;
pub use pg_cluster::*;
pub use proxy::*;
pub use python::*;
pub use ray::*;
pub use relay::*;
pub use slurm::*;
pub use smtp::*;
pub use streams::*;
