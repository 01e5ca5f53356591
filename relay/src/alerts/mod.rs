//! Alerts in the relay (docs/ALERTS.md): rules run on every run as its events are
//! committed, and on a clock for silence; what they decide is written into the run's
//! stream, sent to people and acted on.
//!
//! - [`config`]: the `[alerts]` table (default rules, global and per-prefix rules,
//!   channels with their secrets), checked whole at start;
//! - `engine`: the thread that sees every committed batch through the hub, runs each
//!   run's `RunAlerts` (from `stepwatch-events`), stores the records (once across relays:
//!   `src = "alert:<rule>"`, `seq` = the deciding event) and, for records it stored,
//!   sends the action (`pause` / `stop` by `alert:<rule>`) and queues the notices;
//! - `deliver`: the bounded delivery queue, attempts on their own threads, retries with
//!   backoff, every attempt recorded as `alert_delivery`;
//! - [`notify`]: one notice to one channel (webhook, Slack/Mattermost, e-mail over SMTP).

pub mod config;
mod deliver;
mod engine;
pub mod notify;

use crate::hub::Hub;
use crate::storage::Storage;
pub use config::AlertConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub fired: AtomicU64,
    pub resolved: AtomicU64,
    pub deliveries_ok: AtomicU64,
    pub deliveries_failed: AtomicU64,
    /// Notices refused because the delivery queue was full.
    pub queue_dropped: AtomicU64,
    /// Batches the engine could not take at once (read back from storage).
    pub lagged: AtomicU64,
    /// Records this relay decided that another relay had stored first.
    pub stored_elsewhere: AtomicU64,
}

impl Metrics {
    /// Prometheus text lines.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP stepwatch_alerts_fired_total Alerts fired (stored by this relay).\n\
             # TYPE stepwatch_alerts_fired_total counter\n\
             stepwatch_alerts_fired_total {}\n\
             # HELP stepwatch_alerts_resolved_total Alerts resolved by their condition.\n\
             # TYPE stepwatch_alerts_resolved_total counter\n\
             stepwatch_alerts_resolved_total {}\n\
             # HELP stepwatch_alert_deliveries_total Delivery attempts of alert notices.\n\
             # TYPE stepwatch_alert_deliveries_total counter\n\
             stepwatch_alert_deliveries_total{{result=\"ok\"}} {}\n\
             stepwatch_alert_deliveries_total{{result=\"failed\"}} {}\n\
             # HELP stepwatch_alert_queue_dropped_total Notices refused: the delivery queue was full.\n\
             # TYPE stepwatch_alert_queue_dropped_total counter\n\
             stepwatch_alert_queue_dropped_total {}\n\
             # HELP stepwatch_alert_engine_lagged_total Batches the alert engine read back from storage.\n\
             # TYPE stepwatch_alert_engine_lagged_total counter\n\
             stepwatch_alert_engine_lagged_total {}\n\
             # HELP stepwatch_alert_records_elsewhere_total Alert records another relay stored first.\n\
             # TYPE stepwatch_alert_records_elsewhere_total counter\n\
             stepwatch_alert_records_elsewhere_total {}",
            g(&self.fired),
            g(&self.resolved),
            g(&self.deliveries_ok),
            g(&self.deliveries_failed),
            g(&self.queue_dropped),
            g(&self.lagged),
            g(&self.stored_elsewhere),
        );
    }
}

/// The relay's alerts: the config and the counters (the engine runs on its own thread).
pub struct Alerts {
    pub config: Arc<AlertConfig>,
    pub metrics: Arc<Metrics>,
}

impl Alerts {
    /// Alerts with this config, not started (tests, and relays with no rules at all).
    pub fn new(config: AlertConfig) -> Self {
        Alerts {
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// Starts the engine thread and hooks it to the hub (runs can add rules of their
    /// own, so it runs even when the config has none).
    pub fn start(
        &self,
        store: Arc<dyn Storage>,
        hub: Arc<Hub>,
        base_url: String,
    ) -> anyhow::Result<()> {
        engine::start(
            self.config.clone(),
            store,
            hub,
            self.metrics.clone(),
            base_url,
        )
    }
}

#[cfg(test)]
mod tests;
