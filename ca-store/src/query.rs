//! SQL shared by both backends, built with sqlx's `QueryBuilder` so each dialect gets its own
//! placeholders. Only statement text lives here; connections and transactions stay per backend.

use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::model::{INSERT_COLUMNS, SELECT_COLUMNS, to_json};
use crate::{ExpiryQuery, NewCertificate};

/// Rows per multi-row INSERT; keeps bind parameters well under SQLite's 32,766 limit.
pub(crate) const ROWS_PER_STATEMENT: usize = 400;

/// `INSERT INTO certificates (…) VALUES (…), (…)` for up to [`ROWS_PER_STATEMENT`] rows.
pub(crate) fn insert_certificates<DB>(rows: &[NewCertificate]) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    Option<String>: for<'q> Encode<'q, DB> + Type<DB>,
    Vec<u8>: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(format!("INSERT INTO certificates ({INSERT_COLUMNS}) "));
    qb.push_values(rows, |mut b, c| {
        b.push_bind(c.serial.clone())
            .push_bind(c.issuer_id.clone())
            .push_bind(c.profile.clone())
            .push_bind(c.subject.clone())
            .push_bind(c.common_name.clone())
            .push_bind(to_json(&c.dns_names))
            .push_bind(to_json(&c.ip_addresses))
            .push_bind(to_json(&c.uris))
            .push_bind(to_json(&c.emails))
            .push_bind(c.spiffe_id.clone())
            .push_bind(c.key_algorithm.clone())
            .push_bind(c.not_before)
            .push_bind(c.not_after)
            .push_bind(c.requester.protocol.as_str().to_owned())
            .push_bind(c.requester.identity.clone())
            .push_bind(c.requester.namespace.clone())
            .push_bind(c.requester.service_account.clone())
            .push_bind(to_json(&c.requester.detail))
            .push_bind(c.request_id.clone())
            .push_bind(c.created_at)
            .push_bind(c.der.clone());
    });
    qb
}

/// `SELECT … WHERE serial = ?`.
pub(crate) fn certificate_by_serial<DB>(serial: &[u8]) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    Vec<u8>: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(format!(
        "SELECT {SELECT_COLUMNS} FROM certificates WHERE serial = "
    ));
    qb.push_bind(serial.to_vec());
    qb
}

/// Expiry-ordered page: `ORDER BY not_after, id` with keyset pagination on that pair.
pub(crate) fn expiring<DB>(q: &ExpiryQuery) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(format!(
        "SELECT {SELECT_COLUMNS} FROM certificates WHERE 1=1"
    ));
    if let Some(from) = q.not_after_from {
        qb.push(" AND not_after >= ").push_bind(from);
    }
    if let Some(until) = q.not_after_until {
        qb.push(" AND not_after < ").push_bind(until);
    }
    if let Some(issuer) = &q.issuer_id {
        qb.push(" AND issuer_id = ").push_bind(issuer.clone());
    }
    if let Some(profile) = &q.profile {
        qb.push(" AND profile = ").push_bind(profile.clone());
    }
    if let Some(ns) = &q.namespace {
        qb.push(" AND namespace = ").push_bind(ns.clone());
    }
    if q.revoked_only {
        qb.push(" AND revoked_at IS NOT NULL");
    } else if !q.include_revoked {
        qb.push(" AND revoked_at IS NULL");
    }
    if let Some((not_after, id)) = q.after {
        qb.push(" AND (not_after > ")
            .push_bind(not_after)
            .push(" OR (not_after = ")
            .push_bind(not_after)
            .push(" AND id > ")
            .push_bind(id)
            .push("))");
    }
    qb.push(" ORDER BY not_after, id LIMIT ")
        .push_bind(q.page_size());
    qb
}

/// `UPDATE … SET revoked_at, revocation_reason WHERE serial = ? AND revoked_at IS NULL`.
pub(crate) fn revoke<DB>(serial: &[u8], revoked_at: i64, reason: i32) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    Vec<u8>: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("UPDATE certificates SET revoked_at = ");
    qb.push_bind(revoked_at)
        .push(", revocation_reason = ")
        .push_bind(i64::from(reason))
        .push(" WHERE serial = ")
        .push_bind(serial.to_vec())
        .push(" AND revoked_at IS NULL");
    qb
}

/// Implements [`crate::Ledger`] for a backend with `certificate_pool()` (durable certificate
/// writes), `read_pool()` and `close_pools()`: one body for both dialects.
macro_rules! impl_ledger {
    ($backend:ty, $db:ty, $kind:expr) => {
        #[async_trait::async_trait]
        impl $crate::Ledger for $backend {
            fn backend(&self) -> $crate::Backend {
                $kind
            }

            async fn insert_certificates(
                &self,
                batch: &[$crate::NewCertificate],
            ) -> Result<(), $crate::Error> {
                if batch.is_empty() {
                    return Ok(());
                }
                let mut tx = self.certificate_pool().begin().await?;
                for chunk in batch.chunks($crate::query::ROWS_PER_STATEMENT) {
                    $crate::query::insert_certificates::<$db>(chunk)
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
            ) -> Result<Option<$crate::CertificateRecord>, $crate::Error> {
                let mut qb = $crate::query::certificate_by_serial::<$db>(serial);
                let row: Option<$crate::model::RawRow> =
                    qb.build_query_as().fetch_optional(self.read_pool()).await?;
                row.map($crate::model::RawRow::into_record).transpose()
            }

            async fn expiring(
                &self,
                q: &$crate::ExpiryQuery,
            ) -> Result<Vec<$crate::CertificateRecord>, $crate::Error> {
                let mut qb = $crate::query::expiring::<$db>(q);
                let rows: Vec<$crate::model::RawRow> =
                    qb.build_query_as().fetch_all(self.read_pool()).await?;
                rows.into_iter()
                    .map($crate::model::RawRow::into_record)
                    .collect()
            }

            async fn revoke(
                &self,
                serial: &[u8],
                revoked_at: i64,
                reason: i32,
            ) -> Result<bool, $crate::Error> {
                let mut qb = $crate::query::revoke::<$db>(serial, revoked_at, reason);
                Ok(qb
                    .build()
                    .execute(self.certificate_pool())
                    .await?
                    .rows_affected()
                    == 1)
            }

            async fn forget_expired_der(&self, expired_before: i64) -> Result<u64, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE certificates SET der = NULL WHERE der IS NOT NULL AND not_after < ",
                );
                qb.push_bind(expired_before);
                Ok(qb
                    .build()
                    .execute(self.certificate_pool())
                    .await?
                    .rows_affected())
            }

            async fn ping(&self) -> Result<(), $crate::Error> {
                sqlx::query("SELECT 1").execute(self.read_pool()).await?;
                Ok(())
            }

            async fn close(&self) {
                self.close_pools().await;
            }
        }
    };
}
pub(crate) use impl_ledger;
