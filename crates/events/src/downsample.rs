//! Downsampling for charts: keep, per bucket of x, the first, last, lowest and highest
//! point (M4). A million points become at most four per pixel column, and a spike —
//! a diverging loss — is never averaged away.

/// Reduces `points` (sorted by x) to at most 4 per bucket, `buckets` buckets spanning
/// the points' x range. Non-finite y values are kept as they are (they mark divergence).
pub fn m4(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    m4_indices(points, buckets)
        .into_iter()
        .map(|i| points[i])
        .collect()
}

/// The indices [`m4`] keeps, in order: per bucket the first, lowest, highest and last
/// point, plus up to four non-finite ones.
pub fn m4_indices(points: &[(f64, f64)], buckets: usize) -> Vec<usize> {
    if buckets == 0 || points.len() <= buckets.saturating_mul(4) {
        return (0..points.len()).collect();
    }
    let (x0, x1) = (points[0].0, points[points.len() - 1].0);
    let width = (x1 - x0) / buckets as f64;
    if width.is_nan() || width <= 0.0 {
        return (0..points.len()).collect();
    }
    let bucket_of = |x: f64| (((x - x0) / width).max(0.0) as usize).min(buckets - 1);
    let mut out = Vec::with_capacity(buckets * 4);
    let mut start = 0;
    while start < points.len() {
        let b = bucket_of(points[start].0);
        let mut end = start + 1;
        while end < points.len() && bucket_of(points[end].0) == b {
            end += 1;
        }
        let mut lo: Option<usize> = None;
        let mut hi: Option<usize> = None;
        let mut odd = Vec::new();
        for i in start..end {
            let y = points[i].1;
            if !y.is_finite() {
                if odd.len() < 4 {
                    odd.push(i);
                }
                continue;
            }
            if lo.is_none_or(|l| y < points[l].1) {
                lo = Some(i);
            }
            if hi.is_none_or(|h| y > points[h].1) {
                hi = Some(i);
            }
        }
        let mut idx = vec![start, end - 1];
        idx.extend(lo);
        idx.extend(hi);
        idx.extend(odd);
        // At most eight positions: an insertion sort, where the standard library's
        // would bring a sort of its own to the dashboard's download.
        for i in 1..idx.len() {
            let mut j = i;
            while j > 0 && idx[j - 1] > idx[j] {
                idx.swap(j - 1, j);
                j -= 1;
            }
        }
        idx.dedup();
        out.extend(idx);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_spike_and_ends() {
        let mut pts: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, 1.0)).collect();
        pts[5_123].1 = 99.0;
        pts[7_000].1 = f64::NAN;
        let out = m4(&pts, 100);
        assert!(out.len() <= 100 * 4 + 4);
        assert!(out.iter().any(|p| p.1 == 99.0), "spike vanished");
        assert!(out.iter().any(|p| p.1.is_nan()), "NaN vanished");
        assert_eq!(out.first(), pts.first());
        assert_eq!(out.last(), pts.last());
    }

    #[test]
    fn every_buckets_min_and_max_survive() {
        // A saw-tooth with a different extreme in every bucket.
        let pts: Vec<(f64, f64)> = (0..100_000)
            .map(|i| {
                (
                    i as f64,
                    ((i * 7919) % 1000) as f64 + (i / 1000) as f64 * 0.001,
                )
            })
            .collect();
        let buckets = 100;
        let kept = m4(&pts, buckets);
        for b in 0..buckets {
            let bucket = &pts[b * 1000..(b + 1) * 1000];
            let min = bucket.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let max = bucket.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            let in_b: Vec<_> = kept.iter().filter(|p| (p.0 as usize) / 1000 == b).collect();
            assert!(in_b.iter().any(|p| p.1 == min), "bucket {b} lost its min");
            assert!(in_b.iter().any(|p| p.1 == max), "bucket {b} lost its max");
            assert!(in_b.len() <= 4);
        }
    }

    #[test]
    fn small_inputs_untouched() {
        let pts = vec![(0.0, 1.0), (1.0, 2.0)];
        assert_eq!(m4(&pts, 10), pts);
    }
}
