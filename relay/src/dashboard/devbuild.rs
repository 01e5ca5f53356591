//! Dev builds: an `index.html` written by `trunk serve` carries trunk's autoreload
//! script, which only trunk's dev server can answer; it is found here and left out of
//! what is served.

/// What only trunk's autoreload script (injected by `trunk serve`) contains: the
/// placeholders trunk's dev server fills in as it serves the page, and its WebSocket path.
const DEV_MARKERS: [&str; 4] = [
    "{{__TRUNK_ADDRESS__}}",
    "{{__TRUNK_WS_BASE__}}",
    ".well-known/trunk/ws",
    "/_trunk/ws",
];

/// Where trunk's autoreload `<script>` element is in `html`, if it has one.
fn dev_snippet(html: &str) -> Option<std::ops::Range<usize>> {
    let at = DEV_MARKERS.iter().filter_map(|m| html.find(m)).min()?;
    let start = html[..at].rfind("<script")?;
    if html[start..at].contains("</script") {
        return None;
    }
    let end = at + html[at..].find("</script>")? + "</script>".len();
    Some(start..end)
}

/// Whether `html` is an index.html written by `trunk serve` (autoreload script inside).
pub fn is_dev_build(html: &[u8]) -> bool {
    std::str::from_utf8(html)
        .ok()
        .and_then(dev_snippet)
        .is_some()
}

/// The bytes served for a file: as on disk, except that index.html loses trunk's
/// autoreload script (it can only reach `trunk serve`; from the relay it fails forever).
pub fn prepare(rel: &str, bytes: Vec<u8>) -> Vec<u8> {
    if rel != "index.html" {
        return bytes;
    }
    let mut html = match String::from_utf8(bytes) {
        Ok(html) => html,
        Err(e) => return e.into_bytes(),
    };
    for _ in 0..4 {
        match dev_snippet(&html) {
            Some(range) => html.replace_range(range, ""),
            None => break,
        }
    }
    html.into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_autoreload_script_is_found_and_left_out() {
        let dev = "<html><body><script type=module>import init from './app.js';</script>\
            <script nonce=\"n\">\"use strict\";(function(){const address='{{__TRUNK_ADDRESS__}}';\
            const url='ws://'+address+'/.well-known/trunk/ws';new WebSocket(url);})()</script></body></html>";
        assert!(is_dev_build(dev.as_bytes()));
        let served = String::from_utf8(prepare("index.html", dev.as_bytes().to_vec())).unwrap();
        assert_eq!(
            served,
            "<html><body><script type=module>import init from './app.js';</script></body></html>"
        );
        assert!(!is_dev_build(served.as_bytes()));
        // Only index.html is rewritten.
        assert_eq!(prepare("other.html", dev.into()), dev.as_bytes());
    }
}
