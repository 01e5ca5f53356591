//! [`parse`]: a channel's config table, checked field by field.

use super::smtp::{SmtpTarget, TlsMode};
use super::webhook::HttpTarget;
use super::{tls, Channel, ChannelKind, Target};
use serde_json::{Map, Value};
use stepwatch_events::alerts::is_valid_name;
use stepwatch_events::FieldError;

const HTTP_FIELDS: &[&str] = &["kind", "url", "url_env"];
const WEBHOOK_FIELDS: &[&str] = &["kind", "url", "url_env", "headers"];
const EMAIL_FIELDS: &[&str] = &[
    "kind",
    "smtp",
    "tls",
    "username",
    "password",
    "password_env",
    "from",
    "to",
    "ca_file",
    "helo",
];

/// One channel table's fields, errors prefixed with `at`.
pub(super) struct Fields<'a> {
    obj: &'a Map<String, Value>,
    at: &'a str,
}

impl<'a> Fields<'a> {
    pub(super) fn err(&self, field: &str, msg: impl Into<String>) -> FieldError {
        FieldError::new(format!("{}.{field}", self.at), msg)
    }

    /// An optional string field; present and not a string is an error.
    pub(super) fn opt_str(&self, field: &str) -> Result<Option<&'a str>, FieldError> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(self.err(field, "must be a string")),
        }
    }

    pub(super) fn req_str(&self, field: &str) -> Result<&'a str, FieldError> {
        match self.opt_str(field)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(self.err(field, "required")),
        }
    }

    /// A secret given either in `field` or in the environment variable named by `{field}_env`
    /// (read now). Neither the value nor its variable's value goes into an error.
    pub(super) fn secret(&self, field: &str) -> Result<Option<String>, FieldError> {
        let env_field = format!("{field}_env");
        match (self.opt_str(field)?, self.opt_str(&env_field)?) {
            (Some(_), Some(_)) => {
                Err(self.err(&env_field, format!("give {field} or {env_field}, not both")))
            }
            (Some(""), None) => Err(self.err(field, "must not be empty")),
            (Some(v), None) => Ok(Some(v.to_string())),
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                Ok(_) => Err(self.err(
                    &env_field,
                    format!("the environment variable {var} is empty"),
                )),
                Err(std::env::VarError::NotPresent) => Err(self.err(
                    &env_field,
                    format!("the environment variable {var} is not set"),
                )),
                Err(std::env::VarError::NotUnicode(_)) => Err(self.err(
                    &env_field,
                    format!("the environment variable {var} is not UTF-8"),
                )),
            },
            (None, None) => Ok(None),
        }
    }
}

/// Reads channel `name` from `v`; see [`Channel::parse`].
pub(super) fn parse(name: &str, v: &Value, at: &str) -> Result<Channel, FieldError> {
    if !is_valid_name(name) {
        return Err(FieldError::new(
            at,
            "a channel name is 1 to 64 of A-Z a-z 0-9 _ . -",
        ));
    }
    let Some(obj) = v.as_object() else {
        return Err(FieldError::new(at, "must be a table (kind = …)"));
    };
    let f = Fields { obj, at };
    let kind_s = f.req_str("kind")?;
    let kind = ChannelKind::parse(kind_s)
        .ok_or_else(|| f.err("kind", "must be webhook, slack, mattermost or email"))?;
    let known = match kind {
        ChannelKind::Webhook => WEBHOOK_FIELDS,
        ChannelKind::Slack | ChannelKind::Mattermost => HTTP_FIELDS,
        ChannelKind::Email => EMAIL_FIELDS,
    };
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(f.err(
            k,
            format!(
                "unknown field for a {kind} channel (fields: {})",
                known.join(", ")
            ),
        ));
    }
    let target = match kind {
        ChannelKind::Email => Target::Email(Box::new(email(&f)?)),
        _ => Target::Http(http(&f, kind)?),
    };
    Ok(Channel {
        name: name.to_string(),
        kind,
        target,
    })
}

/// `url` / `url_env` and, for a webhook, `headers`.
fn http(f: &Fields<'_>, kind: ChannelKind) -> Result<HttpTarget, FieldError> {
    let from_env = f.opt_str("url_env")?.is_some();
    let field = if from_env { "url_env" } else { "url" };
    let url = f
        .secret("url")?
        .ok_or_else(|| f.err("url", "required (or url_env: an environment variable)"))?;
    let url = HttpTarget::check_url(&url).map_err(|m| f.err(field, m))?;
    let mut headers = Vec::new();
    if kind == ChannelKind::Webhook {
        match f.obj.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let at = format!("headers.{k}");
                    if !is_header_name(k) {
                        return Err(f.err(&at, "not an HTTP header name"));
                    }
                    if RESERVED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(k)) {
                        return Err(f.err(&at, "set by the relay itself"));
                    }
                    let Some(v) = v.as_str() else {
                        return Err(f.err(&at, "must be a string"));
                    };
                    if v.chars().any(|c| c.is_control() && c != '\t') {
                        return Err(f.err(&at, "must hold no control characters (CR, LF)"));
                    }
                    headers.push((k.clone(), v.to_string()));
                }
            }
            Some(_) => return Err(f.err("headers", "must be a table of strings")),
        }
    }
    HttpTarget::new(url, headers).map_err(|m| f.err(field, m))
}

/// Headers that frame the request: the relay sets them, a channel may not.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

/// RFC 9110's token characters.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The e-mail fields.
fn email(f: &Fields<'_>) -> Result<SmtpTarget, FieldError> {
    let smtp = f.req_str("smtp")?;
    let (host, port) = split_host_port(smtp).map_err(|m| f.err("smtp", m))?;
    let tls_mode = match f.opt_str("tls")? {
        None | Some("starttls") => TlsMode::StartTls,
        Some("tls") => TlsMode::Implicit,
        Some("none") => TlsMode::None,
        Some(_) => return Err(f.err("tls", "must be starttls, tls or none")),
    };
    let loopback = is_loopback(&host);
    if tls_mode == TlsMode::None && !loopback {
        return Err(f.err(
            "tls",
            "\"none\" is only allowed for a server on loopback (127.0.0.1, ::1, localhost)",
        ));
    }
    let username = f.opt_str("username")?.map(str::to_string);
    let password = f.secret("password")?;
    let credentials = match (username, password) {
        (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
        (Some(_), Some(_)) => return Err(f.err("username", "must not be empty")),
        (Some(_), None) => {
            return Err(f.err("password", "required with username (or password_env)"))
        }
        (None, Some(_)) => return Err(f.err("username", "required with a password")),
        (None, None) => None,
    };
    let from = f.req_str("from")?;
    check_address(from).map_err(|m| f.err("from", m))?;
    let to = recipients(f)?;
    let helo = match f.opt_str("helo")? {
        Some(h) if is_helo_name(h) => h.to_string(),
        Some(_) => return Err(f.err("helo", "must be a host name (A-Z a-z 0-9 . -)")),
        None => default_helo(),
    };
    let ca = f.opt_str("ca_file")?;
    let tls = match (tls_mode, ca) {
        (TlsMode::None, Some(_)) => {
            return Err(f.err("ca_file", "only used with tls = \"starttls\" or \"tls\""));
        }
        (TlsMode::None, None) => None,
        _ => Some(tls::client_config(ca).map_err(|m| f.err("ca_file", m))?),
    };
    Ok(SmtpTarget {
        host,
        port,
        tls_mode,
        tls,
        credentials,
        from: from.to_string(),
        to,
        helo,
        loopback,
    })
}

fn recipients(f: &Fields<'_>) -> Result<Vec<String>, FieldError> {
    let Some(Value::Array(items)) = f.obj.get("to") else {
        return Err(f.err("to", "required: a list of addresses"));
    };
    if items.is_empty() {
        return Err(f.err("to", "must name at least one address"));
    }
    let mut to = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("to[{i}]");
        let Some(s) = item.as_str() else {
            return Err(f.err(&at, "must be a string"));
        };
        check_address(s).map_err(|m| f.err(&at, m))?;
        to.push(s.to_string());
    }
    Ok(to)
}

/// An address as SMTP carries it: `local@domain`, one `@`, no space or control character.
pub(super) fn check_address(s: &str) -> Result<(), String> {
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return Err("an e-mail address has no spaces, line breaks or < >".into());
    }
    match s.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(())
        }
        _ => Err("must be an e-mail address: name@domain (one @)".into()),
    }
}

/// `host:port`, `[::1]:25`.
fn split_host_port(s: &str) -> Result<(String, u16), String> {
    const HINT: &str = "must be host:port, e.g. smtp.example.com:587";
    let (host, port) = s.rsplit_once(':').ok_or(HINT)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| HINT)?;
    let ip_literal = host.parse::<std::net::IpAddr>().is_ok();
    if port == 0 || host.is_empty() || !(ip_literal || is_helo_name(host)) {
        return Err(HINT.into());
    }
    Ok((host.to_string(), port))
}

/// `localhost`, `127.0.0.1` (any of 127/8) and `::1`.
pub(super) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_helo_name(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// This machine's host name when it is a usable one, else `stepwatch`.
fn default_helo() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|h| is_helo_name(h))
        .unwrap_or_else(|| "stepwatch".to_string())
}
