//! Run notes as HTML from a small Markdown subset: headings, paragraphs, lists, quotes,
//! fenced code, `code`, **bold**, *emphasis* and [links](https://…). Safe by
//! construction: every character of the input is escaped, the only tags are the ones
//! written here, and a link's target must be `http:`, `https:` or `mailto:` (any other
//! is shown as text), so notes can never inject markup or script.

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
}

fn safe_url(url: &str) -> bool {
    let u = url.trim().to_ascii_lowercase();
    (u.starts_with("https://") || u.starts_with("http://") || u.starts_with("mailto:"))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Inline markup of one block's text.
fn inline(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            if let Some(end) = rest[1..].find('`') {
                out.push_str("<code>");
                escape(&rest[1..1 + end], out);
                out.push_str("</code>");
                rest = &rest[end + 2..];
                continue;
            }
        }
        if rest.starts_with("**") {
            if let Some(end) = rest[2..].find("**").filter(|&e| e > 0) {
                out.push_str("<strong>");
                inline(&rest[2..2 + end], out);
                out.push_str("</strong>");
                rest = &rest[end + 4..];
                continue;
            }
        }
        if c == '*' || c == '_' {
            if let Some(end) = rest[1..].find(c).filter(|&e| e > 0) {
                out.push_str("<em>");
                inline(&rest[1..1 + end], out);
                out.push_str("</em>");
                rest = &rest[end + 2..];
                continue;
            }
        }
        if c == '[' {
            if let Some((label, url, used)) = link(rest) {
                if safe_url(url) {
                    out.push_str("<a href=\"");
                    escape(url.trim(), out);
                    out.push_str("\" target=\"_blank\" rel=\"noopener noreferrer\">");
                    inline(label, out);
                    out.push_str("</a>");
                    rest = &rest[used..];
                    continue;
                }
            }
        }
        escape(&rest[..c.len_utf8()], out);
        rest = &rest[c.len_utf8()..];
    }
}

/// `[label](url)` at the start of `s`: the label, the url and the bytes used.
fn link(s: &str) -> Option<(&str, &str, usize)> {
    let close = s.find("](")?;
    let end = s[close + 2..].find(')')? + close + 2;
    Some((&s[1..close], &s[close + 2..end], end + 1))
}

fn list_item(line: &str) -> Option<(bool, &str)> {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix("- ").or_else(|| t.strip_prefix("* ")) {
        return Some((false, rest));
    }
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0 && t[digits..].starts_with(". ")).then(|| (true, &t[digits + 2..]))
}

/// `#`, `##` or `###` and a space: the level.
fn heading(t: &str) -> Option<usize> {
    let n = t.bytes().take_while(|&b| b == b'#').count();
    ((1..=3).contains(&n) && t[n..].starts_with(' ')).then_some(n)
}

/// The notes as HTML.
pub fn to_html(md: &str) -> String {
    let mut out = String::new();
    let mut para: Vec<&str> = Vec::new();
    let mut list: Option<bool> = None; // Some(ordered) while a list is open
    let mut lines = md.lines();
    let flush = |para: &mut Vec<&str>, out: &mut String| {
        if !para.is_empty() {
            out.push_str("<p>");
            inline(&para.join(" "), out);
            out.push_str("</p>");
            para.clear();
        }
    };
    let close = |list: &mut Option<bool>, out: &mut String| {
        if let Some(ordered) = list.take() {
            out.push_str(if ordered { "</ol>" } else { "</ul>" });
        }
    };
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t.starts_with("```") {
            flush(&mut para, &mut out);
            close(&mut list, &mut out);
            out.push_str("<pre><code>");
            for code in lines.by_ref() {
                if code.trim_start().starts_with("```") {
                    break;
                }
                escape(code, &mut out);
                out.push('\n');
            }
            out.push_str("</code></pre>");
        } else if t.is_empty() {
            flush(&mut para, &mut out);
            close(&mut list, &mut out);
        } else if let Some((ordered, item)) = list_item(line) {
            flush(&mut para, &mut out);
            if list != Some(ordered) {
                close(&mut list, &mut out);
                out.push_str(if ordered { "<ol>" } else { "<ul>" });
                list = Some(ordered);
            }
            out.push_str("<li>");
            inline(item, &mut out);
            out.push_str("</li>");
        } else if let Some(h) = heading(t) {
            flush(&mut para, &mut out);
            close(&mut list, &mut out);
            let n = char::from(b'2' + h as u8);
            out.push_str("<h");
            out.push(n);
            out.push('>');
            inline(t[h + 1..].trim(), &mut out);
            out.push_str("</h");
            out.push(n);
            out.push('>');
        } else if let Some(q) = t.strip_prefix('>') {
            flush(&mut para, &mut out);
            close(&mut list, &mut out);
            out.push_str("<blockquote>");
            inline(q.trim(), &mut out);
            out.push_str("</blockquote>");
        } else {
            close(&mut list, &mut out);
            para.push(t);
        }
    }
    flush(&mut para, &mut out);
    close(&mut list, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::to_html;

    #[test]
    fn renders_the_subset() {
        let html = to_html("# Why it diverged\n\nlr **too** high, see *run 3*\nand `lr=1e-2`.\n\n- one\n- two\n\n1. a\n2. b\n\n> quoted\n\n```\nx < 1\n```\n[docs](https://example.com/a?b=1&c=2)");
        assert_eq!(
            html,
            "<h3>Why it diverged</h3><p>lr <strong>too</strong> high, see <em>run 3</em> and <code>lr=1e-2</code>.</p>\
             <ul><li>one</li><li>two</li></ul><ol><li>a</li><li>b</li></ol><blockquote>quoted</blockquote>\
             <pre><code>x &lt; 1\n</code></pre>\
             <p><a href=\"https://example.com/a?b=1&amp;c=2\" target=\"_blank\" rel=\"noopener noreferrer\">docs</a></p>"
        );
    }

    #[test]
    fn never_lets_markup_or_script_through() {
        for evil in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "[x](javascript:alert(1))",
            "[x](JaVaScRiPt:alert(1))",
            "[x](data:text/html,<b>)",
            "[x](https://a.b/\" onmouseover=\"alert(1))",
            "**<b>**",
            "`</code><script>`",
            "# <h1>",
        ] {
            let html = to_html(evil);
            assert!(!html.contains("<script"), "{evil} → {html}");
            assert!(!html.contains("<img"), "{evil} → {html}");
            assert!(!html.contains("href=\"javascript"), "{evil} → {html}");
            assert!(
                !html.to_lowercase().contains("href=\"javascript"),
                "{evil} → {html}"
            );
            assert!(!html.contains("href=\"data"), "{evil} → {html}");
            assert!(!html.contains("\" onmouseover"), "{evil} → {html}");
            assert!(
                !html.contains("<b>") && !html.contains("<h1>"),
                "{evil} → {html}"
            );
        }
    }
}
