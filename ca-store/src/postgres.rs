//! The PostgreSQL ledger, for several replicas sharing one database.
//!
//! Postgres commits are durable with the server's default `synchronous_commit=on`; the
//! group-commit writer keeps the number of commits (fsyncs) per second low under load.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::{Backend, DatabaseUrl, Error};

/// How long a query waits for a connection. While the database is down, acquiring keeps trying
/// to connect for this long: it is how long a request waits before it is answered "try again"
/// (503), so it stays short.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

/// PostgreSQL-backed ledger.
#[derive(Debug, Clone)]
pub struct PostgresLedger {
    pool: PgPool,
}

impl PostgresLedger {
    /// Connects and applies migrations. Several replicas may run this at once: sqlx takes an
    /// advisory lock around migrations.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, Error> {
        let options = PgConnectOptions::from_str(url.expose())?.application_name("ca-server");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

type PgLease = sqlx::pool::PoolConnection<sqlx::Postgres>;

impl PostgresLedger {
    async fn write_conn(&self) -> Result<PgLease, Error> {
        Ok(self.pool.acquire().await?)
    }

    async fn read_conn(&self) -> Result<PgLease, Error> {
        Ok(self.pool.acquire().await?)
    }

    /// Every read is a round trip to the server: none runs on the calling thread.
    fn inline_reads(&self) -> Option<&crate::sqlite_inline::InlineReads> {
        None
    }

    fn inline_writes(&self) -> Option<&crate::sqlite_inline::InlineWrites> {
        None
    }

    fn certificate_writes(&self) -> Option<&crate::sqlite_inline::InlineWrites> {
        None
    }

    /// Every PostgreSQL commit is durable (`synchronous_commit` on): nothing to switch.
    async fn begin_durable(&self, _conn: &mut sqlx::PgConnection) -> Result<(), Error> {
        Ok(())
    }

    async fn end_durable(&self, _conn: &mut sqlx::PgConnection) {}

    fn durable_statements(&self) -> (&'static str, &'static str) {
        ("", "")
    }

    async fn close_pools(&self) {
        self.pool.close().await;
    }
}

crate::query::impl_ledger!(PostgresLedger, sqlx::Postgres, Backend::Postgres);
crate::acme::impl_acme_store!(PostgresLedger, sqlx::Postgres);
crate::vault::impl_vault_store!(PostgresLedger, sqlx::Postgres);
crate::issuers::impl_issuer_store!(PostgresLedger, sqlx::Postgres);
