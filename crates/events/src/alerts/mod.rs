//! Alerts: rules the relay evaluates on every run (docs/ALERTS.md).
//!
//! - [`rule`]: [`Rule`], checked field by field from JSON ([`Rule::parse`]), the kinds, levels
//!   and actions, and the default rules;
//! - [`eval`]: [`RunAlerts`], one run's evaluator: events and a clock in, [`Transition`]s
//!   (fired, resolved) out, deterministic so several relays decide the same;
//! - `conditions`: what each rule kind looks for, one function per kind;
//! - [`records`]: [`AlertsState`], what the run-state reducer keeps (active alerts, history,
//!   counts, the run's own rules).

pub mod conditions;
pub mod eval;
pub mod records;
pub mod rule;

pub use conditions::{duration, show as show_value};
pub use eval::{At, RunAlerts, Transition};
pub use records::{ActiveAlert, AlertRecord, AlertsState, RunRule};
pub use rule::{default_rules, is_valid_name, Action, Level, Rule, RuleKind, RULE_KINDS};

#[cfg(test)]
mod tests;
