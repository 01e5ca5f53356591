//! The launcher over a real SQLite store: one holder per job however many agents claim
//! at once, a stale write refused, leases that run out.

#![allow(clippy::unwrap_used)]

use super::{LaunchConfig, Launcher};
use crate::auth::Identity;
use crate::storage::sqlite::{SqliteStore, SyncLevel};
use crate::storage::Storage;
use serde_json::json;
use std::sync::Arc;
use stepwatch_events::jobs::{Heartbeat, JobStatus, Report};

fn launcher(tag: &str, lease_s: u64) -> Arc<Launcher> {
    let dir = std::env::temp_dir().join(format!("sw-launch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store: Arc<dyn Storage> = Arc::new(SqliteStore::open(&dir, SyncLevel::Normal).unwrap());
    let config = LaunchConfig::parse(&format!(
        "[[queues]]\nname = 'q'\nengine = 'local'\nlease_s = {lease_s}\n"
    ))
    .unwrap();
    Arc::new(Launcher::new(store, config))
}

fn submit(l: &Launcher, name: &str) -> String {
    let spec = json!({"name": name, "queue": "q", "entry": {"argv": ["/bin/true"]}});
    l.submit(spec, &Identity::anonymous_admin()).unwrap().job
}

#[test]
fn agents_claiming_at_once_get_each_job_once() {
    let l = launcher("race", 30);
    let jobs: Vec<String> = (0..6).map(|i| submit(&l, &format!("j{i}"))).collect();
    let handles: Vec<_> = (0..4)
        .map(|a| {
            let l = l.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(launch) = l.claim("q", &format!("agent-{a}")).unwrap() {
                    got.push(launch.job);
                }
                got
            })
        })
        .collect();
    let mut claimed: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    claimed.sort();
    let mut want = jobs.clone();
    want.sort();
    assert_eq!(claimed, want, "every job claimed exactly once");
}

#[test]
fn a_write_from_a_stale_version_is_refused() {
    let l = launcher("stale", 30);
    let id = submit(&l, "j");
    let row = l.row(&id).unwrap();
    let db = l.store.jobs();
    assert!(db
        .put_job(&row.state, "q", Some(row.version), None)
        .unwrap());
    assert!(!db
        .put_job(&row.state, "q", Some(row.version), None)
        .unwrap());
    assert!(
        !db.put_job(&row.state, "q", None, None).unwrap(),
        "the id is taken"
    );
}

#[test]
fn a_lease_that_runs_out_puts_a_claimed_job_back_in_the_queue() {
    let l = launcher("lease", 5);
    let id = submit(&l, "j");
    let launch = l.claim("q", "a1").unwrap().unwrap();
    assert_eq!(
        (launch.job.as_str(), launch.key.as_str()),
        (id.as_str(), format!("sw-{id}-1").as_str())
    );
    assert_eq!(launch.env["STEPWATCH_RUN"], launch.run);
    assert!(
        l.claim("q", "a2").unwrap().is_none(),
        "a1 holds the only job"
    );
    // A heartbeat names the job: still a1's. Then the lease is made to have run out.
    let hb = Heartbeat {
        agent: "a1".into(),
        queue: "q".into(),
        engine: "local".into(),
        jobs: vec![id.clone()],
        ..Heartbeat::default()
    };
    assert_eq!(
        l.heartbeat(&hb).unwrap().jobs[0].state.agent.as_deref(),
        Some("a1")
    );
    let mut row = l.row(&id).unwrap();
    row.state.lease_until = Some(0.0);
    assert!(l
        .store
        .jobs()
        .put_job(&row.state, "q", Some(row.version), None)
        .unwrap());
    l.sweep();
    let row = l.row(&id).unwrap();
    assert_eq!(
        (row.state.status, row.state.agent.clone()),
        (JobStatus::Queued, None)
    );
    // a1 may no longer report on it; a2 claims it under the same key (not yet started).
    let r = Report {
        agent: "a1".into(),
        kind: "engine_submitted".into(),
        engine_id: Some("x".into()),
        ..Report::default()
    };
    assert_eq!(l.report(&id, &r).unwrap_err().status, 409);
    let again = l.claim("q", "a2").unwrap().unwrap();
    assert_eq!(again.key, launch.key);
}

#[test]
fn a_lapsed_lease_is_taken_up_again_and_a_cancelled_orphan_is_handed_out() {
    let l = launcher("lapse", 5);
    let id = submit(&l, "j");
    l.claim("q", "a1").unwrap().unwrap();
    let r = |kind: &str| Report {
        agent: "a1".into(),
        kind: kind.into(),
        engine_id: Some("local:k".into()),
        ..Report::default()
    };
    l.report(&id, &r("engine_submitted")).unwrap();
    let lapse = |l: &Launcher| {
        let mut row = l.row(&id).unwrap();
        row.state.lease_until = Some(0.0);
        assert!(l
            .store
            .jobs()
            .put_job(&row.state, "q", Some(row.version), None)
            .unwrap());
        l.sweep();
        assert_eq!(l.row(&id).unwrap().state.agent, None);
    };
    lapse(&l);
    // a1 stalled past its lease but still follows the job: its heartbeat takes it back.
    let hb = Heartbeat {
        agent: "a1".into(),
        queue: "q".into(),
        engine: "local".into(),
        jobs: vec![id.clone()],
        ..Heartbeat::default()
    };
    let back = l.heartbeat(&hb).unwrap();
    assert_eq!(back.jobs[0].state.agent.as_deref(), Some("a1"));
    assert_eq!(back.jobs[0].state.status, JobStatus::Submitted);
    // Cancelled, then its agent dies: another agent is handed it, to end it.
    l.cancel(&id, &Identity::anonymous_admin()).unwrap();
    lapse(&l);
    let orphan = l.claim("q", "a2").unwrap().unwrap();
    assert_eq!(
        (orphan.job.as_str(), orphan.status.as_str()),
        (id.as_str(), "submitted")
    );
}
