//! Alert notifiers: one [`Notice`] sent to one [`Channel`], in one blocking attempt.
//!
//! A channel comes from the config (`[alerts.channels.NAME]`, see `docs/ALERTS.md`) through
//! [`Channel::parse`], which checks every field and reads `url_env` / `password_env` then.
//! [`Channel::send`] makes one attempt within a time limit; the caller (the alert engine's
//! delivery thread) retries after [`RETRY_DELAYS`], [`MAX_ATTEMPTS`] in all.
//!
//! - `webhook`: `POST` of the notice as JSON (`webhook.rs`).
//! - `slack`, `mattermost`: the incoming-webhook format `{"text": one_line(n)}`.
//! - `email`: a small SMTP client over `std::net::TcpStream` and rustls (`smtp.rs`).
//!
//! Secrets (webhook URLs and their headers, SMTP passwords) stay inside [`Channel`]: its
//! `Debug` and `Display` show the name and kind, and errors name the host at most.

mod config;
mod message;
mod smtp;
mod tls;
mod webhook;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;
use stepwatch_events::FieldError;

/// Attempts per notice and channel, the first included.
pub const MAX_ATTEMPTS: u32 = 5;

/// The waits between attempts: after the first failure, the second, …
pub const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// Whether a notice says an alert started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeState {
    Fired,
    Resolved,
}

impl NoticeState {
    /// `"fired"` or `"resolved"`.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeState::Fired => "fired",
            NoticeState::Resolved => "resolved",
        }
    }
}

/// One alert transition, as told to people.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub state: NoticeState,
    pub alert_id: String,
    pub run: String,
    pub run_name: String,
    pub rule: String,
    pub kind: String,
    pub level: String,
    pub title: String,
    pub text: String,
    pub metric: Option<String>,
    pub value: Option<f64>,
    pub step: Option<u64>,
    pub action: Option<String>,
    /// Link to the run page.
    pub url: String,
    /// Unix seconds.
    pub time: f64,
}

impl Notice {
    /// The run as people know it: its name, else its id.
    fn run_label(&self) -> &str {
        if self.run_name.trim().is_empty() {
            &self.run
        } else {
            &self.run_name
        }
    }
}

/// Where a channel sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Webhook,
    Slack,
    Mattermost,
    Email,
}

impl ChannelKind {
    /// `"webhook"`, `"slack"`, `"mattermost"` or `"email"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Mattermost => "mattermost",
            ChannelKind::Email => "email",
        }
    }

    /// The kind named `s` in the config.
    pub fn parse(s: &str) -> Option<ChannelKind> {
        match s {
            "webhook" => Some(ChannelKind::Webhook),
            "slack" => Some(ChannelKind::Slack),
            "mattermost" => Some(ChannelKind::Mattermost),
            "email" => Some(ChannelKind::Email),
            _ => None,
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configured notice channel. `Send + Sync`: one value may serve several threads.
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    target: Target,
}

/// The target with its secrets.
enum Target {
    Http(webhook::HttpTarget),
    Email(Box<smtp::SmtpTarget>),
}

impl Channel {
    /// Reads the channel `name` from its config table `v` (TOML converted to JSON); errors
    /// name the field under `at`, e.g. `alerts.channels.ops.url`. `url_env` and
    /// `password_env` are read from the environment now.
    pub fn parse(name: &str, v: &serde_json::Value, at: &str) -> Result<Channel, FieldError> {
        config::parse(name, v, at)
    }

    /// One attempt to deliver `n`, blocking, within `timeout`. The error is a short
    /// message for people with no secret in it (no URL path or query, no password).
    pub fn send(&self, n: &Notice, timeout: Duration) -> Result<(), String> {
        match &self.target {
            Target::Http(t) => {
                let body = match self.kind {
                    ChannelKind::Slack | ChannelKind::Mattermost => {
                        serde_json::json!({ "text": one_line(n) })
                    }
                    ChannelKind::Webhook | ChannelKind::Email => webhook::payload(n),
                };
                t.post(&body, timeout)
            }
            Target::Email(t) => t.send(n, timeout),
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.kind)
    }
}

/// The e-mail subject: `[stepwatch] error: loss is NaN — my-run`, or
/// `[stepwatch] resolved: loss is NaN — my-run`.
pub fn subject(n: &Notice) -> String {
    let head = match n.state {
        NoticeState::Fired => n.level.as_str(),
        NoticeState::Resolved => "resolved",
    };
    flatten(&format!(
        "[stepwatch] {head}: {} — {}",
        n.title,
        n.run_label()
    ))
}

/// The Slack / Mattermost text: one line, with the link to the run, e.g.
/// `[error] loss is NaN — <http://…/runs/r1|my-run> · step 120 · loss = NaN · action: pause`.
pub fn one_line(n: &Notice) -> String {
    let head = match n.state {
        NoticeState::Fired => n.level.as_str(),
        NoticeState::Resolved => "resolved",
    };
    let mut s = format!(
        "[{}] {} — <{}|{}>",
        slack_escape(head),
        slack_escape(&n.title),
        slack_escape(&n.url).replace('|', "%7C"),
        slack_escape(n.run_label()).replace('|', "¦"),
    );
    for d in details(n) {
        s.push_str(" · ");
        s.push_str(&slack_escape(&d));
    }
    flatten(&s)
}

/// Step, metric value and action, as short phrases.
fn details(n: &Notice) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(step) = n.step {
        out.push(format!("step {step}"));
    }
    match (&n.metric, n.value) {
        (Some(m), Some(v)) => out.push(format!("{m} = {}", fmt_value(v))),
        (None, Some(v)) => out.push(format!("value {}", fmt_value(v))),
        _ => {}
    }
    if let Some(a) = &n.action {
        out.push(format!("action: {a}"));
    }
    out
}

/// A metric value for people: `NaN`, `12.5`, `1e-8`.
fn fmt_value(v: f64) -> String {
    if v.is_finite() {
        stepwatch_events::alerts::rule::fmt_num(v)
    } else {
        stepwatch_events::num::non_finite_name(v).to_string()
    }
}

/// Slack's three escapes, so a run name cannot make a link or a mention (`<!channel>`).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line: every run of control characters (CR, LF, tab, …) becomes one space.
fn flatten(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut gap = false;
    for c in s.chars() {
        if c.is_control() {
            gap = true;
        } else {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.push(c);
        }
    }
    out
}
