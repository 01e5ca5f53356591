//! A job as the API shows it ([`JobView`]: its place in the queue, whether its agent is
//! alive, why it waits, in words) and the queues with their agents ([`QueueInfo`]).

use super::Launcher;
use crate::auth::Identity;
use crate::clock::now;
use crate::storage::jobs::JobRow;
use std::collections::HashMap;
use stepwatch_events::jobs::{
    queue_order, AgentInfo, JobStatus, JobView, QueueInfo, AGENT_ALIVE_S,
};

/// Agents older than this are not listed at all.
const AGENTS_LISTED_S: f64 = 3600.0;

/// What views of several jobs share: the agents, each queued job's place.
pub struct Context {
    agents: Vec<AgentInfo>,
    positions: HashMap<String, usize>,
}

impl Context {
    fn live_in<'a>(&'a self, queue: &'a str) -> impl Iterator<Item = &'a AgentInfo> + 'a {
        self.agents
            .iter()
            .filter(move |a| a.queue == queue && a.alive)
    }
}

/// Whether a job waits in its queue for an agent (not cancelled meanwhile).
fn waits(r: &JobRow) -> bool {
    r.state.status == JobStatus::Queued && r.state.cancel_requested_by.is_none()
}

impl Launcher {
    /// Agents heard from in the last hour, marked alive or not.
    pub fn agent_list(&self) -> Vec<AgentInfo> {
        let t = now();
        let mut agents = self
            .store
            .jobs()
            .agents(t - AGENTS_LISTED_S)
            .unwrap_or_default();
        for a in &mut agents {
            a.alive = t - a.last_seen <= AGENT_ALIVE_S;
        }
        agents
    }

    /// The context of a view, from every open job.
    pub fn context(&self) -> Context {
        let rows = self.rows().unwrap_or_default();
        self.context_with(&rows)
    }

    pub(super) fn context_with(&self, rows: &[JobRow]) -> Context {
        let mut queued: Vec<&JobRow> = rows.iter().filter(|r| waits(r)).collect();
        queued.sort_by(|a, b| queue_order(&a.state, &b.state));
        let mut per_queue: HashMap<&str, usize> = HashMap::new();
        let mut positions = HashMap::new();
        for r in queued {
            let n = per_queue.entry(r.queue.as_str()).or_default();
            *n += 1;
            positions.insert(r.state.job.clone(), *n);
        }
        Context {
            agents: self.agent_list(),
            positions,
        }
    }

    /// One job as the API shows it.
    pub fn view(&self, row: &JobRow, ctx: &Context) -> JobView {
        let s = &row.state;
        let engine = self
            .config
            .queue(&row.queue)
            .map_or_else(String::new, |q| q.engine.as_str().to_string());
        let position = ctx.positions.get(&s.job).copied();
        let holder_alive = s
            .agent
            .as_ref()
            .map(|name| ctx.live_in(&row.queue).any(|a| &a.agent == name));
        let live = ctx.live_in(&row.queue).count();
        let agent_alive = holder_alive.unwrap_or(live > 0);
        let run_live = s
            .run
            .as_deref()
            .and_then(|r| self.run_state(r))
            .is_some_and(|st| st.status.is_live());
        let waiting = waiting(row, ctx, position, holder_alive, live);
        JobView {
            state: s.clone(),
            queue: row.queue.clone(),
            engine,
            position,
            agent_alive,
            waiting,
            run_live,
        }
    }

    /// The queues, with their agents and counts, and what `who` may do on each.
    pub fn queues(&self, who: &Identity) -> Vec<QueueInfo> {
        let rows = self.rows().unwrap_or_default();
        let agents = self.agent_list();
        self.config
            .queues
            .iter()
            .map(|q| QueueInfo {
                name: q.name.clone(),
                engine: q.engine.as_str().to_string(),
                description: q.description.clone(),
                submit_roles: q.submit_roles.clone(),
                free_form_roles: q.free_form_roles.clone(),
                defaults: q.defaults.clone(),
                limits: q.limits.clone(),
                cancel_grace_s: q.cancel_grace_s,
                agents: agents
                    .iter()
                    .filter(|a| a.queue == q.name)
                    .cloned()
                    .collect(),
                queued: rows
                    .iter()
                    .filter(|r| r.queue == q.name && waits(r))
                    .count(),
                active: rows
                    .iter()
                    .filter(|r| {
                        r.queue == q.name
                            && matches!(
                                r.state.status,
                                JobStatus::Claimed | JobStatus::Submitted | JobStatus::Running
                            )
                    })
                    .count(),
                may_submit: super::submit::may(who, &q.submit_roles),
                may_free_form: super::submit::may(who, &q.free_form_roles),
            })
            .collect()
    }
}

/// Why a job waits, when nothing else says it.
fn waiting(
    row: &JobRow,
    ctx: &Context,
    position: Option<usize>,
    holder_alive: Option<bool>,
    live: usize,
) -> Option<String> {
    let s = &row.state;
    if s.is_terminal() {
        return None;
    }
    if let (Some(agent), Some(false)) = (&s.agent, holder_alive) {
        return Some(format!(
            "agent {agent} stopped answering: the job goes to another agent when its lease ends"
        ));
    }
    match s.status {
        JobStatus::Queued if live == 0 => Some(format!(
            "no live agent serves queue {}: the job waits until one starts (stepwatch agent --queue {})",
            row.queue, row.queue
        )),
        JobStatus::Queued => {
            let busy = ctx
                .live_in(&row.queue)
                .all(|a| a.slots > 0 && a.busy >= a.slots);
            Some(match position {
                Some(p) if p > 1 => format!("{} job(s) ahead in queue {}", p - 1, row.queue),
                _ if busy => format!("every agent of queue {} is busy", row.queue),
                _ => "next in line: an agent claims it within seconds".into(),
            })
        }
        JobStatus::Claimed => Some("handed to an agent, starting at its engine".into()),
        JobStatus::Submitted if s.reason.is_none() => {
            Some("at the engine: waiting for the run to report".into())
        }
        JobStatus::Failed => Some("failed: going back to the queue for a retry".into()),
        _ => None,
    }
}
