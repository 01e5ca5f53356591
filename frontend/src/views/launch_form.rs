//! The Launch form as plain data: what the fields hold ([`Fields`], text as typed),
//! turning them into a [`JobSpec`] with an error per field ([`build`], the same words the
//! relay would use: [`Template::check_param`] and [`JobSpec::validate`]), and filling
//! them from a template's defaults, a job to re-run, or a run's config.

use crate::i18n::Key;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use stepwatch_events::jobs::{Entry, JobSpec, JobView, QueueInfo, Resources};
use stepwatch_events::template::{ParamKind, Template};

/// A template as `GET /api/templates` offers it, and the queue it is offered on.
#[derive(Debug, Clone, PartialEq)]
pub struct Offered {
    pub tpl: Template,
    pub queue: Option<String>,
}

impl Offered {
    /// Whether it may be launched on `queue`.
    pub fn fits(&self, queue: &str) -> bool {
        self.queue.as_deref().is_none_or(|q| q == queue)
    }
}

/// What the form's fields hold, as typed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fields {
    pub queue: String,
    pub template: String,
    /// A free-form argv instead of a template.
    pub free: bool,
    /// Each parameter's text (`"true"` / `"false"` for a checkbox).
    pub params: BTreeMap<String, String>,
    pub name: String,
    pub gpus: String,
    pub cpus: String,
    pub memory_mb: String,
    pub minutes: String,
    pub priority: String,
    pub retries: String,
    /// One argument per line.
    pub argv: String,
    pub cwd: String,
    /// `KEY=VALUE` lines.
    pub env: String,
    pub clone_of: Option<String>,
}

/// Why a field is refused: the relay's own words, or one of the form's.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Text(String),
    Key(Key),
    /// Above the queue's limit.
    AtMost(u64),
}

/// Refusals by field, named as the relay names them (after [`norm`]).
pub type Problems = BTreeMap<String, Msg>;

/// The form's name for a field the relay names: `entry.params.lr` → `params.lr`,
/// `entry.argv[2]` → `argv`, `entry.env.HOME` → `env`.
pub fn norm(field: &str) -> String {
    let f = field.strip_prefix("entry.").unwrap_or(field);
    for whole in ["argv", "env", "template"] {
        if f.starts_with(whole) {
            return whole.to_string();
        }
    }
    f.to_string()
}

/// Every field the form has a place for, besides `params.NAME`.
pub const PLACES: [&str; 12] = [
    "queue",
    "template",
    "argv",
    "cwd",
    "env",
    "resources.gpus",
    "resources.cpus",
    "resources.memory_mb",
    "resources.time_limit_s",
    "name",
    "priority",
    "max_retries",
];

/// Whether the form has a place for `field`; a refusal of another is shown above the
/// buttons.
pub fn has_place(field: &str) -> bool {
    PLACES.contains(&field) || field.starts_with("params.")
}

/// Writes what the user typed into the field `key` (a [`PLACES`] name, `params.NAME`
/// or `free`). Queue and template changes go through [`switch_queue`] and
/// [`switch_template`].
pub fn set_field(f: &mut Fields, key: &str, value: String) {
    let slot = match key {
        "free" => {
            f.free = value == "true";
            return;
        }
        "argv" => &mut f.argv,
        "cwd" => &mut f.cwd,
        "env" => &mut f.env,
        "resources.gpus" => &mut f.gpus,
        "resources.cpus" => &mut f.cpus,
        "resources.memory_mb" => &mut f.memory_mb,
        "resources.time_limit_s" => &mut f.minutes,
        "name" => &mut f.name,
        "priority" => &mut f.priority,
        "max_retries" => &mut f.retries,
        k => match k.strip_prefix("params.") {
            Some(p) => f.params.entry(p.to_string()).or_default(),
            None => return,
        },
    };
    *slot = value;
}

/// Switches to `next`'s template: its defaults, and its name where the job's name was
/// the old template's.
pub fn switch_template(f: &mut Fields, next: Option<&Offered>) {
    let new = next.map(|o| o.tpl.name.clone()).unwrap_or_default();
    if f.name.is_empty() || f.name == f.template {
        f.name.clone_from(&new);
    }
    f.params = next.map(|o| defaults(&o.tpl)).unwrap_or_default();
    f.template = new;
}

/// Switches to `queue`: a template offered only on another queue gives way to the first
/// offered here; a free-form entry stays only where `may_free_form`.
pub fn switch_queue(f: &mut Fields, queue: &str, offered: &[Offered], may_free_form: bool) {
    f.queue = queue.to_string();
    f.free &= may_free_form;
    if !offered
        .iter()
        .any(|o| o.tpl.name == f.template && o.fits(queue))
    {
        switch_template(f, offered.iter().find(|o| o.fits(queue)));
    }
}

/// A value as a field shows it: text bare, anything else as JSON.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A parameter's text as the JSON value it stands for; text that is not a number stays
/// text, so the template's check says what it should be.
pub fn param_value(kind: &ParamKind, text: &str) -> Value {
    let t = text.trim();
    let number = match kind {
        ParamKind::Int { .. } => t.parse::<i64>().ok().map(Value::from),
        ParamKind::Float { .. } => crate::model::parse_f64(t)
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        ParamKind::Bool => return Value::Bool(t == "true"),
        _ => return Value::String(text.to_string()),
    };
    number.unwrap_or_else(|| Value::String(text.to_string()))
}

/// The template's defaults as field text (an unset checkbox is `false`).
pub fn defaults(tpl: &Template) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for p in &tpl.params {
        let text = match (&p.default, &p.kind) {
            (Some(d), _) => value_text(d),
            (None, ParamKind::Bool) => "false".into(),
            (None, _) => continue,
        };
        m.insert(p.name.clone(), text);
    }
    m
}

/// Whole numbers at or under `limit`: `None` when empty.
fn whole(
    problems: &mut Problems,
    field: &str,
    text: &str,
    limit: Option<u64>,
    scale: u64,
) -> Option<u64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let Ok(n) = t.parse::<u64>() else {
        problems.insert(field.into(), Msg::Key(Key::WholeNumber));
        return None;
    };
    if let Some(l) = limit.filter(|l| n.saturating_mul(scale) > *l) {
        problems.insert(field.into(), Msg::AtMost(l / scale));
    }
    Some(n.saturating_mul(scale))
}

fn small<T: TryFrom<u64>>(problems: &mut Problems, field: &str, n: Option<u64>) -> Option<T> {
    let v = T::try_from(n?).ok();
    if v.is_none() {
        problems.insert(field.into(), Msg::Key(Key::WholeNumber));
    }
    v
}

fn resources(f: &Fields, limits: &Resources, problems: &mut Problems) -> Resources {
    let gpus = whole(
        problems,
        "resources.gpus",
        &f.gpus,
        limits.gpus.map(u64::from),
        1,
    );
    let cpus = whole(
        problems,
        "resources.cpus",
        &f.cpus,
        limits.cpus.map(u64::from),
        1,
    );
    Resources {
        gpus: small(problems, "resources.gpus", gpus),
        cpus: small(problems, "resources.cpus", cpus),
        memory_mb: whole(
            problems,
            "resources.memory_mb",
            &f.memory_mb,
            limits.memory_mb,
            1,
        ),
        nodes: None,
        time_limit_s: whole(
            problems,
            "resources.time_limit_s",
            &f.minutes,
            limits.time_limit_s,
            60,
        ),
    }
}

fn template_entry(f: &Fields, tpl: Option<&Template>, problems: &mut Problems) -> Entry {
    let mut params = Map::new();
    for p in tpl.map_or(&[][..], |t| &t.params) {
        let text = f.params.get(&p.name).map_or("", String::as_str);
        let field = format!("params.{}", p.name);
        if text.trim().is_empty() && p.kind != ParamKind::Bool {
            if p.is_required() {
                problems.insert(field, Msg::Text("is required".into()));
            }
            continue;
        }
        let value = param_value(&p.kind, text);
        match tpl.map(|t| t.check_param(&p.name, &value)) {
            Some(Ok(v)) => {
                params.insert(p.name.clone(), v);
            }
            Some(Err(e)) => {
                problems.insert(norm(&e.field), Msg::Text(e.message));
            }
            None => {}
        }
    }
    if tpl.is_none() {
        problems.insert("template".into(), Msg::Key(Key::PickTemplate));
    }
    Entry::Template {
        template: f.template.clone(),
        params,
    }
}

fn argv_entry(f: &Fields, problems: &mut Problems) -> Entry {
    let argv = f
        .argv
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let mut env = BTreeMap::new();
    for line in f.env.lines().filter(|l| !l.trim().is_empty()) {
        match line.split_once('=') {
            Some((k, v)) => {
                env.insert(k.trim().to_string(), v.to_string());
            }
            None => {
                problems.insert("env".into(), Msg::Key(Key::EnvLine));
            }
        }
    }
    let cwd = Some(f.cwd.trim().to_string()).filter(|c| !c.is_empty());
    Entry::Argv { argv, cwd, env }
}

/// The job the fields describe, or what is wrong with them, by field. `tpl` is the
/// chosen template, `queue` the chosen queue (its limits).
pub fn build(
    f: &Fields,
    tpl: Option<&Template>,
    queue: Option<&QueueInfo>,
) -> Result<JobSpec, Problems> {
    let mut problems = Problems::new();
    let entry = if f.free {
        argv_entry(f, &mut problems)
    } else {
        template_entry(f, tpl, &mut problems)
    };
    let limits = queue.map(|q| q.limits.clone()).unwrap_or_default();
    let resources = resources(f, &limits, &mut problems);
    let priority = match f.priority.trim() {
        "" => 0,
        t => t.parse().unwrap_or_else(|_| {
            problems.insert("priority".into(), Msg::Key(Key::WholeNumber));
            0
        }),
    };
    let max_retries = match f.retries.trim() {
        "" => 0,
        t => t.parse().unwrap_or_else(|_| {
            problems.insert("max_retries".into(), Msg::Key(Key::WholeNumber));
            0
        }),
    };
    if queue.is_none() {
        problems.insert("queue".into(), Msg::Key(Key::PickQueue));
    }
    let spec = JobSpec {
        name: f.name.clone(),
        queue: f.queue.clone(),
        entry,
        resources,
        extras: BTreeMap::new(),
        priority,
        max_retries,
        clone_of: f.clone_of.clone(),
    };
    if let Err(e) = spec.validate() {
        problems
            .entry(norm(&e.field))
            .or_insert(Msg::Text(e.message));
    }
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(problems)
    }
}

fn opt_text<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The fields of a new job on `queue` from `tpl`: its defaults, named after it.
pub fn fresh(queue: &str, tpl: Option<&Template>) -> Fields {
    Fields {
        queue: queue.to_string(),
        template: tpl.map(|t| t.name.clone()).unwrap_or_default(),
        params: tpl.map(defaults).unwrap_or_default(),
        name: tpl.map(|t| t.name.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// The fields of the job that launched `run`, to re-run it: its queue, template and the
/// typed values it ran with (or its argv), resources, priority and retries.
pub fn from_job(j: &JobView, run: &str) -> Option<Fields> {
    let spec = j.state.spec.as_ref()?;
    let r = &spec.resources;
    let mut f = Fields {
        queue: spec.queue.clone(),
        name: spec.name.clone(),
        gpus: opt_text(r.gpus),
        cpus: opt_text(r.cpus),
        memory_mb: opt_text(r.memory_mb),
        minutes: opt_text(r.time_limit_s.map(|s| s.div_ceil(60))),
        priority: spec.priority.to_string(),
        retries: spec.max_retries.to_string(),
        clone_of: Some(run.to_string()),
        ..Default::default()
    };
    match &spec.entry {
        Entry::Template { template, params } => {
            f.template = template.clone();
            let text = |(k, v): (&String, &Value)| (k.clone(), value_text(v));
            f.params = match &j.state.launch {
                Some(l) => crate::model::sort::map(l.values.iter().map(text)),
                None => crate::model::sort::map(params.iter().map(text)),
            };
        }
        Entry::Argv { argv, cwd, env } => {
            f.free = true;
            f.argv = argv.join("\n");
            f.cwd = cwd.clone().unwrap_or_default();
            f.env = env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n");
        }
    }
    Some(f)
}

/// The template a run started by hand is re-run with: `wanted` if offered, else the one
/// sharing the most parameter names with its config.
pub fn pick_for_config<'a>(
    offered: &'a [Offered],
    config: &Map<String, Value>,
    wanted: Option<&str>,
) -> Option<&'a Offered> {
    if let Some(o) = wanted.and_then(|w| offered.iter().find(|o| o.tpl.name == w)) {
        return Some(o);
    }
    let shared = |o: &Offered| {
        o.tpl
            .params
            .iter()
            .filter(|p| config.contains_key(&p.name))
            .count()
    };
    offered.iter().rev().max_by_key(|o| shared(o))
}

/// The fields to re-run a run started by hand with `tpl` on `queue`: the template's
/// defaults, replaced by the run's config where the names match.
pub fn from_config(
    config: &Map<String, Value>,
    name: &str,
    run: &str,
    queue: &str,
    tpl: &Template,
) -> Fields {
    let mut f = fresh(queue, Some(tpl));
    for p in &tpl.params {
        if let Some(v) = config.get(&p.name) {
            f.params.insert(p.name.clone(), value_text(v));
        }
    }
    if !name.is_empty() {
        f.name = name.to_string();
    }
    f.clone_of = Some(run.to_string());
    f
}

#[cfg(test)]
#[path = "launch_form_tests.rs"]
mod tests;
