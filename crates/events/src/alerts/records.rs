//! What the run-state reducer keeps of a run's alerts ([`AlertsState`], in
//! `RunState.alerts`): the active ones, the last records, counts, and the run's own rules.

use super::rule::Rule;
use crate::event::{AlertDelivery, AlertFired, AlertResolved, AlertRule};
use crate::num;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Records kept in [`AlertsState::recent`].
pub const MAX_RECENT: usize = 100;
/// Active alerts kept (the oldest go first beyond this).
pub const MAX_ACTIVE: usize = 50;
/// A run's own rules kept.
pub const MAX_RUN_RULES: usize = 64;

/// An alert that fired and has not resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ActiveAlert {
    pub alert_id: String,
    pub rule: String,
    pub kind: String,
    pub level: String,
    pub title: String,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metric: Option<String>,
    #[serde(with = "num::opt", default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub step: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub action: Option<String>,
    #[serde(with = "num::opt", default)]
    pub since: Option<f64>,
    /// Stays until dismissed.
    #[serde(default)]
    pub sticky: bool,
    /// Id of the `alert_fired` event.
    #[serde(default)]
    pub event_id: u64,
    /// Channels its notice went to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

/// One line of a run's alert history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AlertRecord {
    /// `fired`, `resolved` or `delivery`.
    pub what: String,
    pub alert_id: String,
    pub rule: String,
    #[serde(with = "num::opt", default)]
    pub time: Option<f64>,
    /// Level for a firing.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub level: Option<String>,
    /// The title (fired), the text (resolved) or the error (a failed delivery).
    #[serde(default)]
    pub text: String,
    /// Deliveries: the channel and whether it went.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attempt: Option<u64>,
    /// Who dismissed it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sender: Option<String>,
}

/// A rule the run set itself (trainer or dashboard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRule {
    pub rule: Rule,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sender: Option<String>,
}

/// A run's alerts as the reducer keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AlertsState {
    /// Firing now (or sticky, not dismissed), oldest first.
    pub active: Vec<ActiveAlert>,
    /// The last [`MAX_RECENT`] records, oldest first.
    pub recent: Vec<AlertRecord>,
    /// Firings since the run began.
    pub fired: u64,
    /// Delivery attempts that failed.
    pub failed_deliveries: u64,
    /// The run's own rules (`alert_rule` events), by name, in the order first set.
    pub rules: Vec<RunRule>,
}

impl AlertsState {
    /// Nothing has happened yet.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty() && self.recent.is_empty() && self.rules.is_empty()
    }

    /// The loudest active level (`None` when nothing is active).
    pub fn top_level(&self) -> Option<&str> {
        let rank = |l: &str| match l {
            "error" => 2,
            "warning" => 1,
            _ => 0,
        };
        self.active
            .iter()
            .max_by_key(|a| rank(&a.level))
            .map(|a| a.level.as_str())
    }

    /// Notices of active alerts that never got through: `(alert, channel, attempts made)`
    /// for each channel of an alert fired since `since` with no successful delivery and
    /// fewer than `max_attempts` attempts recorded (what a relay that stopped mid-delivery
    /// left undone).
    pub fn undelivered(&self, since: f64, max_attempts: u64) -> Vec<(&ActiveAlert, &str, u64)> {
        let mut out = Vec::new();
        for a in &self.active {
            if a.since.is_none_or(|t| t < since)
                || !self
                    .recent
                    .iter()
                    .any(|r| r.what == "fired" && r.alert_id == a.alert_id)
            {
                continue;
            }
            for ch in &a.channels {
                let tries = self.recent.iter().filter(|r| {
                    r.what == "delivery"
                        && r.alert_id == a.alert_id
                        && r.channel.as_ref() == Some(ch)
                });
                let (mut ok, mut made) = (false, 0);
                for r in tries {
                    ok |= r.ok == Some(true);
                    made = made.max(r.attempt.unwrap_or(1));
                }
                if !ok && made < max_attempts {
                    out.push((a, ch.as_str(), made));
                }
            }
        }
        out
    }

    /// Whether a notice of `alert_id` reached `channel`.
    pub fn delivered(&self, alert_id: &str, channel: &str) -> bool {
        self.recent.iter().any(|r| {
            r.what == "delivery"
                && r.alert_id == alert_id
                && r.channel.as_deref() == Some(channel)
                && r.ok == Some(true)
        })
    }

    fn push(&mut self, r: AlertRecord) {
        self.recent.push(r);
        if self.recent.len() > MAX_RECENT {
            self.recent.remove(0);
        }
    }

    pub(crate) fn rule(&mut self, r: &AlertRule) {
        let Some(v) = &r.rule else { return };
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        self.rules.retain(|x| x.rule.name != name);
        if r.removed == Some(true) {
            return;
        }
        // Stored rules were checked at ingest; one that does not parse now is left out.
        if let Ok(rule) = Rule::parse(v, "") {
            if self.rules.len() < MAX_RUN_RULES {
                self.rules.push(RunRule {
                    rule,
                    sender: r.sender.clone(),
                });
            }
        }
    }

    pub(crate) fn fired(&mut self, f: &AlertFired, t: Option<f64>, id: Option<u64>) {
        let alert_id = f.alert_id.clone().unwrap_or_default();
        self.fired += 1;
        self.push(AlertRecord {
            what: "fired".into(),
            alert_id: alert_id.clone(),
            rule: f.rule.clone().unwrap_or_default(),
            time: t,
            level: f.level.clone(),
            text: f.title.clone().unwrap_or_default(),
            ..Default::default()
        });
        if self.active.iter().any(|a| a.alert_id == alert_id) {
            return;
        }
        self.active.push(ActiveAlert {
            alert_id,
            rule: f.rule.clone().unwrap_or_default(),
            kind: f.kind.clone().unwrap_or_default(),
            level: f.level.clone().unwrap_or_else(|| "warning".into()),
            title: f.title.clone().unwrap_or_default(),
            text: f.text.clone().unwrap_or_default(),
            metric: f.metric.clone(),
            value: f.value,
            step: f.step,
            action: f.action.clone(),
            since: t,
            sticky: f.sticky.unwrap_or(false),
            event_id: id.unwrap_or(0),
            channels: f.channels.clone().unwrap_or_default(),
        });
        if self.active.len() > MAX_ACTIVE {
            self.active.remove(0);
        }
    }

    pub(crate) fn resolved(&mut self, r: &AlertResolved, t: Option<f64>) {
        let alert_id = r.alert_id.clone().unwrap_or_default();
        self.active.retain(|a| a.alert_id != alert_id);
        self.push(AlertRecord {
            what: "resolved".into(),
            alert_id,
            rule: r.rule.clone().unwrap_or_default(),
            time: t,
            text: r.text.clone().unwrap_or_default(),
            sender: r.sender.clone(),
            ..Default::default()
        });
    }

    pub(crate) fn delivery(&mut self, d: &AlertDelivery, t: Option<f64>) {
        let ok = d.ok.unwrap_or(false);
        if !ok {
            self.failed_deliveries += 1;
        }
        self.push(AlertRecord {
            what: "delivery".into(),
            alert_id: d.alert_id.clone().unwrap_or_default(),
            rule: String::new(),
            time: t,
            text: d.error.clone().unwrap_or_default(),
            channel: d.channel.clone(),
            ok: Some(ok),
            attempt: d.attempt,
            ..Default::default()
        });
    }
}
