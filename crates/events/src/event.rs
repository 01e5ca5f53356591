//! Events: one flat JSON object each, `{"event": "<name>", "time": <unix s>, …fields}`.
//!
//! The seed's ten event names, plus `log`, `system` and `command_ack`, parse into typed
//! bodies; every field is optional, and fields the type does not name are kept in
//! `extra` so nothing a trainer sends is lost. Any other name matching
//! `[a-z0-9_.-]{1,64}` is a custom event, kept verbatim.
//!
//! Parsing names the offending field in its error (`field "loss": expected a number …`),
//! and [`parse_batch`] names the index of the bad event in a batch.
pub use crate::bodies::{
    Alert, AlertDelivery, AlertFired, AlertResolved, AlertRule, BatchEnd, BatchStart,
    CheckpointLoaded, CheckpointSaved, Command, CommandAck, EpochEnd, EpochStart, ErrorOccurred,
    Histogram, Image, Log, MetricUpdate, Rank, RunMeta, System, TextSample, TrainingEnd,
    TrainingStart,
};
use crate::fields::{kind, take, write_f64, write_key};
pub use crate::fields::{EventError, Metrics};
use crate::num;
use crate::pairs::{Name, Object, Source};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Why a batch was refused: the first bad event and its index in the batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("event {index}: {error}")]
pub struct BatchError {
    /// 0-based position of the bad event in the request.
    pub index: usize,
    pub error: EventError,
}

/// `true` when `name` matches `[a-z0-9_.-]{1,64}`.
pub fn is_valid_event_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// `true` when `run` matches `[A-Za-z0-9._-]{1,128}`.
pub fn is_valid_run_id(run: &str) -> bool {
    (1..=128).contains(&run.len())
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// What an event says, by name.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    TrainingStart(TrainingStart),
    TrainingEnd(TrainingEnd),
    EpochStart(EpochStart),
    EpochEnd(EpochEnd),
    BatchStart(BatchStart),
    BatchEnd(BatchEnd),
    CheckpointSaved(CheckpointSaved),
    CheckpointLoaded(CheckpointLoaded),
    MetricUpdate(MetricUpdate),
    ErrorOccurred(ErrorOccurred),
    Log(Log),
    System(System),
    CommandAck(CommandAck),
    Command(Command),
    Alert(Alert),
    AlertRule(AlertRule),
    AlertFired(AlertFired),
    AlertResolved(AlertResolved),
    AlertDelivery(AlertDelivery),
    RunMeta(RunMeta),
    Rank(Rank),
    TextSample(TextSample),
    Image(Image),
    Histogram(Histogram),
    /// Any other valid name: stored, streamed and listed as sent.
    Custom {
        name: String,
        fields: Map<String, Value>,
    },
}

/// Every event name with a typed body ([`EventBody`] other than `Custom`): what a run's
/// stream carries that a client understands (the dashboard listens for these).
pub const KNOWN_EVENTS: [&str; 24] = [
    "training_start",
    "training_end",
    "epoch_start",
    "epoch_end",
    "batch_start",
    "batch_end",
    "checkpoint_saved",
    "checkpoint_loaded",
    "metric_update",
    "error_occurred",
    "log",
    "system",
    "command",
    "command_ack",
    "alert",
    "alert_rule",
    "alert_fired",
    "alert_resolved",
    "alert_delivery",
    "run_meta",
    "rank",
    "text_sample",
    "image",
    "histogram",
];

impl EventBody {
    /// The event's wire name.
    pub fn name(&self) -> &str {
        match self {
            EventBody::TrainingStart(_) => "training_start",
            EventBody::TrainingEnd(_) => "training_end",
            EventBody::EpochStart(_) => "epoch_start",
            EventBody::EpochEnd(_) => "epoch_end",
            EventBody::BatchStart(_) => "batch_start",
            EventBody::BatchEnd(_) => "batch_end",
            EventBody::CheckpointSaved(_) => "checkpoint_saved",
            EventBody::CheckpointLoaded(_) => "checkpoint_loaded",
            EventBody::MetricUpdate(_) => "metric_update",
            EventBody::ErrorOccurred(_) => "error_occurred",
            EventBody::Log(_) => "log",
            EventBody::System(_) => "system",
            EventBody::CommandAck(_) => "command_ack",
            EventBody::Command(_) => "command",
            EventBody::Alert(_) => "alert",
            EventBody::AlertRule(_) => "alert_rule",
            EventBody::AlertFired(_) => "alert_fired",
            EventBody::AlertResolved(_) => "alert_resolved",
            EventBody::AlertDelivery(_) => "alert_delivery",
            EventBody::RunMeta(_) => "run_meta",
            EventBody::Rank(_) => "rank",
            EventBody::TextSample(_) => "text_sample",
            EventBody::Image(_) => "image",
            EventBody::Histogram(_) => "histogram",
            EventBody::Custom { name, .. } => name,
        }
    }

    fn parse<S: Source>(name: Cow<'_, str>, fields: &mut S) -> Result<Self, EventError> {
        Ok(match name.as_ref() {
            "training_start" => EventBody::TrainingStart(TrainingStart::take_from(fields)?),
            "training_end" => EventBody::TrainingEnd(TrainingEnd::take_from(fields)?),
            "epoch_start" => EventBody::EpochStart(EpochStart::take_from(fields)?),
            "epoch_end" => EventBody::EpochEnd(EpochEnd::take_from(fields)?),
            "batch_start" => EventBody::BatchStart(BatchStart::take_from(fields)?),
            "batch_end" => EventBody::BatchEnd(BatchEnd::take_from(fields)?),
            "checkpoint_saved" => EventBody::CheckpointSaved(CheckpointSaved::take_from(fields)?),
            "checkpoint_loaded" => {
                EventBody::CheckpointLoaded(CheckpointLoaded::take_from(fields)?)
            }
            "metric_update" => EventBody::MetricUpdate(MetricUpdate::take_from(fields)?),
            "error_occurred" => EventBody::ErrorOccurred(ErrorOccurred::take_from(fields)?),
            "log" => EventBody::Log(Log::take_from(fields)?),
            "system" => EventBody::System(System::take_from(fields)?),
            "command_ack" => EventBody::CommandAck(CommandAck::take_from(fields)?),
            "command" => EventBody::Command(Command::take_from(fields)?),
            "alert" => EventBody::Alert(Alert::take_from(fields)?),
            "alert_rule" => EventBody::AlertRule(AlertRule::take_from(fields)?),
            "alert_fired" => EventBody::AlertFired(AlertFired::take_from(fields)?),
            "alert_resolved" => EventBody::AlertResolved(AlertResolved::take_from(fields)?),
            "alert_delivery" => EventBody::AlertDelivery(AlertDelivery::take_from(fields)?),
            "run_meta" => EventBody::RunMeta(RunMeta::take_from(fields)?),
            "rank" => EventBody::Rank(Rank::take_from(fields)?),
            "text_sample" => EventBody::TextSample(TextSample::take_from(fields)?),
            "image" => EventBody::Image(Image::take_from(fields)?),
            "histogram" => EventBody::Histogram(Histogram::take_from(fields)?),
            _ => EventBody::Custom {
                name: name.into_owned(),
                fields: fields.rest(),
            },
        })
    }

    fn write_fields(&self, out: &mut Vec<u8>, taken: &dyn Fn(&str) -> bool) {
        match self {
            EventBody::TrainingStart(b) => b.write_fields(out, taken),
            EventBody::TrainingEnd(b) => b.write_fields(out, taken),
            EventBody::EpochStart(b) => b.write_fields(out, taken),
            EventBody::EpochEnd(b) => b.write_fields(out, taken),
            EventBody::BatchStart(b) => b.write_fields(out, taken),
            EventBody::BatchEnd(b) => b.write_fields(out, taken),
            EventBody::CheckpointSaved(b) => b.write_fields(out, taken),
            EventBody::CheckpointLoaded(b) => b.write_fields(out, taken),
            EventBody::MetricUpdate(b) => b.write_fields(out, taken),
            EventBody::ErrorOccurred(b) => b.write_fields(out, taken),
            EventBody::Log(b) => b.write_fields(out, taken),
            EventBody::System(b) => b.write_fields(out, taken),
            EventBody::CommandAck(b) => b.write_fields(out, taken),
            EventBody::Command(b) => b.write_fields(out, taken),
            EventBody::Alert(b) => b.write_fields(out, taken),
            EventBody::AlertRule(b) => b.write_fields(out, taken),
            EventBody::AlertFired(b) => b.write_fields(out, taken),
            EventBody::AlertResolved(b) => b.write_fields(out, taken),
            EventBody::AlertDelivery(b) => b.write_fields(out, taken),
            EventBody::RunMeta(b) => b.write_fields(out, taken),
            EventBody::Rank(b) => b.write_fields(out, taken),
            EventBody::TextSample(b) => b.write_fields(out, taken),
            EventBody::Image(b) => b.write_fields(out, taken),
            EventBody::Histogram(b) => b.write_fields(out, taken),
            EventBody::Custom { fields, .. } => {
                for (k, v) in fields {
                    if !taken(k) {
                        write_key(k, out);
                        let _ = serde_json::to_writer(&mut *out, v);
                    }
                }
            }
        }
    }

    fn put_into(&self, out: &mut Map<String, Value>) {
        match self {
            EventBody::TrainingStart(b) => b.put_into(out),
            EventBody::TrainingEnd(b) => b.put_into(out),
            EventBody::EpochStart(b) => b.put_into(out),
            EventBody::EpochEnd(b) => b.put_into(out),
            EventBody::BatchStart(b) => b.put_into(out),
            EventBody::BatchEnd(b) => b.put_into(out),
            EventBody::CheckpointSaved(b) => b.put_into(out),
            EventBody::CheckpointLoaded(b) => b.put_into(out),
            EventBody::MetricUpdate(b) => b.put_into(out),
            EventBody::ErrorOccurred(b) => b.put_into(out),
            EventBody::Log(b) => b.put_into(out),
            EventBody::System(b) => b.put_into(out),
            EventBody::CommandAck(b) => b.put_into(out),
            EventBody::Command(b) => b.put_into(out),
            EventBody::Alert(b) => b.put_into(out),
            EventBody::AlertRule(b) => b.put_into(out),
            EventBody::AlertFired(b) => b.put_into(out),
            EventBody::AlertResolved(b) => b.put_into(out),
            EventBody::AlertDelivery(b) => b.put_into(out),
            EventBody::RunMeta(b) => b.put_into(out),
            EventBody::Rank(b) => b.put_into(out),
            EventBody::TextSample(b) => b.put_into(out),
            EventBody::Image(b) => b.put_into(out),
            EventBody::Histogram(b) => b.put_into(out),
            EventBody::Custom { fields, .. } => {
                for (k, v) in fields {
                    out.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
}

/// One event, as sent by a trainer and as stored and streamed by the relay.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unix seconds at the trainer. The relay fills in its receive time when absent.
    pub time: Option<f64>,
    /// Sender id; with `seq`, lets the relay store a retried event once.
    pub src: Option<String>,
    /// Increasing per `src`.
    pub seq: Option<u64>,
    /// Per-run id given by the relay: 1, 2, 3 … with no gaps.
    pub id: Option<u64>,
    /// Unix seconds when the relay received it.
    pub received: Option<f64>,
    pub body: EventBody,
}

impl Event {
    /// A new event with no metadata.
    pub fn new(body: EventBody) -> Self {
        Event {
            time: None,
            src: None,
            seq: None,
            id: None,
            received: None,
            body,
        }
    }

    /// The event's wire name.
    pub fn name(&self) -> &str {
        self.body.name()
    }

    /// The trainer's time if it sent one, else the relay's receive time.
    pub fn timestamp(&self) -> Option<f64> {
        self.time.or(self.received)
    }

    /// Parses one event from a JSON value, naming the bad field on error.
    pub fn from_value(v: Value) -> Result<Self, EventError> {
        let mut fields = match v {
            Value::Object(m) => m,
            Value::Array(_) => return Err(EventError::NotAnObject("an array")),
            Value::String(_) => return Err(EventError::NotAnObject("a string")),
            Value::Number(_) => return Err(EventError::NotAnObject("a number")),
            Value::Bool(_) => return Err(EventError::NotAnObject("a boolean")),
            Value::Null => return Err(EventError::NotAnObject("null")),
        };
        let name = match fields.remove("event") {
            None => None,
            Some(Value::String(s)) => Some(Name::Text(Cow::Owned(s))),
            Some(other) => Some(Name::Other(other)),
        };
        Self::from_fields(name, fields)
    }

    /// One parsed object ([`crate::pairs`]): the same rules as [`Event::from_value`].
    fn from_object(o: Object<'_>) -> Result<Self, EventError> {
        Self::from_fields(o.name, o.fields)
    }

    /// The event from its `event` field and its other fields: the name first, then the
    /// metadata, then the body's fields, each refusal naming its field.
    fn from_fields<S: Source>(name: Option<Name<'_>>, mut fields: S) -> Result<Self, EventError> {
        let name = match name {
            None | Some(Name::Other(Value::Null)) => return Err(EventError::MissingName),
            Some(Name::Text(s)) => s,
            Some(Name::Other(other)) => {
                return Err(EventError::BadField {
                    field: "event".into(),
                    problem: format!("expected the event name as a string, got {}", kind(&other)),
                })
            }
        };
        if !is_valid_event_name(&name) {
            return Err(EventError::BadName(name.into_owned()));
        }
        let time = take::<f64, _>(&mut fields, "time")?;
        if let Some(t) = time {
            if !t.is_finite() {
                return Err(EventError::BadField {
                    field: "time".into(),
                    problem: "expected finite unix seconds".into(),
                });
            }
        }
        let src = take::<String, _>(&mut fields, "src")?;
        let seq = take::<u64, _>(&mut fields, "seq")?;
        let id = take::<u64, _>(&mut fields, "id")?;
        let received = take::<f64, _>(&mut fields, "received")?;
        let body = EventBody::parse(name, &mut fields)?;
        Ok(Event {
            time,
            src,
            seq,
            id,
            received,
            body,
        })
    }

    /// Parses one event from JSON text. (In the dashboard through a JSON value only: the
    /// direct path's code is a second copy of every body's parser, 7.5 KB of its download.)
    pub fn from_json(text: &str) -> Result<Self, EventError> {
        #[cfg(not(target_arch = "wasm32"))]
        if text.trim_start().starts_with('{') {
            if let Ok(o) = serde_json::from_str::<Object<'_>>(text) {
                return Self::from_object(o);
            }
            // Not JSON after all: the generic parse below says why, as it always has.
        }
        let v: Value = serde_json::from_str(text).map_err(|e| EventError::BadField {
            field: "(json)".into(),
            problem: format!("invalid JSON: {e}"),
        })?;
        Self::from_value(v)
    }

    /// The flat wire object: `event`, metadata, then the body's fields.
    pub fn to_value(&self) -> Value {
        let mut out = Map::new();
        out.insert("event".into(), Value::String(self.name().to_string()));
        if let Some(id) = self.id {
            out.insert("id".into(), Value::from(id));
        }
        if let Some(t) = self.time {
            out.insert("time".into(), num::to_json(t));
        }
        if let Some(r) = self.received {
            out.insert("received".into(), num::to_json(r));
        }
        if let Some(s) = &self.src {
            out.insert("src".into(), Value::String(s.clone()));
        }
        if let Some(s) = self.seq {
            out.insert("seq".into(), Value::from(s));
        }
        self.body.put_into(&mut out);
        Value::Object(out)
    }

    /// The flat wire object as JSON text.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(128);
        self.write_json(&mut out);
        // Only serde_json and ASCII punctuation wrote into it: always UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the event's JSON object to `out`: `event`, the metadata, then the body's
    /// fields in order (the same object as [`Event::to_value`], written directly).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        write_key("event", out);
        let _ = serde_json::to_writer(&mut *out, self.name());
        if let Some(id) = self.id {
            write_key("id", out);
            let _ = serde_json::to_writer(&mut *out, &id);
        }
        if let Some(t) = self.time {
            write_key("time", out);
            write_f64(t, out);
        }
        if let Some(r) = self.received {
            write_key("received", out);
            write_f64(r, out);
        }
        if let Some(src) = &self.src {
            write_key("src", out);
            let _ = serde_json::to_writer(&mut *out, src);
        }
        if let Some(seq) = self.seq {
            write_key("seq", out);
            let _ = serde_json::to_writer(&mut *out, &seq);
        }
        let taken = |k: &str| match k {
            "event" => true,
            "id" => self.id.is_some(),
            "time" => self.time.is_some(),
            "received" => self.received.is_some(),
            "src" => self.src.is_some(),
            "seq" => self.seq.is_some(),
            _ => false,
        };
        self.body.write_fields(out, &taken);
        out.push(b'}');
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Event::from_value(v).map_err(serde::de::Error::custom)
    }
}

/// Parses a request body: one JSON object, a JSON array of objects, or NDJSON
/// (one object per line). Returns every event or the first bad one with its index.
///
/// Objects are read into [`crate::pairs`] (keys borrowed from `body`); whatever that
/// refuses is read again as a generic [`Value`], whose error (or event) is the answer,
/// so a refusal reads the same whichever way it was found.
pub fn parse_batch(body: &str, ndjson: bool) -> Result<Vec<Event>, BatchError> {
    let trimmed = body.trim_start();
    if ndjson || (!trimmed.starts_with('[') && looks_like_ndjson(trimmed)) {
        let mut out = Vec::new();
        for (index, line) in body.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            out.push(Event::from_json(line).map_err(|error| BatchError { index, error })?);
        }
        return Ok(out);
    }
    if trimmed.starts_with('[') {
        if let Ok(objects) = serde_json::from_str::<Vec<Object<'_>>>(body) {
            return objects
                .into_iter()
                .enumerate()
                .map(|(index, o)| {
                    Event::from_object(o).map_err(|error| BatchError { index, error })
                })
                .collect();
        }
    } else if trimmed.starts_with('{') {
        if let Ok(o) = serde_json::from_str::<Object<'_>>(body) {
            return Ok(vec![
                Event::from_object(o).map_err(|error| BatchError { index: 0, error })?
            ]);
        }
    }
    let v: Value = serde_json::from_str(body).map_err(|e| BatchError {
        index: 0,
        error: EventError::BadField {
            field: "(json)".into(),
            problem: format!("invalid JSON: {e}"),
        },
    })?;
    match v {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                Event::from_value(item).map_err(|error| BatchError { index, error })
            })
            .collect(),
        other => Ok(vec![
            Event::from_value(other).map_err(|error| BatchError { index: 0, error })?
        ]),
    }
}

/// Several non-empty lines, each starting with `{`.
fn looks_like_ndjson(body: &str) -> bool {
    let mut lines = body.lines().filter(|l| !l.trim().is_empty());
    lines.next().is_some() && lines.next().is_some() && body.trim_end().ends_with('}') && {
        let mut all = body.lines().filter(|l| !l.trim().is_empty());
        all.all(|l| l.trim_start().starts_with('{') && l.trim_end().ends_with('}'))
    }
}
