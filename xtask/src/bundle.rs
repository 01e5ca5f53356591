//! `cargo xtask run`'s dashboard build without trunk: the same wasm (the `wasm-release`
//! profile), the same wasm-bindgen glue and the same files as `trunk build --release`,
//! with content-hashed names, but the JS, CSS and HTML left unminified and the wasm not
//! passed through wasm-opt (about 5 KB more to download). It spares a
//! first run compiling trunk (about 8.5 minutes on two cores); the tests, the benchmarks
//! and `cargo xtask dist` keep building with trunk, whose minified output is what the
//! size budget counts.

use crate::proc::{root, run};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;

/// FNV-1a, 64 bits, as 16 hex digits: a content hash for file names.
fn hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Writes `bytes` into `dist` as `<stem>-<hash><suffix>`; returns the name.
fn put(dist: &Path, stem: &str, suffix: &str, bytes: &[u8]) -> Result<String> {
    let name = format!("{stem}-{}{suffix}", hash(bytes));
    fs::write(dist.join(&name), bytes).with_context(|| format!("cannot write {name}"))?;
    Ok(name)
}

/// Builds the dashboard into `dist` (emptied first) from `index.html`'s three trunk
/// links (the CSS, the copied config file, the Rust crate).
pub fn bundle_dashboard(dist: &Path) -> Result<()> {
    let root = root();
    run(
        "cargo",
        &[
            "build",
            "--profile",
            "wasm-release",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "stepwatch-frontend",
            "--bin",
            "stepwatch-frontend",
        ],
    )?;
    let out = root.join("target/bundle");
    let _ = fs::remove_dir_all(&out);
    let wasm = root.join("target/wasm32-unknown-unknown/wasm-release/stepwatch-frontend.wasm");
    let (wasm_s, out_s) = (wasm.to_string_lossy(), out.to_string_lossy());
    run(
        "wasm-bindgen",
        &[
            "--target",
            "web",
            "--no-typescript",
            "--out-dir",
            &out_s,
            "--out-name",
            "stepwatch-frontend",
            &wasm_s,
        ],
    )?;
    let _ = fs::remove_dir_all(dist);
    fs::create_dir_all(dist)?;
    let css = fs::read(root.join("frontend/style.css"))?;
    let css = put(dist, "style", ".css", &css)?;
    fs::copy(
        root.join("frontend/stepwatch-config.json"),
        dist.join("stepwatch-config.json"),
    )?;
    let wasm = fs::read(out.join("stepwatch-frontend_bg.wasm"))?;
    let js = fs::read_to_string(out.join("stepwatch-frontend.js"))?;
    let h = hash(&[js.as_bytes(), &wasm].concat());
    let (js_name, wasm_name) = (
        format!("stepwatch-frontend-{h}.js"),
        format!("stepwatch-frontend-{h}_bg.wasm"),
    );
    fs::write(dist.join(&js_name), &js)?;
    fs::write(dist.join(&wasm_name), &wasm)?;
    let html = fs::read_to_string(root.join("index.html"))?;
    let mut page = String::new();
    for line in html.lines() {
        let l = line.trim();
        if !l.starts_with("<link data-trunk") {
            page.push_str(line);
            page.push('\n');
        } else if l.contains("rel=\"css\"") {
            page.push_str(&format!("  <link rel=\"stylesheet\" href=\"./{css}\">\n"));
        } else if l.contains("rel=\"rust\"") {
            page.push_str(&format!(
                "  <link rel=\"modulepreload\" href=\"./{js_name}\" crossorigin>\n  \
                 <link rel=\"preload\" href=\"./{wasm_name}\" as=\"fetch\" type=\"application/wasm\" crossorigin>\n  \
                 <script type=\"module\">import init, * as bindings from './{js_name}';\n\
                 const wasm = await init({{ module_or_path: './{wasm_name}' }});\n\
                 window.wasmBindings = bindings;\n\
                 dispatchEvent(new CustomEvent(\"TrunkApplicationStarted\", {{detail: {{wasm}}}}));</script>\n"
            ));
        } else if !l.contains("rel=\"copy-file\"") {
            bail!("index.html: a trunk link this build does not know: {l}");
        }
    }
    fs::write(dist.join("index.html"), page)?;
    eprintln!(
        "dashboard built into {} (without trunk: unminified glue, wasm without wasm-opt)",
        dist.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::hash;

    #[test]
    fn names_change_with_content_and_read_as_hashed() {
        assert_ne!(hash(b"a"), hash(b"b"));
        assert_eq!(hash(b"a").len(), 16);
        assert_eq!(hash(b""), "cbf29ce484222325");
    }
}
