//! One request: read the inputs, ask the core, apply its decision, count.
//! A key that only the RouteService knows pauses the request until the
//! answer or `timeoutMs` (fail open).

use std::borrow::Cow;
use std::rc::Rc;

use sandbox_router_core::carrier::Carrier;
use sandbox_router_core::config::FilterConfig;
use sandbox_router_core::decision::{self, Decision, Inspection, KeyOutcome, Query, Step};
use sandbox_router_core::destination::RouteBefore;
use sandbox_router_core::recovery::{Direction, Recorded};
use sandbox_router_core::routes_api::{self, BadAnswer, MAX_BODY_BYTES};
use sandbox_router_core::routing_key::RoutingKey;
use sandbox_router_core::worker_routes::Answer;

use crate::abi::Action;
use crate::edge;
use crate::host;
use crate::metrics::Counter;
use crate::worker::{Worker, KEY_DROPPED, OUTCOME_STATE, SANDBOX_STATE};
use sandbox_router_core::edge::BAGGAGE;

/// One request's filter. Made for its request-headers callback and again
/// for each later one, unless it was kept ([`RequestFilter::has_state`]):
/// most requests need nothing between callbacks (`crate::exports`).
pub struct RequestFilter {
    context_id: u32,
    worker: Rc<Worker>,
    /// This request is parked (waiting for a RouteService answer).
    parked: bool,
    /// The lookup this request owns.
    call: Option<Lookup>,
    /// A `Set-Cookie` for the response (a signed key from a preview link).
    set_cookie: Option<String>,
    /// Came through the inbound listener (`recovery`): nothing decided.
    inbound: bool,
}

/// Where the key of an outbound request came from, as far as recovery goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// Its own (or none, with nothing recorded for its trace).
    Untouched,
    /// Recovered from its trace and added to its `baggage`.
    Recovered,
    /// None, though its trace came in with one (`enabled: false`).
    Dropped,
}

struct Lookup {
    token: u32,
    key: String,
    started_ms: u64,
}

impl RequestFilter {
    pub fn new(context_id: u32, worker: Rc<Worker>) -> Self {
        RequestFilter {
            context_id,
            worker,
            parked: false,
            call: None,
            set_cookie: None,
            inbound: false,
        }
    }

    pub fn context_id(&self) -> u32 {
        self.context_id
    }

    /// The token of the lookup this request made and waits for.
    pub fn call_token(&self) -> Option<u32> {
        self.call.as_ref().map(|lookup| lookup.token)
    }

    /// Whether this request has something for a later callback: it waits
    /// for (or owns) a lookup, has a cookie to set, came in through the
    /// inbound listener, or its worker has it marked or recovered. Then
    /// the filter is kept until the request's log phase.
    pub fn has_state(&self) -> bool {
        self.parked
            || self.call.is_some()
            || self.set_cookie.is_some()
            || self.inbound
            || self.worker.tracks(self.context_id)
    }

    /// Reads every request header with one host call (one buffer, read in
    /// place: cheaper than asking for each carrier, docs/performance.md),
    /// then decides.
    pub fn on_request_headers(&mut self) -> Action {
        let config = Rc::clone(&self.worker.config);
        // Only with `recovery` does the filter ask which listener this is
        // (one property read): without it, every request is outbound.
        if config.recovery.is_some() && host::listener_direction() == Direction::Inbound {
            self.inbound = true;
            self.on_inbound(&config);
            return Action::Continue;
        }
        if config.strips_incoming_keys() || config.signed_key_verifier.is_some() {
            return self.on_request_at_edge(&config);
        }
        let buffer = host::request_header_map();
        let headers = host::header_pairs(&buffer);
        self.on_headers(&config, &headers)
    }

    /// At the mesh's edge: the carriers are rewritten (stripped, a signed
    /// key let in) on the request and on the filter's copy of its headers
    /// alike, then the request is decided from that copy.
    fn on_request_at_edge(&mut self, config: &FilterConfig) -> Action {
        let mut headers = host::request_headers();
        edge::strip_incoming_keys(config, &mut headers, &self.worker.metrics);
        self.set_cookie = edge::admit_signed_key(config, &mut headers, &self.worker.metrics);
        self.on_headers(config, &headers)
    }

    /// Decides the request from its headers. Every header the filter
    /// changes (here or before) makes Envoy select the route again (`host`).
    fn on_headers<K, V>(&mut self, config: &FilterConfig, headers: &[(K, V)]) -> Action
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut inspection = decision::inspect(config, headers);
        let recovery = self.recover(config, headers, &mut inspection);
        if inspection.spoofed_route_header {
            let _ = host::remove_request_header(&config.route_header);
            self.worker.metrics.increment(Counter::SpoofedHeaderRemoved);
        }
        let authority = first_value(headers, ":authority");
        let action = self.decide(config, inspection, authority);
        if recovery == Recovery::Dropped {
            host::set_filter_state(OUTCOME_STATE, KEY_DROPPED);
        }
        action
    }

    /// The inbound side of a sidecar (`recovery` on, Envoy's
    /// `xds.listener_direction` inbound): the request is not decided, marked or
    /// counted as an outcome (it was routed by the caller's sidecar, and a
    /// route header it carries is left to the app, whose own outbound calls
    /// have it removed); if it has a valid routing key, each trace id it
    /// carries is recorded with that key.
    fn on_inbound(&self, config: &FilterConfig) {
        let (Some(recovery), Some(store)) = (&config.recovery, &self.worker.recovery) else {
            return;
        };
        let buffer = host::request_header_map();
        let headers = host::header_pairs(&buffer);
        let KeyOutcome::Valid(key, _) = decision::inspect(config, &headers).key else {
            return;
        };
        let now = host::now_ms();
        let mut stored = false;
        for header in &recovery.trace_headers {
            let Some(id) = first_value(&headers, header.name()).and_then(|v| header.parse(v))
            else {
                continue;
            };
            match store.record(&host::HostSharedData, &id, &key, now) {
                Recorded::Stored => self.worker.metrics.increment(Counter::RecoveryRecorded),
                Recorded::Evicted => {
                    self.worker.metrics.increment(Counter::RecoveryRecorded);
                    self.worker.metrics.increment(Counter::RecoveryEvicted);
                }
                Recorded::Fresh | Recorded::Lost => continue,
            }
            stored = true;
        }
        if stored {
            store.note_recorded(&host::HostSharedData, now);
        }
    }

    /// An outbound request without a routing key, with `recovery` on: if
    /// one of its trace ids came in with a key (recorded by the inbound
    /// side), `enabled` gives the key back (a `baggage` member appended, so
    /// the next hops have it too, and the request decided with it: counted
    /// `key_recovered`); otherwise it is counted `key_dropped` (the caller
    /// then sets the outcome `key_dropped`). Reads nothing without
    /// `recovery`, or when the request has a key.
    fn recover<K, V>(
        &self,
        config: &FilterConfig,
        headers: &[(K, V)],
        inspection: &mut Inspection<'_>,
    ) -> Recovery
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let (Some(recovery), Some(store)) = (&config.recovery, &self.worker.recovery) else {
            return Recovery::Untouched;
        };
        if !matches!(inspection.key, KeyOutcome::NoKey) {
            return Recovery::Untouched;
        }
        // Nothing recorded lately (most sidecars, most of the time): one
        // shared-data read, and the clock only if something was recorded.
        let Some(now) = store.may_hold(&host::HostSharedData, host::now_ms) else {
            return Recovery::Untouched;
        };
        let found = recovery.trace_headers.iter().find_map(|header| {
            let id = header.parse(first_value(headers, header.name())?)?;
            Some((store.find(&host::HostSharedData, &id, now)?, header.name()))
        });
        // The table holds validated keys only (decoding checks again).
        let Some((key, header)) = found else {
            return Recovery::Untouched;
        };
        if !recovery.enabled {
            self.worker.metrics.increment(Counter::KeyDropped);
            if log::log_enabled!(log::Level::Debug) {
                let authority = first_value(headers, ":authority").unwrap_or_default();
                log::debug!(
                    "sandbox-router: routing key {key} dropped by the app before {} (trace id from {header})",
                    String::from_utf8_lossy(authority)
                );
            }
            return Recovery::Dropped;
        }
        let Some(baggage_key) = config.carriers.baggage_keys.first() else {
            return Recovery::Untouched;
        };
        // A valid key is RFC 3986 unreserved: a baggage value as it is.
        let member = format!("{baggage_key}={key}");
        if let Err(status) = host::add_request_header(BAGGAGE, member.as_bytes()) {
            log::warn!("sandbox-router: could not add {BAGGAGE}: {status:?}");
            return Recovery::Untouched;
        }
        self.worker.metrics.increment(Counter::KeyRecovered);
        self.worker.mark_recovered(self.context_id);
        log::debug!("sandbox-router: routing key {key} recovered from {header}");
        inspection.key = KeyOutcome::Valid(Cow::Owned(key), Carrier::Baggage);
        Recovery::Recovered
    }

    fn decide(
        &mut self,
        config: &FilterConfig,
        inspection: Inspection<'_>,
        authority: Option<&[u8]>,
    ) -> Action {
        // Only a keyed request needs the route Envoy chose.
        let keyed = matches!(inspection.key, KeyOutcome::Valid(..));
        let attribute = keyed.then(|| self.worker.cluster_attribute());
        let cluster = attribute.and_then(|a| a.route_cluster_name());
        let route = match (&cluster, attribute) {
            (Some(cluster), _) => RouteBefore::Cluster(cluster),
            (None, Some(a)) if a.names_routes() && !a.has_route() => RouteBefore::NoRoute,
            (None, _) => RouteBefore::NotSaid,
        };
        match decision::prepare(config, inspection, route, authority) {
            Step::Decided(decision) => {
                self.worker.apply(self.context_id, decision);
                Action::Continue
            }
            Step::Lookup(query) => self.look_up(query),
        }
    }

    fn look_up(&mut self, query: Query<'_>) -> Action {
        let worker = Rc::clone(&self.worker);
        let config = &worker.config;
        let Some(route_service) = &config.route_service else {
            worker.apply(
                self.context_id,
                query.decide_from(config, &config.static_routes),
            );
            return Action::Continue;
        };
        if let Some(target) = worker
            .routes
            .borrow()
            .table_answer(&query.key, &query.destination)
        {
            // The table knows the key: no clock, no call bookkeeping.
            worker.metrics.increment(Counter::TableHit);
            worker.apply(self.context_id, query.decide(config, target));
            return Action::Continue;
        }
        let now = host::now_ms();
        let mut routes = worker.routes.borrow_mut();
        let answer = routes.answer(&query.key, &query.destination, now, self.context_id);
        let (hit, decision) = match answer {
            Answer::Table(target) => (Counter::TableHit, query.decide(config, target)),
            Answer::Cached(target) => (Counter::CacheHit, query.decide(config, target)),
            Answer::FailOpen => (Counter::CacheMiss, Decision::FailOpen),
            Answer::Shed => {
                worker.metrics.increment(Counter::LookupShed);
                (Counter::CacheMiss, Decision::FailOpen)
            }
            Answer::Wait => {
                worker.metrics.increment(Counter::CacheMiss);
                return self.park(query);
            }
            Answer::Call => {
                worker.metrics.increment(Counter::CacheMiss);
                let path =
                    RoutingKey::parse(&query.key).map(|key| routes_api::routes_for_key_path(&key));
                let dispatched = path.ok().and_then(|path| {
                    let timeout = route_service.timeout_ms;
                    host::get(
                        &route_service.cluster,
                        &route_service.authority,
                        &path,
                        None,
                        timeout,
                    )
                    .ok()
                });
                if let Some(token) = dispatched {
                    worker.metrics.increment(Counter::Lookup);
                    let key = query.key.to_string();
                    self.call = Some(Lookup {
                        token,
                        key,
                        started_ms: now,
                    });
                    return self.park(query);
                }
                // The call could not even start (e.g. no such cluster).
                worker.metrics.increment(Counter::LookupError);
                routes.call_finished(&query.key, Err(BadAnswer::NoStatus), now);
                (Counter::CacheMiss, Decision::FailOpen)
            }
        };
        worker.metrics.increment(hit);
        worker.apply(self.context_id, decision);
        Action::Continue
    }

    fn park(&mut self, query: Query<'_>) -> Action {
        self.worker.park(self.context_id, query.into_owned());
        self.parked = true;
        Action::Pause
    }

    fn on_lookup_answer(&mut self, lookup: Lookup, num_headers: usize, body_size: usize) {
        let now = host::now_ms();
        let result = read_answer(&lookup.key, num_headers, body_size);
        if let Err(error) = &result {
            let elapsed_ms = now.saturating_sub(lookup.started_ms);
            let timed_out = self
                .worker
                .config
                .route_service
                .as_ref()
                .is_some_and(|rs| routes_api::is_timeout(error, elapsed_ms, rs.timeout_ms));
            let counter = if timed_out {
                Counter::LookupTimeout
            } else {
                Counter::LookupError
            };
            self.worker.metrics.increment(counter);
            log::debug!(
                "sandbox-router: lookup of routing key {} failed: {error}",
                lookup.key
            );
        }
        let waiters = self
            .worker
            .routes
            .borrow_mut()
            .call_finished(&lookup.key, result, now);
        self.parked = false;
        self.worker.resume(self.context_id);
        self.worker.resume_all(&waiters, self.context_id);
    }
}

/// The first line of header `name` (names as Envoy holds them, lower case),
/// as Envoy's `get_map_value` would answer it.
fn first_value<'h, K, V>(headers: &'h [(K, V)], name: &str) -> Option<&'h [u8]>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    headers
        .iter()
        .find(|(n, _)| n.as_ref().eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, value)| value.as_ref())
}

/// The answer to `GET /v1/routes?routingKey=K` being handled.
fn read_answer(
    key: &str,
    num_headers: usize,
    body_size: usize,
) -> Result<routes_api::RoutesAnswer, BadAnswer> {
    if !routes_api::check_status(host::call_response_status(num_headers))? {
        return Err(BadAnswer::Status(304));
    }
    if body_size > MAX_BODY_BYTES {
        return Err(BadAnswer::TooLarge);
    }
    routes_api::parse_key_routes(&host::call_response_body(body_size), key)
}

impl RequestFilter {
    /// The answer to a call this request made (a lookup).
    pub fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize) {
        match self.call.take() {
            Some(lookup) if lookup.token == token_id => {
                self.on_lookup_answer(lookup, num_headers, body_size)
            }
            other => self.call = other,
        }
    }

    /// The router has chosen by now (Envoy's own answers, e.g. `404`, come
    /// through here too): check a marked request before the caller sees
    /// the response.
    pub fn on_response_headers(&mut self) {
        if self.inbound {
            return;
        }
        self.worker.check(self.context_id);
        if let Some(cookie) = self.set_cookie.take() {
            let _ = host::add_response_header("set-cookie", &cookie);
        }
        if let Some(name) = &self.worker.config.response_header {
            let _ = host::set_response_header(name, &decision_header());
        }
    }

    /// The stream is over (Envoy's access log phase, which every stream
    /// has, a reset one too): a marked request that got no response (reset,
    /// client gone) is checked, and what the worker holds for the request
    /// is forgotten.
    pub fn on_log(&mut self) {
        self.worker.check(self.context_id);
        self.worker.forget(self.context_id);
        if self.parked || self.call.is_some() {
            // Ended while waiting (client gone): forget it, and if it owned
            // the call, release the waiters (the call is the root's: its
            // answer, if it comes, finds no request and is dropped).
            self.worker.unpark(self.context_id);
            let waiters = self
                .worker
                .routes
                .borrow_mut()
                .request_ended(self.context_id);
            self.worker.resume_all(&waiters, self.context_id);
        }
    }
}

/// The opt-in response header's value: the outcome, and the sandbox when
/// there is one (`routed; sandbox=pr-42`), as recorded on this request.
fn decision_header() -> String {
    let outcome = host::filter_state(OUTCOME_STATE).unwrap_or_else(|| "none".to_owned());
    match host::filter_state(SANDBOX_STATE) {
        Some(sandbox) => format!("{outcome}; sandbox={sandbox}"),
        None => outcome,
    }
}
