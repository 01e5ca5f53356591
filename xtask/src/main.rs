//! `cargo xtask run | test | bench`: the project's two quick-start commands and its
//! benchmarks. Each installs what it needs on a fresh machine, skipping what is there.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod bench;

const TRUNK_VERSION: &str = "0.21.14";
const WASM_BINDGEN_VERSION: &str = "0.2.130";
const APT_PACKAGES: &[&str] = &["chromium", "chromium-driver", "fonts-wqy-zenhei"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    home.join("bin").join(name)
}

/// Runs a command in the repo root, echoing it; fails on a non-zero exit.
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Result<()> {
    let program = program.as_ref();
    eprintln!("\n▶ {} {}", program.to_string_lossy(), args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot start {}", program.to_string_lossy()))?;
    if !status.success() {
        bail!(
            "`{} {}` failed ({status})",
            program.to_string_lossy(),
            args.join(" ")
        );
    }
    Ok(())
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// Installs `krate` at exactly `version` unless `bin --version` already reports it.
fn ensure_cargo_tool(bin: &str, krate: &str, version: &str, flags: &[&str]) -> Result<()> {
    let in_cargo_home = cargo_bin(bin);
    let ok = output(bin, &["--version"])
        .or_else(|| output(in_cargo_home.to_str().unwrap_or(bin), &["--version"]))
        .is_some_and(|v| v.contains(version));
    if !ok {
        let mut args = vec!["install", krate, "--version", version];
        args.extend(flags);
        run("cargo", &args)?;
    }
    Ok(())
}

/// The wasm target, trunk and a matching wasm-bindgen CLI.
fn ensure_web_tools() -> Result<()> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if !installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        run("rustup", &["target", "add", "wasm32-unknown-unknown"])?;
    }
    ensure_cargo_tool("trunk", "trunk", TRUNK_VERSION, &["--locked"])?;
    // Not --locked: its lockfile names a webpki-roots release the registry lacks.
    ensure_cargo_tool(
        "wasm-bindgen",
        "wasm-bindgen-cli",
        WASM_BINDGEN_VERSION,
        &["--force"],
    )?;
    Ok(())
}

/// Chromium, chromedriver and a CJK font, from Debian's packages.
fn ensure_browser() -> Result<()> {
    let missing = on_path("chromium").is_none()
        || on_path("chromedriver").is_none()
        || !Path::new("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc").exists();
    if missing {
        let sudo = output("id", &["-u"]).is_some_and(|u| u.trim() != "0");
        let (prog, pre): (&str, Vec<&str>) = if sudo {
            ("sudo", vec!["apt-get"])
        } else {
            ("apt-get", vec![])
        };
        let mut update = pre.clone();
        update.push("update");
        run(prog, &update)?;
        let mut install = pre;
        install.extend(["install", "-y", "--no-install-recommends"]);
        install.extend(APT_PACKAGES);
        std::env::set_var("DEBIAN_FRONTEND", "noninteractive");
        run(prog, &install)?;
    }
    Ok(())
}

/// A venv in `.venv` with the Python test tools.
fn ensure_python() -> Result<PathBuf> {
    let venv = root().join(".venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        run("python3", &["-m", "venv", venv.to_str().unwrap_or(".venv")])?;
    }
    let have = output(
        py.to_str().unwrap_or("python"),
        &["-c", "import pytest, ruff"],
    )
    .is_some();
    if !have {
        run(
            &py,
            &["-m", "pip", "install", "--quiet", "pytest>=7", "ruff>=0.5"],
        )?;
    }
    // The integration tests run against the real frameworks (torch on CPU, Lightning,
    // transformers); the SDK itself depends on none of them.
    let frameworks = output(
        py.to_str().unwrap_or("python"),
        &["-c", "import torch, lightning, transformers, accelerate"],
    )
    .is_some();
    if !frameworks {
        run(
            &py,
            &[
                "-m",
                "pip",
                "install",
                "--quiet",
                "torch",
                "lightning",
                "transformers",
                "accelerate",
            ],
        )?;
    }
    Ok(py)
}

fn with_cargo_bin_on_path() {
    let bin = cargo_bin("");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if !paths.contains(&bin) {
        paths.push(bin);
        if let Ok(joined) = std::env::join_paths(paths) {
            std::env::set_var("PATH", joined);
        }
    }
}

fn build_dashboard() -> Result<()> {
    run("trunk", &["build", "--release"])
}

fn cmd_run(extra: &[String]) -> Result<()> {
    ensure_web_tools()?;
    build_dashboard()?;
    run("cargo", &["build", "--release", "-p", "stepwatch-relay"])?;
    let mut args = vec!["serve".to_string(), "--dist".into(), "dist".into()];
    if !extra.iter().any(|a| a == "--no-demo") {
        args.push("--demo".into());
    }
    args.extend(extra.iter().filter(|a| *a != "--no-demo").cloned());
    eprintln!("\nStepwatch: open http://127.0.0.1:8080 (Ctrl-C to stop)\n");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(root().join("target/release/stepwatch"), &refs)
}

fn cmd_test() -> Result<()> {
    let t0 = Instant::now();
    ensure_web_tools()?;
    ensure_browser()?;
    let py = ensure_python()?;
    let tools = t0.elapsed();

    run("cargo", &["fmt", "--all", "--check"])?;
    // Lints natively for the whole workspace, then the dashboard as the browser builds it.
    for target in [
        &["--workspace"][..],
        &[
            "-p",
            "stepwatch-frontend",
            "--target",
            "wasm32-unknown-unknown",
        ],
    ] {
        let mut args = vec!["clippy", "--all-targets"];
        args.extend(target);
        args.extend(["--", "-D", "warnings"]);
        run("cargo", &args)?;
    }
    run(
        "cargo",
        &[
            "build",
            "-p",
            "stepwatch-events",
            "--target",
            "wasm32-unknown-unknown",
        ],
    )?;
    build_dashboard()?;
    run("cargo", &["build", "-p", "stepwatch-relay"])?;
    let build = t0.elapsed();

    run("cargo", &["test", "--workspace"])?;
    // Components and downsampling in headless Chromium (wasm-bindgen-test).
    if let Some(driver) = on_path("chromedriver") {
        std::env::set_var("CHROMEDRIVER", driver);
    }
    run(
        "cargo",
        &[
            "test",
            "-p",
            "stepwatch-frontend",
            "--target",
            "wasm32-unknown-unknown",
        ],
    )?;
    run(&py, &["-m", "ruff", "check", "clients/python", "examples"])?;
    run(
        &py,
        &[
            "-m",
            "ruff",
            "format",
            "--check",
            "clients/python",
            "examples",
        ],
    )?;
    // Framework tests fail rather than skip when a framework is missing.
    std::env::set_var("STEPWATCH_REQUIRE_FRAMEWORKS", "1");
    run(&py, &["-m", "pytest", "-q", "clients/python/tests"])?;
    eprintln!(
        "\nAll tests passed. tools {:.0}s, checks+build {:.0}s, tests {:.0}s",
        tools.as_secs_f64(),
        (build - tools).as_secs_f64(),
        (t0.elapsed() - build).as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    with_cargo_bin_on_path();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => cmd_run(&args[1..]),
        Some("test") => cmd_test(),
        Some("fuzz") => {
            // The property tests of stepwatch-events with many more cases than the test
            // command runs: parsing and the reducer against arbitrary input.
            let cases = args.get(1).map_or("50000", String::as_str);
            std::env::set_var("PROPTEST_CASES", cases);
            run(
                "cargo",
                &[
                    "test",
                    "--release",
                    "-p",
                    "stepwatch-events",
                    "--test",
                    "props",
                ],
            )
        }
        Some("bench") => {
            let only = &args[1..];
            let needs_ui = only.is_empty()
                || only
                    .iter()
                    .any(|g| ["size", "browser", "open"].contains(&g.as_str()));
            if needs_ui {
                ensure_web_tools()?;
                ensure_browser()?;
                build_dashboard()?;
            }
            run("cargo", &["build", "--release", "-p", "stepwatch-relay"])?;
            bench::run_all(&root(), &args[1..])
        }
        _ => {
            eprintln!(
                "usage: cargo xtask run [serve flags] | test | fuzz [cases] | bench [{}]",
                bench::GROUPS.join(" ")
            );
            std::process::exit(2)
        }
    }
}
