//! Retention (`--retain-days`): runs whose last event is older than the limit are
//! deleted, once at start and then every hour, and their deletion is fanned out.

use crate::clock::now;
use crate::hub::Hub;
use crate::storage::Storage;
use std::sync::Arc;
use std::time::Duration;

/// How often retention runs after the first pass.
pub const EVERY: Duration = Duration::from_secs(3600);

/// Deletes runs whose last event is older than `days`; returns the runs deleted.
pub fn apply_retention(store: &dyn Storage, hub: &Hub, days: f64, now: f64) -> Vec<String> {
    let cutoff = now - days * 86_400.0;
    let mut gone = Vec::new();
    for s in store.runs() {
        let last = s.last_event_at.or(s.started_at).unwrap_or(now);
        if last >= cutoff {
            continue;
        }
        match store.delete_run(&s.run) {
            Ok(Some(n)) => {
                tracing::info!(run = %s.run, events = n, days, "run deleted by retention");
                hub.publish_deleted(&s.run);
                gone.push(s.run);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(run = %s.run, error = %e, "retention could not delete run"),
        }
    }
    gone
}

/// One pass, off the async thread (the PostgreSQL client blocks).
pub async fn sweep(store: Arc<dyn Storage>, hub: Arc<Hub>, days: f64) {
    let _ = tokio::task::spawn_blocking(move || apply_retention(&*store, &hub, days, now())).await;
}

/// A pass every [`EVERY`], the first one an hour from now (the one at start is
/// [`sweep`]'s); runs until the relay stops.
pub async fn hourly(store: Arc<dyn Storage>, hub: Arc<Hub>, days: f64) {
    let mut every = tokio::time::interval(EVERY);
    every.tick().await; // the first tick is now: done at start
    loop {
        every.tick().await;
        sweep(store.clone(), hub.clone(), days).await;
    }
}
