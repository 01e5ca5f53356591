//! Progress as people read it (1-based epochs, batches done, stopped runs not full), the
//! ETA (paused time out, time between epochs learned), checkpoints re-saved to one path,
//! and the best validation loss.
#![allow(clippy::unwrap_used)]

use stepwatch_events::{Event, RunState, RunStatus};

fn ev(json: &str) -> Event {
    Event::from_json(json).unwrap()
}

/// Applies a `batch_end` … with trainer time `t`.
fn at(s: &mut RunState, t: f64, body: &str) {
    let json = format!(r#"{{{body},"time":{t}}}"#);
    s.apply(&ev(&json));
}

/// A `for epoch in range(3)` / `enumerate(loader)` loop over 4 batches, one second a
/// batch and 10 s of validation after each epoch, up to (not including) `stop_at`
/// (epoch, batch).
fn zero_based(stop_at: Option<(u64, u64)>) -> (RunState, f64) {
    let mut s = RunState::new("r");
    let mut t = 1000.0;
    at(
        &mut s,
        t,
        r#""event":"training_start","total_epochs":3,"total_batches":4"#,
    );
    for epoch in 0..3u64 {
        at(
            &mut s,
            t,
            &format!(r#""event":"epoch_start","epoch":{epoch},"total_epochs":3"#),
        );
        for b in 0..4u64 {
            if stop_at == Some((epoch, b)) {
                return (s, t);
            }
            t += 1.0;
            at(
                &mut s,
                t,
                &format!(r#""event":"batch_end","batch_idx":{b},"loss":1.0,"epoch":{epoch}"#),
            );
        }
        t += 10.0;
        at(
            &mut s,
            t,
            &format!(
                r#""event":"epoch_end","epoch":{epoch},"metrics":{{"val_loss":{}}}"#,
                3.0 - epoch as f64
            ),
        );
    }
    (s, t)
}

#[test]
fn zero_based_loops_read_one_based_and_a_finished_run_is_full() {
    let (mut s, t) = zero_based(None);
    let p = s.progress();
    assert_eq!((p.epoch, p.total_epochs), (Some(3), Some(3)));
    assert_eq!(
        (p.batch, p.total_batches),
        (Some(4), Some(4)),
        "the last batch reads 4/4"
    );
    assert_eq!(p.epochs_done, 3);
    assert_eq!(p.fraction, Some(1.0));
    // The seed's numbers are as the trainer sent them.
    assert_eq!((s.current_epoch, s.current_batch), (2, 3));
    at(&mut s, t, r#""event":"training_end""#);
    assert_eq!(s.progress().fraction, Some(1.0));
    assert_eq!(s.summary().progress, s.progress());
}

#[test]
fn a_run_stopped_in_its_last_epoch_is_not_shown_full() {
    let (mut s, t) = zero_based(Some((2, 1)));
    at(&mut s, t, r#""event":"training_end","status":"stopped""#);
    assert_eq!(s.status, RunStatus::Stopped);
    let p = s.progress();
    assert_eq!(p.epoch, Some(3));
    assert_eq!(p.epochs_done, 2);
    assert_eq!(p.batch, Some(1));
    let f = p.fraction.unwrap();
    assert!((f - (2.0 + 0.25) / 3.0).abs() < 1e-9, "{f}");
}

#[test]
fn mid_epoch_progress_and_a_new_epoch_before_its_first_batch() {
    let (s, _) = zero_based(Some((1, 2)));
    let p = s.progress();
    assert_eq!((p.epoch, p.batch, p.epochs_done), (Some(2), Some(2), 1));
    assert_eq!(p.epoch_fraction, Some(0.5));
    assert!((p.fraction.unwrap() - 1.5 / 3.0).abs() < 1e-9);
    let (s, _) = zero_based(Some((1, 0)));
    let p = s.progress();
    assert_eq!((p.epoch, p.batch, p.epochs_done), (Some(2), Some(0), 1));
}

#[test]
fn one_based_loops_are_shown_as_they_count() {
    let mut s = RunState::new("r");
    s.apply(&ev(
        r#"{"event":"training_start","total_epochs":2,"total_batches":3}"#,
    ));
    for epoch in 1..=2 {
        s.apply(&ev(&format!(
            r#"{{"event":"epoch_start","epoch":{epoch}}}"#
        )));
        for b in 1..=3 {
            s.apply(&ev(&format!(
                r#"{{"event":"batch_end","batch_idx":{b},"loss":1.0}}"#
            )));
        }
    }
    let p = s.progress();
    assert_eq!((p.epoch, p.batch), (Some(2), Some(3)));
    assert_eq!(p.epochs_done, 1, "epoch 2 has not ended");
    assert!((p.fraction.unwrap() - 1.0).abs() < 1e-9);
    s.apply(&ev(r#"{"event":"epoch_end","epoch":2}"#));
    assert_eq!(s.progress().epochs_done, 2);
}

#[test]
fn a_run_without_epochs_has_no_epoch() {
    let mut s = RunState::new("tb");
    for step in 1..=208 {
        s.apply(&ev(&format!(
            r#"{{"event":"batch_end","batch_idx":{step},"step":{step},"loss":1.0}}"#
        )));
    }
    let p = s.progress();
    assert_eq!(p.epoch, None, "no epoch 0 invented");
    assert_eq!(p.total_epochs, None);
    assert_eq!(p.fraction, None);
    let json = serde_json::to_value(s.summary()).unwrap();
    assert!(json["progress"]["epoch"].is_null(), "{json}");
}

#[test]
fn eta_leaves_out_pauses_and_learns_the_time_between_epochs() {
    let (mut s, t) = zero_based(Some((1, 2)));
    // Learned: 1 s a batch; 10 s between epochs (validation).
    assert!((s.pace.per_batch().unwrap() - 1.0).abs() < 1e-9);
    assert!((s.pace.per_gap().unwrap() - 10.0).abs() < 1e-9);
    // Left: 2 batches of this epoch + 4 of the last, and 2 validations.
    let eta = s.eta_s(t).unwrap();
    assert!((eta - 26.0).abs() < 1e-6, "{eta}");
    // Five seconds later the estimate has gone down by five.
    assert!((s.eta_s(t + 5.0).unwrap() - 21.0).abs() < 1e-6);
    // A 100 s pause: not counted while it lasts, nor afterwards.
    s.apply(&ev(&format!(
        r#"{{"event":"command","command_id":"p","command":"pause","time":{t}}}"#
    )));
    s.apply(&ev(&format!(
        r#"{{"event":"command_ack","command_id":"p","command":"pause","status":"accepted","time":{t}}}"#
    )));
    assert_eq!(s.status, RunStatus::Paused);
    assert_eq!(s.eta_s(t + 50.0), None, "no ETA while paused");
    let back = t + 100.0;
    s.apply(&ev(&format!(
        r#"{{"event":"command_ack","command_id":"p","command":"pause","status":"done","time":{back}}}"#
    )));
    assert!((s.eta_s(back).unwrap() - 26.0).abs() < 1e-6);
    at(
        &mut s,
        back + 1.0,
        r#""event":"batch_end","batch_idx":2,"loss":1.0,"epoch":1"#,
    );
    assert!(
        (s.pace.per_batch().unwrap() - 1.0).abs() < 1e-9,
        "the pause is not batch time"
    );
    assert!((s.eta_s(back + 1.0).unwrap() - 25.0).abs() < 1e-6);
    // A state stored and read back keeps its pace.
    let back_state: RunState = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert_eq!(back_state.eta_s(back + 1.0), s.eta_s(back + 1.0));
    assert_eq!(back_state.pace, s.pace);
    let decoded = stepwatch_events::api::decode_state(&serde_json::to_string(&s).unwrap());
    assert_eq!(decoded.map(|d| d.pace), Some(s.pace.clone()));
}

#[test]
fn a_state_stored_before_the_pace_was_kept_shows_its_own_numbers() {
    let mut s = RunState::new("old");
    s.apply(&ev(
        r#"{"event":"training_start","total_epochs":3,"total_batches":10}"#,
    ));
    s.apply(&ev(r#"{"event":"epoch_start","epoch":2}"#));
    s.apply(&ev(r#"{"event":"batch_end","batch_idx":4,"loss":1.0}"#));
    let mut json = serde_json::to_value(&s).unwrap();
    json.as_object_mut().unwrap().remove("pace");
    let old: RunState = serde_json::from_value(json).unwrap();
    let p = old.progress();
    assert_eq!((p.epoch, p.batch), (Some(2), Some(5)));
}

#[test]
fn resaves_of_one_path_are_one_checkpoint_and_only_the_best_is_best() {
    let mut s = RunState::new("r");
    for (epoch, val) in [(1, 5.0), (2, 4.0), (3, 4.5)] {
        if epoch != 3 {
            s.apply(&ev(&format!(
                r#"{{"event":"checkpoint_saved","checkpoint_path":"model.pt","epoch":{epoch},"metrics":{{"val_loss":{val}}}}}"#
            )));
        }
        s.apply(&ev(&format!(
            r#"{{"event":"checkpoint_saved","checkpoint_path":"e{epoch}.pt","epoch":{epoch},"metrics":{{"val_loss":{val}}}}}"#
        )));
    }
    let paths: Vec<&str> = s.checkpoints.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["e1.pt", "model.pt", "e2.pt", "e3.pt"]);
    let model = &s.checkpoints[1];
    assert_eq!((model.epoch, model.overwrites), (Some(2), 1));
    assert_eq!(s.best_checkpoint().unwrap().path, "model.pt");
    // Without metrics nothing is called best.
    let mut bare = RunState::new("b");
    for _ in 0..3 {
        bare.apply(&ev(
            r#"{"event":"checkpoint_saved","checkpoint_path":"/ck/model.pt"}"#,
        ));
    }
    assert_eq!(bare.checkpoints.len(), 1);
    assert_eq!(bare.checkpoints[0].overwrites, 2);
    assert!(bare.best_checkpoint().is_none());
}

#[test]
fn the_best_validation_loss_is_kept_beside_the_best_batch_loss() {
    let (s, _) = zero_based(None);
    let best = s.best_val.clone().unwrap();
    assert_eq!((best.metric.as_str(), best.value), ("val_loss", 1.0));
    assert_eq!(s.summary().best_val, Some(best));
    for (name, yes) in [
        ("val_loss", true),
        ("val/loss", true),
        ("eval_loss", true),
        ("Validation/Loss", true),
        ("val_loss_epoch", true),
        ("val_ppl", false),
        ("train/loss", false),
        ("interval", false),
    ] {
        assert_eq!(
            stepwatch_events::state::is_validation_loss(name),
            yes,
            "{name}"
        );
    }
}

#[test]
fn a_run_stopped_as_its_next_epoch_began_ended_after_the_epoch_before() {
    // A Stop during validation takes effect at the next epoch_start: that epoch was
    // recorded as begun, with no batch.
    let (mut s, t) = zero_based(Some((1, 0)));
    let live = s.progress();
    assert_eq!(
        (live.epoch, live.batch),
        (Some(2), Some(0)),
        "while running: begun"
    );
    at(&mut s, t, r#""event":"training_end","status":"stopped""#);
    let p = s.progress();
    assert_eq!((p.epoch, p.batch, p.epochs_done), (Some(1), Some(4), 1));
    assert_eq!(p.epoch_fraction, Some(1.0));
    assert!((p.fraction.unwrap() - 1.0 / 3.0).abs() < 1e-9);
}

#[test]
fn numbers_at_the_edge_of_u64_do_not_overflow() {
    // A buggy or hostile trainer: the reducer never panics, whatever the numbers.
    let max = u64::MAX;
    let mut s = RunState::new("edge");
    at(
        &mut s,
        1.0,
        &format!(r#""event":"training_start","total_epochs":{max},"total_batches":{max}"#),
    );
    at(&mut s, 2.0, r#""event":"epoch_start","epoch":0"#);
    at(
        &mut s,
        3.0,
        &format!(r#""event":"epoch_start","epoch":{max}"#),
    );
    at(
        &mut s,
        4.0,
        &format!(r#""event":"batch_end","batch_idx":{max},"loss":1.0"#),
    );
    at(
        &mut s,
        5.0,
        &format!(r#""event":"batch_end","batch_idx":{max},"loss":1.0"#),
    );
    let p = s.progress();
    assert_eq!(p.epoch, Some(max));
    assert_eq!(p.batch, Some(max));
    assert!(s.eta_s(6.0).is_some_and(f64::is_finite));
    assert!(p.fraction.is_some_and(|f| (0.0..=1.0).contains(&f)));
}
