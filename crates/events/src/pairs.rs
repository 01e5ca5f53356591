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
//! costs no more than before.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// Fields kept in the vector; past it, in a map.
const FEW: usize = 16;

/// Where a body's typed fields are taken from.
pub(crate) trait Source {
    /// The field's value, taken out.
    fn remove(&mut self, key: &str) -> Option<Value>;
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
    Few(Vec<(Cow<'a, str>, Value)>),
    Many(Map<String, Value>),
    #[default]
    Empty,
}

impl<'a> Pairs<'a> {
    fn insert(&mut self, key: Cow<'a, str>, value: Value) {
        match self {
            Pairs::Empty => {
                let mut v = Vec::with_capacity(8);
                v.push((key, value));
                *self = Pairs::Few(v);
            }
            Pairs::Few(v) => {
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
                    *self = Pairs::Many(m);
                }
            }
            Pairs::Many(m) => {
                m.insert(key.into_owned(), value);
            }
        }
    }
}

impl Source for Pairs<'_> {
    fn remove(&mut self, key: &str) -> Option<Value> {
        match self {
            Pairs::Few(v) => {
                let i = v.iter().position(|(k, _)| k == key)?;
                Some(v.swap_remove(i).1)
            }
            Pairs::Many(m) => m.remove(key),
            Pairs::Empty => None,
        }
    }
    fn rest(&mut self) -> Map<String, Value> {
        match std::mem::take(self) {
            Pairs::Few(v) => {
                let mut m = Map::new();
                for (k, x) in v {
                    m.insert(k.into_owned(), x);
                }
                m
            }
            Pairs::Many(m) => m,
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

/// One event object as parsed: its `event` field apart (the last one sent), the rest
/// as [`Pairs`].
pub(crate) struct Object<'a> {
    pub name: Option<Name<'a>>,
    pub fields: Pairs<'a>,
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
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    if key == "event" {
                        out.name = Some(map.next_value::<Name<'de>>()?);
                    } else {
                        let value = map.next_value::<Value>()?;
                        out.fields.insert(key, value);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}
