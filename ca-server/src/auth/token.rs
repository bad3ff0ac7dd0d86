//! Tokens: opaque `hvs.` secrets handed out once and stored only as SHA-256 hashes, each with an
//! accessor (a public handle), policies, a TTL and a parent.
//!
//! Rules this module enforces, whoever asks:
//! - **Logins never make root tokens** (Vault: "auth methods cannot create root tokens"): a login
//!   whose role would grant `root` is refused.
//! - Only a root token may create a root token, and a non-root token may give its children only
//!   policies it has itself.
//! - Tokens form a tree: a child never outlives its parent (its expiry is capped at the parent's,
//!   at creation and at every renewal) and revoking a token revokes its descendants. Orphans
//!   have no parent.
//! - Tokens with a TTL are renewable, as Vault's service tokens are: a renewal grants the
//!   requested increment (default: the token's TTL) from now, never beyond the token's maximum
//!   (its explicit max TTL, else 768h after creation).
//! - Root tokens are made only by explicit operator action ([`Auth::mint_root`]: `init`, the first
//!   `serve` of a new deployment, `ca-server token root`), never one per data directory.

use std::time::Duration;

use ca_store::vault::TokenRow;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::{Auth, Error};
use crate::policy::role::Workload;

/// Default and longest lifetime of tokens from logins and `token/create` (Vault's 768h system
/// default and maximum); a longer request is capped, as Vault caps it at the mount's max TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(768 * 3600);

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// `n` random bytes, base64url.
pub(crate) fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .unwrap_or_else(|_| panic!("the operating system's random number generator failed"));
    crate::jose::b64url(&bytes)
}

/// Hex SHA-256: how tokens and secret IDs are stored.
pub(crate) fn sha256_hex(s: &str) -> String {
    crate::issuer::hierarchy::hex(
        ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref(),
    )
}

/// An authenticated token holder.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The token's accessor.
    pub accessor: String,
    /// Its policies.
    pub policies: Vec<String>,
    /// Display name (`kubernetes-ns-sa`, `approle-web`, `root`…).
    pub display_name: String,
    /// Metadata: `auth_method`, `mount`, `role`, `service_account_namespace`, …
    pub meta: Map<String, Value>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; None: never expires.
    pub expires_at: Option<i64>,
    /// The parent token's accessor; None for orphans.
    pub parent: Option<String>,
    /// Seconds a renewal grants by default; None: not renewable.
    pub renew_ttl: Option<i64>,
    /// The latest expiry a renewal may reach.
    pub max_expires_at: Option<i64>,
}

impl Caller {
    /// Whether the token can be renewed.
    pub fn renewable(&self) -> bool {
        self.renew_ttl.is_some() && self.expires_at.is_some()
    }

    /// The explicit maximum TTL, seconds from creation (0: none beyond the system's).
    pub fn explicit_max_ttl(&self) -> i64 {
        self.max_expires_at
            .map(|m| m - self.created_at)
            .filter(|d| *d != i64::try_from(DEFAULT_TTL.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    /// A metadata string.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta.get(key).and_then(Value::as_str)
    }

    /// True for root tokens.
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    /// The workload identity established at a kubernetes login, and only there.
    pub fn workload(&self) -> Option<Workload<'_>> {
        if self.meta("auth_method") != Some("kubernetes") {
            return None;
        }
        Some(Workload {
            namespace: self.meta("service_account_namespace")?,
            service_account: self.meta("service_account_name")?,
        })
    }

    /// Seconds left; 0 for tokens that never expire.
    pub fn ttl(&self) -> i64 {
        self.expires_at.map(|e| (e - now()).max(0)).unwrap_or(0)
    }

    fn from_row(row: TokenRow) -> Self {
        Self {
            accessor: row.accessor,
            policies: serde_json::from_str(&row.policies).unwrap_or_default(),
            display_name: row.display_name,
            meta: serde_json::from_str(&row.meta).unwrap_or_default(),
            created_at: row.created_at,
            expires_at: row.expires_at,
            parent: row.parent_accessor,
            renew_ttl: row.ttl,
            max_expires_at: row.max_expires_at,
        }
    }
}

/// What a new token should carry.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    /// Policies (for children: empty inherits the parent's).
    pub policies: Vec<String>,
    /// Display name.
    pub display_name: String,
    /// Metadata.
    pub meta: Map<String, Value>,
    /// Lifetime; None: [`DEFAULT_TTL`] (root tokens: no expiry).
    pub ttl: Option<Duration>,
    /// Leave out the `default` policy.
    pub no_default_policy: bool,
    /// The latest a renewal may extend the token to, from its creation; None: 768h.
    pub explicit_max_ttl: Option<Duration>,
    /// Whether it may be renewed (Vault's default: yes).
    pub renewable: bool,
}

/// What a renewal may grant.
#[derive(Debug, Clone, Copy, Default)]
struct Renewal {
    ttl: Option<i64>,
    max_expires_at: Option<i64>,
}

/// Who is making a token.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A login method; never root.
    Login,
    /// `auth/token/create` by `parent`; the token joins its tree.
    Child(&'a super::Authorized),
    /// `auth/token/create-orphan` (or `no_parent`) by a caller whose rule grants sudo.
    Orphan(&'a super::Authorized),
    /// `auth/token/create/<role>`: the token role has already decided the policies (never
    /// root) and whether the token is an orphan, so neither the creator's policies nor sudo
    /// bound it.
    Role {
        /// The caller.
        by: &'a super::Authorized,
        /// Made without a parent.
        orphan: bool,
    },
}

impl Auth {
    /// Mints a token for `origin` under the root-token and subset rules. Returns the secret (shown
    /// once) and the caller it authenticates.
    pub async fn mint(
        &self,
        spec: TokenSpec,
        origin: Origin<'_>,
    ) -> Result<(String, Caller), Error> {
        let mut policies: Vec<String> = spec
            .policies
            .iter()
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        let wants_root = policies.iter().any(|p| p == "root");
        let (parent, creator) = match origin {
            Origin::Login => {
                if wants_root {
                    return Err(Error::Invalid(
                        "auth methods cannot create root tokens".into(),
                    ));
                }
                (None, None)
            }
            Origin::Child(by) | Origin::Orphan(by) => {
                let creator = by.caller();
                if matches!(origin, Origin::Orphan(_)) && !by.sudo() {
                    return Err(Error::Denied);
                }
                if policies.is_empty() {
                    policies = creator.policies.clone();
                } else if !creator.is_root() {
                    if wants_root {
                        return Err(Error::Invalid(
                            "root tokens may only be created by a root token".into(),
                        ));
                    }
                    if let Some(p) = policies
                        .iter()
                        .find(|p| *p != "default" && !creator.policies.contains(p))
                    {
                        return Err(Error::Invalid(format!(
                            "child policies must be a subset of the parent's ({p:?} is not)"
                        )));
                    }
                }
                let parent = matches!(origin, Origin::Child(_)).then_some(creator);
                (parent, Some(creator))
            }
            Origin::Role { by, orphan } => {
                if wants_root {
                    return Err(Error::Invalid(
                        "token roles cannot create root tokens".into(),
                    ));
                }
                let creator = by.caller();
                ((!orphan).then_some(creator), Some(creator))
            }
        };
        let is_root = policies.iter().any(|p| p == "root");
        if !is_root && !spec.no_default_policy && !policies.iter().any(|p| p == "default") {
            policies.push("default".into());
        }
        policies.sort();
        policies.dedup();
        let created_at = now();
        let ttl = match spec.ttl {
            Some(t) if !t.is_zero() => Some(t.min(DEFAULT_TTL)),
            _ if is_root => None,
            _ => Some(DEFAULT_TTL),
        };
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let max_expires_at = ttl.map(|_| {
            created_at.saturating_add(secs(
                spec.explicit_max_ttl
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_TTL)
                    .min(DEFAULT_TTL),
            ))
        });
        let mut expires_at = ttl.map(|t| created_at.saturating_add(secs(t)));
        if let (Some(e), Some(m)) = (expires_at, max_expires_at) {
            expires_at = Some(e.min(m));
        }
        // A child never outlives its parent.
        if let Some(parent_expiry) = parent.and_then(|p| p.expires_at) {
            expires_at = Some(expires_at.map_or(parent_expiry, |e| e.min(parent_expiry)));
        }
        if creator.is_some() && is_root {
            tracing::info!(by = ?creator.map(|c| &c.accessor), "a root token was created by a root token");
        }
        let renewal = Renewal {
            ttl: ttl.filter(|_| spec.renewable).map(secs),
            max_expires_at,
        };
        self.insert(
            policies,
            &spec.display_name,
            spec.meta,
            expires_at,
            parent,
            renewal,
        )
        .await
    }

    /// Renews a live token: its expiry becomes now + `increment` (default: its TTL), capped at
    /// its maximum and its parent's expiry. Returns the token as renewed.
    pub async fn renew(
        &self,
        target: &Caller,
        increment: Option<Duration>,
    ) -> Result<Caller, Error> {
        let (Some(ttl), Some(_)) = (target.renew_ttl, target.expires_at) else {
            return Err(Error::Invalid("lease is not renewable".into()));
        };
        let now = now();
        let grant = increment
            .filter(|d| !d.is_zero())
            .map_or(ttl, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut expires_at = now.saturating_add(grant);
        if let Some(max) = target.max_expires_at {
            expires_at = expires_at.min(max);
        }
        if let Some(parent) = &target.parent
            && let Some(p) = self.lookup_accessor(parent).await?
            && let Some(parent_expiry) = p.expires_at
        {
            expires_at = expires_at.min(parent_expiry);
        }
        // A renewal never shortens the token.
        let expires_at = expires_at.max(target.expires_at.unwrap_or(expires_at));
        if !self
            .store
            .renew_token(&target.accessor, expires_at, now)
            .await?
        {
            return Err(Error::Denied);
        }
        self.cache.forget_tokens();
        let mut renewed = target.clone();
        renewed.expires_at = Some(expires_at);
        Ok(renewed)
    }

    /// Mints a root token (no TTL, no parent). Only the server's explicit commands call this.
    pub async fn mint_root(&self) -> Result<(String, Caller), Error> {
        self.insert(
            vec!["root".into()],
            "root",
            Map::new(),
            None,
            None,
            Renewal::default(),
        )
        .await
    }

    async fn insert(
        &self,
        policies: Vec<String>,
        display_name: &str,
        meta: Map<String, Value>,
        expires_at: Option<i64>,
        parent: Option<&Caller>,
        renewal: Renewal,
    ) -> Result<(String, Caller), Error> {
        let token = format!("hvs.{}", random_b64(24));
        let row = TokenRow {
            accessor: random_b64(18),
            token_hash: sha256_hex(&token),
            policies: serde_json::to_string(&policies)
                .map_err(|e| Error::Internal(e.to_string()))?,
            display_name: display_name.to_owned(),
            meta: Value::Object(meta).to_string(),
            created_at: now(),
            expires_at,
            parent_accessor: parent.map(|p| p.accessor.clone()),
            ttl: renewal.ttl,
            max_expires_at: renewal.max_expires_at,
        };
        self.store.insert_token(&row).await?;
        Ok((token, Caller::from_row(row)))
    }

    /// The caller a token authenticates; [`Error::Denied`] when unknown or expired.
    pub async fn lookup(&self, token: &str) -> Result<Caller, Error> {
        let token = token.trim();
        if token.is_empty() || token.len() > 512 {
            return Err(Error::Denied);
        }
        let hash = sha256_hex(token);
        let row = match self.cache.token(&hash) {
            Some(row) => row,
            None => {
                let row = self
                    .store
                    .token_by_hash(&hash)
                    .await?
                    .ok_or(Error::Denied)?;
                self.cache.put_token(&hash, &row);
                row
            }
        };
        if row.expires_at.is_some_and(|e| e <= now()) {
            return Err(Error::Denied);
        }
        Ok(Caller::from_row(row))
    }

    /// The token with this accessor, if it exists and has not expired.
    pub async fn lookup_accessor(&self, accessor: &str) -> Result<Option<Caller>, Error> {
        let row = self.store.token_by_accessor(accessor).await?;
        Ok(row
            .filter(|r| r.expires_at.is_none_or(|e| e > now()))
            .map(Caller::from_row))
    }

    /// Revokes a token alone: its children become orphans (Vault's `revoke-orphan`).
    pub async fn revoke_orphaning(&self, accessor: &str) -> Result<u64, Error> {
        let n = self.store.revoke_token_orphaning(accessor).await?;
        self.cache.forget_tokens();
        tracing::info!(
            accessor,
            revoked = n,
            "token revoked; its children are orphans now"
        );
        Ok(n)
    }

    /// Revokes a token and every token below it. Returns how many were revoked.
    pub async fn revoke(&self, accessor: &str) -> Result<u64, Error> {
        let n = self.store.revoke_token_tree(accessor).await?;
        self.cache.forget_tokens();
        tracing::info!(accessor, revoked = n, "token revoked with its children");
        Ok(n)
    }
}
