//! The event helpers: one method per event of the seed's API (`training_start`,
//! `batch_end`, …), each building its event and handing it to [`Client::emit`].

use crate::Client;
use stepwatch_events::event::{
    BatchEnd, CheckpointSaved, EpochEnd, EpochStart, Log, Metrics, TrainingEnd, TrainingStart,
};
use stepwatch_events::EventBody;

impl Client {
    /// `training_start`.
    pub fn training_start(
        &self,
        name: &str,
        total_epochs: u64,
        total_batches: u64,
        config: serde_json::Map<String, serde_json::Value>,
    ) {
        self.emit(EventBody::TrainingStart(TrainingStart {
            name: Some(name.to_string()),
            total_epochs: Some(total_epochs),
            total_batches: Some(total_batches),
            config: Some(config),
            ..Default::default()
        }));
    }

    /// `training_end` with status `completed`, `failed` or `stopped`.
    pub fn training_end(&self, status: &str) {
        self.emit(EventBody::TrainingEnd(TrainingEnd {
            status: Some(status.to_string()),
            ..Default::default()
        }));
    }

    /// `epoch_start`.
    pub fn epoch_start(&self, epoch: u64, total_epochs: u64) {
        self.emit(EventBody::EpochStart(EpochStart {
            epoch: Some(epoch),
            total_epochs: Some(total_epochs),
            ..Default::default()
        }));
    }

    /// `epoch_end` with summary metrics.
    pub fn epoch_end(&self, epoch: u64, metrics: Metrics) {
        self.emit(EventBody::EpochEnd(EpochEnd {
            epoch: Some(epoch),
            metrics: Some(metrics),
            ..Default::default()
        }));
    }

    /// `batch_end` with loss and learning rate.
    pub fn batch_end(&self, epoch: u64, batch_idx: u64, step: u64, loss: f64, lr: f64) {
        self.emit(EventBody::BatchEnd(BatchEnd {
            epoch: Some(epoch),
            batch_idx: Some(batch_idx),
            step: Some(step),
            loss: Some(loss),
            lr: Some(lr),
            ..Default::default()
        }));
    }

    /// `checkpoint_saved`.
    pub fn checkpoint_saved(
        &self,
        path: &str,
        epoch: u64,
        step: u64,
        size_bytes: u64,
        metrics: Metrics,
    ) {
        self.emit(EventBody::CheckpointSaved(CheckpointSaved {
            checkpoint_path: Some(path.to_string()),
            epoch: Some(epoch),
            step: Some(step),
            size_bytes: Some(size_bytes),
            metrics: Some(metrics),
            ..Default::default()
        }));
    }

    /// `log`.
    pub fn log(&self, level: &str, message: &str) {
        self.emit(EventBody::Log(Log {
            level: Some(level.to_string()),
            message: Some(message.to_string()),
            logger: Some("trainer".to_string()),
            ..Default::default()
        }));
    }
}
