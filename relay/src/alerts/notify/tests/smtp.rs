//! E-mail sends to a small real SMTP server on 127.0.0.1 (threads, std TcpStream, rustls
//! for STARTTLS and implicit TLS with a certificate made by the `openssl` program).

use super::{base64_decode, closed_port, notice};
use crate::alerts::notify::{Channel, NoticeState};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

/// How the test server behaves.
#[derive(Clone, Default)]
struct Opts {
    /// Offer STARTTLS with this config.
    starttls: Option<Arc<ServerConfig>>,
    /// TLS from the first byte.
    implicit: Option<Arc<ServerConfig>>,
    /// The AUTH mechanisms offered, e.g. "PLAIN LOGIN"; none when empty.
    auth: &'static str,
    /// Answer AUTH with 535.
    reject_auth: bool,
    eightbit: bool,
}

/// What the server saw of one session.
#[derive(Debug, Default)]
struct Session {
    commands: Vec<String>,
    /// Whether each command came over TLS.
    over_tls: Vec<bool>,
    credentials: Option<(String, String)>,
    /// The DATA lines as sent (dot-stuffed), without the final ".".
    data: Vec<String>,
}

impl Session {
    fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}: ");
        self.data
            .iter()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }

    fn body(&self) -> Vec<String> {
        self.data
            .iter()
            .skip_while(|l| !l.is_empty())
            .skip(1)
            .cloned()
            .collect()
    }
}

struct Io {
    plain: Option<TcpStream>,
    tls: Option<StreamOwned<ServerConnection, TcpStream>>,
}

impl Io {
    fn rw(&mut self) -> &mut dyn ReadWrite {
        match (&mut self.tls, &mut self.plain) {
            (Some(t), _) => t,
            (None, Some(p)) => p,
            (None, None) => unreachable!(),
        }
    }

    fn upgrade(&mut self, cfg: &Arc<ServerConfig>) {
        let tcp = self.plain.take().unwrap();
        let conn = ServerConnection::new(cfg.clone()).unwrap();
        self.tls = Some(StreamOwned::new(conn, tcp));
    }

    fn line(&mut self) -> Option<String> {
        let mut out = Vec::new();
        let mut b = [0u8];
        loop {
            match self.rw().read(&mut b) {
                Ok(1) if b[0] == b'\n' => break,
                Ok(1) => out.push(b[0]),
                _ => return None,
            }
        }
        assert_eq!(out.pop(), Some(b'\r'), "a line without CRLF");
        Some(String::from_utf8(out).unwrap())
    }

    fn say(&mut self, s: &str) {
        let rw = self.rw();
        let _ = rw.write_all(s.as_bytes()).and_then(|()| rw.flush());
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Starts the server; its port and the sessions it records.
fn server(opts: Opts) -> (u16, mpsc::Receiver<Session>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let opts = opts.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send(session(conn, &opts));
            });
        }
    });
    (port, rx)
}

fn session(conn: TcpStream, o: &Opts) -> Session {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut io = Io {
        plain: Some(conn),
        tls: None,
    };
    if let Some(cfg) = &o.implicit {
        io.upgrade(cfg);
    }
    let mut s = Session::default();
    io.say("220 test.local ESMTP ready\r\n");
    while let Some(line) = io.line() {
        s.commands.push(line.clone());
        s.over_tls.push(io.tls.is_some());
        let verb = line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                let mut r = String::from("250-test.local hello\r\n");
                if o.starttls.is_some() && io.tls.is_none() {
                    r.push_str("250-STARTTLS\r\n");
                }
                if !o.auth.is_empty() {
                    r.push_str(&format!("250-AUTH {}\r\n", o.auth));
                }
                if o.eightbit {
                    r.push_str("250-8BITMIME\r\n");
                }
                r.push_str("250 HELP\r\n");
                io.say(&r);
            }
            "STARTTLS" => {
                io.say("220 go ahead\r\n");
                io.upgrade(o.starttls.as_ref().unwrap());
            }
            "AUTH" => {
                let mut words = line.split(' ').skip(1);
                let creds = match words.next() {
                    Some("PLAIN") => {
                        let raw = base64_decode(words.next().unwrap());
                        let parts: Vec<String> = String::from_utf8(raw)
                            .unwrap()
                            .split('\0')
                            .map(str::to_string)
                            .collect();
                        assert_eq!(parts.len(), 3, "{parts:?}");
                        (parts[1].clone(), parts[2].clone())
                    }
                    Some("LOGIN") => {
                        io.say("334 VXNlcm5hbWU6\r\n");
                        let u = base64_decode(&io.line().unwrap());
                        io.say("334 UGFzc3dvcmQ6\r\n");
                        let p = base64_decode(&io.line().unwrap());
                        (String::from_utf8(u).unwrap(), String::from_utf8(p).unwrap())
                    }
                    m => panic!("mechanism {m:?}"),
                };
                s.credentials = Some(creds);
                io.say(if o.reject_auth {
                    "535 5.7.8 Authentication credentials invalid\r\n"
                } else {
                    "235 2.7.0 ok\r\n"
                });
            }
            "MAIL" | "RCPT" => io.say("250 ok\r\n"),
            "DATA" => {
                io.say("354 go on\r\n");
                while let Some(l) = io.line() {
                    if l == "." {
                        break;
                    }
                    s.data.push(l);
                }
                io.say("250 2.0.0 queued\r\n");
            }
            "QUIT" => {
                io.say("221 bye\r\n");
                break;
            }
            _ => io.say("500 what?\r\n"),
        }
    }
    s
}

/// A test CA and a server certificate for 127.0.0.1 and localhost, made once with openssl:
/// the CA file and the server's TLS config.
fn certs() -> &'static (PathBuf, Arc<ServerConfig>) {
    static CERTS: OnceLock<(PathBuf, Arc<ServerConfig>)> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("stepwatch-notify-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .output()
                .expect("the openssl program is needed for the TLS tests");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-new", "-days", "3", "-keyout", "ca.key"];
        ca.extend(ec);
        ca.extend(["-out", "ca.pem", "-subj", "/CN=Stepwatch notify test CA"]);
        ca.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&ca);
        let mut csr = vec!["req", "-new", "-keyout", "server.key"];
        csr.extend(ec);
        csr.extend(["-out", "server.csr", "-subj", "/CN=stepwatch-test-smtp"]);
        openssl(&csr);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ]);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("server.crt"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        (dir.join("ca.pem"), Arc::new(cfg))
    })
}

fn mail(port: u16, extra: Value) -> Channel {
    let mut v = json!({
        "kind": "email", "smtp": format!("127.0.0.1:{port}"), "tls": "none",
        "from": "stepwatch@lab.example", "to": ["oncall@lab.example", "me@lab.example"]
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    Channel::parse("mail", &v, "alerts.channels.mail").unwrap()
}

const T: Duration = Duration::from_secs(10);

#[test]
fn plain_session_with_auth_plain_and_dot_stuffing() {
    let (port, rx) = server(Opts {
        auth: "PLAIN LOGIN",
        eightbit: true,
        ..Opts::default()
    });
    let c = mail(
        port,
        json!({"username": "stepwatch", "password": "s3cret pw", "helo": "relay.lab"}),
    );
    c.send(&notice(), T).unwrap();
    let s = rx.recv_timeout(T).unwrap();
    assert_eq!(
        s.credentials,
        Some(("stepwatch".into(), "s3cret pw".into()))
    );
    let verbs: Vec<&str> = s
        .commands
        .iter()
        .map(|c| c.split([' ', ':']).next().unwrap())
        .collect();
    assert_eq!(
        verbs,
        ["EHLO", "AUTH", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
    );
    assert_eq!(s.commands[0], "EHLO relay.lab");
    assert_eq!(
        s.commands[2],
        "MAIL FROM:<stepwatch@lab.example> BODY=8BITMIME"
    );
    assert_eq!(s.commands[3], "RCPT TO:<oncall@lab.example>");
    assert_eq!(s.commands[4], "RCPT TO:<me@lab.example>");
    assert_eq!(s.header("From").as_deref(), Some("stepwatch@lab.example"));
    assert_eq!(
        s.header("To").as_deref(),
        Some("oncall@lab.example, me@lab.example")
    );
    let subject = s.header("Subject").unwrap();
    let b64 = subject
        .strip_prefix("=?utf-8?b?")
        .unwrap()
        .strip_suffix("?=")
        .unwrap();
    assert_eq!(
        String::from_utf8(base64_decode(b64)).unwrap(),
        "[stepwatch] error: loss is NaN — my-run"
    );
    let date = s.header("Date").unwrap();
    assert!(
        date.ends_with(" +0000") && date.len() == "Wed, 02 Dec 2026 07:10:27 +0000".len(),
        "{date}"
    );
    let id = s.header("Message-ID").unwrap();
    assert!(id.starts_with('<') && id.ends_with("@lab.example>"), "{id}");
    assert_eq!(s.header("MIME-Version").as_deref(), Some("1.0"));
    assert_eq!(
        s.header("Content-Type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        s.header("Content-Transfer-Encoding").as_deref(),
        Some("7bit")
    );
    let body = s.body();
    assert_eq!(body[0], "loss is NaN");
    // Lines starting with a dot go doubled on the wire.
    assert!(body.contains(&"..hidden line".to_string()), "{body:?}");
    assert!(body.contains(&"...two dots".to_string()), "{body:?}");
    for want in [
        "Run: my-run (r1)",
        "Step: 120",
        "Value: loss = NaN",
        "Action: pause",
        "Link: http://stepwatch.lab:8080/runs/r1",
        "Alert: r1:nan-loss:120",
    ] {
        assert!(body.iter().any(|l| l == want), "{want} not in {body:?}");
    }
}

#[test]
fn auth_login_and_base64_body_without_8bitmime() {
    let (port, rx) = server(Opts {
        auth: "LOGIN",
        ..Opts::default()
    });
    let c = mail(port, json!({"username": "u", "password": "p@ss"}));
    let mut n = notice();
    n.state = NoticeState::Resolved;
    n.text = "перезапуск — ok".into();
    c.send(&n, T).unwrap();
    let s = rx.recv_timeout(T).unwrap();
    assert_eq!(s.credentials, Some(("u".into(), "p@ss".into())));
    assert_eq!(s.commands[1], "AUTH LOGIN");
    assert_eq!(s.commands[2], "MAIL FROM:<stepwatch@lab.example>");
    assert_eq!(
        s.header("Content-Transfer-Encoding").as_deref(),
        Some("base64")
    );
    assert!(s.body().iter().all(|l| l.len() <= 76));
    let text = String::from_utf8(base64_decode(&s.body().concat())).unwrap();
    assert!(
        text.contains("перезапуск — ok\r\n") && text.contains("State: resolved"),
        "{text}"
    );
}

#[test]
fn rejected_credentials() {
    let (port, rx) = server(Opts {
        auth: "PLAIN",
        reject_auth: true,
        ..Opts::default()
    });
    let c = mail(port, json!({"username": "u", "password": "s3cret"}));
    let e = c.send(&notice(), T).unwrap_err();
    assert_eq!(
        e,
        "SMTP 535 authentication failed: 5.7.8 Authentication credentials invalid"
    );
    let s = rx.recv_timeout(T).unwrap();
    assert!(s.data.is_empty() && !s.commands.iter().any(|c| c.starts_with("MAIL")));
    // A server that offers no mechanism the client knows.
    let (port, _rx) = server(Opts {
        auth: "CRAM-MD5",
        ..Opts::default()
    });
    let e = mail(port, json!({"username": "u", "password": "s3cret"}))
        .send(&notice(), T)
        .unwrap_err();
    assert!(e.contains("neither AUTH PLAIN nor AUTH LOGIN"), "{e}");
}

#[test]
fn starttls_with_a_private_ca() {
    let (ca, cfg) = certs();
    let (port, rx) = server(Opts {
        starttls: Some(cfg.clone()),
        auth: "PLAIN",
        eightbit: true,
        ..Opts::default()
    });
    let ca = ca.to_str().unwrap();
    let c = mail(
        port,
        json!({"tls": "starttls", "ca_file": ca, "username": "u", "password": "s3cret"}),
    );
    c.send(&notice(), T).unwrap();
    let s = rx.recv_timeout(T).unwrap();
    assert!(s.commands[0].starts_with("EHLO "));
    assert_eq!(s.commands[1], "STARTTLS");
    assert_eq!(s.over_tls[..3], [false, false, true]);
    assert!(s.commands[2].starts_with("EHLO "));
    assert!(s.commands[3].starts_with("AUTH PLAIN") && s.over_tls[3]);
    assert_eq!(s.credentials, Some(("u".into(), "s3cret".into())));
    assert_eq!(s.body()[0], "loss is NaN");
    // Through localhost too (the certificate names both).
    let c = Channel::parse(
        "m",
        &json!({"kind": "email", "smtp": format!("localhost:{port}"), "ca_file": ca, "from": "a@b.c", "to": ["d@e.f"]}),
        "alerts.channels.m",
    )
    .unwrap();
    if c.send(&notice(), T).is_ok() {
        assert!(rx.recv_timeout(T).unwrap().over_tls.last() == Some(&true));
    }
}

#[test]
fn implicit_tls() {
    let (ca, cfg) = certs();
    let (port, rx) = server(Opts {
        implicit: Some(cfg.clone()),
        ..Opts::default()
    });
    let c = mail(port, json!({"tls": "tls", "ca_file": ca.to_str().unwrap()}));
    c.send(&notice(), T).unwrap();
    let s = rx.recv_timeout(T).unwrap();
    assert!(
        s.over_tls.iter().all(|t| *t) && s.commands.len() == 6,
        "{s:?}"
    );
}

#[test]
fn starttls_refusals() {
    // Not offered: nothing is sent in the clear.
    let (port, rx) = server(Opts {
        auth: "PLAIN",
        ..Opts::default()
    });
    let c = mail(
        port,
        json!({"tls": "starttls", "username": "u", "password": "s3cret"}),
    );
    assert_eq!(
        c.send(&notice(), T).unwrap_err(),
        "the SMTP server does not offer STARTTLS"
    );
    let s = rx.recv_timeout(T).unwrap();
    assert!(s.credentials.is_none() && s.commands.len() == 1, "{s:?}");
    // A certificate no trusted root signed.
    let (_, cfg) = certs();
    let (port, rx) = server(Opts {
        starttls: Some(cfg.clone()),
        ..Opts::default()
    });
    let e = mail(
        port,
        json!({"tls": "starttls", "username": "u", "password": "s3cret"}),
    )
    .send(&notice(), T)
    .unwrap_err();
    assert!(
        e.starts_with("TLS with the SMTP server (127.0.0.1:") && e.contains("certificate"),
        "{e}"
    );
    assert!(!e.contains("s3cret"));
    assert!(rx.recv_timeout(T).unwrap().credentials.is_none());
}

#[test]
fn refused_and_silent_servers() {
    let port = closed_port();
    let e = mail(port, json!({})).send(&notice(), T).unwrap_err();
    assert_eq!(e, format!("connection refused (127.0.0.1:{port})"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let t0 = Instant::now();
    let e = mail(port, json!({}))
        .send(&notice(), Duration::from_millis(500))
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(
        e.starts_with("timed out after 0.5 s") && e.contains(&format!("127.0.0.1:{port}")),
        "{e}"
    );
}
