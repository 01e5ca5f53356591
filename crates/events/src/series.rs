//! Metric series: which numbers of an event become chart points, and the shape of the
//! relay's `GET /api/runs/{run}/series` answer.
//!
//! The relay indexes series from stored events with [`metric_values`]; the dashboard
//! builds its live series with the same function, so a chart drawn from history and
//! one drawn from the stream agree.

use crate::event::{Event, EventBody};
use crate::num;
use serde::{Deserialize, Serialize};

/// The name of the loss series.
pub const LOSS: &str = "loss";
/// The name of the learning-rate series.
pub const LR: &str = "lr";

/// Calls `f(name, value)` for every metric value `e` carries: a `batch_end`'s loss, lr,
/// metrics and extra numeric fields; an `epoch_end`'s metrics; a `metric_update`'s
/// name/value and metrics. Non-finite values are passed on (they mark divergence).
pub fn metric_values<'e>(e: &'e Event, mut f: impl FnMut(&'e str, f64)) {
    match &e.body {
        EventBody::BatchEnd(b) => {
            if let Some(loss) = b.loss {
                f(LOSS, loss);
            }
            if let Some(lr) = b.lr {
                f(LR, lr);
            }
            for (k, v) in b.metrics.iter().flatten() {
                f(k, *v);
            }
            for (k, v) in &b.extra {
                // Numbers, and the strings that stand for non-finite numbers.
                let number = match v {
                    serde_json::Value::String(s) => num::parse_non_finite(s),
                    other => num::from_json(other),
                };
                if let Some(x) = number {
                    f(k, x);
                }
            }
        }
        EventBody::EpochEnd(b) => {
            for (k, v) in b.metrics.iter().flatten() {
                f(k, *v);
            }
        }
        EventBody::MetricUpdate(m) => {
            if let (Some(name), Some(v)) = (&m.name, m.value) {
                f(name, v);
            }
            for (k, v) in m.metrics.iter().flatten() {
                f(k, *v);
            }
        }
        _ => {}
    }
}

/// One chart point: global step, trainer time (unix seconds), value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesPoint {
    pub step: f64,
    pub time: f64,
    pub value: f64,
}

impl Serialize for SeriesPoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.step, self.time, num::to_json(self.value)).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SeriesPoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (step, time, v) = <(f64, f64, serde_json::Value)>::deserialize(d)?;
        let value = num::from_json(&v)
            .ok_or_else(|| serde::de::Error::custom("point value is not a number"))?;
        Ok(SeriesPoint { step, time, value })
    }
}

/// `GET /api/runs/{run}/series?metric=…&points=…&from=…&to=…`: one metric between two
/// steps, reduced per bucket to its first, last, lowest and highest point (M4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPage {
    pub metric: String,
    /// Points of the metric in the range, before reduction.
    pub total: u64,
    /// True when every point of the range was read (at most one block per bucket
    /// otherwise: summaries of 1,024 points placed at their bucket).
    pub exact: bool,
    /// The id of the newest event the answer covers: stream from here.
    pub last_id: u64,
    /// `[step, time, value]` triples, in step order.
    pub points: Vec<SeriesPoint>,
}

/// `GET /api/runs/{run}/series` without a metric: the run's series and their sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesInfo {
    pub metric: String,
    pub count: u64,
    #[serde(with = "num::opt", default)]
    pub first_step: Option<f64>,
    #[serde(with = "num::opt", default)]
    pub last_step: Option<f64>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn values(json: &str) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        metric_values(&Event::from_json(json).unwrap(), |k, v| {
            out.push((k.to_string(), v))
        });
        out
    }

    #[test]
    fn every_kind_of_metric_becomes_a_point_and_nothing_else_does() {
        let got = values(
            r#"{"event":"batch_end","loss":"NaN","lr":0.1,"metrics":{"acc":0.5},"grad_norm":2,"note":"x","tag":"Infinity"}"#,
        );
        assert_eq!(got.len(), 5);
        assert!(got[0].0 == "loss" && got[0].1.is_nan());
        assert!(got.contains(&("lr".into(), 0.1)));
        assert!(got.contains(&("acc".into(), 0.5)));
        assert!(got.contains(&("grad_norm".into(), 2.0)));
        assert!(got.contains(&("tag".into(), f64::INFINITY)));
        assert_eq!(
            values(r#"{"event":"metric_update","name":"val/loss","value":0.25}"#),
            vec![("val/loss".into(), 0.25)]
        );
        assert_eq!(
            values(r#"{"event":"epoch_end","epoch":1,"metrics":{"val_acc":0.9}}"#),
            vec![("val_acc".into(), 0.9)]
        );
        assert!(values(r#"{"event":"log","message":"1.0"}"#).is_empty());
    }

    #[test]
    fn a_page_round_trips_with_non_finite_values_as_strings() {
        let page = SeriesPage {
            metric: "loss".into(),
            total: 2,
            exact: true,
            last_id: 9,
            points: vec![
                SeriesPoint {
                    step: 1.0,
                    time: 10.0,
                    value: 0.5,
                },
                SeriesPoint {
                    step: 2.0,
                    time: 11.0,
                    value: f64::NAN,
                },
            ],
        };
        let json = serde_json::to_string(&page).unwrap();
        assert!(json.contains(r#"[2.0,11.0,"NaN"]"#), "{json}");
        let back: SeriesPage = serde_json::from_str(&json).unwrap();
        assert!(back.points[1].value.is_nan());
        assert_eq!(back.points[0], page.points[0]);
    }
}
