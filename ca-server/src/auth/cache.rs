//! What every Vault request reads, cached for [`TTL`] ([`crate::ttl_cache`]): token rows, parsed
//! ACL policies, PKI roles and mount tuning. Writes on this replica update or drop their entry at once; a change
//! made on another replica is seen within [`TTL`] (Vault's performance standbys are eventually
//! consistent too), and so is a token revoked there. Objects with mutable state — AppRole secret
//! IDs with use limits — are never cached.

use std::sync::Arc;
use std::time::Duration;

use ca_store::vault::TokenRow;

use super::acl::Policy;
use crate::ttl_cache::TtlCache;

/// How long an entry is trusted without asking the database.
pub const TTL: Duration = Duration::from_secs(2);
/// Entries kept at most per map (cert-manager logs in afresh for every signing, so tokens churn).
const MAX_ENTRIES: usize = 10_000;

/// The cache; one per [`super::Auth`].
#[derive(Debug)]
pub struct Cache {
    objects: TtlCache<(&'static str, String, String), String>,
    tokens: TtlCache<String, TokenRow>,
    policies: TtlCache<String, Arc<Policy>>,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            objects: TtlCache::new(TTL, MAX_ENTRIES),
            tokens: TtlCache::new(TTL, MAX_ENTRIES),
            policies: TtlCache::new(TTL, MAX_ENTRIES),
        }
    }
}

impl Cache {
    /// A fresh cached object body.
    pub fn object(&self, kind: &'static str, mount: &str, name: &str) -> Option<String> {
        self.objects.get(&(kind, mount.to_owned(), name.to_owned()))
    }

    /// Remembers an object body just read or written.
    pub fn put_object(&self, kind: &'static str, mount: &str, name: &str, body: &str) {
        self.objects
            .put((kind, mount.to_owned(), name.to_owned()), body.to_owned());
    }

    /// Drops an object (deleted or rewritten on this replica).
    pub fn forget_object(&self, kind: &'static str, mount: &str, name: &str) {
        self.objects
            .forget(&(kind, mount.to_owned(), name.to_owned()));
    }

    /// A fresh cached token row, by token hash.
    pub fn token(&self, hash: &str) -> Option<TokenRow> {
        self.tokens.get(hash)
    }

    /// Remembers a token row just read.
    pub fn put_token(&self, hash: &str, row: &TokenRow) {
        self.tokens.put(hash.to_owned(), row.clone());
    }

    /// Forgets every cached token (after a revocation on this replica, which may have removed a
    /// whole tree of tokens known here only by hash).
    pub fn forget_tokens(&self) {
        self.tokens.clear();
    }

    /// A fresh parsed policy.
    pub fn policy(&self, name: &str) -> Option<Arc<Policy>> {
        self.policies.get(name)
    }

    /// Remembers a parsed policy.
    pub fn put_policy(&self, name: &str, policy: &Arc<Policy>) {
        self.policies.put(name.to_owned(), Arc::clone(policy));
    }

    /// Drops a policy (deleted on this replica).
    pub fn forget_policy(&self, name: &str) {
        self.policies.forget(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_deletes_drop_entries() {
        let cache = Cache::default();
        assert_eq!(cache.object("pki_role", "", "a"), None);
        cache.put_object("pki_role", "", "a", "v1");
        assert_eq!(cache.object("pki_role", "", "a").as_deref(), Some("v1"));
        assert_eq!(
            cache.object("cert_role", "", "a"),
            None,
            "kinds are separate"
        );
        cache.put_object("pki_role", "", "a", "v2");
        assert_eq!(cache.object("pki_role", "", "a").as_deref(), Some("v2"));
        cache.forget_object("pki_role", "", "a");
        assert_eq!(cache.object("pki_role", "", "a"), None);
    }
}
