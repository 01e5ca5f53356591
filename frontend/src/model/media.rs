//! The run's media as the samples panel shows them: text samples, images and
//! histograms (their events, kept by [`super::RunView`]), plus the answers of "Try the
//! model" (`ask` commands) as text samples at the step they came. One step slider
//! chooses what is shown: every tag shows its newest item at or before that step.
//! The markup is built here as escaped HTML (plain data, tested natively; cheaper to
//! ship than one view per shape).

use super::markdown::escape;
use super::sort::sort_by;
use super::RunView;
use stepwatch_events::event::{Histogram, Image, TextSample};
use stepwatch_events::num;
use stepwatch_events::{Event, EventBody};

/// Media events a run page keeps (newest).
pub const MAX_MEDIA: usize = 2000;
/// Text samples listed at once.
pub const MAX_LISTED: usize = 50;

/// What the panel's markup says in the page's language.
pub struct Words<'a> {
    pub step: &'a str,
    pub asked: &'a str,
    pub prompt: &'a str,
    pub answer: &'a str,
}

/// Changes whenever what the samples panel shows may: a media event or an answer came.
pub fn revision(v: &RunView) -> (usize, Option<u64>, usize) {
    (
        v.media.len(),
        v.media.back().and_then(|e| e.id),
        asks(v).count(),
    )
}

/// Every step at which the run has a sample (media or an answered ask), ascending.
pub fn steps(v: &RunView) -> Vec<u64> {
    super::sort::set(
        v.media
            .iter()
            .map(|e| v.state.step_of(e))
            .chain(asks(v).map(|(step, _, _)| step)),
    )
    .into_iter()
    .collect()
}

/// Answered asks: (step, what was asked, the answer).
fn asks(v: &RunView) -> impl Iterator<Item = (u64, String, String)> + '_ {
    v.state
        .commands
        .iter()
        .filter(|c| c.command == "ask" && c.status == "done")
        .filter_map(|c| {
            let out = c.output.as_ref()?;
            let input = c.args.get("input").map(show_value).unwrap_or_default();
            Some((c.step.unwrap_or(0), input, show_value(out)))
        })
}

fn show_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The newest event of each tag of one kind at or before `at` (all steps when `None`),
/// in the order the tags first came; for images, every image of that step (by index).
fn newest_per_tag<'a>(
    v: &'a RunView,
    kind: &str,
    at: Option<u64>,
) -> Vec<(&'a str, Vec<&'a Event>)> {
    let mut out: Vec<(&str, u64, Vec<&Event>)> = Vec::new();
    for e in &v.media {
        let Some((k, Some(name), _)) = stepwatch_events::media::media_of(&e.body) else {
            continue;
        };
        let step = v.state.step_of(e);
        if k != kind || at.is_some_and(|a| step > a) {
            continue;
        }
        match out.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, s, list)) if step > *s => {
                *s = step;
                *list = vec![e];
            }
            Some((_, s, list)) if step == *s => list.push(e),
            Some(_) => {}
            None => out.push((name, step, vec![e])),
        }
    }
    out.into_iter().map(|(n, _, l)| (n, l)).collect()
}

fn image_of(e: &Event) -> Option<&Image> {
    match &e.body {
        EventBody::Image(i) => Some(i),
        _ => None,
    }
}

/// Where an image's bytes are served.
pub fn media_url(base: &str, run: &str, sha: &str) -> String {
    format!("{base}/api/runs/{run}/media/{sha}")
}

/// The image grid at step `at`: one figure per tag, its images of the newest step at or
/// before `at`, each a thumbnail that opens full size (`data-full`).
pub fn images_html(v: &RunView, base: &str, at: Option<u64>, w: &Words) -> String {
    let mut h = String::new();
    for (name, list) in newest_per_tag(v, "image", at) {
        let mut imgs: Vec<&Image> = list.iter().filter_map(|e| image_of(e)).collect();
        sort_by(&mut imgs, |a, b| a.index.cmp(&b.index));
        let step = list.first().map_or(0, |e| v.state.step_of(e));
        h.push_str("<figure class=\"media-fig\" data-testid=\"image-tag\"><figcaption><b>");
        escape(name, &mut h);
        h.push_str(&format!("</b> <span class=\"muted\" data-testid=\"image-step\">{} {step}</span></figcaption><div class=\"media-grid\">", w.step));
        let first = imgs.first().and_then(|i| i.caption.as_deref());
        let same = imgs.iter().all(|i| i.caption.as_deref() == first);
        for i in &imgs {
            let Some(sha) = i.media.as_deref() else {
                continue;
            };
            let url = media_url(base, &v.state.run, sha);
            let caption = i.caption.as_deref().unwrap_or("");
            h.push_str("<span class=\"thumb\"><img data-testid=\"image\" loading=\"lazy\" src=\"");
            escape(&url, &mut h);
            h.push_str("\" data-full=\"");
            escape(&url, &mut h);
            h.push_str("\" alt=\"");
            escape(caption, &mut h);
            h.push_str("\" title=\"");
            escape(caption, &mut h);
            if let (Some(wd), Some(ht)) = (i.width, i.height) {
                // Small images are shown larger: sharp pixels, not a blur.
                let px = if ht < 128 { " class=\"px\"" } else { "" };
                h.push_str(&format!("\" width=\"{wd}\" height=\"{ht}\"{px}"));
            } else {
                h.push('"');
            }
            h.push('>');
            if !same && !caption.is_empty() {
                h.push_str("<small>");
                escape(caption, &mut h);
                h.push_str("</small>");
            }
            h.push_str("</span>");
        }
        h.push_str("</div>");
        if let Some(c) = first.filter(|_| same) {
            h.push_str("<p class=\"small muted\">");
            escape(c, &mut h);
            h.push_str("</p>");
        }
        h.push_str("</figure>");
    }
    h
}

fn text_body(t: &TextSample, h: &mut String) {
    if let Some(p) = &t.prompt {
        h.push_str("<pre class=\"prompt\">");
        escape(p, h);
        h.push_str("</pre>");
    }
    if let Some(c) = &t.completion {
        h.push_str("<pre class=\"completion\">");
        escape(c, h);
        h.push_str("</pre>");
    }
    if let Some(x) = &t.text {
        h.push_str("<pre>");
        escape(x, h);
        h.push_str("</pre>");
    }
    if let (Some(cols), Some(serde_json::Value::Array(rows))) = (&t.columns, &t.rows) {
        h.push_str("<table class=\"media-table\"><tr>");
        for c in cols {
            h.push_str("<th>");
            escape(c, h);
            h.push_str("</th>");
        }
        h.push_str("</tr>");
        for row in rows.iter().take(200) {
            h.push_str("<tr>");
            for cell in row.as_array().into_iter().flatten() {
                h.push_str("<td>");
                escape(&show_value(cell).replace("null", ""), h);
                h.push_str("</td>");
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    }
}

/// The text samples and answered asks at or before `at`, newest first (at most
/// [`MAX_LISTED`]).
pub fn texts_html(v: &RunView, at: Option<u64>, w: &Words) -> String {
    // (step, order, markup): newest step first, the later of equal steps first.
    let mut rows: Vec<(u64, usize, String)> = Vec::new();
    for (n, e) in v.media.iter().enumerate() {
        let EventBody::TextSample(t) = &e.body else {
            continue;
        };
        let step = v.state.step_of(e);
        if at.is_some_and(|a| step > a) {
            continue;
        }
        let mut h = String::from(
            "<div class=\"sample\" data-testid=\"sample\"><div class=\"sample-head\"><b>",
        );
        escape(t.name.as_deref().unwrap_or(""), &mut h);
        h.push_str(&format!(
            "</b> <span class=\"muted\">{} {step}</span>",
            w.step
        ));
        if let Some(c) = &t.caption {
            h.push_str(" <span class=\"muted small\">");
            escape(c, &mut h);
            h.push_str("</span>");
        }
        h.push_str("</div>");
        text_body(t, &mut h);
        h.push_str("</div>");
        rows.push((step, n, h));
    }
    for (n, (step, input, answer)) in asks(v).enumerate() {
        if at.is_some_and(|a| step > a) {
            continue;
        }
        let mut h = format!(
            "<div class=\"sample ask\" data-testid=\"sample-ask\"><div class=\"sample-head\"><b>{}</b> <span class=\"muted\">{} {step}</span></div><pre class=\"prompt\" title=\"{}\">",
            w.asked, w.step, w.prompt
        );
        escape(&input, &mut h);
        h.push_str(&format!(
            "</pre><pre class=\"completion\" title=\"{}\">",
            w.answer
        ));
        escape(&answer, &mut h);
        h.push_str("</pre></div>");
        rows.push((step, MAX_MEDIA + n, h));
    }
    sort_by(&mut rows, |a, b| (b.0, b.1).cmp(&(a.0, a.1)));
    rows.into_iter().take(MAX_LISTED).map(|r| r.2).collect()
}

/// One histogram tag over its steps, for the heatmap: (steps, lowest edge, highest
/// edge, per step its edges and counts).
pub struct HistSeries<'a> {
    pub name: &'a str,
    pub lo: f64,
    pub hi: f64,
    pub rows: Vec<(u64, &'a Histogram)>,
}

/// Every histogram tag with its steps, in the order the tags first came.
pub fn histograms(v: &RunView) -> Vec<HistSeries<'_>> {
    let mut out: Vec<HistSeries> = Vec::new();
    for e in &v.media {
        let EventBody::Histogram(hg) = &e.body else {
            continue;
        };
        let (Some(name), Some(edges)) = (hg.name.as_deref(), hg.edges.as_deref()) else {
            continue;
        };
        let (Some(&a), Some(&b)) = (edges.first(), edges.last()) else {
            continue;
        };
        let step = v.state.step_of(e);
        let s = match out.iter_mut().position(|s| s.name == name) {
            Some(i) => &mut out[i],
            None => {
                out.push(HistSeries {
                    name,
                    lo: a,
                    hi: b,
                    rows: Vec::new(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        s.lo = s.lo.min(a);
        s.hi = s.hi.max(b);
        s.rows.push((step, hg));
    }
    for s in &mut out {
        sort_by(&mut s.rows, |a, b| a.0.cmp(&b.0));
    }
    out
}

/// One block per histogram tag: its name, its note at step `at` and the canvas its
/// heatmap is drawn on (`data-n`: its place in [`histograms`]).
pub fn hists_html(v: &RunView, at: Option<u64>, w: &Words) -> String {
    let all = histograms(v);
    let mut h = String::new();
    // Grouped by the prefix before the first `/` (`gradients`, `parameters`), in order.
    let group = |name: &str| name.split_once('/').map_or("", |(g, _)| g).to_string();
    let mut groups: Vec<String> = Vec::new();
    for s in &all {
        let g = group(s.name);
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    for g in &groups {
        let members = all.iter().enumerate().filter(|(_, s)| group(s.name) == *g);
        if !g.is_empty() {
            h.push_str("<h4 class=\"hist-group\">");
            escape(g, &mut h);
            h.push_str(&format!(
                " <span class=\"count\">{}</span></h4>",
                members.clone().count()
            ));
        }
        h.push_str("<div class=\"hist-grid\">");
        for (n, s) in members {
            h.push_str("<div class=\"hist\" data-testid=\"histogram\" data-tag=\"");
            escape(s.name, &mut h);
            h.push_str("\"><div class=\"small\"><b>");
            escape(s.name, &mut h);
            h.push_str("</b> <span class=\"muted\" data-testid=\"hist-note\">");
            escape(&hist_note(s, at, w), &mut h);
            h.push_str(&format!(
                "</span></div><canvas class=\"hist-canvas\" data-n=\"{n}\"></canvas></div>"
            ));
        }
        h.push_str("</div>");
    }
    h
}

/// A histogram's summary line at step `at`: min, max, count.
pub fn hist_note(s: &HistSeries, at: Option<u64>, w: &Words) -> String {
    let Some((step, h)) = s
        .rows
        .iter()
        .rev()
        .find(|(st, _)| at.is_none_or(|a| *st <= a))
    else {
        return String::new();
    };
    let count: f64 = h.count.unwrap_or_else(|| h.counts.iter().flatten().sum());
    let mut out = format!("{} {step} · n={}", w.step, num::display(count, 6));
    if let (Some(lo), Some(hi)) = (h.min, h.max) {
        out.push_str(&format!(
            " · [{}, {}]",
            num::display(lo, 4),
            num::display(hi, 4)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: Words<'static> = Words {
        step: "step",
        asked: "asked",
        prompt: "prompt",
        answer: "answer",
    };

    fn view(events: &[&str]) -> RunView {
        let mut v = RunView::new("r");
        for (i, json) in events.iter().enumerate() {
            let mut e = Event::from_json(json).unwrap();
            e.id = Some(i as u64 + 1);
            v.take(e);
        }
        v
    }

    fn img(step: u64, index: u64, sha: char, caption: &str) -> String {
        format!(
            r#"{{"event":"image","name":"recon","step":{step},"index":{index},"media":"{}","caption":"{caption}","width":8,"height":8}}"#,
            sha.to_string().repeat(64)
        )
    }

    #[test]
    fn the_slider_shows_each_tags_images_of_the_newest_step_at_or_before_it() {
        let (a, b, c) = (
            img(10, 1, 'a', "one"),
            img(10, 0, 'b', "zero"),
            img(20, 0, 'c', "later"),
        );
        let v = view(&[&a, &b, &c]);
        assert_eq!(steps(&v), [10, 20]);
        let at10 = images_html(&v, "http://h", Some(15), &WORDS);
        // Both images of step 10, in index order; not the one of step 20.
        let (pb, pa) = (
            at10.find(&"b".repeat(64)).unwrap(),
            at10.find(&"a".repeat(64)).unwrap(),
        );
        assert!(pb < pa, "{at10}");
        assert!(!at10.contains(&"c".repeat(64)));
        assert!(at10.contains("step 10"));
        // Captions that differ go under each image; the 8×8 images are shown sharp.
        assert!(
            at10.contains("<small>zero</small>") && at10.contains("<small>one</small>"),
            "{at10}"
        );
        assert!(at10.contains("class=\"px\""), "{at10}");
        let latest = images_html(&v, "http://h", None, &WORDS);
        assert!(latest.contains(&format!("http://h/api/runs/r/media/{}", "c".repeat(64))));
        assert!(latest.contains("data-full=") && latest.contains("step 20"));
        assert!(images_html(&v, "", Some(5), &WORDS).is_empty());
    }

    #[test]
    fn captions_and_text_are_escaped_never_markup() {
        let evil = img(1, 0, 'd', r#"<img src=x onerror=alert(1)>\" onload=\"x"#);
        let text = r#"{"event":"text_sample","name":"<b>t</b>","step":1,"prompt":"<script>alert(1)</script>","completion":"ok"}"#;
        let v = view(&[&evil, text]);
        let h = images_html(&v, "", None, &WORDS) + &texts_html(&v, None, &WORDS);
        assert!(
            !h.contains("<script>") && !h.contains("<img src=x") && !h.contains("<b>t</b>"),
            "{h}"
        );
        assert!(h.contains("&lt;script&gt;"), "{h}");
        assert!(!h.contains("\" onload=\""), "{h}");
    }

    #[test]
    fn text_samples_and_answers_newest_first_up_to_the_step() {
        let v = view(&[
            r#"{"event":"text_sample","name":"gen","step":100,"prompt":"Once","completion":"upon"}"#,
            r#"{"event":"command","command_id":"c1","command":"ask","args":{"input":"2+2?"}}"#,
            r#"{"event":"batch_end","step":150,"loss":1}"#,
            r#"{"event":"command_ack","command_id":"c1","status":"done","output":"4"}"#,
            r#"{"event":"text_sample","name":"gen","step":200,"text":"a later sample"}"#,
            r#"{"event":"text_sample","name":"table","step":200,"columns":["a","b"],"rows":[["x",1],["y",null]]}"#,
        ]);
        assert_eq!(steps(&v), [100, 150, 200]);
        let all = texts_html(&v, None, &WORDS);
        let order: Vec<usize> = ["<table", "a later sample", "2+2?", "upon"]
            .iter()
            .map(|s| all.find(s).unwrap_or_else(|| panic!("{s} missing: {all}")))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}: {all}");
        assert!(
            all.contains("step 150") && all.contains(">4<"),
            "the answer at its step: {all}"
        );
        let at120 = texts_html(&v, Some(120), &WORDS);
        assert!(at120.contains("upon") && !at120.contains("2+2?") && !at120.contains("later"));
    }

    #[test]
    fn histograms_by_tag_over_their_steps_with_a_note_at_the_step() {
        let v = view(&[
            r#"{"event":"histogram","name":"gradients/w","step":20,"edges":[-2,0,2],"counts":[1,3],"min":-1.5,"max":1.2}"#,
            r#"{"event":"histogram","name":"gradients/w","step":10,"edges":[-1,0,1],"counts":[2,2]}"#,
            r#"{"event":"histogram","name":"parameters/w","step":10,"edges":[0,1],"counts":[5]}"#,
        ]);
        let h = histograms(&v);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].name, "gradients/w");
        assert_eq!(h[0].rows.iter().map(|r| r.0).collect::<Vec<_>>(), [10, 20]);
        assert_eq!((h[0].lo, h[0].hi), (-2.0, 2.0));
        assert_eq!(hist_note(&h[0], Some(15), &WORDS), "step 10 · n=4");
        assert!(hist_note(&h[0], None, &WORDS).starts_with("step 20 · n=4 · [-1.5"));
        assert_eq!(hist_note(&h[0], Some(5), &WORDS), "");
        let html = hists_html(&v, None, &WORDS);
        let (g, p) = (
            html.find("gradients <span").unwrap(),
            html.find("parameters <span").unwrap(),
        );
        assert!(g < p, "{html}");
        assert_eq!(html.matches("data-testid=\"histogram\"").count(), 2);
        assert!(html.contains("data-n=\"1\""));
    }
}
