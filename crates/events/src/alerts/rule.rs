//! [`Rule`]: what an alert looks for, checked field by field from JSON (a config file's
//! TOML table, an SDK's `alert_rule` event, the dashboard's form), every refusal a
//! [`FieldError`] naming its field.

use crate::field_error::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a rule watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A metric came in NaN or ±Infinity.
    NonFinite,
    /// A metric above `threshold` for `for` consecutive points.
    Above,
    /// A metric below `threshold` for `for` consecutive points.
    Below,
    /// A value above `factor` × the mean of the `window` values before it.
    Spike,
    /// The best value not improved by `min_delta_pct` % in `window` steps.
    Plateau,
    /// No event from the trainer for `after_s` while running.
    Stale,
    /// The run failed.
    Failed,
    /// The run ended (completed or stopped).
    Finished,
    /// A GPU under `below_pct` % utilisation for `after_s` while running.
    GpuIdle,
    /// A custom event (the trainer's own alert).
    Event,
}

/// Every kind's wire name, in the order the docs list them.
pub const RULE_KINDS: [&str; 10] = [
    "non_finite",
    "above",
    "below",
    "spike",
    "plateau",
    "stale",
    "failed",
    "finished",
    "gpu_idle",
    "event",
];

impl RuleKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        RULE_KINDS[self as usize]
    }

    fn parse(s: &str) -> Option<RuleKind> {
        use RuleKind::*;
        let all = [
            NonFinite, Above, Below, Spike, Plateau, Stale, Failed, Finished, GpuIdle, Event,
        ];
        all.into_iter().find(|k| k.as_str() == s)
    }

    /// Fires once per occurrence and stays until dismissed (no condition to clear).
    pub fn is_sticky(self) -> bool {
        matches!(
            self,
            RuleKind::Failed | RuleKind::Finished | RuleKind::Event
        )
    }

    /// Reads a metric (the `metric` field means something).
    pub fn reads_metric(self) -> bool {
        matches!(
            self,
            RuleKind::NonFinite
                | RuleKind::Above
                | RuleKind::Below
                | RuleKind::Spike
                | RuleKind::Plateau
        )
    }

    fn default_level(self) -> Level {
        match self {
            RuleKind::NonFinite | RuleKind::Failed => Level::Error,
            RuleKind::Finished => Level::Info,
            _ => Level::Warning,
        }
    }
}

/// How loud an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    #[default]
    Warning,
    Error,
}

impl Level {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }

    /// Parses a level as trainers write it (`warn`, `critical` and `fatal` included).
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "info" | "debug" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warning),
            "error" | "critical" | "fatal" => Some(Level::Error),
            _ => None,
        }
    }
}

/// What a rule does to the run when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pause,
    Stop,
}

impl Action {
    /// The command it sends.
    pub fn command(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Stop => "stop",
        }
    }
}

/// Lower or higher is better, for `plateau`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Min,
    Max,
}

/// One alert rule, checked. Serialises to the same JSON it parses from, defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    /// The metric read by the metric kinds (`*`: every metric, for `non_finite`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub threshold: Option<f64>,
    /// Consecutive points beyond the threshold (`above` / `below`).
    #[serde(rename = "for", skip_serializing_if = "Option::is_none", default)]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub factor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub window: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub min_delta_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mode: Option<Mode>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub after_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub below_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub event: Option<String>,
    pub level: Level,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub action: Option<Action>,
    /// Channel names; `None`: every channel of the config.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notify: Option<Vec<String>>,
    pub cooldown_s: f64,
    /// Config rules: the run-id prefix they apply to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub runs: Option<String>,
}

/// Cooldown when a rule names none.
pub const DEFAULT_COOLDOWN_S: f64 = 300.0;
/// `stale` / `gpu_idle` seconds when a rule names none.
pub const DEFAULT_AFTER_S: f64 = 300.0;

const FIELDS: [&str; 17] = [
    "name",
    "kind",
    "metric",
    "threshold",
    "for",
    "factor",
    "window",
    "min_delta_pct",
    "mode",
    "after_s",
    "below_pct",
    "event",
    "level",
    "action",
    "notify",
    "cooldown_s",
    "runs",
];

/// `true` for a rule or channel name: `[A-Za-z0-9_.-]{1,64}`.
pub fn is_valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Reads one rule's fields, naming the first bad one (prefixed with `at`, e.g. `rules[2]`).
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    at: &'a str,
}

impl Fields<'_> {
    fn err(&self, field: &str, msg: impl Into<String>) -> FieldError {
        let path = if self.at.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.at)
        };
        FieldError::new(path, msg)
    }

    fn string(&self, field: &str) -> Result<Option<String>, FieldError> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(field, "must be a string")),
        }
    }

    fn number(&self, field: &str, lo: f64, hi: f64) -> Result<Option<f64>, FieldError> {
        let v = match self.obj.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Some(_) => return Err(self.err(field, "must be a number")),
        };
        if !v.is_finite() || v < lo || v > hi {
            return Err(self.err(field, format!("must be between {lo} and {hi}, got {v}")));
        }
        Ok(Some(v))
    }

    fn integer(&self, field: &str, lo: u64, hi: u64) -> Result<Option<u64>, FieldError> {
        let v = match self.obj.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_i64(),
            Some(_) => return Err(self.err(field, "must be a whole number")),
        };
        match v {
            Some(x) if x >= 0 && (x as u64) >= lo && (x as u64) <= hi => Ok(Some(x as u64)),
            Some(x) if x < 0 => Err(self.err(field, format!("must not be negative, got {x}"))),
            Some(x) => Err(self.err(field, format!("must be between {lo} and {hi}, got {x}"))),
            None => Err(self.err(field, "must be a whole number")),
        }
    }

    fn choice<T>(
        &self,
        field: &str,
        allowed: &[&str],
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, FieldError> {
        match self.string(field)? {
            None => Ok(None),
            Some(s) => parse(&s).map(Some).ok_or_else(|| {
                self.err(
                    field,
                    format!(
                        "unknown value {s:?} (expected one of {})",
                        allowed.join(", ")
                    ),
                )
            }),
        }
    }
}

impl Rule {
    /// Checks a rule given as JSON; `at` prefixes the field in errors (`rules[2]`, or "").
    pub fn parse(v: &Value, at: &str) -> Result<Rule, FieldError> {
        let Some(obj) = v.as_object() else {
            return Err(FieldError::new(
                if at.is_empty() { "rule" } else { at },
                "a rule is an object: {\"name\": \"…\", \"kind\": \"…\", …}",
            ));
        };
        let f = Fields { obj, at };
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(f.err(
                k,
                format!("unknown field (a rule has {})", FIELDS.join(", ")),
            ));
        }
        let name = f
            .string("name")?
            .ok_or_else(|| f.err("name", "missing: every rule needs a name"))?;
        if !is_valid_name(&name) {
            return Err(f.err("name", "1 to 64 of A-Z a-z 0-9 _ . -"));
        }
        let kind = f
            .choice("kind", &RULE_KINDS, RuleKind::parse)?
            .ok_or_else(|| {
                f.err(
                    "kind",
                    format!("missing (one of {})", RULE_KINDS.join(", ")),
                )
            })?;
        let mut rule = Rule {
            name,
            kind,
            metric: f.string("metric")?,
            threshold: f.number("threshold", f64::MIN, f64::MAX)?,
            count: f.integer("for", 1, 100_000)?,
            factor: f.number("factor", 1.0, 1e12)?,
            window: f.integer("window", 1, 1_000_000_000)?,
            min_delta_pct: f.number("min_delta_pct", 0.0, 100.0)?,
            mode: f.choice("mode", &["min", "max"], |s| match s {
                "min" => Some(Mode::Min),
                "max" => Some(Mode::Max),
                _ => None,
            })?,
            after_s: f.number("after_s", 1.0, 604_800.0)?,
            below_pct: f.number("below_pct", 0.0, 100.0)?,
            event: f.string("event")?,
            level: f
                .choice("level", &["info", "warning", "error"], Level::parse)?
                .unwrap_or(kind.default_level()),
            action: f.choice("action", &["pause", "stop"], |s| match s {
                "pause" => Some(Action::Pause),
                "stop" => Some(Action::Stop),
                _ => None,
            })?,
            notify: notify(&f)?,
            cooldown_s: f
                .number("cooldown_s", 0.0, 86_400.0)?
                .unwrap_or(DEFAULT_COOLDOWN_S),
            runs: f.string("runs")?,
        };
        rule.check_kind(&f)?;
        rule.fill_defaults();
        Ok(rule)
    }

    /// Fields a kind needs, and fields that mean nothing for it.
    fn check_kind(&self, f: &Fields<'_>) -> Result<(), FieldError> {
        use RuleKind::*;
        if let Some(m) = &self.metric {
            if m.is_empty() || m.len() > 256 || m.chars().any(char::is_control) {
                return Err(f.err("metric", "1 to 256 printable characters"));
            }
            if m == "*" && self.kind != NonFinite {
                return Err(f.err("metric", "\"*\" (every metric) is for non_finite only"));
            }
            if !self.kind.reads_metric() {
                return Err(f.err("metric", format!("{} reads no metric", self.kind.as_str())));
            }
        }
        if matches!(self.kind, Above | Below) && self.threshold.is_none() {
            return Err(f.err(
                "threshold",
                format!("{} needs a threshold", self.kind.as_str()),
            ));
        }
        let only = |field: &str, set: bool, kinds: &[RuleKind]| {
            if set && !kinds.contains(&self.kind) {
                Err(f.err(
                    field,
                    format!("means nothing for a {} rule", self.kind.as_str()),
                ))
            } else {
                Ok(())
            }
        };
        only("threshold", self.threshold.is_some(), &[Above, Below])?;
        only("for", self.count.is_some(), &[Above, Below])?;
        only("factor", self.factor.is_some(), &[Spike])?;
        only("window", self.window.is_some(), &[Spike, Plateau])?;
        only("min_delta_pct", self.min_delta_pct.is_some(), &[Plateau])?;
        only("mode", self.mode.is_some(), &[Plateau])?;
        only("after_s", self.after_s.is_some(), &[Stale, GpuIdle])?;
        only("below_pct", self.below_pct.is_some(), &[GpuIdle])?;
        only("event", self.event.is_some(), &[Event])?;
        if self.kind == Spike {
            if self.factor.is_some_and(|x| x <= 1.0) {
                return Err(f.err("factor", "must be above 1"));
            }
            if self.window.is_some_and(|w| !(2..=10_000).contains(&w)) {
                return Err(f.err("window", "must be between 2 and 10000"));
            }
        }
        if let Some(e) = &self.event {
            if !crate::event::is_valid_event_name(e) {
                return Err(f.err("event", "an event name: 1 to 64 of a-z 0-9 _ . -"));
            }
        }
        if let Some(p) = &self.runs {
            if !p.is_empty() && !crate::event::is_valid_run_id(p) {
                return Err(f.err("runs", "a run-id prefix: A-Z a-z 0-9 _ . -"));
            }
        }
        Ok(())
    }

    fn fill_defaults(&mut self) {
        use RuleKind::*;
        if self.kind.reads_metric() && self.metric.is_none() {
            self.metric = Some(crate::series::LOSS.to_string());
        }
        match self.kind {
            Above | Below => self.count = Some(self.count.unwrap_or(1)),
            Spike => {
                self.factor = Some(self.factor.unwrap_or(3.0));
                self.window = Some(self.window.unwrap_or(20));
            }
            Plateau => {
                self.window = Some(self.window.unwrap_or(1000));
                self.min_delta_pct = Some(self.min_delta_pct.unwrap_or(1.0));
                self.mode = Some(self.mode.unwrap_or_default());
            }
            Stale => self.after_s = Some(self.after_s.unwrap_or(DEFAULT_AFTER_S)),
            GpuIdle => {
                self.after_s = Some(self.after_s.unwrap_or(DEFAULT_AFTER_S));
                self.below_pct = Some(self.below_pct.unwrap_or(5.0));
            }
            Event => self.event = Some(self.event.clone().unwrap_or_else(|| "alert".into())),
            NonFinite | Failed | Finished => {}
        }
    }

    /// Whether this rule applies to `run` (its `runs` prefix, if any).
    pub fn applies_to(&self, run: &str) -> bool {
        self.runs.as_deref().is_none_or(|p| run.starts_with(p))
    }

    /// The rule as JSON (what `Rule::parse` reads back).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// What the rule looks for, in one line (`loss above 10 for 3 points`).
    pub fn describe(&self) -> String {
        let metric = self.metric.as_deref().unwrap_or("loss");
        let n = |x: Option<f64>| x.map(fmt_num).unwrap_or_default();
        match self.kind {
            RuleKind::NonFinite if metric == "*" => "a metric is NaN or infinite".into(),
            RuleKind::NonFinite => format!("{metric} is NaN or infinite"),
            RuleKind::Above | RuleKind::Below => {
                let count = self.count.unwrap_or(1);
                let dir = if self.kind == RuleKind::Above {
                    "above"
                } else {
                    "below"
                };
                let points = if count == 1 {
                    String::new()
                } else {
                    format!(" for {count} points")
                };
                format!("{metric} {dir} {}{points}", n(self.threshold))
            }
            RuleKind::Spike => format!(
                "{metric} above {}× its mean of {} values",
                n(self.factor),
                self.window.unwrap_or(20)
            ),
            RuleKind::Plateau => format!(
                "{metric} not better by {}% in {} steps",
                n(self.min_delta_pct),
                self.window.unwrap_or(1000)
            ),
            RuleKind::Stale => format!("no event for {} s", n(self.after_s)),
            RuleKind::Failed => "the run failed".into(),
            RuleKind::Finished => "the run ended".into(),
            RuleKind::GpuIdle => format!(
                "a GPU under {}% for {} s",
                n(self.below_pct),
                n(self.after_s)
            ),
            RuleKind::Event => format!("a {} event", self.event.as_deref().unwrap_or("alert")),
        }
    }
}

/// A number as people write it: `10`, `0.001`, `1e-8`.
pub fn fmt_num(x: f64) -> String {
    if x.is_finite() && x == x.trunc() && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else if x.is_finite() && (x.abs() >= 1e-4 || x == 0.0) && x.abs() < 1e15 {
        let s = format!("{x:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{x:e}")
    }
}

fn notify(f: &Fields<'_>) -> Result<Option<Vec<String>>, FieldError> {
    match f.obj.get("notify") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) if is_valid_name(s) => out.push(s.to_string()),
                    _ => {
                        return Err(f.err(
                            &format!("notify[{i}]"),
                            "a channel name: 1 to 64 of A-Z a-z 0-9 _ . -",
                        ))
                    }
                }
            }
            Ok(Some(out))
        }
        Some(_) => Err(f.err("notify", "must be a list of channel names")),
    }
}

/// The rules every run gets unless the config says `defaults = false`: a NaN or
/// infinite loss, five minutes of silence while running, a failed run, and the trainer's
/// own `stepwatch.alert()` (at most one a minute).
pub fn default_rules() -> Vec<Rule> {
    let mk = |v: Value| Rule::parse(&v, "");
    [
        serde_json::json!({"name": "nan-loss", "kind": "non_finite", "metric": "loss"}),
        serde_json::json!({"name": "stale", "kind": "stale"}),
        serde_json::json!({"name": "failed", "kind": "failed"}),
        serde_json::json!({"name": "alert", "kind": "event", "event": "alert", "cooldown_s": 60}),
    ]
    .into_iter()
    .filter_map(|v| mk(v).ok())
    .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> FieldError {
        Rule::parse(&v, "rules[1]").unwrap_err()
    }

    #[test]
    fn a_rule_gets_its_kinds_defaults_and_reads_back_the_same() {
        let r = Rule::parse(&json!({"name": "s", "kind": "spike"}), "").unwrap();
        assert_eq!(r.metric.as_deref(), Some("loss"));
        assert_eq!((r.factor, r.window), (Some(3.0), Some(20)));
        assert_eq!(r.level, Level::Warning);
        assert_eq!(r.cooldown_s, DEFAULT_COOLDOWN_S);
        assert_eq!(Rule::parse(&r.to_value(), "").unwrap(), r);
        let nan = Rule::parse(&json!({"name": "n", "kind": "non_finite"}), "").unwrap();
        assert_eq!(nan.level, Level::Error);
        let a = Rule::parse(
            &json!({"name": "hi", "kind": "above", "threshold": 10, "for": 3, "action": "pause", "notify": ["ops"]}),
            "",
        )
        .unwrap();
        assert_eq!(a.describe(), "loss above 10 for 3 points");
        assert_eq!(a.action, Some(Action::Pause));
        assert_eq!(default_rules().len(), 4);
    }

    #[test]
    fn every_bad_field_is_named() {
        let e = err(json!({"name": "x", "kind": "nan"}));
        assert_eq!(e.field, "rules[1].kind");
        assert!(e.message.contains("non_finite"), "{e}");
        assert_eq!(err(json!({"kind": "stale"})).field, "rules[1].name");
        assert_eq!(
            err(json!({"name": "a b", "kind": "stale"})).field,
            "rules[1].name"
        );
        let e = err(json!({"name": "x", "kind": "spike", "window": -5}));
        assert_eq!(e.field, "rules[1].window");
        assert!(e.message.contains("negative"), "{e}");
        assert_eq!(
            err(json!({"name": "x", "kind": "spike", "window": 1})).field,
            "rules[1].window"
        );
        assert_eq!(
            err(json!({"name": "x", "kind": "spike", "factor": 0.5})).field,
            "rules[1].factor"
        );
        assert_eq!(
            err(json!({"name": "x", "kind": "above"})).field,
            "rules[1].threshold"
        );
        assert_eq!(
            err(json!({"name": "x", "kind": "stale", "threshold": 1})).field,
            "rules[1].threshold"
        );
        assert_eq!(
            err(json!({"name": "x", "kind": "stale", "metric": "loss"})).field,
            "rules[1].metric"
        );
        assert_eq!(
            err(json!({"name": "x", "kind": "stale", "after_s": 0})).field,
            "rules[1].after_s"
        );
        assert_eq!(
            err(json!({"name": "x", "kind": "stale", "level": "loud"})).field,
            "rules[1].level"
        );
        assert_eq!(
            err(json!({"name": "x", "kind": "stale", "action": "reboot"})).field,
            "rules[1].action"
        );
        assert_eq!(
            err(json!({"name": "x", "kind": "stale", "notify": ["ok", "b d"]})).field,
            "rules[1].notify[1]"
        );
        assert_eq!(
            err(json!({"name": "x", "kind": "stale", "colour": 1})).field,
            "rules[1].colour"
        );
        assert_eq!(
            err(json!({"name": "x", "kind": "event", "event": "Bad Name"})).field,
            "rules[1].event"
        );
        assert_eq!(
            err(json!({"name": "x", "kind": "above", "threshold": "ten"})).field,
            "rules[1].threshold"
        );
        assert_eq!(
            err(json!({"name": "x", "kind": "above", "threshold": 1, "metric": "*"})).field,
            "rules[1].metric"
        );
        assert_eq!(Rule::parse(&json!([1]), "").unwrap_err().field, "rule");
    }

    #[test]
    fn a_prefix_picks_its_runs() {
        let r = Rule::parse(
            &json!({"name": "x", "kind": "failed", "runs": "llama-"}),
            "",
        )
        .unwrap();
        assert!(r.applies_to("llama-7b"));
        assert!(!r.applies_to("gpt-2"));
        assert_eq!(fmt_num(0.001), "0.001");
        assert_eq!(fmt_num(1e-8), "1e-8");
    }
}
