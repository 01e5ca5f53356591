//! # stepwatch-frontend — the dashboard
//!
//! A Leptos client-side app, built by trunk from the repository's `index.html`.
//! It resolves the relay's address ([`api::resolve_relay`]), subscribes to SSE
//! streams, folds events with the shared [`stepwatch_events::RunState`] reducer
//! ([`model::RunView`]) and draws charts with plotters on canvas ([`chart`]).
//! The URL hash ([`route`]) holds the page and its settings; [`views`] has one file
//! per screen.
//! Every UI string lives in [`i18n`] (English and Simplified Chinese).
//!
//! Updates are applied at most once per animation frame, however fast events arrive.

pub mod api;
pub mod app;
pub mod chart;
pub mod i18n;
pub mod model;
pub mod route;
pub mod views;

/// Entry point called by `main`.
pub fn start() {
    app::mount();
}
