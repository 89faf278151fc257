//! A private PostgreSQL cluster the test owns, so it can crash it: `initdb` under a temporary
//! directory, `pg_ctl` on a free loopback port. PostgreSQL refuses to run as root, so as root
//! the cluster runs as the `postgres` user (as `scripts/postgres.sh` does).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::PgServer;

/// A PostgreSQL server binary: from PATH, else the newest `/usr/lib/postgresql/*/bin`.
pub(crate) fn pg_bin(name: &str) -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        && out.status.success()
    {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !path.is_empty() {
            return PathBuf::from(path);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    let found = dirs.last().map(|d| d.join(name));
    match found {
        Some(path) if path.exists() => path,
        _ => panic!("{name} not found: install PostgreSQL (apt-get install postgresql)"),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A running private cluster, stopped and removed on drop.
pub(crate) struct Cluster {
    dir: tempfile::TempDir,
    pub(crate) port: u16,
    as_postgres: bool,
}

impl Cluster {
    pub(crate) fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Like [`Self::start`], with `configure` run on the data directory after `initdb` and
    /// before the first start (configuration files, certificates).
    pub(crate) fn start_with(configure: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dg-fault-pg")
            .tempdir()
            .expect("tempdir");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let cluster = Self {
            dir,
            port,
            as_postgres,
        };
        let data = cluster.data();
        let out = cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
            ])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        configure(&data);
        if cluster.as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&data)
                .status()
                .expect("chown");
            assert!(status.success(), "chown the data directory to postgres");
        }
        cluster.pg_ctl_start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(pg_bin(program));
            cmd
        } else {
            Command::new(pg_bin(program))
        }
    }

    /// Starts (or restarts) the cluster on its port and waits until it accepts connections.
    pub(crate) fn pg_ctl_start(&self) {
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {}",
                self.port,
                self.dir.path().display()
            ))
            .arg("start")
            // The server it leaves running must not hold this process's pipes.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(
            status.success(),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// Stops the cluster the way a crash does: no checkpoint, every connection cut.
    pub(crate) fn crash(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn server(&self) -> PgServer {
        PgServer {
            host: format!("127.0.0.1:{}", self.port),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
