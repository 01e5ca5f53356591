//! An event's fields on the wire: [`EventError`], and how each typed field reads and
//! writes its JSON value ([`Field`], [`take`], the direct writer's helpers).

use crate::num;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// The event is not a JSON object.
    #[error("an event must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// The `event` field is missing.
    #[error("missing field \"event\" (the event name, e.g. \"batch_end\")")]
    MissingName,
    /// The event name breaks the naming rule.
    #[error("invalid event name {0:?}: names match [a-z0-9_.-]{{1,64}}")]
    BadName(String),
    /// A field has the wrong type.
    #[error("field {field:?}: {problem}")]
    BadField { field: String, problem: String },
}

impl EventError {
    /// The field at fault, when one is (`"event"` for a missing or bad name).
    pub fn field(&self) -> Option<&str> {
        match self {
            EventError::NotAnObject(_) => None,
            EventError::MissingName | EventError::BadName(_) => Some("event"),
            EventError::BadField { field, .. } => Some(field),
        }
    }
}

/// A value type that a typed event field may hold, with the wire rules for it.
pub(crate) trait Field: Sized {
    fn from_json(v: Value) -> Result<Self, String>;
    /// The value already typed by the parser, when it read it so (`metrics`).
    fn typed<S: crate::pairs::Source>(_fields: &mut S) -> Option<Self> {
        None
    }
    fn to_json(&self) -> Value;
    /// Writes the value as JSON (the fast path of [`Event::to_json`]).
    fn write_json(&self, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(out, &self.to_json());
    }
}

/// Writes a number the wire's way: finite as a JSON number, else "NaN"/"Infinity"/"-Infinity".
pub(crate) fn write_f64(x: f64, out: &mut Vec<u8>) {
    if x.is_finite() {
        let _ = serde_json::to_writer(out, &x);
    } else {
        out.push(b'"');
        out.extend_from_slice(num::non_finite_name(x).as_bytes());
        out.push(b'"');
    }
}

/// Writes `,"key":` (or `"key":` first in an object).
pub(crate) fn write_key(key: &str, out: &mut Vec<u8>) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
}

pub(crate) fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.len() > 40 => format!("a string ({} bytes)", s.len()),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

impl Field for f64 {
    fn from_json(v: Value) -> Result<Self, String> {
        num::from_json(&v).ok_or_else(|| {
            format!(
                "expected a number (or \"NaN\", \"Infinity\", \"-Infinity\"), got {}",
                kind(&v)
            )
        })
    }
    fn to_json(&self) -> Value {
        num::to_json(*self)
    }
    fn write_json(&self, out: &mut Vec<u8>) {
        write_f64(*self, out);
    }
}

impl Field for u64 {
    fn from_json(v: Value) -> Result<Self, String> {
        match &v {
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    return Ok(u);
                }
                // Python sends 3.0 for an int sometimes; accept whole floats.
                match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Ok(f as u64),
                    _ => Err(format!("expected a non-negative integer, got {}", kind(&v))),
                }
            }
            _ => Err(format!("expected a non-negative integer, got {}", kind(&v))),
        }
    }
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
    fn write_json(&self, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(out, self);
    }
}

impl Field for String {
    fn from_json(v: Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(s),
            other => Err(format!("expected a string, got {}", kind(&other))),
        }
    }
    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
    fn write_json(&self, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(out, self);
    }
}

impl Field for bool {
    fn from_json(v: Value) -> Result<Self, String> {
        match v {
            Value::Bool(b) => Ok(b),
            other => Err(format!("expected true or false, got {}", kind(&other))),
        }
    }
    fn to_json(&self) -> Value {
        Value::Bool(*self)
    }
}

/// Named metric values (`{"accuracy": 0.91, "val/loss": "NaN"}`).
pub type Metrics = BTreeMap<String, f64>;

impl Field for Metrics {
    fn typed<S: crate::pairs::Source>(fields: &mut S) -> Option<Self> {
        fields.typed_metrics()
    }
    fn from_json(v: Value) -> Result<Self, String> {
        match v {
            Value::Object(m) => {
                // Inserted one by one: collecting into a map sorts (see `num::map`).
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    let Some(x) = num::from_json(&v) else {
                        return Err(format!("metric {k:?}: expected a number, got {}", kind(&v)));
                    };
                    out.insert(k, x);
                }
                Ok(out)
            }
            other => Err(format!(
                "expected an object of name → number, got {}",
                kind(&other)
            )),
        }
    }
    fn to_json(&self) -> Value {
        Value::Object(
            self.iter()
                .map(|(k, v)| (k.clone(), num::to_json(*v)))
                .collect(),
        )
    }
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (k, v) in self {
            write_key(k, out);
            write_f64(*v, out);
        }
        out.push(b'}');
    }
}

impl Field for Map<String, Value> {
    fn from_json(v: Value) -> Result<Self, String> {
        match v {
            Value::Object(m) => Ok(m),
            other => Err(format!("expected an object, got {}", kind(&other))),
        }
    }
    fn to_json(&self) -> Value {
        Value::Object(self.clone())
    }
    fn write_json(&self, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(out, self);
    }
}

pub(crate) fn take<T: Field, S: crate::pairs::Source>(
    fields: &mut S,
    key: &str,
) -> Result<Option<T>, EventError> {
    if key == "metrics" {
        if let Some(typed) = T::typed(fields) {
            return Ok(Some(typed));
        }
    }
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::from_json(v)
            .map(Some)
            .map_err(|problem| EventError::BadField {
                field: key.to_string(),
                problem,
            }),
    }
}

impl Field for Value {
    fn from_json(v: Value) -> Result<Self, String> {
        Ok(v)
    }
    fn to_json(&self) -> Value {
        self.clone()
    }
}

impl Field for Vec<Map<String, Value>> {
    fn from_json(v: Value) -> Result<Self, String> {
        match v {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(m) => Ok(m),
                    other => Err(format!(
                        "item {i}: expected an object, got {}",
                        kind(&other)
                    )),
                })
                .collect(),
            other => Err(format!(
                "expected an array of objects, got {}",
                kind(&other)
            )),
        }
    }
    fn to_json(&self) -> Value {
        Value::Array(self.iter().cloned().map(Value::Object).collect())
    }
}

impl Field for Vec<String> {
    fn from_json(v: Value) -> Result<Self, String> {
        match v {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s),
                    other => Err(format!("item {i}: expected a string, got {}", kind(&other))),
                })
                .collect(),
            other => Err(format!(
                "expected an array of strings, got {}",
                kind(&other)
            )),
        }
    }
    fn to_json(&self) -> Value {
        Value::Array(self.iter().cloned().map(Value::String).collect())
    }
}

impl Field for Vec<f64> {
    fn from_json(v: Value) -> Result<Self, String> {
        match v {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    num::from_json(&item)
                        .ok_or_else(|| format!("item {i}: expected a number, got {}", kind(&item)))
                })
                .collect(),
            other => Err(format!(
                "expected an array of numbers, got {}",
                kind(&other)
            )),
        }
    }
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(|&x| num::to_json(x)).collect())
    }
}
