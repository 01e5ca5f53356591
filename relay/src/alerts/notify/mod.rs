//! Notifiers: one alert notice to one channel (webhook, Slack/Mattermost, e-mail).
//! (Placeholder until the notifiers land: every channel refuses to parse.)

use std::time::Duration;
use stepwatch_events::FieldError;

pub const MAX_ATTEMPTS: u32 = 5;
pub const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeState {
    Fired,
    Resolved,
}

impl NoticeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeState::Fired => "fired",
            NoticeState::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone)]
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
    pub url: String,
    pub time: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Webhook,
    Slack,
    Mattermost,
    Email,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Mattermost => "mattermost",
            ChannelKind::Email => "email",
        }
    }
}

#[derive(Debug)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
}

impl Channel {
    pub fn parse(_name: &str, _v: &serde_json::Value, at: &str) -> Result<Channel, FieldError> {
        Err(FieldError::new(at, "channels are not built yet"))
    }

    pub fn send(&self, _n: &Notice, _timeout: Duration) -> Result<(), String> {
        Err("not built".into())
    }
}
