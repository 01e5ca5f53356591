//! The stored block format: points encoded as little-endian `(step, time, value)`
//! triples, and each block's summary (first, lowest, highest, last, first non-finite).

use super::db::{BlockRow, SeriesDb};
use crate::storage::error::StoreError;
use stepwatch_events::series::SeriesPoint;

/// Points per block.
pub const BLOCK: usize = 1024;

/// The newest block of one metric, in memory.
#[derive(Debug, Clone, Default)]
pub struct OpenBlock {
    pub block: i64,
    pub points: Vec<SeriesPoint>,
    /// Id of the event of the newest point.
    pub last_id: u64,
    /// Points already written to the block row.
    pub(super) persisted: usize,
}

pub(super) fn encode(points: &[SeriesPoint]) -> Vec<u8> {
    let mut out = Vec::with_capacity(points.len() * 24);
    for p in points {
        out.extend_from_slice(&p.step.to_le_bytes());
        out.extend_from_slice(&p.time.to_le_bytes());
        out.extend_from_slice(&p.value.to_le_bytes());
    }
    out
}

pub(super) fn decode(bytes: &[u8]) -> Vec<SeriesPoint> {
    bytes
        .chunks_exact(24)
        .map(|c| {
            let f = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&c[i * 8..i * 8 + 8]);
                f64::from_le_bytes(b)
            };
            SeriesPoint {
                step: f(0),
                time: f(1),
                value: f(2),
            }
        })
        .collect()
}

/// The block's first, lowest, highest and last point, and its first non-finite one.
pub(super) fn summarize(points: &[SeriesPoint]) -> Vec<SeriesPoint> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Vec::new();
    };
    let finite = points.iter().filter(|p| p.value.is_finite());
    let lo = finite.clone().min_by(|a, b| a.value.total_cmp(&b.value));
    let hi = finite.max_by(|a, b| a.value.total_cmp(&b.value));
    let odd = points.iter().find(|p| !p.value.is_finite());
    let mut out = vec![*first];
    out.extend(lo.copied());
    out.extend(hi.copied());
    out.push(*last);
    out.extend(odd.copied());
    out
}

pub(super) fn step_range(points: &[SeriesPoint]) -> (f64, f64) {
    points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.step), hi.max(p.step))
        })
}

pub(super) fn write_block(
    db: &mut dyn SeriesDb,
    run: &str,
    metric: &str,
    b: &OpenBlock,
) -> Result<(), StoreError> {
    let (lo, hi) = step_range(&b.points);
    db.write_block(
        run,
        metric,
        &BlockRow {
            block: b.block,
            n: b.points.len() as i64,
            step_lo: lo,
            step_hi: hi,
            last_id: b.last_id as i64,
            summary: &encode(&summarize(&b.points)),
            data: &encode(&b.points),
        },
    )
}
