//! A real PostgreSQL for tests.
//!
//! `conformance/run.sh` starts one ephemeral server for the whole suite and exports its URL as
//! `CA_TEST_POSTGRES_URL`. When that is unset (a developer running `cargo test` directly), each
//! [`test_database`] call starts its own server from the machine's PostgreSQL binaries and stops it
//! on drop. Either way every test gets a fresh database. Without PostgreSQL binaries the test
//! fails: it is never silently skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable naming a running server (`postgres://user@127.0.0.1:port/postgres`).
pub const URL_VAR: &str = "CA_TEST_POSTGRES_URL";

/// A fresh, empty database; the server behind it lives at least as long as this value.
pub struct TestDatabase {
    /// Connection URL of the database.
    pub url: String,
    _server: Option<EphemeralPostgres>,
}

/// Creates a new database on the suite's server, or on a server started for this test.
pub fn test_database() -> TestDatabase {
    let (base, server) = match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let server = EphemeralPostgres::start();
            (server.url.clone(), Some(server))
        }
    };
    let name = format!("t_{}", random_suffix());
    run_ok(
        Command::new("psql")
            .env("PGCONNECT_TIMEOUT", "10")
            .arg(&base)
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}")),
    );
    let url = match base.rsplit_once('/') {
        Some((server_part, _)) => format!("{server_part}/{name}"),
        None => panic!("{URL_VAR} must end in /<database>"),
    };
    TestDatabase {
        url,
        _server: server,
    }
}

fn random_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", nanos, std::process::id())
}

/// A PostgreSQL server in a temporary directory on a free loopback port.
pub struct EphemeralPostgres {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub url: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
    options: String,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql (install postgresql)"
        )
    })
}

fn is_root() -> bool {
    let out = crate::process::output_within(Command::new("id").arg("-u"), crate::process::QUICK);
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// PostgreSQL refuses to run as root; run its tools as the `postgres` user then.
fn as_db_user(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

/// Runs a PostgreSQL tool, bounded (`pg_ctl -w -t 60` waits up to 60 s itself).
fn run_ok(cmd: &mut Command) {
    let out = crate::process::output_within(cmd, std::time::Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        crate::process::describe(cmd),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl EphemeralPostgres {
    /// initdb + start; panics with the server log if anything fails.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        if is_root() {
            run_ok(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path()),
            );
        }
        let data = dir.path().join("data");
        run_ok(as_db_user(&bin, "initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]));
        let port = crate::free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            dir.path().display()
        );
        let server = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            bin,
            options,
        };
        server.start_again();
        server
    }

    /// Stops the server at once (`-m immediate`, as a crash or an outage would).
    pub fn stop(&self) {
        run_ok(
            as_db_user(&self.bin, "pg_ctl")
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate", "-w", "stop"]),
        );
    }

    /// Starts it (again) on the same port and data.
    pub fn start_again(&self) {
        run_ok(
            as_db_user(&self.bin, "pg_ctl")
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-o", &self.options, "-w", "-t", "60", "-l"])
                .arg(self.dir.path().join("server.log"))
                .arg("start"),
        );
    }
}

impl Drop for EphemeralPostgres {
    fn drop(&mut self) {
        let _ = crate::process::run_within(
            as_db_user(&self.bin, "pg_ctl")
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate", "-w", "stop"]),
            None,
            std::time::Duration::from_secs(60),
        );
    }
}
