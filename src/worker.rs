//! State shared by every request on one worker VM: the configuration, the
//! metrics, what the worker knows about routes, and the requests parked
//! while the RouteService is asked. Also how a decision is applied to the
//! request being handled, now or after resuming it, and how a marked
//! request is checked, once the router has run, to have reached its fork.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use sandbox_router_core::config::FilterConfig;
use sandbox_router_core::decision::{Check, Decision, Marking, Query};
use sandbox_router_core::key_cache::CachePolicy;
use sandbox_router_core::lookup_budget::LookupBudget;
use sandbox_router_core::recovery::Store;
use sandbox_router_core::route_check::{self, Miss, Unreachable};
use sandbox_router_core::route_table::SandboxTarget;
use sandbox_router_core::worker_routes::WorkerRoutes;

use crate::context_map::ContextMap;
use crate::host::{self, ClusterAttribute};
use crate::metrics::{Counter, Metrics};

pub struct Worker {
    pub config: Rc<FilterConfig>,
    pub metrics: Rc<Metrics>,
    pub routes: RefCell<WorkerRoutes>,
    /// Requests paused for a RouteService answer, by context id.
    parked: RefCell<ContextMap<u32, Query<'static>>>,
    /// Requests marked for a fork and not yet checked, by context id.
    marked: RefCell<ContextMap<u32, Marked>>,
    /// How the host names the chosen cluster; asked on the first keyed request.
    cluster_attribute: Cell<Option<ClusterAttribute>>,
    /// The trace id -> key table, when `recovery` is configured.
    pub recovery: Option<Store>,
    /// Requests decided with a recovered key (their outcome reads
    /// `key_recovered` when routed or baseline).
    /// (A few at a time: requests in flight on this worker with a recovered key.)
    recovered: RefCell<Vec<u32>>,
}

/// Filter state names (Envoy prefixes them with `wasm.`).
pub const OUTCOME_STATE: &str = "sandbox_router.outcome";
pub const SANDBOX_STATE: &str = "sandbox_router.sandbox";

/// The outcome of a request decided with a recovered key that went to its
/// sandbox or, with no sandbox for that destination, to baseline (a miss,
/// a fail-open keeps its own name).
pub const KEY_RECOVERED: &str = "key_recovered";
/// The outcome of a request without a key whose trace id came in with one
/// (`recovery.enabled: false`); counted `no_key` and `key_dropped`.
pub const KEY_DROPPED: &str = "key_dropped";

/// A marked request waiting for its check.
struct Marked {
    check: Check,
    sandbox: String,
    target: String,
}

impl Worker {
    pub fn new(config: Rc<FilterConfig>, metrics: Rc<Metrics>, plugin_name: &str) -> Self {
        let policy = config.route_service.as_ref().map_or(
            CachePolicy {
                ttl_ms: 0,
                negative_ttl_ms: 0,
                max_entries: 0,
            },
            |rs| CachePolicy {
                ttl_ms: rs.cache_ttl_ms,
                negative_ttl_ms: rs.negative_cache_ttl_ms,
                max_entries: usize::try_from(rs.max_entries).unwrap_or(usize::MAX),
            },
        );
        let mut routes = WorkerRoutes::new(config.static_routes.clone(), policy);
        if let Some(rs) = &config.route_service {
            let budget = LookupBudget::new(rs.max_lookups_per_second, rs.lookup_burst);
            routes = routes.with_lookup_budget(budget);
        }
        let recovery = config
            .recovery
            .as_ref()
            .map(|r| Store::new(plugin_name, r.max_entries, r.ttl_ms));
        Worker {
            recovery,
            recovered: RefCell::new(Vec::new()),
            config,
            metrics,
            routes: RefCell::new(routes),
            parked: RefCell::new(ContextMap::default()),
            marked: RefCell::new(ContextMap::default()),
            cluster_attribute: Cell::new(None),
        }
    }

    /// How the host names the cluster of the chosen route.
    pub fn cluster_attribute(&self) -> ClusterAttribute {
        match self.cluster_attribute.get() {
            Some(known) => known,
            None => {
                let detected = ClusterAttribute::detect();
                self.cluster_attribute.set(Some(detected));
                detected
            }
        }
    }

    /// Applies a decision to the current request (`context_id`) and counts
    /// it. A checkable marking is counted by [`Worker::check`], once the
    /// router has chosen; a fork found unreachable a moment ago is not
    /// marked.
    pub fn apply(&self, context_id: u32, decision: Decision<'_>) {
        let (counter, sandbox) = match decision {
            Decision::NoKey => (Counter::NoKey, None),
            Decision::InvalidKey(_) => (Counter::InvalidKey, None),
            Decision::Baseline => (Counter::Baseline, None),
            Decision::AlreadyRouted => (Counter::AlreadyRouted, None),
            Decision::FailOpen => (Counter::FailOpen, None),
            Decision::Routed(Marking {
                target,
                authority,
                check,
            }) => match check {
                // The check moves into the worker's record of the marking:
                // a routed request copies nothing it already owns.
                Some(check) => return self.mark_checked(context_id, target, authority, check),
                None => {
                    self.mark(target, authority.as_deref());
                    (Counter::Routed, Some(target.sandbox.as_str()))
                }
            },
        };
        self.record(context_id, counter, sandbox);
    }

    /// Request `context_id` is decided with a key recovered from its trace.
    pub fn mark_recovered(&self, context_id: u32) {
        let mut recovered = self.recovered.borrow_mut();
        if !recovered.contains(&context_id) {
            recovered.push(context_id);
        }
    }

    /// Counts the current request's outcome and exposes it where Envoy's
    /// access logs and the opt-in response header read it (filter state
    /// `wasm.sandbox_router.outcome` and, for a sandbox's request,
    /// `wasm.sandbox_router.sandbox`). A marked request is recorded again
    /// once checked: the later outcome replaces the first.
    pub fn record(&self, context_id: u32, counter: Counter, sandbox: Option<&str>) {
        self.metrics.increment(counter);
        let recovered = matches!(counter, Counter::Routed | Counter::Baseline)
            && self.recovered.borrow().contains(&context_id);
        if recovered {
            host::set_filter_state(OUTCOME_STATE, KEY_RECOVERED);
        } else if let Some(outcome) = counter.outcome() {
            host::set_filter_state(OUTCOME_STATE, outcome);
        }
        if let Some(sandbox) = sandbox {
            host::set_filter_state(SANDBOX_STATE, sandbox);
        }
    }

    fn mark_checked(
        &self,
        context_id: u32,
        target: &SandboxTarget,
        authority: Option<String>,
        check: Check,
    ) {
        let sandbox = &target.sandbox;
        let key = route_check::unreachable_key(&check.destination, sandbox, &target.target);
        let (stored, _) = host::shared_data(&key);
        if let Some(known) = stored.and_then(|b| Unreachable::fresh(&b, host::now_ms())) {
            // Found unreachable a moment ago: leave the request untouched.
            self.record(context_id, miss_counter(known.miss), Some(sandbox));
            return;
        }
        self.mark(target, authority.as_deref());
        self.marked.borrow_mut().insert(
            context_id,
            Marked {
                check,
                sandbox: sandbox.clone(),
                target: target.target.clone(),
            },
        );
    }

    /// Checks marked request `context_id` (the effective context) against
    /// the cluster the router used, counts it (`routed`, `route_missing`,
    /// `fork_unknown`), and remembers a miss so that the next requests for
    /// that fork are not marked. Called in the response phase, and in the
    /// log phase for a request that got no response; a no-op for a request
    /// that was not marked or was checked already.
    pub fn check(&self, context_id: u32) {
        // Most requests were not marked: no hashing for them.
        if self.marked.borrow().is_empty() {
            return;
        }
        let Some(marked) = self.marked.borrow_mut().remove(&context_id) else {
            return;
        };
        let after = self.cluster_attribute().route_cluster_name();
        let verdict = route_check::verify(
            self.config.mode,
            &marked.target,
            marked.check.before.as_deref(),
            after.as_deref(),
        );
        match verdict {
            Ok(()) => self.record(context_id, Counter::Routed, Some(&marked.sandbox)),
            Err(miss) => {
                self.record(context_id, miss_counter(miss), Some(&marked.sandbox));
                self.remember(&marked, miss, after.as_deref());
            }
        }
    }

    fn remember(&self, marked: &Marked, miss: Miss, after: Option<&str>) {
        let Marked {
            check,
            sandbox,
            target,
        } = marked;
        let key = route_check::unreachable_key(&check.destination, sandbox, target);
        let record = Unreachable::seen(miss, host::now_ms());
        // Last writer wins: every writer writes the same kind of record.
        let _ = host::set_shared_data(&key, &record.encode(), None);
        // At most one line per fork per UNREACHABLE_TTL_MS: later requests
        // for it are not marked until then.
        log::warn!(
            "sandbox-router: sandbox {sandbox} did not reach {target} for {}: {} (cluster {}); \
             its requests go to baseline for {} ms",
            check.destination,
            miss.as_str(),
            after.unwrap_or("none"),
            route_check::UNREACHABLE_TTL_MS,
        );
    }

    /// Whether request `context_id` is marked (not yet checked) or decided
    /// with a recovered key: its later callbacks need this worker.
    pub fn tracks(&self, context_id: u32) -> bool {
        let marked = self.marked.borrow();
        let recovered = self.recovered.borrow();
        (!marked.is_empty() && marked.contains_key(&context_id)) || recovered.contains(&context_id)
    }

    /// Forgets request `context_id` (ended).
    pub fn forget(&self, context_id: u32) {
        let mut marked = self.marked.borrow_mut();
        if !marked.is_empty() {
            marked.remove(&context_id);
        }
        let mut recovered = self.recovered.borrow_mut();
        if !recovered.is_empty() {
            recovered.retain(|id| *id != context_id);
        }
    }

    /// Sets the route header to `target`'s sandbox and, in authority mode,
    /// `:authority` to `authority`; Envoy selects the route again for the
    /// changed headers (`host::set_request_header`).
    fn mark(&self, target: &SandboxTarget, authority: Option<&str>) {
        let header = &self.config.route_header;
        let sandbox = &target.sandbox;
        if let Err(status) = host::set_request_header(header, sandbox) {
            log::warn!("sandbox-router: could not set {header}: {status:?}");
        }
        if let Some(authority) = authority {
            let _ = host::set_request_header(":authority", authority);
        }
        log::debug!(
            "sandbox-router: routed to sandbox {sandbox} ({})",
            target.target
        );
    }

    pub fn park(&self, context_id: u32, query: Query<'static>) {
        self.parked.borrow_mut().insert(context_id, query);
    }

    pub fn unpark(&self, context_id: u32) {
        self.parked.borrow_mut().remove(&context_id);
    }

    /// Decides and resumes parked request `context_id` from what is known
    /// now (no new call): routed, baseline, or fail-open baseline.
    pub fn resume(&self, context_id: u32) {
        let Some(query) = self.parked.borrow_mut().remove(&context_id) else {
            return;
        };
        if !host::switch_to(context_id) {
            return; // the request is gone
        }
        {
            let mut routes = self.routes.borrow_mut();
            let decision = match routes.settled(&query.key, &query.destination, host::now_ms()) {
                Some(answer) => query.decide(&self.config, answer),
                None => Decision::FailOpen,
            };
            // Headers changed here are this request's (the effective
            // context): Envoy selects its route again, as for a request
            // decided at once.
            self.apply(context_id, decision);
        }
        host::resume_request();
    }

    /// Resumes every request in `context_ids`, then makes `current` the
    /// effective context again.
    pub fn resume_all(&self, context_ids: &[u32], current: u32) {
        for &id in context_ids {
            self.resume(id);
        }
        host::switch_to(current);
    }
}

fn miss_counter(miss: Miss) -> Counter {
    match miss {
        Miss::RouteMissing => Counter::RouteMissing,
        Miss::ForkUnknown => Counter::ForkUnknown,
    }
}
