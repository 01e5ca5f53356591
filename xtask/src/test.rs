//! `cargo xtask test` without options: the whole check as CI runs it (tools installed
//! when missing, format and lints, builds, every test on SQLite and again on PostgreSQL,
//! the wasm and Python tests); and the test steps the slices of `test_slice` reuse.

use crate::proc::{on_path, output, run, run_env};
use crate::tools::{
    build_dashboard, ensure_python, ensure_test_packages, ensure_web_tools, start_postgres,
};
use anyhow::Result;
use std::path::Path;
use std::time::Instant;

/// The end-to-end suites that run a second time with every relay on PostgreSQL: those
/// that start relays through `Relay::start`. `faults` stays SQLite-only (it fills a
/// small disk under the SQLite file); `postgres` picks its backends itself.
pub const POSTGRES_SUITES: &[&str] = &[
    "relay_http",
    "series",
    "history",
    "control",
    "dashboard",
    "browser",
    "auth",
    "auth_browser",
    "launch",
    "alerts",
    "alerts_rules",
    "meta",
    "media",
];

/// The Python tests that run again with the relay on PostgreSQL.
const PYTHON_POSTGRES_TESTS: &[&str] = &[
    "clients/python/tests/test_delivery.py",
    "clients/python/tests/test_resilience.py",
    "clients/python/tests/test_commands.py",
];

/// The whole check: what README's test command and CI run.
pub fn full() -> Result<()> {
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

    format_and_lints()?;
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
    build_relay()?;
    // The wheels the `wheels` suite installs into fresh venvs.
    crate::dist::dist()?;
    let build = t0.elapsed();

    // A throwaway PostgreSQL server for everything below; dropping it (at the end, or
    // when a step fails) stops it and deletes its directory.
    let pg = start_postgres(&pg_bin)?;
    run("cargo", &["test", "--workspace"])?;
    // The relay's own suites again, every relay on a fresh PostgreSQL database.
    e2e_on_postgres(POSTGRES_SUITES, &[])?;
    quick_start_dashboard()?;
    wasm_tests(&[])?;
    python_lints(&py)?;
    python_tests(&py, &[])?;
    python_tests_on_postgres(&py, &[])?;
    drop(pg);
    eprintln!(
        "\nAll tests passed. tools {:.0}s, checks+build {:.0}s, tests {:.0}s",
        tools.as_secs_f64(),
        (build - tools).as_secs_f64(),
        (t0.elapsed() - build).as_secs_f64()
    );
    Ok(())
}

/// `cargo fmt --check`, then clippy natively for the whole workspace and for the
/// dashboard as the browser builds it.
fn format_and_lints() -> Result<()> {
    run("cargo", &["fmt", "--all", "--check"])?;
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
    Ok(())
}

/// The dashboard as `cargo xtask run` builds it (without trunk, `crate::bundle`) shows
/// a live trainer in the browser: the browser suite's live test against that build.
pub fn quick_start_dashboard() -> Result<()> {
    let dist = crate::proc::root().join("target/quick-start-dist");
    crate::bundle::bundle_dashboard(&dist)?;
    let dist = dist.to_string_lossy().into_owned();
    cargo_test(
        &["-p", "stepwatch-e2e", "--test", "browser"],
        &["a_python_trainer_is_seen_live_in_the_browser".into()],
        &[("STEPWATCH_DIST", dist.as_str())],
    )
}

/// The relay binary the tests start (`target/debug/stepwatch`).
pub fn build_relay() -> Result<()> {
    run("cargo", &["build", "-p", "stepwatch-relay"])
}

/// `cargo test` with `args` and, when there are any, `-- extra` for the test binaries.
pub fn cargo_test(args: &[&str], extra: &[String], env: &[(&str, &str)]) -> Result<()> {
    let mut all = vec!["test"];
    all.extend(args);
    if !extra.is_empty() {
        all.push("--");
        all.extend(extra.iter().map(String::as_str));
    }
    run_env("cargo", &all, env)
}

/// End-to-end `suites` with every relay of `Relay::start` on a fresh PostgreSQL
/// database (needs the server of [`start_postgres`]).
pub fn e2e_on_postgres(suites: &[&str], extra: &[String]) -> Result<()> {
    let mut args = vec!["-p", "stepwatch-e2e"];
    for suite in suites {
        args.extend(["--test", suite]);
    }
    cargo_test(&args, extra, &[("STEPWATCH_TEST_BACKEND", "postgres")])
}

/// Components and downsampling in headless Chromium (wasm-bindgen-test).
pub fn wasm_tests(extra: &[String]) -> Result<()> {
    if let Some(driver) = on_path("chromedriver") {
        std::env::set_var("CHROMEDRIVER", driver);
    }
    cargo_test(
        &[
            "-p",
            "stepwatch-frontend",
            "--target",
            "wasm32-unknown-unknown",
        ],
        extra,
        &[],
    )
}

/// ruff's lints and format check over the Python SDK and the examples, and mypy's strict
/// type check of the SDK (it ships `py.typed`; config in clients/python/pyproject.toml).
pub fn python_lints(py: &Path) -> Result<()> {
    run(
        py,
        &[
            "-m",
            "ruff",
            "check",
            "clients/python",
            "examples",
            "tests/kube-standin",
            "tests/ddp",
        ],
    )?;
    run(
        py,
        &[
            "-m",
            "ruff",
            "format",
            "--check",
            "clients/python",
            "examples",
            "tests/kube-standin",
            "tests/ddp",
        ],
    )?;
    run(
        py,
        &[
            "-m",
            "mypy",
            "--config-file",
            "clients/python/pyproject.toml",
            "clients/python/src/stepwatch",
        ],
    )
}

/// The Python SDK's tests (`extra`: more pytest arguments).
pub fn python_tests(py: &Path, extra: &[String]) -> Result<()> {
    // Framework tests fail rather than skip when a framework is missing.
    std::env::set_var("STEPWATCH_REQUIRE_FRAMEWORKS", "1");
    let mut args = vec!["-m", "pytest", "-q", "clients/python/tests"];
    args.extend(extra.iter().map(String::as_str));
    run(py, &args)
}

/// The SDK's delivery, resilience and command tests again with the relay on PostgreSQL.
pub fn python_tests_on_postgres(py: &Path, extra: &[String]) -> Result<()> {
    let mut args = vec!["-m", "pytest", "-q"];
    args.extend(PYTHON_POSTGRES_TESTS);
    args.extend(extra.iter().map(String::as_str));
    run_env(py, &args, &[("STEPWATCH_TEST_BACKEND", "postgres")])
}
