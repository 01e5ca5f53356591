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
//! | `agent` | read, and serve launch queues (heartbeat, claim, report jobs) |
//! | `admin` | everything, including deleting runs |
//!
//! Viewers and operators may ask to launch (the queue's `submit_roles` decide). A launched
//! job's trainer gets a token (`swj.…`, [`crate::launch::tokens`]) that may write its one
//! run only.
//!
//! Passwords are stored only as Argon2id hashes (`stepwatch hash-password`); tokens are
//! compared in constant time. The HTTP layer asks [`Auth::identify`] who is calling and
//! [`Identity::may`] whether they may; this module knows nothing of routes.

mod config;
mod roles;
pub mod sessions;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::collections::HashMap;
use std::sync::Mutex;

pub use config::{Config, UserConfig};
pub use roles::{Action, Identity, Role};
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
            only_run: None,
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
mod tests;
