//! An SMTP sink: Python's `aiosmtpd` (in the venv) on a free loopback port, run by
//! `tests/smtp-sink/sink.py`, with STARTTLS (a [`TestCerts`] certificate for
//! `127.0.0.1` / `localhost`) and AUTH PLAIN / LOGIN required over TLS; each message it
//! accepts is one JSON line the harness reads back.

use crate::certs::TestCerts;
use crate::python::python;
use crate::relay::{free_port, repo, wait_until, TempDir};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running SMTP sink; dropping it kills the process.
pub struct SmtpSink {
    pub port: u16,
    /// The login it accepts.
    pub username: String,
    /// The password it accepts.
    pub password: String,
    /// Its certificate and the authority that signed it (`certs.ca` is what a client trusts).
    pub certs: TestCerts,
    out: PathBuf,
    child: Child,
    _dir: TempDir,
}

impl SmtpSink {
    /// Starts a sink accepting `username` / `password`; waits until it listens.
    pub fn start(username: &str, password: &str) -> SmtpSink {
        let dir = TempDir::new("smtp");
        let certs = TestCerts::make(&dir.0.join("certs"), "IP:127.0.0.1,DNS:localhost");
        let port = free_port();
        let out = dir.0.join("messages.jsonl");
        let ready = dir.0.join("ready");
        let child = Command::new(python())
            .arg(repo().join("tests/smtp-sink/sink.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key)
            .arg("--out")
            .arg(&out)
            .args(["--user", username, "--password", password, "--ready"])
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect(
                "cannot start the SMTP sink (python with aiosmtpd: cargo xtask test installs it)",
            );
        let mut sink = SmtpSink {
            port,
            username: username.to_string(),
            password: password.to_string(),
            certs,
            out,
            child,
            _dir: dir,
        };
        wait_until("the SMTP sink to listen", Duration::from_secs(20), || {
            if let Ok(Some(status)) = sink.child.try_wait() {
                panic!("the SMTP sink exited at start ({status}): is aiosmtpd installed?");
            }
            ready.exists().then_some(())
        });
        sink
    }

    /// `host:port` for the relay's `smtp` field.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every line written so far: messages (`mail_from`, `rcpt_tos`, `data`, `login`,
    /// `tls`) and refused logins (`auth_failed`).
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The messages accepted so far.
    pub fn messages(&self) -> Vec<Value> {
        let mut v = self.records();
        v.retain(|r| r.get("data").is_some());
        v
    }

    /// Waits until at least `n` messages arrived (or panics after `timeout`).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "SMTP sink: {} of {n} messages within {timeout:?}; records {:?}",
                got.len(),
                self.records()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The `Subject:` header of a message's `data`, unfolded and with its RFC 2047 encoded
/// words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`) decoded.
pub fn mail_subject(message: &Value) -> Option<String> {
    raw_subject(message).map(|s| decode_words(&s))
}

fn raw_subject(message: &Value) -> Option<String> {
    let data = message["data"].as_str()?;
    let mut lines = data.split("\r\n").flat_map(|l| l.split('\n'));
    let mut subject: Option<String> = None;
    for l in lines.by_ref() {
        if l.is_empty() {
            break;
        }
        match &mut subject {
            Some(s) if l.starts_with([' ', '\t']) => s.push_str(l),
            Some(_) => break,
            None => {
                if l.len() > 8 && l[..8].eq_ignore_ascii_case("subject:") {
                    subject = Some(l[8..].trim().to_string());
                }
            }
        }
    }
    subject
}

/// Decodes RFC 2047 encoded words; whitespace between two of them is dropped.
pub fn decode_words(s: &str) -> String {
    let mut out = String::new();
    let mut last_encoded = false;
    let mut pending_space = String::new();
    for token in s.split_inclusive([' ', '\t']) {
        let word = token.trim_end_matches([' ', '\t']);
        let space = &token[word.len()..];
        match decode_word(word) {
            Some(text) => {
                if !last_encoded {
                    out.push_str(&pending_space);
                }
                out.push_str(&text);
                last_encoded = true;
            }
            None => {
                out.push_str(&pending_space);
                out.push_str(word);
                last_encoded = false;
            }
        }
        pending_space = space.to_string();
    }
    out.push_str(&pending_space);
    out
}

fn decode_word(w: &str) -> Option<String> {
    use base64::Engine;
    let inner = w.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut parts = inner.splitn(3, '?');
    let (_charset, enc, text) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = match enc {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "q" | "Q" => {
            let mut b = Vec::new();
            let raw = text.as_bytes();
            let mut i = 0;
            while i < raw.len() {
                match raw[i] {
                    b'_' => b.push(b' '),
                    b'=' => {
                        let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
                        b.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 2;
                    }
                    c => b.push(c),
                }
                i += 1;
            }
            b
        }
        _ => return None,
    };
    String::from_utf8(bytes).ok()
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_encoded_words_and_unfolds_the_subject() {
        let m = serde_json::json!({"data":
            "From: a@x\r\nSubject: =?utf-8?b?W3N0ZXB3YXRjaF0gZXJyb3I6IOKAlA==?=\r\n =?utf-8?q?_run=5F1?= ok\r\n\r\nbody"});
        assert_eq!(mail_subject(&m).unwrap(), "[stepwatch] error: — run_1 ok");
        assert_eq!(decode_words("plain words"), "plain words");
    }

    #[test]
    fn the_sink_takes_mail_only_after_starttls_and_auth() {
        let sink = SmtpSink::start("u", "pw");
        let script = format!(
            r#"
import smtplib, ssl
s = smtplib.SMTP("127.0.0.1", {port})
s.ehlo()
assert not s.has_extn("auth"), "AUTH offered before TLS"
s.starttls(context=ssl.create_default_context(cafile={ca:?}))
s.ehlo()
try:
    s.login("u", "wrong")
    raise SystemExit("a wrong password was taken")
except smtplib.SMTPAuthenticationError:
    pass
s.login("u", "pw")
s.sendmail("a@example.com", ["b@example.com"], "Subject: hi\r\n\r\nbody")
s.quit()
"#,
            port = sink.port,
            ca = sink.certs.ca.display().to_string()
        );
        let st = Command::new(python())
            .arg("-c")
            .arg(script)
            .status()
            .unwrap();
        assert!(st.success());
        let m = sink.wait_for(1, Duration::from_secs(10));
        assert_eq!(
            (&m[0]["login"], &m[0]["tls"]),
            (&serde_json::json!("u"), &serde_json::json!(true))
        );
        assert_eq!(m[0]["rcpt_tos"], serde_json::json!(["b@example.com"]));
        assert_eq!(mail_subject(&m[0]).as_deref(), Some("hi"));
        assert!(sink.records().iter().any(|r| r["auth_failed"] == "u"));
    }
}
