//! The chart panel: a plotters canvas with hover readout, drag-to-zoom, double-click
//! reset, log-scale toggle and PNG export. Page-wide settings (x axis, smoothing, zoom)
//! live in [`ChartSettings`] so every chart of a page moves together.
//!
//! A page provides its [`ChartSettings`] as context; every chart and the toolbar read
//! them from there.
//!
//! A chart first draws what its runs have loaded: the series endpoint's overview (M4
//! per bucket of the whole run) plus live points. Zoomed by step, it draws the exact
//! points of the visible range instead ([`crate::load::zoom_pages`] fetches them), so
//! zooming in on a 10-million-step run still shows every raw point.

use super::common::{download_url, prefers_light};
use crate::api;
use crate::chart::{self, ChartOpts, Frame, Prepared, XMode};
use crate::i18n::{use_i18n, Key};
use crate::load::{self, ZoomPages};
use crate::model::{self, RunView};
use crate::route::Route;
use leptos::prelude::*;
use std::collections::BTreeSet;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Settings shared by every chart of a page, mirrored in the URL; the page provides
/// them as context ([`use_chart_settings`]).
#[derive(Clone, Copy)]
pub struct ChartSettings {
    pub x_mode: RwSignal<XMode>,
    pub smooth: RwSignal<f64>,
    pub log: RwSignal<BTreeSet<String>>,
    pub zoom: RwSignal<Option<(f64, f64)>>,
}

impl ChartSettings {
    /// Reads the settings from a route's parameters.
    pub fn from_route(r: &Route) -> Self {
        let zoom = r.get("zoom").and_then(|z| {
            let (a, b) = z.split_once('~')?;
            Some((model::parse_f64(a)?, model::parse_f64(b)?))
        });
        ChartSettings {
            x_mode: RwSignal::new(XMode::parse(r.get("x").unwrap_or("step"))),
            smooth: RwSignal::new(
                r.get("smooth")
                    .and_then(model::parse_f64)
                    .filter(|s| (0.0..1.0).contains(s))
                    .unwrap_or(0.0),
            ),
            log: RwSignal::new(
                r.get("log")
                    .map(|l| {
                        crate::model::sort::set(
                            l.split(',').filter(|s| !s.is_empty()).map(String::from),
                        )
                    })
                    .unwrap_or_default(),
            ),
            zoom: RwSignal::new(zoom),
        }
    }

    /// The settings as URL parameters.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let x = self.x_mode.get();
        let smooth = self.smooth.get();
        vec![
            (
                "x",
                if x == XMode::Step {
                    String::new()
                } else {
                    x.as_str().to_string()
                },
            ),
            (
                "smooth",
                if smooth > 0.0 {
                    format!("{smooth:.2}")
                } else {
                    String::new()
                },
            ),
            (
                "log",
                self.log
                    .with(|l| l.iter().cloned().collect::<Vec<_>>().join(",")),
            ),
            (
                "zoom",
                self.zoom
                    .get()
                    .map(|(a, b)| format!("{a}~{b}"))
                    .unwrap_or_default(),
            ),
        ]
    }

    /// The step range a chart zoomed by step shows (tracked), else `None`.
    pub fn step_zoom(&self) -> Option<(f64, f64)> {
        let zoom = self.zoom.get();
        (self.x_mode.get() == XMode::Step).then_some(zoom).flatten()
    }

    pub fn opts(&self, metric: &str) -> ChartOpts {
        ChartOpts {
            x_mode: self.x_mode.get(),
            log_y: self.log.with(|l| l.contains(metric)),
            smooth: self.smooth.get(),
            x_range: self.zoom.get(),
        }
    }
}

/// The page's chart settings, from context.
pub fn use_chart_settings() -> ChartSettings {
    expect_context::<ChartSettings>()
}

/// The x-axis switch, smoothing slider and zoom reset for a page.
#[component]
pub fn ChartToolbar(#[prop(optional)] children: Option<Children>) -> impl IntoView {
    let i18n = use_i18n();
    let settings = use_chart_settings();
    let mode_btn = move |m: XMode, key: Key| {
        view! {
            <button class=move || if settings.x_mode.get() == m { "seg on" } else { "seg" }
                data-testid=format!("x-{}", m.as_str())
                on:click=move |_| { settings.x_mode.set(m); settings.zoom.set(None); }>
                {move || i18n.t(key)}
            </button>
        }
    };
    view! {
        <div class="toolbar" data-testid="chart-toolbar">
            <span class="muted small">{i18n.tr(Key::XAxis)}</span>
            <div class="segs">
                {mode_btn(XMode::Step, Key::XStep)}
                {mode_btn(XMode::Wall, Key::XWall)}
                {mode_btn(XMode::Relative, Key::XRelative)}
            </div>
            <label class="smooth">
                <span class="muted small">{i18n.tr(Key::Smoothing)}</span>
                <input type="range" min="0" max="0.99" step="0.01" data-testid="smoothing"
                    prop:value=move || settings.smooth.get().to_string()
                    on:input=move |ev| {
                        if let Some(v) = model::parse_f64(&event_target_value(&ev)) {
                            settings.smooth.set(v.clamp(0.0, 0.99));
                        }
                    }/>
                <span class="small mono">{move || format!("{:.2}", settings.smooth.get())}</span>
            </label>
            {super::common::show(Signal::derive(move || settings.zoom.get().is_some()), move || view! { <button class="btn" data-testid="reset-zoom" on:click=move |_| settings.zoom.set(None)>
                    {i18n.tr(Key::ResetZoom)}
                </button> })}
            <span class="spacer"></span>
            <span class="muted small hint">{i18n.tr(Key::ZoomHint)}</span>
            {children.map(|c| c())}
        </div>
    }
}

/// One run's contribution to a chart.
#[derive(Clone, Copy)]
pub struct Source {
    pub view: ReadSignal<RunView>,
    pub color: usize,
}

#[derive(Clone, PartialEq)]
struct Hover {
    px: f64,
    lines: Vec<(String, usize, String)>,
    head: String,
}

/// What a chart drew last: its frame, its series as prepared (for the hover readout)
/// and the counts its test hooks show (visible points, points drawn, non-finite ones).
#[derive(Clone, Copy)]
struct Drawn {
    frame: RwSignal<Option<Frame>>,
    prepared: StoredValue<Vec<Prepared>, LocalStorage>,
    counts: RwSignal<(usize, usize, usize)>,
}

/// A chart of `metric` for one or more runs, with the page's [`ChartSettings`].
#[component]
pub fn ChartPanel(
    /// Metric name (`loss`, `lr`, `val/acc`, …).
    metric: String,
    /// Title shown above the chart.
    title: String,
    sources: Vec<Source>,
    /// Label per source, for the tooltip (run names in compare).
    #[prop(optional)]
    labels: Option<Signal<Vec<String>>>,
) -> impl IntoView {
    let i18n = use_i18n();
    let settings = use_chart_settings();
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    let drawn = Drawn {
        frame: RwSignal::new(None),
        prepared: StoredValue::new_local(Vec::new()),
        counts: RwSignal::new((0, 0, 0)),
    };
    let hover = RwSignal::new(None::<Hover>);
    let drag = RwSignal::new(None::<(f64, f64)>);
    let runs = sources
        .iter()
        .map(|s| s.view.with_untracked(|v| v.state.run.clone()))
        .collect();
    let zoom_pages = load::zoom_pages(
        metric.clone(),
        runs,
        move || settings.step_zoom(),
        move || {
            canvas
                .get_untracked()
                .map_or(api::OVERVIEW_POINTS, |c| chart::buckets_for(&c))
        },
    );
    let m = metric.clone();
    let srcs = sources.clone();
    let loading = Memo::new(move |_| srcs.iter().any(|s| s.view.with(|v| v.is_loading(&m))));
    redraw(metric.clone(), sources, canvas, zoom_pages, drawn);
    let on_move = hover_readout(drawn, drag, hover, labels);
    let on_down = move |ev: web_sys::MouseEvent| {
        let px = ev.offset_x() as f64;
        drag.set(Some((px, px)));
    };
    let on_up = move |_ev: web_sys::MouseEvent| {
        if let (Some((a, b)), Some(f)) = (drag.get_untracked(), drawn.frame.get_untracked()) {
            if (a - b).abs() > 4.0 {
                let (x0, x1) = (f.x_at(a.min(b)), f.x_at(a.max(b)));
                settings.zoom.set(Some((x0, x1)));
            }
        }
        drag.set(None);
    };
    let on_key = keyboard(settings, drawn.frame);
    let frame = drawn.frame;
    let counts = drawn.counts;
    view! {
        <div class="chart-panel" data-testid=format!("chart-{metric}") data-metric=metric.clone()>
            <ChartHead metric=metric.clone() title=title canvas=canvas/>
            <div class="chart-box">
                <canvas node_ref=canvas class="chart"
                    data-testid=format!("canvas-{metric}")
                    data-points=move || counts.get().0
                    data-drawn=move || counts.get().1
                    data-nonfinite=move || counts.get().2
                    data-x0=move || frame.get().map(|f| f.x0.to_string()).unwrap_or_default()
                    data-x1=move || frame.get().map(|f| f.x1.to_string()).unwrap_or_default()
                    data-y1=move || frame.get().map(|f| f.y1.to_string()).unwrap_or_default()
                    on:mousemove=on_move
                    on:mouseleave=move |_| { hover.set(None); drag.set(None); }
                    on:mousedown=on_down
                    on:mouseup=on_up
                    on:dblclick=move |_| settings.zoom.set(None)
                    tabindex="0" role="img" aria-label=format!("{metric} chart") title=i18n.tr(Key::ChartKeys)
                    on:keydown=on_key></canvas>
                <Overlay frame=frame hover=hover drag=drag/>
                {super::common::show(Signal::derive(move || counts.get().0 == 0 && counts.get().2 == 0), move || view! { <div class="chart-empty" data-testid="chart-empty">{move || i18n.t(if loading.get() { Key::LoadingHistory } else { Key::NoPointsYet })}</div> })}
            </div>
        </div>
    }
}

/// A chart's title, log-scale toggle and PNG export.
#[component]
fn ChartHead(
    metric: String,
    title: String,
    canvas: NodeRef<leptos::html::Canvas>,
) -> impl IntoView {
    let i18n = use_i18n();
    let settings = use_chart_settings();
    let m = metric.clone();
    let log_on = move || settings.log.with(|l| l.contains(&m));
    let m = metric.clone();
    let toggle_log = move |_| {
        settings.log.update(|l| {
            if !l.remove(&m) {
                l.insert(m.clone());
            }
        })
    };
    let m = metric.clone();
    let export_png = move |_| {
        if let Some(c) = canvas.get_untracked() {
            if let Ok(url) = c.to_data_url() {
                download_url(&format!("{}.png", m.replace('/', "_")), &url);
            }
        }
    };
    view! {
        <div class="chart-head">
            <span class="chart-title">{title}</span>
            <span class="spacer"></span>
            <button class=move || if log_on() { "mini on" } else { "mini" } data-testid=format!("log-{metric}")
                title="log scale" on:click=toggle_log>{i18n.tr(Key::LogScale)}</button>
            <button class="mini" data-testid=format!("png-{metric}") on:click=export_png>{i18n.tr(Key::ExportPng)}</button>
        </div>
    }
}

/// The crosshair and tooltip under the pointer, and the selection being dragged.
#[component]
fn Overlay(
    frame: RwSignal<Option<Frame>>,
    hover: RwSignal<Option<Hover>>,
    drag: RwSignal<Option<(f64, f64)>>,
) -> impl IntoView {
    view! {
        {move || frame.get().and_then(|f| hover.get().map(|h| {
            let left = h.px.min(f.left + f.width - 170.0).max(f.left);
            view! {
                <div class="crosshair" style=format!("left:{}px;top:{}px;height:{}px", h.px, f.top, f.height)></div>
                <div class="tooltip" data-testid="tooltip" style=format!("left:{}px;top:{}px", left + 8.0, f.top + 4.0)>
                    <div class="tt-head">{h.head.clone()}</div>
                    {h.lines.iter().map(|(label, color, value)| view! {
                        <div class="tt-line">
                            <span class=format!("swatch c{}", color % chart::PALETTE.len())></span>
                            <span class="tt-label">{label.clone()}</span>
                            <span class="tt-value mono">{value.clone()}</span>
                        </div>
                    }).collect_view()}
                </div>
            }
        }))}
        {move || frame.get().and_then(|f| drag.get().filter(|(a, b)| (a - b).abs() > 4.0).map(|(a, b)| view! {
            <div class="selection" style=format!("left:{}px;width:{}px;top:{}px;height:{}px", a.min(b), (a - b).abs(), f.top, f.height)></div>
        }))}
    }
}

/// Bumped on every window resize, for the calling component's lifetime.
fn window_resizes() -> RwSignal<u32> {
    let resized = RwSignal::new(0u32);
    let on_resize = Closure::<dyn FnMut()>::new(move || resized.update(|n| *n += 1));
    let _ = window().add_event_listener_with_callback("resize", on_resize.as_ref().unchecked_ref());
    let on_resize = send_wrapper::SendWrapper::new(on_resize);
    on_cleanup(move || {
        let _ = window()
            .remove_event_listener_with_callback("resize", on_resize.as_ref().unchecked_ref());
    });
    resized
}

/// Draws the chart whenever its own series or settings change (or the window is
/// resized): the loaded points, or, zoomed by step, the exact page of the range.
fn redraw(
    metric: String,
    sources: Vec<Source>,
    canvas: NodeRef<leptos::html::Canvas>,
    zoom_pages: ReadSignal<Option<ZoomPages>>,
    drawn: Drawn,
) {
    let settings = use_chart_settings();
    let resized = window_resizes();
    let m = metric.clone();
    let srcs = sources.clone();
    // Redraw only when this chart's data or settings change.
    let lens = Memo::new(move |_| {
        srcs.iter()
            .map(|s| {
                s.view.with(|v| {
                    (
                        v.points(&m).len(),
                        v.state.started_at.unwrap_or(0.0).to_bits(),
                        v.rev,
                    )
                })
            })
            .collect::<Vec<_>>()
    });
    Effect::new(move |_| {
        lens.track();
        resized.track();
        let opts = settings.opts(&metric);
        let Some(c) = canvas.get() else { return };
        let buckets = chart::buckets_for(&c);
        let series: Vec<Prepared> = zoom_pages.with(|zp| {
            // The exact pages, when they are for the range on screen.
            let exact = zp
                .as_ref()
                .filter(|z| opts.x_mode == XMode::Step && opts.x_range == Some(z.range));
            sources
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.view.with(|v| {
                        let t0 = v.state.started_at.unwrap_or(0.0);
                        let loaded = v.points(&metric);
                        match exact.and_then(|z| Some((z.range, z.pages.get(i)?.as_ref()?))) {
                            Some((range, (last_id, page))) => {
                                let pts = model::zoomed(loaded, page, *last_id, range);
                                chart::prepare(&metric, s.color, &pts, t0, &opts, buckets)
                            }
                            None => chart::prepare(&metric, s.color, loaded, t0, &opts, buckets),
                        }
                    })
                })
                .collect()
        });
        let theme = if prefers_light() {
            chart::LIGHT
        } else {
            chart::DARK
        };
        let f = chart::draw(&c, &series, &opts, theme);
        drawn.counts.set((
            series.iter().map(|s| s.visible).sum(),
            series.iter().map(|s| s.raw.len()).sum(),
            series.iter().map(|s| s.bad.len()).sum(),
        ));
        drawn.prepared.set_value(series);
        drawn.frame.set(f);
    });
}

/// The pointer's handler: moves a drag under way, and reads out every series' point
/// nearest the pointer (its smoothed value first when smoothing is on).
fn hover_readout(
    drawn: Drawn,
    drag: RwSignal<Option<(f64, f64)>>,
    hover: RwSignal<Option<Hover>>,
    labels: Option<Signal<Vec<String>>>,
) -> impl Fn(web_sys::MouseEvent) + 'static {
    move |ev: web_sys::MouseEvent| {
        let Some(f) = drawn.frame.get_untracked() else {
            return;
        };
        let px = ev.offset_x() as f64;
        if let Some((start, _)) = drag.get_untracked() {
            drag.set(Some((start, px)));
        }
        if px < f.left || px > f.left + f.width {
            hover.set(None);
            return;
        }
        let x = f.x_at(px);
        let names = labels.map(|l| l.get_untracked()).unwrap_or_default();
        let mut head = String::new();
        let lines = drawn.prepared.with_value(|series| {
            series
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let d = chart::nearest(s, x)?;
                    if head.is_empty() {
                        let p = d.p;
                        head = format!(
                            "step {} · {}",
                            p.step as u64,
                            chart::fmt_x(p.time, XMode::Wall),
                        );
                    }
                    let mut value = stepwatch_events::num::display(d.p.value, 5);
                    if let Some(sm) = d.smooth {
                        value = format!("{} ({value})", stepwatch_events::num::display(sm, 5));
                    }
                    let label = names.get(i).cloned().unwrap_or_else(|| s.label.clone());
                    Some((label, s.color, value))
                })
                .collect::<Vec<_>>()
        });
        hover.set((!lines.is_empty()).then_some(Hover { px, lines, head }));
    }
}

/// Keyboard: arrows pan, + / - zoom around the centre, 0 or Escape resets.
fn keyboard(
    settings: ChartSettings,
    frame: RwSignal<Option<Frame>>,
) -> impl Fn(web_sys::KeyboardEvent) + 'static {
    move |ev: web_sys::KeyboardEvent| {
        let Some(f) = frame.get_untracked() else {
            return;
        };
        let (x0, x1) = settings.zoom.get_untracked().unwrap_or((f.x0, f.x1));
        let w = x1 - x0;
        let next = match ev.key().as_str() {
            "ArrowLeft" => Some((x0 - w * 0.2, x1 - w * 0.2)),
            "ArrowRight" => Some((x0 + w * 0.2, x1 + w * 0.2)),
            "+" | "=" => Some((x0 + w * 0.25, x1 - w * 0.25)),
            "-" | "_" => Some((x0 - w * 0.5, x1 + w * 0.5)),
            "0" | "Escape" => {
                settings.zoom.set(None);
                None
            }
            _ => return,
        };
        ev.prevent_default();
        if let Some(z) = next {
            settings.zoom.set(Some(z));
        }
    }
}
