//! The token a job's trainer gets (`STEPWATCH_TOKEN`): `swj.<job>.<mac>`, a keyed BLAKE2b
//! of the job and its run under the relay's key (stored in the database, so every relay
//! on it accepts it). It may write only that run, and only while the job is open.

use super::Launcher;
use crate::api::ApiError;
use crate::auth::constant_time_eq;
use blake2::Digest;
use std::sync::OnceLock;

/// The prefix of every run token.
pub const PREFIX: &str = "swj.";

/// Run tokens: the relay's key, loaded from the database by the first sweep.
#[derive(Default)]
pub struct Tokens {
    key: OnceLock<Vec<u8>>,
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
    /// The key, read (or created) in the database on first use: call off async threads.
    pub fn load(&self, l: &Launcher) -> Result<&[u8], ApiError> {
        if let Some(k) = self.key.get() {
            return Ok(k);
        }
        let k = l.store.jobs().token_key()?;
        Ok(self.key.get_or_init(|| k))
    }

    /// The token for `job`'s trainer, writing `run`.
    pub fn issue(&self, l: &Launcher, job: &str, run: &str) -> Result<String, ApiError> {
        Ok(format!("{PREFIX}{job}.{}", mac(self.load(l)?, job, run)))
    }

    /// The run a token may write, if it is a valid token of an open job. Reads memory
    /// only (it runs in the access guard, on an async thread): the jobs this relay knows,
    /// kept current by its own changes and by the sweep (other relays' within seconds).
    pub fn verify(&self, l: &Launcher, token: &str) -> Option<String> {
        let (job, given) = token.strip_prefix(PREFIX)?.split_once('.')?;
        let (run, open) = l.job_runs.read().ok()?.get(job).cloned()?;
        let want = mac(self.key.get()?, job, &run);
        (constant_time_eq(want.as_bytes(), given.as_bytes()) && open).then_some(run)
    }
}

impl Launcher {
    /// The run a job token may write (see [`Tokens::verify`]).
    pub fn token_run(&self, token: &str) -> Option<String> {
        self.tokens.verify(self, token)
    }
}
