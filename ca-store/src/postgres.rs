//! The PostgreSQL ledger, for several replicas sharing one database.
//!
//! Postgres commits are durable with the server's default `synchronous_commit=on`; the
//! group-commit writer keeps the number of commits (fsyncs) per second low under load.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::model::RawRow;
use crate::query::{self, ROWS_PER_STATEMENT};
use crate::{Backend, CertificateRecord, DatabaseUrl, Error, ExpiryQuery, Ledger, NewCertificate};

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
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

impl PostgresLedger {
    fn write_pool(&self) -> &PgPool {
        &self.pool
    }

    fn read_pool(&self) -> &PgPool {
        &self.pool
    }
}

crate::acme::impl_acme_store!(PostgresLedger, sqlx::Postgres);
crate::vault::impl_vault_store!(PostgresLedger, sqlx::Postgres);

#[async_trait]
impl Ledger for PostgresLedger {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn insert_certificates(&self, batch: &[NewCertificate]) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in batch.chunks(ROWS_PER_STATEMENT) {
            query::insert_certificates::<sqlx::Postgres>(chunk)
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
        let mut qb = query::certificate_by_serial::<sqlx::Postgres>(serial);
        let row: Option<RawRow> = qb.build_query_as().fetch_optional(&self.pool).await?;
        row.map(RawRow::into_record).transpose()
    }

    async fn expiring(&self, q: &ExpiryQuery) -> Result<Vec<CertificateRecord>, Error> {
        let mut qb = query::expiring::<sqlx::Postgres>(q);
        let rows: Vec<RawRow> = qb.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter().map(RawRow::into_record).collect()
    }

    async fn revoke(&self, serial: &[u8], revoked_at: i64, reason: i32) -> Result<bool, Error> {
        let mut qb = query::revoke::<sqlx::Postgres>(serial, revoked_at, reason);
        Ok(qb.build().execute(self.write_pool()).await?.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
