//! Roles, the actions they may take, and the identity of a caller.

use serde::Deserialize;
use std::time::Instant;

/// What a role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Trainer,
    /// A `stepwatch agent`: claims and reports launched jobs, reads queues.
    Agent,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Trainer => "trainer",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

/// One action on the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Read runs, events, series, streams, metrics.
    Read,
    /// Send or cancel a command to a run.
    Command,
    /// Write events for a run.
    WriteEvents(&'a str),
    /// Follow a run's command stream (the trainer side).
    ReadCommands(&'a str),
    /// Delete runs.
    Delete,
    /// Submit, cancel or retry launched jobs (the queue then says which roles may).
    Submit,
    /// Heartbeat, claim and report jobs (agents).
    Agent,
}

impl Action<'_> {
    fn describe(self) -> String {
        match self {
            Action::Read => "read runs".into(),
            Action::Command => "send commands".into(),
            Action::WriteEvents(run) => format!("write events for run {run:?}"),
            Action::ReadCommands(run) => format!("read the commands of run {run:?}"),
            Action::Delete => "delete runs".into(),
            Action::Submit => "launch jobs".into(),
            Action::Agent => "serve a queue as an agent".into(),
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// `None` when the relay runs without authentication.
    pub name: Option<String>,
    pub role: Role,
    /// For trainers: the runs they may write, by prefix.
    pub run_prefix: Option<String>,
    /// For a launched job's token: the one run it may write.
    pub only_run: Option<String>,
    /// When the session ends (browser sessions only); streams close then.
    pub expires: Option<Instant>,
    /// The session's key ([`super::session_key`]), for browser sessions: streams close as soon
    /// as it ends, whichever relay ended it.
    pub session: Option<String>,
}

impl Identity {
    /// A launched job's trainer, with the token the agent handed it.
    pub fn job_token(job: &str, run: &str) -> Identity {
        Identity {
            name: Some(format!("job {job}")),
            role: Role::Trainer,
            run_prefix: None,
            only_run: Some(run.to_string()),
            expires: None,
            session: None,
        }
    }

    /// Everyone, when there is no authentication.
    pub fn anonymous_admin() -> Identity {
        Identity {
            name: None,
            role: Role::Admin,
            run_prefix: None,
            only_run: None,
            expires: None,
            session: None,
        }
    }

    /// Whether this identity may do `action`; the error says why not.
    pub fn may(&self, action: Action<'_>) -> Result<(), String> {
        let in_prefix = |run: &str| {
            self.run_prefix
                .as_deref()
                .is_none_or(|p| run.starts_with(p))
        };
        if let Some(only) = &self.only_run {
            return match action {
                Action::WriteEvents(run) | Action::ReadCommands(run) if run == only => Ok(()),
                _ => Err(format!(
                    "{} may only write run {only:?}, not {}",
                    self.label(),
                    action.describe()
                )),
            };
        }
        let ok = match (self.role, action) {
            (Role::Admin, _) => true,
            (Role::Viewer | Role::Operator, Action::Submit) => true,
            (Role::Agent, Action::Agent | Action::Read) => true,
            (Role::Viewer | Role::Operator, Action::Read) => true,
            (Role::Operator, Action::Command) => true,
            (Role::Trainer, Action::WriteEvents(run) | Action::ReadCommands(run)) => {
                if !in_prefix(run) {
                    return Err(format!(
                        "{} may only use runs starting with {:?}, not {run:?}",
                        self.label(),
                        self.run_prefix.as_deref().unwrap_or_default()
                    ));
                }
                true
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} (role {}) may not {}",
                self.label(),
                self.role.as_str(),
                action.describe()
            ))
        }
    }

    fn label(&self) -> String {
        self.name
            .as_deref()
            .map_or_else(|| "this caller".to_string(), |n| format!("user {n:?}"))
    }
}
