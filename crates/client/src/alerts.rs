//! Alerts from the trainer (docs/ALERTS.md): [`Client::alert`] raises the trainer's own
//! alert, and [`crate::Options::alerts`] are the run's own rules, checked with the relay's
//! checker ([`Rule::parse`]) when the client is created and sent as `alert_rule` events.
//! Python's `stepwatch._alerts` is the same.

use crate::Client;
use stepwatch_events::alerts::records::MAX_RUN_RULES;
use stepwatch_events::alerts::{Level, Rule};
use stepwatch_events::event::{Alert, AlertRule};
use stepwatch_events::{EventBody, FieldError};

/// Titles are cut to this many characters.
pub const MAX_TITLE: usize = 200;

/// Checks every rule (all before any is sent); the first bad one names its field,
/// `alerts[1].window: …`.
pub(crate) fn check(rules: &[serde_json::Value]) -> Result<(), FieldError> {
    if rules.len() > MAX_RUN_RULES {
        return Err(FieldError::new(
            "alerts",
            format!("at most {MAX_RUN_RULES} rules, got {}", rules.len()),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        Rule::parse(rule, &format!("alerts[{i}]"))?;
    }
    Ok(())
}

/// A checked rule as the run's `alert_rule` event (sent as given).
pub(crate) fn rule_event(rule: serde_json::Value) -> EventBody {
    EventBody::AlertRule(AlertRule {
        rule: Some(rule),
        ..Default::default()
    })
}

/// The `alert` event: the level as trainers write it (`warn`, `critical`, …), an unknown
/// one as `warning`; the title cut to [`MAX_TITLE`] characters.
pub(crate) fn alert_event(title: &str, text: &str, level: &str) -> EventBody {
    let level = Level::parse(level).unwrap_or(Level::Warning);
    EventBody::Alert(Alert {
        title: Some(title.chars().take(MAX_TITLE).collect()),
        text: Some(text.to_string()),
        level: Some(level.as_str().to_string()),
        ..Default::default()
    })
}

impl Client {
    /// Raises the trainer's own alert (`alert`: `title`, `text`, `level` = `info`,
    /// `warning` or `error`; `warn`, `critical`, `fatal` too, anything else is sent as
    /// `warning`), queued like every event: never blocks, never fails. The relay's `event`
    /// rules fire on it.
    pub fn alert(&self, title: &str, text: &str, level: &str) {
        self.emit(alert_event(title, text, level));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn levels_are_read_as_trainers_write_them_and_titles_are_cut() {
        let level = |l: &str| match alert_event("t", "", l) {
            EventBody::Alert(a) => a.level.unwrap(),
            _ => unreachable!(),
        };
        assert_eq!(level("WARN"), "warning");
        assert_eq!(level("fatal"), "error");
        assert_eq!(level("info"), "info");
        assert_eq!(level("loud"), "warning");
        let EventBody::Alert(a) = alert_event(&"é".repeat(300), "x", "error") else {
            unreachable!()
        };
        assert_eq!(a.title.unwrap().chars().count(), MAX_TITLE);
    }

    #[test]
    fn the_first_bad_rule_is_named_with_its_place_in_the_list() {
        let good = json!({"name": "hi", "kind": "above", "threshold": 1});
        assert!(check(std::slice::from_ref(&good)).is_ok());
        let e = check(&[
            good.clone(),
            json!({"name": "s", "kind": "spike", "window": 1}),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "alerts[1].window: must be between 2 and 10000"
        );
        let many = vec![good; MAX_RUN_RULES + 1];
        assert_eq!(check(&many).unwrap_err().field, "alerts");
    }
}
