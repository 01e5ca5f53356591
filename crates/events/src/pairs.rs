//! An event object's fields as parsed from the request's text, for the typed bodies to
//! take from ([`Source`]).
//!
//! A batch of events is parsed line by line into [`Pairs`]: each key borrowed from the
//! text where it holds no escape, each value a [`Value`], the pairs in a small vector
//! searched in order. A generic `Map<String, Value>` costs an allocated key and a
//! B-tree insert and remove per field; these cost neither, and the typed fields are
//! taken out by name exactly as from a map (the last of repeated keys wins, `null` is
//! absent, what no typed field takes is kept in `extra`). An object with more than
//! [`FEW`] fields is kept in a map after all, so a hostile object of a million keys
//! costs no more than before. A `metrics` object after the name of a body that types it
//! ([`METRIC_BODIES`]) is read straight into [`Metrics`]; whatever would make that read
//! differ from the generic one (a value that is no number, the name sent again after
//! it) fails the object, and the caller reads it again the generic way.

use crate::fields::Metrics;
use crate::num;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// Fields kept in the vector; past it, in a map.
const FEW: usize = 16;

/// The bodies with a typed `metrics` field.
pub(crate) const METRIC_BODIES: [&str; 5] = [
    "batch_end",
    "epoch_end",
    "metric_update",
    "checkpoint_saved",
    "checkpoint_loaded",
];

/// Where a body's typed fields are taken from.
pub(crate) trait Source {
    /// The field's value, taken out.
    fn remove(&mut self, key: &str) -> Option<Value>;
    /// The `metrics` read already typed, taken out (none from a generic map).
    fn typed_metrics(&mut self) -> Option<Metrics> {
        None
    }
    /// What no typed field took: the body's `extra`.
    fn rest(&mut self) -> Map<String, Value>;
}

impl Source for Map<String, Value> {
    fn remove(&mut self, key: &str) -> Option<Value> {
        Map::remove(self, key)
    }
    fn rest(&mut self) -> Map<String, Value> {
        std::mem::take(self)
    }
}

/// One event object's fields (see the module).
#[derive(Debug, Default)]
pub(crate) enum Pairs<'a> {
    Few(Vec<(Cow<'a, str>, Value)>, Option<Metrics>),
    Many(Map<String, Value>, Option<Metrics>),
    #[default]
    Empty,
}

impl<'a> Pairs<'a> {
    fn set_metrics(&mut self, m: Metrics) {
        match self {
            Pairs::Few(_, slot) | Pairs::Many(_, slot) => *slot = Some(m),
            Pairs::Empty => *self = Pairs::Few(Vec::new(), Some(m)),
        }
    }

    fn insert(&mut self, key: Cow<'a, str>, value: Value) {
        match self {
            Pairs::Empty => {
                let mut v = Vec::with_capacity(8);
                v.push((key, value));
                *self = Pairs::Few(v, None);
            }
            Pairs::Few(v, metrics) => {
                if let Some(slot) = v.iter_mut().find(|(k, _)| *k == key) {
                    slot.1 = value;
                } else if v.len() < FEW {
                    v.push((key, value));
                } else {
                    let mut m: Map<String, Value> = Map::new();
                    for (k, x) in v.drain(..) {
                        m.insert(k.into_owned(), x);
                    }
                    m.insert(key.into_owned(), value);
                    *self = Pairs::Many(m, metrics.take());
                }
            }
            Pairs::Many(m, _) => {
                m.insert(key.into_owned(), value);
            }
        }
    }
}

impl Source for Pairs<'_> {
    fn remove(&mut self, key: &str) -> Option<Value> {
        match self {
            Pairs::Few(v, _) => {
                let i = v.iter().position(|(k, _)| k == key)?;
                Some(v.swap_remove(i).1)
            }
            Pairs::Many(m, _) => m.remove(key),
            Pairs::Empty => None,
        }
    }
    fn typed_metrics(&mut self) -> Option<Metrics> {
        match self {
            Pairs::Few(_, m) | Pairs::Many(_, m) => m.take(),
            Pairs::Empty => None,
        }
    }
    fn rest(&mut self) -> Map<String, Value> {
        // (Typed metrics are always taken: only a body with a `metrics` field has them.)
        match std::mem::take(self) {
            Pairs::Few(v, _) => {
                let mut m = Map::new();
                for (k, x) in v {
                    m.insert(k.into_owned(), x);
                }
                m
            }
            Pairs::Many(m, _) => m,
            Pairs::Empty => Map::new(),
        }
    }
}

/// A key or a string value, borrowed from the text when it holds no escape.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The `event` field's value: the name borrowed from the text, or whatever else was
/// sent there (refused later, naming what it was).
pub(crate) enum Name<'a> {
    Text(Cow<'a, str>),
    Other(Value),
}

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name::Text(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Name<'de>, E> {
                Ok(Name::Text(Cow::Owned(s)))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Name<'de>, E> {
                Ok(Name::Other(Value::Bool(b)))
            }
            fn visit_i64<E: de::Error>(self, x: i64) -> Result<Name<'de>, E> {
                Ok(Name::Other(Value::from(x)))
            }
            fn visit_u64<E: de::Error>(self, x: u64) -> Result<Name<'de>, E> {
                Ok(Name::Other(Value::from(x)))
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<Name<'de>, E> {
                Ok(Name::Other(Value::from(x)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Name<'de>, E> {
                Ok(Name::Other(Value::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Name<'de>, E> {
                Ok(Name::Other(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Name<'de>, A::Error> {
                Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Name::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Name<'de>, A::Error> {
                Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Name::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// One metric value: a number, or a non-finite one by name.
struct MetricValue(f64);

impl<'de> Deserialize<'de> for MetricValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MetricValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<MetricValue, E> {
                Ok(MetricValue(x))
            }
            fn visit_u64<E: de::Error>(self, x: u64) -> Result<MetricValue, E> {
                Ok(MetricValue(x as f64))
            }
            fn visit_i64<E: de::Error>(self, x: i64) -> Result<MetricValue, E> {
                Ok(MetricValue(x as f64))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MetricValue, E> {
                num::parse_non_finite(s)
                    .map(MetricValue)
                    .ok_or_else(|| E::custom("not a number"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A `metrics` object of numbers, read straight into [`Metrics`].
struct TypedMetrics(Metrics);

impl<'de> Deserialize<'de> for TypedMetrics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TypedMetrics;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TypedMetrics, A::Error> {
                let mut out = Metrics::new();
                while let Some(Text(k)) = map.next_key::<Text<'de>>()? {
                    let MetricValue(x) = map.next_value()?;
                    out.insert(k.into_owned(), x);
                }
                Ok(TypedMetrics(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One event object as parsed: its `event` field apart (the last one sent), the rest
/// as [`Pairs`] (with `metrics` typed when the name said so first).
pub(crate) struct Object<'a> {
    pub name: Option<Name<'a>>,
    pub fields: Pairs<'a>,
}

impl Object<'_> {
    fn types_metrics(&self) -> bool {
        matches!(&self.name, Some(Name::Text(n)) if METRIC_BODIES.contains(&n.as_ref()))
    }
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                let mut out = Object {
                    name: None,
                    fields: Pairs::Empty,
                };
                let mut metrics: Option<Metrics> = None;
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    if key == "event" {
                        if metrics.is_some() {
                            // The name again, after metrics read for the first one.
                            return Err(de::Error::custom("the event name sent twice"));
                        }
                        out.name = Some(map.next_value::<Name<'de>>()?);
                    } else if key == "metrics" && out.types_metrics() {
                        metrics = Some(map.next_value::<TypedMetrics>()?.0);
                        out.fields.remove("metrics"); // an earlier one: this one wins
                    } else {
                        let value = map.next_value::<Value>()?;
                        if key == "metrics" {
                            metrics = None;
                        }
                        out.fields.insert(key, value);
                    }
                }
                if let Some(m) = metrics {
                    out.fields.set_metrics(m);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::Event;
    use serde_json::Value;

    /// The direct read and the generic one agree, field for field and error for error.
    fn same(line: &str) {
        let generic = serde_json::from_str::<Value>(line)
            .map_err(|e| e.to_string())
            .and_then(|v| Event::from_value(v).map_err(|e| e.to_string()));
        let direct = Event::from_json(line).map_err(|e| e.to_string());
        assert_eq!(
            direct.map(|e| e.to_value()),
            generic.map(|e| e.to_value()),
            "{line}"
        );
    }

    #[test]
    fn typed_metrics_read_as_the_generic_value_does() {
        for line in [
            r#"{"event":"batch_end","loss":1,"metrics":{"acc":0.5,"n":3,"neg":-2,"d":"NaN","i":"-inf"}}"#,
            r#"{"event":"epoch_end","metrics":{}}"#,
            r#"{"event":"metric_update","metrics":{"a":1},"metrics":{"b":2}}"#,
            r#"{"event":"checkpoint_saved","metrics":{"a":1},"metrics":null}"#,
            r#"{"metrics":{"a":1},"event":"checkpoint_loaded","metrics":{"b":2}}"#,
            r#"{"event":"batch_end","metrics":{"a":1},"event":"log"}"#,
            r#"{"event":"batch_end","metrics":{"a":"x"}}"#,
            r#"{"event":"batch_end","metrics":{"a":true}}"#,
            r#"{"event":"batch_end","metrics":[1]}"#,
            r#"{"event":"batch_end","metrics":null}"#,
            r#"{"event":"log","metrics":{"a":1}}"#,
            r#"{"event":"my.custom","metrics":{"a":1}}"#,
            r#"{"event":"batch_end","metrics":{"a\u0062":18446744073709551615,"a":1e300}}"#,
        ] {
            same(line);
        }
    }

    #[test]
    fn metrics_are_typed_when_the_name_comes_first() {
        let e = Event::from_json(r#"{"event":"batch_end","metrics":{"acc":0.5,"n":3}}"#).unwrap();
        let crate::EventBody::BatchEnd(b) = e.body else {
            panic!("not a batch_end");
        };
        let m = b.metrics.unwrap();
        assert_eq!((m["acc"], m["n"]), (0.5, 3.0));
        assert!(b.extra.is_empty());
    }
}
