//! The Python packages as a user installs them: the wheels `cargo xtask dist` built into
//! `target/wheels/` go into fresh venvs (offline, `pip install --no-index`). With
//! `stepwatch[server]`, `stepwatch serve` — run with no Rust on PATH, from an empty
//! folder, no `--dist` — serves the dashboard built into the binary and stores what the
//! SDK from the same venv sends. With the SDK alone, `stepwatch serve` says what to
//! install. The server wheel is tagged for old glibc and its binary asks for no newer.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use stepwatch_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

fn wheels() -> PathBuf {
    repo().join("target/wheels")
}

/// The one built file whose name starts with `prefix` and ends with `suffix`.
fn built(prefix: &str, suffix: &str) -> PathBuf {
    let dir = wheels();
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}: run `cargo xtask dist` first", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(suffix)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{prefix}*{suffix} in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

/// PATH for the user's commands: the venv's scripts and the system's, no cargo.
fn user_path(venv: &Path) -> String {
    format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        venv.join("bin").display()
    )
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh venv with `spec` installed from the built wheels only.
fn venv_with(dir: &Path, spec: &str) -> PathBuf {
    let venv = dir.join("venv");
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .unwrap();
    ok(&made, "python3 -m venv");
    let pip = Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
        ])
        .arg(wheels())
        .arg(spec)
        .output()
        .unwrap();
    ok(&pip, &format!("pip install {spec}"));
    venv
}

/// `stepwatch ARGS` from the venv, as a user's shell runs it, in `cwd`.
fn stepwatch(venv: &Path, cwd: &Path) -> Command {
    let mut c = Command::new(venv.join("bin/stepwatch"));
    c.current_dir(cwd)
        .env("PATH", user_path(venv))
        .env_remove("STEPWATCH_DIST")
        .env_remove("STEPWATCH_SERVER_BIN")
        .env_remove("CARGO_HOME")
        .env_remove("RUSTUP_HOME");
    c
}

fn get(url: &str, br: bool) -> (u16, String, Vec<u8>, String) {
    let mut req = ureq::get(url);
    if br {
        req = req.set("Accept-Encoding", "br");
    }
    let r = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = r.status();
    let ct = r.header("content-type").unwrap_or("").to_string();
    let enc = r.header("content-encoding").unwrap_or("").to_string();
    let mut body = Vec::new();
    r.into_reader().read_to_end(&mut body).unwrap();
    (status, ct, body, enc)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stepwatch_serve_from_the_wheels_serves_the_built_in_dashboard_and_takes_events() {
    let dir = TempDir::new("wheels-server");
    let venv = venv_with(&dir.0, "stepwatch[server]");
    let empty = dir.0.join("here");
    std::fs::create_dir_all(&empty).unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = Server(
        stepwatch(&venv, &empty)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(["--data-dir", "data"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until("the server up", WAIT, || {
        ureq::get(&format!("{url}/healthz")).call().ok().map(|_| ())
    });

    // The page and its wasm, from inside the binary: nothing named dist is around.
    assert!(!empty.join("dist").exists());
    let (status, ct, page, _) = get(&format!("{url}/"), false);
    assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));
    let page = String::from_utf8(page).unwrap();
    let wasm = page
        .split(['"', '\''])
        .find(|s| s.ends_with("_bg.wasm"))
        .unwrap_or_else(|| panic!("no wasm named in the page: {page}"))
        .trim_start_matches('/')
        .to_string();
    let (status, ct, body, enc) = get(&format!("{url}/{wasm}"), true);
    assert_eq!(
        (status, ct.as_str(), enc.as_str()),
        (200, "application/wasm", "br")
    );
    assert!(body.len() > 50_000, "{} bytes", body.len());
    let (status, _, _, _) = get(&format!("{url}/no-such-file.js"), false);
    assert_eq!(status, 404);
    let (status, ct, _, _) = get(&format!("{url}/runs/some-run"), false);
    assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));

    // A trainer on the SDK from the same venv (no PYTHONPATH into the checkout).
    let code = "import stepwatch\n\
                stepwatch.connect()\n\
                stepwatch.emit_training_start(total_epochs=1, total_batches=50)\n\
                for i in range(50):\n    stepwatch.emit_batch_end(batch_idx=i, loss=1.0 / (i + 1))\n\
                stepwatch.emit_training_end()\n\
                assert stepwatch.flush(10)\n\
                print(stepwatch.__file__)\n";
    let trainer = Command::new(venv.join("bin/python"))
        .args(["-c", code])
        .current_dir(&empty)
        .env("PATH", user_path(&venv))
        .env_remove("PYTHONPATH")
        .env("STEPWATCH_URL", &url)
        .env("STEPWATCH_RUN", "from-the-wheel")
        .env("STEPWATCH_SPOOL_DIR", dir.0.join("spool"))
        .output()
        .unwrap();
    ok(&trainer, "the trainer");
    let sdk_file = String::from_utf8_lossy(&trainer.stdout);
    assert!(
        sdk_file.contains("site-packages"),
        "the SDK came from {sdk_file}"
    );
    let state: Value = ureq::get(&format!("{url}/api/runs/from-the-wheel"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(state["status"], "completed", "{state}");
    assert_eq!(state["batch_count"], 50, "{state}");

    // The exec'd server is the process the shell started: SIGTERM ends it cleanly.
    let pid = server.0.id().to_string();
    ok(
        &Command::new("kill").args(["-TERM", &pid]).output().unwrap(),
        "kill -TERM",
    );
    let status = wait_until("the server gone", WAIT, || server.0.try_wait().unwrap());
    let mut log = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("built-in dashboard"), "{log}");
}

#[test]
fn stepwatch_serve_without_the_server_package_says_what_to_install() {
    let dir = TempDir::new("wheels-sdk-only");
    let venv = venv_with(&dir.0, "stepwatch");
    let out = stepwatch(&venv, &dir.0)
        .args(["serve", "--bind", "127.0.0.1:1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("pip install \"stepwatch[server]\""), "{err}");
    // The SDK's own commands still work.
    let help = stepwatch(&venv, &dir.0).arg("--help").output().unwrap();
    ok(&help, "stepwatch --help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("sync"));
}

#[test]
fn the_server_wheel_runs_on_old_glibc_and_its_sdist_carries_the_dashboard() {
    let wheel = built("stepwatch_server-", ".whl");
    let name = wheel.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.contains("manylinux2014") || name.contains("manylinux_2_17"),
        "{name}"
    );
    let dir = TempDir::new("wheels-glibc");
    let unzip = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&dir.0)
        .output()
        .unwrap();
    ok(&unzip, "unzip the wheel");
    let bin = dir
        .0
        .join("stepwatch_server-0.1.0.data/scripts/stepwatch-server");
    assert!(bin.is_file(), "no {}", bin.display());
    let syms = Command::new("objdump")
        .arg("-T")
        .arg(&bin)
        .output()
        .unwrap();
    ok(&syms, "objdump -T");
    let text = String::from_utf8_lossy(&syms.stdout);
    let newest = text
        .split("GLIBC_")
        .skip(1)
        .filter_map(|s| {
            let v: String = s
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            Some((it.next()?, it.next().unwrap_or(0)))
        })
        .max()
        .unwrap();
    assert!(newest <= (2, 17), "needs GLIBC_{}.{}", newest.0, newest.1);

    let sdist = built("stepwatch_server-", ".tar.gz");
    let list = Command::new("tar").arg("tzf").arg(&sdist).output().unwrap();
    ok(&list, "tar tzf");
    let files = String::from_utf8_lossy(&list.stdout);
    assert!(
        files
            .lines()
            .any(|l| l.contains("relay/dashboard-dist/") && l.ends_with("_bg.wasm")),
        "{files}"
    );
    assert!(
        files.lines().any(|l| l.ends_with("relay/build.rs")),
        "{files}"
    );
}
