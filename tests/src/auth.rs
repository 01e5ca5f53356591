//! Auth fixtures: a config with one user per role, their tokens, and password hashes.

use crate::relay::relay_bin;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The trainer token of [`auth_config`] (role trainer, runs starting with `ci-`).
pub const TRAINER_TOKEN: &str = "ci-trainer-token-0123456789";
/// The admin token of [`auth_config`].
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// An Argon2 hash made by the relay's own `stepwatch hash-password`.
pub fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(relay_bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Writes `dir/stepwatch.toml` with users root (admin, password root-pw and
/// [`ADMIN_TOKEN`]), vera (viewer, vera-pw), otto (operator, otto-pw) and ci (trainer,
/// [`TRAINER_TOKEN`], runs `ci-*`); `extra` goes first (settings).
pub fn auth_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("stepwatch.toml");
    let text = format!(
        r#"{extra}
[[users]]
name = "root"
role = "admin"
password_hash = "{admin}"
tokens = ["{ADMIN_TOKEN}"]

[[users]]
name = "vera"
role = "viewer"
password_hash = "{viewer}"

[[users]]
name = "otto"
role = "operator"
password_hash = "{operator}"

[[users]]
name = "ci"
role = "trainer"
tokens = ["{TRAINER_TOKEN}"]
run_prefix = "ci-"
"#,
        admin = hash_password("root-pw"),
        viewer = hash_password("vera-pw"),
        operator = hash_password("otto-pw"),
    );
    std::fs::write(&path, text).unwrap();
    path
}
