//! The relay's read answers as JSON, one type per endpoint, and how a client (the
//! dashboard) reads each back: with the same serde code that writes it, so the shapes
//! exist once. Every decoder answers `None` (or an empty list) for anything else, such
//! as the relay's `{"error": …}`.
//!
//! | endpoint | type |
//! |---|---|
//! | `GET /api/runs/{run}` | [`RunAnswer`]: the [`RunState`]'s fields, and `progress` |
//! | `GET /api/runs`, `/api/stream` (SSE [`SUMMARY_EVENT`]) | [`RunSummary`] |
//! | `GET /api/runs/{run}/series?metric=…` | [`SeriesPage`] |
//! | `GET /api/runs/{run}/series` | a list of [`SeriesInfo`] |
//! | `GET /api/runs/{run}/events`, `…/stream` (SSE, one type per [`KNOWN_EVENTS`] name) | [`Event`]s |

use crate::decode;
use crate::event::Event;
pub use crate::event::KNOWN_EVENTS;
use crate::progress::Progress;
use crate::series::{SeriesInfo, SeriesPage};
use crate::state::RunState;
use crate::summary::RunSummary;
use serde::Serialize;
use serde_json::Value;

/// The SSE event type of a run summary on the runs stream (`/api/stream`).
pub const SUMMARY_EVENT: &str = "run";

/// `GET /api/runs/{run}`: the reducer's state, its fields at the top level, and beside
/// them its progress as people read it (1-based epochs).
#[derive(Debug, Clone, Serialize)]
pub struct RunAnswer<'a> {
    #[serde(flatten)]
    pub state: &'a RunState,
    pub progress: Progress,
}

impl<'a> RunAnswer<'a> {
    /// The answer for `state`.
    pub fn new(state: &'a RunState) -> Self {
        RunAnswer {
            progress: state.progress(),
            state,
        }
    }
}

/// JSON text as a [`Value`], read further by [`crate::decode`]'s readers (smaller in the
/// dashboard's download than derived decoders).
fn parse(json: &str) -> Option<Value> {
    serde_json::from_str(json).ok()
}

/// A JSON array each of whose items reads with `item`; empty when the text is no such
/// array (an error answer) or one item does not read.
fn list<T>(json: &str, item: fn(&Value) -> Option<T>) -> Vec<T> {
    parse(json)
        .and_then(|v| decode::items(&v, item))
        .unwrap_or_default()
}

/// A [`RunAnswer`] read back as the state: `progress` is derived from the state's pace
/// ([`RunState::progress`] computes it again), so it is skipped.
pub fn decode_state(json: &str) -> Option<RunState> {
    decode::state(&parse(json)?)
}

/// One run summary: a message of the runs stream, or an item of `GET /api/runs`.
pub fn decode_summary(json: &str) -> Option<RunSummary> {
    decode::summary(&parse(json)?)
}

/// `GET /api/runs`: every run's summary.
pub fn decode_runs(json: &str) -> Vec<RunSummary> {
    list(json, decode::summary)
}

/// One metric's page of the series endpoint.
pub fn decode_series_page(json: &str) -> Option<SeriesPage> {
    decode::series_page(&parse(json)?)
}

/// The series endpoint without a metric: the run's metrics and their sizes.
pub fn decode_series_list(json: &str) -> Vec<SeriesInfo> {
    list(json, decode::series_info)
}

/// An events page (a JSON array); events that do not parse are left out.
pub fn decode_events(json: &str) -> Vec<Event> {
    let Some(Value::Array(items)) = parse(json) else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|e| Event::from_value(e).ok())
        .collect()
}
