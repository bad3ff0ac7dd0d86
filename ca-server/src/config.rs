//! Server configuration: a TOML file, overridden by `CA_SERVER_*` environment variables, overridden
//! by command-line flags (the last two are merged by clap in `main.rs`). Every setting has a
//! default, so `ca-server serve` runs with no configuration at all. See `docs/configuration.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::issuer::{Lifetime, Profile, Settings};

/// Everything `ca-server serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Holds the CA material (`ca/`) and the embedded SQLite ledger (`ledger.db`).
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: `ledger.db` in the data directory.
    pub database_url: Option<String>,
    /// HTTPS listener.
    pub listen: SocketAddr,
    /// Optional plain-HTTP listener (for in-cluster probes, CRL and bundle downloads).
    pub http_listen: Option<SocketAddr>,
    /// Logging.
    pub log: LogConfig,
    /// The serving certificate.
    pub tls: TlsConfig,
    /// Issuance settings.
    pub ca: CaConfig,
    /// The ACME server.
    pub acme: crate::acme::AcmeConfig,
    /// The Vault-compatible API.
    pub vault: crate::vault::VaultConfig,
    /// `/metrics`.
    pub metrics: crate::metrics::MetricsConfig,
    /// Ledger retention.
    pub retention: RetentionConfig,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(with = "crate::duration::serde_duration")]
    pub shutdown_grace: Duration,
    /// Bounds on connections and requests.
    pub limits: crate::http::limit::Limits,
    /// Publishing the trust bundle into the cluster.
    pub trust: crate::trust::TrustConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("ca-data"),
            database_url: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            http_listen: None,
            log: LogConfig::default(),
            tls: TlsConfig::default(),
            ca: CaConfig::default(),
            acme: crate::acme::AcmeConfig::default(),
            vault: crate::vault::VaultConfig::default(),
            metrics: crate::metrics::MetricsConfig::default(),
            retention: RetentionConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            limits: crate::http::limit::Limits::default(),
            trust: crate::trust::TrustConfig::default(),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `ca_server=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The HTTPS serving certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Names (DNS or IP) the self-issued serving certificate covers, in addition to `localhost`,
    /// `127.0.0.1`, `::1` and the host name. In a cluster: the Service names clients use.
    pub names: Vec<String>,
    /// A certificate chain to serve instead of a self-issued one (PEM, leaf first).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Lifetime of the self-issued certificate; renewed at two thirds of it.
    #[serde(with = "crate::duration::serde_duration")]
    pub lifetime: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            names: Vec::new(),
            cert_file: None,
            key_file: None,
            lifetime: Duration::from_secs(7 * 86_400),
        }
    }
}

/// Issuance settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaConfig {
    /// notBefore is set this far in the past to absorb clock skew.
    #[serde(with = "crate::duration::serde_duration")]
    pub backdate: Duration,
    /// CRL distribution point URLs written into issued certificates.
    pub crl_urls: Vec<String>,
    /// caIssuers URLs written into issued certificates.
    pub issuing_certificate_urls: Vec<String>,
    /// Per-profile `default` and `max` lifetimes, e.g. `[ca.lifetimes.spiffe] default = "1h"`.
    pub lifetimes: BTreeMap<Profile, Lifetime>,
    /// Split the CRL into this many shards (1 = one CRL). Set before issuing: each certificate's
    /// distribution point names its shard, `<crl_url>/<shard>`.
    pub crl_shards: u32,
    /// The CRL is rebuilt this often (and at once after a revocation); it is valid for 24 hours.
    #[serde(with = "crate::duration::serde_duration")]
    pub crl_refresh: Duration,
    /// Size limits every certificate is checked against before it is signed.
    pub limits: crate::issuer::Limits,
    /// Rotate the issuing CA on schedule (prepare its successor at half its life, activate at
    /// five sixths) when the root key is here; otherwise warn that `ca rotate` is due.
    pub auto_rotate: bool,
    /// The root key rotation signs with (default `<data-dir>/ca/root.key`).
    pub root_key_file: Option<std::path::PathBuf>,
}

/// Ledger retention: expired certificates lose their DER (the row stays for reports).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Certificates expired for longer than this lose their DER. `0s` turns the schedule off
    /// (Vault's `tidy` still runs it on demand).
    #[serde(with = "crate::duration::serde_duration")]
    pub drop_der_after: Duration,
    /// How often the schedule runs.
    #[serde(with = "crate::duration::serde_duration")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            drop_der_after: Duration::from_secs(90 * 86_400),
            interval: Duration::from_secs(6 * 3600),
        }
    }
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            backdate: Duration::from_secs(60),
            crl_urls: Vec::new(),
            issuing_certificate_urls: Vec::new(),
            lifetimes: BTreeMap::new(),
            crl_refresh: Duration::from_secs(3600),
            crl_shards: 1,
            limits: crate::issuer::Limits::default(),
            auto_rotate: true,
            root_key_file: None,
        }
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are errors so typos do not pass silently.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The ledger's URL.
    pub fn database_url(&self) -> ca_store::DatabaseUrl {
        match &self.database_url {
            Some(url) => ca_store::DatabaseUrl::new(url.clone()),
            None => ca_store::DatabaseUrl::sqlite_file(&self.data_dir.join("ledger.db")),
        }
    }

    /// Issuance settings for the CA.
    pub fn issuer_settings(&self) -> Settings {
        Settings {
            backdate: self.ca.backdate,
            lifetimes: self.ca.lifetimes.clone(),
            crl_urls: self.ca.crl_urls.clone(),
            crl_shards: self.ca.crl_shards.max(1),
            issuing_certificate_urls: self.ca.issuing_certificate_urls.clone(),
            limits: self.ca.limits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_complete() {
        let c: Config = toml::from_str("").expect("empty TOML");
        assert_eq!(c.listen.port(), 8443);
        assert!(c.database_url().expose().starts_with("sqlite://"));
    }

    #[test]
    fn file_settings_are_read() {
        let c: Config = toml::from_str(
            r#"
            data_dir = "/var/lib/ca"
            database_url = "postgres://ca@db/ca"
            listen = "127.0.0.1:9443"
            [log]
            format = "json"
            [tls]
            names = ["ca.ca-system.svc"]
            lifetime = "48h"
            [ca]
            crl_urls = ["http://ca.ca-system.svc/crl"]
            [ca.lifetimes.spiffe]
            default = "1h"
            max = "24h"
            "#,
        )
        .expect("parse");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.tls.lifetime, Duration::from_secs(48 * 3600));
        let s = c.issuer_settings();
        assert_eq!(
            s.lifetime(Profile::Spiffe).default,
            Duration::from_secs(3600)
        );
        assert_eq!(
            s.lifetime(Profile::TlsServer),
            Lifetime::builtin(Profile::TlsServer)
        );
    }

    #[test]
    fn typos_are_errors() {
        assert!(toml::from_str::<Config>("listne = \"0.0.0.0:1\"").is_err());
    }
}
