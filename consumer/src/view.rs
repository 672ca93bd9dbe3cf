//! What one client knows about routes, and when it must ask: the same
//! policy as the filter's workers (`sandbox_router_core::worker_routes`),
//! built from the same core pieces, for threads instead of paused requests:
//!
//! 1. the synced table answers for every key it knows, with no call;
//! 2. a key it does not know (a sandbox newer than the last sync) is
//!    answered from the key cache while fresh (positive `cache.ttl_ms`,
//!    negative `cache.negative_ttl_ms`);
//! 3. otherwise the RouteService is asked, unless its breaker is open: then
//!    the answer is the table's (no sandbox: baseline), counted as fail-open.
//!
//! A sync that fails keeps the last good table.

use sandbox_router_core::breaker::Breaker;
use sandbox_router_core::key_cache::{CacheLookup, CachePolicy, KeyCache};
use sandbox_router_core::route_table::{RouteTable, SandboxTarget};
use sandbox_router_core::routes_api::RoutesAnswer;

/// Where an answer for a (key, workload) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known<'a> {
    /// The synced table knows the key.
    Table(Option<&'a SandboxTarget>),
    /// A fresh single-key answer knows it.
    Cached(Option<&'a SandboxTarget>),
    /// Unknown: ask the RouteService.
    Ask,
    /// Unknown, and the RouteService is not being asked (breaker open).
    Down,
}

#[derive(Debug, Clone)]
pub struct View {
    table: RouteTable,
    /// `None` until the first sync.
    version: Option<u64>,
    cache: KeyCache,
    breaker: Breaker,
}

impl View {
    pub fn new(policy: CachePolicy) -> Self {
        View {
            table: RouteTable::default(),
            version: None,
            cache: KeyCache::new(policy),
            breaker: Breaker::default(),
        }
    }

    /// What is known about `key` for `workload` at `now_ms`. `Ask` and
    /// `Down` consult the breaker (a half-open breaker lets one `Ask` out).
    pub fn known(&mut self, key: &str, workload: &str, now_ms: u64) -> Known<'_> {
        if self.table.knows_key(key) {
            return Known::Table(self.table.lookup(key, workload));
        }
        if let CacheLookup::Hit(target) = self.cache.lookup(key, workload, now_ms) {
            return Known::Cached(target);
        }
        if self.breaker.allow(now_ms) {
            Known::Ask
        } else {
            Known::Down
        }
    }

    /// Records a single-key answer, or a failed call.
    pub fn key_answered(&mut self, key: &str, answer: Option<RoutesAnswer>, now_ms: u64) {
        match answer {
            Some(answer) => {
                self.breaker.record_success();
                self.cache.insert(key, answer.version, answer.table, now_ms);
            }
            None => self.breaker.record_failure(now_ms),
        }
    }

    /// Adopts a synced table; cached answers it supersedes are dropped.
    pub fn adopt(&mut self, version: u64, table: RouteTable) {
        self.table = table;
        self.version = Some(version);
        self.cache.superseded_by(version);
    }

    /// A sync succeeded (200 or 304) or failed: the RouteService's health.
    pub fn sync_finished(&mut self, ok: bool, now_ms: u64) {
        if ok {
            self.breaker.record_success();
        } else {
            self.breaker.record_failure(now_ms);
        }
    }

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
    use sandbox_router_core::breaker::FAILURE_THRESHOLD;
    use sandbox_router_core::route_table::Route;

    const W: &str = "orders.shop.svc.cluster.local";
    const POLICY: CachePolicy = CachePolicy {
        ttl_ms: 1000,
        negative_ttl_ms: 100,
        max_entries: 10,
    };

    fn table(key: &str) -> RouteTable {
        RouteTable::new(&[Route {
            routing_key: key.into(),
            sandbox: key.into(),
            baseline: W.into(),
            target: format!("orders-{key}.shop.svc.cluster.local"),
        }])
        .unwrap()
    }

    fn answer(version: u64, table: RouteTable) -> Option<RoutesAnswer> {
        Some(RoutesAnswer { version, table })
    }

    fn sandbox(known: Known<'_>) -> Option<String> {
        match known {
            Known::Table(t) | Known::Cached(t) => t.map(|t| t.sandbox.clone()),
            other => panic!("not known: {other:?}"),
        }
    }

    #[test]
    fn table_then_cache_then_ask() {
        let mut view = View::new(POLICY);
        view.adopt(3, table("pr-1"));
        assert!(matches!(view.known("pr-1", W, 0), Known::Table(Some(_))));
        assert_eq!(view.known("pr-2", W, 0), Known::Ask);
        view.key_answered("pr-2", answer(4, table("pr-2")), 0);
        assert_eq!(sandbox(view.known("pr-2", W, 10)).as_deref(), Some("pr-2"));
        assert!(matches!(view.known("pr-2", W, 10), Known::Cached(_)));
        view.key_answered("nope", answer(4, RouteTable::default()), 0);
        assert_eq!(view.known("nope", W, 99), Known::Cached(None));
        assert_eq!(view.known("nope", W, 100), Known::Ask);
    }

    #[test]
    fn a_newer_table_supersedes_cached_answers() {
        let mut view = View::new(POLICY);
        view.key_answered("pr-2", answer(4, table("pr-2")), 0);
        view.adopt(4, RouteTable::default());
        assert_eq!(view.known("pr-2", W, 1), Known::Ask);
        assert_eq!(view.version(), Some(4));
    }

    #[test]
    fn failures_open_the_breaker_and_a_sync_closes_it() {
        let mut view = View::new(POLICY);
        for _ in 0..FAILURE_THRESHOLD {
            assert_eq!(view.known("k", W, 0), Known::Ask);
            view.key_answered("k", None, 0);
        }
        assert_eq!(view.known("k", W, 1), Known::Down);
        view.sync_finished(true, 2);
        assert_eq!(view.known("k", W, 2), Known::Ask);
    }
}
