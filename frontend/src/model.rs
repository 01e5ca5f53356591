//! What the run page holds: the shared reducer's [`RunState`] plus the series the
//! charts draw. Plain data, testable natively.
//!
//! History comes from the relay's series endpoint, not from replaying events: a page
//! ([`RunView::merge_page`]) holds a metric's points (M4-reduced for long runs) up to
//! the event id it covers, and the stream adds only what is newer. Every metric keeps
//! the id its history covers, so an event the page already counted never adds a point
//! twice, whichever of page and stream arrives first.

use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use stepwatch_events::state::LastError;
use stepwatch_events::{
    num, series, BestMetric, Checkpoint, CommandState, Event, EventBody, Pace, Progress, RunState,
    RunStatus, RunSummary,
};

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
    /// Id of the event it came from; 0 for points from a series page.
    pub id: u64,
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

    /// Takes a state loaded from the relay (see [`state_from_json`]) in place of
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

    /// Adds stored `log` and `system` events, newest first (as `order=desc` answers),
    /// before the live ones: only those up to `upto` (the id the stream starts after).
    pub fn add_history(&mut self, events: &[Event], upto: u64) {
        for e in events.iter().filter(|e| e.id.is_some_and(|id| id <= upto)) {
            let time = e.timestamp().unwrap_or(0.0);
            if let Some(l) = log_line(e, time) {
                if self.logs.len() < MAX_LOGS {
                    self.logs.push_front(l);
                }
            } else if let Some(s) = system_sample(e, time) {
                if self.system.len() < MAX_SYSTEM {
                    self.system.push_front(s);
                }
            }
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
            if self.system.len() > MAX_SYSTEM {
                self.system.pop_front();
            }
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

/// A run's state as `GET /api/runs/{run}` writes it, decoded by hand: serde's code for
/// [`RunState`] would add about 10 KB to the compressed download. The reducer's running
/// loss sum of the current epoch is restored with [`RunState::restore_epoch_loss`].
/// Lower case for searching and sorting names: ASCII, Latin-1, Greek and Cyrillic
/// capitals (scripts without case, Chinese among them, pass unchanged). Small on
/// purpose: the standard library's full Unicode tables cost kilobytes of download.
pub fn fold_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            let shift = match c {
                'A'..='Z' | 'À'..='Þ' | 'Α'..='Ω' | 'А'..='Я' if c != '×' && c != '\u{3a2}' => {
                    32
                }
                'Ѐ'..='Џ' => 80,
                _ => 0,
            };
            char::from_u32(c as u32 + shift).unwrap_or(c)
        })
        .collect()
}

pub fn state_from_json(v: &Value) -> Option<RunState> {
    let f = |v: &Value, k: &str| num::from_json(&v[k]);
    let u = |v: &Value, k: &str| v[k].as_u64();
    let t = |v: &Value, k: &str| v[k].as_str().map(String::from);
    let b = |v: &Value, k: &str| v[k].as_bool().unwrap_or(false);
    let map = |v: &Value| -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for (k, x) in v.as_object().into_iter().flatten() {
            if let Some(x) = num::from_json(x) {
                m.insert(k.clone(), x);
            }
        }
        m
    };
    let obj = |v: &Value| v.as_object().cloned();
    let list = |k: &str| v[k].as_array().into_iter().flatten();
    let mut s = RunState::new(v["run"].as_str()?);
    s.name = t(v, "name").unwrap_or_else(|| s.run.clone());
    s.status = [
        RunStatus::Running,
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Stopped,
    ]
    .into_iter()
    .find(|x| v["status"] == x.as_str())
    .unwrap_or_default();
    s.is_training = b(v, "is_training");
    s.current_epoch = u(v, "current_epoch").unwrap_or(0);
    s.total_epochs = u(v, "total_epochs");
    s.current_batch = u(v, "current_batch").unwrap_or(0);
    s.total_batches = u(v, "total_batches");
    s.current_loss = f(v, "current_loss");
    s.avg_loss = f(v, "avg_loss");
    s.learning_rate = f(v, "learning_rate");
    s.step = u(v, "step").unwrap_or(0);
    s.best_loss = f(v, "best_loss");
    s.best_step = u(v, "best_step");
    s.best_val = v["best_val"].as_object().and_then(|_| {
        let b = &v["best_val"];
        Some(BestMetric {
            metric: t(b, "metric")?,
            value: f(b, "value")?,
            step: u(b, "step").unwrap_or(0),
        })
    });
    s.loss_non_finite = b(v, "loss_non_finite");
    s.metrics = map(&v["metrics"]);
    s.checkpoints = list("checkpoints")
        .map(|c| Checkpoint {
            path: t(c, "path").unwrap_or_default(),
            epoch: u(c, "epoch"),
            step: u(c, "step"),
            size_bytes: u(c, "size_bytes"),
            time: f(c, "time"),
            metrics: map(&c["metrics"]),
            overwrites: u(c, "overwrites").unwrap_or(0),
        })
        .collect();
    s.loaded_checkpoint = t(v, "loaded_checkpoint");
    s.last_error = v["last_error"].as_object().map(|_| {
        let e = &v["last_error"];
        LastError {
            message: t(e, "message").unwrap_or_default(),
            traceback: t(e, "traceback"),
            fatal: b(e, "fatal"),
            time: f(e, "time"),
        }
    });
    s.config = obj(&v["config"]).unwrap_or_default();
    s.meta = obj(&v["meta"]).unwrap_or_default();
    s.system = obj(&v["system"]);
    s.started_at = f(v, "started_at");
    s.ended_at = f(v, "ended_at");
    s.last_event_at = f(v, "last_event_at");
    s.last_id = u(v, "last_id").unwrap_or(0);
    s.commands = list("commands")
        .map(|c| CommandState {
            id: t(c, "id").unwrap_or_default(),
            command: t(c, "command").unwrap_or_default(),
            args: obj(&c["args"]).unwrap_or_default(),
            status: t(c, "status").unwrap_or_default(),
            message: t(c, "message"),
            messages: c["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().map(String::from))
                .collect(),
            output: Some(c["output"].clone()).filter(|o| !o.is_null()),
            sender: t(c, "sender"),
            sent_at: f(c, "sent_at"),
            updated_at: f(c, "updated_at"),
        })
        .collect();
    s.event_count = u(v, "event_count").unwrap_or(0);
    s.batch_count = u(v, "batch_count").unwrap_or(0);
    s.restore_epoch_loss(
        f(v, "epoch_loss_sum").unwrap_or(0.0),
        u(v, "epoch_loss_n").unwrap_or(0),
    );
    s.pace = Pace::from_json(&v["pace"]);
    Some(s)
}

/// A runs-list summary (as the runs stream writes it), decoded by the same hand; its
/// progress is the relay's (a summary carries no pace to compute it from).
pub fn summary_from_json(v: &Value) -> Option<RunSummary> {
    let mut s = state_from_json(v)?.summary();
    s.deleted = v["deleted"].as_bool().unwrap_or(false);
    if v["progress"].is_object() {
        s.progress = Progress::from_json(&v["progress"]);
    }
    Some(s)
}

/// A metric's history as the series endpoint answers it (`SeriesPage` in
/// `stepwatch_events::series`): its points (M4 per bucket when the range is long) and
/// the newest event id it covers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    pub metric: String,
    pub last_id: u64,
    pub points: Vec<Point>,
}

/// A series page from its JSON (decoded by hand: no serde code for it in the download).
pub fn page_from_json(v: &Value) -> Option<Page> {
    let points = v["points"]
        .as_array()?
        .iter()
        .map(|p| {
            Some(Point {
                step: p[0].as_f64()?,
                time: p[1].as_f64()?,
                value: num::from_json(&p[2])?,
                id: 0,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Page {
        metric: v["metric"].as_str()?.to_string(),
        last_id: v["last_id"].as_u64()?,
        points,
    })
}

/// The metric names of a series list (`[{"metric": …, "count": …}, …]`), the loss and
/// the learning rate first (they head the page, so their pages are asked for first).
pub fn metrics_from_json(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metric"].as_str())
    {
        let at = match name {
            LOSS => 0,
            LR => out.first().map_or(0, |f| usize::from(f == LOSS)),
            _ => out.len(),
        };
        out.insert(at, name.to_string());
    }
    out
}

/// What a chart zoomed to steps `a..=b` draws: the exact `page` of that range (covering
/// events up to `last_id`) in place of the loaded points inside it, the loaded points
/// outside it (so smoothing runs on from the left), and every live point newer than
/// the page.
pub fn zoomed(loaded: &[Point], page: &[Point], last_id: u64, (a, b): (f64, f64)) -> Vec<Point> {
    let mut out = Vec::with_capacity(loaded.len() + page.len());
    let mut placed = false;
    for p in loaded {
        let newer = p.id > last_id;
        if !newer && p.step >= a && p.step <= b {
            continue;
        }
        if !placed && (newer || p.step > b) {
            out.extend_from_slice(page);
            placed = true;
        }
        out.push(*p);
    }
    if !placed {
        out.extend_from_slice(page);
    }
    out
}

fn log_line(e: &Event, time: f64) -> Option<LogLine> {
    let EventBody::Log(l) = &e.body else {
        return None;
    };
    Some(LogLine {
        id: e.id.unwrap_or(0),
        time,
        level: l
            .level
            .clone()
            .unwrap_or_else(|| "info".into())
            .to_ascii_lowercase(),
        message: l.message.clone().unwrap_or_default(),
        logger: l.logger.clone().unwrap_or_default(),
    })
}

fn system_sample(e: &Event, time: f64) -> Option<SystemSample> {
    let EventBody::System(s) = &e.body else {
        return None;
    };
    let f =
        |m: &serde_json::Map<String, serde_json::Value>, k: &str| m.get(k).and_then(num::from_json);
    Some(SystemSample {
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
    })
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

/// Seconds a run has taken: up to now while it is live, else up to its end or, for a
/// run that went stale, its last event (a dead trainer's run does not keep counting).
pub fn elapsed_s(
    status: RunStatus,
    started_at: Option<f64>,
    ended_at: Option<f64>,
    last_event_at: Option<f64>,
    now: f64,
) -> Option<f64> {
    let live = status.is_live() && shown_status(status, last_event_at, now) != ShownStatus::Stale;
    let stop = if live {
        now
    } else {
        ended_at.or(last_event_at).unwrap_or(now)
    };
    started_at.map(|t| stop - t)
}

/// "3/10", "3" when the total is unknown, "–" (or "–/10") when there is no count.
pub fn progress(current: Option<u64>, total: Option<u64>) -> String {
    let c = current.map_or("–".to_string(), |c| c.to_string());
    match total {
        Some(t) => format!("{c}/{t}"),
        None => c,
    }
}

/// A run that ended before its end (stopped or failed): its bar says so.
pub fn cut_short(status: RunStatus, p: &Progress) -> bool {
    matches!(status, RunStatus::Stopped | RunStatus::Failed) && p.fraction.is_some_and(|f| f < 1.0)
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
    fn elapsed_stops_at_the_end_or_at_the_last_event_of_a_stale_run() {
        let (start, last) = (1000.0, 1060.0);
        // Live: up to now.
        assert_eq!(
            elapsed_s(
                RunStatus::Running,
                Some(start),
                None,
                Some(last),
                last + 5.0
            ),
            Some(65.0)
        );
        // Silent for longer than the stale limit: up to its last event.
        let later = last + STALE_AFTER_S + 3600.0;
        assert_eq!(
            elapsed_s(RunStatus::Running, Some(start), None, Some(last), later),
            Some(60.0)
        );
        // Ended: up to its end.
        assert_eq!(
            elapsed_s(
                RunStatus::Completed,
                Some(start),
                Some(1050.0),
                Some(last),
                later
            ),
            Some(50.0)
        );
        assert_eq!(elapsed_s(RunStatus::Running, None, None, None, later), None);
    }

    #[test]
    fn fold_case_lowers_the_scripts_with_case_and_leaves_the_rest() {
        assert_eq!(
            fold_case("ResNet-50 ÜBER Ωmega ЖУК Ёлка ×2 训练"),
            "resnet-50 über ωmega жук ёлка ×2 训练"
        );
        // Agrees with the standard library wherever it claims to.
        let sample = "AZÀÞΑΩАЯЀЏ azàþαωаяѐџ";
        assert_eq!(fold_case(sample), sample.to_lowercase());
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
        v.add_history(&stored, 10);
        let msgs: Vec<&str> = v.logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(msgs, vec!["m4", "m9", "live"]);
        v.add_history(
            &[ev(r#"{"id":3,"time":3,"event":"system","cpu_percent":7}"#)],
            10,
        );
        assert_eq!(v.system[0].cpu_percent, Some(7.0));
    }

    #[test]
    fn pages_and_lists_decode_as_the_relay_writes_them() {
        use stepwatch_events::series::{SeriesPage, SeriesPoint};
        let pt = |step: f64, value: f64| SeriesPoint {
            step,
            time: step + 100.0,
            value,
        };
        let sent = SeriesPage {
            metric: LOSS.into(),
            total: 9,
            exact: false,
            last_id: 7,
            points: vec![pt(1.0, 0.5), pt(2.0, f64::NAN)],
        };
        let back = page_from_json(&serde_json::to_value(&sent).unwrap()).unwrap();
        assert_eq!((back.metric.as_str(), back.last_id), (LOSS, 7));
        assert_eq!(back.points.len(), 2);
        assert_eq!(
            (
                back.points[0].step,
                back.points[0].time,
                back.points[0].value
            ),
            (1.0, 101.0, 0.5)
        );
        assert!(back.points[1].value.is_nan());
        assert!(page_from_json(&serde_json::json!({"error": "x"})).is_none());
        let list = serde_json::json!([{"metric": "acc"}, {"metric": "loss"}, {"metric": "lr"}, {"metric": "val/acc"}]);
        assert_eq!(
            metrics_from_json(&list),
            vec!["loss", "lr", "acc", "val/acc"]
        );
        let list = serde_json::json!([{"metric": "lr"}, {"metric": "a"}, {"metric": "loss"}]);
        assert_eq!(metrics_from_json(&list), vec!["loss", "lr", "a"]);
        assert!(metrics_from_json(&serde_json::Value::Null).is_empty());
    }

    /// Events that touch every field of the state.
    const RICH: &[&str] = &[
        r#"{"id":1,"time":10,"event":"training_start","total_epochs":3,"total_batches":4,"name":"rich","config":{"lr":0.1,"opt":"sgd"},"meta":{"host":"h"}}"#,
        r#"{"id":2,"time":11,"event":"epoch_start","epoch":1}"#,
        r#"{"id":3,"time":12,"event":"batch_end","batch_idx":0,"loss":2.0,"lr":0.1,"metrics":{"acc":0.5}}"#,
        r#"{"id":4,"time":13,"event":"batch_end","batch_idx":1,"loss":"NaN","lr":0.1}"#,
        r#"{"id":5,"time":14,"event":"checkpoint_saved","checkpoint_path":"/c/1.pt","epoch":1,"size_bytes":5,"metrics":{"val_loss":"Infinity"}}"#,
        r#"{"id":6,"time":15,"event":"checkpoint_loaded","checkpoint_path":"/c/1.pt"}"#,
        r#"{"id":7,"time":16,"event":"error_occurred","message":"boom","traceback":"tb","fatal":true}"#,
        r#"{"id":8,"time":17,"event":"system","cpu_percent":50,"gpus":[{"index":0}]}"#,
        r#"{"id":9,"time":18,"event":"command","command_id":"c1","command":"ask","args":{"input":"x"},"sender":"web"}"#,
        r#"{"id":10,"time":19,"event":"command_ack","command_id":"c1","status":"done","message":"ok","output":{"y":1}}"#,
        r#"{"id":11,"time":20,"event":"metric_update","name":"val/acc","value":0.7,"step":2,"metrics":{"val/loss":0.9}}"#,
        r#"{"id":12,"time":21,"event":"batch_end","batch_idx":2,"loss":4.0,"lr":0.05}"#,
    ];

    #[test]
    fn a_state_decoded_by_hand_equals_the_reducers_and_averages_on() {
        let events: Vec<Event> = RICH.iter().map(|j| ev(j)).collect();
        let state = RunState::from_events("rich", &events);
        let json = serde_json::to_value(&state).unwrap();
        let got = state_from_json(&json).unwrap();
        // Every field comes back, the running loss sums too: a field added to RunState
        // and not decoded here fails this test.
        assert_eq!(serde_json::to_value(&got).unwrap(), json);
        // Live events after the load average on as the reducer does.
        let mut v = RunView::new("rich");
        v.set_state(got);
        let mut full = state.clone();
        for j in [
            r#"{"id":13,"time":22,"event":"batch_end","loss":1.0}"#,
            r#"{"id":14,"time":23,"event":"epoch_start","epoch":2}"#,
            r#"{"id":15,"time":24,"event":"batch_end","loss":3.0}"#,
        ] {
            let e = ev(j);
            v.apply(&e);
            full.apply(&e);
            assert_eq!(v.state.avg_loss, full.avg_loss, "after {j}");
        }
        assert_eq!(v.state.summary(), full.summary());
        // Summaries for the runs list decode the same way.
        let sum = serde_json::to_value(full.summary()).unwrap();
        assert_eq!(summary_from_json(&sum), Some(full.summary()));
        assert!(state_from_json(&serde_json::json!({"error": "no run"})).is_none());
    }

    #[test]
    fn a_zoomed_chart_draws_the_exact_range_and_newer_live_points() {
        let pt = |step: u64, id: u64| Point {
            step: step as f64,
            value: step as f64,
            time: 0.0,
            id,
        };
        // The overview (from a page, id 0) and two live points.
        let loaded = vec![
            pt(0, 0),
            pt(100, 0),
            pt(200, 0),
            pt(300, 0),
            pt(301, 31),
            pt(302, 32),
        ];
        let zoom_page: Vec<Point> = (95..=205).map(|s| pt(s, 0)).collect();
        // The zoom page covers events up to 31: the live point 301 is in the overview
        // only once, 302 is newer than the page.
        let z = zoomed(&loaded, &zoom_page, 31, (95.0, 205.0));
        let s: Vec<u64> = z.iter().map(|p| p.step as u64).collect();
        assert_eq!(s.len(), 111 + 4);
        assert_eq!(&s[..2], &[0, 95]);
        assert_eq!(&s[s.len() - 3..], &[300, 301, 302]);
        let in_range = z
            .iter()
            .filter(|p| (95.0..=205.0).contains(&p.step))
            .count();
        assert_eq!(in_range, 111, "every raw point of the range, each once");
        // A live point newer than the page inside the range stays.
        let z = zoomed(&[pt(0, 0), pt(150, 40)], &zoom_page, 31, (95.0, 205.0));
        assert_eq!(z.len(), 1 + 111 + 1);
        assert_eq!(z.last().map(|p| p.id), Some(40));
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
    fn a_stopped_run_short_of_its_end_is_cut_short() {
        let p = Progress {
            fraction: Some(0.7),
            ..Default::default()
        };
        assert!(cut_short(RunStatus::Stopped, &p));
        assert!(cut_short(RunStatus::Failed, &p));
        assert!(!cut_short(RunStatus::Running, &p));
        let full = Progress {
            fraction: Some(1.0),
            ..p
        };
        assert!(!cut_short(RunStatus::Stopped, &full));
    }

    #[test]
    fn formats() {
        assert_eq!(progress(Some(3), Some(10)), "3/10");
        assert_eq!(progress(Some(3), None), "3");
        assert_eq!(progress(None, None), "–");
        assert_eq!(progress(None, Some(3)), "–/3");
        assert_eq!(duration(3725.0), "1h 02m");
        assert_eq!(duration(65.0), "1m 05s");
        assert_eq!(bytes(2_500_000_000), "2.5 GB");
        assert_eq!(bytes(12), "12 B");
        assert_eq!(file_name("./ckpt/epoch3_step1500.pt"), "epoch3_step1500.pt");
    }
}
