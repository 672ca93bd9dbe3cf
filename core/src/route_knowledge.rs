//! What a RouteService client knows about routes: the synced table (or a
//! bootstrap table until the first sync), single-key answers for keys newer
//! than the table, and the RouteService's health. Shared by the filter's
//! workers ([`crate::worker_routes`]) and the message-consumer client, so
//! both decide with one policy:
//!
//! 1. the table answers for every key it knows, with no call;
//! 2. a key it does not know (a sandbox newer than the last sync) is answered
//!    from the key cache while fresh;
//! 3. otherwise the answer is unknown: ask the RouteService, if the breaker
//!    lets the caller.
//!
//! A sync that fails keeps the last good table.

use crate::breaker::Breaker;
use crate::key_cache::{CacheLookup, CachePolicy, KeyCache};
use crate::route_table::{RouteTable, SandboxTarget};
use crate::routes_api::{Delta, RoutesAnswer};

/// What is known about a `(key, destination)` without asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known<'t> {
    /// The table knows the key: routed to this target, or baseline (`None`).
    Table(Option<&'t SandboxTarget>),
    /// The key cache knows it: routed to this target, or baseline (`None`).
    Cached(Option<&'t SandboxTarget>),
    /// Nothing fresh: only the RouteService can say.
    Unknown,
}

impl<'t> Known<'t> {
    /// The answer, if there is one.
    pub fn answer(self) -> Option<Option<&'t SandboxTarget>> {
        match self {
            Known::Table(target) | Known::Cached(target) => Some(target),
            Known::Unknown => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteKnowledge {
    table: RouteTable,
    /// `None` while the table is the bootstrap one (no sync yet).
    version: Option<u64>,
    cache: KeyCache,
    breaker: Breaker,
}

impl RouteKnowledge {
    pub fn new(bootstrap: RouteTable, policy: CachePolicy) -> Self {
        RouteKnowledge {
            table: bootstrap,
            version: None,
            cache: KeyCache::new(policy),
            breaker: Breaker::default(),
        }
    }

    pub fn known(&mut self, key: &str, destination: &str, now_ms: u64) -> Known<'_> {
        if self.table.knows_key(key) {
            return Known::Table(self.table.lookup(key, destination));
        }
        match self.cache.lookup(key, destination, now_ms) {
            CacheLookup::Hit(target) => Known::Cached(target),
            CacheLookup::Miss => Known::Unknown,
        }
    }

    /// The table's answer, if the table knows `key` (what [`Self::known`]
    /// answers first; no clock needed).
    pub fn table_answer(&self, key: &str, destination: &str) -> Option<Option<&SandboxTarget>> {
        self.table
            .knows_key(key)
            .then(|| self.table.lookup(key, destination))
    }

    /// Whether [`Self::known`] would answer (without recording a cache use).
    pub fn is_known(&self, key: &str, now_ms: u64) -> bool {
        self.table.knows_key(key) || self.cache.is_fresh(key, now_ms)
    }

    /// What this holder last knew of `key` for `destination`, without
    /// asking or recording a use: the table's answer, else the last cached
    /// answer (even expired), else "baseline" (`Some(None)`), since a
    /// synced table speaks for every key at its version. `None` before the
    /// first sync, for a key neither knows: nothing was known.
    pub fn last_known(&self, key: &str, destination: &str) -> Option<Option<&SandboxTarget>> {
        if self.table.knows_key(key) {
            return Some(self.table.lookup(key, destination));
        }
        match self.cache.last_answer(key, destination) {
            Some(answer) => Some(answer),
            None => self.version.map(|_| None),
        }
    }

    /// Every key the table or the cache has an answer for (a key may come
    /// twice).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.table.keys().chain(self.cache.keys())
    }

    /// Records the RouteService's answer for `key` (`None`: the call failed).
    pub fn key_answered(&mut self, key: &str, answer: Option<RoutesAnswer>, now_ms: u64) {
        match answer {
            Some(answer) => {
                self.breaker.record_success();
                self.cache.insert(key, answer.table, now_ms);
            }
            None => self.breaker.record_failure(now_ms),
        }
    }

    /// Adopts a synced table; cached answers it supersedes are dropped.
    pub fn adopt(&mut self, version: u64, table: RouteTable) {
        self.table = table;
        self.version = Some(version);
        self.cache.superseded();
    }

    /// Applies validated deltas, in order, to the synced table in place (no
    /// copy of the table), reaching `version`; cached answers it
    /// supersedes are dropped. The deltas must chain from [`Self::version`]
    /// (the caller checked it); they cannot fail half-way.
    pub fn apply_deltas(&mut self, version: u64, deltas: &[Delta]) {
        for delta in deltas {
            delta.apply_to(&mut self.table);
        }
        self.version = Some(version);
        self.cache.superseded();
    }

    /// The table decisions are made from.
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// A sync succeeded (200 or 304) or failed: the RouteService's health.
    pub fn sync_finished(&mut self, ok: bool, now_ms: u64) {
        if ok {
            self.breaker.record_success();
        } else {
            self.breaker.record_failure(now_ms);
        }
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub fn breaker_mut(&mut self) -> &mut Breaker {
        &mut self.breaker
    }

    /// The synced table's version; `None` before the first sync.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::FAILURE_THRESHOLD;
    use crate::route_table::Route;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SVC: &str = "svc.ns.svc.cluster.local";
    const POLICY: CachePolicy = CachePolicy {
        ttl_ms: 1000,
        negative_ttl_ms: 100,
        max_entries: 10,
    };

    fn table(key: &str) -> RouteTable {
        RouteTable::new(&[Route {
            routing_key: key.into(),
            sandbox: key.into(),
            baseline: SVC.into(),
            target: format!("svc-{key}.ns.svc.cluster.local"),
        }])
        .unwrap()
    }

    fn answer(version: u64, key: &str) -> Option<RoutesAnswer> {
        Some(RoutesAnswer {
            version,
            table: table(key),
        })
    }

    fn sandbox(known: Known<'_>) -> Option<String> {
        known.answer().expect("known").map(|t| t.sandbox.clone())
    }

    #[test]
    fn table_then_cache_then_unknown() {
        let mut k = RouteKnowledge::new(table("boot"), POLICY);
        assert_eq!(k.version(), None);
        assert!(matches!(k.known("boot", SVC, 0), Known::Table(Some(_))));
        assert_eq!(k.known("boot", "other.ns", 0), Known::Table(None));
        assert_eq!(k.known("new", SVC, 0), Known::Unknown);
        assert!(!k.is_known("new", 0));
        k.key_answered("new", answer(2, "new"), 0);
        assert!(k.is_known("new", 999) && k.is_known("boot", 999));
        assert_eq!(sandbox(k.known("new", SVC, 999)).as_deref(), Some("new"));
        assert_eq!(k.known("new", SVC, 1000), Known::Unknown, "expired");
    }

    #[test]
    fn a_newer_table_replaces_the_bootstrap_and_supersedes_cached_answers() {
        let mut k = RouteKnowledge::new(table("boot"), POLICY);
        k.key_answered("old", answer(4, "old"), 0);
        k.adopt(5, table("synced"));
        assert_eq!(k.version(), Some(5));
        assert_eq!(k.known("boot", SVC, 1), Known::Unknown);
        assert_eq!(k.known("old", SVC, 1), Known::Unknown);
        assert_eq!(k.table_len(), 1);
    }

    #[test]
    fn failures_open_the_breaker_and_a_sync_closes_it() {
        let mut k = RouteKnowledge::new(RouteTable::default(), POLICY);
        for _ in 0..FAILURE_THRESHOLD {
            k.key_answered("k", None, 0);
        }
        assert!(!k.breaker_mut().allow(1));
        assert_eq!(k.cache_len(), 0, "failures are not cached");
        k.sync_finished(true, 2);
        assert!(k.breaker_mut().allow(2));
    }
}
