//! A distributed run's world as the run page draws it: its ranks grouped by node, each
//! with its state, step and step time (the straggler marked), and heat strips of its
//! utilisation and memory over its recent samples. Built as one escaped markup string
//! (the dashboard's budget favours one string over many view nodes).

use super::markdown::escape;
use super::sort::sort_by;
use super::tail::SystemSample;
use super::RunView;
use std::fmt::Write;
use stepwatch_events::world::RankInfo;

fn esc(s: &str) -> String {
    let mut out = String::new();
    escape(s, &mut out);
    out
}

/// Samples per rank drawn in a strip.
pub const STRIP: usize = 60;

/// The words the panel needs, in the page's language.
pub struct Words<'a> {
    pub node: &'a str,
    pub util: &'a str,
    pub mem: &'a str,
    pub step_time: &'a str,
    pub slowest: &'a str,
    pub states: [&'a str; 4],
}

/// One rank's samples, oldest first: (utilisation %, memory fraction 0..=1).
fn strips(v: &RunView, rank: u64) -> Vec<(Option<f64>, Option<f64>)> {
    let mine: Vec<&SystemSample> = v
        .system
        .iter()
        .filter(|s| s.rank.unwrap_or(0) == rank)
        .collect();
    mine[mine.len().saturating_sub(STRIP)..]
        .iter()
        .map(|s| {
            let g = s.gpus.first();
            let util = g.and_then(|g| g.util_percent).or(s.cpu_percent);
            let mem = match g {
                Some(g) => g.mem_used_bytes.zip(g.mem_total_bytes),
                None => s.mem_used_bytes.zip(s.mem_total_bytes),
            }
            .filter(|(_, t)| *t > 0.0)
            .map(|(u, t)| u / t);
            (util.map(|u| u / 100.0), mem)
        })
        .collect()
}

/// A heat strip: one cell per sample, its opacity the value (0..=1); none: a gap.
fn strip(out: &mut String, cells: &[Option<f64>], testid: &str) {
    let _ = write!(
        out,
        r#"<svg class="heat" data-testid="{testid}" viewBox="0 0 {STRIP} 1" preserveAspectRatio="none">"#
    );
    let start = STRIP - cells.len().min(STRIP);
    for (i, c) in cells.iter().enumerate() {
        if let Some(x) = c.filter(|x| x.is_finite()) {
            let _ = write!(
                out,
                r#"<rect x="{}" width="1" height="1" fill-opacity="{:.2}"/>"#,
                start + i,
                x.clamp(0.04, 1.0)
            );
        }
    }
    out.push_str("</svg>");
}

/// The panel's markup, or `None` for a run of one process.
pub fn world_html(v: &RunView, w: &Words<'_>) -> Option<String> {
    let world = v.state.world.as_ref().filter(|w| w.size > 1)?;
    let mut ranks: Vec<_> = world.ranks.iter().collect();
    let place = |r: &&RankInfo| (r.node_rank.unwrap_or(0), r.local_rank.unwrap_or(r.rank));
    sort_by(&mut ranks, |a, b| place(a).cmp(&place(b)));
    let mut times: Vec<f64> = ranks.iter().filter_map(|r| r.step_ms).collect();
    sort_by(&mut times, f64::total_cmp);
    let median = times.get(times.len() / 2).copied();
    let slowest = ranks.iter().filter(|r| r.step_ms.is_some()).max_by(|a, b| {
        a.step_ms
            .unwrap_or(0.0)
            .total_cmp(&b.step_ms.unwrap_or(0.0))
    });
    let mut out = String::new();
    let mut straggler = None;
    if let (Some(s), Some(m)) = (slowest, median) {
        let ms = s.step_ms.unwrap_or(0.0);
        if m > 0.0 && ms > m * 1.1 && times.len() > 1 {
            straggler = Some(s.rank);
            let _ = write!(
                out,
                r#"<p class="straggler" data-testid="straggler" data-rank="{}">{} #{}: {ms:.1} ms (+{:.0}%)</p>"#,
                s.rank,
                esc(w.slowest),
                s.rank,
                100.0 * (ms / m - 1.0)
            );
        }
    }
    let _ = write!(
        out,
        r#"<table class="world"><tr><th></th><th></th><th>{}</th><th>{}</th><th>{}</th></tr>"#,
        esc(w.step_time),
        esc(w.util),
        esc(w.mem)
    );
    let mut node = None;
    for r in ranks {
        if node != Some(r.node_rank) {
            node = Some(r.node_rank);
            let _ = write!(
                out,
                r#"<tr class="node"><td colspan="5">{} {} · {}</td></tr>"#,
                esc(w.node),
                r.node_rank.unwrap_or(0),
                esc(r.host.as_deref().unwrap_or("?"))
            );
        }
        let state = match r.state.as_str() {
            "ended" => 1,
            "failed" => 2,
            "lost" => 3,
            _ => 0,
        };
        let _ = write!(
            out,
            r#"<tr data-testid="rank" data-rank="{}" data-state="{}" class="{}"><td class="mono">#{}</td><td><span class="dot {}"></span>{}</td><td class="mono">{}{}</td><td>"#,
            r.rank,
            esc(&r.state),
            if straggler == Some(r.rank) {
                "slow"
            } else {
                ""
            },
            r.rank,
            esc(&r.state),
            esc(w.states[state]),
            r.step.map_or(String::new(), |s| format!("{s} · ")),
            r.step_ms.map_or("–".into(), |ms| format!("{ms:.1} ms")),
        );
        let cells = strips(v, r.rank);
        let util: Vec<_> = cells.iter().map(|c| c.0).collect();
        let mem: Vec<_> = cells.iter().map(|c| c.1).collect();
        strip(&mut out, &util, "heat-util");
        out.push_str("</td><td>");
        strip(&mut out, &mem, "heat-mem");
        out.push_str("</td></tr>");
    }
    out.push_str("</table>");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stepwatch_events::Event;

    fn ev(json: &str) -> Event {
        Event::from_json(json).unwrap()
    }

    const WORDS: Words<'static> = Words {
        node: "node",
        util: "util",
        mem: "memory",
        step_time: "step time",
        slowest: "slowest",
        states: ["running", "ended", "failed", "lost"],
    };

    #[test]
    fn ranks_by_node_with_strips_and_the_straggler() {
        let mut v = RunView::default();
        let mut id = 0;
        let mut push = |v: &mut RunView, json: String| {
            id += 1;
            let mut e = ev(&json);
            e.id = Some(id);
            v.apply(&e);
        };
        for r in 0..4u64 {
            push(
                &mut v,
                format!(
                    r#"{{"event":"rank","rank":{r},"state":"started","world_size":4,"node_rank":{},"local_rank":{},"host":"h<{}>"}}"#,
                    r / 2,
                    r % 2,
                    r / 2
                ),
            );
        }
        for t in 0..3 {
            for r in 0..4u64 {
                let ms = if r == 3 { 20.0 } else { 10.0 };
                push(
                    &mut v,
                    format!(
                        r#"{{"event":"system","time":{t},"rank":{r},"step":{t},"step_ms":{ms},"cpu_percent":50,"gpus":[{{"util_percent":{},"mem_used_bytes":5,"mem_total_bytes":10}}]}}"#,
                        25 * r
                    ),
                );
            }
        }
        let html = world_html(&v, &WORDS).unwrap();
        assert_eq!(html.matches(r#"data-testid="rank""#).count(), 4);
        assert_eq!(html.matches(r#"class="node""#).count(), 2, "{html}");
        assert!(
            html.contains("h&lt;1&gt;"),
            "host names are escaped: {html}"
        );
        assert!(
            html.contains(r#"data-testid="straggler" data-rank="3""#),
            "{html}"
        );
        assert!(html.contains("+100%"), "{html}");
        // Three samples per rank: three cells in each strip, at the right end.
        let util = html.split(r#"data-testid="heat-util""#).nth(4).unwrap();
        let cells = util.split("</svg>").next().unwrap();
        assert_eq!(cells.matches("<rect").count(), 3);
        assert!(cells.contains(r#"x="59""#) && cells.contains(r#"fill-opacity="0.75""#));
        // One process: no panel.
        assert!(world_html(&RunView::default(), &WORDS).is_none());
    }
}
