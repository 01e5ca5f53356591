//! The agents' side: heartbeats (which renew the leases of the jobs an agent holds),
//! claims, reports, the relay's automatic retry, and the sweep that takes jobs back from
//! agents whose lease ran out.

use super::submit::field_error;
use super::Launcher;
use crate::api::ApiError;
use crate::clock::now;
use crate::storage::jobs::JobRow;
use stepwatch_events::jobs::{
    queue_order, AgentInfo, FieldError, Heartbeat, HeartbeatAnswer, JobEventBody, JobStatus,
    JobView, Launch, Report,
};

/// A heartbeat renews a lease once less than this share of it is left.
const RENEW_BELOW: f64 = 0.6;

fn check_agent(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(field_error(FieldError::new(
            "agent",
            "an agent name is 1-128 characters, no control characters",
        )));
    }
    Ok(())
}

impl Launcher {
    /// Records the heartbeat and renews the leases of the jobs the agent holds.
    pub fn heartbeat(&self, hb: &Heartbeat) -> Result<HeartbeatAnswer, ApiError> {
        check_agent(&hb.agent)?;
        let q = self.config.queue(&hb.queue).ok_or_else(|| {
            field_error(FieldError::new("queue", format!("no queue {:?}", hb.queue)))
        })?;
        if hb.engine != q.engine.as_str() {
            return Err(field_error(FieldError::new(
                "engine",
                format!(
                    "queue {:?} runs on {}, not {}",
                    q.name,
                    q.engine.as_str(),
                    hb.engine
                ),
            )));
        }
        let t = now();
        self.store.jobs().put_agent(&AgentInfo {
            agent: hb.agent.clone(),
            queue: hb.queue.clone(),
            engine: hb.engine.clone(),
            host: hb.host.chars().take(256).collect(),
            slots: hb.slots,
            busy: hb.jobs.len() as u32,
            last_seen: t,
            alive: true,
            version: hb.version.chars().take(64).collect(),
        })?;
        let mut rows = Vec::new();
        let lease = q.lease_s;
        for id in hb.jobs.iter().take(1024) {
            let agent = hb.agent.clone();
            let row = self.change(
                id,
                |row| {
                    let s = &row.state;
                    let mine = s.agent.as_deref() == Some(agent.as_str());
                    let due = s
                        .lease_until
                        .zip(s.lease_s)
                        .is_some_and(|(until, len)| until - now() < len as f64 * RENEW_BELOW);
                    // A lease that ran out while the agent still follows the job at its
                    // engine (a stall): taken up again, unless another agent has it.
                    let lapsed = s.agent.is_none()
                        && matches!(s.status, JobStatus::Submitted | JobStatus::Running);
                    Ok(if mine && due {
                        vec![JobEventBody::LeaseRenewed {
                            agent: agent.clone(),
                        }]
                    } else if lapsed {
                        vec![JobEventBody::Claimed {
                            agent: agent.clone(),
                            lease_s: lease,
                        }]
                    } else {
                        Vec::new()
                    })
                },
                false,
            );
            match row {
                Ok(r) => rows.push(r),
                Err(e) if e.status == actix_web::http::StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        }
        let ctx = self.context();
        Ok(HeartbeatAnswer {
            lease_s: q.lease_s,
            jobs: rows.iter().map(|r| self.view(r, &ctx)).collect(),
        })
    }

    /// Hands `agent` the next job of `queue`: the first waiting one in queue order, or
    /// one at the engine whose agent's lease ran out (to adopt). `None`: nothing to do.
    pub fn claim(&self, queue: &str, agent: &str) -> Result<Option<Launch>, ApiError> {
        check_agent(agent)?;
        let q = self
            .config
            .queue(queue)
            .ok_or_else(|| ApiError::not_found(format!("no queue {queue:?}")))?;
        let mut candidates: Vec<JobRow> = self
            .rows()?
            .into_iter()
            .filter(|r| {
                r.queue == queue
                    && r.state.agent.is_none()
                    && match r.state.status {
                        JobStatus::Queued => r.state.cancel_requested_by.is_none(),
                        // At the engine, cancelled or not: someone must follow (or end) it.
                        JobStatus::Submitted | JobStatus::Running => true,
                        _ => false,
                    }
            })
            .collect();
        // Orphans at the engine first: they already run.
        candidates.sort_by(|a, b| {
            (a.state.status == JobStatus::Queued)
                .cmp(&(b.state.status == JobStatus::Queued))
                .then_with(|| queue_order(&a.state, &b.state))
        });
        for c in candidates {
            let name = agent.to_string();
            let claimed = self.change(
                &c.state.job,
                |row| {
                    let cancelled_waiting = row.state.cancel_requested_by.is_some()
                        && row.state.status == JobStatus::Queued;
                    if row.state.agent.is_some() || cancelled_waiting {
                        return Err(ApiError::conflict("taken"));
                    }
                    Ok(vec![JobEventBody::Claimed {
                        agent: name.clone(),
                        lease_s: q.lease_s,
                    }])
                },
                true,
            );
            match claimed {
                Ok(row) => return Ok(Some(self.launch_of(&row, q)?)),
                Err(e) if e.status == actix_web::http::StatusCode::CONFLICT => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// What the agent needs to start (or adopt) a claimed job.
    fn launch_of(&self, row: &JobRow, q: &super::QueueConfig) -> Result<Launch, ApiError> {
        let s = &row.state;
        let spec = s
            .spec
            .as_ref()
            .ok_or_else(|| ApiError::conflict("the job has no spec"))?;
        let rendered = s.launch.clone().unwrap_or_default();
        let run = s.run.clone().unwrap_or_else(|| s.job.clone());
        let attempt = s.attempts + u32::from(s.status == JobStatus::Claimed);
        let mut env = rendered.env.clone();
        env.insert("STEPWATCH_RUN".into(), run.clone());
        env.insert("STEPWATCH_JOB".into(), s.job.clone());
        env.insert(
            "STEPWATCH_TOKEN".into(),
            self.tokens.issue(self, &s.job, &run)?,
        );
        if let Some(r) = &s.resume_from {
            env.insert("STEPWATCH_RESUME_FROM".into(), r.clone());
        }
        let engine = q.engine.as_str();
        let mut extras = q.extras.get(engine).cloned().unwrap_or_default();
        if let Some(own) = spec.extras.get(engine) {
            for (k, v) in own {
                extras.insert(k.clone(), v.clone());
            }
        }
        Ok(Launch {
            job: s.job.clone(),
            name: spec.name.clone(),
            queue: row.queue.clone(),
            run,
            attempt: attempt.max(1),
            key: format!("sw-{}-{}", s.job, attempt.max(1)),
            argv: rendered.argv,
            cwd: rendered.cwd,
            env,
            resources: spec.resources.clone(),
            extras,
            status: s.status.as_str().to_string(),
            engine_id: s.engine_id.clone(),
            resume_from: s.resume_from.clone(),
            lease_s: q.lease_s,
            cancel_grace_s: q.cancel_grace_s,
        })
    }

    /// An agent's word on a job it holds.
    pub fn report(&self, id: &str, r: &Report) -> Result<JobView, ApiError> {
        check_agent(&r.agent)?;
        let row = self.change(
            id,
            |row| {
                let s = &row.state;
                if s.agent.as_deref() != Some(r.agent.as_str()) {
                    return Err(ApiError::conflict(format!(
                        "agent {:?} does not hold job {id:?}{}",
                        r.agent,
                        s.agent
                            .as_ref()
                            .map_or_else(String::new, |a| format!(" ({a:?} does)"))
                    )));
                }
                let reason = || r.reason.clone().unwrap_or_default();
                Ok(vec![match r.kind.as_str() {
                    "engine_submitted" => JobEventBody::EngineSubmitted {
                        engine_id: r.engine_id.clone().ok_or_else(|| {
                            field_error(FieldError::new("engine_id", "engine_submitted needs the engine's id"))
                        })?,
                    },
                    "engine_status" => JobEventBody::EngineStatus { reason: reason() },
                    "running" => JobEventBody::Running {
                        run: s.run.clone().unwrap_or_else(|| s.job.clone()),
                    },
                    "succeeded" => JobEventBody::Succeeded,
                    "failed" => JobEventBody::Failed {
                        reason: reason(),
                        exit_code: r.exit_code,
                    },
                    "cancelled" => JobEventBody::Cancelled { reason: reason() },
                    "released" => JobEventBody::LeaseLost {
                        agent: r.agent.clone(),
                    },
                    other => {
                        return Err(field_error(FieldError::new(
                            "kind",
                            format!("unknown report {other:?}: engine_submitted, engine_status, running, succeeded, failed, cancelled or released"),
                        )))
                    }
                }])
            },
            true,
        )?;
        let row = if row.state.status == JobStatus::Failed && !row.state.is_terminal() {
            self.requeue(id)?
        } else {
            row
        };
        Ok(self.view(&row, &self.context()))
    }

    /// A failed job with retries left goes back to the queue, resuming from its run's
    /// last checkpoint.
    fn requeue(&self, id: &str) -> Result<JobRow, ApiError> {
        self.change(
            id,
            |row| {
                let s = &row.state;
                if s.status != JobStatus::Failed || s.is_terminal() {
                    return Ok(Vec::new());
                }
                let max = s.spec.as_ref().map_or(0, |sp| sp.max_retries);
                let n = max - s.retries_left + 1;
                Ok(vec![JobEventBody::Requeued {
                    reason: format!(
                        "retry {n} of {max} after: {}",
                        s.reason.as_deref().unwrap_or("a failure")
                    ),
                    resume_from: s.run.as_deref().and_then(|r| self.last_checkpoint(r)),
                }])
            },
            true,
        )
    }

    /// Takes jobs back from agents whose lease ran out, and publishes changes other
    /// relays made. Run every few seconds.
    pub fn sweep(&self) {
        if self.enabled() {
            let _ = self.tokens.load(self);
        }
        let Ok(rows) = self.rows() else {
            return;
        };
        let t = now();
        for r in &rows {
            if let (Some(agent), Some(until)) = (&r.state.agent, r.state.lease_until) {
                if until < t {
                    let agent = agent.clone();
                    tracing::warn!(job = %r.state.job, agent = %agent, "lease ran out: the job goes back to its queue");
                    let _ = self.change(
                        &r.state.job,
                        |row| {
                            Ok(match (&row.state.agent, row.state.lease_until) {
                                (Some(a), Some(u)) if *a == agent && u < now() => {
                                    vec![JobEventBody::LeaseLost {
                                        agent: agent.clone(),
                                    }]
                                }
                                _ => Vec::new(),
                            })
                        },
                        true,
                    );
                    continue;
                }
            }
            let seen = self
                .published
                .lock()
                .ok()
                .and_then(|p| p.get(&r.state.job).copied());
            if seen != Some(r.version) {
                self.publish(r);
            }
        }
    }
}
