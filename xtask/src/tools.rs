//! What the commands need on a fresh machine, installed unless present: the wasm
//! toolchain, Debian's browser, PostgreSQL and Slurm packages, the Python venv (with
//! Ray); and the
//! throwaway PostgreSQL server the tests run against.

use crate::proc::{cargo_bin, on_path, output, root, run};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

const TRUNK_VERSION: &str = "0.21.14";
const WASM_BINDGEN_VERSION: &str = "0.2.130";
/// Binaryen's `wasm-opt`, run by trunk on the dashboard's wasm (`data-wasm-opt` in
/// index.html); must equal `[tools] wasm_opt` in Trunk.toml.
const BINARYEN_VERSION: &str = "132";
const APT_PACKAGES: &[&str] = &["chromium", "chromium-driver", "fonts-wqy-zenhei"];
/// A one-node Slurm cluster for the launch tests (the Slurm engine).
const SLURM_PACKAGES: &[&str] = &["slurmctld", "slurmd", "slurm-client", "munge"];

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

/// The wasm target, trunk, a matching wasm-bindgen CLI and wasm-opt.
pub fn ensure_web_tools() -> Result<()> {
    ensure_wasm_tools()?;
    ensure_wasm_opt()?;
    // Without its default features (the crates.io update check and TLS for `trunk serve`,
    // neither usable offline): 382 s to compile here instead of 419 s, the same dist/
    // byte for byte.
    ensure_cargo_tool(
        "trunk",
        "trunk",
        TRUNK_VERSION,
        &["--locked", "--no-default-features"],
    )
}

/// The wasm target and wasm-bindgen: all `cargo xtask run` needs (it bundles without
/// trunk, `crate::bundle`).
pub fn ensure_wasm_tools() -> Result<()> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if !installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        run("rustup", &["target", "add", "wasm32-unknown-unknown"])?;
    }
    // Not --locked: its lockfile names a webpki-roots release the registry lacks.
    ensure_cargo_tool(
        "wasm-bindgen",
        "wasm-bindgen-cli",
        WASM_BINDGEN_VERSION,
        &["--force"],
    )
}

/// Binaryen's `wasm-opt` at [`BINARYEN_VERSION`] on PATH for trunk, which would
/// otherwise download it from GitHub: the one on PATH when it is that version, else
/// npm's `binaryen` package (its Node.js build) installed once into
/// `~/.cache/stepwatch/binaryen` and put first on PATH for what runs next.
fn ensure_wasm_opt() -> Result<()> {
    let wanted = format!("version {BINARYEN_VERSION} ");
    let is_wanted = |bin: &str| output(bin, &["--version"]).is_some_and(|v| v.contains(&wanted));
    if is_wanted("wasm-opt") {
        return Ok(());
    }
    let home = std::env::var_os("HOME").map_or_else(|| root().join("target"), PathBuf::from);
    let dir = home.join(".cache/stepwatch/binaryen");
    let bin = dir.join("node_modules/.bin");
    if !is_wanted(&bin.join("wasm-opt").to_string_lossy()) {
        if on_path("npm").is_none() {
            apt_install(&["npm"])?;
        }
        std::fs::create_dir_all(&dir)?;
        let package = format!("binaryen@{BINARYEN_VERSION}.0.0");
        let prefix = dir.to_string_lossy();
        run(
            "npm",
            &["install", "--no-save", "--prefix", &prefix, &package],
        )?;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(bin).chain(std::env::split_paths(&path));
    std::env::set_var("PATH", std::env::join_paths(paths)?);
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
pub fn ensure_browser() -> Result<()> {
    if browser_missing() {
        apt_install(APT_PACKAGES)?;
    }
    Ok(())
}

/// What the tests need from Debian (one apt-get run): the browser packages and
/// PostgreSQL's server programs (initdb, pg_ctl), looked for on PATH and in
/// /usr/lib/postgresql/*/bin first; returns PostgreSQL's program directory.
pub fn ensure_test_packages() -> Result<PathBuf> {
    let mut missing: Vec<&str> = Vec::new();
    if browser_missing() {
        missing.extend(APT_PACKAGES);
    }
    if stepwatch_e2e::pg_bin_dir().is_none() {
        missing.push("postgresql");
    }
    if on_path("sbatch").is_none()
        || !Path::new("/usr/sbin/slurmctld").exists()
        || !Path::new("/usr/sbin/munged").exists()
    {
        missing.extend(SLURM_PACKAGES);
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
pub fn start_postgres(bin: &Path) -> Result<stepwatch_e2e::PgCluster> {
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

/// A venv in `.venv` with the Python test tools. A fresh checkout's `.venv` is a link to
/// one venv kept outside it (`~/.cache/stepwatch/venv`), so torch and the frameworks are
/// installed once per machine, not once per clone.
pub fn ensure_python() -> Result<PathBuf> {
    let venv = root().join(".venv");
    let py = venv.join("bin/python");
    if !py.exists() && std::fs::symlink_metadata(&venv).is_err() {
        if let Some(home) = std::env::var_os("HOME") {
            let shared = PathBuf::from(home).join(".cache/stepwatch/venv");
            if !shared.join("bin/python").exists() {
                std::fs::create_dir_all(shared.parent().unwrap_or(&shared))?;
                run("python3", &["-m", "venv", &shared.to_string_lossy()])?;
            }
            std::os::unix::fs::symlink(&shared, &venv)?;
        }
    }
    if !py.exists() {
        run("python3", &["-m", "venv", venv.to_str().unwrap_or(".venv")])?;
    }
    pip_ensure(
        &py,
        "pytest, ruff, mypy",
        &["pytest>=7", "ruff>=0.5", "mypy>=1.8"],
    )?;
    // The integration tests run against the real frameworks (torch on CPU, Lightning,
    // transformers); the SDK itself depends on none of them.
    pip_ensure(
        &py,
        "torch, lightning, transformers, accelerate",
        &["torch", "lightning", "transformers", "accelerate"],
    )?;
    // The read API returns a DataFrame when pandas is there (it stays optional: the
    // tests cover both paths).
    pip_ensure(&py, "pandas", &["pandas"])?;
    // The SMTP server the alerts suite sends its e-mail to (tests/smtp-sink/sink.py).
    pip_ensure(&py, "aiosmtpd", &["aiosmtpd"])?;
    // A local Ray head for the launch tests (the Ray engine's Jobs API).
    pip_ensure(&py, "ray.dashboard", &["ray[default]"])?;
    // Installed: the Ray suite must run, not skip.
    std::env::set_var("STEPWATCH_REQUIRE_RAY", "1");
    Ok(py)
}

/// `trunk build --release`: the dashboard into `dist/`.
pub fn build_dashboard() -> Result<()> {
    run("trunk", &["build", "--release"])
}

/// Installs `packages` into the venv of `py` unless `modules` already import.
fn pip_ensure(py: &Path, modules: &str, packages: &[&str]) -> Result<()> {
    let py_str = py.to_str().unwrap_or("python");
    if output(py_str, &["-c", &format!("import {modules}")]).is_some() {
        return Ok(());
    }
    let mut args = vec!["-m", "pip", "install", "--quiet"];
    args.extend_from_slice(packages);
    run(py, &args)
}
