//! A small in-process cache whose entries are trusted for a fixed time, for rows every request
//! reads and that rarely change (Vault tokens, policies and roles; ACME accounts). Writes on this
//! replica update or drop entries at once; changes made by other replicas are seen after the TTL.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries trusted for `ttl`; at most `max` kept (expired ones are dropped first, then all).
pub struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> std::fmt::Debug for TtlCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache").field("ttl", &self.ttl).finish()
    }
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    /// An empty cache.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh entry.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.map.lock().ok()?;
        map.get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    /// Stores a value just read or written.
    pub fn put(&self, key: K, value: V) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.max {
                let ttl = self.ttl;
                map.retain(|_, (at, _)| at.elapsed() < ttl);
                if map.len() >= self.max {
                    map.clear();
                }
            }
            map.insert(key, (Instant::now(), value));
        }
    }

    /// Drops an entry (changed or deleted on this replica).
    pub fn forget<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Ok(mut map) = self.map.lock() {
            map.remove(key);
        }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_entries_are_served_replaced_and_forgotten() {
        // An hour: nothing here can outlive it, however loaded the machine.
        let cache = TtlCache::new(Duration::from_secs(3600), 2);
        assert_eq!(cache.get(&"a"), None);
        cache.put("a", 1);
        assert_eq!(cache.get(&"a"), Some(1));
        cache.put("a", 2);
        assert_eq!(cache.get(&"a"), Some(2));
        cache.forget(&"a");
        assert_eq!(cache.get(&"a"), None);
        cache.put("b", 3);
        cache.clear();
        assert_eq!(cache.get(&"b"), None);
    }

    #[test]
    fn expired_entries_are_not_served() {
        // A zero TTL: every entry is already expired when read (`elapsed() < 0` never holds), so
        // no sleep and no timing window.
        let cache = TtlCache::new(Duration::ZERO, 2);
        cache.put("b", 3);
        assert_eq!(cache.get(&"b"), None, "expired");
    }

    #[test]
    fn a_full_map_makes_room() {
        let fresh = TtlCache::new(Duration::from_secs(3600), 2);
        fresh.put("c", 4);
        fresh.put("d", 5);
        fresh.put("e", 6);
        assert_eq!(fresh.get(&"e"), Some(6), "the newest entry is kept");
        assert!(fresh.map.lock().map(|m| m.len()).unwrap_or(usize::MAX) <= 2);
        // Expired entries go first.
        let expired = TtlCache::new(Duration::ZERO, 2);
        expired.put("c", 4);
        expired.put("d", 5);
        expired.put("e", 6);
        assert_eq!(expired.map.lock().map(|m| m.len()).unwrap_or(usize::MAX), 1);
    }
}
