//! # stepwatch-events — the wire contract, in one place
//!
//! Everything that crosses the wire between a trainer, the relay and the dashboard
//! is defined here, and so is the one piece of logic all of them share: the
//! [`RunState`] reducer that turns a run's events into its current state.
//!
//! This crate does no IO and knows nothing about actix, SQLite or Leptos; it builds
//! for `wasm32-unknown-unknown` and for native targets alike.
//!
//! - [`event`]: [`Event`], one flat JSON object per event (`{"event":"batch_end","loss":2.5,…}`),
//!   typed for the seed's ten names plus `log`, `system`, `command`, `command_ack`, and kept verbatim
//!   for any other (custom) name. [`KNOWN_EVENTS`] lists the typed names.
//! - [`num`]: non-finite numbers travel as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
//! - [`state`]: [`RunState::apply`], the reducer; [`records`]: the plain data it keeps
//!   (status, checkpoints, commands, last error); [`summary`]: [`RunSummary`] for run lists.
//! - [`world`]: a distributed run's ranks (`rank` events, per-rank samples and answers).
//! - [`media`]: text samples, images and histograms: their checks, the tags the reducer
//!   keeps (`RunState.media`), and telling an image by its bytes ([`media::sniff`]).
//! - [`meta`]: a run's tags, group and notes (`run_meta`): the checks and normalisation
//!   every writer applies.
//! - [`progress`]: [`Pace`] and [`Progress`] (1-based epochs, batches done, ETA), read by
//!   [`RunState::progress`] and [`RunState::eta_s`].
//! - [`downsample`]: per-pixel-column min/max bucketing so spikes never vanish from charts.
//! - [`series`]: which event numbers become chart points, and the relay's series answer.
//! - [`api`]: the relay's read answers (run state, summaries, series, events) and their
//!   decoders, used by the dashboard.
//! - [`alerts`]: alert rules ([`alerts::Rule`]), the per-run evaluator the relay runs
//!   ([`alerts::RunAlerts`]) and what the reducer keeps of a run's alerts (`RunState.alerts`).
//! - Launching: [`jobs`]: what a user submits
//!   ([`JobSpec`], validated field by field) and [`JobState::apply`], the reducer of a job's
//!   history (queued → claimed → submitted → running → succeeded / failed / cancelled);
//!   [`template`]: admin-defined launch templates with typed parameters, rendered to an argv
//!   array (never a shell string); [`field_error`]: [`FieldError`], a refusal naming its field.

pub mod alerts;
pub mod api;
pub mod bodies;
mod decode;
pub mod downsample;
pub mod event;
pub mod field_error;
pub mod fields;
pub mod jobs;
pub mod media;
pub mod meta;
pub mod num;
mod pairs;
pub mod progress;
pub mod records;
pub mod series;
pub mod state;
pub mod summary;
pub mod template;
pub mod world;

pub use event::{
    is_valid_event_name, is_valid_run_id, parse_batch, BatchError, Event, EventBody, EventError,
    KNOWN_EVENTS,
};
pub use field_error::FieldError;
pub use jobs::{queue_order, JobEvent, JobEventBody, JobSpec, JobState, JobStatus};
pub use progress::{Pace, Position, Progress};
pub use records::{BestMetric, Checkpoint, CommandState, RunStatus, COMMANDS};
pub use state::RunState;
pub use summary::RunSummary;
pub use template::{ParamKind, ParamSpec, Rendered, Template};
