//! A small real SMTP server for the tests: threads over std TcpStream, rustls for
//! STARTTLS and implicit TLS; it records each session.

use super::base64_decode;
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// How the test server behaves.
#[derive(Clone, Default)]
pub(super) struct Opts {
    /// Offer STARTTLS with this config.
    pub(super) starttls: Option<Arc<ServerConfig>>,
    /// TLS from the first byte.
    pub(super) implicit: Option<Arc<ServerConfig>>,
    /// The AUTH mechanisms offered, e.g. "PLAIN LOGIN"; none when empty.
    pub(super) auth: &'static str,
    /// Answer AUTH with 535.
    pub(super) reject_auth: bool,
    pub(super) eightbit: bool,
    /// Answer `RCPT TO` for this address with 550.
    pub(super) reject_rcpt: &'static str,
}

/// What the server saw of one session.
#[derive(Debug, Default)]
pub(super) struct Session {
    pub(super) commands: Vec<String>,
    /// Whether each command came over TLS.
    pub(super) over_tls: Vec<bool>,
    pub(super) credentials: Option<(String, String)>,
    /// The DATA lines as sent (dot-stuffed), without the final ".".
    pub(super) data: Vec<String>,
}

impl Session {
    pub(super) fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}: ");
        self.data
            .iter()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }

    pub(super) fn body(&self) -> Vec<String> {
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
pub(super) fn server(opts: Opts) -> (u16, mpsc::Receiver<Session>) {
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
            "RCPT" if !o.reject_rcpt.is_empty() && line.contains(o.reject_rcpt) => {
                io.say("550 5.1.1 no such user\r\n");
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
