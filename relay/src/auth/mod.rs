//! Who may see and who may steer: users, roles, sessions and tokens.
//!
//! Without a config file the relay has no login (everyone may do everything), like
//! TensorBoard, and refuses to listen beyond loopback unless told `--insecure-no-auth`.
//! With `--config stepwatch.toml` every API request needs an identity: a session cookie
//! from `POST /api/login` (browsers; HttpOnly, SameSite=Strict) or an
//! `Authorization: Bearer <token>` header (trainers, scripts). Roles:
//!
//! | role | may |
//! |---|---|
//! | `viewer` | read runs, events, series and streams |
//! | `operator` | viewer + send and cancel commands |
//! | `trainer` | write events and read commands, for runs starting with its `run_prefix` if set |
//! | `admin` | everything, including deleting runs |
//!
//! Passwords are stored only as Argon2id hashes (`stepwatch hash-password`); tokens are
//! compared in constant time. The HTTP layer asks [`Auth::identify`] who is calling and
//! [`Identity::may`] whether they may; this module knows nothing of routes.

pub mod sessions;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a sign-out made on this relay outweighs reloads of the shared sessions
/// (it is written to the table a moment later, by another thread).
const RECENT: Duration = Duration::from_secs(10);

/// A session change made on this relay, as reloads of the shared table must see it.
#[derive(Clone, Copy)]
enum Recent {
    /// Signed in; the table write is under way (no reload may drop the session).
    Beginning,
    /// Signed in, and written to the table at this instant: a reload that read the
    /// table before then may lack it.
    Begun(Instant),
    /// Signed out at this instant.
    Ended(Instant),
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "stepwatch_session";
/// Default session lifetime.
pub const DEFAULT_SESSION_HOURS: f64 = 12.0;
/// Shortest token accepted in the config file.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Trainer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Trainer => "trainer",
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
}

impl Action<'_> {
    fn describe(self) -> String {
        match self {
            Action::Read => "read runs".into(),
            Action::Command => "send commands".into(),
            Action::WriteEvents(run) => format!("write events for run {run:?}"),
            Action::ReadCommands(run) => format!("read the commands of run {run:?}"),
            Action::Delete => "delete runs".into(),
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
    /// When the session ends (browser sessions only); streams close then.
    pub expires: Option<Instant>,
    /// The session's key ([`session_key`]), for browser sessions: streams close as soon
    /// as it ends, whichever relay ended it.
    pub session: Option<String>,
}

impl Identity {
    /// Everyone, when there is no authentication.
    pub fn anonymous_admin() -> Identity {
        Identity {
            name: None,
            role: Role::Admin,
            run_prefix: None,
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
        let ok = match (self.role, action) {
            (Role::Admin, _) => true,
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

    fn check(&self) -> Result<(), String> {
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

struct Session {
    user: usize,
    expires: Instant,
}

/// Where sessions are shared when several relays serve one history (the PostgreSQL
/// backend): a browser signed in on one relay stays signed in on the others, and signing
/// out ends the session everywhere. Sessions travel by key ([`session_key`]), never by
/// the cookie's value. `begun` is called off the async threads (sign-in hashes a
/// password there) and may block; `ended` is called on an async thread.
pub trait SessionShare: Send + Sync {
    /// A session began: its key, user name and end (Unix seconds).
    fn begun(&self, key: &str, user: &str, expires_unix: f64);
    /// A session ended (signed out).
    fn ended(&self, key: &str);
}

/// The key a session is stored under: a BLAKE2b hash of its cookie value, so whoever
/// reads the sessions table cannot sign in with what they read.
pub fn session_key(id: &str) -> String {
    use blake2::Digest;
    blake2::Blake2b512::digest(id.as_bytes())
        .iter()
        .take(32)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Why a request has no identity.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthError {
    /// Nothing presented.
    Missing,
    /// A token or session that is not (or no longer) valid.
    Invalid(&'static str),
}

impl AuthError {
    pub fn message(&self) -> String {
        match self {
            AuthError::Missing => {
                "login required: sign in, or send Authorization: Bearer <token>".into()
            }
            AuthError::Invalid(what) => format!("{what}: sign in again or check the token"),
        }
    }
}

/// The relay's authentication state.
pub struct Auth {
    config: Option<Config>,
    /// Sessions by [`session_key`].
    sessions: Mutex<HashMap<String, Session>>,
    /// Where sessions are shared with other relays, if anywhere.
    share: std::sync::OnceLock<std::sync::Arc<dyn SessionShare>>,
    /// Sessions begun or ended here lately, by key: a reload of the shared table that
    /// read it before such a change must not undo it.
    recent: Mutex<HashMap<String, Recent>>,
    /// Open streams per user name.
    streams: Mutex<HashMap<String, usize>>,
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An Argon2id hash of `password` for the config file.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

/// A fresh random token (or session id): 32 bytes, hex.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Auth {
    /// No authentication: everyone is an admin.
    pub fn off() -> Auth {
        Auth {
            config: None,
            sessions: Mutex::new(HashMap::new()),
            share: std::sync::OnceLock::new(),
            recent: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_config(config: Config) -> Auth {
        Auth {
            config: Some(config),
            ..Auth::off()
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// The identity of `user`, signed in by a session (its key and end) or a token.
    fn identity_of(&self, c: &Config, user: usize, session: Option<(&str, Instant)>) -> Identity {
        let u = &c.users[user];
        Identity {
            name: Some(u.name.clone()),
            role: u.role,
            run_prefix: u.run_prefix.clone(),
            expires: session.map(|(_, end)| end),
            session: session.map(|(key, _)| key.to_string()),
        }
    }

    /// Whether the session with this key is still on (not signed out, here or on another
    /// relay sharing sessions, and not expired).
    pub fn session_alive(&self, key: &str) -> bool {
        let now = Instant::now();
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|s| s.expires > now)
    }

    /// Who presents this bearer token and/or session cookie.
    pub fn identify(
        &self,
        bearer: Option<&str>,
        session: Option<&str>,
    ) -> Result<Identity, AuthError> {
        let Some(c) = &self.config else {
            return Ok(Identity::anonymous_admin());
        };
        if let Some(token) = bearer {
            // Check every token of every user, so the time taken does not tell which.
            let mut found = None;
            for (i, u) in c.users.iter().enumerate() {
                for t in &u.tokens {
                    if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                        found = Some(i);
                    }
                }
            }
            return found
                .map(|i| self.identity_of(c, i, None))
                .ok_or(AuthError::Invalid("unknown token"));
        }
        if let Some(id) = session {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
            let key = session_key(id);
            return sessions
                .get(&key)
                .map(|s| self.identity_of(c, s.user, Some((&key, s.expires))))
                .ok_or(AuthError::Invalid("session expired or unknown"));
        }
        Err(AuthError::Missing)
    }

    /// Checks a password; on success a new session id and the identity.
    pub fn login(&self, name: &str, password: &str) -> Option<(String, Identity)> {
        let c = self.config.as_ref()?;
        let user = c.users.iter().position(|u| u.name == name);
        // Verify against some hash even for an unknown user, so timing does not tell.
        let hash = user
            .and_then(|i| c.users[i].password_hash.clone())
            .unwrap_or_else(|| dummy_hash().to_string());
        let parsed = PasswordHash::new(&hash).ok()?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        let user = user.filter(|i| ok && c.users[*i].password_hash.is_some())?;
        let expires = Instant::now() + Duration::from_secs_f64(c.session_hours * 3600.0);
        let id = new_token();
        let key = session_key(&id);
        let who = self.identity_of(c, user, Some((&key, expires)));
        let share = self.share.get();
        if share.is_some() {
            // Before the session exists here, so no reload can drop it unprotected.
            self.note_recent(&key, Recent::Beginning);
        }
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), Session { user, expires });
        if let Some(share) = share {
            // Blocks until written (or queued, when the database is down: reloads then
            // wait for the queue to be written first).
            share.begun(
                &key,
                &c.users[user].name,
                unix_now() + c.session_hours * 3600.0,
            );
            self.note_recent(&key, Recent::Begun(Instant::now()));
        }
        Some((id, who))
    }

    pub fn logout(&self, session: &str) {
        let key = session_key(session);
        if let Some(share) = self.share.get() {
            self.note_recent(&key, Recent::Ended(Instant::now()));
            share.ended(&key);
        }
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    fn note_recent(&self, key: &str, change: Recent) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|_, r| match r {
            Recent::Beginning => true,
            Recent::Begun(at) | Recent::Ended(at) => at.elapsed() < RECENT,
        });
        recent.insert(key.to_string(), change);
    }

    /// Shares sessions with other relays from now on (once).
    pub fn share_sessions(&self, share: std::sync::Arc<dyn SessionShare>) {
        let _ = self.share.set(share);
    }

    /// The sessions of every relay (key, user name, end in Unix seconds), as read from
    /// the shared table starting at `read_at`: replaces every session this relay knows,
    /// so one ended elsewhere ends here too, except for this relay's own changes that
    /// the read may have missed. Users the config no longer names are skipped.
    pub fn load_shared_sessions(&self, all: &[(String, String, f64)], read_at: Instant) {
        let Some(c) = &self.config else {
            return;
        };
        let now = unix_now();
        let mut fresh: HashMap<String, Session> = all
            .iter()
            .filter(|(_, _, end)| *end > now)
            .filter_map(|(key, name, end)| {
                let user = c.users.iter().position(|u| &u.name == name)?;
                let expires = Instant::now() + Duration::from_secs_f64(end - now);
                Some((key.clone(), Session { user, expires }))
            })
            .collect();
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        for (key, change) in recent.iter() {
            match *change {
                // Written after the read began (or not yet): the read may lack it.
                Recent::Beginning => {}
                Recent::Begun(at) if at > read_at => {}
                Recent::Begun(_) => continue,
                // A sign-out never comes back; its table write may lag a moment.
                Recent::Ended(at) if at.elapsed() < RECENT => {
                    fresh.remove(key);
                    continue;
                }
                Recent::Ended(_) => continue,
            }
            if let Some(s) = sessions.remove(key) {
                fresh.insert(key.clone(), s);
            }
        }
        *sessions = fresh;
    }

    /// Seconds a new session lasts (for the cookie's Max-Age).
    pub fn session_seconds(&self) -> u64 {
        self.config
            .as_ref()
            .map_or(0, |c| (c.session_hours * 3600.0) as u64)
    }

    /// Counts an open stream for the identity; `Err` when the user holds too many.
    pub fn open_stream(self: &std::sync::Arc<Self>, who: &Identity) -> Result<OwnedTicket, String> {
        let (Some(c), Some(name)) = (&self.config, &who.name) else {
            return Ok(OwnedTicket {
                auth: self.clone(),
                name: None,
            });
        };
        let mut open = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(name.clone()).or_default();
        if *n >= c.max_streams_per_user {
            return Err(format!(
                "user {name:?} already has {n} open streams (the limit is {}): close some tabs",
                c.max_streams_per_user
            ));
        }
        *n += 1;
        Ok(OwnedTicket {
            auth: self.clone(),
            name: Some(name.clone()),
        })
    }
}

/// A stream slot held by a running stream; dropping it gives the slot back.
pub struct OwnedTicket {
    auth: std::sync::Arc<Auth>,
    name: Option<String>,
}

impl std::fmt::Debug for OwnedTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnedTicket({:?})", self.name)
    }
}

impl Drop for OwnedTicket {
    fn drop(&mut self) {
        release(&self.auth, self.name.as_deref());
    }
}

fn release(auth: &Auth, name: Option<&str>) {
    if let Some(name) = name {
        let mut open = auth.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(name) {
            *n = n.saturating_sub(1);
        }
    }
}

/// An Argon2id hash of a random password, verified against when the user is unknown.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&new_token()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config() -> Config {
        toml::from_str(&format!(
            r#"
            [[users]]
            name = "alice"
            role = "operator"
            password_hash = "{}"
            [[users]]
            name = "ci"
            role = "trainer"
            tokens = ["ci-token-0123456789"]
            run_prefix = "ci-"
            "#,
            hash_password("wonderland").unwrap()
        ))
        .unwrap()
    }

    #[test]
    fn roles_may_exactly_what_the_table_says() {
        let v = |role, prefix: Option<&str>| Identity {
            name: Some("u".into()),
            role,
            run_prefix: prefix.map(str::to_string),
            expires: None,
            session: None,
        };
        let viewer = v(Role::Viewer, None);
        assert!(viewer.may(Action::Read).is_ok());
        assert!(viewer.may(Action::Command).is_err());
        assert!(viewer.may(Action::WriteEvents("r")).is_err());
        let op = v(Role::Operator, None);
        assert!(op.may(Action::Command).is_ok());
        assert!(op.may(Action::Delete).is_err());
        let t = v(Role::Trainer, Some("ci-"));
        assert!(t.may(Action::WriteEvents("ci-1")).is_ok());
        assert!(t.may(Action::ReadCommands("ci-1")).is_ok());
        let e = t.may(Action::WriteEvents("prod")).unwrap_err();
        assert!(e.contains("ci-") && e.contains("prod"), "{e}");
        assert!(t.may(Action::Read).is_err());
        assert!(v(Role::Admin, None).may(Action::Delete).is_ok());
    }

    #[test]
    fn passwords_tokens_and_sessions() {
        let auth = Auth::with_config(config());
        assert!(auth.login("alice", "wrong").is_none());
        assert!(auth.login("nobody", "wonderland").is_none());
        let (sid, who) = auth.login("alice", "wonderland").unwrap();
        assert_eq!(who.role, Role::Operator);
        assert_eq!(
            auth.identify(None, Some(&sid)).unwrap().name.as_deref(),
            Some("alice")
        );
        let ci = auth.identify(Some("ci-token-0123456789"), None).unwrap();
        assert_eq!(ci.role, Role::Trainer);
        assert!(auth.identify(Some("ci-token-012345678X"), None).is_err());
        assert_eq!(auth.identify(None, None), Err(AuthError::Missing));
        auth.logout(&sid);
        assert!(auth.identify(None, Some(&sid)).is_err());
    }

    /// The shared table, as a list: what `begun` and `ended` wrote.
    #[derive(Default)]
    struct Table(Mutex<Vec<(String, String, f64)>>);
    impl SessionShare for Table {
        fn begun(&self, key: &str, user: &str, end: f64) {
            self.0.lock().unwrap().push((key.into(), user.into(), end));
        }
        fn ended(&self, key: &str) {
            self.0.lock().unwrap().retain(|(k, _, _)| k != key);
        }
    }

    #[test]
    fn reloads_of_shared_sessions_keep_only_changes_they_may_have_missed() {
        let auth = Auth::with_config(config());
        let table = std::sync::Arc::new(Table::default());
        auth.share_sessions(table.clone());
        let before_sign_in = Instant::now();
        let (sid, who) = auth.login("alice", "wonderland").unwrap();
        let key = who.session.clone().unwrap();
        assert_eq!(key, session_key(&sid));
        assert!(auth.session_alive(&key));
        // A read that began before the sign-in was written lacks it: the session stays.
        auth.load_shared_sessions(&[], before_sign_in);
        assert!(
            auth.session_alive(&key),
            "a stale read dropped a fresh sign-in"
        );
        // A read after it is the truth: without the row, it was signed out elsewhere.
        auth.load_shared_sessions(&[], Instant::now());
        assert!(
            !auth.session_alive(&key),
            "a sign-out elsewhere was ignored"
        );
        assert!(auth.identify(None, Some(&sid)).is_err());
        // A session begun elsewhere is known after a reload.
        let rows = vec![(session_key("other"), "alice".to_string(), unix_now() + 60.0)];
        auth.load_shared_sessions(&rows, Instant::now());
        assert!(auth.identify(None, Some("other")).is_ok());
        // A sign-out here is not undone by a read that still has the row.
        auth.logout("other");
        auth.load_shared_sessions(&rows, Instant::now());
        assert!(
            auth.identify(None, Some("other")).is_err(),
            "a sign-out came back"
        );
        // Rows of users the config does not name, or past their end, are skipped.
        let rows = vec![
            (session_key("ghost"), "ghost".to_string(), unix_now() + 60.0),
            (session_key("old"), "alice".to_string(), unix_now() - 1.0),
        ];
        auth.load_shared_sessions(&rows, Instant::now());
        assert!(auth.identify(None, Some("ghost")).is_err());
        assert!(auth.identify(None, Some("old")).is_err());
    }

    #[test]
    fn bad_config_files_say_what_is_wrong() {
        for (text, want) in [
            ("", "no [[users]]"),
            (
                "[[users]]\nname='a'\nrole='boss'\ntokens=['0123456789abcdef']",
                "unknown variant",
            ),
            (
                "[[users]]\nname='a'\nrole='admin'\npassword_hash='plain'",
                "not an Argon2 hash",
            ),
            (
                "[[users]]\nname='a'\nrole='admin'\ntokens=['short']",
                "at least 16",
            ),
            (
                "[[users]]\nname='a'\nrole='admin'",
                "neither a password_hash nor tokens",
            ),
            (
                "[[users]]\nname='a'\nrole='viewer'\ntokens=['0123456789abcdef']\nrun_prefix='x'",
                "trainers only",
            ),
        ] {
            let err = toml::from_str::<Config>(text)
                .map_err(|e| e.to_string())
                .and_then(|c| c.check())
                .unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn streams_per_user_are_capped() {
        let mut c = config();
        c.max_streams_per_user = 2;
        let auth = std::sync::Arc::new(Auth::with_config(c));
        let ci = auth.identify(Some("ci-token-0123456789"), None).unwrap();
        let a = auth.open_stream(&ci).unwrap();
        let _b = auth.open_stream(&ci).unwrap();
        assert!(auth
            .open_stream(&ci)
            .unwrap_err()
            .contains("2 open streams"));
        drop(a);
        assert!(auth.open_stream(&ci).is_ok());
    }
}
