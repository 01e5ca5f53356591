//! A small SMTP client (RFC 5321) over `std::net::TcpStream`, with rustls for STARTTLS
//! (RFC 3207) or implicit TLS (RFC 8314), and `AUTH PLAIN` / `AUTH LOGIN` (RFC 4954).
//!
//! One [`SmtpTarget::send`] is one session: greeting, `EHLO`, `STARTTLS` and `EHLO` again,
//! `AUTH`, `MAIL FROM`, `RCPT TO` for each recipient, `DATA`, `QUIT`. All of it shares one
//! deadline: every read and write waits at most for what is left of the time limit.

use super::{message, Notice};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How the connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// Plain at first, then `STARTTLS` (required: a server that does not offer it is an error).
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// Never (loopback servers only).
    None,
}

/// An SMTP server and the message's envelope; holds the password.
pub(crate) struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub tls_mode: TlsMode,
    /// `None` exactly when `tls_mode` is [`TlsMode::None`].
    pub tls: Option<Arc<ClientConfig>>,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    pub from: String,
    pub to: Vec<String>,
    pub helo: String,
    /// The host is this machine: credentials may go unencrypted.
    pub loopback: bool,
}

impl SmtpTarget {
    /// `host:port`, as errors name the server (`[::1]:25` for IPv6).
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn tls_config(&self) -> Result<Arc<ClientConfig>, String> {
        self.tls
            .clone()
            .ok_or_else(|| "TLS is not set up for this channel".to_string())
    }

    /// One SMTP session delivering `n` to every recipient, within `timeout`.
    pub(super) fn send(&self, n: &Notice, timeout: Duration) -> Result<(), String> {
        let mut c = Conn::connect(&self.host, self.port, &self.addr(), timeout)?;
        if self.tls_mode == TlsMode::Implicit {
            c.start_tls(self.tls_config()?, &self.host)?;
        }
        let greeting = c.read_reply()?;
        expect(&greeting, &[220], "in greeting")?;
        let mut ext = c.ehlo(&self.helo)?;
        if self.tls_mode == TlsMode::StartTls {
            if !ext.has("STARTTLS") {
                return Err("the SMTP server does not offer STARTTLS".into());
            }
            c.command("STARTTLS", &[220], "after STARTTLS")?;
            c.start_tls(self.tls_config()?, &self.host)?;
            ext = c.ehlo(&self.helo)?;
        }
        if let Some((user, password)) = &self.credentials {
            if !c.encrypted() && !self.loopback {
                return Err(
                    "refusing to send SMTP credentials over an unencrypted connection".into(),
                );
            }
            c.auth(&ext, user, password)?;
        }
        let eightbit = ext.has("8BITMIME");
        let body = if eightbit { " BODY=8BITMIME" } else { "" };
        c.command(
            &format!("MAIL FROM:<{}>{body}", self.from),
            &[250],
            "after MAIL FROM",
        )?;
        for to in &self.to {
            let line = format!("RCPT TO:<{to}>");
            c.command(&line, &[250, 251], &format!("after {line}"))?;
        }
        c.command("DATA", &[354], "after DATA")?;
        let msg = message::build(n, &self.from, &self.to, SystemTime::now(), eightbit);
        c.write(&message::dot_stuff(&msg))?;
        let done = c.read_reply()?;
        expect(&done, &[250], "after the message")?;
        // The message is accepted; a server that hangs up without answering QUIT is fine.
        let _ = c.command("QUIT", &[221], "after QUIT");
        Ok(())
    }
}

/// One reply: its code and the text of each line.
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    /// The server's words, printable ASCII only and cut short: safe to show.
    fn text(&self) -> String {
        let joined = self.lines.join(" ");
        let clean: String = joined
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
            .take(200)
            .collect();
        clean.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

fn expect(r: &Reply, ok: &[u16], what: &str) -> Result<(), String> {
    if ok.contains(&r.code) {
        return Ok(());
    }
    let text = r.text();
    if text.is_empty() {
        Err(format!("SMTP {} {what}", r.code))
    } else {
        Err(format!("SMTP {} {what}: {text}", r.code))
    }
}

/// The extensions an `EHLO` reply lists: upper-case keyword and its parameters.
struct Extensions(Vec<(String, Vec<String>)>);

impl Extensions {
    fn has(&self, keyword: &str) -> bool {
        self.0.iter().any(|(k, _)| k == keyword)
    }

    fn auth_offers(&self, mech: &str) -> bool {
        self.0
            .iter()
            .any(|(k, p)| k == "AUTH" && p.iter().any(|m| m == mech))
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Between the two, during the upgrade.
    Gone,
}

/// A connection with its read buffer and deadline.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    deadline: Instant,
    timeout: Duration,
    addr: String,
}

const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 256;

impl Conn {
    fn connect(host: &str, port: u16, addr: &str, timeout: Duration) -> Result<Conn, String> {
        let deadline = Instant::now() + timeout;
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        let mut last: Option<io::Error> = None;
        for sa in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match TcpStream::connect_timeout(&sa, left) {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(Conn {
                        stream: Stream::Plain(tcp),
                        buf: Vec::new(),
                        deadline,
                        timeout,
                        addr: addr.to_string(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                format!("connection refused ({addr})")
            }
            Some(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                format!(
                    "timed out after {} s connecting to {addr}",
                    timeout.as_secs_f64()
                )
            }
            Some(e) => format!("cannot connect to {addr}: {e}"),
            None => format!("cannot connect to {addr}: no address"),
        })
    }

    fn encrypted(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    fn tcp(&self) -> Option<&TcpStream> {
        match &self.stream {
            Stream::Plain(t) => Some(t),
            Stream::Tls(s) => Some(&s.sock),
            Stream::Gone => None,
        }
    }

    /// Sets the socket's read and write limits to what is left of the time limit.
    fn arm(&self) -> Result<(), String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        let tcp = self.tcp().ok_or("the SMTP connection is closed")?;
        tcp.set_read_timeout(Some(left))
            .and_then(|()| tcp.set_write_timeout(Some(left)))
            .map_err(|e| format!("SMTP connection to {}: {e}", self.addr))
    }

    fn timed_out(&self) -> String {
        format!(
            "timed out after {} s talking to the SMTP server ({})",
            self.timeout.as_secs_f64(),
            self.addr
        )
    }

    fn io_error(&self, e: &io::Error) -> String {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => self.timed_out(),
            _ => format!("SMTP connection to {}: {e}", self.addr),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.arm()?;
        let r = match &mut self.stream {
            Stream::Plain(t) => t.write_all(bytes).and_then(|()| t.flush()),
            Stream::Tls(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Stream::Gone => return Err("the SMTP connection is closed".into()),
        };
        r.map_err(|e| self.io_error(&e))
    }

    fn read_more(&mut self) -> Result<(), String> {
        self.arm()?;
        let mut chunk = [0u8; 2048];
        let r = match &mut self.stream {
            Stream::Plain(t) => t.read(&mut chunk),
            Stream::Tls(s) => s.read(&mut chunk),
            Stream::Gone => return Err("the SMTP connection is closed".into()),
        };
        match r {
            Ok(0) => Err(format!(
                "the SMTP server ({}) closed the connection",
                self.addr
            )),
            Ok(k) => {
                self.buf.extend_from_slice(&chunk[..k]);
                Ok(())
            }
            Err(e) => Err(self.io_error(&e)),
        }
    }

    fn read_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let s = String::from_utf8_lossy(&line);
                return Ok(s.trim_end_matches(['\r', '\n']).to_string());
            }
            if self.buf.len() > MAX_REPLY_LINE {
                return Err("the SMTP server sent a line too long".into());
            }
            self.read_more()?;
        }
    }

    /// One reply, all its lines (`250-…` then `250 …`).
    fn read_reply(&mut self) -> Result<Reply, String> {
        let mut lines = Vec::new();
        let mut code = None;
        loop {
            let line = self.read_line()?;
            let b = line.as_bytes();
            let this: Option<u16> = line.get(..3).and_then(|c| c.parse().ok());
            let sep = b.get(3).copied();
            match (this, sep) {
                (Some(c), None | Some(b' ' | b'-')) if code.is_none_or(|k| k == c) => {
                    code = Some(c);
                    lines.push(line.get(4..).unwrap_or_default().to_string());
                    if sep != Some(b'-') {
                        return Ok(Reply { code: c, lines });
                    }
                }
                _ => return Err("the SMTP server's reply is not SMTP".into()),
            }
            if lines.len() > MAX_REPLY_LINES {
                return Err("the SMTP server's reply is too long".into());
            }
        }
    }

    fn command(&mut self, line: &str, ok: &[u16], what: &str) -> Result<Reply, String> {
        self.write(format!("{line}\r\n").as_bytes())?;
        let r = self.read_reply()?;
        expect(&r, ok, what)?;
        Ok(r)
    }

    fn ehlo(&mut self, helo: &str) -> Result<Extensions, String> {
        let r = self.command(&format!("EHLO {helo}"), &[250], "after EHLO")?;
        let ext = r
            .lines
            .iter()
            .skip(1)
            .filter_map(|l| {
                let mut words = l.split_whitespace().map(str::to_ascii_uppercase);
                words.next().map(|k| (k, words.collect()))
            })
            .collect();
        Ok(Extensions(ext))
    }

    /// `AUTH PLAIN` when offered, else `AUTH LOGIN`.
    fn auth(&mut self, ext: &Extensions, user: &str, password: &str) -> Result<(), String> {
        const FAILED: &str = "authentication failed";
        if ext.auth_offers("PLAIN") {
            let token = B64.encode(format!("\0{user}\0{password}"));
            self.command(&format!("AUTH PLAIN {token}"), &[235], FAILED)?;
        } else if ext.auth_offers("LOGIN") {
            self.command("AUTH LOGIN", &[334], FAILED)?;
            self.command(&B64.encode(user), &[334], FAILED)?;
            self.command(&B64.encode(password), &[235], FAILED)?;
        } else {
            return Err("the SMTP server offers neither AUTH PLAIN nor AUTH LOGIN".into());
        }
        Ok(())
    }

    /// Turns the connection into TLS and completes the handshake (server name `host`).
    fn start_tls(&mut self, config: Arc<ClientConfig>, host: &str) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err("the SMTP server sent data before the TLS handshake".into());
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("{host} is not a name TLS can check"))?;
        let conn = ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err("the SMTP connection is already encrypted".into());
        };
        let mut s = StreamOwned::new(conn, tcp);
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        s.sock
            .set_read_timeout(Some(left))
            .and_then(|()| s.sock.set_write_timeout(Some(left)))
            .map_err(|e| self.io_error(&e))?;
        while s.conn.is_handshaking() {
            if let Err(e) = s.conn.complete_io(&mut s.sock) {
                return Err(match e.kind() {
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => self.timed_out(),
                    _ => format!("TLS with the SMTP server ({}) failed: {e}", self.addr),
                });
            }
        }
        self.stream = Stream::Tls(Box::new(s));
        Ok(())
    }
}
