//! The alerts panel's plain parts: the add-rule form's fields turned into a rule's JSON
//! and checked with the relay's own [`Rule::parse`], the rules the relay lists, and the
//! banner's last good checkpoint. No Leptos here: native tests cover it.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use stepwatch_events::alerts::Rule;
use stepwatch_events::{Checkpoint, FieldError};

/// The fields the form offers for `kind` beyond name, kind, level and action.
pub fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "non_finite" => &["metric"],
        "above" | "below" => &["metric", "threshold", "for"],
        "spike" => &["metric", "factor", "window"],
        "plateau" => &["metric", "window", "min_delta_pct"],
        "stale" => &["after_s"],
        "gpu_idle" => &["after_s", "below_pct"],
        "event" => &["event"],
        _ => &[],
    }
}

/// Fields typed as numbers.
const NUMERIC: [&str; 7] = [
    "threshold",
    "for",
    "factor",
    "window",
    "min_delta_pct",
    "after_s",
    "below_pct",
];

/// The form's text, by wire field name (`name`, `kind`, `threshold`, …).
pub type FormText = BTreeMap<String, String>;

/// The rule JSON the form says: empty fields left out (the rule's defaults apply), only
/// the fields the kind reads, numbers as numbers (whole ones as integers). A number
/// that does not read as one is refused here, naming its field (`not_number` is the
/// message, in the UI language).
pub fn rule_json(form: &FormText, not_number: &str) -> Result<Value, FieldError> {
    let get = |k: &str| form.get(k).map(|s| s.trim()).unwrap_or_default();
    let kind = get("kind");
    let mut obj = Map::new();
    let fields = ["name", "kind", "level", "action"];
    for k in fields.iter().chain(kind_fields(kind)) {
        let text = get(k);
        if text.is_empty() {
            continue;
        }
        let v = if NUMERIC.contains(k) {
            let x: f64 = crate::model::parse_f64(text)
                .filter(|x: &f64| x.is_finite())
                .ok_or_else(|| FieldError::new(*k, not_number))?;
            if x.fract() == 0.0 && x.abs() < 9e15 {
                Value::from(x as i64)
            } else {
                Value::from(x)
            }
        } else {
            Value::String(text.to_string())
        };
        obj.insert((*k).to_string(), v);
    }
    Ok(Value::Object(obj))
}

/// The form checked as the relay will check it: the rule's JSON, or the field at fault.
pub fn check(form: &FormText, not_number: &str) -> Result<Value, FieldError> {
    let v = rule_json(form, not_number)?;
    Rule::parse(&v, "")?;
    Ok(v)
}

/// Where a rule comes from: the config, or the run itself (trainer or dashboard).
#[derive(Debug, Clone, PartialEq)]
pub struct ListedRule {
    pub rule: Rule,
    /// `config` or `run`.
    pub source: String,
}

/// The rules of `GET /api/runs/{run}/alerts` (`{"rules": [Rule + "source"], …}`); rules
/// that do not parse are left out.
pub fn listed_rules(answer: &Value) -> Vec<ListedRule> {
    let Some(items) = answer.get("rules").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let mut obj = item.as_object()?.clone();
            let source = obj
                .remove("source")
                .and_then(|s| s.as_str().map(str::to_string))
                .unwrap_or_else(|| "config".into());
            let rule = Rule::parse(&Value::Object(obj), "").ok()?;
            Some(ListedRule { rule, source })
        })
        .collect()
}

/// The last good checkpoint before an alert at `step` (or time `since`): the newest
/// saved at or before it, by step where both have one, else by time.
pub fn last_good(cps: &[Checkpoint], step: Option<u64>, since: Option<f64>) -> Option<&Checkpoint> {
    let before = |c: &&Checkpoint| match (c.step, step, c.time, since) {
        (Some(a), Some(b), _, _) => a <= b,
        (_, _, Some(a), Some(b)) => a <= b,
        _ => false,
    };
    cps.iter().filter(before).max_by(|a, b| {
        a.step
            .cmp(&b.step)
            .then(a.time.unwrap_or(0.0).total_cmp(&b.time.unwrap_or(0.0)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(pairs: &[(&str, &str)]) -> FormText {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_form_builds_only_what_the_kind_reads() {
        let f = form(&[
            ("name", "loss-high"),
            ("kind", "above"),
            ("metric", "loss"),
            ("threshold", "10"),
            ("for", "3"),
            ("factor", "9"),
            ("action", "pause"),
            ("level", ""),
        ]);
        let v = check(&f, "nan").unwrap();
        assert_eq!(
            v,
            json!({"name": "loss-high", "kind": "above", "metric": "loss", "threshold": 10, "for": 3, "action": "pause"})
        );
    }

    #[test]
    fn bad_fields_are_named_as_the_relay_names_them() {
        let e = check(&form(&[("name", "x"), ("kind", "above")]), "nan").unwrap_err();
        assert_eq!(e.field, "threshold");
        let e = check(
            &form(&[("name", "x"), ("kind", "spike"), ("window", "1")]),
            "nan",
        )
        .unwrap_err();
        assert_eq!(e.field, "window");
        let e = check(
            &form(&[
                ("name", "x"),
                ("kind", "above"),
                ("for", "2.5"),
                ("threshold", "1"),
            ]),
            "nan",
        )
        .unwrap_err();
        assert_eq!(e.field, "for");
        let e = check(
            &form(&[("name", "x"), ("kind", "stale"), ("after_s", "soon")]),
            "not a number",
        )
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("after_s", "not a number")
        );
        let e = check(&form(&[("name", "bad name"), ("kind", "stale")]), "n").unwrap_err();
        assert_eq!(e.field, "name");
        let e = check(&form(&[("name", "x")]), "n").unwrap_err();
        assert_eq!(e.field, "kind");
    }

    #[test]
    fn listed_rules_keep_their_source() {
        let answer = json!({"rules": [
            {"name": "nan-loss", "kind": "non_finite", "metric": "loss", "level": "error", "cooldown_s": 300.0, "source": "config"},
            {"name": "mine", "kind": "stale", "after_s": 60, "source": "run"},
            {"name": "broken", "kind": "nope", "source": "run"}
        ], "active": [], "history": []});
        let rules = listed_rules(&answer);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].rule.name, "mine");
        assert_eq!(rules[1].source, "run");
        assert!(listed_rules(&json!({})).is_empty());
    }

    fn cp(path: &str, step: Option<u64>, time: f64) -> Checkpoint {
        Checkpoint {
            path: path.into(),
            step,
            time: Some(time),
            ..Default::default()
        }
    }

    #[test]
    fn the_last_good_checkpoint_is_the_newest_at_or_before_the_alert() {
        let cps = [
            cp("a", Some(100), 1.0),
            cp("c", Some(300), 3.0),
            cp("b", Some(200), 2.0),
        ];
        assert_eq!(last_good(&cps, Some(250), None).unwrap().path, "b");
        assert_eq!(last_good(&cps, Some(300), None).unwrap().path, "c");
        assert!(last_good(&cps, Some(50), None).is_none());
        // No step on the alert: by time.
        assert_eq!(last_good(&cps, None, Some(1.5)).unwrap().path, "a");
        assert!(last_good(&cps, None, None).is_none());
        assert!(last_good(&[], Some(5), None).is_none());
    }
}
