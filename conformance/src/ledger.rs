//! The server's ledger read directly (SQLite file or PostgreSQL), for checks that a response
//! matches what was recorded: a row by serial, every row, and [`Snapshot`]s that prove a refusal
//! wrote nothing (no row added, none revoked or changed). Async functions for `tokio` tests;
//! [`Ledger`] wraps them with its own runtime for plain `#[test]`s.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ca_store::{CertificateRecord, DatabaseUrl, ExpiryQuery, Store};

/// The database a server with `data_dir` and extra arguments `db_args` (`--database-url …` or
/// nothing) uses.
pub fn url(data_dir: &Path, db_args: &[&str]) -> DatabaseUrl {
    match db_args
        .iter()
        .position(|a| *a == "--database-url")
        .and_then(|i| db_args.get(i + 1))
    {
        Some(url) => DatabaseUrl::new((*url).to_owned()),
        None => DatabaseUrl::sqlite_file(&data_dir.join("ledger.db")),
    }
}

/// Opens the ledger of a server (see [`url`]).
pub async fn open(data_dir: &Path, db_args: &[&str]) -> Arc<dyn Store> {
    let url = url(data_dir, db_args);
    ca_store::open(&url)
        .await
        .unwrap_or_else(|e| panic!("opening the ledger: {e}"))
}

/// Every row: issued and observed, revoked, expired and superseded ones included.
pub async fn rows(store: &Arc<dyn Store>) -> Vec<CertificateRecord> {
    let mut all = Vec::new();
    let mut query = ExpiryQuery {
        include_revoked: true,
        limit: 10_000,
        ..ExpiryQuery::default()
    };
    loop {
        let page = store
            .expiring(&query)
            .await
            .unwrap_or_else(|e| panic!("reading the ledger: {e}"));
        let Some(last) = page.last() else { break };
        query.after = Some((last.certificate.not_after, last.id));
        all.extend(page);
    }
    all
}

/// How many rows [`rows`] finds.
pub async fn count(store: &Arc<dyn Store>) -> usize {
    rows(store).await.len()
}

/// The row of `serial` (as the ledger stores it, see [`crate::openssl::serial_bytes`]); panics
/// if there is none.
pub async fn row(store: &Arc<dyn Store>, serial: &[u8]) -> CertificateRecord {
    store
        .certificate_by_serial(serial)
        .await
        .unwrap_or_else(|e| panic!("reading the ledger: {e}"))
        .unwrap_or_else(|| {
            panic!(
                "serial {} is not in the ledger",
                crate::openssl::serial_hex(serial)
            )
        })
}

/// Rows naming `name` as a DNS name, IP address, URI or SPIFFE ID.
pub async fn rows_naming(store: &Arc<dyn Store>, name: &str) -> Vec<CertificateRecord> {
    rows(store)
        .await
        .into_iter()
        .filter(|r| {
            let c = &r.certificate;
            c.dns_names.iter().any(|n| n == name)
                || c.ip_addresses.iter().any(|n| n == name)
                || c.uris.iter().any(|n| n == name)
                || c.spiffe_id.as_deref() == Some(name)
        })
        .collect()
}

/// What a write could change in one row: revoked_at, reason, superseded_at, DER length.
type RowState = (Option<i64>, Option<i32>, Option<i64>, usize);

/// What each row says that a write could change, by serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<Vec<u8>, RowState>);

impl Snapshot {
    /// The ledger now.
    pub async fn take(store: &Arc<dyn Store>) -> Self {
        Self(
            rows(store)
                .await
                .into_iter()
                .map(|r| {
                    (
                        r.certificate.serial.clone(),
                        (
                            r.revoked_at,
                            r.revocation_reason,
                            r.superseded_at,
                            r.certificate.der.len(),
                        ),
                    )
                })
                .collect(),
        )
    }

    /// Rows in the snapshot.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds no row.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Panics, naming `what` and the difference, unless the ledger still equals this snapshot.
    pub async fn assert_unchanged(&self, store: &Arc<dyn Store>, what: &str) {
        let now = Self::take(store).await;
        if now != *self {
            let added: Vec<String> = now
                .0
                .keys()
                .filter(|k| !self.0.contains_key(*k))
                .map(|k| crate::openssl::serial_hex(k))
                .collect();
            let changed: Vec<String> = now
                .0
                .iter()
                .filter(|(k, v)| self.0.get(*k).is_some_and(|old| old != *v))
                .map(|(k, v)| format!("{} now {v:?}", crate::openssl::serial_hex(k)))
                .collect();
            panic!(
                "{what}: the ledger changed ({} rows before, {} after; added {added:?}; changed {changed:?})",
                self.0.len(),
                now.0.len()
            );
        }
    }
}

/// A ledger handle with its own runtime, for tests that are not async.
pub struct Ledger {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn Store>,
}

impl Ledger {
    /// Opens the ledger of a server (see [`url`]).
    pub fn open(data_dir: &Path, db_args: &[&str]) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
        let store = rt.block_on(open(data_dir, db_args));
        Self { rt, store }
    }

    /// See [`row`].
    pub fn row(&self, serial: &[u8]) -> CertificateRecord {
        self.rt.block_on(row(&self.store, serial))
    }

    /// See [`rows`].
    pub fn rows(&self) -> Vec<CertificateRecord> {
        self.rt.block_on(rows(&self.store))
    }

    /// See [`rows_naming`].
    pub fn rows_naming(&self, name: &str) -> Vec<CertificateRecord> {
        self.rt.block_on(rows_naming(&self.store, name))
    }

    /// The issuing CAs registered in the ledger.
    pub fn issuers(&self) -> Vec<(String, String)> {
        self.rt
            .block_on(self.store.issuers())
            .unwrap_or_else(|e| panic!("reading the ledger: {e}"))
    }

    /// See [`Snapshot::take`].
    pub fn snapshot(&self) -> Snapshot {
        self.rt.block_on(Snapshot::take(&self.store))
    }

    /// See [`Snapshot::assert_unchanged`].
    pub fn assert_unchanged(&self, before: &Snapshot, what: &str) {
        self.rt.block_on(before.assert_unchanged(&self.store, what));
    }
}
