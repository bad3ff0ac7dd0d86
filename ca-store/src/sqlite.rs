//! The embedded SQLite ledger: one file in the data directory, WAL mode.
//!
//! Certificates are written through one connection with `synchronous=FULL`: a row is on disk
//! before a certificate leaves the process (cheap once the group-commit writer batches rows).
//! Protocol state (nonces, orders, tokens…) is written through a second connection with
//! `synchronous=NORMAL`: in WAL mode its commits skip the fsync, and the next certificate commit's
//! fsync of the WAL persists them too. A small pool of readers runs beside both.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::model::RawRow;
use crate::query::{self, ROWS_PER_STATEMENT};
use crate::{Backend, CertificateRecord, DatabaseUrl, Error, ExpiryQuery, Ledger, NewCertificate};

/// SQLite-backed ledger.
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    writer: SqlitePool,
    state_writer: SqlitePool,
    readers: SqlitePool,
}

impl SqliteLedger {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str(url.expose())?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&writer).await?;
        let state_writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone().synchronous(SqliteSynchronous::Normal))
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self {
            writer,
            state_writer,
            readers,
        })
    }
}

impl SqliteLedger {
    fn write_pool(&self) -> &SqlitePool {
        &self.state_writer
    }

    fn read_pool(&self) -> &SqlitePool {
        &self.readers
    }
}

crate::acme::impl_acme_store!(SqliteLedger, sqlx::Sqlite);
crate::vault::impl_vault_store!(SqliteLedger, sqlx::Sqlite);

#[async_trait]
impl Ledger for SqliteLedger {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn insert_certificates(&self, batch: &[NewCertificate]) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        for chunk in batch.chunks(ROWS_PER_STATEMENT) {
            query::insert_certificates::<sqlx::Sqlite>(chunk)
                .build()
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn certificate_by_serial(
        &self,
        serial: &[u8],
    ) -> Result<Option<CertificateRecord>, Error> {
        let mut qb = query::certificate_by_serial::<sqlx::Sqlite>(serial);
        let row: Option<RawRow> = qb.build_query_as().fetch_optional(&self.readers).await?;
        row.map(RawRow::into_record).transpose()
    }

    async fn expiring(&self, q: &ExpiryQuery) -> Result<Vec<CertificateRecord>, Error> {
        let mut qb = query::expiring::<sqlx::Sqlite>(q);
        let rows: Vec<RawRow> = qb.build_query_as().fetch_all(&self.readers).await?;
        rows.into_iter().map(RawRow::into_record).collect()
    }

    async fn revoke(&self, serial: &[u8], revoked_at: i64, reason: i32) -> Result<bool, Error> {
        let mut qb = query::revoke::<sqlx::Sqlite>(serial, revoked_at, reason);
        Ok(qb.build().execute(&self.writer).await?.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn close(&self) {
        self.readers.close().await;
        self.state_writer.close().await;
        self.writer.close().await;
    }
}
