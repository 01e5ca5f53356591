//! What the run page holds: the shared reducer's [`RunState`] plus the series the
//! charts draw. Plain data, testable natively.

use std::collections::{BTreeMap, VecDeque};
use stepwatch_events::{num, series, Event, EventBody, RunState, RunStatus, RunSummary};

/// Seconds without an event after which a running run shows as stale.
pub const STALE_AFTER_S: f64 = 60.0;

/// Log lines kept per run for the live tail.
pub const MAX_LOGS: usize = 5000;
/// System samples kept per run for sparklines.
pub const MAX_SYSTEM: usize = 300;
/// Window (seconds) over which events/s is measured.
pub const RATE_WINDOW_S: f64 = 10.0;

/// One point of a metric series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Global step.
    pub step: f64,
    pub value: f64,
    /// Trainer time (unix seconds).
    pub time: f64,
}

/// One log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub id: u64,
    pub time: f64,
    pub level: String,
    pub message: String,
    pub logger: String,
}

/// One GPU in a system sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuSample {
    pub index: u64,
    pub name: String,
    pub util_percent: Option<f64>,
    pub mem_used_bytes: Option<f64>,
    pub mem_total_bytes: Option<f64>,
    pub temperature_c: Option<f64>,
    pub power_w: Option<f64>,
}

/// One `system` event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SystemSample {
    pub time: f64,
    pub cpu_percent: Option<f64>,
    pub mem_used_bytes: Option<f64>,
    pub mem_total_bytes: Option<f64>,
    pub gpus: Vec<GpuSample>,
}

/// The live view of one run: the shared reducer's state plus what the panels draw.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunView {
    pub state: RunState,
    /// Every metric's points by name (`loss`, `lr`, and whatever else the run reports),
    /// in arrival order; non-finite values kept.
    pub series: BTreeMap<String, Vec<Point>>,
    /// The newest log lines (at most [`MAX_LOGS`]).
    pub logs: VecDeque<LogLine>,
    /// The newest system samples (at most [`MAX_SYSTEM`]).
    pub system: VecDeque<SystemSample>,
    /// Trainer times of the events of the last [`RATE_WINDOW_S`] seconds.
    recent: VecDeque<f64>,
}

pub use stepwatch_events::series::{LOSS, LR};

impl RunView {
    pub fn new(run: &str) -> Self {
        RunView {
            state: RunState::new(run),
            ..Default::default()
        }
    }

    /// A series by name (empty when the run has not reported it).
    pub fn points(&self, name: &str) -> &[Point] {
        self.series.get(name).map_or(&[], Vec::as_slice)
    }

    fn push(&mut self, name: &str, step: f64, value: f64, time: f64) {
        self.series
            .entry(name.to_string())
            .or_default()
            .push(Point { step, value, time });
    }

    /// Applies one streamed event; events already applied (by id) are ignored.
    pub fn apply(&mut self, e: &Event) {
        if let Some(id) = e.id {
            if id <= self.state.last_id {
                return;
            }
        }
        self.state.apply(e);
        let time = e.timestamp().unwrap_or(0.0);
        self.recent.push_back(time);
        while self
            .recent
            .front()
            .is_some_and(|t| *t < time - RATE_WINDOW_S)
        {
            self.recent.pop_front();
        }
        let step = self.state.step_of(e) as f64;
        let mut points = Vec::new();
        series::metric_values(e, |name, value| points.push((name.to_string(), value)));
        for (name, value) in points {
            self.push(&name, step, value, time);
        }
        match &e.body {
            EventBody::Log(l) => {
                self.logs.push_back(LogLine {
                    id: e.id.unwrap_or(0),
                    time,
                    level: l
                        .level
                        .clone()
                        .unwrap_or_else(|| "info".into())
                        .to_lowercase(),
                    message: l.message.clone().unwrap_or_default(),
                    logger: l.logger.clone().unwrap_or_default(),
                });
                if self.logs.len() > MAX_LOGS {
                    self.logs.pop_front();
                }
            }
            EventBody::System(s) => {
                let f = |m: &serde_json::Map<String, serde_json::Value>, k: &str| {
                    m.get(k).and_then(num::from_json)
                };
                self.system.push_back(SystemSample {
                    time,
                    cpu_percent: s.cpu_percent,
                    mem_used_bytes: s.mem_used_bytes.map(|x| x as f64),
                    mem_total_bytes: s.mem_total_bytes.map(|x| x as f64),
                    gpus: s
                        .gpus
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, g)| GpuSample {
                            index: g.get("index").and_then(|v| v.as_u64()).unwrap_or(i as u64),
                            name: g
                                .get("name")
                                .and_then(|v| v.as_str())
                                .unwrap_or_default()
                                .to_string(),
                            util_percent: f(g, "util_percent"),
                            mem_used_bytes: f(g, "mem_used_bytes"),
                            mem_total_bytes: f(g, "mem_total_bytes"),
                            temperature_c: f(g, "temperature_c"),
                            power_w: f(g, "power_w"),
                        })
                        .collect(),
                });
                if self.system.len() > MAX_SYSTEM {
                    self.system.pop_front();
                }
            }
            _ => {}
        }
    }

    /// Events per second over the last [`RATE_WINDOW_S`] seconds before `now`.
    pub fn events_per_s(&self, now: f64) -> f64 {
        let n = self
            .recent
            .iter()
            .filter(|t| **t > now - RATE_WINDOW_S)
            .count();
        n as f64 / RATE_WINDOW_S
    }

    /// Seconds left, from progress so far, while the run is live.
    pub fn eta_s(&self, now: f64) -> Option<f64> {
        let s = &self.state;
        if s.status != RunStatus::Running {
            return None;
        }
        let f = overall_fraction(&s.summary());
        let started = s.started_at?;
        (f > 0.0 && f < 1.0).then(|| (now - started) * (1.0 - f) / f)
    }

    /// Metric names other than loss and lr, grouped by the prefix before the first `/`
    /// (`""` for names without one), groups and names sorted.
    pub fn metric_groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in self.series.keys().filter(|n| *n != LOSS && *n != LR) {
            let group = name.split_once('/').map_or("", |(g, _)| g);
            groups
                .entry(group.to_string())
                .or_default()
                .push(name.clone());
        }
        groups.into_iter().collect()
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
        let loss = v.points(LOSS);
        assert_eq!(loss.len(), 2);
        assert_eq!((loss[0].step, loss[0].value), (1.0, 2.0));
        assert!(loss[1].value.is_nan());
        assert_eq!(v.points(LR).len(), 1);
    }

    #[test]
    fn replayed_ids_are_not_applied_twice() {
        let mut v = RunView::new("r");
        let e = ev(r#"{"id":1,"event":"batch_end","loss":2.0}"#);
        v.apply(&e);
        v.apply(&e);
        assert_eq!(v.points(LOSS).len(), 1);
        assert_eq!(v.state.event_count, 1);
    }

    #[test]
    fn every_metric_becomes_a_series_grouped_by_prefix() {
        let mut v = RunView::new("r");
        v.apply(&ev(r#"{"id":1,"time":10,"event":"batch_end","loss":2.0,"metrics":{"train/acc":0.5},"grad_norm":1.5,"note":"x"}"#));
        v.apply(&ev(
            r#"{"id":2,"time":11,"event":"epoch_end","metrics":{"val/loss":2.5,"val/acc":0.4}}"#,
        ));
        v.apply(&ev(r#"{"id":3,"time":12,"event":"metric_update","name":"val/bleu","value":"NaN","step":7}"#));
        assert_eq!(v.points("train/acc").len(), 1);
        assert_eq!(v.points("grad_norm")[0].value, 1.5);
        assert!(v.points("note").is_empty(), "text fields are not metrics");
        assert_eq!(
            v.points("val/loss")[0].step,
            1.0,
            "epoch metrics sit at the current step"
        );
        assert_eq!(v.points("val/bleu")[0].step, 7.0);
        assert!(v.points("val/bleu")[0].value.is_nan());
        let groups = v.metric_groups();
        let names: Vec<_> = groups.iter().map(|(g, _)| g.as_str()).collect();
        assert_eq!(names, vec!["", "train", "val"]);
        assert_eq!(groups[2].1, vec!["val/acc", "val/bleu", "val/loss"]);
    }

    #[test]
    fn logs_system_and_rate_are_kept() {
        let mut v = RunView::new("r");
        v.apply(&ev(
            r#"{"id":1,"time":100,"event":"log","level":"WARNING","message":"hot"}"#,
        ));
        v.apply(&ev(r#"{"id":2,"time":101,"event":"system","cpu_percent":50,"gpus":[{"index":0,"util_percent":90,"temperature_c":60}]}"#));
        v.apply(&ev(r#"{"id":3,"time":102,"event":"log","message":"ok"}"#));
        assert_eq!(v.logs.len(), 2);
        assert_eq!(v.logs[0].level, "warning");
        assert_eq!(v.logs[1].level, "info");
        assert_eq!(v.system[0].gpus[0].util_percent, Some(90.0));
        assert_eq!(v.system[0].cpu_percent, Some(50.0));
        assert!((v.events_per_s(102.0) - 0.3).abs() < 1e-9);
        assert_eq!(v.events_per_s(200.0), 0.0);
    }

    #[test]
    fn eta_from_progress() {
        let mut v = RunView::new("r");
        v.apply(&ev(
            r#"{"id":1,"time":0,"event":"training_start","total_epochs":2,"total_batches":10}"#,
        ));
        v.apply(&ev(
            r#"{"id":2,"time":10,"event":"batch_end","epoch":1,"batch_idx":4,"loss":1}"#,
        ));
        // 5 of 20 batches after 10 s: 30 s left.
        assert_eq!(v.eta_s(10.0), Some(30.0));
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
