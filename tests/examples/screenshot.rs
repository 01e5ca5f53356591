//! Takes a screenshot of a dashboard page in headless Chromium:
//! `cargo run -p stepwatch-e2e --example screenshot -- URL OUT.png [WAIT_SELECTOR] [LANG] [SCROLL_Y]`
//! (`SHOT_THEME=dark` for the dark theme)
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use stepwatch_e2e::Browser;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("URL");
    let out = args.get(2).expect("OUT.png");
    let wait = args.get(3).cloned().unwrap_or_else(|| "header".into());
    let browser = if std::env::var("SHOT_THEME").as_deref() == Ok("dark") {
        Browser::start_with(&[
            "--force-dark-mode",
            "--blink-settings=preferredColorScheme=0",
        ])
    } else {
        Browser::start()
    };
    browser.goto(url);
    if let Some(lang) = args.get(4).filter(|l| !l.is_empty()) {
        browser.eval(&format!(
            "localStorage.setItem('stepwatch.lang', '{lang}'); location.reload(); return 1;"
        ));
    }
    let found = stepwatch_e2e::wait_until("selector", Duration::from_secs(20), || {
        let v = browser.eval(&format!("return !!document.querySelector('{wait}');"));
        if v == serde_json::Value::Bool(true) {
            Some(true)
        } else {
            None
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(y) = args.get(5) {
        browser.eval(&format!("window.scrollTo(0, {y}); return 1;"));
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "found={found} body={}",
        browser.eval("return document.body.innerText.slice(0, 400);")
    );
    browser.screenshot(std::path::Path::new(out));
}
