//! What a backend shared by several relays needs from the rest of the relay, and what it
//! offers it, as narrow traits: storage never sees the hub, sign-ins or HTTP.
//!
//! - [`Fanout`]: where the backend delivers what other relays committed (the relay's
//!   hub implements it, see `crate::fanout`);
//! - [`ListenerJob`]: work that rides on the backend's listening thread (shared
//!   sessions: writing queued changes, reloading, sweeping);
//! - [`SessionTable`]: sign-in sessions as rows in the shared database, which the
//!   PostgreSQL backend implements and `crate::auth::sessions` gives meaning.

use stepwatch_events::RunState;

use super::error::StoreError;
use super::types::Committed;

/// The relay's subscribers, as a shared backend delivers to them. Never blocks.
pub trait Fanout: Send + Sync {
    /// Whether anyone on this relay follows the run's events now (else only the
    /// summary is worth publishing).
    fn has_subscribers(&self, run: &str) -> bool;
    /// Publishes events in id order (another relay's batch, or a gap filled).
    fn publish(&self, c: &Committed);
    /// Publishes a run's changed summary alone.
    fn publish_summary(&self, state: &RunState);
    /// Tells subscribers the run is gone (deleted on another relay).
    fn publish_deleted(&self, run: &str);
}

/// Work a shared backend's listening thread does besides fan-out. It may block.
pub trait ListenerJob: Send + Sync {
    /// At every wake-up (at most 250 ms apart): writes what waits to be written.
    fn on_wake(&self);
    /// After (re)connecting, every poll period, and when another relay announced a
    /// change of this job's data. An error makes the listener reconnect.
    fn on_poll(&self) -> Result<(), StoreError>;
    /// Every 10 s: housekeeping.
    fn on_sweep(&self);
}

/// Sign-in sessions kept as rows shared by every relay: key, user name, end (Unix
/// seconds). Saving or deleting one tells the other relays (their [`ListenerJob`]'s
/// `on_poll` runs soon after).
pub trait SessionTable: Send + Sync {
    /// Stores (or replaces) a session and deletes those that ended before `now`.
    fn save_session(&self, key: &str, user: &str, expires: f64, now: f64)
        -> Result<(), StoreError>;
    /// Deletes a session.
    fn delete_session(&self, key: &str) -> Result<(), StoreError>;
    /// Every session that ends after `now`.
    fn live_sessions(&self, now: f64) -> Result<Vec<(String, String, f64)>, StoreError>;
    /// Deletes the sessions that ended before `now`.
    fn sweep_sessions(&self, now: f64) -> Result<(), StoreError>;
}
