//! The HTTP API, the only layer besides dashboard serving that knows HTTP: routes
//! ([`routes`]), one error type with the storage-error table ([`error`]), the shared state
//! ([`state`]), and one file per job: [`ingest`], [`reads`], [`sse`] streams,
//! [`commands`], [`alerts`], [`meta`] (tags, group, notes; config values), [`media`] (uploaded images, media events), [`jobs`], [`metrics`], [`health`], [`access`] (the guard and login), and the
//! [`middleware`] around every route. Storage and fan-out know nothing of it.
//!
//! Imports go one way: handlers use `error`, `state` and `sse`; `routes` uses the
//! handlers; nothing imports `routes` but the server.

pub mod access;
pub mod alerts;
pub mod commands;
pub mod error;
pub mod health;
pub mod histogram;
pub mod ingest;
pub mod jobs;
pub mod media;
pub mod meta;
pub mod metrics;
pub mod middleware;
pub mod reads;
pub mod routes;
pub mod sse;
pub mod state;

pub use error::ApiError;
pub use routes::configure;
pub use state::{
    AppState, Data, Limits, DEFAULT_MAX_BODY_BYTES, DEFAULT_MEDIA_MAX_ITEM,
    DEFAULT_MEDIA_MAX_PIXELS, DEFAULT_MEDIA_MAX_RUN,
};
