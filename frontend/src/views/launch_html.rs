//! The Launch page's markup as HTML text, every value escaped ([`Html`]): the form
//! (queue, template, typed parameters or the free-form entry, resources, the job's
//! name, priority and retries; each control names its field in `data-f` and has a
//! `data-err` line) and the preview (the exact argv, cwd, env, resources, config diff).

use super::job::Html;
use super::launch_form::{self as lf, Fields, Offered};
use crate::i18n::{I18n, Key};
use stepwatch_events::jobs::{Preview, QueueInfo};
use stepwatch_events::template::{ParamKind, ParamSpec};

/// The queues and templates on offer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Choices {
    pub queues: Vec<QueueInfo>,
    pub templates: Vec<Offered>,
}

/// A labelled field: `input` writes the control; its help and error line follow.
fn field(h: &mut Html, label: &str, key: &str, help: &str, input: impl FnOnce(&mut Html)) {
    h.raw("<div class=\"field\"><label>")
        .text(label)
        .raw("</label>");
    input(h);
    if !help.is_empty() {
        h.el("div", "help muted", help);
    }
    h.raw("<div class=\"field-error\" data-testid=\"field-error\" data-err=\"")
        .text(key)
        .raw("\"></div></div>");
}

/// An `<input>` for field `key` holding `value`; `attrs` is markup written by this code.
fn input(h: &mut Html, key: &str, attrs: &str, value: &str) {
    h.raw("<input ")
        .raw(attrs)
        .raw(" data-f=\"")
        .text(key)
        .raw("\" data-testid=\"")
        .text(key)
        .raw("\" value=\"")
        .text(value)
        .raw("\">");
}

/// A `<select>` for field `key` of `(value, label, enabled)` options.
fn select(
    h: &mut Html,
    key: &str,
    current: &str,
    options: &[(String, String, bool)],
    disabled: bool,
) {
    h.raw("<select data-f=\"")
        .text(key)
        .raw("\" data-testid=\"")
        .text(key)
        .raw("\"");
    if disabled {
        h.raw(" disabled");
    }
    h.raw(">");
    if !options.iter().any(|(v, _, _)| v == current) {
        h.raw("<option value=\"\" selected>–</option>");
    }
    for (v, label, ok) in options {
        h.raw("<option value=\"").text(v).raw("\"");
        if v == current {
            h.raw(" selected");
        }
        if !ok {
            h.raw(" disabled");
        }
        h.raw(">").text(label).raw("</option>");
    }
    h.raw("</select>");
}

fn num_attrs(
    step: &str,
    min: Option<String>,
    max: Option<String>,
    placeholder: Option<String>,
) -> String {
    let mut a = format!("type=\"number\" step=\"{step}\"");
    for (k, v) in [("min", min), ("max", max), ("placeholder", placeholder)] {
        if let Some(v) = v {
            a.push_str(&format!(" {k}=\"{v}\""));
        }
    }
    a
}

fn param_html(h: &mut Html, i18n: I18n, p: &ParamSpec, f: &Fields) {
    let key = format!("params.{}", p.name);
    let value = f.params.get(&p.name).cloned().unwrap_or_default();
    let mut help: Vec<String> = p.help.iter().cloned().collect();
    if let Some(d) = &p.default {
        help.push(format!("{} {}", i18n.t(Key::DefaultIs), lf::value_text(d)));
    }
    let label = format!("{}{}", p.name, if p.is_required() { " *" } else { "" });
    field(h, &label, &key, &help.join(" · "), |h| match &p.kind {
        ParamKind::Int { min, max } => input(
            h,
            &key,
            &num_attrs(
                "1",
                min.map(|x| x.to_string()),
                max.map(|x| x.to_string()),
                None,
            ),
            &value,
        ),
        ParamKind::Float { min, max } => input(
            h,
            &key,
            &num_attrs(
                "any",
                min.map(|x| x.to_string()),
                max.map(|x| x.to_string()),
                None,
            ),
            &value,
        ),
        ParamKind::Bool => input(
            h,
            &key,
            if value == "true" {
                "type=\"checkbox\" checked"
            } else {
                "type=\"checkbox\""
            },
            "true",
        ),
        ParamKind::Choice { values: cs }
        | ParamKind::String {
            choices: Some(cs), ..
        } => {
            let opts: Vec<_> = cs.iter().map(|c| (c.clone(), c.clone(), true)).collect();
            select(h, &key, &value, &opts, false);
        }
        ParamKind::String { max_len, .. } | ParamKind::Path { max_len } => input(
            h,
            &key,
            &format!("type=\"text\" maxlength=\"{max_len}\""),
            &value,
        ),
    });
}

/// The queue and template choice, and the warnings that go with the queue.
fn choice_html(
    h: &mut Html,
    i18n: I18n,
    c: &Choices,
    f: &Fields,
    q: Option<&QueueInfo>,
    t: Option<&Offered>,
) {
    let queues: Vec<_> = c
        .queues
        .iter()
        .map(|q| {
            (
                q.name.clone(),
                format!("{} ({})", q.name, q.engine),
                q.may_submit,
            )
        })
        .collect();
    let about = q.map_or("", |q| q.description.as_str());
    field(h, i18n.t(Key::Queue), "queue", about, |h| {
        select(h, "queue", &f.queue, &queues, false)
    });
    if c.queues.is_empty() {
        h.raw("<p class=\"empty\" data-testid=\"no-queues\">")
            .text(i18n.t(Key::NoQueues))
            .raw("</p>");
    }
    if q.is_some_and(|q| !q.may_submit) {
        h.raw("<div class=\"banner alert\" data-testid=\"may-not-submit\">")
            .text(i18n.t(Key::MayNotSubmit))
            .raw("</div>");
    }
    let tpls: Vec<_> = c
        .templates
        .iter()
        .filter(|o| o.fits(&f.queue))
        .map(|o| (o.tpl.name.clone(), o.tpl.name.clone(), true))
        .collect();
    let about = t.map_or("", |o| o.tpl.description.as_str());
    field(h, i18n.t(Key::Template), "template", about, |h| {
        select(h, "template", &f.template, &tpls, f.free)
    });
    if q.is_some_and(|q| q.may_free_form) {
        h.raw("<label class=\"check\">");
        input(
            h,
            "free",
            if f.free {
                "type=\"checkbox\" checked"
            } else {
                "type=\"checkbox\""
            },
            "true",
        );
        h.raw(" ")
            .text(i18n.t(Key::FreeForm))
            .raw(" ")
            .el("span", "muted small", i18n.t(Key::FreeFormHint))
            .raw("</label>");
    }
}

/// The whole form: queue, template, its parameters or the free-form entry, resources,
/// the job's name, priority and retries.
pub fn form_html(
    i18n: I18n,
    c: &Choices,
    f: &Fields,
    q: Option<&QueueInfo>,
    t: Option<&Offered>,
) -> String {
    let mut h = Html::default();
    choice_html(&mut h, i18n, c, f, q, t);
    let group = |h: &mut Html, k: Key, class: &str| {
        h.el("h3", "group-title", i18n.t(k))
            .raw("<div class=\"fields")
            .raw(class)
            .raw("\">");
    };
    if f.free {
        group(&mut h, Key::FreeForm, "");
        field(
            &mut h,
            i18n.t(Key::Argv),
            "argv",
            i18n.t(Key::ArgvHint),
            |h| {
                h.raw("<textarea class=\"mono\" rows=\"5\" spellcheck=\"false\" data-f=\"argv\" data-testid=\"argv\">").text(&f.argv).raw("</textarea>");
            },
        );
        field(&mut h, i18n.t(Key::Cwd), "cwd", "", |h| {
            input(h, "cwd", "type=\"text\" class=\"mono\"", &f.cwd)
        });
        field(&mut h, i18n.t(Key::Env), "env", i18n.t(Key::EnvHint), |h| {
            h.raw("<textarea class=\"mono\" rows=\"3\" spellcheck=\"false\" data-f=\"env\" data-testid=\"env\">").text(&f.env).raw("</textarea>");
        });
    } else {
        group(&mut h, Key::Parameters, "");
        for p in t.iter().flat_map(|o| &o.tpl.params) {
            param_html(&mut h, i18n, p, f);
        }
    }
    h.raw("</div>");
    group(&mut h, Key::Resources, " four");
    let (lim, def) = q
        .map(|q| (q.limits.clone(), q.defaults.clone()))
        .unwrap_or_default();
    let rows = [
        (
            Key::Gpus,
            "resources.gpus",
            &f.gpus,
            lim.gpus.map(u64::from),
            def.gpus.map(u64::from),
        ),
        (
            Key::Cpus,
            "resources.cpus",
            &f.cpus,
            lim.cpus.map(u64::from),
            def.cpus.map(u64::from),
        ),
        (
            Key::MemoryMb,
            "resources.memory_mb",
            &f.memory_mb,
            lim.memory_mb,
            def.memory_mb,
        ),
        (
            Key::TimeLimitMin,
            "resources.time_limit_s",
            &f.minutes,
            lim.time_limit_s.map(|s| s / 60),
            def.time_limit_s.map(|s| s / 60),
        ),
    ];
    for (k, key, value, limit, default) in rows {
        let help = limit
            .map(|l| format!("{} {l}", i18n.t(Key::AtMost)))
            .unwrap_or_default();
        let attrs = num_attrs(
            "1",
            Some("0".into()),
            limit.map(|l| l.to_string()),
            default.map(|d| d.to_string()),
        );
        field(&mut h, i18n.t(k), key, &help, |h| {
            input(h, key, &attrs, value)
        });
    }
    h.raw("</div>");
    group(&mut h, Key::Job, " four");
    field(&mut h, i18n.t(Key::ColName), "name", "", |h| {
        input(h, "name", "type=\"text\"", &f.name)
    });
    field(
        &mut h,
        i18n.t(Key::Priority),
        "priority",
        i18n.t(Key::PriorityHint),
        |h| {
            input(
                h,
                "priority",
                &num_attrs("1", None, None, Some("0".into())),
                &f.priority,
            )
        },
    );
    field(&mut h, i18n.t(Key::MaxRetries), "max_retries", "", |h| {
        input(
            h,
            "max_retries",
            &num_attrs("1", Some("0".into()), Some("10".into()), Some("0".into())),
            &f.retries,
        )
    });
    h.raw("</div>");
    h.0
}

/// What would run: the exact argv, cwd, env, resources, the config diff against the
/// cloned run, and the relay's warnings.
pub fn preview_html(i18n: I18n, p: &Preview, clone_of: Option<&str>) -> String {
    let mut h = Html::default();
    h.el("h3", "group-title", i18n.t(Key::Argv))
        .raw("<ol class=\"argv\" data-testid=\"preview-argv\" data-argv=\"")
        .text(&serde_json::to_string(&p.argv).unwrap_or_default())
        .raw("\">");
    for a in &p.argv {
        h.raw("<li>").el("code", "", a).raw("</li>");
    }
    h.raw("</ol><table class=\"kv\">");
    let mut rows: Vec<(String, String)> = p
        .cwd
        .iter()
        .map(|c| (i18n.t(Key::Cwd).to_string(), c.clone()))
        .collect();
    rows.extend(p.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let res = serde_json::to_value(&p.resources).unwrap_or_default();
    let res: Vec<String> = res
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let res = if res.is_empty() {
        "–".to_string()
    } else {
        res.join(" · ")
    };
    rows.push((i18n.t(Key::Resources).into(), res));
    for (k, v) in rows {
        h.raw("<tr>").el("th", "", &k).el("td", "", &v).raw("</tr>");
    }
    h.raw("</table>");
    if clone_of.is_some() {
        h.el("h3", "group-title", i18n.t(Key::ConfigChanges));
        if p.diff.is_empty() {
            h.el("p", "muted", i18n.t(Key::NoConfigChanges));
        }
        h.raw("<table class=\"grid\" data-testid=\"preview-diff\">");
        for (k, old, new) in &p.diff {
            let shown = |v: &serde_json::Value| match v {
                serde_json::Value::Null => "–".to_string(),
                v => lf::value_text(v),
            };
            h.raw("<tr data-testid=\"diff-row\">")
                .el("td", "mono", k)
                .el("td", "old mono", &shown(old))
                .el("td", "", "→")
                .el("td", "new mono", &shown(new))
                .raw("</tr>");
        }
        h.raw("</table>");
    }
    if !p.warnings.is_empty() {
        h.el("div", "banner warn", &p.warnings.join(" · "));
    }
    h.0
}
