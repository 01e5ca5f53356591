//! A private throwaway PostgreSQL server (initdb + pg_ctl in a temp dir), and the
//! cleanup of those that interrupted runs left behind.

use crate::certs::TestCerts;
use crate::pg::{pg_bin_dir, pg_connect};
use crate::relay::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A private throwaway PostgreSQL server on a free loopback port, its data and unix
/// socket in a fresh temporary directory, trusting local connections as `postgres`.
/// As root, its programs run as the `postgres` system user (initdb refuses root).
/// Dropping it stops the server (immediate) and removes the directory.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    /// Starts a cluster; panics with the reason when it cannot.
    pub fn start_new(tag: &str) -> PgCluster {
        PgCluster::try_start(tag).unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"))
    }

    /// Starts a cluster with the programs of [`pg_bin_dir`].
    pub fn try_start(tag: &str) -> Result<PgCluster, String> {
        let bin = pg_bin_dir().ok_or(
            "PostgreSQL server programs not found (initdb, pg_ctl): install PostgreSQL \
             (apt-get install postgresql) or set STEPWATCH_TEST_PG_BIN",
        )?;
        PgCluster::try_start_with(&bin, tag)
    }

    /// Starts a cluster with the programs in `bin`.
    pub fn try_start_with(bin: &Path, tag: &str) -> Result<PgCluster, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("stepwatch-pg-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let as_postgres = running_as_root();
        let cluster = PgCluster {
            dir,
            bin: bin.to_path_buf(),
            port: free_port(),
            as_postgres,
        };
        if as_postgres {
            // initdb refuses to run as root: the directory belongs to `postgres`.
            let _ = std::fs::set_permissions(
                &cluster.dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            );
            cluster.exec(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&cluster.dir),
                "chown",
            )?;
        }
        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(&cluster.dir).args([
            "--auth=trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ]);
        cluster.exec(&mut initdb, "initdb")?;
        cluster.try_start_server()?;
        Ok(cluster)
    }

    /// A `Command` for one of the server programs, as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Runs `cmd` to completion, its output captured into the error.
    fn exec(&self, cmd: &mut Command, what: &str) -> Result<(), String> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed ({}): {}{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            ))
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!("\nserver log:\n{tail}")
        }
    }

    fn try_start_server(&self) -> Result<(), String> {
        self.pg_ctl_start()?;
        pg_connect(&self.url(), Duration::from_secs(30))
            .map(drop)
            .map_err(|e| {
                format!(
                    "PostgreSQL did not accept connections: {e}{}",
                    self.log_tail()
                )
            })
    }

    /// `pg_ctl start -w`: returns once the server is ready.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(&self.dir)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            // pg_ctl leaves the server running with our stdout: do not hold the pipe.
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = start
            .status()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !status.success() {
            return Err(format!("pg_ctl start failed ({status}){}", self.log_tail()));
        }
        Ok(())
    }

    /// Turns TLS on with `certs`' server certificate and replaces the TCP rules of
    /// `pg_hba.conf` with `hba` (e.g. `hostssl all all 127.0.0.1/32 trust`), then
    /// restarts the server. Connections over the socket stay trusted.
    pub fn enable_tls(&self, certs: &TestCerts, hba: &str) {
        let key = self.dir.join("server.key");
        std::fs::copy(&certs.cert, self.dir.join("server.crt")).unwrap();
        std::fs::copy(&certs.key, &key).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        if self.as_postgres {
            for f in ["server.crt", "server.key"] {
                self.exec(
                    Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(self.dir.join(f)),
                    "chown",
                )
                .unwrap();
            }
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(
            &mut conf,
            b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .unwrap();
        std::fs::write(
            self.dir.join("pg_hba.conf"),
            format!("local all all trust\n{hba}\n"),
        )
        .unwrap();
        self.pg_ctl_stop("fast")
            .and_then(|()| self.pg_ctl_start())
            .unwrap_or_else(|e| panic!("restarting PostgreSQL with TLS: {e}"));
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), String> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.dir)
            .args(["-w", "-t", "60", "-m", mode, "stop"]);
        self.exec(&mut stop, "pg_ctl stop")
    }

    /// The server's URL, without a database: `postgres://postgres@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding its data, socket and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the server programs it uses.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Stops the server (`pg_ctl stop -m fast`: clients are disconnected, the server
    /// checkpoints and exits); the data stays.
    pub fn stop(&self) {
        self.pg_ctl_stop("fast")
            .unwrap_or_else(|e| panic!("stopping PostgreSQL: {e}"));
    }

    /// Starts it again after [`PgCluster::stop`], on the same port and data; returns once
    /// it accepts connections.
    pub fn start(&self) {
        self.try_start_server()
            .unwrap_or_else(|e| panic!("starting PostgreSQL again: {e}"));
    }

    /// Stops (fast) and starts again.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }
}

/// Stops and deletes the clusters that [`PgCluster`]s of processes no longer running
/// left behind (a test run interrupted with Ctrl-C cannot drop its cluster); returns how
/// many.
pub fn remove_stale_clusters(bin: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let as_postgres = running_as_root();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("stepwatch-pg-") else {
            continue;
        };
        // stepwatch-pg-{tag}-{pid}-{n}
        let mut parts = rest.rsplit('-');
        let (Some(_n), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let stale = PgCluster {
            dir: entry.path(),
            bin: bin.to_path_buf(),
            port: 0,
            as_postgres,
        };
        drop(stale); // stops it (immediate) if it runs, and deletes the directory
        removed += 1;
    }
    removed
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.dir.join("postmaster.pid").exists() {
            let _ = self.pg_ctl_stop("immediate");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
