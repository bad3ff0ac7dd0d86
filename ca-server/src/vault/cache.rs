//! A short-lived in-process cache of what every Vault request reads: token rows, ACL policies and
//! PKI roles. Writes on this replica update or drop their entry at once; a change made on another
//! replica is seen within [`TTL`] (Vault's performance standbys are eventually consistent too).
//! Token rows never change after creation (expiry is checked on every use), and objects with
//! mutable state — AppRole secret IDs with use limits — are never cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ca_store::vault::TokenRow;

/// How long an entry is trusted without asking the database.
pub const TTL: Duration = Duration::from_secs(2);
/// Entries kept at most per map (cert-manager logs in afresh for every signing, so tokens churn).
const MAX_ENTRIES: usize = 10_000;

type ObjectKey = (&'static str, String, String);

/// The cache; one per [`super::VaultState`].
#[derive(Default)]
pub struct Cache {
    objects: Mutex<HashMap<ObjectKey, (Instant, String)>>,
    tokens: Mutex<HashMap<String, (Instant, TokenRow)>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("vault::Cache")
    }
}

fn insert<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, (Instant, V)>, key: K, value: V) {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, (at, _)| at.elapsed() < TTL);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
    map.insert(key, (Instant::now(), value));
}

impl Cache {
    /// A fresh cached object body.
    pub fn object(&self, kind: &'static str, mount: &str, name: &str) -> Option<String> {
        let map = self.objects.lock().ok()?;
        map.get(&(kind, mount.to_owned(), name.to_owned()))
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, body)| body.clone())
    }

    /// Remembers an object body just read or written.
    pub fn put_object(&self, kind: &'static str, mount: &str, name: &str, body: &str) {
        if let Ok(mut map) = self.objects.lock() {
            insert(
                &mut map,
                (kind, mount.to_owned(), name.to_owned()),
                body.to_owned(),
            );
        }
    }

    /// Drops an object (deleted or rewritten on this replica).
    pub fn forget_object(&self, kind: &'static str, mount: &str, name: &str) {
        if let Ok(mut map) = self.objects.lock() {
            map.remove(&(kind, mount.to_owned(), name.to_owned()));
        }
    }

    /// A fresh cached token row, by token hash.
    pub fn token(&self, hash: &str) -> Option<TokenRow> {
        let map = self.tokens.lock().ok()?;
        map.get(hash)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, row)| row.clone())
    }

    /// Remembers a token row just read.
    pub fn put_token(&self, hash: &str, row: &TokenRow) {
        if let Ok(mut map) = self.tokens.lock() {
            insert(&mut map, hash.to_owned(), row.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_writes_replace_them() {
        let cache = Cache::default();
        assert_eq!(cache.object("policy", "", "a"), None);
        cache.put_object("policy", "", "a", "v1");
        assert_eq!(cache.object("policy", "", "a").as_deref(), Some("v1"));
        assert_eq!(
            cache.object("pki_role", "", "a"),
            None,
            "kinds are separate"
        );
        cache.put_object("policy", "", "a", "v2");
        assert_eq!(cache.object("policy", "", "a").as_deref(), Some("v2"));
        cache.forget_object("policy", "", "a");
        assert_eq!(cache.object("policy", "", "a"), None);
    }
}
