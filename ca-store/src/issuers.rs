//! The CA's issuers and pending keys as the database keeps them: which issuing CAs exist (the one
//! in the data directory is registered by id only; others carry their certificate, chains and
//! sealed key), which one is the default (the `default_issuer` setting, changed by
//! compare-and-set so replicas agree), and keys waiting for an outside root to sign their CSR.
//! Keys arrive sealed: this crate never sees a private key in clear.

use async_trait::async_trait;

use crate::Error;

/// One issuer row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IssuerRow {
    /// Hex key identifier.
    pub issuer_id: String,
    /// Subject, RFC 4514.
    pub subject: String,
    /// Unix seconds.
    pub registered_at: i64,
    /// Issuing certificate, DER; None for the data directory's issuer.
    pub certificate: Option<Vec<u8>>,
    /// Parents up to the root, PEM.
    pub parents_pem: Option<String>,
    /// JSON array of alternate chains (PEM each).
    pub alternates_pem: Option<String>,
    /// Sealed PKCS#8 key; None for the data directory's issuer.
    pub key_sealed: Option<Vec<u8>>,
    /// Vault `issuer_name`.
    pub name: Option<String>,
    /// Vault `leaf_not_after_behavior` (`err`, `truncate`, `permit`); None = `err`.
    pub leaf_not_after_behavior: Option<String>,
    /// When it becomes the default, Unix seconds.
    pub activate_at: Option<i64>,
    /// The issuer a rotation made it to replace.
    pub successor_of: Option<String>,
}

/// A key awaiting its certificate.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyRow {
    /// Hex key identifier (of the public key).
    pub key_id: String,
    /// Vault `key_name`.
    pub name: Option<String>,
    /// Sealed PKCS#8.
    pub key_sealed: Vec<u8>,
    /// SubjectPublicKeyInfo, DER.
    pub public_key: Vec<u8>,
    /// The CSR made with it.
    pub csr_pem: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Issuer and key operations, implemented by both backends.
#[async_trait]
pub trait IssuerStore: Send + Sync + 'static {
    /// Every issuer, oldest first.
    async fn issuer_rows(&self) -> Result<Vec<IssuerRow>, Error>;
    /// Adds an issuer. [`Error::AlreadyExists`] when its id is taken, or another issuer already
    /// succeeds the same one (a concurrent rotation won).
    async fn insert_issuer(&self, row: &IssuerRow) -> Result<(), Error>;
    /// Sets an issuer's Vault name, leaf behaviour and activation time; false if unknown.
    /// [`Error::AlreadyExists`] when the name is another issuer's.
    async fn update_issuer(
        &self,
        issuer_id: &str,
        name: Option<&str>,
        leaf_not_after_behavior: Option<&str>,
        activate_at: Option<i64>,
    ) -> Result<bool, Error>;
    /// Every pending key, oldest first.
    async fn key_rows(&self) -> Result<Vec<KeyRow>, Error>;
    /// Stores a pending key.
    async fn insert_key(&self, row: &KeyRow) -> Result<(), Error>;
    /// Removes a pending key; false if absent.
    async fn delete_key(&self, key_id: &str) -> Result<bool, Error>;
    /// Sets `name` to `value` if it currently holds `expected` (None: if it is absent). True when
    /// this call changed it.
    async fn replace_setting(
        &self,
        name: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, Error>;
}

pub(crate) const ISSUER_COLUMNS: &str = "issuer_id, subject, registered_at, certificate, parents_pem, \
     alternates_pem, key_sealed, name, leaf_not_after_behavior, activate_at, successor_of";
pub(crate) const KEY_COLUMNS: &str = "key_id, name, key_sealed, public_key, csr_pem, created_at";

/// Implements [`IssuerStore`] for a backend with `write_conn()` and `read_conn()`.
macro_rules! impl_issuer_store {
    ($backend:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::issuers::IssuerStore for $backend {
            async fn issuer_rows(&self) -> Result<Vec<$crate::issuers::IssuerRow>, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM ca_issuers ORDER BY registered_at, issuer_id",
                    $crate::issuers::ISSUER_COLUMNS
                ));
                Ok(qb
                    .build_query_as()
                    .fetch_all(&mut *self.read_conn().await?)
                    .await?)
            }

            async fn insert_issuer(
                &self,
                r: &$crate::issuers::IssuerRow,
            ) -> Result<(), $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "INSERT INTO ca_issuers ({}) ",
                    $crate::issuers::ISSUER_COLUMNS
                ));
                qb.push_values([r], |mut b, r| {
                    b.push_bind(r.issuer_id.clone())
                        .push_bind(r.subject.clone())
                        .push_bind(r.registered_at)
                        .push_bind(r.certificate.clone())
                        .push_bind(r.parents_pem.clone())
                        .push_bind(r.alternates_pem.clone())
                        .push_bind(r.key_sealed.clone())
                        .push_bind(r.name.clone())
                        .push_bind(r.leaf_not_after_behavior.clone())
                        .push_bind(r.activate_at)
                        .push_bind(r.successor_of.clone());
                });
                qb.build().execute(&mut *self.write_conn().await?).await?;
                Ok(())
            }

            async fn update_issuer(
                &self,
                issuer_id: &str,
                name: Option<&str>,
                leaf_not_after_behavior: Option<&str>,
                activate_at: Option<i64>,
            ) -> Result<bool, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE ca_issuers SET name = ");
                qb.push_bind(name.map(str::to_owned))
                    .push(", leaf_not_after_behavior = ")
                    .push_bind(leaf_not_after_behavior.map(str::to_owned))
                    .push(", activate_at = ")
                    .push_bind(activate_at)
                    .push(" WHERE issuer_id = ")
                    .push_bind(issuer_id.to_owned());
                Ok(qb
                    .build()
                    .execute(&mut *self.write_conn().await?)
                    .await?
                    .rows_affected()
                    == 1)
            }

            async fn key_rows(&self) -> Result<Vec<$crate::issuers::KeyRow>, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM ca_keys ORDER BY created_at, key_id",
                    $crate::issuers::KEY_COLUMNS
                ));
                Ok(qb
                    .build_query_as()
                    .fetch_all(&mut *self.read_conn().await?)
                    .await?)
            }

            async fn insert_key(&self, r: &$crate::issuers::KeyRow) -> Result<(), $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "INSERT INTO ca_keys ({}) ",
                    $crate::issuers::KEY_COLUMNS
                ));
                qb.push_values([r], |mut b, r| {
                    b.push_bind(r.key_id.clone())
                        .push_bind(r.name.clone())
                        .push_bind(r.key_sealed.clone())
                        .push_bind(r.public_key.clone())
                        .push_bind(r.csr_pem.clone())
                        .push_bind(r.created_at);
                });
                qb.build().execute(&mut *self.write_conn().await?).await?;
                Ok(())
            }

            async fn delete_key(&self, key_id: &str) -> Result<bool, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("DELETE FROM ca_keys WHERE key_id = ");
                qb.push_bind(key_id.to_owned());
                Ok(qb
                    .build()
                    .execute(&mut *self.write_conn().await?)
                    .await?
                    .rows_affected()
                    == 1)
            }

            async fn replace_setting(
                &self,
                name: &str,
                expected: Option<&[u8]>,
                value: &[u8],
            ) -> Result<bool, $crate::Error> {
                let mut qb = match expected {
                    None => {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO settings (name, value) VALUES (",
                        );
                        qb.push_bind(name.to_owned())
                            .push(", ")
                            .push_bind(value.to_vec())
                            .push(") ON CONFLICT (name) DO NOTHING");
                        qb
                    }
                    Some(expected) => {
                        let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE settings SET value = ");
                        qb.push_bind(value.to_vec())
                            .push(" WHERE name = ")
                            .push_bind(name.to_owned())
                            .push(" AND value = ")
                            .push_bind(expected.to_vec());
                        qb
                    }
                };
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
pub(crate) use impl_issuer_store;
