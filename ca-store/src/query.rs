//! SQL shared by both backends, built with sqlx's `QueryBuilder` so each dialect gets its own
//! placeholders. Only statement text lives here; connections and transactions stay per backend.

use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::model::{INSERT_COLUMNS, Origin, SELECT_COLUMNS, to_json};
use crate::report::SnapshotQuery;
use crate::{ExpiryQuery, NewCertificate};

/// One row to insert: the certificate plus the columns derived from where it came from.
pub(crate) struct InsertRow<'a> {
    pub certificate: &'a NewCertificate,
    pub origin: Origin,
    pub source: Option<String>,
    pub name: String,
    pub lineage: Vec<u8>,
    pub observed_at: Option<i64>,
}

impl<'a> InsertRow<'a> {
    /// A certificate this CA issued.
    pub fn issued(certificate: &'a NewCertificate) -> Self {
        Self {
            certificate,
            origin: Origin::Issued,
            source: None,
            name: crate::model::display_name(certificate),
            lineage: crate::model::issued_lineage(certificate),
            observed_at: None,
        }
    }
}

/// Rows whose DER one retention statement drops (short write-lock holds between issuances).
pub(crate) const RETENTION_CHUNK: i64 = 2_000;

/// Rows per multi-row INSERT; keeps bind parameters well under SQLite's 32,766 limit.
pub(crate) const ROWS_PER_STATEMENT: usize = 400;

/// `INSERT INTO certificates (…) VALUES (…), (…)` for up to [`ROWS_PER_STATEMENT`] rows, after
/// the statements in `before` (which take no arguments; SQLite only).
pub(crate) fn insert_certificates<DB>(before: &str, rows: &[InsertRow<'_>]) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    Option<String>: for<'q> Encode<'q, DB> + Type<DB>,
    Vec<u8>: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    Option<i64>: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(format!(
        "{before}INSERT INTO certificates ({INSERT_COLUMNS}) "
    ));
    qb.push_values(rows, |mut b, row| {
        let c = row.certificate;
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
            .push_bind(c.der.clone())
            .push_bind(row.origin.as_str().to_owned())
            .push_bind(row.source.clone())
            .push_bind(row.name.clone())
            .push_bind(crate::model::fingerprint(&c.der))
            .push_bind(row.lineage.clone())
            .push_bind(row.observed_at)
            .push_bind(c.crl_shard.map(i64::from))
            .push_bind(c.workload_namespace.clone());
    });
    qb
}

/// Marks older certificates of the given lineages superseded by the newest one of each.
pub(crate) fn supersede<DB>(lineages: &[Vec<u8>], now: i64) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    Vec<u8>: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("UPDATE certificates SET superseded_at = ");
    qb.push_bind(now)
        .push(" WHERE superseded_at IS NULL AND lineage IN (");
    let mut list = qb.separated(", ");
    for lineage in lineages {
        list.push_bind(lineage.clone());
    }
    qb.push(
        ") AND id < (SELECT max(newer.id) FROM certificates newer \
         WHERE newer.lineage = certificates.lineage AND newer.superseded_at IS NULL)",
    );
    qb
}

/// Escapes `%`, `_` and `\` for `LIKE … ESCAPE '\'`.
fn like_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// `SELECT … WHERE serial = ?`.
pub(crate) fn certificate_by_serial<DB>(serial: &[u8]) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    Vec<u8>: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(format!(
        "SELECT {SELECT_COLUMNS} FROM certificates WHERE origin = 'issued' AND serial = "
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
    Vec<u8>: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(format!(
        "SELECT {SELECT_COLUMNS} FROM certificates WHERE 1=1"
    ));
    if let Some(from) = q.not_after_from {
        qb.push(" AND not_after >= ").push_bind(from);
    }
    if let Some(until) = q.not_after_until {
        qb.push(" AND not_after <= ").push_bind(until);
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
    if let Some(origin) = q.origin {
        qb.push(" AND origin = ")
            .push_bind(origin.as_str().to_owned());
    }
    if let Some(prefix) = &q.spiffe_prefix {
        qb.push(" AND spiffe_id LIKE ")
            .push_bind(format!("{}%", like_literal(prefix)))
            .push(" ESCAPE '\\'");
    }
    if let Some(san) = &q.san {
        // List columns hold JSON arrays of strings: match the quoted JSON form of the value.
        let pattern = format!("%{}%", like_literal(&to_json(san)));
        qb.push(" AND (common_name = ").push_bind(san.clone());
        for column in ["dns_names", "ip_addresses", "uris", "emails"] {
            qb.push(format!(" OR {column} LIKE "))
                .push_bind(pattern.clone())
                .push(" ESCAPE '\\'");
        }
        qb.push(")");
    }
    if let Some(shard) = q.crl_shard {
        qb.push(" AND crl_shard = ").push_bind(i64::from(shard));
    }
    if let Some(serial) = &q.serial {
        qb.push(" AND serial = ").push_bind(serial.clone());
    }
    if let Some(requester) = &q.requester {
        qb.push(" AND requester = ").push_bind(requester.clone());
    }
    if q.revoked_only {
        qb.push(" AND revoked_at IS NOT NULL");
    } else if !q.include_revoked {
        qb.push(" AND revoked_at IS NULL");
    }
    if q.exclude_superseded {
        qb.push(" AND superseded_at IS NULL");
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
        .push(" WHERE origin = 'issued' AND serial = ")
        .push_bind(serial.to_vec())
        .push(" AND revoked_at IS NULL");
    qb
}

/// Remaining-lifetime cells of the current, unexpired certificates (one grouped pass over the
/// `certificates_current_not_after` partial index).
pub(crate) fn lifetime_cells<DB>(now: i64, bounds: &[i64]) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(
        "SELECT origin, issuer_id, profile, COALESCE(namespace, '') AS namespace, \
         COALESCE(workload_namespace, '') AS workload_namespace, ",
    );
    if bounds.is_empty() {
        qb.push("CAST(0 AS BIGINT) AS bucket, ");
    } else {
        qb.push("CAST(CASE");
        for (i, bound) in bounds.iter().enumerate() {
            qb.push(" WHEN not_after - ")
                .push_bind(now)
                .push(" <= ")
                .push_bind(*bound)
                .push(format!(" THEN {i}"));
        }
        qb.push(format!(" ELSE {} END AS BIGINT) AS bucket, ", bounds.len()));
    }
    qb.push("CAST(count(*) AS BIGINT) AS count, CAST(COALESCE(sum(not_after - ")
        .push_bind(now)
        .push("), 0) AS BIGINT) AS remaining_sum, min(not_after) AS earliest FROM certificates")
        .push(" WHERE revoked_at IS NULL AND superseded_at IS NULL AND not_after >= ")
        .push_bind(now)
        .push(" GROUP BY 1, 2, 3, 4, 5, 6");
    qb
}

/// Long-lived current certificates (expired ones within the grace period included), earliest
/// expiry first, one more than the limit to detect truncation.
pub(crate) fn tracked<DB>(q: &SnapshotQuery) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(
        "SELECT origin, issuer_id, profile, COALESCE(namespace, '') AS namespace, \
         COALESCE(workload_namespace, '') AS workload_namespace, name, \
         requester, not_before, not_after FROM certificates \
         WHERE revoked_at IS NULL AND superseded_at IS NULL AND not_after >= ",
    );
    qb.push_bind(q.now - q.tracked_expired_grace)
        .push(" AND not_after - not_before > ")
        .push_bind(q.tracked_min_lifetime)
        .push(" ORDER BY not_after, id LIMIT ")
        .push_bind(i64::from(q.tracked_limit) + 1);
    qb
}

/// Totals over every row, for the summary.
pub(crate) fn totals<DB>(now: i64) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(
        "SELECT CAST(count(*) AS BIGINT) AS total, \
         CAST(COALESCE(sum(CASE WHEN revoked_at IS NULL AND not_after < ",
    );
    qb.push_bind(now).push(
        " THEN 1 ELSE 0 END), 0) AS BIGINT) AS expired, \
         CAST(COALESCE(sum(CASE WHEN revoked_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS revoked, \
         CAST(COALESCE(sum(CASE WHEN revoked_at IS NULL AND superseded_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS superseded, \
         CAST(COALESCE(sum(CASE WHEN origin = 'observed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS observed \
         FROM certificates",
    );
    qb
}

/// Runs a stream of statement results to its end or its first error: how many statements
/// finished, and the error that stopped the rest.
pub(crate) async fn statements_done<R>(
    mut results: futures_core::stream::BoxStream<'_, Result<R, sqlx::Error>>,
) -> (usize, Option<sqlx::Error>) {
    let mut done = 0;
    loop {
        match std::future::poll_fn(|cx| results.as_mut().poll_next(cx)).await {
            None => return (done, None),
            Some(Ok(_)) => done += 1,
            Some(Err(e)) => return (done, Some(e)),
        }
    }
}

/// Implements [`crate::Ledger`] for a backend with `write_conn()`, `read_conn()`,
/// `begin_durable`/`end_durable` (around certificate writes, which must be on disk when they
/// commit), `durable_statements()` (the same switch as SQL around one statement),
/// `inline_reads()`, `certificate_writes()` and `close_pools()`: one body for both dialects.
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
                let rows: Vec<$crate::query::InsertRow<'_>> =
                    batch.iter().map($crate::query::InsertRow::issued).collect();
                // Superseding happens in the `certificates_supersede` trigger, so one statement
                // is atomic on its own: the common case is a single round trip and commit.
                let mut conn = self.write_conn().await?;
                if let Some(inline) = self.certificate_writes() {
                    // `conn`, held, is the one permit to write. The caller is the group-commit
                    // writer's own thread (an fsync blocks it, not the runtime).
                    return inline.insert_certificates(&rows);
                }
                if rows.len() <= $crate::query::ROWS_PER_STATEMENT {
                    // The common case: one statement, in one round trip to the connection
                    // together with the switch to durable commits and back.
                    let (before, after) = self.durable_statements();
                    let mut qb = $crate::query::insert_certificates::<$db>(before, &rows);
                    qb.push(after);
                    // Each statement reports when it is done. Once the INSERT has (it
                    // committed durably), the batch is recorded whatever the switch back says.
                    let insert_at = before.matches(';').count();
                    let outcome = $crate::query::statements_done(
                        sqlx::Executor::execute_many(&mut *conn, qb.build()),
                    )
                    .await;
                    return match outcome {
                        (done, None) if done > insert_at => Ok(()),
                        (done, failure) => {
                            // The switch back did not run (or failed): make it now.
                            self.end_durable(&mut conn).await;
                            match failure {
                                Some(e) if done <= insert_at => Err(e.into()),
                                Some(e) => {
                                    tracing::warn!(error = %e, "restoring synchronous = NORMAL after a certificate insert failed");
                                    Ok(())
                                }
                                None => Err($crate::Error::Corrupt(
                                    "the certificate insert reported no result".into(),
                                )),
                            }
                        }
                    };
                }
                self.begin_durable(&mut conn).await?;
                let result = async {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    for chunk in rows.chunks($crate::query::ROWS_PER_STATEMENT) {
                        $crate::query::insert_certificates::<$db>("", chunk)
                            .build()
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok::<(), $crate::Error>(())
                }
                .await;
                self.end_durable(&mut conn).await;
                result
            }

            async fn record_observed(
                &self,
                batch: &[$crate::ObservedCertificate],
                observed_at: i64,
            ) -> Result<$crate::ObserveOutcome, $crate::Error> {
                let mut outcome = $crate::ObserveOutcome::default();
                let mut conn = self.write_conn().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for observed in batch {
                    let c = &observed.certificate;
                    let fingerprint = $crate::model::fingerprint(&c.der);
                    // Ours already? (Compared by DER: rows from before fingerprints have none.)
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "SELECT der FROM certificates WHERE origin = 'issued' AND serial = ",
                    );
                    qb.push_bind(c.serial.clone());
                    let ours: Option<(Option<Vec<u8>>,)> =
                        qb.build_query_as().fetch_optional(&mut *tx).await?;
                    if let Some((der,)) = ours
                        && der.as_deref().is_none_or(|d| d == c.der.as_slice())
                    {
                        outcome.already_issued += 1;
                        continue;
                    }
                    let lineage = $crate::model::observed_lineage(&observed.source, &c.subject);
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new("UPDATE certificates SET observed_at = ");
                    qb.push_bind(observed_at)
                        .push(", source = ")
                        .push_bind(observed.source.clone())
                        .push(", requester = ")
                        .push_bind(c.requester.identity.clone())
                        .push(", name = ")
                        .push_bind(observed.name.clone())
                        .push(", lineage = ")
                        .push_bind(lineage.clone())
                        .push(" WHERE origin = 'observed' AND fingerprint = ")
                        .push_bind(fingerprint);
                    if qb.build().execute(&mut *tx).await?.rows_affected() > 0 {
                        outcome.updated += 1;
                    } else {
                        let row = $crate::query::InsertRow {
                            certificate: c,
                            origin: $crate::Origin::Observed,
                            source: Some(observed.source.clone()),
                            name: observed.name.clone(),
                            lineage: lineage.clone(),
                            observed_at: Some(observed_at),
                        };
                        $crate::query::insert_certificates::<$db>("", std::slice::from_ref(&row))
                            .build()
                            .execute(&mut *tx)
                            .await?;
                        outcome.inserted += 1;
                    }
                    $crate::query::supersede::<$db>(&[lineage], observed_at)
                        .build()
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(outcome)
            }

            async fn certificate_by_serial(
                &self,
                serial: &[u8],
            ) -> Result<Option<$crate::CertificateRecord>, $crate::Error> {
                if let Some(inline) = self.inline_reads() {
                    return inline.certificate_by_serial(serial);
                }
                let mut qb = $crate::query::certificate_by_serial::<$db>(serial);
                let row: Option<$crate::model::RawRow> = qb
                    .build_query_as()
                    .fetch_optional(&mut *self.read_conn().await?)
                    .await?;
                row.map($crate::model::RawRow::into_record).transpose()
            }

            async fn expiring(
                &self,
                q: &$crate::ExpiryQuery,
            ) -> Result<Vec<$crate::CertificateRecord>, $crate::Error> {
                let mut qb = $crate::query::expiring::<$db>(q);
                let rows: Vec<$crate::model::RawRow> = qb
                    .build_query_as()
                    .fetch_all(&mut *self.read_conn().await?)
                    .await?;
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
                let mut conn = self.write_conn().await?;
                self.begin_durable(&mut conn).await?;
                let result = qb.build().execute(&mut *conn).await;
                self.end_durable(&mut conn).await;
                Ok(result?.rows_affected() == 1)
            }

            async fn forget_expired_der(&self, expired_before: i64) -> Result<u64, $crate::Error> {
                // In chunks, walking ids forward: one statement over a large ledger would hold
                // the write lock for seconds and stall issuance behind it.
                let mut total = 0;
                let mut last_id = 0i64;
                loop {
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new("SELECT id FROM certificates WHERE id > ");
                    qb.push_bind(last_id)
                        .push(" AND der IS NOT NULL AND not_after < ")
                        .push_bind(expired_before)
                        .push(" ORDER BY id LIMIT ")
                        .push_bind($crate::query::RETENTION_CHUNK);
                    let ids: Vec<(i64,)> = qb
                        .build_query_as()
                        .fetch_all(&mut *self.read_conn().await?)
                        .await?;
                    let Some(&(max,)) = ids.last() else {
                        return Ok(total);
                    };
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE certificates SET der = NULL WHERE der IS NOT NULL AND id IN (",
                    );
                    let mut list = qb.separated(", ");
                    for (id,) in &ids {
                        list.push_bind(*id);
                    }
                    qb.push(")");
                    total += qb
                        .build()
                        .execute(&mut *self.write_conn().await?)
                        .await?
                        .rows_affected();
                    last_id = max;
                }
            }

            async fn summary(&self, now: i64) -> Result<$crate::LedgerSummary, $crate::Error> {
                let mut qb = $crate::query::totals::<$db>(now);
                let totals: $crate::report::RawTotals = qb
                    .build_query_as()
                    .fetch_one(&mut *self.read_conn().await?)
                    .await?;
                let mut qb = $crate::query::lifetime_cells::<$db>(now, &[]);
                let cells: Vec<$crate::report::RawCell> = qb
                    .build_query_as()
                    .fetch_all(&mut *self.read_conn().await?)
                    .await?;
                let cells = cells
                    .into_iter()
                    .map($crate::report::RawCell::into_cell)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok($crate::report::summarize(totals, cells))
            }

            async fn metrics_snapshot(
                &self,
                q: &$crate::SnapshotQuery,
            ) -> Result<$crate::MetricsSnapshot, $crate::Error> {
                // Two readers at once: the grouped pass and the per-certificate list.
                let mut cells_qb = $crate::query::lifetime_cells::<$db>(q.now, &q.bounds);
                let mut tracked_qb = $crate::query::tracked::<$db>(q);
                let (cells, tracked): (
                    Vec<$crate::report::RawCell>,
                    Vec<$crate::report::RawTracked>,
                ) = {
                    let mut cells_conn = self.read_conn().await?;
                    let mut tracked_conn = self.read_conn().await?;
                    tokio::try_join!(
                        cells_qb.build_query_as().fetch_all(&mut *cells_conn),
                        tracked_qb.build_query_as().fetch_all(&mut *tracked_conn),
                    )?
                };
                let tracked_truncated = tracked.len() > q.tracked_limit as usize;
                Ok($crate::MetricsSnapshot {
                    cells: cells
                        .into_iter()
                        .map($crate::report::RawCell::into_cell)
                        .collect::<Result<_, _>>()?,
                    tracked: tracked
                        .into_iter()
                        .take(q.tracked_limit as usize)
                        .map($crate::report::RawTracked::into_tracked)
                        .collect::<Result<_, _>>()?,
                    tracked_truncated,
                })
            }

            async fn ping(&self) -> Result<(), $crate::Error> {
                sqlx::query("SELECT 1")
                    .execute(&mut *self.read_conn().await?)
                    .await?;
                Ok(())
            }

            async fn issuers(&self) -> Result<Vec<(String, String)>, $crate::Error> {
                Ok(sqlx::query_as(
                    "SELECT issuer_id, subject FROM ca_issuers ORDER BY registered_at, issuer_id",
                )
                .fetch_all(&mut *self.read_conn().await?)
                .await?)
            }

            async fn register_issuer(
                &self,
                issuer_id: &str,
                subject: &str,
                at: i64,
            ) -> Result<(), $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO ca_issuers (issuer_id, subject, registered_at) VALUES (",
                );
                qb.push_bind(issuer_id.to_owned())
                    .push(", ")
                    .push_bind(subject.to_owned())
                    .push(", ")
                    .push_bind(at)
                    .push(") ON CONFLICT (issuer_id) DO NOTHING");
                qb.build().execute(&mut *self.write_conn().await?).await?;
                Ok(())
            }

            async fn issued_issuer_ids(&self) -> Result<Vec<String>, $crate::Error> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT DISTINCT issuer_id FROM certificates WHERE origin = 'issued'",
                )
                .fetch_all(&mut *self.read_conn().await?)
                .await?;
                Ok(rows.into_iter().map(|(id,)| id).collect())
            }

            async fn snapshot_to(&self, path: &std::path::Path) -> Result<(), $crate::Error> {
                if $kind != $crate::Backend::Sqlite {
                    return Err($crate::Error::Unsupported(
                        "a PostgreSQL ledger is backed up with pg_dump (docs/backup.md)".into(),
                    ));
                }
                let target = path.to_str().ok_or_else(|| {
                    $crate::Error::Unsupported("the backup path is not UTF-8".into())
                })?;
                let mut qb = sqlx::QueryBuilder::<$db>::new("VACUUM INTO ");
                qb.push_bind(target.to_owned());
                qb.build().execute(&mut *self.write_conn().await?).await?;
                Ok(())
            }

            async fn close(&self) {
                self.close_pools().await;
            }
        }
    };
}
pub(crate) use impl_ledger;
