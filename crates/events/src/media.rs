//! Media: text samples, images and histograms. The checks every writer applies to
//! their events ([`check`]), what the reducer keeps of them ([`MediaTag`]), and how an
//! image's bytes are told apart ([`sniff`]): by their bytes, never by a name or a
//! declared type, so a crafted upload cannot pass for an image.

use crate::event::EventBody;
use crate::field_error::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest tag (`name`) of a media event, in bytes.
pub const MAX_TAG: usize = 128;
/// Longest caption, in bytes.
pub const MAX_CAPTION: usize = 1000;
/// Text in one `text_sample`, all strings together, in bytes.
pub const MAX_TEXT: usize = 64 * 1024;
/// Columns of a text table.
pub const MAX_COLUMNS: usize = 32;
/// Rows of a text table.
pub const MAX_ROWS: usize = 1000;
/// Bins of a histogram.
pub const MAX_BINS: usize = 512;
/// Images at one step under one tag (`index` below this).
pub const MAX_INDEX: u64 = 1024;
/// Media tags the reducer keeps per run (later tags are stored, not summarised).
pub const MAX_TAGS: usize = 256;

/// The kinds of media, as [`MediaTag::kind`] names them.
pub const KINDS: [&str; 3] = ["text", "image", "histogram"];

/// One tag of a run's media in the run state: what panels the dashboard draws.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MediaTag {
    pub name: String,
    /// `text`, `image` or `histogram`.
    pub kind: String,
    /// Events under this tag.
    pub count: u64,
    pub first_step: u64,
    pub last_step: u64,
    /// Id of the latest one.
    pub last_id: u64,
}

/// The tag, kind and step of a media event; `None` for any other event.
pub fn media_of(body: &EventBody) -> Option<(&'static str, Option<&str>, Option<u64>)> {
    match body {
        EventBody::TextSample(b) => Some(("text", b.name.as_deref(), b.step)),
        EventBody::Image(b) => Some(("image", b.name.as_deref(), b.step)),
        EventBody::Histogram(b) => Some(("histogram", b.name.as_deref(), b.step)),
        _ => None,
    }
}

/// Folds one media event into the run's tags.
pub fn note(tags: &mut Vec<MediaTag>, kind: &str, name: &str, step: u64, id: Option<u64>) {
    let id = id.unwrap_or(0);
    if let Some(t) = tags.iter_mut().find(|t| t.kind == kind && t.name == name) {
        t.count += 1;
        t.first_step = t.first_step.min(step);
        t.last_step = t.last_step.max(step);
        t.last_id = t.last_id.max(id);
    } else if tags.len() < MAX_TAGS {
        tags.push(MediaTag {
            name: name.to_string(),
            kind: kind.to_string(),
            count: 1,
            first_step: step,
            last_step: step,
            last_id: id,
        });
    }
}

fn bad(field: &str, message: impl Into<String>) -> Result<(), FieldError> {
    Err(FieldError::new(field, message))
}

fn check_tag(name: Option<&str>, caption: Option<&str>) -> Result<(), FieldError> {
    match name {
        None => {
            return bad(
                "name",
                "a media event needs a name (its tag, like a metric's)",
            )
        }
        Some(n) if n.trim().is_empty() => return bad("name", "must not be empty"),
        Some(n) if n.len() > MAX_TAG => {
            return bad(
                "name",
                format!("{} bytes is over the limit of {MAX_TAG}", n.len()),
            )
        }
        Some(n) if n.chars().any(char::is_control) => {
            return bad("name", "must not hold control characters")
        }
        _ => {}
    }
    if let Some(c) = caption.filter(|c| c.len() > MAX_CAPTION) {
        return bad(
            "caption",
            format!("{} bytes is over the limit of {MAX_CAPTION}", c.len()),
        );
    }
    Ok(())
}

/// Whether `s` is a lowercase hex SHA-256 (64 characters).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a media event's fields (other events pass). The refusal names the field.
pub fn check(body: &EventBody) -> Result<(), FieldError> {
    match body {
        EventBody::TextSample(t) => {
            check_tag(t.name.as_deref(), t.caption.as_deref())?;
            check_text(t)
        }
        EventBody::Image(i) => {
            check_tag(i.name.as_deref(), i.caption.as_deref())?;
            match i.media.as_deref() {
                None => bad(
                    "media",
                    "an image names its uploaded bytes by their SHA-256 \
                     (PUT /api/runs/{run}/media/{sha256} first)",
                ),
                Some(m) if !is_sha256(m) => bad(
                    "media",
                    "expected the lowercase hex SHA-256 of the uploaded bytes (64 characters)",
                ),
                _ if i.index.is_some_and(|n| n >= MAX_INDEX) => bad(
                    "index",
                    format!("at most {MAX_INDEX} images at one step under one name"),
                ),
                _ => Ok(()),
            }
        }
        EventBody::Histogram(h) => {
            check_tag(h.name.as_deref(), h.caption.as_deref())?;
            check_histogram(h)
        }
        _ => Ok(()),
    }
}

fn check_text(t: &crate::bodies::TextSample) -> Result<(), FieldError> {
    let mut total = 0usize;
    for s in [&t.text, &t.prompt, &t.completion].into_iter().flatten() {
        total += s.len();
    }
    let table = t.columns.is_some() || t.rows.is_some();
    if !table && t.text.is_none() && t.prompt.is_none() && t.completion.is_none() {
        return bad(
            "text",
            "a text sample holds `text`, or `prompt` and `completion`, or `columns` and `rows`",
        );
    }
    if table {
        let Some(columns) = &t.columns else {
            return bad("columns", "a table needs its column names");
        };
        if columns.is_empty() || columns.len() > MAX_COLUMNS {
            return bad(
                "columns",
                format!("{} columns: a table has 1 to {MAX_COLUMNS}", columns.len()),
            );
        }
        total += columns.iter().map(String::len).sum::<usize>();
        let rows = match &t.rows {
            None => return bad("rows", "a table needs its rows (an array of arrays)"),
            Some(Value::Array(rows)) => rows,
            Some(_) => return bad("rows", "expected an array of rows, each an array"),
        };
        if rows.len() > MAX_ROWS {
            return bad(
                "rows",
                format!("{} rows is over the limit of {MAX_ROWS}", rows.len()),
            );
        }
        for (i, row) in rows.iter().enumerate() {
            let Value::Array(cells) = row else {
                return bad(&format!("rows[{i}]"), "expected an array of cells");
            };
            if cells.len() != columns.len() {
                return bad(
                    &format!("rows[{i}]"),
                    format!(
                        "{} cells for {} columns: each row is as long as `columns`",
                        cells.len(),
                        columns.len()
                    ),
                );
            }
            for (j, c) in cells.iter().enumerate() {
                total += match c {
                    Value::String(s) => s.len(),
                    Value::Number(_) | Value::Bool(_) | Value::Null => 8,
                    _ => {
                        return bad(
                            &format!("rows[{i}][{j}]"),
                            "a cell is a string, a number, a boolean or null",
                        )
                    }
                };
            }
        }
    }
    if total > MAX_TEXT {
        return bad(
            if table { "rows" } else { "text" },
            format!("{total} bytes of text is over the limit of {MAX_TEXT}"),
        );
    }
    Ok(())
}

fn check_histogram(h: &crate::bodies::Histogram) -> Result<(), FieldError> {
    let (Some(edges), Some(counts)) = (&h.edges, &h.counts) else {
        return bad(
            if h.edges.is_none() { "edges" } else { "counts" },
            "a histogram holds `edges` (n + 1 numbers) and `counts` (n numbers)",
        );
    };
    if counts.is_empty() || counts.len() > MAX_BINS {
        return bad(
            "counts",
            format!("{} bins: a histogram has 1 to {MAX_BINS}", counts.len()),
        );
    }
    if edges.len() != counts.len() + 1 {
        return bad(
            "edges",
            format!(
                "{} edges for {} bins: expected one more edge than bins",
                edges.len(),
                counts.len()
            ),
        );
    }
    if let Some(i) = edges.iter().position(|e| !e.is_finite()) {
        return bad(&format!("edges[{i}]"), "must be a finite number");
    }
    if let Some(i) = edges.windows(2).position(|w| w[1] < w[0]) {
        return bad(&format!("edges[{}]", i + 1), "edges must not decrease");
    }
    if let Some(i) = counts.iter().position(|c| !c.is_finite() || *c < 0.0) {
        return bad(
            &format!("counts[{i}]"),
            "must be a finite number, not negative",
        );
    }
    Ok(())
}

/// What an upload's bytes are: its content type and size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
}

fn be16(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])))
}

fn le(b: &[u8], i: usize, n: usize) -> Option<u32> {
    let s = b.get(i..i + n)?;
    Some(
        s.iter()
            .rev()
            .fold(0u32, |acc, &x| (acc << 8) | u32::from(x)),
    )
}

/// Tells a PNG, JPEG or WebP image by its bytes and reads its size from its header.
/// Anything else (HTML, SVG, a GIF, a truncated header) is refused, saying what it seemed.
pub fn sniff(b: &[u8]) -> Result<Sniffed, String> {
    let done = |mime, width: u32, height: u32| {
        if width == 0 || height == 0 {
            Err(format!(
                "the {mime} header gives a size of {width}×{height}"
            ))
        } else {
            Ok(Sniffed {
                mime,
                width,
                height,
            })
        }
    };
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        if b.get(12..16) != Some(b"IHDR") {
            return Err("a PNG without its IHDR header".into());
        }
        let be32 = |i: usize| {
            b.get(i..i + 4)
                .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
                .ok_or("truncated PNG")
        };
        let (w, h) = (be32(16)?, be32(20)?);
        return done("image/png", w, h);
    }
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        // Walk the segments to the first start-of-frame, which holds the size.
        let mut i = 2;
        while i + 4 <= b.len() {
            if b[i] != 0xFF {
                return Err("a JPEG whose segments do not line up".into());
            }
            let marker = b[i + 1];
            if marker == 0xFF {
                i += 1;
                continue;
            }
            let len = be16(b, i + 2).ok_or("truncated JPEG")? as usize;
            let sof = (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
            if sof {
                let h = be16(b, i + 5).ok_or("truncated JPEG")?;
                let w = be16(b, i + 7).ok_or("truncated JPEG")?;
                return done("image/jpeg", w, h);
            }
            if marker == 0xDA || len < 2 {
                break;
            }
            i += 2 + len;
        }
        return Err("a JPEG without a frame header".into());
    }
    if b.len() >= 30 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        let (w, h) = match &b[12..16] {
            b"VP8 " if b.get(23..26) == Some(&[0x9D, 0x01, 0x2A]) => (
                le(b, 26, 2).ok_or("truncated WebP")? & 0x3FFF,
                le(b, 28, 2).ok_or("truncated WebP")? & 0x3FFF,
            ),
            b"VP8L" if b.get(20) == Some(&0x2F) => {
                let bits = le(b, 21, 4).ok_or("truncated WebP")?;
                ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
            }
            b"VP8X" => (
                le(b, 24, 3).ok_or("truncated WebP")? + 1,
                le(b, 27, 3).ok_or("truncated WebP")? + 1,
            ),
            _ => return Err("a WebP file of a kind not known".into()),
        };
        return done("image/webp", w, h);
    }
    let head = String::from_utf8_lossy(&b[..b.len().min(256)]).to_ascii_lowercase();
    let seems = if head.contains("<svg") {
        "SVG (refused: it can carry script)"
    } else if head.contains("<html") || head.contains("<!doctype") || head.contains("<script") {
        "HTML"
    } else if b.starts_with(b"GIF8") {
        "a GIF"
    } else if b.is_empty() {
        "empty"
    } else {
        "no image this relay shows"
    };
    Err(format!(
        "the bytes are {seems}: media must be PNG, JPEG or WebP, told by their bytes"
    ))
}
