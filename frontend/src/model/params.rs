//! The parameter view of a sweep: for a set of runs, each config key that varies
//! against one metric's final value, so "which learning rate won" is one look. Built
//! from the relay's `GET /api/values` answer; plain data and SVG text, tested natively.
//!
//! Keys are ranked by how strongly the metric follows them, on ranks so one outlier
//! cannot dominate: for numeric keys Spearman's |ρ| of the value, or of its distance
//! from the best run's value where that is stronger (a learning rate that wins in the
//! middle of the range); for the others the correlation ratio η of the metric's ranks
//! across the categories.

use super::markdown::escape;
use super::table::show;
use serde_json::Value;
use std::fmt::Write;
use stepwatch_events::num;

/// One run of the set: its id, name, final metric value and config (dotted keys).
#[derive(Debug, Clone, PartialEq)]
pub struct RunPoint {
    pub run: String,
    pub name: String,
    pub metric: Option<f64>,
    pub config: serde_json::Map<String, Value>,
}

/// How a key's values lie along x.
#[derive(Debug, Clone, PartialEq)]
pub enum Axis {
    /// Numbers, with the range shown and whether the scale is logarithmic.
    Num { lo: f64, hi: f64, log: bool },
    /// Text, booleans or mixed values, one slot per distinct value in order.
    Cat(Vec<String>),
}

/// One key against the metric: each point is (index into [`Sweep::runs`], x in 0..=1).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPlot {
    pub key: String,
    pub axis: Axis,
    pub points: Vec<(usize, f64)>,
    /// |ρ| or η, in 0..=1; `None` when fewer than three runs have the key.
    pub score: Option<f64>,
}

/// The runs, best first (those without the metric last), and one plot per key that varies.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub runs: Vec<RunPoint>,
    /// How many of `runs` have a finite metric value (they come first).
    pub scored: usize,
    pub plots: Vec<KeyPlot>,
    /// The metric's range over the scored runs, and whether y is logarithmic.
    pub y: (f64, f64, bool),
}

fn is_num(v: &Value) -> bool {
    matches!(v, Value::Number(_))
}

/// Whether a positive range spans enough to draw on a log scale.
fn wants_log(lo: f64, hi: f64) -> bool {
    lo > 0.0 && hi / lo >= 20.0
}

fn unit(x: f64, lo: f64, hi: f64, log: bool) -> f64 {
    let (x, lo, hi) = if log {
        (x.ln(), lo.ln(), hi.ln())
    } else {
        (x, lo, hi)
    };
    if hi > lo {
        (x - lo) / (hi - lo)
    } else {
        0.5
    }
}

/// Ranks (1-based, ties averaged) of `xs`.
fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    super::sort::sort_by(&mut idx, |a, b| xs[*a].total_cmp(&xs[*b]));
    let mut r = vec![0.0; xs.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && xs[idx[j + 1]] == xs[idx[i]] {
            j += 1;
        }
        for k in &idx[i..=j] {
            r[*k] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    r
}

fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

/// η of `ys` grouped by `groups`: the share of their spread the groups explain, rooted.
fn eta(groups: &[usize], ys: &[f64]) -> Option<f64> {
    let n = ys.len() as f64;
    let mean = ys.iter().sum::<f64>() / n;
    let total: f64 = ys.iter().map(|y| (y - mean) * (y - mean)).sum();
    let mut sums: Vec<(usize, f64, f64)> = Vec::new();
    for (g, y) in groups.iter().zip(ys) {
        match sums.iter_mut().find(|s| s.0 == *g) {
            Some(s) => {
                s.1 += y;
                s.2 += 1.0;
            }
            None => sums.push((*g, *y, 1.0)),
        }
    }
    let between: f64 = sums
        .iter()
        .map(|(_, s, c)| c * (s / c - mean) * (s / c - mean))
        .sum();
    (total > 0.0).then(|| (between / total).sqrt())
}

/// The sweep of `runs` against their metric, best first by `lower` (lower is better).
pub fn sweep(mut runs: Vec<RunPoint>, lower: bool) -> Sweep {
    let key = |r: &RunPoint| r.metric.filter(|m| m.is_finite());
    super::sort::sort_by(&mut runs, |a, b| match (key(a), key(b)) {
        (Some(x), Some(y)) => {
            let o = x.total_cmp(&y);
            if lower {
                o
            } else {
                o.reverse()
            }
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    });
    let scored = runs.iter().filter(|r| key(r).is_some()).count();
    let ys: Vec<f64> = runs[..scored].iter().filter_map(key).collect();
    let (ylo, yhi) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), y| {
            (l.min(*y), h.max(*y))
        });
    let ylog = wants_log(ylo, yhi) && yhi / ylo >= 100.0;
    let keys = super::sort::set(runs[..scored].iter().flat_map(|r| r.config.keys().cloned()));
    let mut plots = Vec::new();
    for k in keys {
        let have: Vec<(usize, &Value)> = (0..scored)
            .filter_map(|i| runs[i].config.get(&k).map(|v| (i, v)))
            .collect();
        let distinct = super::sort::set(have.iter().map(|(_, v)| v.to_string()));
        if distinct.len() < 2 {
            continue;
        }
        let my: Vec<f64> = ranks(&have.iter().map(|(i, _)| ys[*i]).collect::<Vec<_>>());
        let (axis, points, score) = if have.iter().all(|(_, v)| is_num(v)) {
            let xs: Vec<f64> = have
                .iter()
                .map(|(_, v)| num::from_json(v).unwrap_or(f64::NAN))
                .collect();
            let (lo, hi) = xs
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| {
                    (l.min(*x), h.max(*x))
                });
            let log = wants_log(lo, hi);
            let pts = have
                .iter()
                .zip(&xs)
                .map(|((i, _), x)| (*i, unit(*x, lo, hi, log)))
                .collect();
            // A learning rate wins in the middle: the metric may follow the distance
            // from the best run's value rather than the value itself.
            let t = |x: f64| if log { x.ln() } else { x };
            let from_best: Vec<f64> = match have.first() {
                Some((0, _)) => xs.iter().map(|x| (t(*x) - t(xs[0])).abs()).collect(),
                _ => Vec::new(),
            };
            let score = (xs.len() >= 3)
                .then(|| {
                    let rho = |x: &[f64]| pearson(&ranks(x), &my).map(f64::abs);
                    let d = (!from_best.is_empty()).then(|| rho(&from_best)).flatten();
                    match (rho(&xs), d) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    }
                })
                .flatten();
            (Axis::Num { lo, hi, log }, pts, score)
        } else {
            let cats: Vec<String> = super::sort::set(have.iter().map(|(_, v)| show(v)))
                .into_iter()
                .collect();
            let slot = |v: &Value| cats.iter().position(|c| *c == show(v)).unwrap_or(0);
            let groups: Vec<usize> = have.iter().map(|(_, v)| slot(v)).collect();
            let w = cats.len() as f64;
            let pts = have
                .iter()
                .zip(&groups)
                .map(|((i, _), g)| (*i, (*g as f64 + 0.5) / w))
                .collect();
            let score = (have.len() >= 3).then(|| eta(&groups, &my)).flatten();
            (Axis::Cat(cats), pts, score)
        };
        plots.push(KeyPlot {
            key: k,
            axis,
            points,
            score,
        });
    }
    super::sort::sort_by(&mut plots, |a, b| {
        b.score
            .unwrap_or(-1.0)
            .total_cmp(&a.score.unwrap_or(-1.0))
            .then_with(|| a.key.cmp(&b.key))
    });
    Sweep {
        runs,
        scored,
        plots,
        y: (ylo, yhi, ylog),
    }
}

/// The runs of a values answer (`name`, `config`, `metrics` each), with `metric` as
/// each one's value.
pub fn run_points(values: &Value, metric: &str) -> Vec<RunPoint> {
    let Some(runs) = values["runs"].as_object() else {
        return Vec::new();
    };
    runs.iter()
        .map(|(run, v)| RunPoint {
            run: run.clone(),
            name: v["name"].as_str().unwrap_or(run).to_string(),
            metric: num::from_json(&v["metrics"][metric]),
            config: v["config"].as_object().cloned().unwrap_or_default(),
        })
        .collect()
}

/// Plot area of one key's SVG (the viewBox is `W`×`H`).
const W: f64 = 300.0;
const H: f64 = 190.0;
const LEFT: f64 = 52.0;
const BOTTOM: f64 = 34.0;
const TOP: f64 = 10.0;
const RIGHT: f64 = 12.0;

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn label(out: &mut String, x: f64, y: f64, anchor: &str, text: &str) {
    let _ = write!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">"
    );
    escape(text, out);
    out.push_str("</text>");
}

/// Where a unit value lies in pixels along x and (upwards) along y.
fn px(u: f64) -> f64 {
    LEFT + u * (W - LEFT - RIGHT)
}
fn py(u: f64) -> f64 {
    H - BOTTOM - u * (H - BOTTOM - TOP)
}

/// Ticks of a numeric range as (unit position, value): the powers of ten inside a log
/// range (every other one past six), else the ends and the middle.
fn ticks(lo: f64, hi: f64, log: bool) -> Vec<(f64, f64)> {
    if log {
        let (a, b) = (lo.log10().ceil() as i32, hi.log10().floor() as i32);
        if b > a {
            let step = if b - a > 5 { 2 } else { 1 };
            return (a..=b)
                .step_by(step)
                .map(|e| {
                    let v = 10f64.powi(e);
                    (unit(v, lo, hi, true), v)
                })
                .collect();
        }
    }
    let mid = if log {
        (lo * hi).sqrt()
    } else {
        (lo + hi) / 2.0
    };
    vec![(0.0, lo), (0.5, mid), (1.0, hi)]
}

/// One key's scatter as SVG text: every run a dot linking to its run page (its name,
/// the value and the metric in a tooltip), the best run marked. Run names and values
/// are escaped.
pub fn svg(s: &Sweep, p: &KeyPlot, metric: &str) -> String {
    let mut o = String::with_capacity(1024 + 256 * p.points.len());
    let _ = write!(
        o,
        "<svg class=\"scatter\" viewBox=\"0 0 {W} {H}\" role=\"img\"><g class=\"axes\"><path d=\"M{LEFT} {TOP}V{}H{}\"/></g><g class=\"ticks\">",
        H - BOTTOM,
        W - RIGHT
    );
    let (ylo, yhi, ylog) = s.y;
    for (u, v) in ticks(ylo, yhi, ylog) {
        label(&mut o, LEFT - 4.0, py(u) + 4.0, "end", &num::display(v, 3));
    }
    match &p.axis {
        Axis::Num { lo, hi, log } => {
            for (u, v) in ticks(*lo, *hi, *log) {
                label(
                    &mut o,
                    px(u),
                    H - BOTTOM + 14.0,
                    "middle",
                    &num::display(v, 3),
                );
            }
        }
        Axis::Cat(cats) => {
            let n = cats.len().max(1) as f64;
            let room = ((W - LEFT - RIGHT) / n / 6.5) as usize;
            for (i, c) in cats.iter().enumerate() {
                let x = px((i as f64 + 0.5) / n);
                label(
                    &mut o,
                    x,
                    H - BOTTOM + 14.0,
                    "middle",
                    &short(c, room.max(2)),
                );
            }
        }
    }
    o.push_str("</g>");
    label(&mut o, px(0.5), H - 4.0, "middle", &short(&p.key, 40));
    let (mut near, mut best) = (Vec::new(), String::new());
    for (k, (i, u)) in p.points.iter().enumerate() {
        let r = &s.runs[*i];
        let m = r.metric.unwrap_or(f64::NAN);
        let v = r.config.get(&p.key).map(show).unwrap_or_default();
        // Runs on the same value spread a little sideways so each stays visible.
        let same = near.iter().filter(|x| *x == u).count() as f64;
        near.push(*u);
        let dx = if same > 0.0 {
            (same.ceil() * if k % 2 == 0 { 1.0 } else { -1.0 }) * 3.0
        } else {
            0.0
        };
        let out = if *i == 0 { &mut best } else { &mut o };
        // Run ids are [A-Za-z0-9._-]: nothing to percent-encode.
        out.push_str("<a href=\"#/runs/");
        escape(&r.run, out);
        let _ = write!(
            out,
            "\"><circle class=\"{}\" data-testid=\"param-point\" data-run=\"",
            if *i == 0 { "dot best" } else { "dot" }
        );
        escape(&r.run, out);
        let _ = write!(
            out,
            "\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\"><title>",
            px(*u) + dx,
            py(unit(m, ylo, yhi, ylog)),
            if *i == 0 { 6 } else { 4 }
        );
        escape(
            &format!(
                "{}\n{} = {v}\n{metric} = {}",
                r.name,
                p.key,
                num::display(m, 5)
            ),
            out,
        );
        out.push_str("</title></circle></a>");
    }
    // The best run last, so it is drawn on top.
    o.push_str(&best);
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values() -> Value {
        json!({"runs": {
            "a": {"name": "run a", "config": {"lr": 0.1, "opt": "sgd", "seed": 1}, "metrics": {"val_loss": 0.9}},
            "b": {"config": {"lr": 0.01, "opt": "adam", "seed": 1}, "metrics": {"val_loss": 0.5}},
            "c": {"config": {"lr": 0.001, "opt": "adam", "seed": 1}, "metrics": {"val_loss": 0.2}},
            "d": {"config": {"lr": 0.0001, "opt": "sgd", "seed": 1}, "metrics": {"val_loss": 0.3}},
            "e": {"config": {"lr": 0.05, "opt": "<b>x</b>", "seed": 2}, "metrics": {}},
        }})
    }

    #[test]
    fn best_run_first_and_the_keys_that_decide_ranked_first() {
        let s = sweep(run_points(&values(), "val_loss"), true);
        let order: Vec<&str> = s.runs.iter().map(|r| r.run.as_str()).collect();
        // The run without the metric comes last; a run without a name shows its id.
        assert_eq!(order, ["c", "d", "b", "a", "e"]);
        assert_eq!(s.scored, 4);
        assert_eq!(
            (s.runs[3].name.as_str(), s.runs[0].name.as_str()),
            ("run a", "c")
        );
        assert_eq!(s.y, (0.2, 0.9, false));
        // seed is 1 in every scored run: not a plot. lr before opt: the metric follows
        // lr's distance from the winner's 1e-3 (ρ ≥ 0.949, 1 where rounding
        // breaks the tie of 1e-4 and 1e-2) more than lr itself (ρ = 0.8).
        let keys: Vec<&str> = s.plots.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["lr", "opt"]);
        let lr = &s.plots[0];
        assert!(matches!(lr.axis, Axis::Num { log: true, .. }));
        assert!(lr.score.unwrap() > 0.94, "{:?}", lr.score);
        // 1e-4 at the left, 0.1 at the right, 1e-3 a third of the way on a log scale.
        let x_of = |run: &str| {
            lr.points
                .iter()
                .find(|(i, _)| s.runs[*i].run == run)
                .unwrap()
                .1
        };
        assert_eq!((x_of("d"), x_of("a")), (0.0, 1.0));
        assert!((x_of("c") - 1.0 / 3.0).abs() < 1e-9);
        let opt = &s.plots[1];
        assert_eq!(opt.axis, Axis::Cat(vec!["adam".into(), "sgd".into()]));
        assert!(opt.score.unwrap() > 0.0 && opt.score.unwrap() < 1.0);
        // Higher is better reverses the order.
        let up = sweep(run_points(&values(), "val_loss"), false);
        assert_eq!(up.runs[0].run, "a");
    }

    #[test]
    fn svg_links_every_scored_run_marks_the_best_and_escapes_text() {
        let mut v = values();
        v["runs"]["e"]["metrics"]["val_loss"] = json!(0.4);
        let s = sweep(run_points(&v, "val_loss"), true);
        let opt = s.plots.iter().find(|p| p.key == "opt").unwrap();
        let svg = svg(&s, opt, "val_loss");
        assert_eq!(svg.matches("data-testid=\"param-point\"").count(), 5);
        assert_eq!(svg.matches("class=\"dot best\"").count(), 1);
        assert!(svg.contains("data-run=\"c\" "));
        assert!(svg.contains("href=\"#/runs/c\""));
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(svg.contains("&lt;b&gt;"));
        // The best run is drawn last (on top).
        let last = svg.rfind("data-run=").unwrap();
        assert!(svg[last..].starts_with("data-run=\"c\""));
    }

    #[test]
    fn log_ticks_fall_on_powers_of_ten() {
        let at = |lo: f64, hi: f64| ticks(lo, hi, true).iter().map(|t| t.1).collect::<Vec<_>>();
        assert_eq!(at(3e-5, 0.1), [1e-4, 1e-3, 1e-2, 1e-1]);
        assert_eq!(at(1e-9, 1.0), [1e-9, 1e-7, 1e-5, 1e-3, 1e-1]);
        assert_eq!(ticks(2.0, 3.0, true).len(), 3);
        assert_eq!(ticks(0.0, 1.0, false)[1], (0.5, 0.5));
    }

    #[test]
    fn ranks_average_ties_and_scores_need_three_runs() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
        assert_eq!(
            eta(&[0, 0, 1, 1], &[1.0, 2.0, 3.0, 4.0]).map(|e| (e * 1e6).round()),
            Some(894_427.0)
        );
        let mut two = run_points(&values(), "val_loss");
        two.truncate(2);
        let s = sweep(two, true);
        assert_eq!(s.plots.len(), 2);
        assert!(s.plots.iter().all(|p| p.score.is_none()));
    }
}
