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
/// The end-to-end suites that run a second time with every relay on PostgreSQL: those
/// that start relays through `Relay::start`. `faults` stays SQLite-only (it fills a
/// small disk under the SQLite file); `postgres` picks its backends itself.
const POSTGRES_SUITES: &[&str] = &[
    "relay_http",
    "series",
    "history",
    "control",
    "dashboard",
    "browser",
    "auth",
    "auth_browser",
];

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
    run_env(program, args, &[])
}

/// As [`run`], with extra environment variables for the command.
fn run_env(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<()> {
    let program = program.as_ref();
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!(
        "\n▶ {}{} {}",
        shown.concat(),
        program.to_string_lossy(),
        args.join(" ")
    );
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
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

/// Installs Debian packages (with sudo unless root).
fn apt_install(packages: &[&str]) -> Result<()> {
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
    install.extend(packages);
    std::env::set_var("DEBIAN_FRONTEND", "noninteractive");
    run(prog, &install)
}

fn browser_missing() -> bool {
    on_path("chromium").is_none()
        || on_path("chromedriver").is_none()
        || !Path::new("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc").exists()
}

/// Chromium, chromedriver and a CJK font, from Debian's packages.
fn ensure_browser() -> Result<()> {
    if browser_missing() {
        apt_install(APT_PACKAGES)?;
    }
    Ok(())
}

/// What the tests need from Debian (one apt-get run): the browser packages and
/// PostgreSQL's server programs (initdb, pg_ctl), looked for on PATH and in
/// /usr/lib/postgresql/*/bin first; returns PostgreSQL's program directory.
fn ensure_test_packages() -> Result<PathBuf> {
    let mut missing: Vec<&str> = Vec::new();
    if browser_missing() {
        missing.extend(APT_PACKAGES);
    }
    if stepwatch_e2e::pg_bin_dir().is_none() {
        missing.push("postgresql");
    }
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    stepwatch_e2e::pg_bin_dir().context(
        "PostgreSQL's initdb and pg_ctl are neither on PATH nor in /usr/lib/postgresql/*/bin",
    )
}

/// A throwaway PostgreSQL server for the tests (a fresh cluster in the temp dir, on a
/// free loopback port), announced to them through the environment. Dropping it stops
/// the server and deletes its directory, whether the tests passed or not.
fn start_postgres(bin: &Path) -> Result<stepwatch_e2e::PgCluster> {
    let stale = stepwatch_e2e::remove_stale_clusters(bin);
    if stale > 0 {
        eprintln!("removed {stale} PostgreSQL test cluster(s) left by interrupted runs");
    }
    eprintln!("\n▶ PostgreSQL: initdb + pg_ctl start ({})", bin.display());
    let pg = stepwatch_e2e::PgCluster::try_start_with(bin, "xtask")
        .map_err(|e| anyhow::anyhow!("cannot start a PostgreSQL server for the tests: {e}"))?;
    eprintln!(
        "  listening at {} (data in {})",
        pg.url(),
        pg.dir().display()
    );
    std::env::set_var("STEPWATCH_TEST_PG", pg.url());
    std::env::set_var("STEPWATCH_TEST_PG_BIN", bin);
    std::env::set_var("STEPWATCH_REQUIRE_POSTGRES", "1");
    Ok(pg)
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
    // A build from scratch gains nothing from incremental caches, and they would add a
    // fifth to target/. A clean run needs about 9 GB of disk in all (target/ and the
    // Python venv, whose torch wheel brings CUDA libraries even for CPU use).
    if std::env::var_os("CARGO_INCREMENTAL").is_none() {
        std::env::set_var("CARGO_INCREMENTAL", "0");
    }
    if let Some(df) = output("df", &["-h", "--output=avail", "."]) {
        let avail = df.lines().last().unwrap_or("").trim().to_string();
        eprintln!("disk available here: {avail} (a clean `cargo xtask test` needs about 9 GB)");
    }
    ensure_web_tools()?;
    let pg_bin = ensure_test_packages()?;
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

    // A throwaway PostgreSQL server for everything below; dropping it (at the end, or
    // when a step fails) stops it and deletes its directory.
    let pg = start_postgres(&pg_bin)?;
    run("cargo", &["test", "--workspace"])?;
    // The relay's own suites again, every relay on a fresh PostgreSQL database.
    let mut args = vec!["test", "-p", "stepwatch-e2e"];
    for suite in POSTGRES_SUITES {
        args.extend(["--test", suite]);
    }
    run_env("cargo", &args, &[("STEPWATCH_TEST_BACKEND", "postgres")])?;
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
    // The SDK's delivery, resilience and command tests again with the relay on PostgreSQL.
    run_env(
        &py,
        &[
            "-m",
            "pytest",
            "-q",
            "clients/python/tests/test_delivery.py",
            "clients/python/tests/test_resilience.py",
            "clients/python/tests/test_commands.py",
        ],
        &[("STEPWATCH_TEST_BACKEND", "postgres")],
    )?;
    drop(pg);
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
