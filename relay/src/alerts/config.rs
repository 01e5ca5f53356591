//! The `[alerts]` table (`--alerts FILE`, or the `--config` file's): default rules on or
//! off, global rules (optionally for a run prefix), channels with their secrets, and the
//! base URL for links. Checked whole at start: a bad field stops the relay, named.

use super::notify::Channel;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use stepwatch_events::alerts::{default_rules, Rule};
use stepwatch_events::FieldError;

/// Alert rules and channels from the config.
#[derive(Debug, Default)]
pub struct AlertConfig {
    /// Whether the default rules (nan-loss, stale, failed, alert) apply.
    pub defaults: bool,
    /// The config's rules, defaults first unless replaced by name.
    pub rules: Vec<Arc<Rule>>,
    pub channels: Vec<Arc<Channel>>,
    /// Links in notices start with this (`http://host:8080`).
    pub base_url: Option<String>,
}

const FIELDS: [&str; 4] = ["defaults", "rules", "channels", "base_url"];

impl AlertConfig {
    /// No file: the default rules, no channels (banner and history only).
    pub fn builtin() -> Self {
        AlertConfig::from_value(&Value::Object(Default::default()))
            .unwrap_or_else(|_| AlertConfig::default())
    }

    /// `serve --demo`'s: the defaults, its `nan-loss` pausing the run.
    pub fn demo() -> Self {
        let v = serde_json::json!({"rules": [
            {"name": "nan-loss", "kind": "non_finite", "action": "pause"}
        ]});
        AlertConfig::from_value(&v).unwrap_or_else(|_| AlertConfig::builtin())
    }

    /// Reads the `[alerts]` table of a TOML file (a file without one is an error: it
    /// was named for its alerts).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read alerts config {}: {e}", path.display()))?;
        let doc: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let Some(table) = doc.get("alerts") else {
            anyhow::bail!(
                "{}: no [alerts] table (rules go in [[alerts.rules]], channels in [alerts.channels.NAME])",
                path.display()
            );
        };
        let json = serde_json::to_value(table)
            .map_err(|e| anyhow::anyhow!("{}: [alerts]: {e}", path.display()))?;
        AlertConfig::from_value(&json).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Checks the `[alerts]` table given as JSON; errors name the field (`alerts.rules[2].window`).
    pub fn from_value(v: &Value) -> Result<Self, FieldError> {
        let obj = v
            .as_object()
            .ok_or_else(|| FieldError::new("alerts", "must be a table"))?;
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(FieldError::new(
                format!("alerts.{k}"),
                format!("unknown field ([alerts] has {})", FIELDS.join(", ")),
            ));
        }
        let defaults = match obj.get("defaults") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(FieldError::new("alerts.defaults", "must be true or false")),
        };
        let base_url = match obj.get("base_url") {
            None => None,
            Some(Value::String(s)) if s.starts_with("http://") || s.starts_with("https://") => {
                Some(s.trim_end_matches('/').to_string())
            }
            Some(_) => {
                return Err(FieldError::new(
                    "alerts.base_url",
                    "an http:// or https:// address (the dashboard as people reach it)",
                ))
            }
        };
        let channels = parse_channels(obj.get("channels"))?;
        let mut rules: Vec<Arc<Rule>> = Vec::new();
        match obj.get("rules") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("alerts.rules[{i}]");
                    let rule = Rule::parse(item, &at)?;
                    check_notify(&rule, &channels, &at)?;
                    if rules
                        .iter()
                        .any(|r| r.name == rule.name && r.runs == rule.runs)
                    {
                        return Err(FieldError::new(
                            format!("{at}.name"),
                            format!("a rule named {:?} is already defined", rule.name),
                        ));
                    }
                    rules.push(Arc::new(rule));
                }
            }
            Some(_) => {
                return Err(FieldError::new(
                    "alerts.rules",
                    "a list of rules ([[alerts.rules]] tables)",
                ))
            }
        }
        if defaults {
            let mut all: Vec<Arc<Rule>> = default_rules()
                .into_iter()
                .filter(|d| !rules.iter().any(|r| r.name == d.name))
                .map(Arc::new)
                .collect();
            all.append(&mut rules);
            rules = all;
        }
        Ok(AlertConfig {
            defaults,
            rules,
            channels,
            base_url,
        })
    }

    /// The config's rules that apply to `run`, then the run's own (a run rule replaces a
    /// config rule of the same name).
    pub fn rules_for(&self, run: &str, own: &[Rule]) -> Vec<Arc<Rule>> {
        let mut out: Vec<Arc<Rule>> = Vec::with_capacity(self.rules.len() + own.len());
        for r in self.rules.iter().filter(|r| r.applies_to(run)) {
            // A prefix rule replaces a global one of the same name.
            out.retain(|o| o.name != r.name);
            out.push(r.clone());
        }
        for r in own {
            out.retain(|o| o.name != r.name);
            out.push(Arc::new(r.clone()));
        }
        out
    }

    /// A channel by name.
    pub fn channel(&self, name: &str) -> Option<&Arc<Channel>> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// The channels a rule notifies: its `notify` list, else every channel.
    pub fn channels_for(&self, rule: &Rule) -> Vec<Arc<Channel>> {
        match &rule.notify {
            Some(names) => names
                .iter()
                .filter_map(|n| self.channel(n).cloned())
                .collect(),
            None => self.channels.clone(),
        }
    }

    /// Checks a run's own rule (from a trainer or the API): the rule itself, and that it
    /// notifies only channels that exist; config-only fields are refused.
    pub fn check_run_rule(&self, v: &Value, at: &str) -> Result<Rule, FieldError> {
        let rule = Rule::parse(v, at)?;
        if rule.runs.is_some() {
            let field = if at.is_empty() {
                "runs".to_string()
            } else {
                format!("{at}.runs")
            };
            return Err(FieldError::new(
                field,
                "a run's own rule applies to that run: `runs` is for config rules",
            ));
        }
        check_notify(&rule, &self.channels, at)?;
        Ok(rule)
    }
}

fn check_notify(rule: &Rule, channels: &[Arc<Channel>], at: &str) -> Result<(), FieldError> {
    for (i, n) in rule.notify.iter().flatten().enumerate() {
        if !channels.iter().any(|c| &c.name == n) {
            let field = if at.is_empty() {
                format!("notify[{i}]")
            } else {
                format!("{at}.notify[{i}]")
            };
            let known: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
            return Err(FieldError::new(
                field,
                format!(
                    "no channel {n:?} (channels: {})",
                    if known.is_empty() {
                        "none configured".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

fn parse_channels(v: Option<&Value>) -> Result<Vec<Arc<Channel>>, FieldError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let obj = v.as_object().ok_or_else(|| {
        FieldError::new(
            "alerts.channels",
            "a table of channels ([alerts.channels.NAME])",
        )
    })?;
    let mut out = Vec::with_capacity(obj.len());
    for (name, c) in obj {
        let at = format!("alerts.channels.{name}");
        if !stepwatch_events::alerts::is_valid_name(name) {
            return Err(FieldError::new(
                at,
                "a channel name: 1 to 64 of A-Z a-z 0-9 _ . -",
            ));
        }
        out.push(Arc::new(Channel::parse(name, c, &at)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply_unless_replaced_or_off() {
        let c = AlertConfig::builtin();
        let names: Vec<_> = c.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["nan-loss", "stale", "failed", "alert"]);
        let c = AlertConfig::from_value(&json!({"rules": [
            {"name": "stale", "kind": "stale", "after_s": 60},
            {"name": "big", "kind": "above", "threshold": 5, "runs": "llama-"},
        ]}))
        .unwrap();
        let stale = c.rules.iter().find(|r| r.name == "stale").unwrap();
        assert_eq!(stale.after_s, Some(60.0));
        assert_eq!(c.rules_for("llama-1", &[]).len(), 5);
        assert_eq!(c.rules_for("gpt", &[]).len(), 4);
        let own = Rule::parse(
            &json!({"name": "nan-loss", "kind": "non_finite", "action": "pause"}),
            "",
        )
        .unwrap();
        let mine = c.rules_for("gpt", &[own]);
        assert_eq!(mine.len(), 4);
        assert!(mine
            .iter()
            .any(|r| r.name == "nan-loss" && r.action.is_some()));
        let off = AlertConfig::from_value(&json!({"defaults": false})).unwrap();
        assert!(off.rules.is_empty());
    }

    #[test]
    fn bad_fields_are_named() {
        let e = |v: Value| AlertConfig::from_value(&v).unwrap_err().field;
        assert_eq!(
            e(
                json!({"rules": [{"name": "a", "kind": "stale"}, {"name": "b", "kind": "spike", "window": -1}]})
            ),
            "alerts.rules[1].window"
        );
        assert_eq!(
            e(json!({"rules": [{"name": "a", "kind": "stale", "notify": ["nope"]}]})),
            "alerts.rules[0].notify[0]"
        );
        assert_eq!(
            e(json!({"rules": [{"name": "a", "kind": "stale"}, {"name": "a", "kind": "failed"}]})),
            "alerts.rules[1].name"
        );
        assert_eq!(e(json!({"colour": 1})), "alerts.colour");
        assert_eq!(e(json!({"defaults": "yes"})), "alerts.defaults");
        assert_eq!(e(json!({"base_url": "ftp://x"})), "alerts.base_url");
        assert_eq!(e(json!({"rules": {"name": "a"}})), "alerts.rules");
        let c = AlertConfig::builtin();
        let bad = c.check_run_rule(&json!({"name": "a", "kind": "stale", "runs": "x"}), "");
        assert_eq!(bad.unwrap_err().field, "runs");
    }
}
