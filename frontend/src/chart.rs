//! Line charts drawn with plotters on a canvas.
//!
//! [`prepare`] turns one series into what a chart draws: x by step, wall time or
//! relative time; optional log-scale y and EMA smoothing (computed on the full series,
//! so zooming never changes it); clipped to the zoomed x range *before* downsampling
//! per pixel column with M4, so zooming re-buckets from the full data and spikes
//! never vanish. [`draw`] renders prepared series, sharp on HiDPI screens, marking
//! non-finite values in red along the top edge, and returns the [`Frame`] that maps
//! pixels back to data for hover and drag-to-zoom.

use crate::model::Point;
use plotters::prelude::*;
use plotters_canvas::CanvasBackend;
use stepwatch_events::downsample::m4_indices;
use stepwatch_events::num;
use web_sys::HtmlCanvasElement;

/// Colours of the series, in order (kept in step with style.css).
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0x4f, 0xc3, 0xf7),
    RGBColor(0xff, 0xa7, 0x26),
    RGBColor(0x66, 0xbb, 0x6a),
    // Not red: red is for divergence (NaN/Infinity, the alert banner).
    RGBColor(0x7e, 0x57, 0xc2),
    RGBColor(0xab, 0x47, 0xbc),
    RGBColor(0x26, 0xc6, 0xda),
    RGBColor(0xd4, 0xe1, 0x57),
    RGBColor(0x8d, 0x6e, 0x63),
];
pub const ALERT: RGBColor = RGBColor(0xff, 0x52, 0x52);

/// The colours of a chart's frame, for the dark or the light theme.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Theme {
    pub bg: RGBColor,
    pub grid: RGBColor,
    pub text: RGBColor,
}

pub const DARK: Theme = Theme {
    bg: RGBColor(0x16, 0x1b, 0x22),
    grid: RGBColor(0x2a, 0x31, 0x3c),
    text: RGBColor(0x9a, 0xa7, 0xb6),
};
pub const LIGHT: Theme = Theme {
    bg: RGBColor(0xff, 0xff, 0xff),
    grid: RGBColor(0xe1, 0xe4, 0xe8),
    text: RGBColor(0x57, 0x60, 0x6a),
};

/// What the x axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XMode {
    #[default]
    Step,
    /// Wall-clock time.
    Wall,
    /// Seconds since the run started.
    Relative,
}

impl XMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XMode::Step => "step",
            XMode::Wall => "wall",
            XMode::Relative => "rel",
        }
    }
    pub fn parse(s: &str) -> XMode {
        match s {
            "wall" => XMode::Wall,
            "rel" => XMode::Relative,
            _ => XMode::Step,
        }
    }
}

/// How to draw.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChartOpts {
    pub x_mode: XMode,
    pub log_y: bool,
    /// EMA weight in 0..1 (0: none), as TensorBoard's smoothing slider.
    pub smooth: f64,
    /// Visible x range (in the x mode's units); `None` for everything.
    pub x_range: Option<(f64, f64)>,
}

/// One drawable point: its position and what it stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DPoint {
    pub x: f64,
    /// Plotted y (log10 of the value in log scale; smoothed when smoothing).
    pub y: f64,
    pub p: Point,
    /// The smoothed value, when smoothing.
    pub smooth: Option<f64>,
}

/// A series ready to draw: clipped, transformed, downsampled.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prepared {
    pub label: String,
    pub color: usize,
    pub raw: Vec<DPoint>,
    /// The EMA line, when smoothing.
    pub smooth: Vec<(f64, f64)>,
    /// x of non-finite values.
    pub bad: Vec<f64>,
    /// Points in the visible range before downsampling.
    pub visible: usize,
}

/// The x value of a point in `mode`; `t0` is the run's start for relative time.
pub fn x_of(p: &Point, mode: XMode, t0: f64) -> f64 {
    match mode {
        XMode::Step => p.step,
        XMode::Wall => p.time,
        XMode::Relative => p.time - t0,
    }
}

/// Debiased exponential moving average of the finite values (non-finite pass through).
pub fn ema(values: impl Iterator<Item = f64>, weight: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut n = 0i32;
    values
        .map(|v| {
            if !v.is_finite() {
                return v;
            }
            acc = acc * weight + (1.0 - weight) * v;
            n += 1;
            let debias = 1.0 - weight.powi(n);
            if debias > 0.0 {
                acc / debias
            } else {
                v
            }
        })
        .collect()
}

/// Prepares one series for a chart `buckets` pixel columns wide.
pub fn prepare(
    label: &str,
    color: usize,
    points: &[Point],
    t0: f64,
    opts: &ChartOpts,
    buckets: usize,
) -> Prepared {
    let smooth =
        (opts.smooth > 0.0).then(|| ema(points.iter().map(|p| p.value), opts.smooth.min(0.999)));
    let y_of = |v: f64| if opts.log_y { v.log10() } else { v };
    let in_range = |x: f64| opts.x_range.is_none_or(|(a, b)| x >= a && x <= b);
    let mut bad = Vec::new();
    let mut all = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let x = x_of(p, opts.x_mode, t0);
        if !in_range(x) {
            continue;
        }
        if !p.value.is_finite() {
            bad.push(x);
            continue;
        }
        if opts.log_y && p.value <= 0.0 {
            continue;
        }
        all.push(DPoint {
            x,
            y: y_of(p.value),
            p: *p,
            smooth: smooth.as_ref().map(|s| s[i]),
        });
    }
    let visible = all.len();
    let pairs: Vec<(f64, f64)> = all.iter().map(|d| (d.x, d.y)).collect();
    let keep = m4_indices(&pairs, buckets.max(1));
    let raw: Vec<DPoint> = keep.iter().map(|i| all[*i]).collect();
    let smooth_line = if smooth.is_some() {
        let sp: Vec<(f64, f64)> = all
            .iter()
            .filter_map(|d| {
                d.smooth
                    .filter(|s| s.is_finite() && (!opts.log_y || *s > 0.0))
                    .map(|s| (d.x, y_of(s)))
            })
            .collect();
        let k = m4_indices(&sp, buckets.max(1));
        k.into_iter().map(|i| sp[i]).collect()
    } else {
        Vec::new()
    };
    Prepared {
        label: label.to_string(),
        color,
        raw,
        smooth: smooth_line,
        bad,
        visible,
    }
}

/// Where the plot sits on the canvas (CSS pixels) and what it spans, for hover and zoom.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Frame {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
    pub x0: f64,
    pub x1: f64,
    pub y0: f64,
    pub y1: f64,
}

impl Frame {
    /// The data x at a CSS pixel offset from the canvas's left edge.
    pub fn x_at(&self, px: f64) -> f64 {
        self.x0 + (px - self.left) / self.width.max(1.0) * (self.x1 - self.x0)
    }
    /// The CSS pixel offset of data x.
    pub fn px_of(&self, x: f64) -> f64 {
        self.left + (x - self.x0) / (self.x1 - self.x0).max(f64::MIN_POSITIVE) * self.width
    }
    /// The CSS pixel offset (from the top) of plotted y.
    pub fn py_of(&self, y: f64) -> f64 {
        self.top + (self.y1 - y) / (self.y1 - self.y0).max(f64::MIN_POSITIVE) * self.height
    }
}

/// Formats an x value for an axis label or a tooltip.
pub fn fmt_x(x: f64, mode: XMode) -> String {
    match mode {
        XMode::Step => {
            // Whole steps, shortened but exact: "12.5k", "150.003k" (zoomed in), "2M".
            let (unit, scale) = if x.abs() >= 1e6 {
                ("M", 1e6)
            } else if x.abs() >= 1e4 {
                ("k", 1e3)
            } else {
                ("", 1.0)
            };
            num::display(x.round() / scale, 9) + unit
        }
        XMode::Wall => {
            let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(x * 1000.0));
            format!(
                "{:02}:{:02}:{:02}",
                d.get_hours(),
                d.get_minutes(),
                d.get_seconds()
            )
        }
        XMode::Relative => crate::model::duration(x),
    }
}

/// Formats a plotted y value (undoing the log transform).
pub fn fmt_y(y: f64, log_y: bool) -> String {
    num::display(if log_y { 10f64.powf(y) } else { y }, 3)
}

/// Sizes the canvas to its CSS box times the device pixel ratio; returns the ratio.
pub(crate) fn fit(canvas: &HtmlCanvasElement) -> f64 {
    let dpr = web_sys::window()
        .map(|w| w.device_pixel_ratio())
        .unwrap_or(1.0)
        .max(1.0);
    let w = (canvas.client_width().max(100) as f64 * dpr) as u32;
    let h = (canvas.client_height().max(80) as f64 * dpr) as u32;
    if canvas.width() != w {
        canvas.set_width(w);
    }
    if canvas.height() != h {
        canvas.set_height(h);
    }
    dpr
}

/// Series with at most this many visible points get a marker on each.
pub const SHOW_POINTS_UNDER: usize = 60;

/// The x range to draw and how many labels it takes. A range too narrow to show (one
/// point, or a zoom into less than a step) is widened around its centre: by steps, to at
/// least 2 (labels n-1, n, n+1); by time, to at least a minute. Whole-step labels are at
/// most one per step, so no label repeats.
pub fn x_span(x0: f64, x1: f64, mode: XMode) -> (f64, f64, usize) {
    let min = match mode {
        XMode::Step => 2.0,
        XMode::Wall | XMode::Relative => 60.0,
    };
    let (x0, x1) = if x1 - x0 < min {
        let mid = (x0 + x1) / 2.0;
        let mid = if mode == XMode::Step {
            mid.round()
        } else {
            mid
        };
        (mid - min / 2.0, mid + min / 2.0)
    } else {
        (x0, x1)
    };
    let labels = match mode {
        XMode::Step => ((x1 - x0).floor() as usize + 1).clamp(2, 7),
        _ => 7,
    };
    (x0, x1, labels)
}

/// Pixel columns a canvas offers for downsampling.
pub fn buckets_for(canvas: &HtmlCanvasElement) -> usize {
    (canvas.client_width().max(100) as usize).saturating_sub(70)
}

/// Draws prepared series; returns the frame, or `None` when there is nothing to draw.
pub fn draw(
    canvas: &HtmlCanvasElement,
    series: &[Prepared],
    opts: &ChartOpts,
    theme: Theme,
) -> Option<Frame> {
    let dpr = fit(canvas);
    let backend = CanvasBackend::with_canvas_object(canvas.clone())?;
    let root = backend.into_drawing_area();
    let _ = root.fill(&theme.bg);
    let xs = series
        .iter()
        .flat_map(|s| s.raw.iter().map(|d| d.x).chain(s.bad.iter().copied()));
    let (mut x0, mut x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if let Some((a, b)) = opts.x_range {
        (x0, x1) = (a, b);
    }
    if !x0.is_finite() {
        let _ = root.present();
        return None;
    }
    let x_labels;
    (x0, x1, x_labels) = x_span(x0, x1, opts.x_mode);
    let ys = series.iter().flat_map(|s| {
        s.raw
            .iter()
            .map(|d| d.y)
            .chain(s.smooth.iter().map(|p| p.1))
    });
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = if y1 - y0 > 1e-12 * y1.abs().max(1.0) {
        (y1 - y0) * 0.08
    } else {
        // A flat line or a single point: give it room on its own scale.
        if y1 != 0.0 {
            y1.abs() * 0.1
        } else {
            0.5
        }
    };
    let (y0, y1) = (y0 - pad, y1 + pad);
    let font = (FontFamily::SansSerif, 12.0 * dpr)
        .into_font()
        .color(&theme.text);
    let mut chart = ChartBuilder::on(&root)
        .margin((8.0 * dpr) as i32)
        .margin_right((22.0 * dpr) as i32)
        .x_label_area_size((24.0 * dpr) as i32)
        .y_label_area_size((58.0 * dpr) as i32)
        .build_cartesian_2d(x0..x1, y0..y1)
        .ok()?;
    let mode = opts.x_mode;
    let log_y = opts.log_y;
    let _ = chart
        .configure_mesh()
        .light_line_style(theme.grid.mix(0.25))
        .bold_line_style(theme.grid)
        .axis_style(theme.grid)
        .label_style(font)
        .x_labels(x_labels)
        .y_labels(6)
        .max_light_lines(2)
        .y_label_formatter(&|y| fmt_y(*y, log_y))
        .x_label_formatter(&|x| fmt_x(*x, mode))
        .draw();
    let width = (1.5 * dpr).max(1.0) as u32;
    for s in series {
        let color = PALETTE[s.color % PALETTE.len()];
        let raw_style = if s.smooth.is_empty() {
            color.stroke_width(width)
        } else {
            color.mix(0.28).stroke_width(width)
        };
        let _ = chart.draw_series(LineSeries::new(s.raw.iter().map(|d| (d.x, d.y)), raw_style));
        if s.visible <= SHOW_POINTS_UNDER {
            // Few points (epoch metrics): mark each one; a lone point clearly.
            let r = if s.visible <= 2 { 4.0 } else { 2.5 };
            let _ = chart.draw_series(
                s.raw
                    .iter()
                    .map(|d| Circle::new((d.x, d.y), (r * dpr) as i32, color.filled())),
            );
        }
        if !s.smooth.is_empty() {
            let _ = chart.draw_series(LineSeries::new(
                s.smooth.iter().copied(),
                color.stroke_width(width),
            ));
        }
        let _ = chart.draw_series(
            s.bad
                .iter()
                .map(|x| Circle::new((*x, y1 - pad * 0.5), (3.0 * dpr) as i32, ALERT.filled())),
        );
    }
    let _ = root.present();
    let (px, py) = chart.plotting_area().get_pixel_range();
    Some(Frame {
        left: px.start as f64 / dpr,
        top: py.start as f64 / dpr,
        width: (px.end - px.start) as f64 / dpr,
        height: (py.end - py.start) as f64 / dpr,
        x0,
        x1,
        y0,
        y1,
    })
}

/// The point of `s` nearest to data x (by x), if any.
pub fn nearest(s: &Prepared, x: f64) -> Option<&DPoint> {
    let i = s.raw.partition_point(|d| d.x < x);
    let a = i.checked_sub(1).and_then(|j| s.raw.get(j));
    let b = s.raw.get(i);
    match (a, b) {
        (Some(a), Some(b)) => Some(if (x - a.x).abs() <= (b.x - x).abs() {
            a
        } else {
            b
        }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels plotters would put on an x range, as the chart formats them.
    fn labels(x0: f64, x1: f64, mode: XMode) -> Vec<String> {
        use plotters::coord::ranged1d::Ranged;
        let (a, b, n) = x_span(x0, x1, mode);
        let coord: plotters::coord::types::RangedCoordf64 = (a..b).into();
        coord
            .key_points(n)
            .into_iter()
            .map(|x| fmt_x(x, mode))
            .collect()
    }

    #[test]
    fn one_point_is_centred_with_whole_step_labels_that_do_not_repeat() {
        let (a, b, _) = x_span(662.0, 662.0, XMode::Step);
        assert_eq!((a, b), (661.0, 663.0));
        let l = labels(662.0, 662.0, XMode::Step);
        assert_eq!(l, ["661", "662", "663"]);
        // Short ranges and zooms into less than a step: no label twice.
        for (x0, x1) in [
            (0.0, 1.0),
            (0.0, 3.5),
            (700.2, 700.8),
            (10.0, 15.0),
            (0.0, 1e6),
        ] {
            let l = labels(x0, x1, XMode::Step);
            let mut d = l.clone();
            d.dedup();
            assert_eq!(d, l, "{x0}..{x1}");
            assert!(l.len() >= 2, "{x0}..{x1}: {l:?}");
        }
        // Long ranges are left alone.
        assert_eq!(x_span(0.0, 5000.0, XMode::Step), (0.0, 5000.0, 7));
        // By time: a lone point gets a minute around it.
        let (a, b, _) = x_span(100.0, 100.0, XMode::Relative);
        assert_eq!((a, b), (70.0, 130.0));
    }

    fn pts(n: usize) -> Vec<Point> {
        (0..n)
            .map(|i| Point {
                step: i as f64,
                value: if i == 777 {
                    1000.0
                } else {
                    1.0 + (i % 10) as f64
                },
                time: 100.0 + i as f64,
                id: 0,
            })
            .collect()
    }

    #[test]
    fn zoom_rebuckets_from_the_full_data() {
        let p = pts(100_000);
        let full = prepare("loss", 0, &p, 100.0, &ChartOpts::default(), 100);
        assert!(full.raw.len() <= 400);
        let zoomed = prepare(
            "loss",
            0,
            &p,
            100.0,
            &ChartOpts {
                x_range: Some((700.0, 800.0)),
                ..Default::default()
            },
            100,
        );
        // 101 points in range fit in 100 buckets × 4: every one of them is kept.
        assert_eq!(zoomed.visible, 101);
        assert_eq!(zoomed.raw.len(), 101);
        assert!(
            zoomed.raw.iter().any(|d| d.y == 1000.0),
            "spike lost on zoom"
        );
        assert!(
            full.raw.iter().any(|d| d.y == 1000.0),
            "spike lost in the overview"
        );
    }

    #[test]
    fn log_scale_skips_non_positive_and_marks_nan() {
        let mut p = pts(10);
        p[2].value = 0.0;
        p[3].value = f64::NAN;
        let opts = ChartOpts {
            log_y: true,
            ..Default::default()
        };
        let s = prepare("loss", 0, &p, 0.0, &opts, 100);
        assert_eq!(s.raw.len(), 8);
        assert_eq!(s.bad, vec![3.0]);
        assert!((s.raw[0].y - 1f64.log10()).abs() < 1e-12);
        assert_eq!(fmt_y(2.0, true), "100");
    }

    #[test]
    fn ema_is_debiased_and_keeps_nan() {
        let e = ema([2.0, 2.0, f64::NAN, 2.0].into_iter(), 0.9);
        assert!((e[0] - 2.0).abs() < 1e-12);
        assert!(e[2].is_nan());
        assert!((e[3] - 2.0).abs() < 1e-12);
    }

    #[test]
    fn x_modes_and_nearest() {
        let p = pts(10);
        let rel = prepare(
            "x",
            0,
            &p,
            100.0,
            &ChartOpts {
                x_mode: XMode::Relative,
                ..Default::default()
            },
            100,
        );
        assert_eq!(rel.raw[3].x, 3.0);
        assert_eq!(nearest(&rel, 4.4).map(|d| d.p.step), Some(4.0));
        assert_eq!(nearest(&rel, 99.0).map(|d| d.p.step), Some(9.0));
        assert_eq!(fmt_x(12_500.0, XMode::Step), "12.5k");
        assert_eq!(fmt_x(150_003.2, XMode::Step), "150.003k");
        assert_eq!(fmt_x(2_000_000.0, XMode::Step), "2M");
        assert_eq!(fmt_x(10_000_017.0, XMode::Step), "10.000017M");
        assert_eq!(fmt_x(-3.4, XMode::Step), "-3");
        assert_eq!(fmt_x(65.0, XMode::Relative), "1m 05s");
    }
}
