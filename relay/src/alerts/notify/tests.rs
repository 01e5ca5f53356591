//! Notifier tests: config parsing and texts here; real HTTP and SMTP servers on
//! 127.0.0.1 in [`http`] and [`smtp`].

mod certs;
mod http;
mod smtp;
mod smtp_server;

use super::message::{dot_stuff, header_text, rfc5322_date};
use super::*;
use serde_json::json;

/// A fired NaN-loss notice.
pub(super) fn notice() -> Notice {
    Notice {
        state: NoticeState::Fired,
        alert_id: "r1:nan-loss:120".into(),
        run: "r1".into(),
        run_name: "my-run".into(),
        rule: "nan-loss".into(),
        kind: "non_finite".into(),
        level: "error".into(),
        title: "loss is NaN".into(),
        text: "loss became NaN at step 120\n.hidden line\n..two dots".into(),
        metric: Some("loss".into()),
        value: Some(f64::NAN),
        step: Some(120),
        action: Some("pause".into()),
        url: "http://stepwatch.lab:8080/runs/r1".into(),
        time: 1_796_195_427.5,
    }
}

fn parse(v: serde_json::Value) -> Result<Channel, FieldError> {
    Channel::parse("x", &v, "alerts.channels.x")
}

fn field_of(v: serde_json::Value) -> String {
    match parse(v) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => {
            assert!(!e.to_string().contains("s3cret"), "secret in {e}");
            e.field
        }
    }
}

#[test]
fn parses_each_kind_and_shows_no_secret() {
    let hook = parse(json!({
        "kind": "webhook",
        "url": "https://hooks.example.com/services/T000/s3cret?token=s3cret",
        "headers": {"Authorization": "Bearer s3cret"}
    }))
    .unwrap();
    assert_eq!(hook.kind, ChannelKind::Webhook);
    let slack = Channel::parse(
        "ops",
        &json!({"kind": "slack", "url": "https://hooks.slack.com/services/s3cret"}),
        "alerts.channels.ops",
    )
    .unwrap();
    assert_eq!(
        (slack.name.as_str(), slack.kind),
        ("ops", ChannelKind::Slack)
    );
    let mm = parse(json!({"kind": "mattermost", "url": "http://mm.lab/hooks/s3cret"})).unwrap();
    assert_eq!(mm.kind.as_str(), "mattermost");
    let mail = parse(json!({
        "kind": "email", "smtp": "smtp.example.com:587", "username": "sw",
        "password": "s3cret", "from": "sw@example.com", "to": ["a@example.com", "b@example.com"]
    }))
    .unwrap();
    for c in [&hook, &slack, &mm, &mail] {
        let shown = format!("{c:?} {c} {c:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("hooks."), "{shown}");
        assert!(
            shown.contains(c.kind.as_str()) && shown.contains(&c.name),
            "{shown}"
        );
    }
    assert_eq!(format!("{slack}"), "ops (slack)");
    fn send_sync<T: Send + Sync>(_: &T) {}
    send_sync(&mail);
}

#[test]
fn every_bad_field_is_named() {
    let at = |f: &str| format!("alerts.channels.x.{f}");
    let mail = |extra: serde_json::Value| {
        let mut m =
            json!({"kind": "email", "smtp": "127.0.0.1:25", "from": "a@b.c", "to": ["d@e.f"]});
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        m.as_object_mut().unwrap().retain(|_, v| !v.is_null());
        m
    };
    let cases = [
        (
            json!({"kind": "webhook", "url": "ftp://h/s3cret"}),
            at("url"),
        ),
        (
            json!({"kind": "webhook", "url": "file:///etc/s3cret"}),
            at("url"),
        ),
        (
            json!({"kind": "webhook", "url": "not a url s3cret"}),
            at("url"),
        ),
        (json!({"kind": "slack"}), at("url")),
        (
            json!({"kind": "slack", "url": "http://h/", "bogus": 1}),
            at("bogus"),
        ),
        (
            json!({"kind": "slack", "url": "http://h/", "headers": {}}),
            at("headers"),
        ),
        (
            json!({"kind": "webhook", "url": "http://h/", "headers": {"A B": "x"}}),
            at("headers.A B"),
        ),
        (
            json!({"kind": "webhook", "url": "http://h/", "headers": {"X": "a\r\nB: s3cret"}}),
            at("headers.X"),
        ),
        (
            json!({"kind": "webhook", "url": "http://h/", "url_env": "X"}),
            at("url_env"),
        ),
        (json!({"kind": "pager", "url": "http://h/"}), at("kind")),
        (json!({"url": "http://h/"}), at("kind")),
        (
            json!({"kind": "slack", "url_env": "STEPWATCH_NOTIFY_TEST_UNSET"}),
            at("url_env"),
        ),
        (mail(json!({"smtp": null})), at("smtp")),
        (mail(json!({"smtp": "no-port"})), at("smtp")),
        (mail(json!({"smtp": "host:0"})), at("smtp")),
        (mail(json!({"tls": "ssl"})), at("tls")),
        (
            mail(json!({"smtp": "smtp.example.com:25", "tls": "none"})),
            at("tls"),
        ),
        (mail(json!({"to": []})), at("to")),
        (mail(json!({"to": "d@e.f"})), at("to")),
        (mail(json!({"to": ["d@e.f", "bad address@x"]})), at("to[1]")),
        (mail(json!({"to": ["d@e.f", "a@b@c"]})), at("to[1]")),
        (
            mail(json!({"to": ["d@e.f", "a@b\r\nRCPT TO:<x@y>"]})),
            at("to[1]"),
        ),
        (mail(json!({"from": "nobody"})), at("from")),
        (mail(json!({"from": null})), at("from")),
        (mail(json!({"username": "u"})), at("password")),
        (mail(json!({"password": "s3cret"})), at("username")),
        (
            mail(json!({"username": "u", "password_env": "STEPWATCH_NOTIFY_TEST_UNSET"})),
            at("password_env"),
        ),
        (
            mail(json!({"ca_file": "/nonexistent/ca.pem"})),
            at("ca_file"),
        ),
        (mail(json!({"helo": "bad name"})), at("helo")),
        (
            mail(json!({"tls": "none", "ca_file": "/etc/hosts"})),
            at("ca_file"),
        ),
        (
            mail(json!({"tls": "starttls", "ca_file": "/etc/hosts"})),
            at("ca_file"),
        ),
        (
            json!({"kind": "webhook", "url": "http://h/", "headers": {"Content-Length": "1"}}),
            at("headers.Content-Length"),
        ),
        (mail(json!({"url": "http://h/"})), at("url")),
    ];
    for (v, want) in cases {
        assert_eq!(field_of(v.clone()), want, "{v}");
    }
    let bad_name = Channel::parse(
        "bad name",
        &json!({"kind": "slack", "url": "http://h/"}),
        "alerts.channels.bad name",
    );
    assert_eq!(bad_name.unwrap_err().field, "alerts.channels.bad name");
    assert_eq!(field_of(json!("slack")), "alerts.channels.x");
}

#[test]
fn env_variables_are_read_at_parse_time() {
    std::env::set_var(
        "STEPWATCH_NOTIFY_TEST_URL",
        "https://hooks.slack.com/services/s3cret",
    );
    std::env::set_var("STEPWATCH_NOTIFY_TEST_EMPTY", "");
    std::env::set_var("STEPWATCH_NOTIFY_TEST_FTP", "ftp://h/s3cret");
    std::env::set_var("STEPWATCH_NOTIFY_TEST_PW", "s3cret");
    let c = parse(json!({"kind": "slack", "url_env": "STEPWATCH_NOTIFY_TEST_URL"})).unwrap();
    assert_eq!(c.kind, ChannelKind::Slack);
    let empty = json!({"kind": "slack", "url_env": "STEPWATCH_NOTIFY_TEST_EMPTY"});
    assert_eq!(field_of(empty), "alerts.channels.x.url_env");
    let ftp = json!({"kind": "webhook", "url_env": "STEPWATCH_NOTIFY_TEST_FTP"});
    assert_eq!(field_of(ftp), "alerts.channels.x.url_env");
    let mail = parse(json!({
        "kind": "email", "smtp": "localhost:2525", "tls": "none", "username": "u",
        "password_env": "STEPWATCH_NOTIFY_TEST_PW", "from": "a@b.c", "to": ["d@e.f"]
    }))
    .unwrap();
    assert!(!format!("{mail:?}").contains("s3cret"));
}

#[test]
fn subject_and_one_line() {
    let mut n = notice();
    assert_eq!(subject(&n), "[stepwatch] error: loss is NaN — my-run");
    assert_eq!(
        one_line(&n),
        "[error] loss is NaN — <http://stepwatch.lab:8080/runs/r1|my-run> \
         · step 120 · loss = NaN · action: pause"
    );
    n.state = NoticeState::Resolved;
    n.run_name = String::new();
    n.value = Some(12.5);
    n.action = None;
    assert_eq!(subject(&n), "[stepwatch] resolved: loss is NaN — r1");
    assert!(
        one_line(&n).starts_with("[resolved] loss is NaN — <http://stepwatch.lab:8080/runs/r1|r1>")
    );
    assert!(one_line(&n).ends_with("· step 120 · loss = 12.5"));
    // A run name cannot mention everyone or forge a link, nor break the line.
    n.run_name = "<!channel> & <http://evil|x>".into();
    n.title = "two\nlines".into();
    let s = one_line(&n);
    assert!(!s.contains("<!channel>") && !s.contains('\n'), "{s}");
    assert!(
        s.contains("&lt;!channel&gt; &amp; &lt;http://evil¦x&gt;"),
        "{s}"
    );
    assert!(s.contains("two lines"), "{s}");
}

#[test]
fn message_pieces() {
    assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_eq!(
        rfc5322_date(1_796_195_427),
        "Wed, 02 Dec 2026 07:10:27 +0000"
    );
    assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    assert_eq!(header_text("plain ascii"), "plain ascii");
    let long = "loss is NaN — ".repeat(8);
    let enc = header_text(&long);
    let words: Vec<&str> = enc.split("\r\n ").collect();
    assert!(words.len() > 1);
    let mut back = Vec::new();
    for w in &words {
        assert!(w.len() <= 75, "{w}");
        let b64 = w
            .strip_prefix("=?utf-8?b?")
            .unwrap()
            .strip_suffix("?=")
            .unwrap();
        back.extend(base64_decode(b64));
    }
    assert_eq!(String::from_utf8(back).unwrap(), long);
    assert_eq!(
        dot_stuff("a\r\n.b\r\n..c\r\n"),
        b"a\r\n..b\r\n...c\r\n.\r\n"
    );
    assert_eq!(dot_stuff("a\nb"), b"a\r\nb\r\n.\r\n");
}

pub(super) fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .unwrap()
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
pub(super) fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
