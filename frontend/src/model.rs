//! What the run page holds: the shared reducer's [`RunState`] plus the series the
//! charts draw. Plain data, testable natively.

use stepwatch_events::{Event, EventBody, RunState, RunStatus, RunSummary};

/// Seconds without an event after which a running run shows as stale.
pub const STALE_AFTER_S: f64 = 60.0;

/// The live view of one run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunView {
    pub state: RunState,
    /// (global step, loss), in arrival order; non-finite losses kept.
    pub loss: Vec<(f64, f64)>,
    /// (global step, learning rate).
    pub lr: Vec<(f64, f64)>,
}

impl RunView {
    pub fn new(run: &str) -> Self {
        RunView {
            state: RunState::new(run),
            ..Default::default()
        }
    }

    /// Applies one streamed event; events already applied (by id) are ignored.
    pub fn apply(&mut self, e: &Event) {
        if let Some(id) = e.id {
            if id <= self.state.last_id {
                return;
            }
        }
        self.state.apply(e);
        if let EventBody::BatchEnd(b) = &e.body {
            let step = self.state.step as f64;
            if let Some(loss) = b.loss {
                self.loss.push((step, loss));
            }
            if let Some(lr) = b.lr {
                self.lr.push((step, lr));
            }
        }
    }
}

/// A status as shown: the reducer's status, or stale when a live run went silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownStatus {
    Run(RunStatus),
    Stale,
}

impl ShownStatus {
    /// The CSS class and test hook name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShownStatus::Run(s) => s.as_str(),
            ShownStatus::Stale => "stale",
        }
    }
}

/// Stale when running (or pending) and silent for [`STALE_AFTER_S`].
pub fn shown_status(status: RunStatus, last_event_at: Option<f64>, now: f64) -> ShownStatus {
    match (status, last_event_at) {
        (RunStatus::Running | RunStatus::Pending, Some(t)) if now - t > STALE_AFTER_S => {
            ShownStatus::Stale
        }
        (s, _) => ShownStatus::Run(s),
    }
}

/// "3/10", or "3" when the total is unknown.
pub fn progress(current: u64, total: Option<u64>) -> String {
    match total {
        Some(t) => format!("{current}/{t}"),
        None => current.to_string(),
    }
}

/// Fraction done for a progress bar, 0..=1.
pub fn fraction(current: u64, total: Option<u64>) -> f64 {
    match total {
        Some(t) if t > 0 => (current as f64 / t as f64).clamp(0.0, 1.0),
        _ => 0.0,
    }
}

/// Overall progress of a run, 0..=1: epochs done plus the current epoch's batches.
pub fn overall_fraction(s: &RunSummary) -> f64 {
    match (s.total_epochs, s.total_batches) {
        (Some(te), Some(tb)) if te > 0 && tb > 0 => {
            if !s.status.is_live() && s.status == RunStatus::Completed {
                return 1.0;
            }
            let done = s.current_epoch.saturating_sub(1) * tb + (s.current_batch + 1).min(tb);
            (done as f64 / (te * tb) as f64).clamp(0.0, 1.0)
        }
        _ => fraction(s.current_epoch, s.total_epochs),
    }
}

/// "1h 02m", "3m 05s", "42s".
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "–".into();
    }
    let s = seconds as u64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Human-readable bytes: "2.5 GB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1000.0 && u < UNITS.len() - 1 {
        x /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

/// The file name of a path.
pub fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(json: &str) -> Event {
        Event::from_json(json).unwrap()
    }

    #[test]
    fn series_grow_with_batch_end_and_keep_nan() {
        let mut v = RunView::new("r");
        v.apply(&ev(r#"{"id":1,"event":"batch_end","loss":2.0,"lr":0.1}"#));
        v.apply(&ev(r#"{"id":2,"event":"log","message":"x"}"#));
        v.apply(&ev(r#"{"id":3,"event":"batch_end","loss":"NaN"}"#));
        assert_eq!(v.loss.len(), 2);
        assert_eq!(v.loss[0], (1.0, 2.0));
        assert!(v.loss[1].1.is_nan());
        assert_eq!(v.lr, vec![(1.0, 0.1)]);
    }

    #[test]
    fn replayed_ids_are_not_applied_twice() {
        let mut v = RunView::new("r");
        let e = ev(r#"{"id":1,"event":"batch_end","loss":2.0}"#);
        v.apply(&e);
        v.apply(&e);
        assert_eq!(v.loss.len(), 1);
        assert_eq!(v.state.event_count, 1);
    }

    #[test]
    fn stale_only_when_live_and_silent() {
        assert_eq!(
            shown_status(RunStatus::Running, Some(0.0), 61.0),
            ShownStatus::Stale
        );
        assert_eq!(
            shown_status(RunStatus::Running, Some(0.0), 10.0),
            ShownStatus::Run(RunStatus::Running)
        );
        assert_eq!(
            shown_status(RunStatus::Completed, Some(0.0), 1e9),
            ShownStatus::Run(RunStatus::Completed)
        );
    }

    #[test]
    fn overall_progress_counts_finished_epochs() {
        let s = RunSummary {
            current_epoch: 2,
            total_epochs: Some(4),
            current_batch: 49,
            total_batches: Some(100),
            status: RunStatus::Running,
            ..Default::default()
        };
        assert!((overall_fraction(&s) - 0.375).abs() < 1e-9);
        let done = RunSummary {
            status: RunStatus::Completed,
            ..s
        };
        assert_eq!(overall_fraction(&done), 1.0);
    }

    #[test]
    fn formats() {
        assert_eq!(progress(3, Some(10)), "3/10");
        assert_eq!(progress(3, None), "3");
        assert_eq!(duration(3725.0), "1h 02m");
        assert_eq!(duration(65.0), "1m 05s");
        assert_eq!(bytes(2_500_000_000), "2.5 GB");
        assert_eq!(bytes(12), "12 B");
        assert_eq!(file_name("./ckpt/epoch3_step1500.pt"), "epoch3_step1500.pt");
    }
}
