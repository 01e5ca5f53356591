//! The alert banner in a real browser (wasm-bindgen-test, headless Chromium): one item per
//! active alert with its id and level, a pausing rule's last good checkpoint, gone when
//! the alert resolves.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)]

use leptos::prelude::*;
use stepwatch_events::Event;
use stepwatch_frontend::api::{Base, ConnState};
use stepwatch_frontend::i18n::{I18n, Lang};
use stepwatch_frontend::load::Loaded;
use stepwatch_frontend::model::RunView;
use stepwatch_frontend::views::alerts::AlertBanner;
use stepwatch_frontend::views::common::Clock;
use stepwatch_frontend::views::login::{Me, Session, SessionCtx};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn settle() {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 80)
            .unwrap();
    });
    wasm_bindgen_futures::JsFuture::from(p).await.unwrap();
}

fn ev(json: &str) -> Event {
    Event::from_json(json).unwrap()
}

#[wasm_bindgen_test]
async fn the_banner_shows_each_active_alert_and_the_last_good_checkpoint() {
    let view = RwSignal::new(RunView::new("r"));
    view.update(|v| {
        v.apply(&ev(r#"{"id":1,"event":"training_start","time":1}"#));
        for (id, step) in [(2, 100), (3, 200), (4, 300)] {
            v.apply(&ev(&format!(
                r#"{{"id":{id},"event":"checkpoint_saved","checkpoint_path":"/ck/s{step}.pt","step":{step},"time":{id}}}"#
            )));
        }
        v.apply(&ev(
            r#"{"id":5,"event":"alert_fired","time":5,"alert_id":"nan#5","rule":"nan","kind":"non_finite","level":"error","title":"loss is NaN","text":"at step 250","step":250,"action":"pause"}"#,
        ));
        v.apply(&ev(
            r#"{"id":6,"event":"alert_fired","time":6,"alert_id":"slow#6","rule":"slow","kind":"stale","level":"info","title":"quiet","text":"no events"}"#,
        ));
    });
    let doc = web_sys::window().unwrap().document().unwrap();
    let host: web_sys::HtmlElement = {
        use wasm_bindgen::JsCast;
        let d = doc.create_element("div").unwrap();
        doc.body().unwrap().append_child(&d).unwrap();
        d.dyn_into().unwrap()
    };
    let handle = leptos::mount::mount_to(host.clone(), move || {
        provide_context(I18n(RwSignal::new(Lang::En)));
        provide_context(Clock(RwSignal::new(10.0)));
        provide_context(Base(String::new()));
        provide_context(SessionCtx(RwSignal::new(Session::In(Me {
            name: None,
            role: "viewer".into(),
            auth: false,
        }))));
        provide_context(Loaded {
            view: view.read_only(),
            conn: RwSignal::new(ConnState::Live).read_only(),
        });
        view! { <AlertBanner/> }
    });
    settle().await;
    let banner = doc.get_element_by_id("alert-banner").unwrap();
    assert!(banner.class_list().contains("alert-banner"));
    let nan = banner
        .query_selector("[data-alert-id='nan#5']")
        .unwrap()
        .unwrap();
    assert!(nan.class_list().contains("al-error"));
    assert!(nan.text_content().unwrap().contains("paused by rule"));
    let good = nan
        .query_selector("[data-testid=last-good]")
        .unwrap()
        .unwrap();
    assert_eq!(
        good.get_attribute("data-path").as_deref(),
        Some("/ck/s200.pt")
    );
    // A viewer on a relay without login may command: Dismiss shows.
    assert!(nan
        .query_selector("[data-testid=dismiss]")
        .unwrap()
        .is_some());
    let quiet = banner
        .query_selector("[data-alert-id='slow#6']")
        .unwrap()
        .unwrap();
    assert!(quiet.class_list().contains("al-info"));
    assert!(quiet
        .query_selector("[data-testid=alert-action]")
        .unwrap()
        .is_none());
    view.update(|v| {
        v.apply(&ev(
            r#"{"id":7,"event":"alert_resolved","time":7,"alert_id":"nan#5","rule":"nan"}"#,
        ));
    });
    settle().await;
    let banner = doc.get_element_by_id("alert-banner").unwrap();
    assert!(banner
        .query_selector("[data-alert-id='nan#5']")
        .unwrap()
        .is_none());
    assert!(banner
        .query_selector("[data-alert-id='slow#6']")
        .unwrap()
        .is_some());
    drop(handle);
}
