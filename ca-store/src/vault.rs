//! Vault-compatible API state: tokens (stored by SHA-256 hash, never in clear) and named JSON
//! documents (PKI roles, auth roles and configuration, ACL policies, AppRole secret IDs).
//! Replicas sharing the database share all of it.

use async_trait::async_trait;

use crate::Error;

/// A token as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenRow {
    /// Public handle (Vault's accessor).
    pub accessor: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// JSON array of policy names.
    pub policies: String,
    /// e.g. `kubernetes-ns-sa`, `approle`, `root`.
    pub display_name: String,
    /// JSON object: auth method, role, namespace, service account…
    pub meta: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; None never expires (the root token).
    pub expires_at: Option<i64>,
    /// The parent token's accessor; None for orphans.
    pub parent_accessor: Option<String>,
    /// Seconds a renewal grants by default; None: not renewable (root tokens, older rows).
    pub ttl: Option<i64>,
    /// The latest expiry a renewal may reach, Unix seconds.
    pub max_expires_at: Option<i64>,
}

/// Vault state operations, implemented by both backends.
#[async_trait]
pub trait VaultStore: Send + Sync + 'static {
    /// Stores a token.
    async fn insert_token(&self, token: &TokenRow) -> Result<(), Error>;
    /// Looks a token up by hash (expired tokens included; callers check `expires_at`).
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>, Error>;
    /// Looks a token up by accessor.
    async fn token_by_accessor(&self, accessor: &str) -> Result<Option<TokenRow>, Error>;
    /// Deletes the token with this accessor and all its descendants; returns how many.
    async fn revoke_token_tree(&self, accessor: &str) -> Result<u64, Error>;
    /// Deletes the token with this accessor only; its children lose their parent (orphans).
    async fn revoke_token_orphaning(&self, accessor: &str) -> Result<u64, Error>;
    /// Sets a live token's expiry (a renewal); false when it is unknown or already expired.
    async fn renew_token(&self, accessor: &str, expires_at: i64, now: i64) -> Result<bool, Error>;
    /// Deletes tokens that expired before `now`.
    async fn purge_tokens(&self, now: i64) -> Result<u64, Error>;
    /// Creates or replaces a document.
    async fn put_object(
        &self,
        kind: &str,
        mount: &str,
        name: &str,
        body: &str,
        now: i64,
    ) -> Result<(), Error>;
    /// Reads a document.
    async fn object(&self, kind: &str, mount: &str, name: &str) -> Result<Option<String>, Error>;
    /// Names of the documents of a kind under a mount, sorted.
    async fn object_names(&self, kind: &str, mount: &str) -> Result<Vec<String>, Error>;
    /// Deletes a document; false if absent.
    async fn delete_object(&self, kind: &str, mount: &str, name: &str) -> Result<bool, Error>;
    /// Replaces a document only if its body is still `expected` (compare-and-set); false if it
    /// changed or vanished meanwhile.
    async fn replace_object(
        &self,
        kind: &str,
        mount: &str,
        name: &str,
        expected: &str,
        body: &str,
        now: i64,
    ) -> Result<bool, Error>;
    /// Deletes a document only if its body is still `expected`; false otherwise.
    async fn delete_object_if(
        &self,
        kind: &str,
        mount: &str,
        name: &str,
        expected: &str,
    ) -> Result<bool, Error>;
}

pub(crate) const TOKEN_COLUMNS: &str = "accessor, token_hash, policies, display_name, meta, \
     created_at, expires_at, parent_accessor, ttl, max_expires_at";

/// Implements [`VaultStore`] for a backend with `write_conn()` and `read_conn()`.
macro_rules! impl_vault_store {
    ($backend:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::vault::VaultStore for $backend {
            async fn insert_token(&self, t: &$crate::vault::TokenRow) -> Result<(), $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!("INSERT INTO vault_tokens ({}) ", $crate::vault::TOKEN_COLUMNS));
                qb.push_values([t], |mut b, t| {
                    b.push_bind(t.accessor.clone()).push_bind(t.token_hash.clone()).push_bind(t.policies.clone())
                        .push_bind(t.display_name.clone()).push_bind(t.meta.clone()).push_bind(t.created_at)
                        .push_bind(t.expires_at).push_bind(t.parent_accessor.clone())
                        .push_bind(t.ttl).push_bind(t.max_expires_at);
                });
                qb.build().execute(&mut *self.write_conn().await?).await?;
                Ok(())
            }

            async fn token_by_hash(&self, hash: &str) -> Result<Option<$crate::vault::TokenRow>, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!("SELECT {} FROM vault_tokens WHERE token_hash = ", $crate::vault::TOKEN_COLUMNS));
                qb.push_bind(hash.to_owned());
                Ok(qb.build_query_as().fetch_optional(&mut *self.read_conn().await?).await?)
            }

            async fn token_by_accessor(&self, accessor: &str) -> Result<Option<$crate::vault::TokenRow>, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!("SELECT {} FROM vault_tokens WHERE accessor = ", $crate::vault::TOKEN_COLUMNS));
                qb.push_bind(accessor.to_owned());
                Ok(qb.build_query_as().fetch_optional(&mut *self.read_conn().await?).await?)
            }

            async fn revoke_token_tree(&self, accessor: &str) -> Result<u64, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "WITH RECURSIVE tree(accessor) AS (SELECT accessor FROM vault_tokens WHERE accessor = ",
                );
                qb.push_bind(accessor.to_owned()).push(
                    " UNION SELECT t.accessor FROM vault_tokens t JOIN tree ON t.parent_accessor = tree.accessor) \
                     DELETE FROM vault_tokens WHERE accessor IN (SELECT accessor FROM tree)",
                );
                Ok(qb.build().execute(&mut *self.write_conn().await?).await?.rows_affected())
            }

            async fn renew_token(&self, accessor: &str, expires_at: i64, now: i64) -> Result<bool, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE vault_tokens SET expires_at = ");
                qb.push_bind(expires_at).push(" WHERE accessor = ").push_bind(accessor.to_owned())
                    .push(" AND expires_at > ").push_bind(now);
                Ok(qb.build().execute(&mut *self.write_conn().await?).await?.rows_affected() == 1)
            }

            async fn revoke_token_orphaning(&self, accessor: &str) -> Result<u64, $crate::Error> {
                let mut conn = self.write_conn().await?;
                let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE vault_tokens SET parent_accessor = NULL WHERE parent_accessor = ");
                qb.push_bind(accessor.to_owned());
                qb.build().execute(&mut *conn).await?;
                let mut qb = sqlx::QueryBuilder::<$db>::new("DELETE FROM vault_tokens WHERE accessor = ");
                qb.push_bind(accessor.to_owned());
                Ok(qb.build().execute(&mut *conn).await?.rows_affected())
            }

            async fn purge_tokens(&self, now: i64) -> Result<u64, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("DELETE FROM vault_tokens WHERE expires_at < ");
                qb.push_bind(now);
                Ok(qb.build().execute(&mut *self.write_conn().await?).await?.rows_affected())
            }

            async fn put_object(&self, kind: &str, mount: &str, name: &str, body: &str, now: i64) -> Result<(), $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("INSERT INTO vault_objects (kind, mount, name, body, updated_at) VALUES (");
                qb.push_bind(kind.to_owned()).push(", ").push_bind(mount.to_owned()).push(", ")
                    .push_bind(name.to_owned()).push(", ").push_bind(body.to_owned()).push(", ").push_bind(now)
                    .push(") ON CONFLICT (kind, mount, name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at");
                qb.build().execute(&mut *self.write_conn().await?).await?;
                Ok(())
            }

            async fn object(&self, kind: &str, mount: &str, name: &str) -> Result<Option<String>, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT body FROM vault_objects WHERE kind = ");
                qb.push_bind(kind.to_owned()).push(" AND mount = ").push_bind(mount.to_owned())
                    .push(" AND name = ").push_bind(name.to_owned());
                let row: Option<(String,)> = qb.build_query_as().fetch_optional(&mut *self.read_conn().await?).await?;
                Ok(row.map(|(b,)| b))
            }

            async fn object_names(&self, kind: &str, mount: &str) -> Result<Vec<String>, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT name FROM vault_objects WHERE kind = ");
                qb.push_bind(kind.to_owned()).push(" AND mount = ").push_bind(mount.to_owned()).push(" ORDER BY name");
                let rows: Vec<(String,)> = qb.build_query_as().fetch_all(&mut *self.read_conn().await?).await?;
                Ok(rows.into_iter().map(|(n,)| n).collect())
            }

            async fn replace_object(&self, kind: &str, mount: &str, name: &str, expected: &str, body: &str, now: i64) -> Result<bool, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE vault_objects SET body = ");
                qb.push_bind(body.to_owned()).push(", updated_at = ").push_bind(now)
                    .push(" WHERE kind = ").push_bind(kind.to_owned()).push(" AND mount = ").push_bind(mount.to_owned())
                    .push(" AND name = ").push_bind(name.to_owned()).push(" AND body = ").push_bind(expected.to_owned());
                Ok(qb.build().execute(&mut *self.write_conn().await?).await?.rows_affected() == 1)
            }

            async fn delete_object_if(&self, kind: &str, mount: &str, name: &str, expected: &str) -> Result<bool, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("DELETE FROM vault_objects WHERE kind = ");
                qb.push_bind(kind.to_owned()).push(" AND mount = ").push_bind(mount.to_owned())
                    .push(" AND name = ").push_bind(name.to_owned()).push(" AND body = ").push_bind(expected.to_owned());
                Ok(qb.build().execute(&mut *self.write_conn().await?).await?.rows_affected() == 1)
            }

            async fn delete_object(&self, kind: &str, mount: &str, name: &str) -> Result<bool, $crate::Error> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("DELETE FROM vault_objects WHERE kind = ");
                qb.push_bind(kind.to_owned()).push(" AND mount = ").push_bind(mount.to_owned())
                    .push(" AND name = ").push_bind(name.to_owned());
                Ok(qb.build().execute(&mut *self.write_conn().await?).await?.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use impl_vault_store;
