//! The runs-list view of a run: [`RunSummary`], the part of a [`RunState`] that
//! `GET /api/runs` and the runs stream (`/api/stream`) write, one per run.

use crate::num;
use crate::progress::Progress;
use crate::records::{BestMetric, RunStatus};
use crate::state::RunState;
use serde::{Deserialize, Serialize};

/// The part of a [`RunState`] a runs list needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunSummary {
    pub run: String,
    pub name: String,
    pub status: RunStatus,
    pub current_epoch: u64,
    pub total_epochs: Option<u64>,
    pub current_batch: u64,
    pub total_batches: Option<u64>,
    pub step: u64,
    #[serde(with = "num::opt", default)]
    pub current_loss: Option<f64>,
    #[serde(with = "num::opt", default)]
    pub best_loss: Option<f64>,
    #[serde(default)]
    pub best_val: Option<BestMetric>,
    pub loss_non_finite: bool,
    /// Progress as people read it (1-based epoch, batches done, fraction).
    #[serde(default)]
    pub progress: Progress,
    #[serde(with = "num::opt", default)]
    pub started_at: Option<f64>,
    #[serde(with = "num::opt", default)]
    pub ended_at: Option<f64>,
    #[serde(with = "num::opt", default)]
    pub last_event_at: Option<f64>,
    pub last_id: u64,
    pub event_count: u64,
    /// Alerts active now, the loudest level among them and the newest one's title.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub alerts_active: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_title: Option<String>,
    /// The run's tags and group (`run_meta`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Set only on the runs stream's last word about a run that was deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl RunState {
    /// The runs-list view of this state.
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            run: self.run.clone(),
            name: self.name.clone(),
            status: self.status,
            current_epoch: self.current_epoch,
            total_epochs: self.total_epochs,
            current_batch: self.current_batch,
            total_batches: self.total_batches,
            step: self.step,
            current_loss: self.current_loss,
            best_loss: self.best_loss,
            best_val: self.best_val.clone(),
            loss_non_finite: self.loss_non_finite,
            progress: self.progress(),
            started_at: self.started_at,
            ended_at: self.ended_at,
            last_event_at: self.last_event_at,
            last_id: self.last_id,
            event_count: self.event_count,
            alerts_active: self.alerts.active.len() as u32,
            alert_level: self.alerts.top_level().map(str::to_string),
            alert_title: self.alerts.active.last().map(|a| a.title.clone()),
            tags: self.tags.clone(),
            group: self.group.clone(),
            deleted: false,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
