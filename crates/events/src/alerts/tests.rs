#![allow(clippy::unwrap_used)]
use super::*;
use crate::alerts::eval::At;
use crate::{Event, EventBody, RunState};
use serde_json::{json, Value};
use std::sync::Arc;

/// A run fed event by event, with relay ids and receive times.
struct Feed {
    state: RunState,
    alerts: RunAlerts,
    next: u64,
    clock: f64,
    out: Vec<Transition>,
}

impl Feed {
    fn new(rules: &[Value]) -> Self {
        let rules = rules
            .iter()
            .map(|v| Arc::new(Rule::parse(v, "").unwrap()))
            .collect();
        Feed {
            state: RunState::new("r"),
            alerts: RunAlerts::new("r", rules),
            next: 1,
            clock: 1000.0,
            out: Vec::new(),
        }
    }

    /// Applies an event `dt` seconds after the last; returns what it decided.
    fn send(&mut self, v: Value, dt: f64) -> Vec<Transition> {
        self.clock += dt;
        let mut e = Event::from_value(v).unwrap();
        e.id = Some(self.next);
        e.received = Some(self.clock);
        self.next += 1;
        self.state.apply(&e);
        let mut out = Vec::new();
        self.alerts
            .observe(&e, At::after(&e, &self.state), &mut out);
        // Records go back into the stream, as the relay writes them.
        for t in &out {
            let mut rec = t.to_event(e.id.unwrap());
            rec.id = Some(self.next);
            rec.received = Some(self.clock);
            self.next += 1;
            self.state.apply(&rec);
            self.alerts
                .observe(&rec, At::after(&rec, &self.state), &mut Vec::new());
        }
        self.out.extend(out.iter().cloned());
        out
    }

    fn loss(&mut self, x: Value) -> Vec<Transition> {
        self.send(json!({"event": "batch_end", "loss": x}), 1.0)
    }

    fn tick(&mut self, dt: f64) -> Vec<Transition> {
        self.clock += dt;
        let mut out = Vec::new();
        self.alerts.tick(self.clock, &self.state, &mut out);
        self.out.extend(out.iter().cloned());
        out
    }
}

fn fired(t: &[Transition]) -> usize {
    t.iter()
        .filter(|t| matches!(t, Transition::Fired { .. }))
        .count()
}

fn resolved(t: &[Transition]) -> usize {
    t.iter()
        .filter(|t| matches!(t, Transition::Resolved { .. }))
        .count()
}

#[test]
fn a_nan_loss_fires_once_and_resolves_when_finite_again() {
    let mut f = Feed::new(&[json!({"name": "nan", "kind": "non_finite"})]);
    f.send(json!({"event": "training_start"}), 0.0);
    assert!(f.loss(json!(1.0)).is_empty());
    let t = f.loss(json!("NaN"));
    assert_eq!(fired(&t), 1);
    let Transition::Fired { body, .. } = &t[0] else {
        unreachable!()
    };
    assert_eq!(body.alert_id.as_deref(), Some("nan#3"));
    assert_eq!(body.title.as_deref(), Some("loss is NaN"));
    assert_eq!(body.step, Some(2));
    assert_eq!(body.level.as_deref(), Some("error"));
    assert!(
        f.loss(json!("NaN")).is_empty(),
        "still firing: no second alert"
    );
    assert_eq!(f.state.alerts.active.len(), 1);
    assert_eq!(f.state.summary().alerts_active, 1);
    let t = f.loss(json!(0.5));
    assert_eq!(resolved(&t), 1);
    assert!(f.state.alerts.active.is_empty());
    assert_eq!(f.state.alerts.fired, 1);
    // The record is written with the rule's source and the deciding event as seq.
    let e = t[0].to_event(9);
    assert_eq!((e.src.as_deref(), e.seq), (Some("alert:nan"), Some(9)));
}

#[test]
fn a_flapping_metric_fires_once_per_cooldown_and_counts_the_rest() {
    let mut f = Feed::new(&[json!({"name": "nan", "kind": "non_finite", "cooldown_s": 60})]);
    for i in 0..40 {
        f.loss(if i % 2 == 0 { json!("NaN") } else { json!(1.0) });
    }
    assert_eq!(fired(&f.out), 1, "{:?}", f.out);
    assert_eq!(resolved(&f.out), 1);
    // After the cooldown the next NaN fires again and says how many were held back.
    let t = f.send(json!({"event": "batch_end", "loss": "NaN"}), 61.0);
    let Transition::Fired { body, .. } = &t[0] else {
        panic!("{t:?}")
    };
    assert_eq!(body.suppressed, Some(19));
}

#[test]
fn above_needs_its_count_of_points_in_a_row() {
    let mut f = Feed::new(&[json!({"name": "hi", "kind": "above", "threshold": 10, "for": 3})]);
    f.loss(json!(11));
    f.loss(json!(12));
    f.loss(json!(5)); // back inside: the count restarts
    f.loss(json!(11));
    f.loss(json!(11));
    assert!(f.out.is_empty());
    let t = f.loss(json!(13));
    assert_eq!(fired(&t), 1);
    let Transition::Fired { body, .. } = &t[0] else {
        unreachable!()
    };
    assert_eq!(body.value, Some(13.0));
    assert_eq!(resolved(&f.loss(json!(9))), 1);
    let mut below =
        Feed::new(&[json!({"name": "lo", "kind": "below", "metric": "acc", "threshold": 0.5})]);
    below.send(
        json!({"event": "metric_update", "name": "acc", "value": 0.4}),
        1.0,
    );
    assert_eq!(fired(&below.out), 1);
}

#[test]
fn a_spike_is_measured_against_the_values_before_it() {
    let mut f = Feed::new(&[json!({"name": "sp", "kind": "spike", "window": 5, "factor": 3})]);
    for _ in 0..5 {
        f.loss(json!(1.0));
    }
    assert!(f.loss(json!(2.5)).is_empty());
    assert_eq!(fired(&f.loss(json!(10.0))), 1);
    assert_eq!(resolved(&f.loss(json!(1.0))), 1);
}

#[test]
fn a_plateau_fires_after_its_window_without_improvement() {
    let mut f =
        Feed::new(&[json!({"name": "pl", "kind": "plateau", "window": 10, "min_delta_pct": 10})]);
    f.send(json!({"event": "batch_end", "loss": 1.0, "step": 0}), 1.0);
    f.send(json!({"event": "batch_end", "loss": 0.95, "step": 5}), 1.0); // under 10 %: no improvement
    assert!(f.out.is_empty());
    let t = f.send(json!({"event": "batch_end", "loss": 0.97, "step": 10}), 1.0);
    assert_eq!(fired(&t), 1);
    let t = f.send(json!({"event": "batch_end", "loss": 0.5, "step": 11}), 1.0);
    assert_eq!(resolved(&t), 1);
}

#[test]
fn silence_fires_on_the_clock_and_the_next_event_resolves_it() {
    let mut f = Feed::new(&[json!({"name": "stale", "kind": "stale", "after_s": 30})]);
    f.send(json!({"event": "training_start"}), 0.0);
    f.loss(json!(1.0));
    assert!(f.tick(29.0).is_empty());
    let t = f.tick(2.0);
    assert_eq!(fired(&t), 1);
    let Transition::Fired { body, .. } = &t[0] else {
        unreachable!()
    };
    // Decided by the last trainer event: every relay picks the same id.
    assert_eq!(body.trigger_id, Some(2));
    assert!(f.tick(100.0).is_empty(), "still silent: nothing new");
    // A dashboard command is not the trainer speaking.
    assert!(f
        .send(
            json!({"event": "command", "command": "pause", "command_id": "c"}),
            1.0
        )
        .is_empty());
    assert_eq!(resolved(&f.loss(json!(1.0))), 1);
    // A run that ended is not stale.
    let mut g = Feed::new(&[json!({"name": "stale", "kind": "stale", "after_s": 30})]);
    g.send(json!({"event": "training_start"}), 0.0);
    g.send(json!({"event": "training_end"}), 1.0);
    assert!(g.tick(100.0).is_empty());
}

#[test]
fn failed_finished_and_custom_events_fire_sticky_alerts() {
    let mut f = Feed::new(&[
        json!({"name": "failed", "kind": "failed"}),
        json!({"name": "done", "kind": "finished"}),
        json!({"name": "mine", "kind": "event"}),
    ]);
    f.send(json!({"event": "training_start"}), 0.0);
    let t = f.send(
        json!({"event": "alert", "title": "eval dropped", "text": "acc 0.2", "level": "error"}),
        1.0,
    );
    let Transition::Fired { body, .. } = &t[0] else {
        panic!("{t:?}")
    };
    assert_eq!(body.title.as_deref(), Some("eval dropped"));
    assert_eq!(body.level.as_deref(), Some("error"));
    assert_eq!(body.sticky, Some(true));
    let t = f.send(
        json!({"event": "error_occurred", "message": "CUDA OOM", "fatal": true}),
        1.0,
    );
    assert_eq!(fired(&t), 1);
    let Transition::Fired { body, .. } = &t[0] else {
        unreachable!()
    };
    assert_eq!(body.text.as_deref(), Some("CUDA OOM"));
    assert_eq!(
        f.state.alerts.active.len(),
        2,
        "sticky: both stay until dismissed"
    );
    assert!(f
        .send(json!({"event": "training_end", "status": "failed"}), 1.0)
        .is_empty());
}

#[test]
fn an_idle_gpu_fires_while_running_only() {
    let mut f =
        Feed::new(&[json!({"name": "idle", "kind": "gpu_idle", "after_s": 60, "below_pct": 10})]);
    let sys = |u: f64| json!({"event": "system", "gpus": [{"index": 0, "util_percent": 95.0}, {"index": 1, "util_percent": u}]});
    f.send(json!({"event": "training_start"}), 0.0);
    f.send(sys(2.0), 1.0);
    f.send(sys(3.0), 30.0);
    assert!(f.out.is_empty());
    let t = f.tick(31.0);
    assert_eq!(fired(&t), 1);
    let Transition::Fired { body, .. } = &t[0] else {
        unreachable!()
    };
    assert_eq!(body.title.as_deref(), Some("GPU 1 idle"));
    assert_eq!(resolved(&f.send(sys(80.0), 1.0)), 1);
}

#[test]
fn a_removed_rule_resolves_its_alert_and_a_run_rule_joins() {
    let mut f = Feed::new(&[json!({"name": "nan", "kind": "non_finite"})]);
    f.loss(json!("NaN"));
    let mut out = Vec::new();
    f.alerts.set_rules(Vec::new(), 5, &mut out);
    assert_eq!(resolved(&out), 1);
    let rule =
        Arc::new(Rule::parse(&json!({"name": "hi", "kind": "above", "threshold": 1}), "").unwrap());
    f.alerts.set_rules(vec![rule], 6, &mut out);
    assert_eq!(fired(&f.loss(json!(2))), 1);
    // The reducer keeps the run's own rules from alert_rule events.
    f.send(
        json!({"event": "alert_rule", "rule": {"name": "x", "kind": "stale"}, "sender": "ana"}),
        0.0,
    );
    f.send(
        json!({"event": "alert_rule", "rule": {"name": "y", "kind": "failed"}}),
        0.0,
    );
    f.send(
        json!({"event": "alert_rule", "rule": {"name": "x"}, "removed": true}),
        0.0,
    );
    let names: Vec<_> = f
        .state
        .alerts
        .rules
        .iter()
        .map(|r| r.rule.name.as_str())
        .collect();
    assert_eq!(names, ["y"]);
}

#[test]
fn two_evaluators_of_the_same_stream_decide_the_same() {
    let rules = [
        json!({"name": "nan", "kind": "non_finite", "cooldown_s": 5}),
        json!({"name": "sp", "kind": "spike", "window": 4}),
        json!({"name": "hi", "kind": "above", "threshold": 3, "for": 2}),
    ];
    let mut a = Feed::new(&rules);
    let mut b = Feed::new(&rules);
    let xs = [
        1.0,
        1.2,
        0.9,
        1.1,
        5.0,
        4.0,
        f64::NAN,
        1.0,
        f64::NAN,
        1.0,
        1.0,
        9.0,
        8.0,
        1.0,
    ];
    for x in xs {
        let v = if x.is_nan() { json!("NaN") } else { json!(x) };
        a.loss(v.clone());
        b.loss(v);
    }
    assert!(fired(&a.out) >= 3);
    let wire =
        |f: &Feed| -> Vec<String> { f.out.iter().map(|t| t.to_event(0).to_json()).collect() };
    assert_eq!(wire(&a), wire(&b));
}

#[test]
fn a_restored_evaluator_does_not_fire_again_for_an_active_alert() {
    let rules = [json!({"name": "nan", "kind": "non_finite"})];
    let mut f = Feed::new(&rules);
    f.loss(json!(1.0));
    f.loss(json!("NaN"));
    assert_eq!(f.state.alerts.active.len(), 1);
    // A new relay process: same rules, state from storage.
    let mut g = Feed::new(&rules);
    g.state = f.state.clone();
    g.next = f.next;
    g.clock = f.clock;
    g.alerts.restore(&f.state, &[]);
    assert!(g.loss(json!("NaN")).is_empty());
    assert_eq!(resolved(&g.loss(json!(1.0))), 1);
    let json = serde_json::to_value(&g.state).unwrap();
    let back: RunState = serde_json::from_value(json).unwrap();
    assert_eq!(back.alerts, g.state.alerts);
}

#[test]
fn alert_events_round_trip_on_the_wire() {
    let e = Event::from_value(json!({
        "event": "alert_delivery", "alert_id": "nan#3", "channel": "ops", "ok": false,
        "error": "HTTP 500", "attempt": 2, "last_attempt": false
    }))
    .unwrap();
    assert!(matches!(e.body, EventBody::AlertDelivery(_)));
    assert_eq!(Event::from_json(&e.to_json()).unwrap(), e);
    let bad = Event::from_value(json!({"event": "alert_fired", "value": "high"}));
    assert!(bad.is_err());
}

#[test]
fn notices_that_never_went_are_found_after_a_restart() {
    let mut f = Feed::new(&[json!({"name": "nan", "kind": "non_finite"})]);
    let t = f.loss(json!("NaN"));
    let Transition::Fired { body, .. } = &t[0] else {
        unreachable!()
    };
    assert_eq!(body.alert_id.as_deref(), Some("nan#1"));
    // The relay recorded the firing to two channels, then one failed attempt to "a" and
    // a success to "b", and stopped.
    let mut s = RunState::new("r");
    let fired = json!({"event": "alert_fired", "id": 2, "received": 10.0, "alert_id": "nan#1",
        "rule": "nan", "channels": ["a", "b"]});
    s.apply(&Event::from_value(fired).unwrap());
    for (ch, ok) in [("a", false), ("b", true)] {
        let d = json!({"event": "alert_delivery", "alert_id": "nan#1", "channel": ch, "ok": ok, "attempt": 1});
        s.apply(&Event::from_value(d).unwrap());
    }
    let left: Vec<_> = s
        .alerts
        .undelivered(0.0, 5)
        .into_iter()
        .map(|(a, ch, made)| (a.alert_id.clone(), ch.to_string(), made))
        .collect();
    assert_eq!(left, [("nan#1".to_string(), "a".to_string(), 1)]);
    assert!(s.alerts.delivered("nan#1", "b"));
    assert!(!s.alerts.delivered("nan#1", "a"));
    assert!(
        s.alerts.undelivered(11.0, 5).is_empty(),
        "older than the window"
    );
}
