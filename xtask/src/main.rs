//! `cargo xtask run | test | fuzz | bench | dist`: the project's two quick-start commands,
//! its long property tests, its benchmarks and its Python packages. Each installs what it needs on a fresh
//! machine, skipping what is there.
//!
//! `proc`: running programs; `tools`: installing them; `test`: the whole test command;
//! `test_slice`: its options and slices; `bench`: the benchmarks; `dist`: the wheels.

use anyhow::Result;

mod bench;
mod bundle;
mod dist;
mod proc;
mod test;
mod test_slice;
mod tools;

use proc::{root, run, with_cargo_bin_on_path};
use tools::{build_dashboard, ensure_browser, ensure_web_tools};

/// `cargo xtask run`: the dashboard and the release relay, serving with a demo run.
/// The quick start: the dashboard bundled without trunk and the relay as the tests
/// build it (`target/debug`, shared with `cargo xtask test`); `--release` builds the
/// optimised relay instead (as the benchmarks do).
fn cmd_run(extra: &[String]) -> Result<()> {
    let release = extra.iter().any(|a| a == "--release");
    tools::ensure_wasm_tools()?;
    bundle::bundle_dashboard(&root().join("dist"))?;
    let relay = if release {
        run("cargo", &["build", "--release", "-p", "stepwatch-relay"])?;
        "target/release/stepwatch"
    } else {
        run("cargo", &["build", "-p", "stepwatch-relay"])?;
        "target/debug/stepwatch"
    };
    let mut args = vec!["serve".to_string(), "--dist".into(), "dist".into()];
    if !extra.iter().any(|a| a == "--no-demo") {
        args.push("--demo".into());
    }
    let ours = ["--no-demo", "--release"];
    args.extend(
        extra
            .iter()
            .filter(|a| !ours.contains(&a.as_str()))
            .cloned(),
    );
    eprintln!("\nStepwatch: open http://127.0.0.1:8080 (Ctrl-C to stop)\n");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(root().join(relay), &refs)
}

fn main() -> Result<()> {
    with_cargo_bin_on_path();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => cmd_run(&args[1..]),
        Some("test") => test_slice::cmd_test(&args[1..]),
        Some("dist") => dist::dist(),
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
                "usage: cargo xtask run [serve flags]\n       \
                 cargo xtask test [--suite NAME]... [--pg] [-- ARGS]   (test --help)\n       \
                 cargo xtask fuzz [cases]\n       \
                 cargo xtask dist   (the SDK and server wheels into target/wheels)\n       \
                 cargo xtask bench [{}]",
                bench::GROUPS.join(" ")
            );
            std::process::exit(2)
        }
    }
}
