//! `GET /api/runs/{run}/series`: M4 from the full data, on a real relay process.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use stepwatch_e2e::{no_alerts_file, Relay, TempDir};
use stepwatch_events::downsample::m4;
use stepwatch_events::series::SeriesPage;

const NDJSON: &str = "application/x-ndjson";

/// The loss at step `s` (1-based): a falling curve with a spike and a NaN.
fn loss(s: u64) -> String {
    match s {
        3333 => "100.0".into(),
        4000 => "\"NaN\"".into(),
        _ => format!("{}", 1.0 / s as f64),
    }
}

/// Posts steps `from..=to` as batch_end events (steps derived by the reducer), with a
/// metric_update every 100 steps.
fn post_steps(relay: &Relay, run: &str, from: u64, to: u64) {
    let mut body = String::new();
    for s in from..=to {
        body.push_str(&format!(
            "{{\"event\":\"batch_end\",\"batch_idx\":{s},\"loss\":{},\"lr\":0.001,\"time\":{s}}}\n",
            loss(s)
        ));
        if s % 100 == 0 {
            body.push_str(&format!(
                "{{\"event\":\"metric_update\",\"name\":\"val/acc\",\"value\":{}}}\n",
                s as f64 / 10_000.0
            ));
        }
        if s % 1000 == 0 || s == to {
            let (status, v) = relay.post(run, &body, NDJSON);
            assert_eq!(status, 200, "{v}");
            body.clear();
        }
    }
}

fn page(relay: &Relay, query: &str) -> SeriesPage {
    let (status, v) = relay.get(query);
    assert_eq!(status, 200, "{query}: {v}");
    serde_json::from_value(v).unwrap()
}

#[test]
fn series_is_m4_of_the_full_data_and_keeps_spikes_and_nans() {
    let dir = TempDir::new("series");
    // No alert rules: the NaN at step 4000 would have the relay add a record meanwhile.
    let quiet = no_alerts_file(&dir.0.join("cfg"));
    let relay = Relay::start(&dir.0, &["--alerts", quiet.to_str().unwrap()]);
    post_steps(&relay, "big", 1, 5000);
    let p = page(&relay, "/api/runs/big/series?metric=loss&points=100");
    assert!(p.exact);
    assert_eq!(p.total, 5000);
    assert_eq!(
        p.last_id,
        relay.get_ok("/api/runs/big")["last_id"].as_u64().unwrap()
    );
    assert!(p.points.len() <= 400 && p.points.len() > 100);
    // Exactly what M4 over every point gives.
    let all: Vec<(f64, f64)> = (1..=5000u64)
        .map(|s| (s as f64, serde_json::from_str::<Value>(&loss(s)).unwrap()))
        .map(|(x, v)| (x, v.as_f64().unwrap_or(f64::NAN)))
        .collect();
    let want = m4(&all, 100);
    let got: Vec<(f64, f64)> = p.points.iter().map(|q| (q.step, q.value)).collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0);
        assert!(
            g.1 == w.1 || (g.1.is_nan() && w.1.is_nan()),
            "{g:?} vs {w:?}"
        );
    }
    assert!(got.contains(&(3333.0, 100.0)), "the spike vanished");
    assert!(
        got.iter().any(|q| q.0 == 4000.0 && q.1.is_nan()),
        "NaN vanished"
    );
    assert_eq!((got[0].0, got[got.len() - 1].0), (1.0, 5000.0));
    assert!(p.points.iter().all(|q| q.time == q.step), "times lost");

    // A zoomed range: only its points, every one of them when they fit.
    let z = page(
        &relay,
        "/api/runs/big/series?metric=loss&points=1000&from=3300&to=3400",
    );
    assert_eq!(z.total, 101);
    let steps: Vec<f64> = z.points.iter().map(|q| q.step).collect();
    assert_eq!(steps, (3300..=3400).map(|s| s as f64).collect::<Vec<_>>());

    // Sparse metrics, and the list of series.
    let acc = page(&relay, "/api/runs/big/series?metric=val/acc&points=1000");
    assert_eq!(acc.total, 50);
    assert_eq!(acc.points[0].value, 0.01);
    let list = relay.get_ok("/api/runs/big/series");
    let counts: Vec<(String, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["metric"].as_str().unwrap().to_string(),
                m["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![
            ("loss".to_string(), 5000),
            ("lr".to_string(), 5000),
            ("val/acc".to_string(), 50)
        ]
    );
}

#[test]
fn the_index_survives_kill_9_and_restarts_without_losing_or_doubling_points() {
    let dir = TempDir::new("series-restart");
    let mut relay = Relay::start(&dir.0, &[]);
    // Partial blocks live in memory between writes: kill the relay in between.
    post_steps(&relay, "r", 1, 2500);
    relay.kill();
    relay.restart();
    post_steps(&relay, "r", 2501, 3700);
    let p = page(&relay, "/api/runs/r/series?metric=loss&points=1000");
    assert_eq!(p.total, 3700);
    relay.kill();
    relay.restart();
    let q = page(&relay, "/api/runs/r/series?metric=loss&points=20000&from=1");
    let steps: Vec<f64> = q.points.iter().map(|x| x.step).collect();
    assert_eq!(steps, (1..=3700).map(|s| s as f64).collect::<Vec<_>>());
    post_steps(&relay, "r", 3701, 4000);
    let r = page(&relay, "/api/runs/r/series?metric=lr&points=20000");
    assert_eq!(r.total, 4000);
    assert_eq!(r.points.last().unwrap().step, 4000.0);
}

#[test]
fn bad_series_queries_get_clear_errors() {
    let dir = TempDir::new("series-bad");
    let relay = Relay::start(&dir.0, &[]);
    post_steps(&relay, "r", 1, 10);
    for (query, names) in [
        ("points=0", "points"),
        ("points=abc", "points"),
        ("points=1000000", "points"),
        ("from=x", "from"),
        ("to=NaN", "to"),
        ("from=10&to=1", "from"),
        ("metric=", "metric"),
        ("bogus=1", "bogus"),
    ] {
        let (s, v) = relay.get(&format!("/api/runs/r/series?metric=loss&{query}"));
        assert_eq!(s, 400, "{query}");
        assert!(v["error"].as_str().unwrap().contains(names), "{query}: {v}");
    }
    let (s, _) = relay.get("/api/runs/nope/series?metric=loss");
    assert_eq!(s, 404);
    let p = page(&relay, "/api/runs/r/series?metric=not-there");
    assert_eq!((p.total, p.points.len()), (0, 0));
}
