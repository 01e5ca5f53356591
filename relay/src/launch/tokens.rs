//! The token a job's trainer gets (`STEPWATCH_TOKEN`): `swj.<job>.<mac>`, a keyed BLAKE2b
//! of the job and its run under the relay's key (stored in the database, so every relay
//! on it accepts it). It may write only that run, and only while the job is open.

use super::Launcher;
use crate::api::ApiError;
use crate::auth::constant_time_eq;
use blake2::Digest;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The prefix of every run token.
pub const PREFIX: &str = "swj.";
/// How long a checked token is trusted before the job is looked up again.
const RECHECK: Duration = Duration::from_secs(10);

/// Run tokens: the key, and tokens checked lately.
#[derive(Default)]
pub struct Tokens {
    key: OnceLock<Vec<u8>>,
    checked: Mutex<HashMap<String, (String, Instant)>>,
}

impl Tokens {
    /// Forgets the checked tokens of a job that has ended (this relay stops accepting
    /// them at once; others within [`RECHECK`]).
    pub fn forget(&self, job: &str) {
        let prefix = format!("{PREFIX}{job}.");
        if let Ok(mut c) = self.checked.lock() {
            c.retain(|t, _| !t.starts_with(&prefix));
        }
    }
}

fn mac(key: &[u8], job: &str, run: &str) -> String {
    let mut h = blake2::Blake2b512::new();
    h.update((key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(job.as_bytes());
    h.update([0u8]);
    h.update(run.as_bytes());
    h.finalize()
        .iter()
        .take(24)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Tokens {
    fn key(&self, l: &Launcher) -> Result<&[u8], ApiError> {
        if let Some(k) = self.key.get() {
            return Ok(k);
        }
        let k = l.store.jobs().token_key()?;
        Ok(self.key.get_or_init(|| k))
    }

    /// The token for `job`'s trainer, writing `run`.
    pub fn issue(&self, l: &Launcher, job: &str, run: &str) -> Result<String, ApiError> {
        Ok(format!("{PREFIX}{job}.{}", mac(self.key(l)?, job, run)))
    }

    /// The run a token may write, if it is a valid token of an open job.
    pub fn verify(&self, l: &Launcher, token: &str) -> Option<String> {
        if let Some((run, at)) = self.checked.lock().ok()?.get(token) {
            if at.elapsed() < RECHECK {
                return Some(run.clone());
            }
        }
        let (job, given) = token.strip_prefix(PREFIX)?.split_once('.')?;
        let row = l.store.jobs().job(job).ok()??;
        let run = row.state.run.clone()?;
        let want = mac(self.key(l).ok()?, job, &run);
        if !constant_time_eq(want.as_bytes(), given.as_bytes()) || row.state.is_terminal() {
            return None;
        }
        let mut checked = self.checked.lock().ok()?;
        if checked.len() > 10_000 {
            checked.clear();
        }
        checked.insert(token.to_string(), (run.clone(), Instant::now()));
        Some(run)
    }
}

impl Launcher {
    /// The run a job token may write (see [`Tokens::verify`]).
    pub fn token_run(&self, token: &str) -> Option<String> {
        self.tokens.verify(self, token)
    }
}
