//! Progress as people read it, and the time left.
//!
//! Loops count their own way: `for epoch in range(epochs)` starts at 0, `enumerate(loader)`
//! gives batch 0 … N-1. The reducer keeps the trainer's numbers as they came (the seed's
//! `current_epoch` and `current_batch` never change meaning); [`crate::RunState::progress`] turns
//! them into what a person means: the epoch under way counted from 1, the batches done,
//! and the fraction of the run behind it. [`crate::RunState::eta_s`] estimates the time left
//! from the pace of the batches and of what happens between epochs (validation, saving),
//! with paused time left out. Both read [`Pace`], which the reducer keeps as events come,
//! and a [`Position`]: the few fields of the run's state they need (so this module knows
//! nothing of the state, and the state owns its pace).

use crate::num;
use serde::{Deserialize, Serialize};

/// A run's progress as shown: 1-based epoch, batches done, fractions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Progress {
    /// The epoch under way (or the last one), counted from 1; `None` when the run
    /// reports no epochs.
    pub epoch: Option<u64>,
    pub total_epochs: Option<u64>,
    /// Epochs finished.
    pub epochs_done: u64,
    /// Batches done in the current epoch (the 0-based index 661 of 662 is 662 done).
    pub batch: Option<u64>,
    pub total_batches: Option<u64>,
    /// Fraction of the current epoch done, 0..=1, when its length is known.
    #[serde(with = "num::opt", default)]
    pub epoch_fraction: Option<f64>,
    /// Fraction of the whole run done, 0..=1, when its length is known. A completed run
    /// is 1; a stopped or failed run stays where it ended.
    #[serde(with = "num::opt", default)]
    pub fraction: Option<f64>,
}

/// What the reducer learns of a run's numbering and pace (kept in its state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Pace {
    /// Set by the reducer on every event: a state stored before the pace was kept has
    /// it false, and its progress falls back to the trainer's own numbers.
    pub kept: bool,
    /// The first epoch number the run reported (0 for `range(epochs)` loops).
    pub first_epoch: Option<u64>,
    /// A batch index 0 was seen: batches count from 0.
    pub batch_zero: bool,
    /// A batch index equal to the epoch's length was seen: batches count from 1.
    pub batch_full: bool,
    /// batch_end events in the current epoch.
    pub epoch_batches: u64,
    /// The current epoch reported its end.
    pub epoch_ended: bool,
    /// Seconds paused so far (between a pause's acceptance and its end).
    #[serde(with = "num::float")]
    pub paused_secs: f64,
    /// Trainer time the current pause began.
    #[serde(with = "num::opt")]
    pub paused_since: Option<f64>,
    /// Seconds between consecutive batch_end events of one epoch, paused time left out,
    /// and the batches they covered.
    #[serde(with = "num::float")]
    pub batch_secs: f64,
    pub batch_units: u64,
    /// Seconds spent between epochs (from an epoch's last batch to the next one's first,
    /// less the time of that batch), and how many such gaps.
    #[serde(with = "num::float")]
    pub gap_secs: f64,
    pub gaps: u64,
    /// Trainer time and index of the last batch_end, and the paused seconds then.
    #[serde(with = "num::opt")]
    pub last_batch_at: Option<f64>,
    pub last_batch_idx: Option<u64>,
    #[serde(with = "num::float")]
    pub paused_at_last_batch: f64,
    /// An epoch began since the last batch_end.
    pub crossed_epoch: bool,
}

impl Pace {
    /// An epoch number came in (from any event that carries one).
    pub(crate) fn saw_epoch(&mut self, epoch: u64) {
        if self.first_epoch.is_none() {
            self.first_epoch = Some(epoch);
        }
    }

    /// A new epoch began.
    pub(crate) fn new_epoch(&mut self) {
        self.epoch_batches = 0;
        self.epoch_ended = false;
        if self.last_batch_at.is_some() {
            self.crossed_epoch = true;
        }
    }

    /// A batch index came in; `total` is the epoch's length when known.
    pub(crate) fn saw_batch_idx(&mut self, idx: u64, total: Option<u64>) {
        if idx == 0 {
            self.batch_zero = true;
        }
        if total.is_some_and(|t| t > 0 && idx == t) {
            self.batch_full = true;
        }
    }

    /// Seconds paused up to trainer time `t` (a pause under way counts up to `t`).
    fn paused_until(&self, t: f64) -> f64 {
        self.paused_secs + self.paused_since.map_or(0.0, |p| (t - p).max(0.0))
    }

    /// Batches done after batch index `idx` (0-based unless the run counts from 1).
    pub fn done_after(&self, idx: u64) -> u64 {
        if self.one_based() {
            idx
        } else {
            idx.saturating_add(1)
        }
    }

    /// The run numbers its batches from 1.
    pub fn one_based(&self) -> bool {
        self.batch_full && !self.batch_zero
    }

    /// Seconds per batch learned so far.
    pub fn per_batch(&self) -> Option<f64> {
        (self.batch_units > 0).then(|| self.batch_secs / self.batch_units as f64)
    }

    /// Seconds between epochs learned so far.
    pub fn per_gap(&self) -> Option<f64> {
        (self.gaps > 0).then(|| self.gap_secs / self.gaps as f64)
    }

    /// A batch_end at trainer time `t` with index `idx` (None when it carried none).
    pub(crate) fn batch_end(&mut self, t: Option<f64>, idx: Option<u64>) {
        self.epoch_batches += 1;
        let Some(t) = t else { return };
        let paused = self.paused_until(t);
        if let Some(prev) = self.last_batch_at {
            let dt = (t - prev - (paused - self.paused_at_last_batch)).max(0.0);
            if self.crossed_epoch {
                // From the last batch of one epoch to the first of the next: what the
                // loop did in between, less the batches this event covers.
                let units = idx.map_or(1, |i| self.done_after(i).max(1));
                if let Some(per) = self.per_batch() {
                    self.gap_secs += (dt - per * units as f64).max(0.0);
                    self.gaps += 1;
                }
            } else {
                let units = match (idx, self.last_batch_idx) {
                    (Some(i), Some(j)) if i > j => i - j,
                    _ => 1,
                };
                self.batch_secs += dt;
                self.batch_units += units;
            }
        }
        self.last_batch_at = Some(t);
        self.last_batch_idx = idx;
        self.paused_at_last_batch = paused;
        self.crossed_epoch = false;
    }

    /// A pause took effect (accepted) or ended, at trainer time `t`.
    pub(crate) fn pause(&mut self, t: Option<f64>, on: bool) {
        let Some(t) = t else { return };
        match (on, self.paused_since) {
            (true, None) => self.paused_since = Some(t),
            (false, Some(p)) => {
                self.paused_secs += (t - p).max(0.0);
                self.paused_since = None;
            }
            _ => {}
        }
    }
}

/// Where a run stands, as progress needs it: the trainer's own numbers and the run's
/// status, taken from its state ([`crate::RunState::progress`] fills it in).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Position {
    /// Still going: running, paused or pending.
    pub live: bool,
    /// Running (not paused, not pending): the only status with a time left.
    pub running: bool,
    /// Ended as completed.
    pub completed: bool,
    /// The trainer's current epoch and batch, as sent.
    pub current_epoch: u64,
    pub current_batch: u64,
    pub total_epochs: Option<u64>,
    pub total_batches: Option<u64>,
    /// batch_end events applied.
    pub batch_count: u64,
    /// Trainer time the run started.
    pub started_at: Option<f64>,
}

impl Pace {
    /// The run's progress as people read it (see the module docs).
    pub fn progress(&self, at: &Position) -> Progress {
        let pace = self;
        // Snapshots from before the pace was kept: a reported epoch counts from 1.
        let has_epoch = pace.first_epoch.is_some() || at.current_epoch > 0;
        let mut epoch = has_epoch.then(|| {
            at.current_epoch
                .saturating_add(u64::from(pace.first_epoch == Some(0)))
        });
        // A run that ended right after an epoch began, before its first batch (a Stop
        // during validation takes effect at the next epoch_start): it ended after the
        // epoch before, not in this one.
        let unbegun = !at.live
            && pace.kept
            && pace.epoch_batches == 0
            && !pace.epoch_ended
            && at.batch_count > 0
            && epoch.is_some_and(|e| e > 1);
        if unbegun {
            epoch = epoch.map(|e| e - 1);
        }
        let total_epochs = at.total_epochs.filter(|t| *t > 0);
        let total_batches = at.total_batches.filter(|t| *t > 0);
        let done = || {
            let done = pace.done_after(at.current_batch);
            total_batches.map_or(done, |t| done.min(t))
        };
        let batch = if unbegun {
            total_batches.or(Some(done()))
        } else if pace.epoch_batches > 0 || (!pace.kept && at.batch_count > 0) {
            Some(done())
        } else if at.batch_count > 0 || (has_epoch && total_batches.is_some()) {
            Some(0) // a new epoch, no batch yet
        } else {
            None
        };
        let completed = at.completed;
        let ended = pace.epoch_ended || unbegun;
        let epochs_done = match (epoch, total_epochs) {
            (_, Some(t)) if completed => t,
            (Some(e), _) if ended => e,
            (Some(e), _) => e.saturating_sub(1),
            (None, _) => 0,
        };
        let epochs_done = total_epochs.map_or(epochs_done, |t| epochs_done.min(t));
        let epoch_fraction = match (batch, total_batches) {
            _ if ended || completed => Some(1.0),
            (Some(b), Some(t)) => Some((b as f64 / t as f64).clamp(0.0, 1.0)),
            _ => None,
        };
        let fraction = if completed {
            Some(1.0)
        } else {
            match total_epochs {
                Some(te) => {
                    let within = if ended {
                        0.0
                    } else {
                        epoch_fraction.unwrap_or(0.0)
                    };
                    Some(((epochs_done as f64 + within) / te as f64).clamp(0.0, 1.0))
                }
                // One pass with a known length, no epochs.
                None if epoch.is_none() => epoch_fraction,
                None => None,
            }
        };
        Progress {
            epoch,
            total_epochs,
            epochs_done,
            batch,
            total_batches,
            epoch_fraction,
            fraction,
        }
    }

    /// Seconds left at (wall-clock) time `now`, while the run is running: the batches to
    /// go at the pace of the batches so far, plus the time between epochs (validation,
    /// saving) as learned from the epochs behind it; paused time never counts. `None`
    /// when the run's length is unknown or nothing can be estimated yet.
    pub fn eta_s(&self, at: &Position, now: f64) -> Option<f64> {
        if !at.running {
            return None;
        }
        let p = self.progress(at);
        let tb = p.total_batches;
        let te = p.total_epochs.or(tb.map(|_| 1))?;
        let pace = self;
        let left_epochs = te.saturating_sub(p.epochs_done);
        if let (Some(per), Some(tb)) = (pace.per_batch(), tb) {
            let this = if pace.epoch_ended || left_epochs == 0 {
                0
            } else {
                tb.saturating_sub(p.batch.unwrap_or(0))
            };
            let after = if pace.epoch_ended {
                left_epochs
            } else {
                left_epochs.saturating_sub(1)
            };
            let gaps = pace.per_gap().unwrap_or(0.0) * left_epochs as f64;
            let estimate = (this as f64 + after as f64 * tb as f64) * per + gaps;
            let since = pace.last_batch_at.map_or(0.0, |t| {
                (now - t - (pace.paused_until(now) - pace.paused_at_last_batch)).max(0.0)
            });
            return Some((estimate - since).max(0.0));
        }
        // Too early for a pace: the fraction done over the time it took.
        let f = p.fraction?;
        let active = now - at.started_at? - pace.paused_until(now);
        (f > 0.0 && f < 1.0).then(|| active.max(0.0) * (1.0 - f) / f)
    }
}
