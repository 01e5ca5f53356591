//! Histograms over steps, drawn with plotters on a canvas as a heatmap: x is the step,
//! y the value, each step's bins shaded by their share of that step's largest bin, so
//! a distribution's drift (gradients vanishing, weights spreading) shows at a glance.
//! The step the samples panel's slider chose is marked.

use crate::chart::{fit, Theme, PALETTE};
use crate::model::media::HistSeries;
use plotters::prelude::*;
use plotters_canvas::CanvasBackend;
use web_sys::HtmlCanvasElement;

/// Draws `s` on `canvas`, marking step `at` (the newest when `None`).
pub fn draw(canvas: &HtmlCanvasElement, s: &HistSeries, at: Option<u64>, theme: Theme) {
    let dpr = fit(canvas);
    let Some(backend) = CanvasBackend::with_canvas_object(canvas.clone()) else {
        return;
    };
    let root = backend.into_drawing_area();
    let _ = root.fill(&theme.bg);
    let (Some(first), Some(last)) = (s.rows.first(), s.rows.last()) else {
        return;
    };
    let (x0, x1) = (first.0 as f64, last.0 as f64);
    // Each step's column reaches to the next step; the last one as wide as the one before.
    let tail = if s.rows.len() > 1 {
        (x1 - x0) / (s.rows.len() - 1) as f64
    } else {
        1.0
    };
    let (y0, y1) = if s.hi > s.lo {
        (s.lo, s.hi)
    } else {
        (s.lo - 0.5, s.hi + 0.5)
    };
    let font = (FontFamily::SansSerif, 11.0 * dpr)
        .into_font()
        .color(&theme.text);
    let Ok(mut chart) = ChartBuilder::on(&root)
        .margin((6.0 * dpr) as i32)
        .x_label_area_size((20.0 * dpr) as i32)
        .y_label_area_size((52.0 * dpr) as i32)
        .build_cartesian_2d(x0..x1 + tail, y0..y1)
    else {
        return;
    };
    let _ = chart
        .configure_mesh()
        .disable_mesh()
        .axis_style(theme.grid)
        .label_style(font)
        .x_labels(5)
        .y_labels(5)
        .x_label_formatter(&|x| format!("{x:.0}"))
        // A tick a rounding error away from 0 reads as 0, not 5.55e-17.
        .y_label_formatter(&|y| {
            let y = if y.abs() < (y1 - y0) * 1e-9 { 0.0 } else { *y };
            crate::chart::fmt_y(y, false)
        })
        .draw();
    let color = PALETTE[0];
    for (i, (step, h)) in s.rows.iter().enumerate() {
        let (Some(edges), Some(counts)) = (&h.edges, &h.counts) else {
            continue;
        };
        let left = *step as f64;
        let right = s.rows.get(i + 1).map_or(left + tail, |r| r.0 as f64);
        let top = counts.iter().copied().fold(0.0, f64::max);
        if top <= 0.0 {
            continue;
        }
        let cells = counts
            .iter()
            .zip(edges.windows(2))
            .filter(|(c, _)| **c > 0.0);
        let _ = chart.draw_series(cells.map(|(c, e)| {
            let shade = (c / top).sqrt();
            Rectangle::new([(left, e[0]), (right, e[1])], color.mix(shade).filled())
        }));
    }
    let mark = at.map_or(x1, |a| a as f64);
    let _ = chart.draw_series(std::iter::once(PathElement::new(
        [(mark, y0), (mark, y1)],
        theme.text.stroke_width((1.5 * dpr) as u32),
    )));
    let _ = root.present();
}
