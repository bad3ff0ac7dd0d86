//! Who is calling the Vault surface, and may they: the deny-by-default layer every `/v1/` request
//! crosses before a handler runs.
//!
//! - [`token`]: tokens (opaque secrets stored as SHA-256 hashes, with an accessor, policies, a TTL
//!   and a parent), the token tree (revoking a token revokes its children), and the root-token
//!   rules (only the server's explicit commands make root tokens; logins never do).
//! - [`acl`]: HCL policies with Vault's semantics, compiled per token.
//! - [`kubernetes`], [`approle`], [`cert`]: the login methods; each establishes *who* the caller
//!   is and which policies its token gets.
//!
//! The Vault edge declares each route as public or token-protected; for the latter it calls
//! [`Auth::authorize`] with the normalised path, the operation and the parameters, and hands the
//! handler the resulting [`Authorized`] — a value only this module can make, so a handler that
//! needs a caller cannot run without the check. Nothing here speaks HTTP: errors are [`Error`],
//! which the edge maps to Vault's `{"errors":[…]}` in one place.

pub mod acl;
pub mod approle;
pub mod cache;
pub mod cert;
pub mod kubernetes;
pub mod token;
mod token_review;

use std::sync::Arc;

use serde_json::{Map, Value};

pub use acl::{AclOperation, Decision};
pub use token::Caller;

use crate::seal::Seal;

/// Why authentication or authorization failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No token, an unknown or expired token, a refused login, or an ACL refusal. Vault says
    /// nothing more than "permission denied" for any of these; the reason is logged.
    #[error("permission denied")]
    Denied,
    /// A request the caller must change (unknown role, malformed field, forbidden policy).
    #[error("{0}")]
    Invalid(String),
    /// A dependency is unavailable (database, the Kubernetes API server): retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] ca_store::Error),
    /// A bug or corrupt state; logged, reported generically.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A caller whose token the dispatcher verified and whose ACL allowed the request at hand. Only
/// [`Auth::authorize`] makes one.
#[derive(Debug, Clone)]
pub struct Authorized {
    caller: Caller,
    sudo: bool,
}

impl Authorized {
    /// Who is calling.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Whether the rule that allowed the request grants `sudo` (root tokens always do).
    pub fn sudo(&self) -> bool {
        self.sudo
    }
}

/// A login method's role, as stored under its mount.
pub trait AuthRole: serde::Serialize + serde::de::DeserializeOwned {
    /// The stored object kind.
    const KIND: &'static str;
    /// The method's rules for a role (no role hands out root).
    fn validate(&self) -> Result<(), Error>;
    /// Carries over what an update keeps from the stored role (an AppRole's role ID).
    fn keep_from(&mut self, _existing: Self) {}
}

/// The auth layer: the store, the caches and the seal for secrets in auth configuration.
#[derive(Clone)]
pub struct Auth {
    pub(crate) store: Arc<dyn ca_store::Store>,
    pub(crate) cache: Arc<cache::Cache>,
    pub(crate) seal: Arc<Seal>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth")
    }
}

impl Auth {
    /// The shared store (token roles and other auth documents live there).
    pub fn store(&self) -> &Arc<dyn ca_store::Store> {
        &self.store
    }

    /// The auth layer over the shared store.
    pub fn new(store: Arc<dyn ca_store::Store>, seal: Arc<Seal>) -> Self {
        Self {
            store,
            cache: Arc::default(),
            seal,
        }
    }

    /// Authenticates `token` and checks `op` on `path` with `data` against its policies.
    pub async fn authorize(
        &self,
        token: Option<&str>,
        path: &str,
        op: AclOperation,
        data: &Map<String, Value>,
    ) -> Result<Authorized, Error> {
        let caller = self.authenticate(token).await?;
        self.authorize_caller(caller, path, op, data).await
    }

    /// Checks `op` on `path` with `data` against an authenticated caller's policies.
    pub async fn authorize_caller(
        &self,
        caller: Caller,
        path: &str,
        op: AclOperation,
        data: &Map<String, Value>,
    ) -> Result<Authorized, Error> {
        let acl = self.acl(&caller).await?;
        match acl.check(path, op, data) {
            Decision::Allowed { sudo } => Ok(Authorized { caller, sudo }),
            Decision::Denied => {
                tracing::info!(accessor = %caller.accessor, path, op = ?op, "request denied by policy");
                Err(Error::Denied)
            }
        }
    }

    /// The caller behind `token`; [`Error::Denied`] when absent, unknown or expired.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Caller, Error> {
        let token = token.ok_or(Error::Denied)?;
        self.lookup(token).await
    }

    /// A stored JSON object (a role, a configuration).
    pub(crate) async fn json<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static str,
        mount: &str,
        name: &str,
    ) -> Result<Option<T>, Error> {
        match self.store.object(kind, mount, name).await? {
            Some(body) => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| Error::Internal(format!("stored {kind} {name}: {e}"))),
            None => Ok(None),
        }
    }

    /// Stores a JSON object.
    pub(crate) async fn put_json<T: serde::Serialize>(
        &self,
        kind: &'static str,
        mount: &str,
        name: &str,
        value: &T,
    ) -> Result<(), Error> {
        let body = serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.store.put_object(kind, mount, name, &body, now).await?;
        Ok(())
    }

    /// Validates and stores a role of a login method.
    pub async fn put_role<T: AuthRole>(
        &self,
        mount: &str,
        name: &str,
        mut role: T,
    ) -> Result<(), Error> {
        role.validate()?;
        if let Some(existing) = self.json::<T>(T::KIND, mount, name).await? {
            role.keep_from(existing);
        }
        self.put_json(T::KIND, mount, name, &role).await
    }

    /// The compiled policies of a caller.
    pub async fn acl(&self, caller: &Caller) -> Result<acl::Acl, Error> {
        if caller.is_root() {
            return Ok(acl::Acl::root());
        }
        let mut policies = Vec::with_capacity(caller.policies.len());
        for name in &caller.policies {
            if let Some(policy) = self.policy(name).await? {
                policies.push(policy);
            }
        }
        Ok(acl::Acl::new(policies.iter().map(|p| p.as_ref())))
    }
}
