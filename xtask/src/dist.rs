//! `cargo xtask dist`: the Python packages into `target/wheels/`:
//! - `stepwatch` (the SDK): a pure-Python wheel and its sdist;
//! - `stepwatch-server`: the relay binary `stepwatch-server` with the built dashboard
//!   inside it (`packaging/server`, feature `embed`), a Linux wheel portable to older
//!   glibc (`maturin --zig --compatibility manylinux2014`), and an sdist that carries the
//!   built dashboard (`relay/dashboard-dist`), so building it from source needs Rust but
//!   no wasm tooling.
//!
//! The build tools (maturin, ziglang, setuptools) live in a venv outside the checkout,
//! `~/.cache/stepwatch/dist-venv`, made once and reused by every clone.

use crate::proc::{root, run, run_env};
use crate::tools::{build_dashboard, ensure_web_tools};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where the built packages go.
pub fn wheels_dir() -> PathBuf {
    root().join("target/wheels")
}

fn tools_venv() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| root().join("target"), PathBuf::from);
    home.join(".cache/stepwatch/dist-venv")
}

/// The venv with maturin, ziglang and setuptools; made when missing.
fn ensure_tools() -> Result<PathBuf> {
    let venv = tools_venv();
    let py = venv.join("bin/python");
    if !py.exists() {
        std::fs::create_dir_all(venv.parent().unwrap_or(&venv))?;
        run("python3", &["-m", "venv", &venv.to_string_lossy()])?;
    }
    let have = std::process::Command::new(&py)
        .args(["-c", "import maturin, ziglang, setuptools, wheel"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        run(
            &py,
            &[
                "-m",
                "pip",
                "install",
                "--quiet",
                "maturin>=1.5,<2",
                "ziglang",
                "setuptools>=61",
                "wheel",
            ],
        )?;
    }
    Ok(venv)
}

/// Copies the built dashboard to where the server's build script and sdist find it.
fn stage_dashboard() -> Result<()> {
    let (from, to) = (root().join("dist"), root().join("relay/dashboard-dist"));
    if !from.join("index.html").is_file() {
        bail!("no built dashboard in {}", from.display());
    }
    if to.exists() {
        std::fs::remove_dir_all(&to)?;
    }
    copy_dir(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Builds every package into `target/wheels/` (old ones removed first).
pub fn dist() -> Result<()> {
    ensure_web_tools()?;
    build_dashboard()?;
    stage_dashboard()?;
    let venv = ensure_tools()?;
    let out = wheels_dir();
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let out_s = out.to_string_lossy().to_string();
    // maturin runs `python -m ziglang` from PATH: the tools venv first.
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [("PATH", path.as_str())];
    let maturin = venv.join("bin/maturin");
    let manifest = root().join("packaging/server/Cargo.toml");
    let manifest = manifest.to_string_lossy();
    run_env(
        &maturin,
        &[
            "build",
            "--release",
            "--zig",
            "--compatibility",
            "manylinux2014",
            "-m",
            &manifest,
            "--out",
            &out_s,
        ],
        &env,
    )?;
    run_env(&maturin, &["sdist", "-m", &manifest, "--out", &out_s], &env)?;
    // The SDK: pure Python, built with the tools venv's setuptools (no download).
    let py = venv.join("bin/python");
    let sdk = root().join("clients/python");
    run(
        &py,
        &[
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            &out_s,
            &sdk.to_string_lossy(),
        ],
    )?;
    let mut built: Vec<String> = std::fs::read_dir(&out)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    built.sort();
    eprintln!("\nbuilt in {}:", out.display());
    for name in &built {
        let len = std::fs::metadata(out.join(name)).map_or(0, |m| m.len());
        eprintln!("  {name}  ({:.1} MB)", len as f64 / 1e6);
    }
    Ok(())
}
