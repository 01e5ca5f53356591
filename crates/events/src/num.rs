//! Numbers on the wire.
//!
//! JSON has no NaN or infinity, yet a diverging loss must stay visible. So a
//! non-finite float travels as one of the strings `"NaN"`, `"Infinity"`,
//! `"-Infinity"`; every finite float travels as a JSON number.

use serde_json::Value;

/// Encodes a float for the wire: a number when finite, else `"NaN"` / `"Infinity"` / `"-Infinity"`.
pub fn to_json(x: f64) -> Value {
    if x.is_finite() {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    } else {
        Value::String(non_finite_name(x).to_string())
    }
}

/// The wire string of a non-finite float.
pub fn non_finite_name(x: f64) -> &'static str {
    if x.is_nan() {
        "NaN"
    } else if x > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// Decodes a float from the wire: any JSON number, or one of the three non-finite strings.
pub fn from_json(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_non_finite(s),
        _ => None,
    }
}

/// Parses `"NaN"`, `"Infinity"` or `"-Infinity"` (also `"inf"`, `"-inf"`, `"nan"`, as Python writes them).
pub fn parse_non_finite(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "Infinity" | "inf" | "+Infinity" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Formats a float for people: non-finite values by name, others with `digits` significant digits.
pub fn display(x: f64, digits: usize) -> String {
    if !x.is_finite() {
        return non_finite_name(x).to_string();
    }
    if x == 0.0 {
        return "0".to_string();
    }
    let mag = x.abs().log10().floor() as i32;
    if !(-4..6).contains(&mag) {
        return format!("{:.*e}", digits.saturating_sub(1), x);
    }
    let decimals = (digits as i32 - 1 - mag).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `#[serde(with = "stepwatch_events::num::f64")]` for a plain `f64` field.
pub mod float {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        super::to_json(*x).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        super::from_json(&v).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected a number or \"NaN\"/\"Infinity\"/\"-Infinity\", got {v}"
            ))
        })
    }
}

/// `#[serde(with = "stepwatch_events::num::opt")]` for an `Option<f64>` field.
pub mod opt {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        x.map(super::to_json).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        match v {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => super::from_json(&v).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "expected a number or \"NaN\"/\"Infinity\"/\"-Infinity\", got {v}"
                ))
            }),
        }
    }
}

/// `#[serde(with = "stepwatch_events::num::map")]` for a `BTreeMap<String, f64>` field.
pub mod map {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, super::to_json(*v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
        let raw = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        // Inserted one by one: collecting into a map sorts, a copy of the sort the
        // dashboard's wasm would carry for this one type.
        let mut out = BTreeMap::new();
        for (k, v) in raw {
            let Some(x) = super::from_json(&v) else {
                return Err(serde::de::Error::custom(format!(
                    "metric `{k}`: expected a number, got {v}"
                )));
            };
            out.insert(k, x);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_round_trip() {
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let back = from_json(&to_json(x)).unwrap();
            assert_eq!(back.is_nan(), x.is_nan());
            if !x.is_nan() {
                assert_eq!(back, x);
            }
        }
        assert_eq!(to_json(2.5), serde_json::json!(2.5));
    }

    #[test]
    fn display_is_readable() {
        assert_eq!(display(2.54321, 5), "2.5432");
        assert_eq!(display(0.00009, 3), "9.00e-5");
        assert_eq!(display(f64::NAN, 3), "NaN");
        assert_eq!(display(-f64::INFINITY, 3), "-Infinity");
        assert_eq!(display(1500.0, 4), "1500");
    }
}
