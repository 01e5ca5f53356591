//! The e-mail message of a notice (RFC 5322 headers, a plain-text UTF-8 body) and the
//! SMTP `DATA` framing (dot-stuffing, CRLF line ends).

use super::{fmt_value, subject, Notice, NoticeState};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest line SMTP allows, CRLF excluded (RFC 5321 §4.5.3.1.6).
const MAX_LINE: usize = 998;

/// The whole message, CRLF line ends, not yet dot-stuffed. The body goes as `8bit` when
/// the server takes it (`eightbit`: it offers 8BITMIME) and every line fits, else base64.
pub(super) fn build(
    n: &Notice,
    from: &str,
    to: &[String],
    now: SystemTime,
    eightbit: bool,
) -> String {
    let body = body(n);
    let raw_ok = eightbit || body.is_ascii();
    let fits = body.split("\r\n").all(|l| l.len() <= MAX_LINE);
    let (encoding, body) = if raw_ok && fits {
        (if body.is_ascii() { "7bit" } else { "8bit" }, body)
    } else {
        ("base64", wrap_base64(body.as_bytes()))
    };
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let domain = from.rsplit_once('@').map_or("stepwatch", |(_, d)| d);
    let headers = [
        format!("From: {from}"),
        format!("To: {}", address_list(to)),
        format!("Subject: {}", header_text(&subject(n))),
        format!("Date: {}", rfc5322_date(secs.as_secs())),
        format!(
            "Message-ID: <{}.{}.{:016x}@{}>",
            secs.as_secs(),
            secs.subsec_nanos(),
            rand::random::<u64>(),
            domain
        ),
        "MIME-Version: 1.0".to_string(),
        "Content-Type: text/plain; charset=utf-8".to_string(),
        format!("Content-Transfer-Encoding: {encoding}"),
        "Auto-Submitted: auto-generated".to_string(),
    ];
    let mut out = headers.join("\r\n");
    out.push_str("\r\n\r\n");
    out.push_str(&body);
    out.push_str("\r\n");
    out
}

/// `a@x, b@y`, folded onto continuation lines when long.
fn address_list(to: &[String]) -> String {
    let one = to.join(", ");
    if one.len() <= 900 {
        one
    } else {
        to.join(",\r\n ")
    }
}

/// The plain-text body, CRLF line ends.
fn body(n: &Notice) -> String {
    let mut lines: Vec<String> = vec![n.title.clone(), String::new()];
    if !n.text.trim().is_empty() && n.text.trim() != n.title.trim() {
        lines.push(n.text.clone());
        lines.push(String::new());
    }
    let run = if n.run_name.is_empty() || n.run_name == n.run {
        n.run.clone()
    } else {
        format!("{} ({})", n.run_name, n.run)
    };
    lines.push(format!("Run: {run}"));
    lines.push(format!("Rule: {} ({}, {})", n.rule, n.kind, n.level));
    let state = match n.state {
        NoticeState::Fired => "fired",
        NoticeState::Resolved => "resolved",
    };
    lines.push(format!("State: {state}"));
    if let Some(step) = n.step {
        lines.push(format!("Step: {step}"));
    }
    match (&n.metric, n.value) {
        (Some(m), Some(v)) => lines.push(format!("Value: {m} = {}", fmt_value(v))),
        (Some(m), None) => lines.push(format!("Metric: {m}")),
        (None, Some(v)) => lines.push(format!("Value: {}", fmt_value(v))),
        (None, None) => {}
    }
    if let Some(a) = &n.action {
        lines.push(format!("Action: {a}"));
    }
    lines.push(format!("Link: {}", n.url));
    lines.push(format!("Alert: {}", n.alert_id));
    // Any line break inside a field becomes CRLF; a lone CR goes.
    lines
        .join("\n")
        .replace('\r', "")
        .split('\n')
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Base64 in lines of 76 characters.
fn wrap_base64(bytes: &[u8]) -> String {
    let all = B64.encode(bytes);
    let lines: Vec<&str> = all
        .as_bytes()
        .chunks(76)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    lines.join("\r\n")
}

/// A header's text: as is when plain ASCII and short, else RFC 2047 encoded words
/// (`=?utf-8?b?…?=`, each under 76 characters, folded onto continuation lines).
pub(super) fn header_text(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    if s.is_ascii() && s.len() <= 900 {
        return s;
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in s.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?utf-8?b?{}?=", B64.encode(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?utf-8?b?{}?=", B64.encode(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

/// `Wed, 02 Dec 2026 07:10:27 +0000` for unix seconds `t`.
pub(super) fn rfc5322_date(t: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = t / 86_400;
    let secs = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Year, month (1–12) and day of the month of a day count since 1970-01-01
/// (H. Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The `DATA` payload: a line starting with `.` gets another `.`, every line ends in
/// CRLF, and the terminating `.` line follows.
pub(super) fn dot_stuff(msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 16);
    for line in msg.replace('\r', "").split('\n') {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // `msg` ends with CRLF, so the split's last piece is empty: drop its CRLF.
    if msg.ends_with('\n') {
        out.truncate(out.len() - 2);
    }
    out.extend_from_slice(b".\r\n");
    out
}
