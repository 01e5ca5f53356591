//! Durable storage of runs and events, behind one trait.
//!
//! [`Storage`] is what the HTTP layer sees. Two backends implement it:
//! [`sqlite::SqliteStore`] (the embedded default: one file, WAL journal) and
//! [`pg::PgStore`] (PostgreSQL, shared by any number of relays). Both append through
//! the one recipe in `append`, so the invariants hold the same on either:
//! - per run, ids are 1, 2, 3 … with no gaps, assigned under one writer lock;
//! - a batch is stored whole or not at all (one transaction), acknowledged only once
//!   committed;
//! - `seq` increases per `src`: an event whose `seq` is not above the highest stored for
//!   its `(run, src)` is a retry, counted as a duplicate and not stored again (the
//!   highest seq per sender is kept in `sources`, written in the same transaction);
//! - `on_commit` runs after the commit and before the writer lock is released, so
//!   subscribers see batches in id order;
//! - a failed transaction makes the series index forget the run.
//!
//! Storage knows nothing of HTTP, the fan-out hub or sign-ins: a shared backend reports
//! other relays' commits through [`peers::Fanout`] and keeps sessions as rows
//! ([`peers::SessionTable`]) for whoever gives them meaning.
//!
//! - [`error`]: [`StoreError`]; [`types`]: what storage hands out;
//! - `fold`: the per-batch work every backend shares; `append`: the append recipe;
//! - [`series`]: the metric series index (database-agnostic, behind `SeriesDb`);
//! - [`sqlite`], [`pg`]: what differs per backend (schema, SQL, pool, TLS …);
//! - [`jobs`]: launched jobs, agents and the token key as rows ([`jobs::JobDb`]);
//! - [`media`]: uploaded images as rows beside the events ([`media::MediaDb`]);
//! - [`copy`]: `stepwatch migrate`, SQLite into PostgreSQL.

pub(crate) mod append;
pub mod chunks;
pub mod copy;
pub mod error;
pub(crate) mod fold;
pub mod jobs;
pub mod media;
pub mod peers;
pub mod pg;
pub mod series;
pub mod sqlite;
pub mod types;

use std::sync::Arc;
use stepwatch_events::series::{SeriesInfo, SeriesPage};
use stepwatch_events::{Event, RunState, RunSummary};

pub use error::StoreError;
pub use fold::MAX_METRIC_NAME;
pub use series::SeriesQuery;
pub use types::{Committed, Parsed, StoredEvent};

/// The storage the relay runs on.
pub trait Storage: Send + Sync + 'static {
    /// Stores `events` for `run` in one transaction; calls `on_commit` once committed,
    /// before the next append can start.
    fn append(
        &self,
        run: &str,
        events: Vec<Event>,
        received: f64,
        on_commit: &dyn Fn(&Committed),
    ) -> Result<Committed, StoreError>;
    /// Events with id > `after`, oldest first, at most `limit`, optionally only these names.
    fn events(
        &self,
        run: &str,
        after: u64,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Events with id < `before` (any when `None`), newest first, at most `limit`,
    /// optionally only these names: paging back through history.
    fn events_desc(
        &self,
        run: &str,
        before: Option<u64>,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// The run's current state, if the run exists.
    fn state(&self, run: &str) -> Option<Arc<RunState>>;
    /// Every run's summary, newest first.
    fn runs(&self) -> Vec<RunSummary>;
    /// Total events stored.
    fn event_total(&self) -> u64;
    /// One metric of a run reduced for a chart (`None`: no such run).
    fn series(
        &self,
        run: &str,
        metric: &str,
        q: SeriesQuery,
    ) -> Result<Option<SeriesPage>, StoreError>;
    /// The run's metrics and their sizes (`None`: no such run).
    fn series_list(&self, run: &str) -> Result<Option<Vec<SeriesInfo>>, StoreError>;
    /// Deletes a run and everything stored for it; returns how many events went
    /// (`None`: no such run).
    fn delete_run(&self, run: &str) -> Result<Option<u64>, StoreError>;
    /// Bytes the storage takes on disk.
    fn stored_bytes(&self) -> u64;
    /// At shutdown: writes derived data still in memory and checkpoints the journal.
    /// Acknowledged events are already durable; this only makes the next start faster.
    fn flush(&self) -> Result<(), StoreError>;
    /// Whether requests can be served now (`GET /readyz`): the database answers.
    /// Embedded storage always can.
    fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Launched jobs, agents and the run-token key.
    fn jobs(&self) -> &dyn jobs::JobDb;
    /// Uploaded media.
    fn media(&self) -> &dyn media::MediaDb;
}
