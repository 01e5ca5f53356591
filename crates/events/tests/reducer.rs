//! The reducer: step derivation, best loss, NaN, status transitions, serialisation.
#![allow(clippy::unwrap_used)]

use stepwatch_events::{Event, RunState, RunStatus};

fn ev(json: &str) -> Event {
    Event::from_json(json).unwrap()
}

#[test]
fn step_is_counted_when_absent() {
    let mut s = RunState::new("r");
    for i in 0..5 {
        s.apply(&ev(&format!(
            r#"{{"event":"batch_end","batch_idx":{i},"loss":1.0}}"#
        )));
    }
    assert_eq!(s.step, 5);
    assert_eq!(s.current_batch, 4);
    s.apply(&ev(r#"{"event":"batch_end","step":100,"loss":1.0}"#));
    assert_eq!(s.step, 100);
}

#[test]
fn best_loss_ignores_nan_but_flags_it() {
    let mut s = RunState::new("r");
    s.apply(&ev(r#"{"event":"batch_end","loss":3.0}"#));
    s.apply(&ev(r#"{"event":"batch_end","loss":1.5}"#));
    s.apply(&ev(r#"{"event":"batch_end","loss":"NaN"}"#));
    assert_eq!(s.best_loss, Some(1.5));
    assert_eq!(s.best_step, Some(2));
    assert!(s.current_loss.unwrap().is_nan());
    assert!(s.loss_non_finite);
    assert_eq!(s.avg_loss, Some(2.25));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["current_loss"], "NaN", "NaN must not become null or 0");
    let back: RunState = serde_json::from_value(json).unwrap();
    assert!(back.current_loss.unwrap().is_nan());
}

#[test]
fn status_follows_the_run() {
    let mut s = RunState::new("r");
    assert_eq!(s.status, RunStatus::Pending);
    s.apply(&ev(r#"{"event":"training_start","total_epochs":2}"#));
    assert_eq!(s.status, RunStatus::Running);
    s.apply(&ev(r#"{"event":"training_end","status":"stopped"}"#));
    assert_eq!(s.status, RunStatus::Stopped);
    assert!(!s.is_training);

    let mut f = RunState::new("f");
    f.apply(&ev(r#"{"event":"training_start"}"#));
    f.apply(&ev(
        r#"{"event":"error_occurred","message":"boom","fatal":true}"#,
    ));
    assert_eq!(f.status, RunStatus::Failed);

    let mut n = RunState::new("n");
    n.apply(&ev(r#"{"event":"training_start"}"#));
    n.apply(&ev(r#"{"event":"error_occurred","message":"warn"}"#));
    assert_eq!(
        n.status,
        RunStatus::Running,
        "non-fatal errors do not end a run"
    );
}

#[test]
fn epoch_start_resets_the_epoch_average() {
    let mut s = RunState::new("r");
    s.apply(&ev(r#"{"event":"epoch_start","epoch":1}"#));
    s.apply(&ev(r#"{"event":"batch_end","loss":4.0}"#));
    s.apply(&ev(r#"{"event":"epoch_start","epoch":2}"#));
    s.apply(&ev(r#"{"event":"batch_end","loss":2.0}"#));
    assert_eq!(s.avg_loss, Some(2.0));
    assert_eq!(s.current_epoch, 2);
}

#[test]
fn best_checkpoint_prefers_lowest_val_loss() {
    let mut s = RunState::new("r");
    s.apply(&ev(
        r#"{"event":"checkpoint_saved","checkpoint_path":"a.pt","metrics":{"val_loss":2.0}}"#,
    ));
    s.apply(&ev(
        r#"{"event":"checkpoint_saved","checkpoint_path":"b.pt","metrics":{"val_loss":1.0}}"#,
    ));
    s.apply(&ev(
        r#"{"event":"checkpoint_saved","checkpoint_path":"c.pt","metrics":{"val_loss":3.0}}"#,
    ));
    assert_eq!(s.best_checkpoint().unwrap().path, "b.pt");
}

#[test]
fn summary_carries_progress() {
    let mut s = RunState::new("r");
    s.apply(&ev(
        r#"{"event":"training_start","total_epochs":10,"total_batches":50,"name":"demo"}"#,
    ));
    s.apply(&ev(
        r#"{"id":1,"event":"batch_end","batch_idx":7,"epoch":2,"loss":0.5}"#,
    ));
    let sum = s.summary();
    assert_eq!(sum.name, "demo");
    assert_eq!(sum.current_epoch, 2);
    assert_eq!(sum.current_batch, 7);
    assert_eq!(sum.current_loss, Some(0.5));
    assert_eq!(sum.last_id, 1);
}

#[test]
fn commands_follow_the_trainers_answers() {
    let mut s = RunState::new("r");
    s.apply(&ev(r#"{"event":"training_start"}"#));
    s.apply(&ev(
        r#"{"event":"command","command_id":"c1","command":"pause"}"#,
    ));
    assert_eq!(s.status, RunStatus::Running, "a click alone does not pause");
    assert_eq!(s.open_commands().count(), 1);
    s.apply(&ev(
        r#"{"event":"command_ack","command_id":"c1","status":"accepted"}"#,
    ));
    assert_eq!(s.status, RunStatus::Paused);
    assert_eq!(s.open_commands().count(), 1, "accepted is still open");
    s.apply(&ev(
        r#"{"event":"command","command_id":"c2","command":"resume"}"#,
    ));
    s.apply(&ev(
        r#"{"event":"command_ack","command_id":"c2","status":"done"}"#,
    ));
    s.apply(&ev(
        r#"{"event":"command_ack","command_id":"c1","status":"done","message":"resumed"}"#,
    ));
    assert_eq!(s.status, RunStatus::Running);
    assert_eq!(s.open_commands().count(), 0);
    assert_eq!(s.commands[0].message.as_deref(), Some("resumed"));
    // A final answer is final.
    s.apply(&ev(
        r#"{"event":"command_ack","command_id":"c1","status":"failed"}"#,
    ));
    assert_eq!(s.commands[0].status, "done");
    // Unknown ids are ignored.
    s.apply(&ev(
        r#"{"event":"command_ack","command_id":"nope","status":"done"}"#,
    ));
    assert_eq!(s.commands.len(), 2);
}

#[test]
fn a_command_keeps_every_message_the_trainer_sent_about_it() {
    let mut s = RunState::new("r");
    s.apply(&ev(r#"{"event":"training_start"}"#));
    s.apply(&ev(
        r#"{"event":"command","command_id":"c","command":"stop"}"#,
    ));
    for (status, msg) in [
        ("accepted", "stop accepted; interrupting at the next step"),
        (
            "accepted",
            "interrupting the loop at step 44 (KeyboardInterrupt)",
        ),
        (
            "accepted",
            "interrupting the loop at step 44 (KeyboardInterrupt)",
        ),
        ("done", "stopped"),
        ("done", "too late: final answers are final"),
    ] {
        s.apply(&ev(&format!(
            r#"{{"event":"command_ack","command_id":"c","status":"{status}","message":"{msg}"}}"#
        )));
    }
    let c = &s.commands[0];
    assert_eq!(c.status, "done");
    assert_eq!(c.message.as_deref(), Some("stopped"));
    assert_eq!(
        c.messages,
        [
            "stop accepted; interrupting at the next step",
            "interrupting the loop at step 44 (KeyboardInterrupt)",
            "stopped"
        ]
    );
    // Bounded: the first word and the newest are kept.
    s.apply(&ev(
        r#"{"event":"command","command_id":"d","command":"ask"}"#,
    ));
    for i in 0..30 {
        s.apply(&ev(&format!(
            r#"{{"event":"command_ack","command_id":"d","status":"accepted","message":"m{i}"}}"#
        )));
    }
    let d = &s.commands[1];
    assert_eq!(
        d.messages.len(),
        stepwatch_events::state::MAX_COMMAND_MESSAGES
    );
    assert_eq!(d.messages[0], "m0");
    assert_eq!(d.messages.last().unwrap(), "m29");
}
