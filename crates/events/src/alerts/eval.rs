//! The evaluator: [`RunAlerts`] watches one run's events (in id order, each with the run's
//! state after it) and a clock, and says when a rule fires or resolves ([`Transition`]).
//!
//! It is a pure function of the stream and the clock, so relays that all see a run's
//! events decide the same transitions at the same event: each is written with
//! `src = "alert:<rule>"` and `seq` = the id of the event that decided it, and storage keeps
//! it once. A rule that fired does not fire again within its cooldown (counted, and said in
//! the next firing), so a flapping metric sends one notice, not one per flap.

use super::conditions::{
    beyond, custom, duration, ended, gpu_idle, idle_found, non_finite, plateau, spike, Found, Slot,
};
use super::rule::{Rule, RuleKind};
use crate::event::{AlertFired, AlertResolved, Event, EventBody};
use crate::records::RunStatus;
use crate::series::metric_values;
use crate::state::RunState;
use std::sync::Arc;

/// A rule fired or resolved, ready to be written as an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Fired {
        rule: Arc<Rule>,
        body: AlertFired,
    },
    Resolved {
        rule: Arc<Rule>,
        body: AlertResolved,
    },
}

impl Transition {
    /// The rule it belongs to.
    pub fn rule(&self) -> &Arc<Rule> {
        match self {
            Transition::Fired { rule, .. } | Transition::Resolved { rule, .. } => rule,
        }
    }

    /// The alert it is about.
    pub fn alert_id(&self) -> &str {
        match self {
            Transition::Fired { body, .. } => body.alert_id.as_deref().unwrap_or_default(),
            Transition::Resolved { body, .. } => body.alert_id.as_deref().unwrap_or_default(),
        }
    }

    /// The event to store: `src = "alert:<rule>"`, `seq` = the deciding event's id.
    pub fn to_event(&self, seq: u64) -> Event {
        let mut e = Event::new(match self {
            Transition::Fired { body, .. } => EventBody::AlertFired(body.clone()),
            Transition::Resolved { body, .. } => EventBody::AlertResolved(body.clone()),
        });
        e.src = Some(format!("alert:{}", self.rule().name));
        e.seq = Some(seq);
        e
    }
}

/// Where the run stands at an event: its step and status just after it, and the run's
/// state (after it, or after the batch it came in: only names, the last error and the
/// run's own rules are read from it).
#[derive(Clone, Copy)]
pub struct At<'a> {
    pub step: u64,
    pub status: RunStatus,
    pub state: &'a RunState,
}

impl<'a> At<'a> {
    /// `e` just applied to `state`.
    pub fn after(e: &Event, state: &'a RunState) -> Self {
        At {
            step: state.step_of(e),
            status: state.status,
            state,
        }
    }
}

struct RuleSlot {
    rule: Arc<Rule>,
    slot: Slot,
    /// The rule's metric as an index into `RunAlerts::watched` (`None` for `*`).
    metric: Option<usize>,
    /// The event name an `event` rule waits for.
    event: Option<String>,
}

impl RuleSlot {
    fn new(rule: Arc<Rule>, slot: Slot) -> Self {
        let event = (rule.kind == RuleKind::Event)
            .then(|| rule.event.clone().unwrap_or_else(|| "alert".into()));
        RuleSlot {
            rule,
            slot,
            metric: None,
            event,
        }
    }
}

/// One run's rules and their memory.
pub struct RunAlerts {
    run: String,
    slots: Vec<RuleSlot>,
    /// Id and relay time of the trainer's last event.
    last_trainer: Option<(u64, f64)>,
    status: RunStatus,
    /// Id of the last `system` event.
    last_system: u64,
    /// Metric names some rule reads; `any`: a rule reads every metric.
    watched: Vec<String>,
    any_metric: bool,
    /// Reused per event: (index in `watched`, value).
    hits: Vec<(usize, f64)>,
}

/// Events the relay writes, not the trainer: they do not keep a run from going stale.
fn from_relay(e: &Event) -> bool {
    matches!(
        e.body,
        EventBody::Command(_)
            | EventBody::AlertFired(_)
            | EventBody::AlertResolved(_)
            | EventBody::AlertDelivery(_)
            | EventBody::AlertRule(_)
    ) || matches!(&e.body, EventBody::RunMeta(m) if m.sender.is_some())
}

fn when(e: &Event) -> f64 {
    e.received.or(e.time).unwrap_or(0.0)
}

impl RunAlerts {
    /// A run's evaluator with these rules (the config's that apply, then the run's own).
    pub fn new(run: &str, rules: Vec<Arc<Rule>>) -> Self {
        let mut me = RunAlerts {
            run: run.to_string(),
            slots: rules
                .into_iter()
                .map(|rule| RuleSlot::new(rule, Slot::default()))
                .collect(),
            last_trainer: None,
            status: RunStatus::Pending,
            last_system: 0,
            watched: Vec::new(),
            any_metric: false,
            hits: Vec::new(),
        };
        me.watch();
        me
    }

    fn watch(&mut self) {
        self.watched = self
            .slots
            .iter()
            .filter_map(|s| s.rule.metric.clone())
            .collect();
        self.watched.sort();
        self.watched.dedup();
        self.any_metric = self.watched.iter().any(|m| m == "*");
        let watched = &self.watched;
        for s in &mut self.slots {
            let m = s.rule.metric.as_deref().unwrap_or("loss");
            s.metric = (m != "*")
                .then(|| watched.iter().position(|w| w == m))
                .flatten();
        }
    }

    /// The run.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The rules evaluated now.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.slots.iter().map(|s| &s.rule)
    }

    /// Replaces the rule set (a run rule was set or removed), keeping the memory of
    /// rules that did not change; a rule that goes while firing resolves.
    pub fn set_rules(&mut self, rules: Vec<Arc<Rule>>, trigger: u64, out: &mut Vec<Transition>) {
        let mut old: Vec<RuleSlot> = std::mem::take(&mut self.slots);
        for rule in rules {
            let slot = match old.iter().position(|s| *s.rule == *rule) {
                Some(i) => old.swap_remove(i).slot,
                None => Slot::default(),
            };
            self.slots.push(RuleSlot::new(rule, slot));
        }
        self.watch();
        for gone in old {
            if let Some(id) = gone.slot.firing {
                let changed = self.slots.iter().any(|s| s.rule.name == gone.rule.name);
                let text = if changed {
                    "the rule changed"
                } else {
                    "the rule was removed"
                };
                out.push(resolved(&gone.rule, id, text.into(), trigger));
            }
        }
    }

    /// Picks up after a restart: the run's state says which alerts are active and when
    /// each rule last fired; `recent` (its last events, oldest first) refills windows
    /// without deciding anything.
    pub fn restore(&mut self, s: &RunState, recent: &[Event]) {
        let mut sink = Vec::new();
        for e in recent {
            let at = At {
                step: s.step_of(e),
                status: s.status,
                state: s,
            };
            self.observe(e, at, &mut sink);
        }
        self.status = s.status;
        for rs in &mut self.slots {
            rs.slot.firing = if rs.rule.kind.is_sticky() {
                None
            } else {
                s.alerts
                    .active
                    .iter()
                    .find(|a| a.rule == rs.rule.name)
                    .map(|a| a.alert_id.clone())
            };
            rs.slot.last_fired = s
                .alerts
                .recent
                .iter()
                .rev()
                .find(|r| r.what == "fired" && r.rule == rs.rule.name)
                .and_then(|r| r.time);
            rs.slot.suppressed = 0;
        }
    }

    /// One event of the run (ids in order), with the run's state after it.
    pub fn observe(&mut self, e: &Event, at: At<'_>, out: &mut Vec<Transition>) {
        let id = e.id.unwrap_or(0);
        let now = when(e);
        let trainer = !from_relay(e);
        if trainer {
            self.last_trainer = Some((id, now));
        }
        if matches!(e.body, EventBody::System(_)) {
            self.last_system = id;
        }
        let was = std::mem::replace(&mut self.status, at.status);
        let step = at.step;
        // Values of the metrics some rule reads: names borrowed from `watched` or, for a
        // rule on every metric, from the event (no allocation per name).
        let mut hits = std::mem::take(&mut self.hits);
        let mut other: Vec<(&str, f64)> = Vec::new();
        if !self.watched.is_empty() {
            let (watched, any) = (&self.watched, self.any_metric);
            metric_values(e, |name, v| match watched.iter().position(|m| m == name) {
                Some(i) => hits.push((i, v)),
                None if any => other.push((name, v)),
                None => {}
            });
        }
        let mut values: Vec<(&str, f64)> = Vec::new();
        if !hits.is_empty() || !other.is_empty() {
            values.extend(hits.iter().map(|(i, v)| (self.watched[*i].as_str(), *v)));
            values.extend(other.iter().copied());
        }
        let changed = was != at.status;
        let system = matches!(e.body, EventBody::System(_));
        for rs in &mut self.slots {
            let rule = &rs.rule;
            let slot = &mut rs.slot;
            // Most events say nothing to most rules: those are skipped before their
            // kind's function is called (what each would have answered for them).
            let relevant = match rule.kind {
                RuleKind::NonFinite | RuleKind::Above | RuleKind::Below => match rs.metric {
                    Some(i) => hits.iter().any(|(h, _)| *h == i),
                    None => !values.is_empty(),
                },
                RuleKind::Spike | RuleKind::Plateau => match rs.metric {
                    Some(i) => hits.iter().any(|(h, _)| *h == i),
                    None => !values.is_empty(),
                },
                RuleKind::Stale => trainer && slot.firing.is_some(),
                RuleKind::Failed | RuleKind::Finished => changed,
                RuleKind::GpuIdle => {
                    system
                        || (at.status != RunStatus::Running
                            && (slot.low_since.is_some() || slot.firing.is_some()))
                }
                RuleKind::Event => rs.event.as_deref() == Some(e.name()),
            };
            if !relevant {
                continue;
            }
            let cond = match rule.kind {
                RuleKind::NonFinite => non_finite(rule, slot, &values, step),
                RuleKind::Above | RuleKind::Below => beyond(rule, slot, &values, step),
                RuleKind::Spike => spike(rule, slot, &values, step),
                RuleKind::Plateau => plateau(rule, slot, &values, step),
                RuleKind::Stale => trainer.then_some(None),
                RuleKind::Failed => ended(was, at, RunStatus::Failed),
                RuleKind::Finished => ended(was, at, RunStatus::Completed)
                    .or_else(|| ended(was, at, RunStatus::Stopped)),
                RuleKind::GpuIdle => gpu_idle(rule, slot, at.status, now, e),
                RuleKind::Event => custom(rule, e),
            };
            if let Some(found) = cond {
                decide(rule, slot, found, now, id, Some(step), out);
            }
        }
        drop(values);
        hits.clear();
        self.hits = hits;
    }

    /// The clock: silence and idle GPUs are noticed without an event.
    pub fn tick(&mut self, now: f64, s: &RunState, out: &mut Vec<Transition>) {
        // A paused run waits for a person; its trainer may well be silent meanwhile.
        let live = matches!(s.status, RunStatus::Running | RunStatus::Pending);
        for i in 0..self.slots.len() {
            let rule = self.slots[i].rule.clone();
            let slot = &mut self.slots[i].slot;
            match rule.kind {
                RuleKind::Stale => {
                    let Some((id, last)) = self.last_trainer else {
                        continue;
                    };
                    let after = rule.after_s.unwrap_or(super::rule::DEFAULT_AFTER_S);
                    if live && now - last >= after && slot.firing.is_none() {
                        let found = Found {
                            title: format!("no events for {}", duration(now - last)),
                            text: format!(
                                "the trainer has sent nothing for {} (its last event is #{id}); \
                                 it may have died or hung",
                                duration(now - last)
                            ),
                            metric: None,
                            value: Some((now - last).round()),
                            level: None,
                        };
                        decide(&rule, slot, Some(found), now, id, Some(s.step), out);
                    }
                }
                RuleKind::GpuIdle => {
                    if let Some((since, gpu)) = slot.low_since {
                        let after = rule.after_s.unwrap_or(super::rule::DEFAULT_AFTER_S);
                        if s.status == RunStatus::Running
                            && now - since >= after
                            && slot.firing.is_none()
                        {
                            let found = idle_found(&rule, gpu, now - since);
                            decide(&rule, slot, Some(found), now, self.last_system, None, out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn resolved(rule: &Arc<Rule>, alert_id: String, text: String, _trigger: u64) -> Transition {
    Transition::Resolved {
        rule: rule.clone(),
        body: AlertResolved {
            alert_id: Some(alert_id),
            rule: Some(rule.name.clone()),
            text: Some(text),
            ..Default::default()
        },
    }
}

/// The condition's verdict at event `id`: fire (unless cooling down), resolve, or nothing.
fn decide(
    rule: &Arc<Rule>,
    slot: &mut Slot,
    found: Option<Found>,
    now: f64,
    id: u64,
    step: Option<u64>,
    out: &mut Vec<Transition>,
) {
    let sticky = rule.kind.is_sticky();
    let Some(found) = found else {
        if let Some(alert_id) = slot.firing.take() {
            let m = rule.metric.as_deref().unwrap_or("loss");
            let bound = rule.threshold.map(super::rule::fmt_num).unwrap_or_default();
            let text = match rule.kind {
                RuleKind::Stale => "the trainer is sending events again".to_string(),
                RuleKind::GpuIdle => "the GPU is busy again, or the run stopped running".into(),
                RuleKind::NonFinite => format!("{m} is finite again"),
                RuleKind::Above => format!("{m} is back at or below {bound}"),
                RuleKind::Below => format!("{m} is back at or above {bound}"),
                RuleKind::Spike => format!("{m} is back under the spike bound"),
                RuleKind::Plateau => format!("{m} improved"),
                _ => format!("{} no longer holds", rule.describe()),
            };
            out.push(resolved(rule, alert_id, text, id));
        }
        return;
    };
    if slot.firing.is_some() && !sticky {
        return;
    }
    if slot
        .last_fired
        .is_some_and(|t| now - t < rule.cooldown_s && now >= t)
    {
        slot.suppressed += 1;
        return;
    }
    let alert_id = format!("{}#{id}", rule.name);
    if !sticky {
        slot.firing = Some(alert_id.clone());
    }
    slot.last_fired = Some(now);
    let suppressed = std::mem::take(&mut slot.suppressed);
    out.push(Transition::Fired {
        rule: rule.clone(),
        body: AlertFired {
            alert_id: Some(alert_id),
            rule: Some(rule.name.clone()),
            kind: Some(rule.kind.as_str().into()),
            level: Some(found.level.unwrap_or(rule.level).as_str().into()),
            title: Some(found.title),
            text: Some(found.text),
            metric: found.metric,
            value: found.value,
            step,
            trigger_id: Some(id),
            action: rule.action.map(|a| a.command().to_string()),
            channels: None,
            suppressed: (suppressed > 0).then_some(suppressed),
            sticky: sticky.then_some(true),
            ..Default::default()
        },
    });
}
