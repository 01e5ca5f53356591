//! The metric series index: what makes a 10-million-step run open in milliseconds.
//!
//! Every metric value of every stored event (see
//! [`stepwatch_events::series::metric_values`]) is appended, per run and metric, to
//! blocks of [`BLOCK`] points `(step, time, value)`. A block row holds the raw points
//! and a summary (its first, lowest, highest, last and first non-finite point), so a
//! chart of the whole run reads one summary per block, and a zoomed chart reads the raw
//! points of the blocks it shows (exact M4 from the full data).
//!
//! The index is derived data: the events table stays the truth. Full blocks are written
//! in the same transaction as the events that fill them; the newest, partial block of
//! each metric lives in memory and is written when the run has gathered
//! [`PERSIST_EVERY`] events since it was last written. `series_runs.indexed_id` says up
//! to which event everything is on disk, so after a restart (or for a data dir from an
//! older relay) the tail is rebuilt from the events after it.
//!
//! The index logic is database-agnostic: every read and write goes through the
//! [`SeriesDb`] trait ([`db`]), which each backend implements with its own SQL
//! (`storage::sqlite::series`, `storage::pg::series`). [`index`] is the in-memory side,
//! [`block`] the stored block format, [`mod@query`] the chart queries.

pub mod block;
pub mod db;
pub mod index;
pub mod query;

pub use block::{OpenBlock, BLOCK};
pub use db::{BlockRow, SeriesDb};
pub use index::{Index, OPEN_RUNS, PERSIST_EVERY};
pub use query::{list, query, SeriesQuery, EXACT_LIMIT, MAX_POINTS};
