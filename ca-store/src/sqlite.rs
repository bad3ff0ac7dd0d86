//! The embedded SQLite ledger: one file in the data directory, WAL mode.
//!
//! Certificates are written through one connection with `synchronous=FULL`: a row is on disk
//! before a certificate leaves the process (cheap once the group-commit writer batches rows).
//! Protocol state (nonces, orders, tokens…) is written through a second connection with
//! `synchronous=NORMAL`: in WAL mode its commits skip the fsync, and the next certificate commit's
//! fsync of the WAL persists them too. A small pool of readers runs beside both.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::{Backend, DatabaseUrl, Error};

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
            // Checkpoint every ~40 MB of WAL instead of 4 MB: index pages rewritten by many
            // commits are copied to the database file once per checkpoint, not once per 4 MB.
            .pragma("wal_autocheckpoint", "10000")
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
    fn certificate_pool(&self) -> &SqlitePool {
        &self.writer
    }

    fn write_pool(&self) -> &SqlitePool {
        &self.state_writer
    }

    fn read_pool(&self) -> &SqlitePool {
        &self.readers
    }

    async fn close_pools(&self) {
        self.readers.close().await;
        self.state_writer.close().await;
        self.writer.close().await;
    }
}

crate::query::impl_ledger!(SqliteLedger, sqlx::Sqlite, Backend::Sqlite);
crate::acme::impl_acme_store!(SqliteLedger, sqlx::Sqlite);
crate::vault::impl_vault_store!(SqliteLedger, sqlx::Sqlite);
