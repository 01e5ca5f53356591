//! Reading the relay's answers back ([`crate::api`]'s decoders) field by field from a
//! [`Value`]: the dashboard parses JSON text into a `Value` anyway, and these readers
//! cost its download far fewer bytes than the derived decoders would (about 15 KB
//! compressed). They read what the derived encoders write, with the same rules for what
//! the relay sends: a field that must be there (neither an `Option` nor defaulted) or a
//! part that does not read makes the whole answer `None`; a missing or `null` optional
//! field is `None`, a missing defaulted one its default. The round-trip tests
//! (`tests/wire.rs`) check them against the encoders.

use crate::alerts::{ActiveAlert, AlertRecord, AlertsState, Rule, RunRule};
use crate::num;
use crate::progress::{Pace, Progress};
use crate::records::{BestMetric, Checkpoint, CommandState, LastError, RunStatus};
use crate::series::{SeriesInfo, SeriesPage, SeriesPoint};
use crate::state::RunState;
use crate::summary::RunSummary;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// An object's fields.
#[derive(Clone, Copy)]
struct O<'a>(&'a Map<String, Value>);

impl<'a> O<'a> {
    fn of(v: &'a Value) -> Option<Self> {
        v.as_object().map(O)
    }

    /// The field, unless missing or `null`.
    fn get(self, k: &str) -> Option<&'a Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    fn str(self, k: &str) -> Option<String> {
        self.get(k)?.as_str().map(str::to_string)
    }

    fn u64(self, k: &str) -> Option<u64> {
        self.get(k)?.as_u64()
    }

    fn bool(self, k: &str) -> Option<bool> {
        self.get(k)?.as_bool()
    }

    /// A float as [`num`] writes it (a number, or a non-finite name).
    fn f64(self, k: &str) -> Option<f64> {
        num::from_json(self.get(k)?)
    }

    fn object(self, k: &str) -> Option<Map<String, Value>> {
        self.get(k)?.as_object().cloned()
    }

    /// A list whose every item reads with `f`; `None` when missing or when one does not.
    fn list<T>(self, k: &str, f: fn(&Value) -> Option<T>) -> Option<Vec<T>> {
        items(self.get(k)?, f)
    }

    /// An optional part: `Some(None)` when missing, `None` when there but unreadable.
    fn opt<T>(self, k: &str, f: fn(&Value) -> Option<T>) -> Option<Option<T>> {
        match self.get(k) {
            None => Some(None),
            Some(v) => f(v).map(Some),
        }
    }

    fn strs(self, k: &str) -> Option<Vec<String>> {
        self.list(k, |v| v.as_str().map(str::to_string))
    }

    /// Metrics by name ([`num::map`]).
    fn metrics(self, k: &str) -> Option<BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        if let Some(v) = self.get(k) {
            // Inserted one by one: collecting into a map sorts (see `num::map`).
            for (name, x) in v.as_object()? {
                out.insert(name.clone(), num::from_json(x)?);
            }
        }
        Some(out)
    }
}

/// The items of a JSON array, each read with `f`; `None` when `v` is no array or an item
/// does not read. A loop, not `collect`: that adapter is compiled again for every `T`.
pub(crate) fn items<T>(v: &Value, f: fn(&Value) -> Option<T>) -> Option<Vec<T>> {
    let a = v.as_array()?;
    let mut out = Vec::with_capacity(a.len());
    for x in a {
        out.push(f(x)?);
    }
    Some(out)
}

fn status(v: &Value) -> Option<RunStatus> {
    let s = v.as_str()?;
    [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Stopped,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
}

fn best(v: &Value) -> Option<BestMetric> {
    let o = O::of(v)?;
    Some(BestMetric {
        metric: o.str("metric")?,
        value: o.f64("value")?,
        step: o.u64("step")?,
    })
}

fn checkpoint(v: &Value) -> Option<Checkpoint> {
    let o = O::of(v)?;
    Some(Checkpoint {
        path: o.str("path")?,
        epoch: o.u64("epoch"),
        step: o.u64("step"),
        size_bytes: o.u64("size_bytes"),
        time: o.f64("time"),
        metrics: o.metrics("metrics")?,
        overwrites: o.u64("overwrites").unwrap_or_default(),
    })
}

fn command(v: &Value) -> Option<CommandState> {
    let o = O::of(v)?;
    Some(CommandState {
        id: o.str("id")?,
        command: o.str("command")?,
        args: o.object("args")?,
        status: o.str("status")?,
        message: o.str("message"),
        messages: o.strs("messages").unwrap_or_default(),
        output: o.get("output").cloned(),
        sender: o.str("sender"),
        sent_at: o.f64("sent_at"),
        updated_at: o.f64("updated_at"),
        event_id: o.u64("event_id"),
        ranks: o.strs("ranks").unwrap_or_default(),
        waiting: o.list("waiting", Value::as_u64).unwrap_or_default(),
        step: o.u64("step"),
    })
}

fn last_error(v: &Value) -> Option<LastError> {
    let o = O::of(v)?;
    Some(LastError {
        message: o.str("message")?,
        traceback: o.str("traceback"),
        fatal: o.bool("fatal")?,
        time: o.f64("time"),
        rank: o.u64("rank"),
    })
}

fn pace(v: &Value) -> Option<Pace> {
    let o = O::of(v)?;
    let b = |k| o.bool(k).unwrap_or_default();
    let u = |k| o.u64(k).unwrap_or_default();
    let f = |k| o.f64(k).unwrap_or_default();
    Some(Pace {
        kept: b("kept"),
        first_epoch: o.u64("first_epoch"),
        batch_zero: b("batch_zero"),
        batch_full: b("batch_full"),
        epoch_batches: u("epoch_batches"),
        epoch_ended: b("epoch_ended"),
        paused_secs: f("paused_secs"),
        paused_since: o.f64("paused_since"),
        batch_secs: f("batch_secs"),
        batch_units: u("batch_units"),
        gap_secs: f("gap_secs"),
        gaps: u("gaps"),
        last_batch_at: o.f64("last_batch_at"),
        last_batch_idx: o.u64("last_batch_idx"),
        paused_at_last_batch: f("paused_at_last_batch"),
        crossed_epoch: b("crossed_epoch"),
    })
}

fn progress(v: &Value) -> Option<Progress> {
    let o = O::of(v)?;
    Some(Progress {
        epoch: o.u64("epoch"),
        total_epochs: o.u64("total_epochs"),
        epochs_done: o.u64("epochs_done")?,
        batch: o.u64("batch"),
        total_batches: o.u64("total_batches"),
        epoch_fraction: o.f64("epoch_fraction"),
        fraction: o.f64("fraction"),
    })
}

fn active_alert(v: &Value) -> Option<ActiveAlert> {
    let o = O::of(v)?;
    Some(ActiveAlert {
        alert_id: o.str("alert_id")?,
        rule: o.str("rule")?,
        kind: o.str("kind")?,
        level: o.str("level")?,
        title: o.str("title")?,
        text: o.str("text")?,
        metric: o.str("metric"),
        value: o.f64("value"),
        step: o.u64("step"),
        action: o.str("action"),
        since: o.f64("since"),
        sticky: o.bool("sticky").unwrap_or_default(),
        event_id: o.u64("event_id").unwrap_or_default(),
        channels: o.strs("channels").unwrap_or_default(),
    })
}

fn alert_record(v: &Value) -> Option<AlertRecord> {
    let o = O::of(v)?;
    Some(AlertRecord {
        what: o.str("what")?,
        alert_id: o.str("alert_id")?,
        rule: o.str("rule")?,
        time: o.f64("time"),
        level: o.str("level"),
        text: o.str("text").unwrap_or_default(),
        channel: o.str("channel"),
        ok: o.bool("ok"),
        attempt: o.u64("attempt"),
        sender: o.str("sender"),
    })
}

fn run_rule(v: &Value) -> Option<RunRule> {
    Some(RunRule {
        rule: Rule::parse(v.get("rule").unwrap_or(&Value::Null), "rule").ok()?,
        sender: v.get("sender").and_then(Value::as_str).map(str::to_string),
    })
}

fn alerts(v: &Value) -> Option<AlertsState> {
    let o = O::of(v)?;
    Some(AlertsState {
        active: o.list("active", active_alert)?,
        recent: o.list("recent", alert_record)?,
        fired: o.u64("fired")?,
        failed_deliveries: o.u64("failed_deliveries")?,
        rules: o.list("rules", run_rule)?,
    })
}

/// `GET /api/runs/{run}` (its `progress` is derived from the state, so skipped).
pub fn state(v: &Value) -> Option<RunState> {
    let o = O::of(v)?;
    Some(RunState {
        run: o.str("run")?,
        name: o.str("name")?,
        status: status(o.get("status")?)?,
        is_training: o.bool("is_training")?,
        current_epoch: o.u64("current_epoch")?,
        total_epochs: o.u64("total_epochs"),
        current_batch: o.u64("current_batch")?,
        total_batches: o.u64("total_batches"),
        current_loss: o.f64("current_loss"),
        avg_loss: o.f64("avg_loss"),
        learning_rate: o.f64("learning_rate"),
        step: o.u64("step")?,
        best_loss: o.f64("best_loss"),
        best_step: o.u64("best_step"),
        best_val: o.opt("best_val", best)?,
        loss_non_finite: o.bool("loss_non_finite")?,
        metrics: o.metrics("metrics")?,
        checkpoints: o.list("checkpoints", checkpoint)?,
        loaded_checkpoint: o.str("loaded_checkpoint"),
        last_error: o.opt("last_error", last_error)?,
        config: o.object("config")?,
        meta: o.object("meta").unwrap_or_default(),
        system: o.object("system"),
        started_at: o.f64("started_at"),
        ended_at: o.f64("ended_at"),
        last_event_at: o.f64("last_event_at"),
        last_id: o.u64("last_id")?,
        commands: o.list("commands", command).unwrap_or_default(),
        event_count: o.u64("event_count")?,
        batch_count: o.u64("batch_count")?,
        pace: o.opt("pace", pace)?.unwrap_or_default(),
        alerts: o.opt("alerts", alerts)?.unwrap_or_default(),
        tags: o.strs("tags").unwrap_or_default(),
        group: o.str("group"),
        notes: o.str("notes"),
        epoch_loss_sum: o.f64("epoch_loss_sum").unwrap_or_default(),
        epoch_loss_n: o.u64("epoch_loss_n").unwrap_or_default(),
        world: o.get("world").and_then(world),
        media: media(o)?,
    })
}

/// The state's media tags: the dashboard reads its media from their events and skips
/// them (as its derived decoder did); natively, all of them, for the round-trip tests.
#[cfg(target_arch = "wasm32")]
fn media(_: O) -> Option<Vec<crate::media::MediaTag>> {
    Some(Vec::new())
}

#[cfg(not(target_arch = "wasm32"))]
fn media(o: O) -> Option<Vec<crate::media::MediaTag>> {
    o.get("media").map_or(Some(Vec::new()), |v| {
        serde::Deserialize::deserialize(v).ok()
    })
}

/// What the dashboard draws of a run's ranks ([`crate::world::from_value`]); natively,
/// all of it, so the round-trip tests compare whole states.
#[cfg(target_arch = "wasm32")]
fn world(v: &Value) -> Option<crate::world::World> {
    crate::world::from_value(v)
}

#[cfg(not(target_arch = "wasm32"))]
fn world(v: &Value) -> Option<crate::world::World> {
    serde::Deserialize::deserialize(v).ok()
}

/// One run summary.
pub fn summary(v: &Value) -> Option<RunSummary> {
    let o = O::of(v)?;
    Some(RunSummary {
        run: o.str("run")?,
        name: o.str("name")?,
        status: status(o.get("status")?)?,
        current_epoch: o.u64("current_epoch")?,
        total_epochs: o.u64("total_epochs"),
        current_batch: o.u64("current_batch")?,
        total_batches: o.u64("total_batches"),
        step: o.u64("step")?,
        current_loss: o.f64("current_loss"),
        best_loss: o.f64("best_loss"),
        best_val: o.opt("best_val", best)?,
        loss_non_finite: o.bool("loss_non_finite")?,
        progress: o.opt("progress", progress)?.unwrap_or_default(),
        started_at: o.f64("started_at"),
        ended_at: o.f64("ended_at"),
        last_event_at: o.f64("last_event_at"),
        last_id: o.u64("last_id")?,
        event_count: o.u64("event_count")?,
        alerts_active: o
            .u64("alerts_active")
            .map_or(Some(0), |n| u32::try_from(n).ok())?,
        alert_level: o.str("alert_level"),
        alert_title: o.str("alert_title"),
        tags: o.strs("tags").unwrap_or_default(),
        group: o.str("group"),
        deleted: o.bool("deleted").unwrap_or_default(),
    })
}

fn point(v: &Value) -> Option<SeriesPoint> {
    let a = v.as_array().filter(|a| a.len() == 3)?;
    Some(SeriesPoint {
        step: a[0].as_f64()?,
        time: a[1].as_f64()?,
        value: num::from_json(&a[2])?,
    })
}

/// One metric's page of the series endpoint.
pub fn series_page(v: &Value) -> Option<SeriesPage> {
    let o = O::of(v)?;
    Some(SeriesPage {
        metric: o.str("metric")?,
        total: o.u64("total")?,
        exact: o.bool("exact")?,
        last_id: o.u64("last_id")?,
        points: o.list("points", point)?,
    })
}

/// One item of the series list.
pub fn series_info(v: &Value) -> Option<SeriesInfo> {
    let o = O::of(v)?;
    Some(SeriesInfo {
        metric: o.str("metric")?,
        count: o.u64("count")?,
        first_step: o.f64("first_step"),
        last_step: o.f64("last_step"),
    })
}
