//! The real `ca-server` binary as a child process on loopback ports it picks itself.
//!
//! The server logs JSON; [`CaServer::start`] reads the `listening` lines to learn its addresses,
//! so tests never race for ports. Dropping the handle kills the process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Path of the `ca-server` binary: `CA_SERVER_BIN`, else the workspace's debug build.
pub fn binary() -> PathBuf {
    if let Ok(bin) = std::env::var("CA_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::workspace_root().join("target"));
    let bin = target.join("debug").join("ca-server");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p ca-server` first (conformance/run.sh does)",
        bin.display()
    );
    bin
}

/// Runs `ca-server <args>` to completion (for `init`, `cert sign`, …), bounded by
/// [`crate::process::CLI`].
pub fn run(args: &[&str]) -> std::process::Output {
    crate::process::output_within(
        Command::new(binary())
            .args(args)
            .env("CA_SERVER_LOG", "warn"),
        crate::process::CLI,
    )
}

/// A running server.
pub struct CaServer {
    child: Child,
    /// HTTPS address.
    pub https: SocketAddr,
    /// Plain-HTTP address.
    pub http: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    /// The thread reading stderr into `log`; joined once the process has exited, so every line
    /// it wrote is in `log` before a test reads it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl CaServer {
    /// Starts `ca-server serve` on `data_dir` with 127.0.0.1:0 listeners and `extra` arguments.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(binary())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting ca-server: {e}"));
        let stderr = child
            .stderr
            .take()
            .unwrap_or_else(|| panic!("no stderr pipe"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send((
                        v["scheme"].as_str().unwrap_or("").to_owned(),
                        v["address"].as_str().unwrap_or("").to_owned(),
                    ));
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let (mut https, mut http) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while https.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((scheme, addr)) => {
                    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
                    if scheme == "https" {
                        https = Some(addr);
                    } else {
                        http = Some(addr);
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "ca-server did not start; log:\n{}",
                        log.lock().map(|l| l.join("\n")).unwrap_or_default()
                    );
                }
            }
        }
        Self {
            child,
            https: https.unwrap_or_else(|| unreachable!()),
            http: http.unwrap_or_else(|| unreachable!()),
            data_dir: data_dir.to_path_buf(),
            log,
            reader: Some(reader),
        }
    }

    /// `https://localhost:<port>`
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.https.port())
    }

    /// `http://127.0.0.1:<port>`
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The sum of the `/metrics` samples of `name` carrying every label in `labels`; `None` if
    /// no sample matches (a family nothing has touched yet is not exported at all).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (code, text) = crate::openssl::curl_http(&format!("{}/metrics", self.http_url()));
        assert_eq!(code, 200, "GET /metrics");
        metric_in(&text, name, labels)
    }

    /// Log lines so far (all of them once [`CaServer::terminate`] or [`CaServer::kill`]
    /// returned).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits (at most `limit`) for a log line matching `pred` and returns it.
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool, limit: Duration) -> String {
        crate::wait::until(
            "the expected log line",
            limit,
            Duration::from_millis(20),
            || self.log().into_iter().find(|l| pred(l)),
        )
    }

    /// SIGKILL, as a crash or an OOM kill would: no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_reader();
    }

    /// The stderr pipe reaches EOF when the process exits: after that the reader thread ends.
    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (at most 30 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_reader();
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ca-server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// See [`CaServer::metric`]; `text` is a `/metrics` exposition.
pub fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            let (series, value) = rest.rsplit_once(' ')?;
            labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

impl Drop for CaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
