//! Media in the browser, end to end: `examples/media_train.py` (a real PyTorch loop:
//! reconstructions as images, a text sample, `watch(model)` gradient and weight
//! histograms) through the Python SDK to a real relay, seen in headless Chromium: the
//! samples panel follows the newest step live, its slider goes back to an earlier
//! step (other images, other samples), a click opens an image full size, and the
//! panel speaks Chinese too.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;
use stepwatch_e2e::{python, repo, Browser, Relay, TempDir};

const WAIT: Duration = Duration::from_secs(90);

fn count(b: &Browser, sel: &str) -> u64 {
    b.eval(&format!(
        "return document.querySelectorAll('{sel}').length;"
    ))
    .as_u64()
    .unwrap_or(0)
}

/// The step the image grid shows (from its "Step N" label), 0 when none.
fn image_step(b: &Browser) -> u64 {
    b.text("[data-testid=image-step]")
        .rsplit(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Compare: the runs' samples side by side under one slider; back to the run page.
fn compare_side_by_side(b: &Browser, relay: &Relay) {
    let other =
        r#"{"event":"text_sample","name":"samples","step":5,"text":"another run's sample"}"#;
    assert_eq!(relay.post("media-other", other, "application/json").0, 200);
    b.goto(&format!(
        "{}/#/compare?runs=media-e2e,media-other",
        relay.url
    ));
    b.wait_for(
        "both runs' samples",
        WAIT,
        "const c = [...document.querySelectorAll('[data-testid=compare-samples-run]')];
         return c.length === 2 && c[0].querySelector('[data-testid=image]') && c[1].textContent.includes(\"another run's sample\");",
    );
    b.eval(
        "const s = document.querySelector('[data-testid=media-step]'); s.value = 1;
         s.dispatchEvent(new Event('input', {bubbles: true})); return 1;",
    );
    b.wait_for(
        "compare at step 5",
        WAIT,
        "const c = [...document.querySelectorAll('[data-testid=compare-samples-run]')];
         return c[0].querySelector('[data-testid=image-step]')?.textContent.endsWith(' 1')
             && c[1].textContent.includes(\"another run's sample\");",
    );
    b.goto(&format!("{}/#/runs/media-e2e", relay.url));
    b.wait_for(
        "the run page",
        WAIT,
        "return document.querySelector('[data-testid=image]');",
    );
}

#[test]
fn a_pytorch_loops_images_text_and_histograms_live_and_by_step() {
    let dir = TempDir::new("media-browser");
    let relay = Relay::with_dashboard(&dir.0);
    let mut trainer = Command::new(python())
        .arg(repo().join("examples/media_train.py"))
        .env("PYTHONPATH", repo().join("clients/python/src"))
        .env("STEPWATCH_URL", &relay.url)
        .env("STEPWATCH_RUN", "media-e2e")
        .env("STEPWATCH_SPOOL_DIR", dir.0.join("spool"))
        .env("MEDIA_STEPS", "160")
        .env("MEDIA_IMAGE_EVERY", "20")
        .env("MEDIA_STEP_S", "0.06")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let b = Browser::start();
    stepwatch_e2e::wait_until("the run", WAIT, || {
        (relay.get("/api/runs/media-e2e").0 == 200).then_some(())
    });
    b.goto(&format!("{}/#/runs/media-e2e", relay.url));
    // An image drawn (its bytes fetched and decoded) while the run is live.
    b.wait_for(
        "a decoded image",
        WAIT,
        "const i = document.querySelector('[data-testid=image]'); return i && i.complete && i.naturalWidth > 0;",
    );
    let first = image_step(&b);
    // Live: newer images replace it without a reload, while the trainer still runs.
    b.wait_for(
        "a newer image step",
        WAIT,
        &format!("const l = document.querySelector('[data-testid=image-step]'); return l && !l.textContent.endsWith(' {first}');"),
    );
    assert!(image_step(&b) > first);
    let status = trainer.wait().unwrap();
    assert!(status.success(), "the example failed: {status}");
    b.wait_for(
        "the last image",
        WAIT,
        "return document.querySelector('[data-testid=image-step]')?.textContent.endsWith(' 160');",
    );
    assert!(b.text("[data-testid=media-step-label]").contains("latest"));
    // The image is the one of that step, its natural size what the relay read from it.
    let (w, h) = (
        b.eval("return document.querySelector('[data-testid=image]').naturalWidth;"),
        b.eval("return document.querySelector('[data-testid=image]').naturalHeight;"),
    );
    assert_eq!(
        (w.as_u64(), h.as_u64()),
        (Some(128), Some(32)),
        "8 inputs over 8 outputs"
    );
    let src_last = b.eval("return document.querySelector('[data-testid=image]').src;");

    // Histograms of gradients and weights, one heatmap per tag, with a note at the step.
    b.wait_for(
        "the histograms",
        WAIT,
        "return [...document.querySelectorAll('[data-testid=histogram]')].some(h => h.dataset.tag.startsWith('gradients/'))
            && [...document.querySelectorAll('[data-testid=histogram]')].some(h => h.dataset.tag.startsWith('parameters/'));",
    );
    let note = b.text("[data-testid=hist-note]");
    assert!(note.contains("n="), "{note}");
    let drawn = b.eval(
        "const c = document.querySelector('[data-testid=histogram] canvas');
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         const seen = new Set(); for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] + ',' + d[i+1] + ',' + d[i+2]);
         return seen.size;",
    );
    assert!(
        drawn.as_u64().unwrap() > 3,
        "the heatmap is not drawn: {drawn}"
    );
    // Text samples newest first.
    let samples = count(&b, "[data-testid=sample]");
    assert_eq!(samples, 9, "steps 1, 20, …, 160");
    assert!(b.text("[data-testid=sample]").contains("step 160"));

    // The slider back to the start: the first images and only the first sample.
    b.eval(
        "const s = document.querySelector('[data-testid=media-step]'); s.value = 0;
         s.dispatchEvent(new Event('input', {bubbles: true})); return 1;",
    );
    b.wait_for(
        "step 1",
        WAIT,
        "return document.querySelector('[data-testid=image-step]')?.textContent.endsWith(' 1');",
    );
    assert!(!b.text("[data-testid=media-step-label]").contains("latest"));
    let src_first = b.eval("return document.querySelector('[data-testid=image]').src;");
    assert_ne!(src_first, src_last, "another step shows another image");
    assert_eq!(count(&b, "[data-testid=sample]"), 1);
    assert!(b.text("[data-testid=sample]").contains("step 1?"));

    // Full size on a click; a click closes it.
    b.eval("document.querySelector('[data-testid=image]').click(); return 1;");
    b.wait_for(
        "the full-size view",
        WAIT,
        "const i = document.querySelector('[data-testid=lightbox-image]'); return i && i.complete && i.naturalWidth === 128;",
    );
    b.eval("document.querySelector('[data-testid=lightbox]').click(); return 1;");
    b.wait_for(
        "the full-size view closed",
        WAIT,
        "return !document.querySelector('[data-testid=lightbox]');",
    );

    compare_side_by_side(&b, &relay);

    // In Chinese.
    b.eval("[...document.querySelectorAll('.lang')].find(x => x.textContent.includes('中文')).click(); return 1;");
    b.wait_for(
        "the panel in Chinese",
        WAIT,
        "return document.querySelector('[data-testid=media] h2')?.textContent === '样本'
            && document.querySelector('[data-testid=image-step]')?.textContent.startsWith('步数');",
    );
}
