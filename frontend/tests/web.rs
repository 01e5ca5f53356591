//! Components and downsampling in a real browser (wasm-bindgen-test, headless Chromium).
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)]

use leptos::prelude::*;
use stepwatch_events::Event;
use stepwatch_frontend::chart::{self, ChartOpts};
use stepwatch_frontend::i18n::{I18n, Lang};
use stepwatch_frontend::model::{Point, RunView};
use stepwatch_frontend::route::{Page, Route};
use stepwatch_frontend::views::chart::{ChartPanel, ChartSettings, Source};
use stepwatch_frontend::views::common::{Clock, Stat};
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Waits for effects and an animation frame to run.
async fn settle() {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 80)
            .unwrap();
    });
    wasm_bindgen_futures::JsFuture::from(p).await.unwrap();
}

fn container() -> web_sys::HtmlElement {
    let doc = web_sys::window().unwrap().document().unwrap();
    let div = doc.create_element("div").unwrap();
    div.set_attribute("style", "width: 800px").unwrap();
    doc.body().unwrap().append_child(&div).unwrap();
    div.dyn_into().unwrap()
}

fn contexts() {
    provide_context(I18n(RwSignal::new(Lang::En)));
    provide_context(Clock(RwSignal::new(0.0)));
}

fn settings() -> ChartSettings {
    ChartSettings {
        x_mode: RwSignal::new(chart::XMode::Step),
        smooth: RwSignal::new(0.0),
        log: RwSignal::new(Default::default()),
        zoom: RwSignal::new(None),
    }
}

#[wasm_bindgen_test]
fn downsampling_keeps_every_buckets_min_and_max() {
    let points: Vec<Point> = (0..200_000)
        .map(|i| Point {
            step: i as f64,
            value: ((i * 7919) % 1000) as f64,
            time: i as f64,
            id: 0,
        })
        .collect();
    let buckets = 200;
    let p = chart::prepare("loss", 0, &points, 0.0, &ChartOpts::default(), buckets);
    assert!(p.raw.len() <= buckets * 4);
    let per = 200_000 / buckets;
    for b in 0..buckets {
        let bucket = &points[b * per..(b + 1) * per];
        let min = bucket.iter().map(|p| p.value).fold(f64::INFINITY, f64::min);
        let max = bucket
            .iter()
            .map(|p| p.value)
            .fold(f64::NEG_INFINITY, f64::max);
        let kept: Vec<_> = p.raw.iter().filter(|d| (d.x as usize) / per == b).collect();
        assert!(kept.iter().any(|d| d.y == min), "bucket {b} lost its min");
        assert!(kept.iter().any(|d| d.y == max), "bucket {b} lost its max");
    }
}

#[wasm_bindgen_test]
fn zoom_rebuckets_from_full_data_not_from_the_sample() {
    let points: Vec<Point> = (0..100_000)
        .map(|i| Point {
            step: i as f64,
            value: (i % 97) as f64,
            time: i as f64,
            id: 0,
        })
        .collect();
    let overview = chart::prepare("loss", 0, &points, 0.0, &ChartOpts::default(), 100);
    let zoom = ChartOpts {
        x_range: Some((50_000.0, 50_300.0)),
        ..Default::default()
    };
    let zoomed = chart::prepare("loss", 0, &points, 0.0, &zoom, 100);
    // The overview keeps ≤ 4 of every 1000 points; the zoomed view has all 301 in range
    // re-bucketed: many of them were never in the overview's sample.
    assert_eq!(zoomed.visible, 301);
    let from_sample = zoomed
        .raw
        .iter()
        .filter(|d| overview.raw.iter().any(|o| o.x == d.x))
        .count();
    assert!(
        zoomed.raw.len() > 200 && from_sample < 20,
        "{} / {from_sample}",
        zoomed.raw.len()
    );
}

#[wasm_bindgen_test]
async fn chart_panel_draws_every_point_and_redraws_on_new_data() {
    let view = RwSignal::new(RunView::new("r"));
    view.update(|v| {
        for i in 1..=50 {
            v.apply(
                &Event::from_json(&format!(
                    r#"{{"id":{i},"event":"batch_end","loss":{}}}"#,
                    1.0 / i as f64
                ))
                .unwrap(),
            );
        }
    });
    let host = container();
    let s = settings();
    let handle = leptos::mount::mount_to(host.clone(), move || {
        contexts();
        provide_context(s);
        let view = view.read_only();
        view! { <ChartPanel metric="loss".to_string() title="Loss".to_string() sources=vec![Source { view, color: 0 }]/> }
    });
    settle().await;
    let canvas = host
        .query_selector("[data-testid=canvas-loss]")
        .unwrap()
        .unwrap();
    assert_eq!(canvas.get_attribute("data-points").as_deref(), Some("50"));
    view.update(|v| {
        v.apply(&Event::from_json(r#"{"id":51,"event":"batch_end","loss":"NaN"}"#).unwrap());
        v.apply(&Event::from_json(r#"{"id":52,"event":"batch_end","loss":0.01}"#).unwrap());
    });
    settle().await;
    assert_eq!(canvas.get_attribute("data-points").as_deref(), Some("51"));
    assert_eq!(canvas.get_attribute("data-nonfinite").as_deref(), Some("1"));
    // Zoom applies to the chart and narrows what it draws.
    s.zoom.set(Some((10.0, 20.0)));
    settle().await;
    assert_eq!(canvas.get_attribute("data-points").as_deref(), Some("11"));
    assert_eq!(canvas.get_attribute("data-x0").as_deref(), Some("10"));
    // Keyboard: + zooms in around the centre, 0 resets.
    s.zoom.set(None);
    settle().await;
    let key = |k: &str| {
        let init = web_sys::KeyboardEventInit::new();
        init.set_key(k);
        init.set_bubbles(true);
        let ev =
            web_sys::KeyboardEvent::new_with_keyboard_event_init_dict("keydown", &init).unwrap();
        canvas.dispatch_event(&ev).unwrap();
    };
    key("+");
    settle().await;
    let (a, b) = s.zoom.get_untracked().expect("+ did not zoom");
    assert!(a > 1.0 && b < 52.0 && b - a < 30.0, "{a}..{b}");
    key("0");
    settle().await;
    assert_eq!(s.zoom.get_untracked(), None);
    // The canvas backs its CSS size at the device pixel ratio.
    let c: web_sys::HtmlCanvasElement = canvas.dyn_into().unwrap();
    let dpr = web_sys::window().unwrap().device_pixel_ratio();
    assert_eq!(c.width(), (c.client_width() as f64 * dpr) as u32);
    drop(handle);
}

#[wasm_bindgen_test]
async fn an_empty_chart_says_whether_history_is_still_loading() {
    let view = RwSignal::new(RunView::new("r"));
    view.update(|v| v.history_loading = true);
    let host = container();
    let s = settings();
    let handle = leptos::mount::mount_to(host.clone(), move || {
        contexts();
        provide_context(s);
        let view = view.read_only();
        view! { <ChartPanel metric="loss".to_string() title="Loss".to_string() sources=vec![Source { view, color: 0 }]/> }
    });
    settle().await;
    let empty = || {
        host.query_selector("[data-testid=chart-empty]")
            .unwrap()
            .and_then(|e| e.text_content())
    };
    assert_eq!(empty().as_deref(), Some("Loading history…"));
    view.update(|v| v.history_loading = false);
    settle().await;
    assert_eq!(empty().as_deref(), Some("Waiting for batch_end events…"));
    // Points from a history page draw like streamed ones.
    view.update(|v| {
        v.merge_page(stepwatch_frontend::model::Page {
            metric: "loss".into(),
            last_id: 3,
            points: (1..=3)
                .map(|i| Point {
                    step: i as f64,
                    value: 1.0,
                    time: 0.0,
                    id: 0,
                })
                .collect(),
        })
    });
    settle().await;
    assert_eq!(empty(), None);
    let canvas = host
        .query_selector("[data-testid=canvas-loss]")
        .unwrap()
        .unwrap();
    assert_eq!(canvas.get_attribute("data-points").as_deref(), Some("3"));
    drop(handle);
}

#[wasm_bindgen_test]
async fn stat_tile_is_reactive_and_flags_alerts() {
    let value = RwSignal::new("1.5".to_string());
    let alert = RwSignal::new(false);
    let host = container();
    let handle = leptos::mount::mount_to(host.clone(), move || {
        contexts();
        view! { <Stat label=stepwatch_frontend::i18n::Key::Loss testid="t-loss" value=value.into() alert=alert.into()/> }
    });
    settle().await;
    let el = host
        .query_selector("[data-testid=t-loss]")
        .unwrap()
        .unwrap();
    assert_eq!(el.text_content().as_deref(), Some("1.5"));
    assert!(!el.class_list().contains("alert"));
    value.set("NaN".into());
    alert.set(true);
    settle().await;
    assert_eq!(el.text_content().as_deref(), Some("NaN"));
    assert!(el.class_list().contains("alert"));
    assert!(host.text_content().unwrap().contains("Loss"));
    drop(handle);
}

#[wasm_bindgen_test]
fn routes_round_trip_through_the_hash() {
    let h = Route::hash(
        &Page::Run("my run/1".into()),
        &[
            ("x", "wall".into()),
            ("smooth", "0.60".into()),
            ("zoom", String::new()),
        ],
    );
    assert_eq!(h, "#/runs/my%20run%2F1?x=wall&smooth=0.60");
    let r = Route::parse(&h);
    assert_eq!(r.page, Page::Run("my run/1".into()));
    assert_eq!(r.get("smooth"), Some("0.60"));
    let c = Route::parse("#/compare?runs=a,b&base=b");
    assert_eq!(c.page, Page::Compare(vec!["a".into(), "b".into()]));
    assert_eq!(c.get("base"), Some("b"));
    assert_eq!(Route::parse("#/").page, Page::Runs);
    assert_eq!(Route::parse("").page, Page::Runs);
}
