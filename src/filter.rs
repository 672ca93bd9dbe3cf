//! One request: read the inputs, ask the core, apply its decision, count.
//! A key that only the RouteService knows pauses the request until the
//! answer or `timeoutMs` (fail open).

use std::borrow::Cow;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, Bytes};
use sandbox_router_core::carrier::Carrier;
use sandbox_router_core::config::FilterConfig;
use sandbox_router_core::decision::{self, Decision, Inspection, KeyOutcome, Query, Step};
use sandbox_router_core::destination::RouteBefore;
use sandbox_router_core::recovery::{Direction, Recorded};
use sandbox_router_core::routes_api::{self, BadAnswer, MAX_BODY_BYTES};
use sandbox_router_core::routing_key::RoutingKey;
use sandbox_router_core::worker_routes::Answer;

use crate::edge;
use crate::host;
use crate::metrics::Counter;
use crate::worker::{Worker, KEY_DROPPED, OUTCOME_STATE, SANDBOX_STATE};
use sandbox_router_core::edge::BAGGAGE;

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

/// The request's `:authority`: already read (from the whole header map),
/// or to be read from the host only if the decision needs it.
enum Authority<'h> {
    Read(Option<&'h [u8]>),
    FromHost,
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

    /// Reads only the headers the configuration names, one host call each
    /// (the whole map is copied into the VM only when it can matter: at the
    /// edge, which rewrites carriers, and when a legacy or plain carrier is
    /// present, whose last line wins); then decides as with the whole map.
    fn on_request(&mut self) -> Action {
        let config = Rc::clone(&self.worker.config);
        // Only with `recovery` does the filter ask which listener this is
        // (one property read): without it, every request is outbound.
        if config.recovery.is_some() && host::listener_direction() == Direction::Inbound {
            self.inbound = true;
            self.on_inbound(&config);
            return Action::Continue;
        }
        if config.strips_incoming_keys() || config.signed_key_verifier.is_some() {
            return self.on_request_with_map();
        }
        // Every `baggage` line, joined as one list; the route header, whose
        // presence is all that matters. Slots with an empty name match no
        // header name the core looks for.
        let baggage = host::request_header_lines(BAGGAGE).map(|lines| (BAGGAGE, lines));
        let route_header = host::has_request_header(&config.route_header)
            .then(|| (config.route_header.as_str(), Bytes::new()));
        let headers = [
            baggage.unwrap_or_default(),
            route_header.unwrap_or_default(),
        ];
        let mut inspection = decision::inspect(&config, &headers);
        if matches!(inspection.key, KeyOutcome::NoKey) && self.other_carriers_present() {
            return self.on_request_with_map();
        }
        let recovery = self.recover(&config, &mut inspection);
        // A `baggage` line was added: route selection may depend on it.
        let mut changed = recovery == Recovery::Recovered;
        if inspection.spoofed_route_header {
            changed |= host::remove_request_header(&config.route_header).is_ok();
            self.worker.metrics.increment(Counter::SpoofedHeaderRemoved);
        }
        let action = self.decide(&config, inspection, Authority::FromHost, changed);
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
        let Some(key) = self.inbound_key(config) else {
            return;
        };
        let now = host::now_ms();
        let mut stored = false;
        for header in &recovery.trace_headers {
            let Some(id) = host::request_header(header.name()).and_then(|v| header.parse(&v))
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

    /// The valid routing key of an inbound request, read as on the outbound
    /// side (baggage first; the whole map only when another carrier is there).
    fn inbound_key(&self, config: &FilterConfig) -> Option<String> {
        let baggage = host::request_header_lines(BAGGAGE).map(|lines| (BAGGAGE, lines));
        let headers = [baggage.unwrap_or_default()];
        match decision::inspect(config, &headers).key {
            KeyOutcome::Valid(key, _) => return Some(key.into_owned()),
            KeyOutcome::Invalid(..) => return None,
            KeyOutcome::NoKey => {}
        }
        if !self.other_carriers_present() {
            return None;
        }
        let headers = host::request_headers();
        match decision::inspect(config, &headers).key {
            KeyOutcome::Valid(key, _) => Some(key.into_owned()),
            _ => None,
        }
    }

    /// An outbound request without a routing key, with `recovery` on: if
    /// one of its trace ids came in with a key (recorded by the inbound
    /// side), `enabled` gives the key back (a `baggage` member appended, so
    /// the next hops have it too, and the request decided with it: counted
    /// `key_recovered`); otherwise it is counted `key_dropped` (the caller
    /// then sets the outcome `key_dropped`). Reads nothing without
    /// `recovery`, or when the request has a key.
    fn recover(&self, config: &FilterConfig, inspection: &mut Inspection<'_>) -> Recovery {
        let (Some(recovery), Some(store)) = (&config.recovery, &self.worker.recovery) else {
            return Recovery::Untouched;
        };
        if !matches!(inspection.key, KeyOutcome::NoKey) {
            return Recovery::Untouched;
        }
        let now = host::now_ms();
        // Nothing recorded lately (most sidecars, most of the time): one
        // shared-data read, no trace header read.
        if !store.may_hold(&host::HostSharedData, now) {
            return Recovery::Untouched;
        }
        let found = recovery.trace_headers.iter().find_map(|header| {
            let id = header.parse(&host::request_header(header.name())?)?;
            Some((store.find(&host::HostSharedData, &id, now)?, header.name()))
        });
        // The table holds validated keys only (decoding checks again).
        let Some((key, header)) = found else {
            return Recovery::Untouched;
        };
        if !recovery.enabled {
            self.worker.metrics.increment(Counter::KeyDropped);
            if log::log_enabled!(log::Level::Debug) {
                let authority = host::request_header(":authority").unwrap_or_default();
                log::debug!(
                    "sandbox-router: routing key {key} dropped by the app before {} (trace id from {header})",
                    String::from_utf8_lossy(&authority)
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

    /// Whether a legacy or plain carrier header is present (only asked when
    /// `baggage` gave no key, as the carriers are read in that order).
    fn other_carriers_present(&self) -> bool {
        let config = &self.worker.config;
        self.worker
            .legacy_header_names
            .iter()
            .chain(&config.carriers.headers)
            .any(|name| host::has_request_header(name))
    }

    /// The same decision from the whole header map.
    fn on_request_with_map(&mut self) -> Action {
        let config = Rc::clone(&self.worker.config);
        let mut headers = host::request_headers();
        let mut changed = edge::strip_incoming_keys(&config, &mut headers, &self.worker.metrics);
        let (admitted, set_cookie) =
            edge::admit_signed_key(&config, &mut headers, &self.worker.metrics);
        changed |= admitted;
        self.set_cookie = set_cookie;
        let mut inspection = decision::inspect(&config, &headers);
        let recovery = self.recover(&config, &mut inspection);
        changed |= recovery == Recovery::Recovered;
        if inspection.spoofed_route_header {
            changed |= host::remove_request_header(&config.route_header).is_ok();
            self.worker.metrics.increment(Counter::SpoofedHeaderRemoved);
        }
        let authority = headers
            .iter()
            .find(|(name, _)| name == ":authority")
            .map(|(_, value)| value.as_slice());
        let action = self.decide(&config, inspection, Authority::Read(authority), changed);
        if recovery == Recovery::Dropped {
            host::set_filter_state(OUTCOME_STATE, KEY_DROPPED);
        }
        action
    }

    fn decide(
        &mut self,
        config: &FilterConfig,
        inspection: Inspection<'_>,
        authority: Authority<'_>,
        mut changed: bool,
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
        // In header mode Istio's cluster names the destination: `:authority`
        // is read only when the decision needs it.
        let read;
        let authority = match authority {
            Authority::Read(authority) => authority,
            Authority::FromHost if decision::needs_authority(config, &inspection, &route) => {
                read = host::request_header(":authority");
                read.as_deref()
            }
            Authority::FromHost => None,
        };
        let action = match decision::prepare(config, inspection, route, authority) {
            Step::Decided(decision) => {
                changed |= self.worker.apply(self.context_id, &decision);
                Action::Continue
            }
            Step::Lookup(query) => self.look_up(query, &mut changed),
        };
        host::reselect_route_if(changed);
        action
    }

    fn look_up(&mut self, query: Query<'_>, changed: &mut bool) -> Action {
        let worker = Rc::clone(&self.worker);
        let config = &worker.config;
        let Some(route_service) = &config.route_service else {
            *changed |= worker.apply(
                self.context_id,
                &query.decide_from(config, &config.static_routes),
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
            *changed |= worker.apply(self.context_id, &query.decide(config, target));
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
        *changed |= worker.apply(self.context_id, &decision);
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

impl Context for RequestFilter {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        match self.call.take() {
            Some(lookup) if lookup.token == token_id => {
                self.on_lookup_answer(lookup, num_headers, body_size)
            }
            other => self.call = other,
        }
    }

    fn on_done(&mut self) -> bool {
        self.worker.forget(self.context_id);
        if self.parked || self.call.is_some() {
            // Ended while waiting (client gone): forget it, and if it owned
            // the call (which the host cancels with it), release the waiters.
            self.worker.unpark(self.context_id);
            let waiters = self
                .worker
                .routes
                .borrow_mut()
                .request_ended(self.context_id);
            self.worker.resume_all(&waiters, self.context_id);
        }
        true
    }
}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.on_request()
    }

    /// The router has chosen by now (Envoy's own answers, e.g. `404`, come
    /// through here too): check a marked request before the caller sees
    /// the response.
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.inbound {
            return Action::Continue;
        }
        self.worker.check(self.context_id);
        if let Some(cookie) = self.set_cookie.take() {
            let _ = host::add_response_header("set-cookie", &cookie);
        }
        if let Some(name) = &self.worker.config.response_header {
            let _ = host::set_response_header(name, &decision_header());
        }
        Action::Continue
    }

    /// A marked request that got no response (reset, client gone).
    fn on_log(&mut self) {
        self.worker.check(self.context_id);
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
