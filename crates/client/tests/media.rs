//! The Rust SDK's media against a real relay: an image uploaded then shown (its event
//! only after the bytes are held), a text sample and a histogram binned by the SDK; an
//! image the relay refuses leaves a warning in the run's log and no image event.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use stepwatch_client::{Client, Options};
use stepwatch_e2e::{get_media, png, sha256_hex, Relay, TempDir};

#[test]
fn images_text_and_histograms_from_a_rust_trainer() {
    let dir = TempDir::new("client-media");
    let relay = Relay::start(&dir.0, &[]);
    let options = Options {
        spool_dir: Some(dir.0.join("spool")),
        commands: false,
        ..Options::default()
    };
    let client = Client::with_options(&relay.url, "rust-media", options);
    let img = png(20, 10, |x, y| [x as u8 * 12, y as u8 * 25, 7]);
    client.log_image("recon", 3, img.clone(), Some("first"));
    client.log_image(
        "recon",
        4,
        b"<html><script>alert(1)</script></html>".to_vec(),
        None,
    );
    client.log_text("generate", 3, Some("Once upon"), " a time");
    let values: Vec<f64> = (0..1000)
        .map(|i| f64::from(i) / 100.0)
        .chain([f64::NAN])
        .collect();
    client.log_histogram("weights", 3, &values, 10);
    assert!(client.flush(Duration::from_secs(20)));
    let events = relay.all_events("rust-media");
    let images: Vec<_> = events.iter().filter(|e| e["event"] == "image").collect();
    assert_eq!(images.len(), 1, "only the real image: {images:?}");
    assert_eq!(images[0]["media"], sha256_hex(&img));
    assert_eq!(images[0]["width"], 20);
    assert_eq!(images[0]["step"], 3);
    assert_eq!(images[0]["caption"], "first");
    let (s, _, bytes) = get_media(&relay.url, "rust-media", &sha256_hex(&img), &[]);
    assert_eq!((s, bytes == img), (200, true));
    let warned = events
        .iter()
        .any(|e| e["event"] == "log" && e["message"].as_str().unwrap_or("").contains("HTML"));
    assert!(warned, "the refusal is in the run's log: {events:?}");
    let text = events.iter().find(|e| e["event"] == "text_sample").unwrap();
    assert_eq!(
        (&text["prompt"], &text["completion"]),
        (&"Once upon".into(), &" a time".into())
    );
    let h = events.iter().find(|e| e["event"] == "histogram").unwrap();
    let counts: Vec<f64> = h["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_f64().unwrap())
        .collect();
    assert_eq!(counts, vec![100.0; 10]);
    assert_eq!(h["count"], 1000.0);
    assert_eq!(h["nonfinite"], 1);
    assert_eq!(h["edges"].as_array().unwrap().len(), 11);
    assert_eq!(client.dropped(), 1, "the refused image counts as dropped");
}
