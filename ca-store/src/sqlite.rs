//! The embedded SQLite ledger: one file in the data directory, WAL mode.
//!
//! All writes share one connection, so they queue in the pool instead of contending for SQLite's
//! write lock (a second writer connection sleeps in the busy handler while the first commits).
//! Protocol state (nonces, orders, tokens…) commits with `synchronous=NORMAL`: in WAL mode that
//! skips the fsync. Certificate rows and revocations switch the connection to `synchronous=FULL`
//! for their statement, so they are on disk before a certificate leaves the process — and that
//! fsync of the WAL persists every earlier protocol-state commit too. A small pool of readers runs
//! beside the writer.

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
        // One write connection for everything: two would contend for SQLite's write lock, and
        // the loser sleeps in the busy handler for milliseconds. Protocol state commits with
        // `synchronous=NORMAL`; certificate writes switch to FULL around their statement
        // ([`SqliteLedger::begin_durable`]), and that fsync of the WAL persists every earlier
        // commit too.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone().synchronous(SqliteSynchronous::Normal))
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, readers })
    }
}

impl SqliteLedger {
    fn certificate_pool(&self) -> &SqlitePool {
        &self.writer
    }

    fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// Certificate writes must be on disk when they commit: FULL for the next statement.
    async fn begin_durable(
        &self,
        conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>,
    ) -> Result<(), Error> {
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut **conn)
            .await?;
        Ok(())
    }

    /// Back to NORMAL for protocol state. If this fails the connection stays FULL: slower, safe.
    async fn end_durable(&self, conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>) {
        let _ = sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut **conn)
            .await;
    }

    fn read_pool(&self) -> &SqlitePool {
        &self.readers
    }

    async fn close_pools(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}

crate::query::impl_ledger!(SqliteLedger, sqlx::Sqlite, Backend::Sqlite);
crate::acme::impl_acme_store!(SqliteLedger, sqlx::Sqlite);
crate::vault::impl_vault_store!(SqliteLedger, sqlx::Sqlite);
