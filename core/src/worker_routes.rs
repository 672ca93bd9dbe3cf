//! Everything one worker knows about routes ([`RouteKnowledge`]: table, key
//! cache, breaker), plus what only a proxy needs: concurrent requests for one
//! unknown key share one RouteService call, and the breaker's half-open probe
//! is tracked so a probe abandoned by its client does not block lookups.
//!
//! 1. the synced table (or, until the first sync, the static `routes` as a
//!    bootstrap table) answers for every key it knows, with no call at all;
//! 2. a key it does not know (a sandbox newer than the last sync) is answered
//!    from the key cache while fresh;
//! 3. otherwise the RouteService is asked, one call per key per worker, unless
//!    its breaker is open or the worker's lookup budget ([`LookupBudget`]) is
//!    spent: then the request goes to baseline at once.

use crate::breaker::{Breaker, BreakerState};
use crate::inflight::{InFlight, Joined};
use crate::key_cache::CachePolicy;
use crate::lookup_budget::LookupBudget;
use crate::route_knowledge::{Known, RouteKnowledge};
use crate::route_table::{RouteTable, SandboxTarget};
use crate::routes_api::{BadAnswer, Delta, RoutesAnswer};

/// The answer for one request's `(key, destination)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'t> {
    /// The table knows the key: routed to this target, or baseline (`None`).
    Table(Option<&'t SandboxTarget>),
    /// The key cache knows it: routed to this target, or baseline (`None`).
    Cached(Option<&'t SandboxTarget>),
    /// Unknown: this request makes the RouteService call and waits for it.
    Call,
    /// Unknown: a call for this key is in flight; wait for it.
    Wait,
    /// Unknown, and the RouteService is not being asked (breaker open).
    FailOpen,
    /// Unknown, and not asked: this worker's lookup budget is spent.
    Shed,
}

#[derive(Debug, Clone)]
pub struct WorkerRoutes {
    knowledge: RouteKnowledge,
    inflight: InFlight,
    /// The key whose call is the breaker's half-open probe.
    probe: Option<String>,
    /// Calls allowed per second; `None`: no limit.
    budget: Option<LookupBudget>,
}

impl WorkerRoutes {
    pub fn new(bootstrap: RouteTable, policy: CachePolicy) -> Self {
        WorkerRoutes {
            knowledge: RouteKnowledge::new(bootstrap, policy),
            inflight: InFlight::default(),
            probe: None,
            budget: None,
        }
    }

    /// Limits the calls this worker makes to `budget`.
    pub fn with_lookup_budget(mut self, budget: LookupBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The answer for request `context_id`, joining or starting a call if
    /// the answer is unknown.
    pub fn answer(
        &mut self,
        key: &str,
        destination: &str,
        now_ms: u64,
        context_id: u32,
    ) -> Answer<'_> {
        // Asked first without borrowing: an answer borrows the knowledge,
        // and the call bookkeeping below needs its breaker mutably.
        if self.knowledge.is_known(key, now_ms) {
            return match self.knowledge.known(key, destination, now_ms) {
                Known::Table(target) => Answer::Table(target),
                Known::Cached(target) => Answer::Cached(target),
                Known::Unknown => Answer::FailOpen,
            };
        }
        if self.inflight.contains(key) {
            self.inflight.join(key, context_id);
            return Answer::Wait;
        }
        // Checked before the breaker, which must not count a probe that is
        // never made; the token is taken only for a call that is made.
        if let Some(budget) = &mut self.budget {
            if !budget.available(now_ms) {
                return Answer::Shed;
            }
        }
        let breaker = self.knowledge.breaker_mut();
        if !breaker.allow(now_ms) {
            return Answer::FailOpen;
        }
        let probe = matches!(breaker.state(), BreakerState::HalfOpen { .. });
        match self.inflight.join(key, context_id) {
            Joined::Owner => {
                if probe {
                    self.probe = Some(key.to_owned());
                }
                if let Some(budget) = &mut self.budget {
                    budget.take(now_ms);
                }
                Answer::Call
            }
            Joined::Waiter => Answer::Wait,
        }
    }

    /// The synced (or bootstrap) table's answer, if it knows `key`: what
    /// [`Self::answer`] says first, without the clock or any bookkeeping.
    pub fn table_answer(&self, key: &str, destination: &str) -> Option<Option<&SandboxTarget>> {
        self.knowledge.table_answer(key, destination)
    }

    /// The answer once a call settled: known, or `None` (fail open). Never
    /// starts a call.
    pub fn settled(
        &mut self,
        key: &str,
        destination: &str,
        now_ms: u64,
    ) -> Option<Option<&SandboxTarget>> {
        self.knowledge.known(key, destination, now_ms).answer()
    }

    /// Records the RouteService's answer for `key`; returns the waiting
    /// requests to resume (the owner resumes itself).
    pub fn call_finished(
        &mut self,
        key: &str,
        result: Result<RoutesAnswer, BadAnswer>,
        now_ms: u64,
    ) -> Vec<u32> {
        if self.probe.as_deref() == Some(key) {
            self.probe = None;
        }
        self.knowledge.key_answered(key, result.ok(), now_ms);
        self.inflight.complete(key)
    }

    /// A request ended while waiting or owning a call: the waiters to
    /// resume without an answer (see [`InFlight::leave`]). If its call was
    /// the breaker's probe, the next call may probe.
    pub fn request_ended(&mut self, context_id: u32) -> Vec<u32> {
        let owned = self.inflight.owned_by(context_id);
        if owned.is_some() && owned == self.probe.as_deref() {
            self.probe = None;
            self.knowledge.breaker_mut().probe_abandoned();
        }
        self.inflight.leave(context_id)
    }

    /// Adopts a synced table; cached answers it supersedes are dropped.
    pub fn adopt_table(&mut self, version: u64, table: RouteTable) {
        self.knowledge.adopt(version, table);
    }

    /// Applies validated deltas that chain from [`Self::table_version`] to
    /// `version`, in place.
    pub fn apply_deltas(&mut self, version: u64, deltas: &[Delta]) {
        self.knowledge.apply_deltas(version, deltas);
    }

    /// The synced (or bootstrap) table.
    pub fn table(&self) -> &RouteTable {
        self.knowledge.table()
    }

    /// A table sync succeeded (200 or 304) or failed: the RouteService's
    /// health, for the breaker.
    pub fn sync_finished(&mut self, ok: bool, now_ms: u64) {
        self.knowledge.sync_finished(ok, now_ms);
    }

    pub fn table_version(&self) -> Option<u64> {
        self.knowledge.version()
    }

    pub fn table_len(&self) -> usize {
        self.knowledge.table_len()
    }

    pub fn cache_len(&self) -> usize {
        self.knowledge.cache_len()
    }

    pub fn breaker(&self) -> &Breaker {
        self.knowledge.breaker()
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
        max_entries: 100,
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

    fn answer(version: u64, key: &str) -> Result<RoutesAnswer, BadAnswer> {
        Ok(RoutesAnswer {
            version,
            table: table(key),
        })
    }

    fn sandbox(a: Answer<'_>) -> Option<String> {
        match a {
            Answer::Table(t) | Answer::Cached(t) => t.map(|t| t.sandbox.clone()),
            other => panic!("not known: {other:?}"),
        }
    }

    #[test]
    fn the_table_answers_without_a_call() {
        let mut w = WorkerRoutes::new(table("boot"), POLICY);
        assert_eq!(
            sandbox(w.answer("boot", SVC, 0, 1)).as_deref(),
            Some("boot")
        );
        assert_eq!(sandbox(w.answer("boot", "other.ns", 0, 1)), None);
        w.adopt_table(3, table("synced"));
        assert_eq!(w.table_version(), Some(3));
        assert_eq!(
            w.answer("boot", SVC, 0, 1),
            Answer::Call,
            "bootstrap replaced"
        );
    }

    #[test]
    fn a_miss_makes_one_call_shared_by_waiters_then_caches() {
        let mut w = WorkerRoutes::new(RouteTable::default(), POLICY);
        assert_eq!(w.answer("new", SVC, 0, 1), Answer::Call);
        assert_eq!(w.answer("new", SVC, 0, 2), Answer::Wait);
        assert_eq!(w.answer("new", SVC, 0, 3), Answer::Wait);
        assert_eq!(w.call_finished("new", answer(5, "new"), 10), vec![2, 3]);
        assert_eq!(
            w.settled("new", SVC, 10)
                .flatten()
                .map(|t| t.sandbox.as_str()),
            Some("new")
        );
        assert_eq!(
            sandbox(w.answer("new", SVC, 500, 4)).as_deref(),
            Some("new")
        );
        assert_eq!(w.answer("new", SVC, 1010, 5), Answer::Call, "expired");
    }

    #[test]
    fn unknown_keys_are_cached_negatively() {
        let mut w = WorkerRoutes::new(RouteTable::default(), POLICY);
        assert_eq!(w.answer("nope", SVC, 0, 1), Answer::Call);
        let empty = Ok(RoutesAnswer {
            version: 5,
            table: RouteTable::default(),
        });
        w.call_finished("nope", empty, 0);
        assert_eq!(w.answer("nope", SVC, 99, 2), Answer::Cached(None));
        assert_eq!(w.answer("nope", SVC, 100, 3), Answer::Call);
    }

    #[test]
    fn failures_are_not_cached_and_open_the_breaker() {
        let mut w = WorkerRoutes::new(RouteTable::default(), POLICY);
        for id in 0..FAILURE_THRESHOLD {
            assert_eq!(w.answer("k", SVC, 0, id), Answer::Call);
            w.call_finished("k", Err(BadAnswer::NoStatus), 0);
            assert_eq!(w.settled("k", SVC, 0), None);
        }
        assert_eq!(w.answer("k", SVC, 1, 99), Answer::FailOpen);
        // Known keys still route while the RouteService is down.
        w.adopt_table(1, table("k"));
        assert_eq!(sandbox(w.answer("k", SVC, 1, 100)).as_deref(), Some("k"));
        // A successful sync closes the breaker.
        w.sync_finished(true, 2);
        assert_eq!(w.answer("other", SVC, 2, 101), Answer::Call);
    }

    #[test]
    fn a_probe_whose_request_ended_does_not_stop_lookups_for_good() {
        // Found end to end: a client that gave up during the half-open probe
        // left the breaker half-open with a probe "in flight" forever, and
        // every later lookup on that worker failed open.
        let mut w = WorkerRoutes::new(RouteTable::default(), POLICY);
        for id in 0..FAILURE_THRESHOLD {
            assert_eq!(w.answer(&format!("k{id}"), SVC, 0, id), Answer::Call);
            w.call_finished(&format!("k{id}"), Err(BadAnswer::NoStatus), 0);
        }
        let after_backoff = crate::breaker::INITIAL_BACKOFF_MS;
        assert_eq!(w.answer("probe", SVC, after_backoff, 10), Answer::Call);
        assert_eq!(w.answer("other", SVC, after_backoff, 11), Answer::FailOpen);
        assert!(w.request_ended(10).is_empty());
        assert_eq!(w.answer("next", SVC, after_backoff, 12), Answer::Call);
        w.call_finished(
            "next",
            Ok(RoutesAnswer {
                version: 1,
                table: RouteTable::default(),
            }),
            after_backoff,
        );
        assert_eq!(
            w.answer("again", SVC, after_backoff, 13),
            Answer::Call,
            "closed"
        );
        // A waiter leaving, or an owner that was not the probe, changes nothing.
        let mut w = WorkerRoutes::new(RouteTable::default(), POLICY);
        assert_eq!(w.answer("k", SVC, 0, 1), Answer::Call);
        assert_eq!(w.answer("k", SVC, 0, 2), Answer::Wait);
        assert!(w.request_ended(2).is_empty());
        assert_eq!(w.request_ended(1), Vec::<u32>::new());
        assert_eq!(w.breaker().state(), BreakerState::Closed);
    }

    #[test]
    fn a_newer_table_drops_older_cached_answers() {
        let mut w = WorkerRoutes::new(RouteTable::default(), POLICY);
        w.answer("gone", SVC, 0, 1);
        w.call_finished("gone", answer(4, "gone"), 0);
        w.adopt_table(5, RouteTable::default());
        assert_eq!(w.answer("gone", SVC, 1, 2), Answer::Call);
    }

    #[test]
    fn fresh_keys_beyond_the_lookup_budget_are_shed_without_a_call() {
        // Issue 10: a client sending a fresh key per request made one call
        // per request.
        let mut w = WorkerRoutes::new(RouteTable::default(), POLICY)
            .with_lookup_budget(LookupBudget::new(10, 3));
        let answers: Vec<String> = (0..5)
            .map(|n| format!("{:?}", w.answer(&format!("fresh-{n}"), SVC, 0, n)))
            .collect();
        assert_eq!(answers, ["Call", "Call", "Call", "Shed", "Shed"]);
        // Waiting for a call in flight, or a known key, costs no token.
        assert_eq!(w.answer("fresh-0", SVC, 0, 10), Answer::Wait);
        w.call_finished("fresh-1", answer(1, "fresh-1"), 0);
        assert!(matches!(w.answer("fresh-1", SVC, 0, 11), Answer::Cached(_)));
        // Tokens come back at the rate (10/s: one per 100 ms).
        assert_eq!(w.answer("fresh-9", SVC, 99, 12), Answer::Shed);
        assert_eq!(w.answer("fresh-9", SVC, 100, 13), Answer::Call);
        assert_eq!(w.answer("fresh-8", SVC, 100, 14), Answer::Shed);
        // A shed request is not a call: the breaker sees nothing.
        assert_eq!(w.breaker().state(), BreakerState::Closed);
    }

    #[test]
    fn an_open_breaker_does_not_spend_the_lookup_budget() {
        let mut w = WorkerRoutes::new(RouteTable::default(), POLICY)
            .with_lookup_budget(LookupBudget::new(1, FAILURE_THRESHOLD.into()));
        for id in 0..FAILURE_THRESHOLD {
            assert_eq!(w.answer("k", SVC, 0, id), Answer::Call);
            w.call_finished("k", Err(BadAnswer::NoStatus), 0);
        }
        // Budget spent and breaker open: the breaker's answer is not
        // taken from the budget, and after the backoff one token (1/s) is
        // there for the probe.
        assert_eq!(w.answer("k", SVC, 1, 99), Answer::Shed);
        let after_backoff = crate::breaker::INITIAL_BACKOFF_MS;
        assert_eq!(w.answer("k", SVC, after_backoff, 100), Answer::Call);
        assert_eq!(w.answer("other", SVC, after_backoff, 101), Answer::Shed);
    }

    #[test]
    fn an_owner_ending_releases_waiters() {
        let mut w = WorkerRoutes::new(RouteTable::default(), POLICY);
        w.answer("k", SVC, 0, 1);
        w.answer("k", SVC, 0, 2);
        assert_eq!(w.request_ended(1), vec![2]);
        assert_eq!(w.answer("k", SVC, 0, 3), Answer::Call);
    }
}
