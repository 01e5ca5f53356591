//! The reducer's view of a distributed run: ranks from their events, commands done when
//! every rank has done them, the rank that failed the run named, silent ranks found.
#![allow(clippy::unwrap_used)]

use stepwatch_events::{Event, RunState, RunStatus};

fn apply(s: &mut RunState, json: &str) {
    let mut e = Event::from_json(json).unwrap();
    e.id = Some(s.last_id + 1);
    s.apply(&e);
}

/// Two ranks on two hosts, training, heartbeat 1 s, last heard at relay time 100.
fn two_ranks() -> RunState {
    let mut s = RunState::new("ddp");
    apply(&mut s, r#"{"event":"training_start","time":1}"#);
    for r in 0..2 {
        apply(
            &mut s,
            &format!(
                r#"{{"event":"rank","rank":{r},"state":"started","world_size":2,"host":"h{r}","interval":1,"received":100}}"#
            ),
        );
    }
    s
}

#[test]
fn ranks_are_tracked_from_their_events_and_samples() {
    let mut s = two_ranks();
    apply(
        &mut s,
        r#"{"event":"system","rank":1,"step":7,"step_ms":12.5,"cpu_percent":40,"gpus":[{"util_percent":80,"mem_used_bytes":100,"mem_total_bytes":1000}],"received":101}"#,
    );
    let w = s.world.as_ref().unwrap();
    assert_eq!(w.size, 2);
    let r1 = w.rank(1).unwrap();
    assert_eq!(r1.host.as_deref(), Some("h1"));
    assert_eq!(
        (r1.step, r1.step_ms, r1.gpu_util),
        (Some(7), Some(12.5), Some(80.0))
    );
    assert_eq!(r1.gpu_mem_bytes, Some(100));
    assert_eq!(r1.seen_at, Some(101.0));
    // Only rank 0's samples are the run's own system view.
    assert!(s.system.is_none());
}

#[test]
fn a_command_is_done_when_every_rank_has_done_it() {
    let mut s = two_ranks();
    apply(
        &mut s,
        r#"{"event":"command","command_id":"p","command":"pause"}"#,
    );
    apply(
        &mut s,
        r#"{"event":"command_ack","command_id":"p","command":"pause","status":"accepted","message":"paused","rank":0}"#,
    );
    assert_eq!(
        s.status,
        RunStatus::Running,
        "one rank paused is not the run paused"
    );
    assert_eq!(s.ranks_waiting("p"), &[1]);
    apply(
        &mut s,
        r#"{"event":"command_ack","command_id":"p","command":"pause","status":"accepted","rank":1}"#,
    );
    assert_eq!(s.status, RunStatus::Paused);
    assert!(s.ranks_waiting("p").is_empty());
    apply(
        &mut s,
        r#"{"event":"command_ack","command_id":"p","command":"pause","status":"done","message":"resumed","rank":0}"#,
    );
    assert_eq!(s.commands[0].status, "accepted");
    assert_eq!(s.status, RunStatus::Paused, "rank 1 has not resumed yet");
    apply(
        &mut s,
        r#"{"event":"command_ack","command_id":"p","command":"pause","status":"done","rank":1}"#,
    );
    assert_eq!(s.commands[0].status, "done");
    assert_eq!(s.status, RunStatus::Running);
    assert_eq!(s.commands[0].ranks, ["done", "done"]);
    // A refusal by any rank is final, and names it.
    apply(
        &mut s,
        r#"{"event":"command","command_id":"l","command":"load_checkpoint"}"#,
    );
    apply(
        &mut s,
        r#"{"event":"command_ack","command_id":"l","status":"failed","message":"no such file","rank":1}"#,
    );
    assert_eq!(s.commands[1].status, "failed");
    assert_eq!(
        s.commands[1].message.as_deref(),
        Some("rank 1 (h1): no such file")
    );
}

#[test]
fn the_first_rank_to_fail_is_the_cause() {
    let mut s = two_ranks();
    apply(
        &mut s,
        r#"{"event":"error_occurred","message":"CUDA out of memory","traceback":"tb","fatal":true,"rank":1,"time":5}"#,
    );
    assert_eq!(s.status, RunStatus::Failed);
    let e = s.last_error.clone().unwrap();
    assert_eq!(e.message, "rank 1 (h1): CUDA out of memory");
    assert_eq!((e.rank, e.traceback.as_deref()), (Some(1), Some("tb")));
    // Rank 0 then breaks on the collective and is stopped by the launcher.
    apply(
        &mut s,
        r#"{"event":"error_occurred","message":"Connection reset by peer","fatal":true,"rank":0,"time":6}"#,
    );
    apply(
        &mut s,
        r#"{"event":"training_end","status":"stopped","time":7}"#,
    );
    assert_eq!(s.status, RunStatus::Failed);
    assert_eq!(s.last_error.as_ref().unwrap().rank, Some(1));
    assert_eq!(s.world.as_ref().unwrap().rank(0).unwrap().state, "failed");
}

#[test]
fn a_silent_rank_is_found_and_lost_names_it() {
    let mut s = two_ranks();
    let w = s.world.clone().unwrap();
    assert!(
        w.silent(110.0).is_empty(),
        "10 s is under three heartbeats and 15 s"
    );
    assert_eq!(w.silent(116.0), vec![0, 1]);
    // Rank 0 ended (the launcher stopped it): rank 1 is lost after 1 s + 2 s.
    apply(
        &mut s,
        r#"{"event":"rank","rank":0,"state":"ended","status":"stopped","received":101}"#,
    );
    apply(
        &mut s,
        r#"{"event":"error_occurred","message":"Connection reset by peer","fatal":true,"rank":0,"time":101}"#,
    );
    let w = s.world.clone().unwrap();
    assert!(w.silent(102.5).is_empty());
    assert_eq!(w.silent(103.5), vec![1]);
    apply(
        &mut s,
        r#"{"event":"rank","rank":1,"state":"lost","step":42,"message":"nothing heard for 4 s","time":104}"#,
    );
    assert_eq!(s.status, RunStatus::Failed);
    let e = s.last_error.clone().unwrap();
    assert_eq!(
        e.rank,
        Some(1),
        "the silent rank went first: it is the cause"
    );
    assert!(
        e.message
            .starts_with("rank 1 (h1) died without a word at step 42"),
        "{}",
        e.message
    );
    assert_eq!(s.world.as_ref().unwrap().rank(1).unwrap().state, "lost");
}

/// [`two_ranks`] with rank 1 last heard at 103 (rank 0 at 100), then both found lost
/// in the order given.
fn both_lost(first: u64, then: u64) -> RunState {
    let mut s = two_ranks();
    apply(
        &mut s,
        r#"{"event":"system","rank":1,"step":9,"received":103}"#,
    );
    for r in [first, then] {
        apply(
            &mut s,
            &format!(r#"{{"event":"rank","rank":{r},"state":"lost","time":118}}"#),
        );
    }
    s
}

#[test]
fn of_two_silent_ranks_the_first_to_go_quiet_is_named() {
    // Rank 0 is killed (last heard at 100); rank 1 goes on to 103, then is stopped by the
    // launcher without a word. Whichever loss is found first, rank 0 failed the run.
    let s = both_lost(0, 1);
    assert_eq!(s.status, RunStatus::Failed);
    let e = s.last_error.clone().unwrap();
    assert_eq!(e.rank, Some(0), "{}", e.message);
    assert!(e.message.starts_with("rank 0 (h0) died"), "{}", e.message);
    let s = both_lost(1, 0);
    assert_eq!(s.last_error.unwrap().rank, Some(0));
}

#[test]
fn a_single_process_run_has_no_world() {
    let mut s = RunState::new("one");
    apply(&mut s, r#"{"event":"system","cpu_percent":3}"#);
    apply(
        &mut s,
        r#"{"event":"error_occurred","message":"boom","fatal":true}"#,
    );
    assert!(s.world.is_none());
    assert_eq!(s.last_error.unwrap().message, "boom");
}

#[test]
fn the_dashboards_decoding_keeps_what_it_draws() {
    let mut s = two_ranks();
    apply(
        &mut s,
        r#"{"event":"system","rank":1,"step":7,"step_ms":12.5,"received":101}"#,
    );
    let json = serde_json::to_value(s.world.as_ref().unwrap()).unwrap();
    let w = stepwatch_events::world::from_value(&json).unwrap();
    assert_eq!(w.size, 2);
    let r = w.rank(1).unwrap();
    assert_eq!(
        (r.host.as_deref(), r.step, r.step_ms),
        (Some("h1"), Some(7), Some(12.5))
    );
    assert_eq!(r.state, "running");
    assert!(stepwatch_events::world::from_value(&serde_json::json!({"size": 2})).is_none());
}

#[test]
fn a_command_waiting_for_a_rank_that_dies_finishes_over_the_ranks_still_running() {
    let mut s = two_ranks();
    apply(
        &mut s,
        r#"{"event":"command","command_id":"c1","command":"load_checkpoint","args":{"path":"a.pt"}}"#,
    );
    apply(
        &mut s,
        r#"{"event":"command_ack","command_id":"c1","status":"done","rank":0}"#,
    );
    let c = s.commands.last().unwrap();
    assert_eq!(
        (c.status.as_str(), c.waiting.as_slice()),
        ("accepted", &[1][..])
    );
    // Rank 1 is killed before it answers: the command is done by the ranks that remain.
    apply(
        &mut s,
        r#"{"event":"rank","rank":1,"state":"lost","received":120}"#,
    );
    let c = s.commands.last().unwrap();
    assert_eq!(c.status, "done");
    assert!(c.waiting.is_empty());
    // A command no rank has answered yet is left alone.
    let mut s = two_ranks();
    apply(
        &mut s,
        r#"{"event":"command","command_id":"c2","command":"stop"}"#,
    );
    apply(
        &mut s,
        r#"{"event":"rank","rank":1,"state":"ended","status":"completed"}"#,
    );
    assert_eq!(s.commands.last().unwrap().status, "pending");
}
