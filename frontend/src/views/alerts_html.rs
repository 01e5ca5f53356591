//! The alerts panel's markup as HTML text, every value escaped ([`Html`]): the history
//! (newest first), the rules that apply (Remove buttons name their rule in
//! `data-remove`) and the add-rule form (each control names its field in `data-f` and
//! has a `data-err` line). Text markup keeps the download small.

use super::alert_form::{kind_fields, last_good, FormText, ListedRule};
use super::alerts::level_class;
use super::common::ago;
use super::control::clock_time;
use super::job::Html;
use crate::i18n::{I18n, Key};
use crate::model::file_name;
use stepwatch_events::alerts::{duration, show_value, ActiveAlert, AlertRecord, Rule, RULE_KINDS};
use stepwatch_events::{num, FieldError, RunState};

/// The banner: each active alert, newest first (nothing when none is active), with
/// Dismiss when `may` command, and for a pausing or stopping rule the last good
/// checkpoint (with Load when `load`).
pub fn banner(h: &mut Html, i18n: I18n, s: &RunState, now: f64, may: bool, load: bool) {
    for a in s.alerts.active.iter().rev() {
        h.raw("<div class=\"banner alert-item ")
            .raw(level_class(Some(&a.level)))
            .raw("\" data-alert-id=\"")
            .text(&a.alert_id)
            .raw("\" data-level=\"")
            .text(&a.level)
            .raw("\">");
        h.raw("<b class=\"alert-title\" title=\"")
            .text(&a.title)
            .raw("\">")
            .text(&headline(i18n, a))
            .raw("</b>");
        h.el("span", "alert-text", &a.text);
        // The relay's words name the step already; a trainer's own may not.
        let step = a
            .step
            .filter(|st| !a.text.contains(&format!("step {st}")))
            .map(|st| format!("{} {st} · ", i18n.t(Key::Step)));
        let when = format!("{}{}", step.unwrap_or_default(), ago(i18n, a.since, now));
        h.el("span", "small muted-ish", &when)
            .raw("<span class=\"spacer\"></span>");
        if may {
            h.raw("<button type=\"button\" class=\"mini\" data-testid=\"dismiss\" data-dismiss=\"")
                .text(&a.alert_id)
                .raw("\">")
                .text(i18n.t(Key::Dismiss))
                .raw("</button>");
        }
        if a.action.is_some() {
            action_line(h, i18n, s, a, load);
        }
        h.raw("</div>");
    }
}

/// An active alert's title in the page's language, from what the record says (kind,
/// metric, value); the relay's English title stays as the tooltip. A trainer's own
/// alert keeps its words, as does a kind this page does not know.
fn headline(i18n: I18n, a: &ActiveAlert) -> String {
    let m = a.metric.as_deref().unwrap_or("loss");
    let v = a.value.map(show_value).unwrap_or_default();
    let gpu = || a.title.split(' ').nth(1).unwrap_or("").to_string();
    match a.kind.as_str() {
        "non_finite" => format!("{m} {} {v}", i18n.t(Key::HeadNonFinite)),
        "above" => format!("{m} = {v} · {}", i18n.t(Key::HeadAbove)),
        "below" => format!("{m} = {v} · {}", i18n.t(Key::HeadBelow)),
        "spike" => format!("{m} {} · {v}", i18n.t(Key::HeadSpike)),
        "plateau" => format!("{m} {}", i18n.t(Key::HeadPlateau)),
        "stale" => format!(
            "{} {}",
            i18n.t(Key::HeadStale),
            duration(a.value.unwrap_or(0.0))
        ),
        "failed" => i18n.t(Key::StatusFailed).to_string(),
        "finished" if a.title.ends_with("stopped") => i18n.t(Key::StatusStopped).to_string(),
        "finished" => i18n.t(Key::StatusCompleted).to_string(),
        "gpu_idle" => format!("GPU {} {}", gpu(), i18n.t(Key::HeadGpuIdle)),
        _ => a.title.clone(),
    }
}

/// "paused by rule X · last good checkpoint: ckpt-200.pt (step 200) [Load]".
fn action_line(h: &mut Html, i18n: I18n, s: &RunState, a: &ActiveAlert, load: bool) {
    let stop = a.action.as_deref() == Some("stop");
    h.raw("<div class=\"alert-action small\" data-testid=\"alert-action\" data-action=\"")
        .raw(if stop { "stop" } else { "pause" })
        .raw("\">")
        .text(i18n.t(if stop {
            Key::StoppedByRule
        } else {
            Key::PausedByRule
        }))
        .raw(" ")
        .el("b", "mono", &a.rule)
        .raw(" · ")
        .text(i18n.t(Key::LastGood))
        .raw(": ");
    match last_good(&s.checkpoints, a.step, a.since) {
        Some(c) => {
            h.raw("<span class=\"mono\" data-testid=\"last-good\" data-path=\"")
                .text(&c.path)
                .raw("\" title=\"")
                .text(&c.path)
                .raw("\">")
                .text(file_name(&c.path))
                .raw("</span>");
            if let Some(st) = c.step {
                h.text(&format!(" ({} {st}) ", i18n.t(Key::Step)));
            }
            if load {
                h.raw("<button type=\"button\" class=\"mini\" data-testid=\"load\" data-load=\"")
                    .text(&c.path)
                    .raw("\">")
                    .text(i18n.t(Key::Load))
                    .raw("</button>");
            }
        }
        None => {
            h.raw("<span data-testid=\"last-good\">")
                .text(i18n.t(Key::NoGoodCheckpoint))
                .raw("</span>");
        }
    }
    h.raw("</div>");
}

/// A level's word.
pub fn level_key(level: &str) -> Key {
    match level {
        "error" => Key::LevelError,
        "info" => Key::LevelInfo,
        _ => Key::LevelWarning,
    }
}

fn what(i18n: I18n, r: &AlertRecord) -> (String, &'static str) {
    match r.what.as_str() {
        "fired" => (
            format!(
                "{} · {}",
                i18n.t(Key::AlertFired),
                i18n.t(level_key(r.level.as_deref().unwrap_or("")))
            ),
            level_class(r.level.as_deref()),
        ),
        "resolved" => (i18n.t(Key::AlertResolved).to_string(), "al-ok"),
        _ if r.ok == Some(true) => (i18n.t(Key::DeliveryOk).to_string(), "al-ok"),
        _ => (i18n.t(Key::DeliveryFailed).to_string(), "al-error"),
    }
}

fn detail(i18n: I18n, r: &AlertRecord) -> String {
    let mut out = r.text.clone();
    if let Some(ch) = &r.channel {
        let attempt = r.attempt.unwrap_or(1);
        let sep = if out.is_empty() { "" } else { " — " };
        out = format!("{ch} · {} {attempt}{sep}{out}", i18n.t(Key::Attempt));
    }
    if let Some(who) = &r.sender {
        out = format!("{out} ({} {who})", i18n.t(Key::DismissedBy));
    }
    out
}

/// The history, newest first.
pub fn history(h: &mut Html, i18n: I18n, recent: &[AlertRecord]) {
    if recent.is_empty() {
        h.el("p", "muted", i18n.t(Key::NoAlerts));
        return;
    }
    h.raw("<div class=\"scroll alert-history\"><table class=\"grid\" data-testid=\"alert-history\"><tbody>");
    for r in recent.iter().rev() {
        let (w, class) = what(i18n, r);
        h.raw("<tr data-testid=\"alert-record\" data-what=\"")
            .text(&r.what)
            .raw("\">");
        h.el("td", "small muted", &clock_time(r.time));
        h.raw("<td>")
            .el("span", &format!("al-tag {class}"), &w)
            .raw("</td>");
        h.el("td", "mono small", &r.alert_id);
        h.el("td", "small cmd-msg", &detail(i18n, r)).raw("</tr>");
    }
    h.raw("</tbody></table></div>");
}

/// A rule's kind and the fields it sets, as its config writes them: `above metric=loss
/// threshold=10 for=3`.
pub fn params(r: &Rule) -> String {
    let mut out = r.kind.as_str().to_string();
    let mut put = |k: &str, v: &str| {
        out.push(' ');
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    };
    if let Some(m) = &r.metric {
        put("metric", m);
    }
    let counts = [("for", r.count), ("window", r.window)];
    let floats = [
        ("threshold", r.threshold),
        ("factor", r.factor),
        ("min_delta_pct", r.min_delta_pct),
        ("after_s", r.after_s),
        ("below_pct", r.below_pct),
    ];
    for (k, x) in floats {
        if let Some(x) = x {
            put(k, &num::display(x, 6));
        }
    }
    for (k, n) in counts {
        if let Some(n) = n {
            put(k, &n.to_string());
        }
    }
    if let Some(e) = &r.event {
        put("event", e);
    }
    out
}

/// The rules that apply; the run's own have a Remove button when `allowed`.
pub fn rules(h: &mut Html, i18n: I18n, rules: &[ListedRule], allowed: bool) {
    h.el("h3", "group-title", i18n.t(Key::AlertRules));
    h.raw("<table class=\"grid\" data-testid=\"alert-rules\"><tbody>");
    for r in rules {
        let own = r.source == "run";
        let level = r.rule.level.as_str();
        h.raw("<tr data-testid=\"alert-rule\" data-rule=\"")
            .text(&r.rule.name)
            .raw("\" data-source=\"")
            .text(&r.source)
            .raw("\">");
        h.el("td", "mono", &r.rule.name);
        h.el("td", "small mono", &params(&r.rule));
        h.raw("<td>")
            .el(
                "span",
                &format!("al-tag {}", level_class(Some(level))),
                i18n.t(level_key(level)),
            )
            .raw("</td>");
        let action = r.rule.action.map(|a| {
            i18n.t(if a.command() == "stop" {
                Key::Stop
            } else {
                Key::Pause
            })
        });
        h.el("td", "small", action.unwrap_or(""));
        h.el(
            "td",
            "small muted",
            i18n.t(if own {
                Key::SourceRun
            } else {
                Key::SourceConfig
            }),
        );
        h.raw("<td>");
        if own && allowed {
            h.raw(
                "<button type=\"button\" class=\"mini\" data-testid=\"remove-rule\" data-remove=\"",
            )
            .text(&r.rule.name)
            .raw("\">")
            .text(i18n.t(Key::Remove))
            .raw("</button>");
        }
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table>");
}

/// The form's fields beyond name and kind: (field, label, placeholder).
const FIELDS: [(&str, Key, &str); 9] = [
    ("metric", Key::ColMetric, "loss"),
    ("threshold", Key::Threshold, ""),
    ("for", Key::ForPoints, "1"),
    ("factor", Key::Factor, "3"),
    ("window", Key::Window, ""),
    ("min_delta_pct", Key::MinDeltaPct, "1"),
    ("after_s", Key::AfterS, "300"),
    ("below_pct", Key::BelowPct, "5"),
    ("event", Key::EventName, "alert"),
];

/// Whether the form has a control for `field` when its kind is `kind`.
pub fn on_form(kind: &str, field: &str) -> bool {
    ["name", "kind", "level", "action"].contains(&field) || kind_fields(kind).contains(&field)
}

/// A labelled control with its error line (`err` when it names this field).
fn field(
    h: &mut Html,
    label: &str,
    key: &str,
    err: Option<&FieldError>,
    control: impl FnOnce(&mut Html),
) {
    let msg = err
        .filter(|e| e.field == key)
        .map_or("", |e| e.message.as_str());
    let class = if msg.is_empty() { "field" } else { "field bad" };
    h.raw("<div class=\"")
        .raw(class)
        .raw("\"><label>")
        .text(label)
        .raw("</label>");
    control(h);
    h.raw("<div class=\"field-error\" data-err=\"")
        .raw(key)
        .raw("\">")
        .text(msg)
        .raw("</div></div>");
}

fn input(h: &mut Html, key: &str, placeholder: &str, value: &str) {
    h.raw("<input data-f=\"")
        .raw(key)
        .raw("\" data-testid=\"rule-")
        .raw(key)
        .raw("\" placeholder=\"")
        .text(placeholder)
        .raw("\" value=\"")
        .text(value)
        .raw("\">");
}

fn select(h: &mut Html, key: &str, current: &str, options: &[(&str, &str)]) {
    h.raw("<select data-f=\"")
        .raw(key)
        .raw("\" data-testid=\"rule-")
        .raw(key)
        .raw("\">");
    for (v, label) in options {
        h.raw("<option value=\"").raw(v).raw("\"");
        if *v == current {
            h.raw(" selected");
        }
        h.raw(">").text(label).raw("</option>");
    }
    h.raw("</select>");
}

/// The add-rule form's controls for the kind the form holds, with `err` on its field.
pub fn form(h: &mut Html, i18n: I18n, f: &FormText, err: Option<&FieldError>) {
    let get = |k: &str| f.get(k).map_or("", String::as_str);
    let kind = get("kind");
    h.el("h3", "group-title", i18n.t(Key::AddRule));
    h.raw("<div class=\"fields four\">");
    field(h, i18n.t(Key::ColName), "name", err, |h| {
        input(h, "name", "", get("name"))
    });
    let kinds: Vec<(&str, &str)> = RULE_KINDS.iter().map(|k| (*k, *k)).collect();
    field(h, i18n.t(Key::RuleKind), "kind", err, |h| {
        select(h, "kind", kind, &kinds)
    });
    for (k, label, ph) in FIELDS.iter().filter(|x| kind_fields(kind).contains(&x.0)) {
        field(h, i18n.t(*label), k, err, |h| input(h, k, ph, get(k)));
    }
    let levels = [
        ("", i18n.t(Key::KindDefault)),
        ("info", i18n.t(Key::LevelInfo)),
        ("warning", i18n.t(Key::LevelWarning)),
        ("error", i18n.t(Key::LevelError)),
    ];
    field(h, i18n.t(Key::Level), "level", err, |h| {
        select(h, "level", get("level"), &levels)
    });
    let actions = [
        ("", i18n.t(Key::NoAction)),
        ("pause", i18n.t(Key::Pause)),
        ("stop", i18n.t(Key::Stop)),
    ];
    field(h, i18n.t(Key::Action), "action", err, |h| {
        select(h, "action", get("action"), &actions)
    });
    h.raw("</div>");
    // A refusal naming no field of the form (`notify[0]`, say) shows under it.
    if let Some(e) = err.filter(|e| !on_form(kind, &e.field)) {
        h.el("p", "small alert", &e.to_string());
    }
    h.raw("<button class=\"btn primary\" type=\"submit\" data-testid=\"rule-add\">")
        .text(i18n.t(Key::Add))
        .raw("</button>");
}
