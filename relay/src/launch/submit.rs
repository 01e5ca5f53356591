//! Submissions: a [`JobSpec`] checked against its queue (who may submit, who may give a
//! free-form argv, the template's typed parameters, resources within the queue's
//! limits), previewed (what would run, and the config diff of a re-run), queued; and the
//! user's cancel and retry.

use super::{Launcher, QueueConfig};
use crate::api::ApiError;
use crate::auth::{Identity, Role};
use crate::clock::now;
use crate::storage::jobs::JobRow;
use actix_web::http::StatusCode;
use serde_json::{Map, Value};
use stepwatch_events::jobs::{
    Entry, FieldError, JobEvent, JobEventBody, JobSpec, JobState, JobStatus, Preview, Resources,
    Submitted,
};
use stepwatch_events::template::Rendered;

/// Whether `who` has one of `roles` (an admin always has).
pub fn may(who: &Identity, roles: &[String]) -> bool {
    who.role == Role::Admin || roles.iter().any(|r| r == who.role.as_str())
}

/// A refusal naming its field: 400 with `field` beside `error`.
pub fn field_error(e: FieldError) -> ApiError {
    let field = e.field.clone();
    ApiError::bad_request(e.to_string()).with("field", field)
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

/// A checked submission: what will run.
pub struct Prepared {
    pub spec: JobSpec,
    pub rendered: Rendered,
    pub resources: Resources,
    pub warnings: Vec<String>,
    pub diff: Vec<(String, Value, Value)>,
}

/// The job's resources: its own, else the queue's defaults; each within the queue's limit.
fn resources(spec: &Resources, q: &QueueConfig) -> Result<Resources, ApiError> {
    let d = &q.defaults;
    let r = Resources {
        gpus: spec.gpus.or(d.gpus),
        cpus: spec.cpus.or(d.cpus),
        memory_mb: spec.memory_mb.or(d.memory_mb),
        nodes: spec.nodes.or(d.nodes),
        time_limit_s: spec.time_limit_s.or(d.time_limit_s),
    };
    let l = &q.limits;
    let rows = [
        ("gpus", r.gpus.map(u64::from), l.gpus.map(u64::from)),
        ("cpus", r.cpus.map(u64::from), l.cpus.map(u64::from)),
        ("memory_mb", r.memory_mb, l.memory_mb),
        ("nodes", r.nodes.map(u64::from), l.nodes.map(u64::from)),
        ("time_limit_s", r.time_limit_s, l.time_limit_s),
    ];
    for (name, value, limit) in rows {
        if let (Some(v), Some(max)) = (value, limit) {
            if v > max {
                return Err(field_error(FieldError::new(
                    format!("resources.{name}"),
                    format!("{v} is over queue {:?}'s limit of {max}", q.name),
                )));
            }
        }
    }
    Ok(r)
}

/// `[key, old, new]` for each config key that differs.
fn config_diff(
    old: &Map<String, Value>,
    new: &std::collections::BTreeMap<String, Value>,
) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    for (k, v) in new {
        let before = old.get(k).cloned().unwrap_or(Value::Null);
        let same = match (before.as_f64(), v.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => &before == v,
        };
        if !same {
            out.push((k.clone(), before, v.clone()));
        }
    }
    out
}

/// A short, safe run name from a job name.
fn slug(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-');
    let s: String = s.chars().take(48).collect();
    if s.is_empty() {
        "job".into()
    } else {
        s.trim_end_matches('-').to_string()
    }
}

impl Launcher {
    /// The queue a spec names; 400 naming `queue` otherwise.
    fn queue_of(&self, name: &str) -> Result<&QueueConfig, ApiError> {
        self.config.queue(name).ok_or_else(|| {
            let names: Vec<&str> = self.config.queues.iter().map(|q| q.name.as_str()).collect();
            field_error(FieldError::new(
                "queue",
                if names.is_empty() {
                    "this relay has no queues (start it with --launch launch.toml)".to_string()
                } else {
                    format!("no queue {name:?}: queues are {}", names.join(", "))
                },
            ))
        })
    }

    /// Checks a submission (JSON as sent) for `who`.
    pub fn prepare(&self, body: Value, who: &Identity) -> Result<Prepared, ApiError> {
        let spec = JobSpec::from_value(body).map_err(field_error)?;
        let q = self.queue_of(&spec.queue)?;
        if !may(who, &q.submit_roles) {
            return Err(forbidden(format!(
                "role {} may not submit to queue {:?} (it takes {})",
                who.role.as_str(),
                q.name,
                q.submit_roles.join(", ")
            )));
        }
        let rendered = match &spec.entry {
            Entry::Argv { argv, cwd, env } => {
                if !may(who, &q.free_form_roles) {
                    return Err(forbidden(format!(
                        "on queue {:?} only {} may give a free-form command: choose a template",
                        q.name,
                        q.free_form_roles.join(", ")
                    )));
                }
                Rendered {
                    argv: argv.clone(),
                    env: env.clone(),
                    cwd: cwd.clone(),
                    values: Default::default(),
                }
            }
            Entry::Template { template, params } => {
                let t = self.config.template(template).ok_or_else(|| {
                    field_error(FieldError::new(
                        "entry.template",
                        format!("no template {template:?}"),
                    ))
                })?;
                if let Some(tq) = &t.queue {
                    if tq != &q.name {
                        return Err(field_error(FieldError::new(
                            "entry.template",
                            format!(
                                "template {template:?} is offered on queue {tq:?}, not {:?}",
                                q.name
                            ),
                        )));
                    }
                }
                t.template.render(params).map_err(|mut e| {
                    if e.field.starts_with("params") {
                        e.field = format!("entry.{}", e.field);
                    }
                    field_error(e)
                })?
            }
        };
        let resources = resources(&spec.resources, q)?;
        let mut diff = Vec::new();
        if let Some(run) = &spec.clone_of {
            let state = self.run_state(run).ok_or_else(|| {
                field_error(FieldError::new("clone_of", format!("no run {run:?}")))
            })?;
            diff = config_diff(&state.config, &rendered.values);
        }
        let mut warnings = Vec::new();
        let live = self
            .agent_list()
            .iter()
            .filter(|a| a.queue == q.name && a.alive)
            .count();
        if live == 0 {
            warnings.push(format!(
                "no live agent serves queue {:?}: the job waits until one starts (stepwatch agent --queue {} --engine {})",
                q.name,
                q.name,
                q.engine.as_str()
            ));
        }
        Ok(Prepared {
            spec,
            rendered,
            resources,
            warnings,
            diff,
        })
    }

    /// What a submission would run.
    pub fn preview(&self, body: Value, who: &Identity) -> Result<Preview, ApiError> {
        let p = self.prepare(body, who)?;
        Ok(Preview {
            argv: p.rendered.argv,
            cwd: p.rendered.cwd,
            env: p.rendered.env,
            values: p.rendered.values,
            resources: p.resources,
            diff: p.diff,
            warnings: p.warnings,
        })
    }

    /// Queues a submission.
    pub fn submit(&self, body: Value, who: &Identity) -> Result<Submitted, ApiError> {
        let p = self.prepare(body, who)?;
        let waiting = self
            .rows()?
            .iter()
            .filter(|r| r.queue == p.spec.queue && r.state.status == JobStatus::Queued)
            .count();
        let q = self.queue_of(&p.spec.queue)?;
        if waiting >= q.max_queued {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "queue {:?} holds {waiting} waiting jobs, its limit (max_queued)",
                    q.name
                ),
            ));
        }
        let id = format!("j{:010x}", rand::random::<u64>() & 0xff_ffff_ffff);
        let run = format!("{}-{id}", slug(&p.spec.name));
        self.queue_job(&id, run, p, who, None)
    }

    fn queue_job(
        &self,
        id: &str,
        run: String,
        p: Prepared,
        who: &Identity,
        resume_from: Option<String>,
    ) -> Result<Submitted, ApiError> {
        let mut spec = p.spec;
        spec.resources = p.resources;
        let queue = spec.queue.clone();
        let event = JobEvent {
            ts: now(),
            body: JobEventBody::Submitted {
                spec: Box::new(spec),
                by: who.name.clone().unwrap_or_else(|| "dashboard".into()),
                run: Some(run.clone()),
                launch: Some(Box::new(p.rendered)),
                resume_from,
            },
        };
        let mut state = JobState::new(id);
        state
            .apply(&event)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let row = self.insert(&state, &queue, &event)?;
        let view = self.view(&row, &self.context());
        Ok(Submitted {
            job: id.to_string(),
            run,
            status: view.state.status.as_str().to_string(),
            position: view.position,
            warnings: p.warnings,
        })
    }

    /// Whether `who` may cancel or retry `row`: an operator, an admin, or who submitted it.
    fn may_steer(who: &Identity, row: &JobRow) -> Result<(), ApiError> {
        let own = who.name.is_some() && who.name == row.state.by;
        if matches!(who.role, Role::Admin | Role::Operator) || own {
            Ok(())
        } else {
            Err(forbidden(format!(
                "role {} may not cancel or retry another user's job",
                who.role.as_str()
            )))
        }
    }

    /// Cancels a job: at once while it waits, else by asking (the `stop` command, then
    /// the agent's kill after the queue's grace period). Returns the run to send `stop`
    /// to, when it has a live trainer.
    pub fn cancel(&self, id: &str, who: &Identity) -> Result<(JobRow, Option<String>), ApiError> {
        let by = who.name.clone().unwrap_or_else(|| "dashboard".into());
        let row = self.row(id)?;
        Self::may_steer(who, &row)?;
        // A trainer on the SDK is asked first: the `stop` command, then the engine.
        let trainer = row.state.run.clone().filter(|r| {
            self.run_state(r).is_some_and(|s| {
                matches!(
                    s.status,
                    stepwatch_events::RunStatus::Running | stepwatch_events::RunStatus::Paused
                )
            })
        });
        let row = self.change(
            id,
            |row| {
                let s = &row.state;
                if s.is_terminal() {
                    return Err(ApiError::conflict(format!(
                        "job {id:?} is already {}",
                        s.status.as_str()
                    )));
                }
                if s.cancel_requested_by.is_some() {
                    return Ok(Vec::new());
                }
                let waiting = matches!(s.status, JobStatus::Queued | JobStatus::Failed);
                let mut out = vec![JobEventBody::CancelRequested {
                    by: by.clone(),
                    stop_command: trainer.is_some() && !waiting,
                }];
                if waiting {
                    out.push(JobEventBody::Cancelled {
                        reason: format!("cancelled by {by} before it started"),
                    });
                }
                Ok(out)
            },
            true,
        )?;
        let stop = trainer.filter(|_| row.state.cancel_stop_command);
        Ok((row, stop))
    }

    /// Moves a waiting job in its queue.
    pub fn reprioritize(
        &self,
        id: &str,
        priority: i32,
        who: &Identity,
    ) -> Result<JobRow, ApiError> {
        let row = self.row(id)?;
        Self::may_steer(who, &row)?;
        let by = who.name.clone().unwrap_or_else(|| "dashboard".into());
        self.change(
            id,
            |_| {
                Ok(vec![JobEventBody::PriorityChanged {
                    priority,
                    by: by.clone(),
                }])
            },
            true,
        )
    }

    /// A finished job submitted again as a new job reporting to the same run, resuming
    /// from the run's last checkpoint.
    pub fn retry(&self, id: &str, who: &Identity) -> Result<Submitted, ApiError> {
        let row = self.row(id)?;
        Self::may_steer(who, &row)?;
        if !row.state.is_terminal() || row.state.status == JobStatus::Succeeded {
            return Err(ApiError::conflict(format!(
                "job {id:?} is {}: only a failed or cancelled job is retried",
                row.state.status.as_str()
            )));
        }
        let spec = row
            .state
            .spec
            .clone()
            .ok_or_else(|| ApiError::conflict(format!("job {id:?} has no spec")))?;
        let body = serde_json::to_value(&spec).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let p = self.prepare(body, who)?;
        let run = row
            .state
            .run
            .clone()
            .unwrap_or_else(|| format!("{}-{id}", slug(&spec.name)));
        let resume = self.last_checkpoint(&run);
        let new_id = format!("j{:010x}", rand::random::<u64>() & 0xff_ffff_ffff);
        self.queue_job(&new_id, run, p, who, resume)
    }

    /// The newest checkpoint `run` reported.
    pub fn last_checkpoint(&self, run: &str) -> Option<String> {
        self.run_state(run)?
            .checkpoints
            .last()
            .map(|c| c.path.clone())
    }
}
