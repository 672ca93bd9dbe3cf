//! Per-worker cache of single-key answers from the RouteService, for routing
//! keys the synced table does not know yet (a sandbox created since the last
//! sync).
//!
//! Positive answers live `cacheTtlMs`, "no such key" answers
//! `negativeCacheTtlMs`; at most `maxEntries` keys, expired ones evicted
//! first, then the least recently used. Time is milliseconds from any fixed
//! origin, passed in by the caller (the host's clock).

use crate::random_state::HashMap;
use crate::route_table::{RouteTable, SandboxTarget};

/// Cache policy, from the `routeService` configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub ttl_ms: u64,
    pub negative_ttl_ms: u64,
    pub max_entries: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Empty for "no sandbox has this key".
    routes: RouteTable,
    expires_at_ms: u64,
    last_used: u64,
}

/// What the cache says about a key for a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLookup<'a> {
    /// A fresh answer: routed to this target, or baseline (`None`).
    Hit(Option<&'a SandboxTarget>),
    /// Nothing fresh: ask the RouteService.
    Miss,
}

#[derive(Debug, Clone)]
pub struct KeyCache {
    policy: CachePolicy,
    entries: HashMap<String, Entry>,
    /// Monotonic use counter for LRU order (no clock reads needed).
    uses: u64,
}

impl KeyCache {
    pub fn new(policy: CachePolicy) -> Self {
        KeyCache {
            policy,
            entries: HashMap::default(),
            uses: 0,
        }
    }

    pub fn lookup(&mut self, key: &str, destination: &str, now_ms: u64) -> CacheLookup<'_> {
        self.uses = self.uses.wrapping_add(1);
        let uses = self.uses;
        match self.entries.get_mut(key) {
            Some(entry) if entry.expires_at_ms > now_ms => {
                entry.last_used = uses;
                CacheLookup::Hit(entry.routes.lookup(key, destination))
            }
            _ => CacheLookup::Miss,
        }
    }

    /// Whether a fresh answer for `key` is cached (no use recorded).
    pub fn is_fresh(&self, key: &str, now_ms: u64) -> bool {
        self.entries
            .get(key)
            .is_some_and(|e| e.expires_at_ms > now_ms)
    }

    /// The last answer cached for `key`, fresh or expired (no use
    /// recorded): what its holder last knew, not what it may decide from.
    pub fn last_answer(&self, key: &str, destination: &str) -> Option<Option<&SandboxTarget>> {
        self.entries
            .get(key)
            .map(|entry| entry.routes.lookup(key, destination))
    }

    /// The keys with an answer cached, fresh or expired.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Stores the RouteService's answer for `key` (an empty table caches
    /// "unknown key").
    pub fn insert(&mut self, key: &str, routes: RouteTable, now_ms: u64) {
        if self.policy.max_entries == 0 {
            return;
        }
        let ttl = if routes.is_empty() {
            self.policy.negative_ttl_ms
        } else {
            self.policy.ttl_ms
        };
        if !self.entries.contains_key(key) && self.entries.len() >= self.policy.max_entries {
            self.evict_one(now_ms);
        }
        self.uses = self.uses.wrapping_add(1);
        let entry = Entry {
            routes,
            expires_at_ms: now_ms.saturating_add(ttl),
            last_used: self.uses,
        };
        self.entries.insert(key.to_owned(), entry);
    }

    /// A newly synced table speaks for every key it holds, and a key it
    /// does not hold may have been deleted since a lookup answered it: drop
    /// every cached route. Versions are not compared: the Kubernetes store's
    /// are content hashes, with no order, so "the answer is newer than the
    /// table" cannot be told (a kept answer could route to a deleted fork
    /// until its TTL); a key the table does not know is looked up again.
    /// "No such key" answers stay until their TTL: they cannot route, and a
    /// table that knows the key is asked first anyway.
    pub fn superseded(&mut self) {
        self.entries.retain(|_, entry| entry.routes.is_empty());
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn evict_one(&mut self, now_ms: u64) {
        let expired = self
            .entries
            .iter()
            .find(|(_, e)| e.expires_at_ms <= now_ms)
            .map(|(k, _)| k.clone());
        let victim = expired.or_else(|| {
            self.entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
        });
        if let Some(victim) = victim {
            self.entries.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route_table::Route;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const POLICY: CachePolicy = CachePolicy {
        ttl_ms: 1000,
        negative_ttl_ms: 100,
        max_entries: 2,
    };

    fn table(key: &str) -> RouteTable {
        RouteTable::new(&[Route {
            routing_key: key.into(),
            sandbox: key.into(),
            baseline: "svc.ns".into(),
            target: format!("svc-{key}.ns"),
        }])
        .unwrap()
    }

    fn routed(lookup: CacheLookup<'_>) -> Option<String> {
        match lookup {
            CacheLookup::Hit(target) => target.map(|t| t.sandbox.clone()),
            CacheLookup::Miss => panic!("miss"),
        }
    }

    #[test]
    fn positive_answers_live_ttl() {
        let mut cache = KeyCache::new(POLICY);
        assert_eq!(cache.lookup("a", "svc.ns", 0), CacheLookup::Miss);
        cache.insert("a", table("a"), 0);
        assert_eq!(
            routed(cache.lookup("a", "svc.ns", 999)).as_deref(),
            Some("a")
        );
        assert_eq!(routed(cache.lookup("a", "other.ns", 999)), None);
        assert_eq!(cache.lookup("a", "svc.ns", 1000), CacheLookup::Miss);
    }

    #[test]
    fn negative_answers_live_negative_ttl() {
        let mut cache = KeyCache::new(POLICY);
        cache.insert("gone", RouteTable::default(), 50);
        assert_eq!(cache.lookup("gone", "svc.ns", 149), CacheLookup::Hit(None));
        assert_eq!(cache.lookup("gone", "svc.ns", 150), CacheLookup::Miss);
    }

    #[test]
    fn bounded_expired_first_then_least_recently_used() {
        let mut cache = KeyCache::new(POLICY);
        cache.insert("a", table("a"), 0);
        cache.insert("b", table("b"), 0);
        cache.lookup("a", "svc.ns", 1);
        cache.insert("c", table("c"), 2);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.lookup("b", "svc.ns", 3), CacheLookup::Miss);
        assert!(matches!(
            cache.lookup("a", "svc.ns", 3),
            CacheLookup::Hit(_)
        ));

        let mut cache = KeyCache::new(POLICY);
        cache.insert("neg", RouteTable::default(), 0);
        cache.insert("a", table("a"), 0);
        cache.lookup("neg", "svc.ns", 1);
        cache.insert("c", table("c"), 500);
        assert_eq!(cache.lookup("neg", "svc.ns", 501), CacheLookup::Miss);
        assert!(matches!(
            cache.lookup("a", "svc.ns", 501),
            CacheLookup::Hit(Some(_))
        ));
    }

    #[test]
    fn a_synced_table_supersedes_every_cached_route() {
        let mut cache = KeyCache::new(CachePolicy {
            max_entries: 10,
            ..POLICY
        });
        cache.insert("old", table("old"), 0);
        cache.insert("new", table("new"), 0);
        cache.insert("unknown", RouteTable::default(), 0);
        cache.superseded();
        // Whatever the versions' order (hashes have none), both are dropped.
        assert_eq!(cache.lookup("old", "svc.ns", 1), CacheLookup::Miss);
        assert_eq!(cache.lookup("new", "svc.ns", 1), CacheLookup::Miss);
        assert_eq!(cache.lookup("unknown", "svc.ns", 1), CacheLookup::Hit(None));
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut cache = KeyCache::new(CachePolicy {
            max_entries: 0,
            ..POLICY
        });
        cache.insert("a", table("a"), 0);
        assert!(cache.is_empty());
    }
}
