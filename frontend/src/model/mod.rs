//! What the run page holds: the shared reducer's [`RunState`] plus the series the
//! charts draw ([`RunView`]). Plain data, testable natively; [`points`] has the chart
//! points and history pages, [`tail`] the log and system tails, [`format`] how numbers
//! and statuses are shown.
//!
//! History comes from the relay's series endpoint, not from replaying events: a page
//! ([`RunView::merge_page`]) holds a metric's points (M4-reduced for long runs) up to
//! the event id it covers, and the stream adds only what is newer. Every metric keeps
//! the id its history covers, so an event the page already counted never adds a point
//! twice, whichever of page and stream arrives first.

pub mod format;
pub mod markdown;
pub mod media;
pub mod params;
pub mod points;
pub mod sort;
pub mod table;
pub mod tail;
pub mod world;

pub use format::*;
pub use points::{metric_order, zoomed, Page, Point};
pub use tail::{GpuSample, LogLine, SystemSample};

use std::collections::{BTreeMap, VecDeque};
use stepwatch_events::{series, Event, RunState};
use tail::{log_line, system_sample};

/// Log lines kept per run for the live tail.
pub const MAX_LOGS: usize = 5000;
/// System samples kept per run for sparklines.
pub const MAX_SYSTEM: usize = 300;
/// Window (seconds) over which events/s is measured.
pub const RATE_WINDOW_S: f64 = 10.0;

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
    /// The newest media events, oldest first (at most [`media::MAX_MEDIA`]).
    pub media: VecDeque<Event>,
    /// Trainer times of the events of the last [`RATE_WINDOW_S`] seconds.
    recent: VecDeque<f64>,
    /// Per metric, the newest event id its history page covers: streamed events up to
    /// it add no point to that metric. (A few metrics: a list is enough.)
    covered: Vec<(String, u64)>,
    /// Metrics whose history page is on its way.
    loading: Vec<String>,
    /// True while the run's history loads (every chart counts as loading).
    pub history_loading: bool,
    /// Bumped whenever history replaces points, so charts redraw.
    pub rev: u64,
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

    /// Takes a state loaded from the relay (see [`stepwatch_events::api::decode_state`]) in place of
    /// replaying its events; events up to its `last_id` are then ignored.
    pub fn set_state(&mut self, state: RunState) {
        self.state = state;
    }

    /// Whether `metric`'s history is still loading.
    pub fn is_loading(&self, metric: &str) -> bool {
        self.history_loading || self.loading.iter().any(|m| m == metric)
    }

    /// The run's series list has come: each metric gets a (still empty) series and
    /// waits for its page.
    pub fn expect_series(&mut self, metrics: &[String]) {
        for m in metrics {
            self.series.entry(m.clone()).or_default();
            if !self.loading.contains(m) {
                self.loading.push(m.clone());
            }
        }
    }

    /// A metric's history is in, or could not be loaded (then the chart shows what the
    /// stream brings): it is no longer loading.
    pub fn page_done(&mut self, metric: &str) {
        self.loading.retain(|m| m != metric);
        self.rev += 1;
    }

    /// Puts a metric's history page under its live points: streamed points the page
    /// already covers (id ≤ `page.last_id`) are dropped, newer ones kept after it.
    pub fn merge_page(&mut self, page: Page) {
        let m = &page.metric;
        let s = self.series.entry(m.clone()).or_default();
        let live = std::mem::replace(s, page.points);
        s.extend(live.into_iter().filter(|p| p.id > page.last_id));
        match self.covered.iter_mut().find(|(n, _)| n == m) {
            Some((_, c)) => *c = (*c).max(page.last_id),
            None => self.covered.push((m.clone(), page.last_id)),
        }
        self.page_done(m);
    }

    /// System samples kept: [`MAX_SYSTEM`] per rank of a distributed run (up to 16).
    fn max_system(&self) -> usize {
        let ranks = self.state.world.as_ref().map_or(1, |w| w.size.clamp(1, 16));
        MAX_SYSTEM * ranks as usize
    }

    /// Rank 0's system samples (every sample of a single process), oldest first.
    pub fn own_system(&self) -> impl Iterator<Item = &SystemSample> {
        self.system.iter().filter(|s| s.rank.unwrap_or(0) == 0)
    }

    /// Adds stored `log`, `system` and media events, newest first (as `order=desc` answers),
    /// before the live ones: only those up to `upto` (the id the stream starts after).
    pub fn add_history(&mut self, events: Vec<Event>, upto: u64) {
        for e in events
            .into_iter()
            .filter(|e| e.id.is_some_and(|id| id <= upto))
        {
            let time = e.timestamp().unwrap_or(0.0);
            if let Some(l) = log_line(&e, time) {
                if self.logs.len() < MAX_LOGS {
                    self.logs.push_front(l);
                }
            } else if stepwatch_events::media::media_of(&e.body).is_some() {
                if self.media.len() < media::MAX_MEDIA {
                    self.media.push_front(e);
                }
            } else if let Some(s) = system_sample(&e, time) {
                if self.system.len() < self.max_system() {
                    self.system.push_front(s);
                }
            }
        }
    }

    /// Applies one streamed event and keeps it if it is a media event (moved, not
    /// copied); events already applied (by id) are ignored.
    pub fn take(&mut self, e: Event) {
        if self.apply(&e) && stepwatch_events::media::media_of(&e.body).is_some() {
            self.media.push_back(e);
            if self.media.len() > media::MAX_MEDIA {
                self.media.pop_front();
            }
        }
    }

    /// Applies one streamed event; events already applied (by id) are ignored (false).
    pub fn apply(&mut self, e: &Event) -> bool {
        if let Some(id) = e.id {
            if id <= self.state.last_id {
                return false;
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
        let id = e.id.unwrap_or(0);
        series::metric_values(e, |name, value| {
            if e.id.is_some() && self.covered.iter().any(|(n, c)| n == name && id <= *c) {
                return;
            }
            let p = Point {
                step,
                value,
                time,
                id,
            };
            match self.series.get_mut(name) {
                Some(s) => s.push(p),
                None => self.series.entry(name.to_string()).or_default().push(p),
            }
        });
        if let Some(l) = log_line(e, time) {
            self.logs.push_back(l);
            if self.logs.len() > MAX_LOGS {
                self.logs.pop_front();
            }
        } else if let Some(s) = system_sample(e, time) {
            self.system.push_back(s);
            if self.system.len() > self.max_system() {
                self.system.pop_front();
            }
        }
        true
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
        self.state.eta_s(now)
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

    fn page(metric: &str, last_id: u64, steps: &[u64]) -> Page {
        Page {
            metric: metric.into(),
            last_id,
            points: steps
                .iter()
                .map(|s| Point {
                    step: *s as f64,
                    time: *s as f64,
                    value: *s as f64,
                    id: 0,
                })
                .collect(),
        }
    }

    fn steps(v: &RunView, m: &str) -> Vec<f64> {
        v.points(m).iter().map(|p| p.step).collect()
    }

    /// A run whose state was read at event 10 (steps 1..=10 stored).
    fn loaded_at_10() -> RunView {
        let mut v = RunView::new("r");
        v.state.last_id = 10;
        v.state.step = 10;
        v
    }

    fn batch(id: u64) -> Event {
        ev(&format!(
            r#"{{"id":{id},"event":"batch_end","loss":{id},"step":{id}}}"#
        ))
    }

    #[test]
    fn a_page_then_the_stream_adds_no_duplicate() {
        let mut v = loaded_at_10();
        v.history_loading = true;
        assert!(v.is_loading(LOSS) && v.is_loading("lr"));
        v.history_loading = false;
        v.expect_series(&[LOSS.into()]);
        assert!(v.is_loading(LOSS) && v.points(LOSS).is_empty());
        // The page was read after events 11 and 12 were stored.
        v.merge_page(page(LOSS, 12, &[1, 5, 9, 10, 11, 12]));
        assert!(!v.is_loading(LOSS));
        // The stream starts after the state's id: 11 and 12 are already in the page.
        for id in 11..=14 {
            v.apply(&batch(id));
        }
        assert_eq!(
            steps(&v, LOSS),
            vec![1.0, 5.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0]
        );
        assert_eq!(v.state.step, 14, "the header still counts every event");
        assert_eq!(v.points(LOSS)[6].id, 13);
    }

    #[test]
    fn the_stream_then_a_page_keeps_only_newer_live_points() {
        let mut v = loaded_at_10();
        v.expect_series(&[LOSS.into()]);
        // Live events arrive before the page: shown at once, replaced by the page.
        for id in 11..=13 {
            v.apply(&batch(id));
        }
        assert_eq!(steps(&v, LOSS), vec![11.0, 12.0, 13.0]);
        let rev = v.rev;
        v.merge_page(page(LOSS, 12, &[1, 10, 11, 12]));
        assert_eq!(steps(&v, LOSS), vec![1.0, 10.0, 11.0, 12.0, 13.0]);
        assert!(v.rev > rev, "charts must redraw after a merge");
        // A metric the list did not name is live only; covered ids are per metric.
        v.apply(&ev(
            r#"{"id":14,"event":"metric_update","name":"val/acc","value":0.5}"#,
        ));
        assert_eq!(v.points("val/acc").len(), 1);
        assert!(!v.is_loading("val/acc"));
        // A failed page leaves the live points.
        v.expect_series(&["lr".into()]);
        v.apply(&ev(r#"{"id":15,"event":"batch_end","loss":1,"lr":0.1}"#));
        v.page_done("lr");
        assert!(!v.is_loading("lr"));
        assert_eq!(v.points("lr").len(), 1);
    }

    #[test]
    fn history_logs_and_system_go_before_live_ones_without_duplicates() {
        let mut v = loaded_at_10();
        v.apply(&ev(r#"{"id":11,"time":11,"event":"log","message":"live"}"#));
        // Newest first, as `order=desc` answers; id 11 is already live.
        let stored: Vec<Event> = [11, 9, 4]
            .iter()
            .map(|id| {
                ev(&format!(
                    r#"{{"id":{id},"time":{id},"event":"log","message":"m{id}"}}"#
                ))
            })
            .collect();
        v.add_history(stored, 10);
        let msgs: Vec<&str> = v.logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(msgs, vec!["m4", "m9", "live"]);
        v.add_history(
            vec![ev(r#"{"id":3,"time":3,"event":"system","cpu_percent":7}"#)],
            10,
        );
        assert_eq!(v.system[0].cpu_percent, Some(7.0));
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
}
