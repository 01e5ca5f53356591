//! PostgreSQL connection strings, read the way the PostgreSQL client reads them: URLs
//! (`postgres://user:password@host:port/db?key=value&…`) and `key=value` strings
//! (`host=db user=u password='a b'`). Used to take out the parameters the relay applies
//! itself (TLS) and to print a connection string without its password.

/// One connection string, split into what comes before its parameters and the
/// parameters themselves (decoded).
#[derive(Debug, PartialEq)]
pub(crate) struct ConnInfo {
    /// `postgres://user:password@host:port/db` for a URL; empty for `key=value`.
    base: String,
    params: Vec<(String, String)>,
    url: bool,
}

impl ConnInfo {
    pub(crate) fn parse(s: &str) -> Result<ConnInfo, String> {
        if let Some(rest) = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
        {
            // As the client does: the user info ends at the first `@`, and the
            // parameters start at the first `?` after it.
            let after_user = rest.find('@').map_or(0, |at| at + 1);
            let (base, query) = match rest[after_user..].find('?') {
                Some(q) => {
                    let cut = s.len() - rest.len() + after_user + q;
                    (&s[..cut], &s[cut + 1..])
                }
                None => (s, ""),
            };
            let mut params = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    format!(
                        "URL parameter `{}` has no value",
                        decode(pair).unwrap_or_default()
                    )
                })?;
                params.push((decode(k)?, decode(v)?));
            }
            Ok(ConnInfo {
                base: base.to_string(),
                params,
                url: true,
            })
        } else if s.contains('=') {
            Ok(ConnInfo {
                base: String::new(),
                params: key_values(s)?,
                url: false,
            })
        } else {
            Err(
                "not a PostgreSQL URL (postgres://user:password@host:port/database) nor \
                 key=value settings"
                    .into(),
            )
        }
    }

    /// Removes and returns the last value of `key` (later ones win, as in libpq).
    pub(crate) fn take(&mut self, key: &str) -> Option<String> {
        let mut found = None;
        self.params.retain(|(k, v)| {
            if k == key {
                found = Some(v.clone());
                false
            } else {
                true
            }
        });
        found
    }

    /// The keys of the parameters left.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(k, _)| k.as_str())
    }

    /// The connection string again, in its own form.
    pub(crate) fn render(&self) -> String {
        if self.url {
            let query: Vec<String> = self
                .params
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
            if query.is_empty() {
                self.base.clone()
            } else {
                format!("{}?{}", self.base, query.join("&"))
            }
        } else {
            let pairs: Vec<String> = self
                .params
                .iter()
                .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
                .collect();
            pairs.join(" ")
        }
    }
}

/// The connection string without its password (in the user info, or a `password`
/// parameter), for logs and messages. Never fails: what cannot be parsed is shown as
/// `<unreadable connection string>`.
pub fn redact(s: &str) -> String {
    let Ok(mut info) = ConnInfo::parse(s) else {
        // Shown as it is only when it cannot hold a password.
        return if s.contains('@') || s.contains("password") {
            "<unreadable connection string>".into()
        } else {
            s.to_string()
        };
    };
    let had_password = info.take("password").is_some();
    if info.url {
        if let Some(rest) = info.base.split_once("://").map(|(_, r)| r.to_string()) {
            if let Some(at) = rest.find('@') {
                let user = rest[..at].split(':').next().unwrap_or_default();
                let scheme = &info.base[..info.base.len() - rest.len()];
                info.base = format!("{scheme}{user}@{}", &rest[at + 1..]);
            }
        }
    }
    if had_password {
        info.params.push(("password".into(), "…".into()));
    }
    info.render()
}

/// Percent-decoding as the client does it: a `%` not followed by two hex digits stays
/// as it is; the result must be UTF-8.
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "a URL parameter is not UTF-8 once decoded".to_string())
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `key = value` pairs, values optionally single-quoted, `\` escaping the next
/// character, as libpq and the client read them.
fn key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("connection parameter `{key}` has no `=`"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(format!("connection parameter `{key}`: unclosed quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_where_the_client_splits_them() {
        // A raw `?` or `&` in the password is part of it, not the parameters.
        let mut c = ConnInfo::parse("postgres://u:pa?s&s@db:5432/sw?sslmode=require&a=b").unwrap();
        assert_eq!(c.take("sslmode").as_deref(), Some("require"));
        assert_eq!(c.render(), "postgres://u:pa?s&s@db:5432/sw?a=b");
        let mut c = ConnInfo::parse(
            "postgresql://db/sw?sslrootcert=%2Fetc%2Fca%20x.pem&sslmode=prefer&sslmode=verify-full",
        )
        .unwrap();
        assert_eq!(c.take("sslmode").as_deref(), Some("verify-full"));
        assert_eq!(c.take("sslrootcert").as_deref(), Some("/etc/ca x.pem"));
        assert_eq!(c.render(), "postgresql://db/sw");
        // Lenient decoding, as the client's: a stray `%` stays.
        let mut c = ConnInfo::parse("postgres://db/sw?password=50%off").unwrap();
        assert_eq!(c.take("password").as_deref(), Some("50%off"));
        assert!(ConnInfo::parse("postgres://db/sw?sslmode").is_err());
    }

    #[test]
    fn key_value_strings_take_spaces_quotes_and_escapes() {
        let mut c = ConnInfo::parse(
            r"host=db  sslmode = require password='it\'s' sslrootcert='/a b/c.pem'",
        )
        .unwrap();
        assert_eq!(c.take("sslmode").as_deref(), Some("require"));
        assert_eq!(c.take("sslrootcert").as_deref(), Some("/a b/c.pem"));
        assert_eq!(c.take("password").as_deref(), Some("it's"));
        assert_eq!(c.keys().collect::<Vec<_>>(), ["host"]);
        assert!(ConnInfo::parse("host=db sslrootcert='/x").is_err());
        assert!(ConnInfo::parse("host").is_err());
        assert!(ConnInfo::parse("mysql:/x")
            .unwrap_err()
            .contains("not a PostgreSQL URL"));
        let c = ConnInfo::parse("host=db password='a b'").unwrap();
        assert_eq!(c.render(), "host='db' password='a b'");
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://sw:s3cret@db.example:5432/stepwatch"),
            "postgres://sw@db.example:5432/stepwatch"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        let r = redact("postgres://u:a?b%zz@db/sw?sslmode=require");
        assert!(!r.contains("a?b") && !r.contains("%zz"), "{r}");
        let r = redact("postgres://u@db/sw?password=hunter2&sslmode=require");
        assert!(
            !r.contains("hunter2") && r.contains("sslmode=require"),
            "{r}"
        );
        let r = redact("host=db user=u password='hunter 2'");
        assert!(!r.contains("hunter"), "{r}");
        assert_eq!(
            redact("host=db password='x"),
            "<unreadable connection string>"
        );
        assert_eq!(redact("mysql:/x"), "mysql:/x");
    }
}
