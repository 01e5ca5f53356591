//! Relay processes: the `stepwatch` binary on a free loopback port with its own data
//! dir (and database), started, killed and restarted; and the paths and temp dirs they use.

use crate::pg::test_backend_database;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The relay binary: `$STEPWATCH_BIN`, else `target/debug/stepwatch`.
pub fn relay_bin() -> PathBuf {
    let p = std::env::var_os("STEPWATCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/debug/stepwatch"));
    assert!(
        p.exists(),
        "relay binary {} missing: run `cargo build -p stepwatch-relay` (cargo xtask test does)",
        p.display()
    );
    p
}

/// The built dashboard: `$STEPWATCH_DIST`, else `dist/` (trunk build --release).
pub fn dist() -> PathBuf {
    let d = std::env::var_os("STEPWATCH_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("dist"));
    assert!(
        d.join("index.html").exists(),
        "no built dashboard in {}: run `trunk build --release` (cargo xtask test does)",
        d.display()
    );
    d
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free loopback port below the kernel's ephemeral range (32768 and up), for a server
/// another process binds later (torchrun's rendezvous): a port from [`free_port`] can be
/// handed to some process's outgoing connection before the server binds it, one from
/// here only to an explicit bind. Ports of one test process never repeat.
pub fn listen_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let pid = std::process::id() % 12_700;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 12_700;
        // 20000 to 32699, a different one each call, spread across test processes.
        let port = 20_000 + (pid * 37 + n * 7_919) % 12_700;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("stepwatch-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running relay process.
pub struct Relay {
    pub port: u16,
    pub url: String,
    pub data_dir: PathBuf,
    /// The PostgreSQL database it runs on (`--database`); `None`: SQLite in `data_dir`.
    pub database: Option<String>,
    child: Option<Child>,
    /// The program it runs; `None`: [`relay_bin`] at each start.
    bin: Option<PathBuf>,
    extra: Vec<String>,
    /// Where the relay's stderr (its logs) goes; discarded when `None`.
    log: Option<PathBuf>,
}

impl Relay {
    /// Starts a relay on a free port over `data_dir`, with extra CLI arguments. With
    /// `STEPWATCH_TEST_BACKEND=postgres` it stores in PostgreSQL instead (see
    /// [`test_backend_database`]).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Relay {
        let database = test_backend_database(data_dir, extra);
        Relay::launch(data_dir, extra, None, database)
    }

    /// As [`Relay::start`], with the relay's logs appended to `log`.
    pub fn start_logged(data_dir: &Path, extra: &[&str], log: &Path) -> Relay {
        let database = test_backend_database(data_dir, extra);
        Relay::launch(data_dir, extra, Some(log.to_path_buf()), database)
    }

    /// A relay storing in SQLite in `data_dir`, whatever `STEPWATCH_TEST_BACKEND` says.
    pub fn start_sqlite(data_dir: &Path, extra: &[&str]) -> Relay {
        Relay::launch(data_dir, extra, None, None)
    }

    /// A relay storing in the PostgreSQL database `database_url`, `data_dir` holding
    /// only its caches. Several relays may share one database.
    pub fn start_on(database_url: &str, data_dir: &Path, extra: &[&str]) -> Relay {
        Relay::launch(data_dir, extra, None, Some(database_url.to_string()))
    }

    /// As [`Relay::start_on`], with the relay's logs appended to `log`.
    pub fn start_on_logged(
        database_url: &str,
        data_dir: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Relay {
        Relay::launch(
            data_dir,
            extra,
            Some(log.to_path_buf()),
            Some(database_url.to_string()),
        )
    }

    fn launch(
        data_dir: &Path,
        extra: &[&str],
        log: Option<PathBuf>,
        database: Option<String>,
    ) -> Relay {
        let port = free_port();
        let mut r = Relay {
            port,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            database,
            child: None,
            bin: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log,
        };
        r.spawn();
        r
    }

    /// A relay running the program `bin` (a release build, say) over `data_dir`, storing
    /// in the PostgreSQL database `database` or, when `None`, in SQLite in `data_dir`,
    /// whatever `STEPWATCH_TEST_BACKEND` says. Unlike the other starts it returns an
    /// error, rather than panicking, when the relay does not come up.
    pub fn try_start_bin(
        bin: &Path,
        data_dir: &Path,
        extra: &[&str],
        database: Option<&str>,
    ) -> Result<Relay, String> {
        let port = free_port();
        let mut r = Relay {
            port,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            database: database.map(str::to_string),
            child: None,
            bin: Some(bin.to_path_buf()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: None,
        };
        r.try_spawn()?;
        Ok(r)
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its
    /// exit status (`None`: still running, then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    /// Starts the process and waits (up to 20 s) until it answers `/healthz`.
    fn try_spawn(&mut self) -> Result<(), String> {
        let bin = self.bin.clone().unwrap_or_else(relay_bin);
        let mut cmd = Command::new(&bin);
        cmd.args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{}", self.port),
            "--data-dir",
        ])
        .arg(&self.data_dir)
        .args(&self.extra)
        .env_remove("STEPWATCH_DATABASE")
        .stdout(Stdio::null())
        .stderr(match &self.log {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_or(Stdio::null(), Stdio::from),
            None => Stdio::null(),
        });
        if !self.extra.iter().any(|a| a == "--dist") {
            cmd.arg("--dist").arg(self.data_dir.join("no-dist"));
        }
        if let Some(db) = &self.database {
            cmd.arg("--database").arg(db);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ureq::get(&format!("{}/healthz", self.url))
                .timeout(Duration::from_millis(500))
                .call()
                .is_ok()
            {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "relay on {} exited at start ({status}){}",
                    self.url,
                    self.database
                        .as_ref()
                        .map(|d| format!(", database {d}"))
                        .unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("relay did not come up on {}", self.url))
    }

    /// The relay's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A relay serving the built dashboard, its data under `dir/data`.
    pub fn with_dashboard(dir: &Path) -> Relay {
        let dist = dist();
        Relay::start(
            &dir.join("data"),
            &["--dist", dist.to_str().unwrap_or("dist")],
        )
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts again on the same port, data dir and database.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
