//! Chart queries on the series index: M4 over the blocks in range (exact while the raw
//! points fit), and the list of a run's metrics.

use super::block::{decode, step_range, OpenBlock};
use super::db::SeriesDb;
use crate::storage::error::StoreError;
use std::collections::HashMap;
use stepwatch_events::downsample::m4_indices;
use stepwatch_events::series::{SeriesInfo, SeriesPage, SeriesPoint};

/// Up to this many raw points in the requested range, the answer is exact M4.
pub const EXACT_LIMIT: u64 = 1_000_000;
/// Most buckets a client may ask for.
pub const MAX_POINTS: usize = 20_000;

/// One stored block's header, read without its points.
struct Header {
    block: i64,
    n: u64,
    lo: f64,
    hi: f64,
    summary: Vec<SeriesPoint>,
}

fn headers(
    db: &mut dyn SeriesDb,
    run: &str,
    metric: &str,
    below: i64,
) -> Result<Vec<Header>, StoreError> {
    Ok(db
        .headers(run, metric, below)?
        .into_iter()
        .map(|(block, n, lo, hi, summary)| Header {
            block,
            n,
            lo,
            hi,
            summary: decode(&summary),
        })
        .collect())
}

fn block_points(
    db: &mut dyn SeriesDb,
    run: &str,
    metric: &str,
    block: i64,
) -> Result<Vec<SeriesPoint>, StoreError> {
    Ok(decode(&db.block_data(run, metric, block)?))
}

/// What a series query asks for.
#[derive(Debug, Clone, Copy)]
pub struct SeriesQuery {
    /// Buckets (about the chart's width in pixels); at most 4 points each come back.
    pub points: usize,
    pub from: Option<f64>,
    pub to: Option<f64>,
    /// Raw points read at most before block summaries stand in ([`EXACT_LIMIT`]).
    pub exact_limit: u64,
}

/// Answers a series query from the stored blocks plus `open` (the in-memory newest
/// block, copied under the writer lock), consistent as of event `last_id`.
pub fn query(
    db: &mut dyn SeriesDb,
    run: &str,
    metric: &str,
    open: Option<OpenBlock>,
    last_id: u64,
    q: SeriesQuery,
) -> Result<SeriesPage, StoreError> {
    let open = open.unwrap_or_default();
    let from = q.from.unwrap_or(f64::NEG_INFINITY);
    let to = q.to.unwrap_or(f64::INFINITY);
    let buckets = q.points.clamp(1, MAX_POINTS);
    let inside = |p: &SeriesPoint| p.step >= from && p.step <= to;
    let blocks: Vec<Header> = headers(db, run, metric, open.block)?
        .into_iter()
        .filter(|h| h.hi >= from && h.lo <= to)
        .collect();
    let stored: u64 = blocks.iter().map(|h| h.n).sum();
    let open_points: Vec<SeriesPoint> = open.points.iter().copied().filter(inside).collect();
    let mut total = stored + open_points.len() as u64;
    let exact = stored + open_points.len() as u64 <= q.exact_limit;
    let mut points: Vec<SeriesPoint> = Vec::new();
    if exact {
        total = open_points.len() as u64;
        for h in &blocks {
            let raw: Vec<SeriesPoint> = block_points(db, run, metric, h.block)?
                .into_iter()
                .filter(inside)
                .collect();
            total += raw.len() as u64;
            points.extend(raw);
        }
    } else {
        // Whole blocks stand in by their summaries; the two edge blocks, cut by the
        // range, are read in full so the ends of the chart are exact.
        for (i, h) in blocks.iter().enumerate() {
            let edge = i == 0 || i + 1 == blocks.len();
            if edge && (h.lo < from || h.hi > to) {
                points.extend(
                    block_points(db, run, metric, h.block)?
                        .into_iter()
                        .filter(inside),
                );
            } else {
                points.extend(h.summary.iter().copied().filter(inside));
            }
        }
    }
    points.extend(open_points);
    points.sort_by(|a, b| a.step.total_cmp(&b.step));
    let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.step, p.value)).collect();
    let keep = m4_indices(&xy, buckets);
    Ok(SeriesPage {
        metric: metric.to_string(),
        total,
        exact,
        last_id,
        points: keep.into_iter().map(|i| points[i]).collect(),
    })
}

/// The run's metrics with their point counts and step ranges.
pub fn list(
    db: &mut dyn SeriesDb,
    run: &str,
    open: Vec<(String, OpenBlock)>,
) -> Result<Vec<SeriesInfo>, StoreError> {
    let mut out: HashMap<String, SeriesInfo> = HashMap::new();
    let open_blocks: HashMap<String, OpenBlock> = open.into_iter().collect();
    let mut add = |metric: &str, n: u64, lo: f64, hi: f64| {
        let e = out.entry(metric.to_string()).or_insert_with(|| SeriesInfo {
            metric: metric.to_string(),
            count: 0,
            first_step: None,
            last_step: None,
        });
        e.count += n;
        if n > 0 {
            e.first_step = Some(e.first_step.map_or(lo, |f| f.min(lo)));
            e.last_step = Some(e.last_step.map_or(hi, |l| l.max(hi)));
        }
    };
    // Sums per metric in the database; the newest block's row (when written) counts
    // through its newer copy in memory instead.
    for (metric, n, lo, hi) in db.sums(run)? {
        let written = open_blocks.get(&metric).map_or(0, |b| b.persisted as u64);
        add(&metric, n.saturating_sub(written), lo, hi);
    }
    for (metric, b) in &open_blocks {
        if !b.points.is_empty() {
            let (lo, hi) = step_range(&b.points);
            add(metric, b.points.len() as u64, lo, hi);
        }
    }
    let mut v: Vec<SeriesInfo> = out.into_values().collect();
    v.sort_by(|a, b| a.metric.cmp(&b.metric));
    Ok(v)
}
