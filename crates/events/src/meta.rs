//! Tags, group and notes of a run (`run_meta`): the checks every writer passes (the
//! relay for trainers and the API, the dashboard's form before it sends), and the
//! normalisation both apply, so a tag typed `" baseline "` is stored `baseline` once.

use crate::bodies::RunMeta;
use crate::field_error::FieldError;

/// Most tags a run carries.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;
/// Longest group name, in characters.
pub const MAX_GROUP_CHARS: usize = 128;
/// Largest notes, in bytes of UTF-8.
pub const MAX_NOTES_BYTES: usize = 16 * 1024;

/// Trims each tag, drops empty ones and repeats (first spelling kept, order kept).
pub fn normalize_tags<S: AsRef<str>>(tags: &[S]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.as_ref().trim();
        if !t.is_empty() && !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    out
}

/// Splits what a person typed into tags: commas separate them.
pub fn parse_tags(text: &str) -> Vec<String> {
    normalize_tags(&text.split(',').collect::<Vec<_>>())
}

fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Checks one tag (already trimmed).
pub fn check_tag(tag: &str, field: &str) -> Result<(), FieldError> {
    if tag.chars().count() > MAX_TAG_CHARS {
        return Err(FieldError::new(
            field,
            format!("a tag is at most {MAX_TAG_CHARS} characters"),
        ));
    }
    if !printable(tag) || tag.contains(',') {
        return Err(FieldError::new(
            field,
            "a tag holds no commas and no control characters",
        ));
    }
    Ok(())
}

/// Checks a `run_meta` body and normalises its tags and group in place; names the
/// field at fault (`tags[3]`, `group`, `notes`).
pub fn check(meta: &mut RunMeta) -> Result<(), FieldError> {
    if meta.tags.is_none() && meta.group.is_none() && meta.notes.is_none() {
        return Err(FieldError::new(
            "tags",
            "nothing to change: give tags, group or notes",
        ));
    }
    if let Some(tags) = &meta.tags {
        for (i, t) in tags.iter().enumerate() {
            check_tag(t.trim(), &format!("tags[{i}]"))?;
        }
        let tags = normalize_tags(tags);
        if tags.len() > MAX_TAGS {
            return Err(FieldError::new(
                "tags",
                format!("a run carries at most {MAX_TAGS} tags"),
            ));
        }
        meta.tags = Some(tags);
    }
    if let Some(g) = &meta.group {
        let g = g.trim();
        if g.chars().count() > MAX_GROUP_CHARS || !printable(g) {
            return Err(FieldError::new(
                "group",
                format!("a group is one line of at most {MAX_GROUP_CHARS} characters"),
            ));
        }
        meta.group = Some(g.to_string());
    }
    if let Some(n) = &meta.notes {
        if n.len() > MAX_NOTES_BYTES {
            return Err(FieldError::new(
                "notes",
                format!("notes are at most {} KB", MAX_NOTES_BYTES / 1024),
            ));
        }
        if n.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            return Err(FieldError::new("notes", "notes hold no control characters"));
        }
    }
    Ok(())
}

/// A config's scalar leaves under dotted keys (`optimizer.lr`), in key order: what the
/// runs list shows as columns and groups by, and what the parameter view plots.
/// Arrays count as one value (their JSON text); nesting stops at four levels.
pub fn flat_config(
    config: &serde_json::Map<String, serde_json::Value>,
) -> Vec<(String, serde_json::Value)> {
    fn walk(
        prefix: &str,
        m: &serde_json::Map<String, serde_json::Value>,
        depth: usize,
        out: &mut Vec<(String, serde_json::Value)>,
    ) {
        for (k, v) in m {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                serde_json::Value::Object(inner) if depth < 4 => walk(&key, inner, depth + 1, out),
                serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                    out.push((key, serde_json::Value::String(v.to_string())));
                }
                _ => out.push((key, v.clone())),
            }
        }
    }
    let mut out = Vec::new();
    walk("", config, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(tags: &[&str]) -> RunMeta {
        RunMeta {
            tags: Some(tags.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn config_flattens_to_dotted_scalars() {
        let v: serde_json::Value = serde_json::json!({
            "lr": 0.1, "opt": {"name": "adam", "betas": [0.9, 0.99]}, "seed": null
        });
        let flat = flat_config(v.as_object().unwrap());
        let keys: Vec<&str> = flat.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["lr", "opt.betas", "opt.name", "seed"]);
        assert_eq!(flat[1].1, serde_json::json!("[0.9,0.99]"));
    }

    #[test]
    fn tags_are_trimmed_and_kept_once_in_order() {
        let mut m = meta(&[" lr sweep ", "baseline", "lr sweep", ""]);
        check(&mut m).unwrap();
        assert_eq!(m.tags.unwrap(), vec!["lr sweep", "baseline"]);
        assert_eq!(parse_tags("a, b,,a , c"), vec!["a", "b", "c"]);
    }

    #[test]
    fn bad_fields_are_named() {
        let long = "x".repeat(MAX_TAG_CHARS + 1);
        assert_eq!(
            check(&mut meta(&["ok", &long])).unwrap_err().field,
            "tags[1]"
        );
        assert_eq!(check(&mut meta(&["a\u{7}"])).unwrap_err().field, "tags[0]");
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(check(&mut meta(&refs)).unwrap_err().field, "tags");
        let mut g = RunMeta {
            group: Some("two\nlines".into()),
            ..Default::default()
        };
        assert_eq!(check(&mut g).unwrap_err().field, "group");
        let mut n = RunMeta {
            notes: Some("x".repeat(MAX_NOTES_BYTES + 1)),
            ..Default::default()
        };
        assert_eq!(check(&mut n).unwrap_err().field, "notes");
        assert!(check(&mut RunMeta::default()).is_err());
        let mut ok = RunMeta {
            notes: Some("# Why\n\n- lr too high\n".into()),
            group: Some(" sweep-1 ".into()),
            ..Default::default()
        };
        check(&mut ok).unwrap();
        assert_eq!(ok.group.as_deref(), Some("sweep-1"));
    }
}
