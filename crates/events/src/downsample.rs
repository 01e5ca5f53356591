//! Downsampling for charts: keep, per bucket of x, the first, last, lowest and highest
//! point (M4). A million points become at most four per pixel column, and a spike —
//! a diverging loss — is never averaged away.

/// Reduces `points` (sorted by x) to at most 4 per bucket, `buckets` buckets spanning
/// the points' x range. Non-finite y values are kept as they are (they mark divergence).
pub fn m4(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    if buckets == 0 || points.len() <= buckets.saturating_mul(4) {
        return points.to_vec();
    }
    let (x0, x1) = (points[0].0, points[points.len() - 1].0);
    let width = (x1 - x0) / buckets as f64;
    if width.is_nan() || width <= 0.0 {
        return points.to_vec();
    }
    let mut out = Vec::with_capacity(buckets * 4);
    let mut start = 0;
    while start < points.len() {
        let b = (((points[start].0 - x0) / width) as usize).min(buckets - 1);
        let mut end = start + 1;
        while end < points.len() && (((points[end].0 - x0) / width) as usize).min(buckets - 1) == b
        {
            end += 1;
        }
        let bucket = &points[start..end];
        let mut lo = 0;
        let mut hi = 0;
        let mut odd = Vec::new();
        for (i, p) in bucket.iter().enumerate() {
            if !p.1.is_finite() {
                odd.push(i);
                continue;
            }
            if !bucket[lo].1.is_finite() || p.1 < bucket[lo].1 {
                lo = i;
            }
            if !bucket[hi].1.is_finite() || p.1 > bucket[hi].1 {
                hi = i;
            }
        }
        let mut idx = vec![0, lo, hi, bucket.len() - 1];
        idx.extend(odd.into_iter().take(4));
        idx.sort_unstable();
        idx.dedup();
        out.extend(idx.into_iter().map(|i| bucket[i]));
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
    fn small_inputs_untouched() {
        let pts = vec![(0.0, 1.0), (1.0, 2.0)];
        assert_eq!(m4(&pts, 10), pts);
    }
}
