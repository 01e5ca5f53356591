//! What each rule kind looks for: one function per kind reads an event (with the rule's
//! memory, [`Slot`]) and says whether its condition holds ([`Cond`]), with the words of
//! the alert ([`Found`]). The evaluator (`eval`) decides what that means: fire, resolve,
//! hold back for the cooldown.

use super::eval::At;
use super::rule::{Level, Mode, Rule, RuleKind};
use crate::event::{Event, EventBody};
use crate::records::RunStatus;
use serde_json::Value;
use std::collections::VecDeque;

/// Per-rule memory.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// The alert firing now (not for sticky kinds).
    pub(super) firing: Option<String>,
    /// `above` / `below`: points beyond the bound in a row.
    pub(super) run_len: u64,
    /// `spike`: the last `window` values and their sum.
    pub(super) window: VecDeque<f64>,
    pub(super) sum: f64,
    /// `plateau`: best value and its step.
    pub(super) best: Option<(f64, u64)>,
    /// `gpu_idle`: since when (relay time) a GPU is low, and which.
    pub(super) low_since: Option<(f64, u64)>,
    /// `non_finite` on `*`: the metric that went non-finite.
    pub(super) bad_metric: Option<String>,
    /// Cooldown: when it last fired, and firings held back since.
    pub(super) last_fired: Option<f64>,
    pub(super) suppressed: u64,
}

/// What a condition check found.
pub(super) struct Found {
    pub(super) title: String,
    pub(super) text: String,
    pub(super) metric: Option<String>,
    pub(super) value: Option<f64>,
    pub(super) level: Option<Level>,
}

/// `Some(None)`: the condition is clear; `Some(Some(found))`: it holds; `None`: this
/// event says nothing about it.
pub(super) type Cond = Option<Option<Found>>;

pub(super) fn values_of<'a>(
    rule: &'a Rule,
    values: &'a [(&'a str, f64)],
) -> impl Iterator<Item = f64> + 'a {
    let m = rule.metric.as_deref().unwrap_or("loss");
    values.iter().filter(move |(n, _)| *n == m).map(|(_, v)| *v)
}

/// A value as alerts print it: `NaN`, `Infinity`, `-Infinity` or the number, short.
pub fn show(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        super::rule::fmt_num(x)
    }
}

pub(super) fn non_finite(rule: &Rule, slot: &mut Slot, values: &[(&str, f64)], step: u64) -> Cond {
    let m = rule.metric.as_deref().unwrap_or("loss");
    if m == "*" {
        if let Some((name, v)) = values.iter().find(|(_, v)| !v.is_finite()) {
            slot.bad_metric = Some((*name).to_string());
            return Some(Some(nf_found(name, *v, step)));
        }
        let watched = slot.bad_metric.as_deref();
        return match watched {
            Some(w) if values.iter().any(|(n, _)| *n == w) => Some(None),
            _ => None,
        };
    }
    let mut cond = None;
    for v in values_of(rule, values) {
        cond = Some(if v.is_finite() {
            None
        } else {
            Some(nf_found(m, v, step))
        });
    }
    cond
}

fn nf_found(metric: &str, v: f64, step: u64) -> Found {
    Found {
        title: format!("{metric} is {}", show(v)),
        text: format!("{metric} became {} at step {step}", show(v)),
        metric: Some(metric.to_string()),
        value: Some(v),
        level: None,
    }
}

pub(super) fn beyond(rule: &Rule, slot: &mut Slot, values: &[(&str, f64)], step: u64) -> Cond {
    let bound = rule.threshold.unwrap_or(0.0);
    let above = rule.kind == RuleKind::Above;
    let need = rule.count.unwrap_or(1);
    let m = rule.metric.as_deref().unwrap_or("loss");
    let mut cond = None;
    for v in values_of(rule, values) {
        if v.is_nan() {
            continue;
        }
        let out = if above { v > bound } else { v < bound };
        if !out {
            slot.run_len = 0;
            cond = Some(None);
            continue;
        }
        slot.run_len += 1;
        cond = Some((slot.run_len >= need).then(|| {
            let dir = if above { "above" } else { "below" };
            let points = if need > 1 {
                format!(" for {need} points")
            } else {
                String::new()
            };
            Found {
                title: format!("{m} {dir} {}", show(bound)),
                text: format!(
                    "{m} = {} at step {step}, {dir} {}{points}",
                    show(v),
                    show(bound)
                ),
                metric: Some(m.to_string()),
                value: Some(v),
                level: None,
            }
        }));
    }
    cond
}

pub(super) fn spike(rule: &Rule, slot: &mut Slot, values: &[(&str, f64)], step: u64) -> Cond {
    let n = rule.window.unwrap_or(20) as usize;
    let k = rule.factor.unwrap_or(3.0);
    let m = rule.metric.as_deref().unwrap_or("loss");
    let mut cond = None;
    for v in values_of(rule, values) {
        if !v.is_finite() {
            continue;
        }
        if slot.window.len() == n {
            let mean = slot.sum / n as f64;
            let bound = k * mean;
            cond = Some((mean > 0.0 && v > bound).then(|| Found {
                title: format!("{m} spiked to {}", show(v)),
                text: format!(
                    "{m} = {} at step {step} is {:.1}× its mean of the last {n} values ({})",
                    show(v),
                    v / mean,
                    show(mean)
                ),
                metric: Some(m.to_string()),
                value: Some(v),
                level: None,
            }));
            if let Some(old) = slot.window.pop_front() {
                slot.sum -= old;
            }
        }
        slot.window.push_back(v);
        slot.sum += v;
    }
    cond
}

pub(super) fn plateau(rule: &Rule, slot: &mut Slot, values: &[(&str, f64)], step: u64) -> Cond {
    let window = rule.window.unwrap_or(1000);
    let pct = rule.min_delta_pct.unwrap_or(1.0) / 100.0;
    let max = rule.mode == Some(Mode::Max);
    let m = rule.metric.as_deref().unwrap_or("loss");
    let mut cond = None;
    for v in values_of(rule, values) {
        if !v.is_finite() {
            continue;
        }
        let Some((best, at)) = slot.best else {
            slot.best = Some((v, step));
            cond = Some(None);
            continue;
        };
        let margin = best.abs() * pct;
        let better = if max {
            v > best + margin || (pct == 0.0 && v > best)
        } else {
            v < best - margin || (pct == 0.0 && v < best)
        };
        if better {
            slot.best = Some((v, step));
            cond = Some(None);
            continue;
        }
        let since = step.saturating_sub(at);
        cond = Some((since >= window).then(|| Found {
            title: format!("{m} plateaued"),
            text: format!(
                "{m}'s best is {} (step {at}); nothing {}% better in the {since} steps since",
                show(best),
                super::rule::fmt_num(pct * 100.0)
            ),
            metric: Some(m.to_string()),
            value: Some(v),
            level: None,
        }));
    }
    cond
}

pub(super) fn ended(was: RunStatus, at: At<'_>, to: RunStatus) -> Cond {
    let s = at.state;
    if at.status != to || was == to {
        return None;
    }
    let (title, text) = match to {
        RunStatus::Failed => (
            "run failed".to_string(),
            s.last_error
                .as_ref()
                .map(|e| e.message.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "the trainer reported the run failed".into()),
        ),
        other => (
            format!("run {}", other.as_str()),
            format!("{} at step {}", s.name, at.step),
        ),
    };
    Some(Some(Found {
        title,
        text,
        metric: None,
        value: None,
        level: None,
    }))
}

pub(super) fn gpu_idle(
    rule: &Rule,
    slot: &mut Slot,
    status: RunStatus,
    now: f64,
    e: &Event,
) -> Cond {
    if status != RunStatus::Running {
        slot.low_since = None;
        return Some(None);
    }
    let EventBody::System(sys) = &e.body else {
        return None;
    };
    let below = rule.below_pct.unwrap_or(5.0);
    let low = sys.gpus.iter().flatten().find_map(|g| {
        let util = g.get("util_percent").and_then(Value::as_f64)?;
        let index = g.get("index").and_then(Value::as_u64).unwrap_or(0);
        (util < below).then_some(index)
    });
    match low {
        None => {
            slot.low_since = None;
            Some(None)
        }
        Some(gpu) => {
            let since = match slot.low_since {
                Some((t, g)) if g == gpu => t,
                _ => now,
            };
            slot.low_since = Some((since, gpu));
            let after = rule.after_s.unwrap_or(super::rule::DEFAULT_AFTER_S);
            (now - since >= after).then(|| Some(idle_found(rule, gpu, now - since)))
        }
    }
}

pub(super) fn idle_found(rule: &Rule, gpu: u64, for_s: f64) -> Found {
    Found {
        title: format!("GPU {gpu} idle"),
        text: format!(
            "GPU {gpu} has been under {}% utilisation for {} while the run is running",
            super::rule::fmt_num(rule.below_pct.unwrap_or(5.0)),
            duration(for_s)
        ),
        metric: None,
        value: None,
        level: None,
    }
}

pub(super) fn custom(rule: &Rule, e: &Event) -> Cond {
    let want = rule.event.as_deref().unwrap_or("alert");
    if e.name() != want {
        return None;
    }
    let (title, text, level) = match &e.body {
        EventBody::Alert(a) => (
            a.title.clone().unwrap_or_else(|| "alert".into()),
            a.text.clone().unwrap_or_default(),
            a.level.as_deref().and_then(Level::parse),
        ),
        EventBody::Custom { fields, .. } => (
            fields
                .get("title")
                .and_then(Value::as_str)
                .map_or_else(|| want.to_string(), str::to_string),
            fields
                .get("text")
                .or_else(|| fields.get("message"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            fields
                .get("level")
                .and_then(Value::as_str)
                .and_then(Level::parse),
        ),
        _ => (want.to_string(), String::new(), None),
    };
    Some(Some(Found {
        title: title.chars().take(200).collect(),
        text: text.chars().take(2000).collect(),
        metric: None,
        value: None,
        level,
    }))
}

/// Seconds as people say them: `45 s`, `5 min`, `2 h 5 min`.
pub fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}
