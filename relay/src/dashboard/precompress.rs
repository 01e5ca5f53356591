//! The child side of the brotli copies (`stepwatch precompress`): compresses every
//! compressible file of dist whose copy is missing or stale into the cache directory,
//! each copy headed by the stamp of the file it was made from, and removes copies of
//! files that are gone. It runs in a short-lived process so the compressor's working
//! memory never stays in the relay.

use super::devbuild::prepare;
use super::files::{compressible, scan};
use super::stamp::Stamp;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;

/// Compresses with brotli at the highest quality.
pub fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 3);
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, 11, 22);
        let _ = w.write_all(data);
    }
    out
}

/// The cache file of `rel`: its path with every byte outside `[A-Za-z0-9._-]` escaped.
pub fn cache_name(rel: &str) -> String {
    let mut name = String::with_capacity(rel.len() + 3);
    for b in rel.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push_str(".br");
    name
}

/// The stamp in a cache file's first line.
fn cached_stamp(path: &Path) -> Option<Stamp> {
    let mut head = [0u8; 128];
    let mut f = std::fs::File::open(path).ok()?;
    let n = f.read(&mut head).ok()?;
    let line = head[..n].split(|&b| b == b'\n').next()?;
    Stamp::parse(std::str::from_utf8(line).ok()?)
}

/// Reads `rel` and compresses what is served for it; `None` when it changed while read.
fn compress_file(dist: &Path, rel: &str) -> std::io::Result<Option<(Stamp, Vec<u8>)>> {
    let path = dist.join(rel);
    let mut f = std::fs::File::open(&path)?;
    let before = Stamp::of(&f.metadata()?);
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    if Stamp::of(&f.metadata()?) != before || Stamp::of(&std::fs::metadata(&path)?) != before {
        return Ok(None);
    }
    Ok(Some((before, brotli(&prepare(rel, bytes)))))
}

/// Writes a brotli copy into `out` for every compressible file of `dist` (subdirectories
/// included) whose copy is missing or was made from another version of the file, and
/// removes copies of files that are gone. Each copy starts with a line holding the
/// stamp of the file it was made from. Run by `stepwatch precompress` in a child process.
pub fn precompress_to(dist: &Path, out: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(out)?;
    let mut keep = HashSet::new();
    let mut n = 0;
    for (rel, meta) in scan(dist) {
        if !compressible(&rel) {
            continue;
        }
        let name = cache_name(&rel);
        let target = out.join(&name);
        keep.insert(name);
        if cached_stamp(&target) == Some(Stamp::of(&meta)) {
            continue;
        }
        match compress_file(dist, &rel) {
            Ok(Some((stamp, compressed))) => {
                let tmp = out.join(format!("{}.tmp", cache_name(&rel)));
                let mut data = stamp.header().into_bytes();
                data.extend_from_slice(&compressed);
                std::fs::write(&tmp, data)?;
                std::fs::rename(&tmp, &target)?;
                n += 1;
            }
            // Changing as we read it: the relay asks again once it has settled.
            Ok(None) => {}
            Err(e) => eprintln!("stepwatch precompress: {rel}: {e}"),
        }
    }
    for entry in std::fs::read_dir(out)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_escape_everything_but_safe_bytes() {
        assert_eq!(
            cache_name("snippets/a b/x.js"),
            "snippets%2Fa%20b%2Fx.js.br"
        );
    }
}
