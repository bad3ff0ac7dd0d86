//! The issuance ledger (Boulder's "SA"): the only code in the workspace that speaks SQL.
//!
//! Callers see one [`Ledger`] trait with two implementations, [`sqlite::SqliteLedger`] (the embedded
//! default, WAL mode, `synchronous=FULL`) and [`postgres::PostgresLedger`] (several replicas share
//! one database). The backend is chosen from the database URL by [`open`]. Each dialect has its own
//! migration set under `migrations/`, embedded at build time and applied when the ledger opens.
//!
//! Writes of issued certificates go through [`writer::LedgerWriter`], which groups concurrent
//! requests into one transaction (group commit) and answers each caller only once its row is
//! durably committed: a certificate is never returned before it is recorded.
#![warn(missing_docs)]

pub mod acme;
pub mod issuers;
mod model;
pub mod postgres;
mod query;
pub mod report;
pub mod sqlite;
mod sqlite_inline;
pub mod vault;
pub mod writer;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

pub use model::{
    CertificateRecord, ExpiryQuery, NewCertificate, ObserveOutcome, ObservedCertificate, Origin,
    Protocol, Requester,
};
pub use report::{LedgerSummary, MetricsSnapshot, SnapshotQuery};

/// Errors from the ledger. Internal details are logged by callers, never shown to clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A row with this key already exists (a certificate serial, an account key, …).
    #[error("already exists")]
    AlreadyExists,
    /// The database URL is not one we understand.
    #[error("unsupported database URL: {0}")]
    UnsupportedUrl(String),
    /// A stored value could not be decoded (corrupt row or schema mismatch).
    #[error("corrupt ledger row: {0}")]
    Corrupt(String),
    /// The group-commit writer has shut down.
    #[error("ledger writer is closed")]
    WriterClosed,
    /// A batched write failed for every request in the batch.
    #[error("batched write failed: {message}")]
    BatchFailed {
        /// Whether the underlying error was transient.
        transient: bool,
        /// The underlying error.
        message: String,
    },
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The database reported an error (connection, constraint, I/O…).
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// The embedded database reported an error on a statement run on the calling thread
    /// ([`sqlite_inline`]).
    #[error("database error: {message}")]
    Embedded {
        /// Whether retrying later may succeed (busy or locked, a full disk, an I/O error…).
        transient: bool,
        /// The underlying error.
        message: String,
    },
    /// The operation does not exist for this backend.
    #[error("{0}")]
    Unsupported(String),
}

// The messages above include their cause; they do not also chain it as a `source`, or every
// `{:#}` report would print the same cause two or three times.
impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Migrate(e)
    }
}

impl Error {
    /// True when retrying later may succeed (connection trouble, pool exhaustion, busy database).
    /// Callers map these to "try again" answers (HTTP 503), never to permanent refusals.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Tls(_)
                ) || is_busy(e)
            }
            Error::WriterClosed => true,
            Error::BatchFailed { transient, .. } | Error::Embedded { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// Conditions that pass without anyone changing the request: another process holds a lock, the
/// disk is full (an operator frees space), the disk reported an I/O error.
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let msg = db.message();
            msg.contains("database is locked")
                || msg.contains("database table is locked")
                || msg.contains("database is busy")
                || msg.contains("database or disk is full")
                || msg.contains("disk I/O error")
                || msg.contains("unable to open database file")
                || msg.contains("out of memory")
        }
        _ => false,
    }
}

/// How many database errors (unique-key violations aside) the process has seen. The SQLite
/// writer compares it each time it lends its connection: after a failure the connection may be
/// left inside a transaction nobody will finish (SQLite can roll a transaction back by itself on
/// a full disk or an I/O error, and sqlx's own ROLLBACK then fails and leaves its bookkeeping
/// wrong), so it is replaced before the next write.
pub(crate) static FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return Error::AlreadyExists;
        }
        FAILURES.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Error::Database(e)
    }
}

/// Which database engine backs a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server (or a compatible engine).
    Postgres,
}

/// The ledger's operations. Implemented once per backend; the rest of the workspace only sees this.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Which engine this is.
    fn backend(&self) -> Backend;

    /// Records a batch of certificates in one transaction: all rows are committed or none is.
    /// A serial already present fails the whole batch with [`Error::AlreadyExists`]. Older
    /// certificates of the same requester, profile and names become superseded. On the embedded
    /// database the commit's fsync runs on the calling thread: call it from [`writer::LedgerWriter`]
    /// (which has a thread of its own there), not from a request handler.
    async fn insert_certificates(&self, batch: &[NewCertificate]) -> Result<(), Error>;

    /// Records certificates found elsewhere (files, kubeconfigs, TLS endpoints). A certificate
    /// already observed is updated, not duplicated; one we issued is left as it is; an older
    /// certificate from the same source and subject becomes superseded.
    async fn record_observed(
        &self,
        batch: &[ObservedCertificate],
        observed_at: i64,
    ) -> Result<ObserveOutcome, Error>;

    /// Counts for `ledger stats` and the summary endpoint.
    async fn summary(&self, now: i64) -> Result<LedgerSummary, Error>;

    /// What the scrape-time metric collectors need.
    async fn metrics_snapshot(&self, query: &SnapshotQuery) -> Result<MetricsSnapshot, Error>;

    /// Looks a certificate we issued up by serial number (big-endian bytes, no leading zero padding).
    async fn certificate_by_serial(
        &self,
        serial: &[u8],
    ) -> Result<Option<CertificateRecord>, Error>;

    /// Certificates ordered by `not_after` (then id), filtered and paginated by `query`.
    async fn expiring(&self, query: &ExpiryQuery) -> Result<Vec<CertificateRecord>, Error>;

    /// Marks a certificate revoked (RFC 5280 reason code); false if unknown or already revoked.
    async fn revoke(&self, serial: &[u8], revoked_at: i64, reason: i32) -> Result<bool, Error>;

    /// Retention: drops the DER of certificates that expired before `expired_before`, keeping
    /// their metadata rows for reports. Returns how many were trimmed.
    async fn forget_expired_der(&self, expired_before: i64) -> Result<u64, Error>;

    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<(), Error>;

    /// The issuing CAs registered for this ledger: `(issuer_id, subject)`, oldest first.
    async fn issuers(&self) -> Result<Vec<(String, String)>, Error>;

    /// Registers an issuing CA (idempotent).
    async fn register_issuer(&self, issuer_id: &str, subject: &str, at: i64) -> Result<(), Error>;

    /// Distinct issuer ids of certificates this CA issued (not observed ones): a ledger with
    /// certificates but no registered issuer predates registration.
    async fn issued_issuer_ids(&self) -> Result<Vec<String>, Error>;

    /// Writes a consistent copy of the whole database to `path` while it is in use (SQLite's
    /// `VACUUM INTO`); PostgreSQL answers [`Error::Unsupported`]: back it up with `pg_dump`.
    async fn snapshot_to(&self, path: &std::path::Path) -> Result<(), Error>;

    /// Closes connections; pending work is finished first.
    async fn close(&self);
}

/// A database location. `Debug` and `Display` never show a password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL string such as `sqlite:///var/lib/ca/ledger.db` or `postgres://user:pw@host/db`.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// An SQLite file at `path`, created if missing.
    pub fn sqlite_file(path: &std::path::Path) -> Self {
        Self(format!("sqlite://{}", path.display()))
    }

    /// The URL with its secret, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Which backend the URL selects.
    pub fn backend(&self) -> Result<Backend, Error> {
        let scheme = self.0.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(Error::UnsupportedUrl(self.redacted())),
        }
    }

    fn redacted(&self) -> String {
        // scheme://user:password@host → scheme://user:***@host
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        match rest.split_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => self.0.clone(),
            },
            None => self.0.clone(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Everything the server stores: the certificate ledger, ACME and Vault-API state.
pub trait Store: Ledger + acme::AcmeStore + vault::VaultStore + issuers::IssuerStore {}
impl<T: Ledger + acme::AcmeStore + vault::VaultStore + issuers::IssuerStore> Store for T {}

/// Opens the store the URL names and applies pending migrations.
pub async fn open(url: &DatabaseUrl) -> Result<Arc<dyn Store>, Error> {
    Ok(match url.backend()? {
        Backend::Sqlite => Arc::new(sqlite::SqliteLedger::open(url).await?),
        Backend::Postgres => Arc::new(postgres::PostgresLedger::open(url).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_hides_password() {
        let url = DatabaseUrl::new("postgres://ca:s3cret@db.example:5432/ledger");
        assert_eq!(url.to_string(), "postgres://ca:***@db.example:5432/ledger");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.backend().ok(), Some(Backend::Postgres));
    }

    #[test]
    fn unknown_scheme_is_rejected() {
        let url = DatabaseUrl::new("mysql://root@localhost/x");
        assert!(matches!(url.backend(), Err(Error::UnsupportedUrl(_))));
    }
}
