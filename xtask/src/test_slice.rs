//! `cargo xtask test [--suite NAME]… [--pg] [-- ARGS]`: the command line of the test
//! command, and the slices it can run instead of the whole check ([`crate::test::full`]).

use crate::proc::{output, root};
use crate::test::{
    build_relay, cargo_test, e2e_on_postgres, python_lints, python_tests, python_tests_on_postgres,
    wasm_tests, POSTGRES_SUITES,
};
use crate::tools::{
    build_dashboard, ensure_browser, ensure_python, ensure_test_packages, ensure_web_tools,
    start_postgres,
};
use anyhow::{bail, Result};
use std::path::PathBuf;

const HELP: &str = "\
usage: cargo xtask test [--suite NAME]... [--pg] [-- ARGS]

Without options: the whole check, as CI runs it. It installs what is missing (the wasm
toolchain, Chromium, PostgreSQL, the Python venv), checks formatting, runs clippy,
builds, runs every test on SQLite with a throwaway PostgreSQL server up, the relay's
suites again with every relay on PostgreSQL, the dashboard's wasm tests, ruff, mypy and pytest.

A slice runs only some of the tests (no format or lint checks), after building and
installing what they need, with the same throwaway PostgreSQL server up:

  --suite NAME  run NAME; repeat for more. NAME is one of
                  an end-to-end suite, a file of tests/tests/ (control, browser, ...)
                  e2e      every end-to-end suite
                  a workspace crate, its `stepwatch-` optional (relay, events, ...):
                           its own cargo tests
                  wasm     the dashboard's wasm tests in headless Chromium
                  python   ruff, mypy and pytest over clients/python
  --pg          only the PostgreSQL pass of the slice: the end-to-end suites named
                with every relay on PostgreSQL (those in the PostgreSQL list below),
                `postgres` (PostgreSQL-only tests), and for `python` the SDK's
                delivery, resilience and command tests on PostgreSQL. Without
                --suite: all of these.
  -- ARGS       passed to every test run of the slice: `cargo test ... -- ARGS`,
                `pytest ... ARGS` (a test-name filter, say)
  -h, --help    this text

Examples:
  cargo xtask test --suite control              control, relays on SQLite
  cargo xtask test --suite control --pg         control, relays on PostgreSQL
  cargo xtask test --pg --suite postgres        the PostgreSQL-only suite
  cargo xtask test --suite relay --suite python the relay crate's tests, then Python's
  cargo xtask test --suite control -- stop      control's tests whose name has `stop`
";

/// What a slice runs, in this order.
#[derive(Debug, Default)]
struct Slice {
    /// End-to-end suites by name (`tests/tests/NAME.rs`).
    e2e: Vec<String>,
    /// Every end-to-end suite.
    all_e2e: bool,
    /// Workspace crates by package name.
    crates: Vec<String>,
    wasm: bool,
    python: bool,
    /// Only the PostgreSQL pass.
    pg: bool,
    /// Arguments for the test runs.
    extra: Vec<String>,
}

/// `cargo xtask test ARGS`.
pub fn cmd_test(args: &[String]) -> Result<()> {
    if args.is_empty() {
        return crate::test::full();
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        println!("\nend-to-end suites: {}", e2e_suites().join(" "));
        println!("on PostgreSQL too (--pg): {}", POSTGRES_SUITES.join(" "));
        println!("crates: {}", workspace_crates().join(" "));
        return Ok(());
    }
    let slice = parse(args)?;
    if slice.pg {
        run_pg_pass(&slice)
    } else {
        run_slice(&slice)
    }
}

fn parse(args: &[String]) -> Result<Slice> {
    let mut slice = Slice::default();
    let mut names: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--pg" => slice.pg = true,
            "--suite" => match it.next() {
                Some(name) => names.push(name.clone()),
                None => bail!("--suite needs a name (cargo xtask test --help lists them)"),
            },
            "--" => slice.extra = it.by_ref().cloned().collect(),
            s if s.starts_with("--suite=") => names.push(s["--suite=".len()..].to_string()),
            other => bail!("unknown option {other:?} (cargo xtask test --help)"),
        }
    }
    if names.is_empty() && !slice.pg {
        bail!("`-- ARGS` needs --suite or --pg (cargo xtask test --help)");
    }
    let (suites, crates) = (e2e_suites(), workspace_crates());
    for name in names {
        let package = format!("stepwatch-{name}");
        match name.as_str() {
            n if suites.iter().any(|s| s == n) => slice.e2e.push(name),
            "e2e" => slice.all_e2e = true,
            "wasm" => slice.wasm = true,
            "python" => slice.python = true,
            n if crates.iter().any(|c| c == n) => slice.crates.push(name),
            _ if crates.contains(&package) => slice.crates.push(package),
            _ => bail!(
                "unknown suite {name:?}; end-to-end suites: {}; also e2e, wasm, python, \
                 or a crate: {}",
                suites.join(" "),
                crates.join(" ")
            ),
        }
    }
    if names_none(&slice) {
        // `--pg` alone: every suite with a PostgreSQL pass.
        slice.all_e2e = true;
        slice.python = true;
    }
    Ok(slice)
}

fn names_none(s: &Slice) -> bool {
    s.e2e.is_empty() && !s.all_e2e && s.crates.is_empty() && !s.wasm && !s.python
}

/// The end-to-end suites: the files of `tests/tests/`.
fn e2e_suites() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("tests/tests"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".rs").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The workspace's package names, from `cargo metadata`.
fn workspace_crates() -> Vec<String> {
    let meta = output(
        "cargo",
        &[
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ],
    )
    .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
    .unwrap_or_default();
    let mut names: Vec<String> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Whether an end-to-end suite opens the built dashboard (so `dist/` is rebuilt first).
fn needs_dashboard(suite: &str) -> bool {
    let text =
        std::fs::read_to_string(root().join(format!("tests/tests/{suite}.rs"))).unwrap_or_default();
    ["Browser::", "with_dashboard", "dist()"]
        .iter()
        .any(|s| text.contains(s))
}

/// What every slice with end-to-end, crate or Python tests needs: the relay binary,
/// Debian's packages, the venv, and the dashboard when a suite opens it.
fn prepare(slice: &Slice) -> Result<Option<PathBuf>> {
    let e2e = slice.all_e2e || !slice.e2e.is_empty();
    if slice.wasm || slice.all_e2e || slice.e2e.iter().any(|s| needs_dashboard(s)) {
        ensure_web_tools()?;
    }
    if slice.wasm {
        ensure_browser()?;
    }
    let py = if e2e || slice.python {
        Some(ensure_python()?)
    } else {
        None
    };
    if slice.all_e2e || slice.e2e.iter().any(|s| needs_dashboard(s)) {
        build_dashboard()?;
    }
    if e2e || slice.python || !slice.crates.is_empty() {
        build_relay()?;
    }
    if slice.all_e2e || slice.e2e.iter().any(|s| s == "wheels") {
        crate::dist::dist()?;
    }
    Ok(py)
}

/// A slice on its ordinary backends (SQLite, the PostgreSQL server up for the tests
/// that want one).
fn run_slice(slice: &Slice) -> Result<()> {
    let mut plan: Vec<String> = Vec::new();
    if slice.all_e2e {
        plan.push("every end-to-end suite".into());
    }
    if !slice.e2e.is_empty() {
        plan.push(format!("end-to-end suites {}", slice.e2e.join(", ")));
    }
    if !slice.crates.is_empty() {
        plan.push(format!("cargo tests of {}", slice.crates.join(", ")));
    }
    if slice.wasm {
        plan.push("the dashboard's wasm tests".into());
    }
    if slice.python {
        plan.push("ruff, mypy and pytest over clients/python".into());
    }
    announce(&plan.join("; then "), slice);
    let needs_pg = slice.all_e2e || !slice.e2e.is_empty() || !slice.crates.is_empty();
    let py = prepare(slice)?;
    let pg_bin = if needs_pg || slice.python {
        Some(ensure_test_packages()?)
    } else {
        None
    };
    let _pg = pg_bin.as_deref().map(start_postgres).transpose()?;
    if slice.all_e2e {
        cargo_test(&["-p", "stepwatch-e2e"], &slice.extra, &[])?;
    } else if !slice.e2e.is_empty() {
        let mut args = vec!["-p", "stepwatch-e2e"];
        for suite in &slice.e2e {
            args.extend(["--test", suite.as_str()]);
        }
        cargo_test(&args, &slice.extra, &[])?;
    }
    if !slice.crates.is_empty() {
        let mut args = Vec::new();
        for krate in &slice.crates {
            args.extend(["-p", krate.as_str()]);
        }
        cargo_test(&args, &slice.extra, &[])?;
    }
    if slice.wasm {
        wasm_tests(&slice.extra)?;
    }
    if let (true, Some(py)) = (slice.python, &py) {
        python_lints(py)?;
        python_tests(py, &slice.extra)?;
    }
    eprintln!("\nThe slice passed.");
    Ok(())
}

/// The PostgreSQL pass of a slice: its end-to-end suites with every relay on
/// PostgreSQL, `postgres`, and Python's PostgreSQL tests.
fn run_pg_pass(slice: &Slice) -> Result<()> {
    if !slice.crates.is_empty() || slice.wasm {
        bail!(
            "--pg: crates and wasm have no PostgreSQL pass (a crate's PostgreSQL tests run \
             in its ordinary slice, without --pg)"
        );
    }
    let chosen: Vec<&str> = if slice.all_e2e {
        let mut all = POSTGRES_SUITES.to_vec();
        all.push("postgres");
        all
    } else {
        slice.e2e.iter().map(String::as_str).collect()
    };
    if let Some(s) = chosen
        .iter()
        .find(|s| **s != "postgres" && !POSTGRES_SUITES.contains(s))
    {
        bail!(
            "--pg: suite {s} has no PostgreSQL pass (it runs on SQLite only); suites with \
             one: {} postgres",
            POSTGRES_SUITES.join(" ")
        );
    }
    let on_pg: Vec<&str> = chosen
        .iter()
        .copied()
        .filter(|s| *s != "postgres")
        .collect();
    let mut plan: Vec<String> = Vec::new();
    if chosen.contains(&"postgres") {
        plan.push("the PostgreSQL-only suite postgres".into());
    }
    if !on_pg.is_empty() {
        plan.push(format!(
            "end-to-end suites {} with every relay on PostgreSQL",
            on_pg.join(", ")
        ));
    }
    if slice.python {
        plan.push("Python's delivery, resilience and command tests on PostgreSQL".into());
    }
    announce(&plan.join("; then "), slice);
    let py = prepare(slice)?;
    let pg = start_postgres(&ensure_test_packages()?)?;
    if chosen.contains(&"postgres") {
        cargo_test(
            &["-p", "stepwatch-e2e", "--test", "postgres"],
            &slice.extra,
            &[],
        )?;
    }
    if !on_pg.is_empty() {
        e2e_on_postgres(&on_pg, &slice.extra)?;
    }
    if let (true, Some(py)) = (slice.python, &py) {
        python_tests_on_postgres(py, &slice.extra)?;
    }
    drop(pg);
    eprintln!("\nThe slice passed (PostgreSQL pass).");
    Ok(())
}

fn announce(plan: &str, slice: &Slice) {
    let extra = if slice.extra.is_empty() {
        String::new()
    } else {
        format!(" (test arguments: {})", slice.extra.join(" "))
    };
    eprintln!("cargo xtask test, a slice: {plan}{extra}");
}
