//! Media against a real relay process: images uploaded by their SHA-256 and served back
//! byte for byte with their sniffed type, `nosniff` and a sandboxing CSP; text samples
//! and histograms stored by step; every hostile upload (HTML named .png, SVG, a header
//! claiming a huge image, bytes over the item or run limit, a wrong hash) and every bad
//! media event (a million bins, an image never uploaded, a ragged table) refused with an
//! error naming what is wrong, nothing stored; media kept across a restart and gone with
//! the run. Runs on SQLite, and on PostgreSQL with `--pg`.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use stepwatch_e2e::{
    get_media, jpeg_header, png, png_header, put_media, sha256_hex, webp_header, Relay, TempDir,
};

const NDJSON: &str = "application/x-ndjson";

fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

#[test]
fn images_round_trip_with_their_type_and_safe_headers_and_go_with_the_run() {
    let dir = TempDir::new("media-rt");
    let mut relay = Relay::start(&dir.0, &[]);
    let img = png(33, 17, |x, y| [x as u8 * 7, y as u8 * 13, 200]);
    let sha = sha256_hex(&img);
    // Uploaded before the run's first event: a trainer's first batch may hold both.
    let (s, v) = put_media(&relay.url, "r1", &img, None, "application/octet-stream");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["mime"], "image/png");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(33), Some(17))
    );
    assert_eq!(v["size"].as_u64(), Some(img.len() as u64));
    // Again: the same answer, stored once.
    let (s2, v2) = put_media(&relay.url, "r1", &img, None, "image/png");
    assert_eq!((s2, &v2), (200, &v));

    // The event claims another type and size: the relay's own reading wins.
    let batch = [
        json!({"event": "training_start", "name": "media"}),
        json!({"event": "batch_end", "step": 7, "loss": 1.0}),
        json!({"event": "image", "name": "samples/recon", "media": sha, "caption": "step 7",
               "mime": "text/html", "width": 1, "height": 1}),
    ];
    let (s, v) = relay.post("r1", &ndjson(&batch), NDJSON);
    assert_eq!(s, 200, "{v}");
    let images: Vec<Value> = relay
        .all_events("r1")
        .into_iter()
        .filter(|e| e["event"] == "image")
        .collect();
    assert_eq!(images.len(), 1);
    let e = &images[0];
    assert_eq!(e["mime"], "image/png");
    assert_eq!(
        (e["width"].as_u64(), e["height"].as_u64()),
        (Some(33), Some(17))
    );
    assert_eq!(
        e["step"], 7,
        "the step it was logged at, from the batch: {e}"
    );
    assert_eq!(e["caption"], "step 7");
    let state = relay.get_ok("/api/runs/r1");
    assert_eq!(state["media"][0]["kind"], "image");
    assert_eq!(state["media"][0]["name"], "samples/recon");
    assert_eq!(state["media"][0]["last_step"], 7);

    let want = [
        "content-type",
        "x-content-type-options",
        "content-security-policy",
    ];
    let (s, h, bytes) = get_media(&relay.url, "r1", &sha, &want);
    assert_eq!(s, 200);
    assert_eq!(bytes, img, "served byte for byte");
    assert_eq!(h[0], "image/png");
    assert_eq!(h[1], "nosniff");
    assert!(
        h[2].contains("sandbox") && h[2].contains("default-src 'none'"),
        "{h:?}"
    );

    // JPEG and WebP are told by their bytes too.
    for (bytes, mime, w, h) in [
        (jpeg_header(640, 480), "image/jpeg", 640, 480),
        (webp_header(300, 200), "image/webp", 300, 200),
    ] {
        let (s, v) = put_media(&relay.url, "r1", &bytes, None, "image/png");
        assert_eq!(s, 200, "{mime}: {v}");
        assert_eq!(v["mime"], mime);
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(w), Some(h))
        );
    }

    // Kept across a restart.
    relay.restart();
    let (s, _, bytes) = get_media(&relay.url, "r1", &sha, &[]);
    assert_eq!((s, bytes == img), (200, true));

    // Deleting the run deletes its media.
    let res = ureq::delete(&format!("{}/api/runs/r1", relay.url)).call();
    assert_eq!(res.unwrap().status(), 200);
    let (s, _, _) = get_media(&relay.url, "r1", &sha, &[]);
    assert_eq!(s, 404);
}

#[test]
fn hostile_uploads_are_refused_naming_why_and_nothing_is_stored() {
    let dir = TempDir::new("media-hostile");
    let relay = Relay::start(
        &dir.0,
        &["--media-max-item", "200000", "--media-max-run", "300000"],
    );
    let url = relay.url.clone();
    let refused = |bytes: &[u8], sha: Option<&str>, status: u16, says: &str| {
        let (s, v) = put_media(&url, "r2", bytes, sha, "image/png");
        assert_eq!(s, status, "{v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{says:?} not in {error:?}");
        let addr = sha.map_or_else(|| sha256_hex(bytes), str::to_string);
        if stepwatch_events::media::is_sha256(&addr) {
            assert_eq!(get_media(&url, "r2", &addr, &[]).0, 404, "nothing stored");
        }
    };
    // An HTML page named .png, sent as image/png.
    refused(
        b"<!doctype html><html><script>fetch('/api/runs')</script></html>",
        None,
        400,
        "HTML",
    );
    refused(
        br#"<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>"#,
        None,
        400,
        "SVG",
    );
    refused(b"GIF89a\x01\0\x01\0", None, 400, "PNG, JPEG or WebP");
    refused(b"", None, 400, "empty");
    // A PNG header claiming 100,000 × 100,000: a bomb for the browser that decodes it.
    refused(
        &png_header(100_000, 100_000),
        None,
        413,
        "--media-max-pixels",
    );
    // Over the item limit, refused before it is read whole.
    let big = png(300, 300, |x, y| [x as u8, y as u8, (x ^ y) as u8]);
    assert!(big.len() > 200_000);
    refused(&big, None, 413, "--media-max-item");
    // Bytes that do not hash to their address, and an address that is no hash.
    let ok = png(10, 10, |_, _| [1, 2, 3]);
    refused(&ok, Some(&"0".repeat(64)), 400, "hash to");
    refused(&ok, Some("../../etc/passwd"), 404, "");
    refused(&ok, Some("ABCDEF"), 400, "SHA-256");

    // The run's total: two of 140 KB fit under 300 KB, the third does not.
    for i in 0..3u8 {
        let img = png(220, 210, |x, y| [x as u8, y as u8, i]);
        let (s, v) = put_media(&url, "r2", &img, None, "image/png");
        if i < 2 {
            assert_eq!(s, 200, "{v}");
        } else {
            assert_eq!(s, 413, "{v}");
            assert!(
                v["error"].as_str().unwrap().contains("--media-max-run"),
                "{v}"
            );
            assert_eq!(get_media(&url, "r2", &sha256_hex(&img), &[]).0, 404);
        }
    }
}

#[test]
fn text_samples_and_histograms_are_stored_by_step_and_bad_ones_refused_whole() {
    let dir = TempDir::new("media-events");
    let relay = Relay::start(&dir.0, &[]);
    let good = [
        json!({"event": "batch_end", "step": 20000, "loss": 0.5}),
        json!({"event": "text_sample", "name": "generate", "prompt": "Once upon", "completion": " a time"}),
        json!({"event": "text_sample", "name": "table", "step": 20000, "columns": ["prompt", "score"],
               "rows": [["a", 1], ["b", null]]}),
        json!({"event": "histogram", "name": "gradients/fc.weight", "edges": [-1.0, 0.0, 1.0],
               "counts": [3, 5], "min": -0.9, "max": 0.8, "count": 8}),
    ];
    let (s, v) = relay.post("r3", &ndjson(&good), NDJSON);
    assert_eq!(s, 200, "{v}");
    let events = relay.all_events("r3");
    let steps: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] != "batch_end")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        [20000, 20000, 20000],
        "steps filled in from the batch"
    );
    let kinds: Vec<(String, String)> = relay.get_ok("/api/runs/r3")["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap().into(),
                t["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");

    let before = events.len();
    let million = 1_000_000usize;
    let edges: Vec<f64> = (0..=million).map(|i| i as f64).collect();
    let counts = vec![1u8; million];
    let bad_cases = [
        (
            json!({"event": "histogram", "name": "h", "edges": edges, "counts": counts}),
            "counts",
            "512",
        ),
        (
            json!({"event": "histogram", "name": "h", "edges": [0, 2, 1], "counts": [1, 1]}),
            "edges[2]",
            "decrease",
        ),
        (
            json!({"event": "histogram", "name": "h", "edges": [0, 1], "counts": [-1]}),
            "counts[0]",
            "negative",
        ),
        (
            json!({"event": "image", "name": "i", "media": "a".repeat(64)}),
            "media",
            "upload the bytes first",
        ),
        (json!({"event": "image", "name": "i"}), "media", "SHA-256"),
        (
            json!({"event": "text_sample", "name": "t", "columns": ["a", "b"], "rows": [["x"]]}),
            "rows[0]",
            "as long as",
        ),
        (
            json!({"event": "text_sample", "name": "t", "text": "x".repeat(40_000), "prompt": "y".repeat(40_000)}),
            "text",
            "65536",
        ),
        (
            json!({"event": "text_sample", "text": "no tag"}),
            "name",
            "name",
        ),
    ];
    for (bad, field, says) in bad_cases {
        // With a good event before it: the batch is stored whole or not at all.
        let batch = [
            json!({"event": "metric_update", "name": "acc", "value": 0.9}),
            bad,
        ];
        let (s, v) = relay.post("r3", &ndjson(&batch), NDJSON);
        assert_eq!(s, 400, "{field}: {v}");
        assert_eq!(v["index"], 1, "{v}");
        assert_eq!(v["field"], field, "{v}");
        let error = v["error"].as_str().unwrap();
        assert!(error.contains(says), "{says:?} not in {error:?}");
    }
    assert_eq!(relay.all_events("r3").len(), before, "nothing half-stored");
}
