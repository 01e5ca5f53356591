//! # stepwatch-frontend — the dashboard
//!
//! A Leptos client-side app, built by trunk from the repository's `index.html`.
//! It resolves the relay's address ([`api::resolve_relay`]); [`load`] fetches a run's
//! history (decoded by `stepwatch_events::api`) and subscribes to SSE streams, folding
//! events with the shared [`stepwatch_events::RunState`] reducer into [`model::RunView`],
//! plain data the views only read (shared through Leptos context); [`chart`] draws
//! charts with plotters on canvas, and [`heatmap`] histograms over steps. The URL hash ([`route`]) holds the page and its
//! settings; [`views`] has one file per screen.
//! Every UI string lives in [`i18n`] (English and Simplified Chinese).
//!
//! Updates are applied at most once per animation frame, however fast events arrive.

pub mod api;
pub mod app;
pub mod chart;
pub mod heatmap;
pub mod i18n;
pub mod load;
pub mod model;
pub mod route;
pub mod views;

/// Entry point called by `main`.
pub fn start() {
    app::mount();
}
