//! The relay serves the dashboard files that are on disk now (issue 13, item 3): a real
//! relay process over a dist directory this test writes and rebuilds, requests with and
//! without `Accept-Encoding: br` (brotli decoded here). After a rebuild both encodings
//! give the new files at once, the old hashed names answer 404 in plain text (never the
//! SPA page), routes still get index.html, new files are served, revalidation works, and
//! a `trunk serve` dev build is reported in the relay's log and served without its
//! autoreload script.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;
use stepwatch_e2e::{wait_until, Relay, TempDir};

const WAIT: Duration = Duration::from_secs(60);

// Names as `trunk build --release` makes them: stem, dash, content hash.
const CSS_A: &str = "style-1a2b3c4d5e6f7a8b.css";
const JS_A: &str = "stepwatch-frontend-0a1b2c3d4e5f6071.js";
const CSS_B: &str = "style-9f8e7d6c5b4a3921.css";
const JS_B: &str = "stepwatch-frontend-7e6d5c4b3a291807.js";

/// One response, its body decoded.
struct Got {
    status: u16,
    encoding: Option<String>,
    content_type: String,
    etag: Option<String>,
    cache_control: Option<String>,
    body: String,
}

fn get(base: &str, path: &str, br: bool, headers: &[(&str, &str)]) -> Got {
    let mut req = ureq::get(&format!("{base}{path}"));
    if br {
        req = req.set("Accept-Encoding", "br");
    }
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let r = match req.call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let header = |name: &str| r.header(name).map(String::from);
    let (status, encoding, etag) = (r.status(), header("Content-Encoding"), header("ETag"));
    let content_type = header("Content-Type").unwrap_or_default();
    let cache_control = header("Cache-Control");
    let mut raw = Vec::new();
    r.into_reader().read_to_end(&mut raw).unwrap();
    let body = match encoding.as_deref() {
        None => raw,
        Some("br") => {
            let mut out = Vec::new();
            brotli::Decompressor::new(&raw[..], 4096)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some(other) => panic!("GET {path} (br: {br}): Content-Encoding {other}"),
    };
    Got {
        status,
        encoding,
        content_type,
        etag,
        cache_control,
        body: String::from_utf8(body).unwrap(),
    }
}

/// `path` under both encodings: the same status and body, which must equal `want`;
/// returns the brotli request's answer.
fn both(base: &str, path: &str, want: &str) -> Got {
    let plain = get(base, path, false, &[]);
    let br = get(base, path, true, &[]);
    assert_eq!(plain.encoding, None, "GET {path} plain");
    for g in [&plain, &br] {
        assert_eq!(g.status, 200, "GET {path}: {}", g.body);
        assert!(
            g.body == want,
            "GET {path} ({:?}): a body other than the file on disk:\n{}",
            g.encoding,
            g.body
        );
    }
    assert_eq!(
        plain.etag, br.etag,
        "GET {path}: encodings disagree on the ETag"
    );
    br
}

/// Waits until `path` is served brotli-compressed; every answer meanwhile must be `want`.
fn wait_for_brotli(base: &str, path: &str, want: &str) -> Got {
    wait_until(&format!("a brotli copy of {path}"), WAIT, || {
        let g = both(base, path, want);
        (g.encoding.as_deref() == Some("br")).then_some(g)
    })
}

fn assert_not_found(base: &str, path: &str) {
    for br in [false, true] {
        let g = get(base, path, br, &[]);
        assert_eq!(g.status, 404, "GET {path} (br: {br}): {}", g.body);
        assert!(
            g.content_type.starts_with("text/plain"),
            "GET {path}: {}",
            g.content_type
        );
        assert!(
            !g.body.contains('<'),
            "GET {path}: an HTML body for a missing file: {}",
            g.body
        );
    }
}

fn index(css: &str, js: &str, extra: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Stepwatch</title>\
         <link rel=\"stylesheet\" href=\"./{css}\" integrity=\"sha384-x\">\
         <link rel=\"modulepreload\" href=\"./{js}\"></head>\
         <body><script type=\"module\">import init from './{js}';await init();</script>{extra}</body></html>"
    )
}

fn css(version: &str) -> String {
    format!(".runs-{version} {{ color: #123456; padding: 4px 8px; }}\n").repeat(400)
}

fn write(dist: &Path, name: &str, content: &str) {
    std::fs::write(dist.join(name), content).unwrap();
}

/// A raw request, so the client cannot normalise `..` away: (status line, whole answer).
fn raw_get(relay: &Relay, target: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.lines().next().unwrap_or_default().to_string();
    (status, answer)
}

#[test]
fn a_rebuilt_dist_is_served_fresh_under_every_encoding_and_assets_never_get_the_spa_page() {
    let dir = TempDir::new("dash-files");
    let dist = dir.0.join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dir.0.join("secret.txt"), "top-secret").unwrap();
    let index_a = index(CSS_A, JS_A, "");
    let (css_a, js_a) = (css("a"), "export default function init() {}\n".repeat(300));
    write(&dist, "index.html", &index_a);
    write(&dist, CSS_A, &css_a);
    write(&dist, JS_A, &js_a);
    write(&dist, "stepwatch-config.json", "{\"relay\": null}\n");
    let relay = Relay::start(&dir.0.join("data"), &["--dist", dist.to_str().unwrap()]);

    // The first build: brotli copies are made at start, in a child process.
    let first = wait_for_brotli(&relay.url, "/", &index_a);
    wait_for_brotli(&relay.url, &format!("/{CSS_A}"), &css_a);
    // index.html is revalidated on every load; hashed names are cached for good.
    assert_eq!(first.cache_control.as_deref(), Some("no-cache"));
    let etag_a = first.etag.clone().expect("index.html has an ETag");
    for br in [false, true] {
        let g = get(&relay.url, "/", br, &[("If-None-Match", &etag_a)]);
        assert_eq!(g.status, 304, "unchanged index.html (br: {br})");
        assert!(g.body.is_empty());
    }
    let css_answer = get(&relay.url, &format!("/{CSS_A}"), true, &[]);
    assert_eq!(
        css_answer.cache_control.as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    assert!(css_answer.content_type.starts_with("text/css"));
    let config = get(&relay.url, "/stepwatch-config.json", false, &[]);
    assert_eq!(config.cache_control.as_deref(), Some("no-cache"));

    // A rebuild, as trunk does it: new hashed names, old ones gone, a new index.html
    // (written in place here, with the same length, the hardest case to notice).
    let index_b = index(CSS_B, JS_B, "");
    assert_eq!(index_b.len(), index_a.len());
    let (css_b, js_b) = (
        css("b"),
        "export default function init() { 2 }\n".repeat(300),
    );
    write(&dist, CSS_B, &css_b);
    write(&dist, JS_B, &js_b);
    write(&dist, "index.html", &index_b);
    std::fs::remove_file(dist.join(CSS_A)).unwrap();
    std::fs::remove_file(dist.join(JS_A)).unwrap();

    // At once, under both encodings: the new index.html and the new files.
    let now = both(&relay.url, "/", &index_b);
    let etag_b = now.etag.clone().unwrap();
    assert_ne!(etag_b, etag_a, "a changed index.html kept its ETag");
    for br in [false, true] {
        let g = get(&relay.url, "/", br, &[("If-None-Match", &etag_a)]);
        assert_eq!(g.status, 200, "the old ETag revalidated a changed file");
        assert_eq!(g.body, index_b);
    }
    both(&relay.url, &format!("/{CSS_B}"), &css_b);
    both(&relay.url, &format!("/{JS_B}"), &js_b);
    // The old names (and any other missing file) answer 404 in plain text, not the page.
    assert_not_found(&relay.url, &format!("/{CSS_A}"));
    assert_not_found(&relay.url, &format!("/{JS_A}"));
    for p in [
        "/favicon.ico",
        "/stepwatch-frontend_bg.wasm",
        "/app.js.map",
        "/runs/x/logo.png",
    ] {
        assert_not_found(&relay.url, p);
    }
    // Client-side routes still get the page.
    both(&relay.url, "/runs/some-run", &index_b);
    both(&relay.url, "/compare/a/b", &index_b);

    // Fresh brotli copies follow; until then (and after) every answer is the new file.
    wait_for_brotli(&relay.url, "/", &index_b);
    wait_for_brotli(&relay.url, &format!("/{CSS_B}"), &css_b);
    assert_not_found(&relay.url, &format!("/{CSS_A}"));

    // A file that appears after start is served, and compressed too.
    let late = format!("{{\"notes\": \"{}\"}}\n", "late ".repeat(500));
    write(&dist, "late-notes.json", &late);
    both(&relay.url, "/late-notes.json", &late);
    wait_for_brotli(&relay.url, "/late-notes.json", &late);
    // A file in a subdirectory (wasm-bindgen's snippets/), added and then changed.
    std::fs::create_dir_all(dist.join("snippets/ui-0123456789abcdef")).unwrap();
    let snippet = "export function f() { return 1; }\n".repeat(200);
    write(&dist, "snippets/ui-0123456789abcdef/inline0.js", &snippet);
    wait_for_brotli(
        &relay.url,
        "/snippets/ui-0123456789abcdef/inline0.js",
        &snippet,
    );

    // Nothing outside dist, even when the client does not normalise the path.
    for target in [
        "/../secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e/secret.txt",
        "/snippets/../../secret.txt",
    ] {
        let (status, answer) = raw_get(&relay, target);
        assert!(!answer.contains("top-secret"), "{target}: {answer}");
        assert!(status.contains(" 404 "), "{target}: {status}");
    }
    // The API is untouched: its own routes and its own JSON 404.
    let (status, runs) = relay.get("/api/runs");
    assert_eq!(status, 200);
    assert!(runs.is_array() || runs.is_object(), "{runs}");
    let api = get(&relay.url, "/api/nothing-here.js", false, &[]);
    assert_eq!(api.status, 404);
    assert!(
        api.content_type.starts_with("application/json"),
        "{}",
        api.content_type
    );
}

#[test]
fn a_trunk_serve_dev_build_is_reported_and_served_without_its_autoreload_script() {
    // What `trunk serve` (0.21) appends to the page it writes into dist/: a script whose
    // address placeholders only trunk's dev server fills in.
    const AUTORELOAD: &str = "<script>\"use strict\";\n(function () {\n    \
        const address = '{{__TRUNK_ADDRESS__}}';\n    const base = '{{__TRUNK_WS_BASE__}}';\n    \
        let protocol = '';\n    protocol = protocol ? protocol : window.location.protocol === 'https:' ? 'wss' : 'ws';\n    \
        const url = protocol + '://' + address + base + '.well-known/trunk/ws';\n    \
        const ws = new WebSocket(url);\n    ws.onclose = () => setTimeout(() => new WebSocket(url), 5000);\n})()\n</script>";
    const WARNING: &str = "is a trunk dev build (autoreload snippet): run `trunk build --release`";
    let dir = TempDir::new("dash-dev");
    let dist = dir.0.join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    let log = dir.0.join("relay.log");
    let release = index(CSS_A, JS_A, "");
    let dev = index(CSS_A, JS_A, AUTORELOAD);
    write(&dist, "index.html", &dev);
    write(&dist, CSS_A, &css("a"));
    let relay = Relay::start_logged(
        &dir.0.join("data"),
        &["--dist", dist.to_str().unwrap()],
        &log,
    );
    let warnings = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(WARNING)
            .count()
    };
    // Said at start, before any request, naming the file.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(warnings(), 1, "no dev-build warning at start:\n{text}");
    assert!(text.contains("index.html is a trunk dev build"), "{text}");

    // Served without the script (the rest of the page as written), under both encodings
    // and from the brotli copy too.
    both(&relay.url, "/", &release);
    wait_for_brotli(&relay.url, "/", &release);
    both(&relay.url, "/runs/r1", &release);

    // A release build replaces it: served as it is, no new warning.
    let release_b = index(CSS_B, JS_B, "<!-- release -->");
    write(&dist, "index.html", &release_b);
    both(&relay.url, "/", &release_b);
    wait_for_brotli(&relay.url, "/", &release_b);
    assert_eq!(warnings(), 1, "a release build was reported as a dev build");

    // A dev build again, without a restart: noticed when index.html changes.
    write(&dist, "index.html", &index(CSS_B, JS_B, AUTORELOAD));
    both(&relay.url, "/", &index(CSS_B, JS_B, ""));
    wait_until("the second dev-build warning", WAIT, || {
        (warnings() == 2).then_some(())
    });
}

/// Kills the child when dropped (a test that fails leaves no relay behind).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn brotli_copies_are_still_made_after_the_relay_binary_was_replaced() {
    // An upgrade (pip, a package manager, `cargo build`) replaces the program file under
    // a running relay: it must still make the brotli copies of a rebuilt dashboard.
    let dir = TempDir::new("dash-upgraded");
    let dist = dir.0.join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    write(&dist, "index.html", &index(CSS_A, JS_A, ""));
    write(&dist, CSS_A, &css("a"));
    let bin = dir.0.join("stepwatch");
    std::fs::copy(stepwatch_e2e::relay_bin(), &bin).unwrap();
    let port = stepwatch_e2e::free_port();
    let _relay = Child(
        std::process::Command::new(&bin)
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.0.join("data"))
            .arg("--dist")
            .arg(&dist)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until("the relay", WAIT, || {
        ureq::get(&format!("{base}/healthz"))
            .call()
            .ok()
            .map(|_| ())
    });
    wait_for_brotli(&base, &format!("/{CSS_A}"), &css("a"));
    // The program file goes (as an upgrade's rename does to the old one); dist is rebuilt.
    std::fs::remove_file(&bin).unwrap();
    write(&dist, CSS_B, &css("b"));
    write(&dist, "index.html", &index(CSS_B, JS_A, ""));
    wait_for_brotli(&base, &format!("/{CSS_B}"), &css("b"));
    wait_for_brotli(&base, "/", &index(CSS_B, JS_A, ""));
}
