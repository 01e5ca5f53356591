//! Line charts drawn with plotters on a canvas: sharp on HiDPI screens, downsampled per
//! pixel column (M4) so a million points draw fast and spikes never vanish, with
//! non-finite values marked in red along the top edge.

use plotters::prelude::*;
use plotters_canvas::CanvasBackend;
use stepwatch_events::downsample::m4;
use web_sys::HtmlCanvasElement;

/// Colours of the dark theme (kept in step with style.css).
pub const BG: RGBColor = RGBColor(0x16, 0x1b, 0x22);
pub const GRID: RGBColor = RGBColor(0x2a, 0x31, 0x3c);
pub const AXIS_TEXT: RGBColor = RGBColor(0x9a, 0xa7, 0xb6);
pub const LINE: RGBColor = RGBColor(0x4f, 0xc3, 0xf7);
pub const ALERT: RGBColor = RGBColor(0xff, 0x52, 0x52);

/// What a draw produced, for the page and its tests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Drawn {
    /// Points handed to the line after downsampling.
    pub points: usize,
    /// Non-finite values marked.
    pub non_finite: usize,
}

/// Sizes the canvas to its CSS box times the device pixel ratio; returns the ratio.
fn fit(canvas: &HtmlCanvasElement) -> f64 {
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

/// Draws `points` (x, y) as a line. Returns what was drawn.
pub fn draw_line(canvas: &HtmlCanvasElement, points: &[(f64, f64)], x_label: &str) -> Drawn {
    let dpr = fit(canvas);
    let Some(backend) = CanvasBackend::with_canvas_object(canvas.clone()) else {
        return Drawn::default();
    };
    let root = backend.into_drawing_area();
    let _ = root.fill(&BG);
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let bad: Vec<f64> = points
        .iter()
        .filter(|p| !p.1.is_finite())
        .map(|p| p.0)
        .collect();
    if points.is_empty() {
        let _ = root.present();
        return Drawn::default();
    }
    let x0 = points.first().map_or(0.0, |p| p.0);
    let x1 = points.last().map_or(1.0, |p| p.0).max(x0 + 1.0);
    let (mut y0, mut y1) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.08).max(y1.abs() * 1e-3).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let font = ("sans-serif", 12.0 * dpr).into_font().color(&AXIS_TEXT);
    let chart = ChartBuilder::on(&root)
        .margin((10.0 * dpr) as i32)
        .x_label_area_size((40.0 * dpr) as i32)
        .y_label_area_size((56.0 * dpr) as i32)
        .build_cartesian_2d(x0..x1, y0..y1);
    let Ok(mut chart) = chart else {
        return Drawn::default();
    };
    let _ = chart
        .configure_mesh()
        .light_line_style(GRID.mix(0.25))
        .bold_line_style(GRID)
        .axis_style(GRID)
        .label_style(font.clone())
        .x_desc(x_label)
        .axis_desc_style(font)
        .x_labels(8)
        .y_labels(6)
        .max_light_lines(2)
        .y_label_formatter(&|y| stepwatch_events::num::display(*y, 3))
        .x_label_formatter(&|x| format!("{}", *x as i64))
        .draw();
    let width_px = canvas.width() as usize;
    let sampled = m4(&finite, (width_px / 2).max(1));
    let _ = chart.draw_series(LineSeries::new(
        sampled.iter().copied(),
        LINE.stroke_width((1.5 * dpr).max(1.0) as u32),
    ));
    let _ = chart.draw_series(
        bad.iter()
            .map(|x| Circle::new((*x, y1 - pad * 0.5), (3.0 * dpr) as i32, ALERT.filled())),
    );
    let _ = root.present();
    Drawn {
        points: sampled.len(),
        non_finite: bad.len(),
    }
}
