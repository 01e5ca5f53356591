//! `stepwatch.toml`: users, their roles, password hashes and tokens; loaded and checked.

use argon2::password_hash::PasswordHash;
use serde::Deserialize;
use std::path::Path;

use super::roles::Role;
use super::{DEFAULT_SESSION_HOURS, MIN_TOKEN_LEN};

/// One user of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub role: Role,
    /// Argon2 PHC string from `stepwatch hash-password`; needed to log in from a browser.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// API tokens (`Authorization: Bearer …`), for trainers and scripts.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Trainers only: the runs they may write start with this.
    #[serde(default)]
    pub run_prefix: Option<String>,
}

/// `stepwatch.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Hours a browser session lasts.
    #[serde(default = "default_session_hours")]
    pub session_hours: f64,
    /// Open SSE streams one user may hold.
    #[serde(default = "default_streams_per_user")]
    pub max_streams_per_user: usize,
    #[serde(default, rename = "users")]
    pub users: Vec<UserConfig>,
    /// Alert rules and channels, read by `alerts::AlertConfig` (docs/ALERTS.md).
    #[serde(default)]
    pub alerts: Option<toml::Value>,
}

fn default_session_hours() -> f64 {
    DEFAULT_SESSION_HOURS
}

fn default_streams_per_user() -> usize {
    32
}

impl Config {
    /// Reads and checks a config file; the error names the file and what is wrong.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        let config: Config =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        config
            .check()
            .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        Ok(config)
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.users.is_empty() {
            return Err("no [[users]]: add at least one admin".into());
        }
        if !(self.session_hours > 0.0 && self.session_hours.is_finite()) {
            return Err("session_hours must be a positive number".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut tokens = std::collections::HashSet::new();
        for u in &self.users {
            if u.name.is_empty() || u.name.len() > 64 || u.name.chars().any(char::is_control) {
                return Err(format!(
                    "user name {:?}: 1 to 64 printable characters",
                    u.name
                ));
            }
            if !names.insert(u.name.as_str()) {
                return Err(format!("user {:?} appears twice", u.name));
            }
            if let Some(h) = &u.password_hash {
                PasswordHash::new(h).map_err(|e| {
                    format!(
                        "user {:?}: password_hash is not an Argon2 hash ({e}); make one with `stepwatch hash-password`",
                        u.name
                    )
                })?;
            }
            if u.password_hash.is_none() && u.tokens.is_empty() {
                return Err(format!(
                    "user {:?} has neither a password_hash nor tokens: nobody could use it",
                    u.name
                ));
            }
            for t in &u.tokens {
                if t.len() < MIN_TOKEN_LEN {
                    return Err(format!(
                        "user {:?}: tokens must be at least {MIN_TOKEN_LEN} characters (`stepwatch new-token` makes one)",
                        u.name
                    ));
                }
                if !tokens.insert(t.as_str()) {
                    return Err(format!("user {:?}: a token is used twice", u.name));
                }
            }
            if u.run_prefix.is_some() && u.role != Role::Trainer {
                return Err(format!(
                    "user {:?}: run_prefix applies to trainers only",
                    u.name
                ));
            }
        }
        Ok(())
    }
}
