//! Launch templates: an entry point an admin defines (argv array, working directory,
//! environment) with typed parameters a user fills in. [`Template::check`] validates the
//! template itself; [`Template::render`] type-checks a user's values and substitutes them,
//! each into exactly one argv element, never through a shell. The relay uses it to refuse
//! a submission (400 naming the field), the dashboard to draw and check the launch form.
//!
//! Placeholder syntax: `{name}` in an argv element or an env value; `{{` and `}}` are
//! literal braces. `cwd` and env names may not hold placeholders.
//!
//! Rules for substituted values:
//! - Text (`string`, `path`, `choice`) may not hold control characters (NUL, newlines, …).
//! - Option injection: a free-form `string` value (one without `choices`) from the user that
//!   begins with `-` is refused when some argv element has no fixed text before its
//!   placeholder (`"{x}"`, `"{x}.txt"`, `"{y}{x}"`); after fixed text (`"--name={x}"`) it is
//!   allowed. `path` values never begin with `-`; `choice` values and defaults are the
//!   admin's and are trusted. Numbers are not text: `-3` is allowed where `min` allows it.
//! - An optional parameter (no default, not required) that is left out drops every argv
//!   element and env entry that names it, so `"--resume={ckpt}"` disappears when unset.

use crate::field_error::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Most parameters a template may declare.
pub const MAX_PARAMS: usize = 64;
/// Most argv elements a template may have.
pub const MAX_ARGV: usize = 256;
/// Longest rendered argv element or env value, in bytes.
pub const MAX_ARG_BYTES: usize = 8192;
/// Longest template or parameter name.
pub const MAX_NAME_LEN: usize = 64;

fn default_max_len() -> usize {
    256
}

/// A parameter's type, tagged on the wire: `{"type": "int", "min": 1}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ParamKind {
    /// A JSON integer (not a string of digits), within `min..=max` when given.
    Int {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<i64>,
    },
    /// A finite JSON number, within `min..=max` when given.
    Float {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    /// `true` or `false`.
    Bool,
    /// Text of at most `max_len` characters, one of `choices` when given.
    String {
        #[serde(default = "default_max_len")]
        max_len: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        choices: Option<Vec<String>>,
    },
    /// One of `values`.
    Choice { values: Vec<String> },
    /// A relative path: no leading `/`, no `..` component, no backslash, not starting with `-`.
    Path {
        #[serde(default = "default_max_len")]
        max_len: usize,
    },
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// An identifier: `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_NAME_LEN`] characters.
    pub name: String,
    pub kind: ParamKind,
    /// Used when the user gives no value; must fit `kind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Whether the user must give a value; when absent, true exactly if there is no default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// A line of help for the launch form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl ParamSpec {
    /// Whether a submission must name this parameter.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(self.default.is_none())
    }

    /// Type- and range-checks one value, returning it as kept in [`Rendered::values`]
    /// (a float as a JSON float). The error is the message, without the field.
    pub fn check_value(&self, v: &Value) -> Result<Value, String> {
        check_kind(&self.kind, v)
    }
}

/// A launch template, defined by an admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The program and its arguments; elements may hold `{param}` placeholders.
    pub argv: Vec<String>,
    /// Working directory; no placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment; values may hold placeholders, names may not.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub params: Vec<ParamSpec>,
}

/// A template with a user's values substituted: what an agent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Rendered {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// The typed values after defaults: the run's config.
    pub values: BTreeMap<String, Value>,
}

/// A piece of a placeholder string.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Param(String),
}

/// Splits `s` into literal text and `{param}` references.
fn parse(s: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '}' => return Err("a lone '}' (write '}}' for a literal brace)".into()),
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => {
                            return Err(
                                "a '{' is never closed (write '{{' for a literal brace)".into()
                            )
                        }
                    }
                }
                if !is_identifier(&name) {
                    return Err(format!("placeholder {{{name}}} is not a parameter name"));
                }
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(Piece::Param(name));
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

/// `[A-Za-z_][A-Za-z0-9_]*`, 1 to [`MAX_NAME_LEN`] characters.
pub fn is_identifier(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= MAX_NAME_LEN
}

fn check_text(s: &str, max_len: usize) -> Result<(), String> {
    if s.chars().any(char::is_control) {
        return Err("may not contain NUL, newlines or other control characters".into());
    }
    if s.chars().count() > max_len {
        return Err(format!("must be at most {max_len} characters"));
    }
    Ok(())
}

fn check_path(s: &str, max_len: usize) -> Result<(), String> {
    check_text(s, max_len)?;
    if s.is_empty() {
        return Err("must be a relative path, got an empty string".into());
    }
    if s.starts_with('/') || s.contains('\\') {
        return Err("must be a relative path with '/' separators (no leading '/', no '\\')".into());
    }
    if s.starts_with('-') {
        return Err("must not begin with '-'".into());
    }
    if s.split('/').any(|c| c == "..") {
        return Err("must not contain a '..' component".into());
    }
    Ok(())
}

fn range_text<T: std::fmt::Display>(min: Option<T>, max: Option<T>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!(" between {a} and {b}"),
        (Some(a), None) => format!(" of at least {a}"),
        (None, Some(b)) => format!(" of at most {b}"),
        (None, None) => String::new(),
    }
}

/// A float bound as people write it: `1e-6`, `0.5`, `1`.
struct Short(f64);

impl std::fmt::Display for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = self.0.abs();
        if a != 0.0 && !(1e-4..1e16).contains(&a) {
            write!(f, "{:e}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

fn check_kind(kind: &ParamKind, v: &Value) -> Result<Value, String> {
    match kind {
        ParamKind::Int { min, max } => {
            let want = || format!("must be an integer{}", range_text(*min, *max));
            let n = v.as_i64().ok_or_else(want)?;
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                return Err(want());
            }
            Ok(Value::from(n))
        }
        ParamKind::Float { min, max } => {
            let want = || {
                format!(
                    "must be a number{}",
                    range_text(min.map(Short), max.map(Short))
                )
            };
            let x = v.as_f64().filter(|x| x.is_finite()).ok_or_else(want)?;
            if min.is_some_and(|m| x < m) || max.is_some_and(|m| x > m) {
                return Err(want());
            }
            serde_json::Number::from_f64(x)
                .map(Value::Number)
                .ok_or_else(want)
        }
        ParamKind::Bool => match v {
            Value::Bool(_) => Ok(v.clone()),
            _ => Err("must be true or false".into()),
        },
        ParamKind::String { max_len, choices } => {
            let s = v.as_str().ok_or("must be a string")?;
            check_text(s, *max_len)?;
            if let Some(cs) = choices {
                if !cs.iter().any(|c| c == s) {
                    return Err(format!("must be one of {}", cs.join(", ")));
                }
            }
            Ok(v.clone())
        }
        ParamKind::Choice { values } => {
            let s = v.as_str().ok_or("must be a string")?;
            if !values.iter().any(|c| c == s) {
                return Err(format!("must be one of {}", values.join(", ")));
            }
            Ok(v.clone())
        }
        ParamKind::Path { max_len } => {
            let s = v
                .as_str()
                .ok_or("must be a string holding a relative path")?;
            check_path(s, *max_len)?;
            Ok(v.clone())
        }
    }
}

/// The text a typed value is substituted as.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Problems with a kind's own settings (min above max, no choices, non-finite bounds).
fn check_kind_spec(kind: &ParamKind) -> Result<(), String> {
    match kind {
        ParamKind::Int {
            min: Some(a),
            max: Some(b),
        } if a > b => Err("min is above max".into()),
        ParamKind::Float { min, max } => {
            if min.is_some_and(|x| !x.is_finite()) || max.is_some_and(|x| !x.is_finite()) {
                return Err("min and max must be finite".into());
            }
            match (min, max) {
                (Some(a), Some(b)) if a > b => Err("min is above max".into()),
                _ => Ok(()),
            }
        }
        ParamKind::Choice { values } if values.is_empty() => Err("values may not be empty".into()),
        ParamKind::String {
            choices: Some(cs), ..
        } if cs.is_empty() => Err("choices may not be empty (leave it out for free text)".into()),
        ParamKind::Choice { values: cs }
        | ParamKind::String {
            choices: Some(cs), ..
        } => cs
            .iter()
            .try_for_each(|c| check_text(c, MAX_ARG_BYTES))
            .map_err(|m| format!("a choice {m}")),
        _ => Ok(()),
    }
}

impl Template {
    /// Reads a template from JSON and checks it.
    pub fn from_json(text: &str) -> Result<Template, FieldError> {
        let t: Template =
            serde_json::from_str(text).map_err(|e| FieldError::new("template", e.to_string()))?;
        t.check()?;
        Ok(t)
    }

    /// The declared parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Validates the template itself: names, kinds, defaults and that every placeholder
    /// names a declared parameter.
    pub fn check(&self) -> Result<(), FieldError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME_LEN
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !name_ok {
            return Err(FieldError::new(
                "template.name",
                format!("must match [A-Za-z0-9_.-]{{1,{MAX_NAME_LEN}}}"),
            ));
        }
        self.check_params()?;
        if self.argv.is_empty() || self.argv.len() > MAX_ARGV {
            return Err(FieldError::new(
                "template.argv",
                format!("must hold 1 to {MAX_ARGV} elements"),
            ));
        }
        for (i, a) in self.argv.iter().enumerate() {
            self.check_placeholders(a, &format!("template.argv[{i}]"))?;
        }
        if let Some(first) = parse(&self.argv[0]).ok().and_then(|p| p.into_iter().next()) {
            if !matches!(first, Piece::Lit(_)) {
                return Err(FieldError::new(
                    "template.argv[0]",
                    "the program must be fixed text, not a placeholder",
                ));
            }
        }
        if let Some(cwd) = &self.cwd {
            let field = "template.cwd";
            let pieces = parse(cwd).map_err(|m| FieldError::new(field, m))?;
            if pieces.iter().any(|p| matches!(p, Piece::Param(_))) {
                return Err(FieldError::new(field, "may not contain placeholders"));
            }
            check_text(cwd, MAX_ARG_BYTES).map_err(|m| FieldError::new(field, m))?;
        }
        for (k, v) in &self.env {
            let field = format!("template.env.{k}");
            if !is_identifier(k) {
                return Err(FieldError::new(
                    field,
                    "names must match [A-Za-z_][A-Za-z0-9_]*",
                ));
            }
            self.check_placeholders(v, &field)?;
        }
        Ok(())
    }

    fn check_params(&self) -> Result<(), FieldError> {
        if self.params.len() > MAX_PARAMS {
            return Err(FieldError::new(
                "template.params",
                format!("at most {MAX_PARAMS} parameters"),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.params.iter().enumerate() {
            if !is_identifier(&p.name) {
                return Err(FieldError::new(
                    format!("template.params[{i}].name"),
                    format!(
                        "must be an identifier ([A-Za-z_][A-Za-z0-9_]*, at most {MAX_NAME_LEN})"
                    ),
                ));
            }
            let at = |what: &str| format!("template.params.{}.{what}", p.name);
            if !seen.insert(p.name.as_str()) {
                return Err(FieldError::new(at("name"), "is declared twice"));
            }
            check_kind_spec(&p.kind).map_err(|m| FieldError::new(at("kind"), m))?;
            if let Some(d) = &p.default {
                check_kind(&p.kind, d).map_err(|m| FieldError::new(at("default"), m))?;
                if p.required == Some(true) {
                    return Err(FieldError::new(
                        at("required"),
                        "a required parameter takes no default; drop one of them",
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_placeholders(&self, s: &str, field: &str) -> Result<(), FieldError> {
        for piece in parse(s).map_err(|m| FieldError::new(field, m))? {
            if let Piece::Param(n) = piece {
                if self.param(&n).is_none() {
                    return Err(FieldError::new(
                        field,
                        format!("placeholder {{{n}}} names no declared parameter"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Type-checks one value for the parameter `name` (for a form's as-you-type check).
    pub fn check_param(&self, name: &str, v: &Value) -> Result<Value, FieldError> {
        let field = format!("params.{name}");
        let spec = self.param(name).ok_or_else(|| {
            FieldError::new(
                &field,
                format!("is not a parameter of template {}", self.name),
            )
        })?;
        let v = spec
            .check_value(v)
            .map_err(|m| FieldError::new(&field, m))?;
        let free_text = matches!(spec.kind, ParamKind::String { choices: None, .. });
        if free_text && as_text(&v).starts_with('-') && self.starts_argument(name) {
            return Err(FieldError::new(
                field,
                "must not begin with '-' here (it would be read as an option)",
            ));
        }
        Ok(v)
    }

    /// Whether `{name}` has no fixed text before it in some argv element (`"{x}"`,
    /// `"{x}.txt"`, `"{y}{x}"`), so its value could begin the argument.
    fn starts_argument(&self, name: &str) -> bool {
        self.argv.iter().any(|a| {
            let pieces = parse(a).unwrap_or_default();
            let lead = pieces.iter().take_while(|p| matches!(p, Piece::Param(_)));
            lead.into_iter()
                .any(|p| *p == Piece::Param(name.to_string()))
        })
    }

    /// The typed values: user values checked, defaults filled in, required ones present.
    fn typed_values(
        &self,
        params: &Map<String, Value>,
    ) -> Result<BTreeMap<String, Value>, FieldError> {
        if let Some(k) = params.keys().find(|k| self.param(k).is_none()) {
            return Err(FieldError::new(
                format!("params.{k}"),
                format!("is not a parameter of template {}", self.name),
            ));
        }
        let mut values = BTreeMap::new();
        for p in &self.params {
            match (params.get(&p.name), &p.default) {
                (Some(v), _) => {
                    values.insert(p.name.clone(), self.check_param(&p.name, v)?);
                }
                (None, Some(d)) => {
                    values.insert(p.name.clone(), d.clone());
                }
                (None, None) if p.is_required() => {
                    return Err(FieldError::new(format!("params.{}", p.name), "is required"));
                }
                (None, None) => {}
            }
        }
        Ok(values)
    }

    /// Substitutes into one element. `None`: it names a parameter left out, so it is dropped.
    fn substitute(
        &self,
        s: &str,
        values: &BTreeMap<String, Value>,
    ) -> Result<Option<String>, FieldError> {
        let mut out = String::new();
        // parse cannot fail here: check() passed.
        for piece in parse(s).unwrap_or_default() {
            match piece {
                Piece::Lit(l) => out.push_str(&l),
                Piece::Param(n) => {
                    let Some(v) = values.get(&n) else {
                        return Ok(None);
                    };
                    out.push_str(&as_text(v));
                    if out.len() > MAX_ARG_BYTES {
                        return Err(FieldError::new(
                            format!("params.{n}"),
                            format!("makes an argument longer than {MAX_ARG_BYTES} bytes"),
                        ));
                    }
                }
            }
        }
        Ok(Some(out))
    }

    /// Checks the user's `params` and fills them in. Each value goes into the one argv
    /// element (or env value) its placeholder is in, as literal text: it is never split
    /// into several arguments nor read by a shell.
    pub fn render(&self, params: &Map<String, Value>) -> Result<Rendered, FieldError> {
        self.check()?;
        let values = self.typed_values(params)?;
        let mut argv = Vec::with_capacity(self.argv.len());
        for a in &self.argv {
            if let Some(s) = self.substitute(a, &values)? {
                argv.push(s);
            }
        }
        let mut env = BTreeMap::new();
        for (k, v) in &self.env {
            if let Some(s) = self.substitute(v, &values)? {
                env.insert(k.clone(), s);
            }
        }
        Ok(Rendered {
            argv,
            env,
            cwd: match &self.cwd {
                Some(c) => self.substitute(c, &values)?,
                None => None,
            },
            values,
        })
    }
}
