//! A metric's points: what a chart draws ([`Point`]), a history page of them from the
//! relay ([`Page`]), the order their pages are asked for in, and what a zoomed chart
//! draws from the loaded points and the exact page of its range ([`zoomed`]).

use stepwatch_events::series::{SeriesInfo, SeriesPage, LOSS, LR};

/// One point of a metric series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Global step.
    pub step: f64,
    pub value: f64,
    /// Trainer time (unix seconds).
    pub time: f64,
    /// Id of the event it came from; 0 for points from a series page.
    pub id: u64,
}

/// A metric's history as the series endpoint answers it (`SeriesPage` in
/// `stepwatch_events::series`): its points (M4 per bucket when the range is long) and
/// the newest event id it covers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    pub metric: String,
    pub last_id: u64,
    pub points: Vec<Point>,
}

impl From<SeriesPage> for Page {
    fn from(p: SeriesPage) -> Page {
        Page {
            metric: p.metric,
            last_id: p.last_id,
            points: p
                .points
                .into_iter()
                .map(|p| Point {
                    step: p.step,
                    time: p.time,
                    value: p.value,
                    id: 0,
                })
                .collect(),
        }
    }
}

/// The metric names of a series list, the loss and the learning rate first (they head
/// the page, so their pages are asked for first).
pub fn metric_order(list: &[SeriesInfo]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in list.iter().map(|i| i.metric.as_str()) {
        let at = match name {
            LOSS => 0,
            LR => out.first().map_or(0, |f| usize::from(f == LOSS)),
            _ => out.len(),
        };
        out.insert(at, name.to_string());
    }
    out
}

/// What a chart zoomed to steps `a..=b` draws: the exact `page` of that range (covering
/// events up to `last_id`) in place of the loaded points inside it, the loaded points
/// outside it (so smoothing runs on from the left), and every live point newer than
/// the page.
pub fn zoomed(loaded: &[Point], page: &[Point], last_id: u64, (a, b): (f64, f64)) -> Vec<Point> {
    let mut out = Vec::with_capacity(loaded.len() + page.len());
    let mut placed = false;
    for p in loaded {
        let newer = p.id > last_id;
        if !newer && p.step >= a && p.step <= b {
            continue;
        }
        if !placed && (newer || p.step > b) {
            out.extend_from_slice(page);
            placed = true;
        }
        out.push(*p);
    }
    if !placed {
        out.extend_from_slice(page);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_keeps_its_points_and_id_and_the_loss_and_lr_come_first() {
        use stepwatch_events::series::SeriesPoint;
        let pt = |step: f64, value: f64| SeriesPoint {
            step,
            time: step + 100.0,
            value,
        };
        let back = Page::from(SeriesPage {
            metric: LOSS.into(),
            total: 9,
            exact: false,
            last_id: 7,
            points: vec![pt(1.0, 0.5), pt(2.0, f64::NAN)],
        });
        assert_eq!((back.metric.as_str(), back.last_id), (LOSS, 7));
        assert_eq!(back.points.len(), 2);
        let p = back.points[0];
        assert_eq!((p.step, p.time, p.value, p.id), (1.0, 101.0, 0.5, 0));
        assert!(back.points[1].value.is_nan());
        let list = |names: &[&str]| -> Vec<SeriesInfo> {
            names
                .iter()
                .map(|m| SeriesInfo {
                    metric: m.to_string(),
                    count: 1,
                    first_step: None,
                    last_step: None,
                })
                .collect()
        };
        assert_eq!(
            metric_order(&list(&["acc", "loss", "lr", "val/acc"])),
            vec!["loss", "lr", "acc", "val/acc"]
        );
        assert_eq!(
            metric_order(&list(&["lr", "a", "loss"])),
            vec!["loss", "lr", "a"]
        );
        assert!(metric_order(&[]).is_empty());
    }
    #[test]
    fn a_zoomed_chart_draws_the_exact_range_and_newer_live_points() {
        let pt = |step: u64, id: u64| Point {
            step: step as f64,
            value: step as f64,
            time: 0.0,
            id,
        };
        // The overview (from a page, id 0) and two live points.
        let loaded = vec![
            pt(0, 0),
            pt(100, 0),
            pt(200, 0),
            pt(300, 0),
            pt(301, 31),
            pt(302, 32),
        ];
        let zoom_page: Vec<Point> = (95..=205).map(|s| pt(s, 0)).collect();
        // The zoom page covers events up to 31: the live point 301 is in the overview
        // only once, 302 is newer than the page.
        let z = zoomed(&loaded, &zoom_page, 31, (95.0, 205.0));
        let s: Vec<u64> = z.iter().map(|p| p.step as u64).collect();
        assert_eq!(s.len(), 111 + 4);
        assert_eq!(&s[..2], &[0, 95]);
        assert_eq!(&s[s.len() - 3..], &[300, 301, 302]);
        let in_range = z
            .iter()
            .filter(|p| (95.0..=205.0).contains(&p.step))
            .count();
        assert_eq!(in_range, 111, "every raw point of the range, each once");
        // A live point newer than the page inside the range stays.
        let z = zoomed(&[pt(0, 0), pt(150, 40)], &zoom_page, 31, (95.0, 205.0));
        assert_eq!(z.len(), 1 + 111 + 1);
        assert_eq!(z.last().map(|p| p.id), Some(40));
    }
}
