//! The alert-rule cases of `tests/alert_rules.json`, shared with the Python SDK's checker
//! (`clients/python/tests/test_alerts.py`, `stepwatch.check_rule`): each rule is accepted,
//! or refused naming the same field, by both, so the two checkers cannot drift.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::PathBuf;
use stepwatch_events::alerts::Rule;

fn cases() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/alert_rules.json");
    let text = std::fs::read_to_string(path).unwrap();
    let Value::Array(cases) = serde_json::from_str(&text).unwrap() else {
        panic!("alert_rules.json is a list of cases");
    };
    assert!(cases.len() >= 20, "cases missing: {}", cases.len());
    cases
}

#[test]
fn every_case_is_accepted_or_refused_naming_its_field() {
    for case in cases() {
        let rule = &case["rule"];
        let got = Rule::parse(rule, "");
        match case["field"].as_str() {
            None => {
                assert_eq!(
                    case["ok"],
                    Value::Bool(true),
                    "a case is ok or names a field"
                );
                let parsed = got.unwrap_or_else(|e| panic!("{rule} refused: {e}"));
                // What it reads back as is the same rule.
                assert_eq!(Rule::parse(&parsed.to_value(), "").unwrap(), parsed);
            }
            Some(field) => {
                let e = got.err().unwrap_or_else(|| panic!("{rule} accepted"));
                assert_eq!(e.field, field, "{rule}: {e}");
                assert!(!e.message.is_empty());
            }
        }
    }
}

#[test]
fn the_prefix_names_the_rule_in_a_list() {
    for case in cases() {
        let Some(field) = case["field"].as_str() else {
            continue;
        };
        let e = Rule::parse(&case["rule"], "alerts[3]").unwrap_err();
        let want = if field == "rule" {
            "alerts[3]".to_string()
        } else {
            format!("alerts[3].{field}")
        };
        assert_eq!(e.field, want);
    }
}
