//! ACME protocol state: accounts, EAB keys, orders, authorizations, redeemed nonces and shared
//! settings. Rows are plain data; JSON-valued columns (identifiers, challenges, contact, policy,
//! errors) are encoded and interpreted by ca-server's ACME module, not here.
//!
//! Status changes are compare-and-set (`… WHERE id = ? AND status = ?`) so replicas sharing one
//! database never both move the same order or authorization.

use async_trait::async_trait;

use crate::Error;

/// An ACME account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccountRow {
    /// Opaque id (the last segment of the account URL).
    pub id: String,
    /// RFC 7638 thumbprint of the account key (unique).
    pub key_thumbprint: String,
    /// The account key as JWK JSON.
    pub jwk: String,
    /// `valid`, `deactivated` or `revoked`.
    pub status: String,
    /// JSON array of contact URLs.
    pub contact: String,
    /// The EAB key id the account was created with.
    pub eab_kid: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// An External Account Binding key and the policy it grants.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EabKeyRow {
    /// Key identifier given to the client.
    pub kid: String,
    /// The MAC key (secret).
    pub hmac_key: Vec<u8>,
    /// JSON binding policy.
    pub policy: String,
    /// The account bound to this key, once used.
    pub account_id: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, when revoked.
    pub revoked_at: Option<i64>,
}

/// An ACME order.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderRow {
    /// Opaque id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// `pending`, `ready`, `processing`, `valid`, `invalid`.
    pub status: String,
    /// Unix seconds.
    pub expires: i64,
    /// JSON array of identifiers.
    pub identifiers: String,
    /// Issuance profile.
    pub profile: String,
    /// Requested notBefore (Unix seconds).
    pub not_before: Option<i64>,
    /// Requested notAfter (Unix seconds).
    pub not_after: Option<i64>,
    /// JSON problem document when invalid.
    pub error: Option<String>,
    /// Serial of the issued certificate.
    pub certificate_serial: Option<Vec<u8>>,
    /// ARI certificate identifier this order replaces.
    pub replaces: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// An ACME authorization with its challenges.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuthorizationRow {
    /// Opaque id.
    pub id: String,
    /// The order it belongs to.
    pub order_id: String,
    /// Owning account.
    pub account_id: String,
    /// `dns` or `ip`.
    pub identifier_type: String,
    /// The name or address (without `*.` for wildcards).
    pub identifier_value: String,
    /// 1 for a wildcard authorization.
    pub wildcard: i64,
    /// `pending`, `valid`, `invalid`, `deactivated`, `expired`, `revoked`.
    pub status: String,
    /// Unix seconds.
    pub expires: i64,
    /// JSON array of challenges.
    pub challenges: String,
}

/// ACME state operations, implemented by both backends.
#[async_trait]
pub trait AcmeStore: Send + Sync + 'static {
    /// Returns the setting `name`, storing `value` first if it is absent (first replica wins).
    async fn setting_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, Error>;
    /// Returns the setting `name`, if stored.
    async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Records nonces as used, in one statement; for each, true if it was unused until now (of
    /// duplicates within the batch only the first can be). See [`crate::writer::NonceRedeemer`].
    async fn redeem_nonces(&self, batch: &[(String, i64)]) -> Result<Vec<bool>, Error>;
    /// Forgets used nonces that have expired anyway.
    async fn purge_nonces(&self, now: i64) -> Result<u64, Error>;

    /// Creates an account; [`Error::AlreadyExists`] if its key is taken.
    async fn insert_account(&self, account: &AccountRow) -> Result<(), Error>;
    /// Looks an account up by id.
    async fn account(&self, id: &str) -> Result<Option<AccountRow>, Error>;
    /// Looks an account up by key thumbprint.
    async fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<AccountRow>, Error>;
    /// Updates key, status and contact.
    async fn update_account(&self, account: &AccountRow) -> Result<(), Error>;

    /// Stores an EAB key.
    async fn insert_eab_key(&self, key: &EabKeyRow) -> Result<(), Error>;
    /// Looks an EAB key up.
    async fn eab_key(&self, kid: &str) -> Result<Option<EabKeyRow>, Error>;
    /// All EAB keys (secrets included; callers must not print them).
    async fn eab_keys(&self) -> Result<Vec<EabKeyRow>, Error>;
    /// Replaces a key's stored MAC key (sealing one stored in clear).
    async fn set_eab_hmac_key(&self, kid: &str, hmac_key: &[u8]) -> Result<(), Error>;
    /// Binds an unbound, unrevoked key to an account; false if it was already bound or revoked.
    async fn bind_eab_key(&self, kid: &str, account_id: &str) -> Result<bool, Error>;

    /// Creates an order and its authorizations in one transaction.
    async fn insert_order(
        &self,
        order: &OrderRow,
        authorizations: &[AuthorizationRow],
    ) -> Result<(), Error>;
    /// Looks an order up.
    async fn order(&self, id: &str) -> Result<Option<OrderRow>, Error>;
    /// Looks an order up with its authorizations (ordered by id), in one query: what every
    /// order poll and finalize needs.
    async fn order_with_authorizations(
        &self,
        id: &str,
    ) -> Result<Option<(OrderRow, Vec<AuthorizationRow>)>, Error>;
    /// Ids of an account's orders, newest first, at most `limit`.
    async fn order_ids_for_account(
        &self,
        account_id: &str,
        limit: i64,
    ) -> Result<Vec<String>, Error>;
    /// Orders that named `replaces` as the certificate they replace.
    async fn orders_replacing(&self, replaces: &str) -> Result<Vec<OrderRow>, Error>;
    /// Writes status, error and certificate serial if the stored status is still `expected`.
    async fn update_order(&self, order: &OrderRow, expected: &str) -> Result<bool, Error>;

    /// Looks an authorization up.
    async fn authorization(&self, id: &str) -> Result<Option<AuthorizationRow>, Error>;
    /// Writes status and challenges if the stored status is still `expected`.
    async fn update_authorization(
        &self,
        authz: &AuthorizationRow,
        expected: &str,
    ) -> Result<bool, Error>;
}

pub(crate) const ACCOUNT_COLUMNS: &str =
    "id, key_thumbprint, jwk, status, contact, eab_kid, created_at";
pub(crate) const EAB_COLUMNS: &str = "kid, hmac_key, policy, account_id, created_at, revoked_at";
pub(crate) const ORDER_COLUMNS: &str = "id, account_id, status, expires, identifiers, profile, not_before, \
     not_after, error, certificate_serial, replaces, created_at";
pub(crate) const AUTHZ_COLUMNS: &str = "id, order_id, account_id, identifier_type, identifier_value, \
     wildcard, status, expires, challenges";

/// `SELECT` list of an order joined with its authorizations: the order's columns under their own
/// names, the authorization's prefixed `a_` (NULL when the order has none).
pub(crate) fn order_join_columns() -> &'static str {
    static COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let order = ORDER_COLUMNS.split(',').map(|c| format!("o.{}", c.trim()));
        let authz = AUTHZ_COLUMNS
            .split(',')
            .map(|c| format!("a.{} AS a_{}", c.trim(), c.trim()));
        order.chain(authz).collect::<Vec<_>>().join(", ")
    });
    &COLUMNS
}

/// The authorization half of an [`order_join_columns`] row, if the row has one.
pub(crate) fn joined_authorization<R>(row: &R) -> Result<Option<AuthorizationRow>, sqlx::Error>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let Some(id) = row.try_get::<Option<String>, _>("a_id")? else {
        return Ok(None);
    };
    Ok(Some(AuthorizationRow {
        id,
        order_id: row.try_get("a_order_id")?,
        account_id: row.try_get("a_account_id")?,
        identifier_type: row.try_get("a_identifier_type")?,
        identifier_value: row.try_get("a_identifier_value")?,
        wildcard: row.try_get("a_wildcard")?,
        status: row.try_get("a_status")?,
        expires: row.try_get("a_expires")?,
        challenges: row.try_get("a_challenges")?,
    }))
}

/// Implements [`AcmeStore`] for a backend type with `write_conn()` and `read_conn()` methods
/// (each lends a connection for one statement or transaction), `inline_reads()` and
/// `inline_writes()` (the reads and writes that run on the calling thread, if the backend has
/// them; the writes only under the `write_conn()` lease).
/// One body for both dialects: `QueryBuilder` emits each dialect's placeholders.
macro_rules! impl_acme_store {
    ($backend:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::acme::AcmeStore for $backend {
            async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, $crate::Error> {
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new("SELECT value FROM settings WHERE name = ");
                qb.push_bind(name.to_owned());
                let row: Option<(Vec<u8>,)> = qb
                    .build_query_as()
                    .fetch_optional(&mut *self.read_conn().await?)
                    .await?;
                Ok(row.map(|(v,)| v))
            }

            async fn setting_or_insert(
                &self,
                name: &str,
                value: &[u8],
            ) -> Result<Vec<u8>, $crate::Error> {
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new("INSERT INTO settings (name, value) VALUES (");
                qb.push_bind(name.to_owned())
                    .push(", ")
                    .push_bind(value.to_vec())
                    .push(") ON CONFLICT (name) DO NOTHING");
                qb.build().execute(&mut *self.write_conn().await?).await?;
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new("SELECT value FROM settings WHERE name = ");
                qb.push_bind(name.to_owned());
                let (v,): (Vec<u8>,) = qb
                    .build_query_as()
                    .fetch_one(&mut *self.write_conn().await?)
                    .await?;
                Ok(v)
            }

            async fn redeem_nonces(
                &self,
                batch: &[(String, i64)],
            ) -> Result<Vec<bool>, $crate::Error> {
                // Only the first occurrence of a nonce within the batch may succeed.
                let mut first = std::collections::HashSet::new();
                let unique: Vec<&(String, i64)> = batch
                    .iter()
                    .filter(|(n, _)| first.insert(n.as_str()))
                    .collect();
                let mut fresh = std::collections::HashSet::new();
                for chunk in unique.chunks(1_000) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO acme_used_nonces (nonce, expires_at) ",
                    );
                    qb.push_values(chunk, |mut b, (nonce, expires_at)| {
                        b.push_bind(nonce.clone()).push_bind(*expires_at);
                    });
                    qb.push(" ON CONFLICT (nonce) DO NOTHING RETURNING nonce");
                    let rows: Vec<(String,)> = qb
                        .build_query_as()
                        .fetch_all(&mut *self.write_conn().await?)
                        .await?;
                    fresh.extend(rows.into_iter().map(|(n,)| n));
                }
                let mut answered = std::collections::HashSet::new();
                Ok(batch
                    .iter()
                    .map(|(n, _)| answered.insert(n.as_str()) && fresh.contains(n))
                    .collect())
            }

            async fn purge_nonces(&self, now: i64) -> Result<u64, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "DELETE FROM acme_used_nonces WHERE expires_at < ",
                );
                qb.push_bind(now);
                Ok(qb
                    .build()
                    .execute(&mut *self.write_conn().await?)
                    .await?
                    .rows_affected())
            }

            async fn insert_account(
                &self,
                a: &$crate::acme::AccountRow,
            ) -> Result<(), $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "INSERT INTO acme_accounts ({}) ",
                    $crate::acme::ACCOUNT_COLUMNS
                ));
                qb.push_values([a], |mut b, a| {
                    b.push_bind(a.id.clone())
                        .push_bind(a.key_thumbprint.clone())
                        .push_bind(a.jwk.clone())
                        .push_bind(a.status.clone())
                        .push_bind(a.contact.clone())
                        .push_bind(a.eab_kid.clone())
                        .push_bind(a.created_at);
                });
                qb.build().execute(&mut *self.write_conn().await?).await?;
                Ok(())
            }

            async fn account(
                &self,
                id: &str,
            ) -> Result<Option<$crate::acme::AccountRow>, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM acme_accounts WHERE id = ",
                    $crate::acme::ACCOUNT_COLUMNS
                ));
                qb.push_bind(id.to_owned());
                Ok(qb
                    .build_query_as()
                    .fetch_optional(&mut *self.read_conn().await?)
                    .await?)
            }

            async fn account_by_thumbprint(
                &self,
                tp: &str,
            ) -> Result<Option<$crate::acme::AccountRow>, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM acme_accounts WHERE key_thumbprint = ",
                    $crate::acme::ACCOUNT_COLUMNS
                ));
                qb.push_bind(tp.to_owned());
                Ok(qb
                    .build_query_as()
                    .fetch_optional(&mut *self.read_conn().await?)
                    .await?)
            }

            async fn update_account(
                &self,
                a: &$crate::acme::AccountRow,
            ) -> Result<(), $crate::Error> {
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new("UPDATE acme_accounts SET key_thumbprint = ");
                qb.push_bind(a.key_thumbprint.clone())
                    .push(", jwk = ")
                    .push_bind(a.jwk.clone())
                    .push(", status = ")
                    .push_bind(a.status.clone())
                    .push(", contact = ")
                    .push_bind(a.contact.clone())
                    .push(" WHERE id = ")
                    .push_bind(a.id.clone());
                qb.build().execute(&mut *self.write_conn().await?).await?;
                Ok(())
            }

            async fn insert_eab_key(
                &self,
                k: &$crate::acme::EabKeyRow,
            ) -> Result<(), $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "INSERT INTO acme_eab_keys ({}) ",
                    $crate::acme::EAB_COLUMNS
                ));
                qb.push_values([k], |mut b, k| {
                    b.push_bind(k.kid.clone())
                        .push_bind(k.hmac_key.clone())
                        .push_bind(k.policy.clone())
                        .push_bind(k.account_id.clone())
                        .push_bind(k.created_at)
                        .push_bind(k.revoked_at);
                });
                qb.build().execute(&mut *self.write_conn().await?).await?;
                Ok(())
            }

            async fn eab_key(
                &self,
                kid: &str,
            ) -> Result<Option<$crate::acme::EabKeyRow>, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM acme_eab_keys WHERE kid = ",
                    $crate::acme::EAB_COLUMNS
                ));
                qb.push_bind(kid.to_owned());
                Ok(qb
                    .build_query_as()
                    .fetch_optional(&mut *self.read_conn().await?)
                    .await?)
            }

            async fn eab_keys(&self) -> Result<Vec<$crate::acme::EabKeyRow>, $crate::Error> {
                let qb_sql = format!(
                    "SELECT {} FROM acme_eab_keys ORDER BY created_at, kid",
                    $crate::acme::EAB_COLUMNS
                );
                let mut qb = sqlx::QueryBuilder::<$db>::new(qb_sql);
                Ok(qb
                    .build_query_as()
                    .fetch_all(&mut *self.read_conn().await?)
                    .await?)
            }

            async fn set_eab_hmac_key(
                &self,
                kid: &str,
                hmac_key: &[u8],
            ) -> Result<(), $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE acme_eab_keys SET hmac_key = ");
                qb.push_bind(hmac_key.to_vec())
                    .push(" WHERE kid = ")
                    .push_bind(kid.to_owned());
                qb.build().execute(&mut *self.write_conn().await?).await?;
                Ok(())
            }

            async fn bind_eab_key(
                &self,
                kid: &str,
                account_id: &str,
            ) -> Result<bool, $crate::Error> {
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new("UPDATE acme_eab_keys SET account_id = ");
                qb.push_bind(account_id.to_owned())
                    .push(" WHERE kid = ")
                    .push_bind(kid.to_owned())
                    .push(" AND account_id IS NULL AND revoked_at IS NULL");
                Ok(qb
                    .build()
                    .execute(&mut *self.write_conn().await?)
                    .await?
                    .rows_affected()
                    == 1)
            }

            async fn insert_order(
                &self,
                o: &$crate::acme::OrderRow,
                authzs: &[$crate::acme::AuthorizationRow],
            ) -> Result<(), $crate::Error> {
                let mut conn = self.write_conn().await?;
                if let Some(inline) = self.inline_writes() {
                    // `conn`, held, is the one permit to write.
                    return inline.insert_order(o, authzs);
                }
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "INSERT INTO acme_orders ({}) ",
                    $crate::acme::ORDER_COLUMNS
                ));
                qb.push_values([o], |mut b, o| {
                    b.push_bind(o.id.clone())
                        .push_bind(o.account_id.clone())
                        .push_bind(o.status.clone())
                        .push_bind(o.expires)
                        .push_bind(o.identifiers.clone())
                        .push_bind(o.profile.clone())
                        .push_bind(o.not_before)
                        .push_bind(o.not_after)
                        .push_bind(o.error.clone())
                        .push_bind(o.certificate_serial.clone())
                        .push_bind(o.replaces.clone())
                        .push_bind(o.created_at);
                });
                qb.build().execute(&mut *tx).await?;
                if !authzs.is_empty() {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                        "INSERT INTO acme_authorizations ({}) ",
                        $crate::acme::AUTHZ_COLUMNS
                    ));
                    qb.push_values(authzs, |mut b, a| {
                        b.push_bind(a.id.clone())
                            .push_bind(a.order_id.clone())
                            .push_bind(a.account_id.clone())
                            .push_bind(a.identifier_type.clone())
                            .push_bind(a.identifier_value.clone())
                            .push_bind(a.wildcard)
                            .push_bind(a.status.clone())
                            .push_bind(a.expires)
                            .push_bind(a.challenges.clone());
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn order(
                &self,
                id: &str,
            ) -> Result<Option<$crate::acme::OrderRow>, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM acme_orders WHERE id = ",
                    $crate::acme::ORDER_COLUMNS
                ));
                qb.push_bind(id.to_owned());
                Ok(qb
                    .build_query_as()
                    .fetch_optional(&mut *self.read_conn().await?)
                    .await?)
            }

            async fn order_with_authorizations(
                &self,
                id: &str,
            ) -> Result<
                Option<($crate::acme::OrderRow, Vec<$crate::acme::AuthorizationRow>)>,
                $crate::Error,
            > {
                if let Some(inline) = self.inline_reads() {
                    return inline.order_with_authorizations(id);
                }
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM acme_orders o LEFT JOIN acme_authorizations a \
                     ON a.order_id = o.id WHERE o.id = ",
                    $crate::acme::order_join_columns()
                ));
                qb.push_bind(id.to_owned()).push(" ORDER BY a.id");
                let rows = qb.build().fetch_all(&mut *self.read_conn().await?).await?;
                let Some(first) = rows.first() else {
                    return Ok(None);
                };
                let order: $crate::acme::OrderRow = sqlx::FromRow::from_row(first)?;
                let mut authzs = Vec::with_capacity(rows.len());
                for row in &rows {
                    authzs.extend($crate::acme::joined_authorization(row)?);
                }
                Ok(Some((order, authzs)))
            }

            async fn order_ids_for_account(
                &self,
                account_id: &str,
                limit: i64,
            ) -> Result<Vec<String>, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "SELECT id FROM acme_orders WHERE account_id = ",
                );
                qb.push_bind(account_id.to_owned())
                    .push(" ORDER BY created_at DESC, id LIMIT ")
                    .push_bind(limit);
                let rows: Vec<(String,)> = qb
                    .build_query_as()
                    .fetch_all(&mut *self.read_conn().await?)
                    .await?;
                Ok(rows.into_iter().map(|(id,)| id).collect())
            }

            async fn orders_replacing(
                &self,
                replaces: &str,
            ) -> Result<Vec<$crate::acme::OrderRow>, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM acme_orders WHERE replaces = ",
                    $crate::acme::ORDER_COLUMNS
                ));
                qb.push_bind(replaces.to_owned());
                Ok(qb
                    .build_query_as()
                    .fetch_all(&mut *self.read_conn().await?)
                    .await?)
            }

            async fn update_order(
                &self,
                o: &$crate::acme::OrderRow,
                expected: &str,
            ) -> Result<bool, $crate::Error> {
                if let Some(inline) = self.inline_writes() {
                    // Held until the write returns: the one permit to write.
                    let _exclusive = self.write_conn().await?;
                    return inline.update_order(o, expected);
                }
                let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE acme_orders SET status = ");
                qb.push_bind(o.status.clone())
                    .push(", error = ")
                    .push_bind(o.error.clone())
                    .push(", certificate_serial = ")
                    .push_bind(o.certificate_serial.clone())
                    .push(" WHERE id = ")
                    .push_bind(o.id.clone())
                    .push(" AND status = ")
                    .push_bind(expected.to_owned());
                Ok(qb
                    .build()
                    .execute(&mut *self.write_conn().await?)
                    .await?
                    .rows_affected()
                    == 1)
            }

            async fn authorization(
                &self,
                id: &str,
            ) -> Result<Option<$crate::acme::AuthorizationRow>, $crate::Error> {
                if let Some(inline) = self.inline_reads() {
                    return inline.authorization(id);
                }
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM acme_authorizations WHERE id = ",
                    $crate::acme::AUTHZ_COLUMNS
                ));
                qb.push_bind(id.to_owned());
                Ok(qb
                    .build_query_as()
                    .fetch_optional(&mut *self.read_conn().await?)
                    .await?)
            }

            async fn update_authorization(
                &self,
                a: &$crate::acme::AuthorizationRow,
                expected: &str,
            ) -> Result<bool, $crate::Error> {
                if let Some(inline) = self.inline_writes() {
                    // Held until the write returns: the one permit to write.
                    let _exclusive = self.write_conn().await?;
                    return inline.update_authorization(a, expected);
                }
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new("UPDATE acme_authorizations SET status = ");
                qb.push_bind(a.status.clone())
                    .push(", challenges = ")
                    .push_bind(a.challenges.clone())
                    .push(" WHERE id = ")
                    .push_bind(a.id.clone())
                    .push(" AND status = ")
                    .push_bind(expected.to_owned());
                Ok(qb
                    .build()
                    .execute(&mut *self.write_conn().await?)
                    .await?
                    .rows_affected()
                    == 1)
            }
        }
    };
}
pub(crate) use impl_acme_store;
