//! A complete ACME test environment: a real DNS server (pebble-challtestsrv) answering every name
//! with 127.0.0.1, and ca-server configured to validate through it on test ports.

use std::path::PathBuf;

use crate::acme::{AccountKey, AcmeClient, Https};
use crate::server::{CaServer, run};
use crate::tools::ChallTestSrv;

/// ca-server + DNS, torn down on drop.
pub struct AcmeEnv {
    /// Server.
    pub server: CaServer,
    /// DNS server and its management API.
    pub dns: ChallTestSrv,
    /// The trust bundle file.
    pub bundle: PathBuf,
    /// Port the VA uses for http-01.
    pub http01_port: u16,
    /// Port the VA uses for tls-alpn-01.
    pub tls_alpn01_port: u16,
    /// Working directory (data dir, tool state).
    pub dir: tempfile::TempDir,
    /// Extra server arguments (e.g. a PostgreSQL URL) also used by CLI calls.
    pub db_args: Vec<String>,
}

impl AcmeEnv {
    /// Starts with `[acme]` settings `acme_toml` (lines inside the `[acme]` table).
    pub fn start(acme_toml: &str) -> Self {
        Self::start_with(acme_toml, &[])
    }

    /// As [`AcmeEnv::start`], with extra `serve` arguments shared with CLI calls.
    pub fn start_with(acme_toml: &str, db_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dns = ChallTestSrv::start();
        let http01_port = crate::free_port();
        let tls_alpn01_port = crate::free_port();
        let config = dir.path().join("ca.toml");
        std::fs::write(
            &config,
            format!(
                "[acme]\n{acme_toml}\n[acme.validation]\nhttp01_port = {http01_port}\ntls_alpn01_port = {tls_alpn01_port}\ndns_resolvers = [\"{}\"]\ntimeout = \"8s\"\n",
                dns.dns
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut args: Vec<String> = vec!["--config".into(), config.display().to_string()];
        args.extend(db_args.iter().map(|s| (*s).to_owned()));
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = CaServer::start(&dir.path().join("data"), &arg_refs);
        let (code, bundle_pem) =
            crate::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url()));
        assert_eq!(code, 200);
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, bundle_pem).unwrap_or_else(|e| panic!("{e}"));
        Self {
            server,
            dns,
            bundle,
            http01_port,
            tls_alpn01_port,
            dir,
            db_args: db_args.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Stops the server and starts it again on the same data directory and configuration
    /// (new ports): what an operator does after changing the CA files.
    pub fn restart(&mut self) {
        self.server.terminate();
        let config = self.dir.path().join("ca.toml").display().to_string();
        let mut args: Vec<&str> = vec!["--config", &config];
        args.extend(self.db_args.iter().map(String::as_str));
        self.server = CaServer::start(&self.server.data_dir, &args);
    }

    /// SIGKILLs the server and starts it again on the same data directory and configuration;
    /// returns how long the restart took until it listened.
    pub fn kill_and_restart(&mut self) -> std::time::Duration {
        self.server.kill();
        let config = self.dir.path().join("ca.toml").display().to_string();
        let mut args: Vec<&str> = vec!["--config", &config];
        args.extend(self.db_args.iter().map(String::as_str));
        let started = std::time::Instant::now();
        self.server = CaServer::start(&self.server.data_dir, &args);
        started.elapsed()
    }

    /// `https://localhost:<port>/acme/directory`
    pub fn directory(&self) -> String {
        format!("{}/acme/directory", self.server.https_url())
    }

    /// Runs `ca-server <args>` against this server's data directory and database.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut full: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        full.push("--data-dir".into());
        full.push(self.server.data_dir.display().to_string());
        full.extend(self.db_args.iter().cloned());
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = run(&refs);
        assert!(
            out.status.success(),
            "ca-server {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates an EAB key; returns (kid, base64url HMAC key).
    pub fn eab(&self, kid: &str, policy_args: &[&str]) -> (String, String) {
        let mut args = vec!["acme", "eab", "create", "--kid", kid];
        args.extend(policy_args);
        let out = self.cli(&args);
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in {out}"))
        };
        (field("kid:"), field("hmac_key:"))
    }

    /// The extra arguments as `&str`s (for [`crate::ledger`]).
    pub fn db_arg_refs(&self) -> Vec<&str> {
        self.db_args.iter().map(String::as_str).collect()
    }

    /// The server's ledger, for plain `#[test]`s.
    pub fn ledger(&self) -> crate::ledger::Ledger {
        crate::ledger::Ledger::open(&self.server.data_dir, &self.db_arg_refs())
    }

    /// The server's ledger, for async tests.
    pub async fn store(&self) -> std::sync::Arc<dyn ca_store::Store> {
        crate::ledger::open(&self.server.data_dir, &self.db_arg_refs()).await
    }

    /// The CRL the server publishes now (signature checked).
    pub fn crl(&self) -> crate::crl::Crl {
        crate::crl::fetch(&self.server.http_url(), self.dir.path())
    }

    /// The value of a `/metrics` sample (see [`crate::server::CaServer::metric`]).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.server.metric(name, labels)
    }

    /// An HTTPS transport to the server trusting the served bundle.
    pub fn https(&self) -> Https {
        let pem = std::fs::read_to_string(&self.bundle).unwrap_or_else(|e| panic!("{e}"));
        Https::new(
            self.server.https,
            &format!("localhost:{}", self.server.https.port()),
            &pem,
        )
    }

    /// A client connected to the directory.
    pub async fn client(&self, key: AccountKey) -> AcmeClient {
        AcmeClient::connect(self.https(), key).await
    }
}
