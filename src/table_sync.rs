//! The root context's table sync: every tick, catch up with what another
//! worker published; when the sync interval is due and this worker wins the
//! lease, ask the RouteService and publish the answer.
//!
//! - With no table yet: `GET /v1/routes` (the full table), published as is
//!   with an empty delta log.
//! - Holding a table at `V`: `GET /v1/routes?since=V`. A delta is applied in
//!   place and appended to the shared delta log; `304` changes nothing; `410`
//!   (the server does not know `V`), a delta that cannot be applied, or a
//!   server that does not know `since` (`400`) make the same worker take the
//!   full table at once (`GET /v1/routes`, `If-None-Match: "V"`).
//! - A failure (no answer, timeout, 5xx) keeps the table: fail open, counted.
//!
//! Policy (keys, lease, the log and its adoption) is host-free in
//! `sandbox_router_core::table_sync`.

use sandbox_router_core::config::RouteServiceConfig;
use sandbox_router_core::routes_api::{
    self, check_delta_status, parse_delta, BadAnswer, DeltaStatus, RoutesAnswer, MAX_BODY_BYTES,
    ROUTES_PATH,
};
use sandbox_router_core::table_sync::{
    decode_u64, encode_u64, lease_is_free, plan_adoption, publish_delta, Adoption, DeltaLog,
    Publication, Record, SharedKeys,
};

use crate::host;
use crate::metrics::{Counter, Gauge};
use crate::worker::Worker;

/// After a server refused `?since=` (`400`: a RouteService older than the
/// delta API), deltas are not asked again for this long.
const DELTA_RETRY_MS: u64 = 300_000;

/// The call in flight.
#[derive(Debug, Clone, Copy)]
enum Asked {
    /// `GET /v1/routes` (`If-None-Match` of the version held, if any).
    Full,
    /// `GET /v1/routes?since=V`.
    Since(u64),
}

pub struct TableSync {
    route_service: RouteServiceConfig,
    keys: SharedKeys,
    /// Token of this worker's fetch in flight, and what it asked.
    in_flight: Option<(u32, Asked)>,
    next_fetch_ms: u64,
    /// The lease expiry this worker last wrote, while it may hold the lease.
    lease: Option<u64>,
    /// When this worker took the lease.
    lease_taken_ms: u64,
    /// Deltas are not asked before this time (the server refused them).
    no_delta_until_ms: u64,
}

impl TableSync {
    pub fn new(route_service: RouteServiceConfig) -> Self {
        let keys = SharedKeys::new(&route_service.cluster);
        TableSync {
            route_service,
            keys,
            in_flight: None,
            next_fetch_ms: 0,
            lease: None,
            lease_taken_ms: 0,
            no_delta_until_ms: 0,
        }
    }

    pub fn on_tick(&mut self, worker: &Worker) {
        let now = host::now_ms();
        self.adopt_published(worker);
        if self.in_flight.is_none() && now >= self.next_fetch_ms {
            self.next_fetch_ms = now.saturating_add(self.route_service.sync_interval_ms);
            if self.take_lease(now) {
                let held = worker.routes.borrow().table_version();
                match held.filter(|_| now >= self.no_delta_until_ms) {
                    Some(version) => self.fetch(worker, now, Asked::Since(version)),
                    None => self.fetch(worker, now, Asked::Full),
                }
            }
        }
        publish_gauges(worker);
    }

    /// Handles the answer to this worker's fetch; `false` if `token` is not ours.
    pub fn on_response(
        &mut self,
        worker: &Worker,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) -> bool {
        let Some((_, asked)) = self.in_flight.filter(|(t, _)| *t == token) else {
            return false;
        };
        self.in_flight = None;
        let now = host::now_ms();
        match asked {
            Asked::Full => self.full_answer(worker, now, num_headers, body_size),
            Asked::Since(since) => self.delta_answer(worker, now, since, num_headers, body_size),
        }
        if self.in_flight.is_none() {
            self.end_lease();
        }
        publish_gauges(worker);
        true
    }

    fn full_answer(&mut self, worker: &Worker, now: u64, num_headers: usize, body_size: usize) {
        match read_table(num_headers, body_size) {
            Ok(Some((answer, body))) => {
                // Table first, then its (empty) log, then the version: a
                // worker that sees the new version finds both.
                if self.renew_lease(now) {
                    let log = DeltaLog::empty(answer.version).encode();
                    let published = host::set_shared_data(&self.keys.table, &body, None)
                        .and_then(|()| host::set_shared_data(&self.keys.deltas, &log, None))
                        .and_then(|()| {
                            host::set_shared_data(
                                &self.keys.version,
                                &encode_u64(answer.version),
                                None,
                            )
                        });
                    if let Err(status) = published {
                        log::warn!("sandbox-router: could not publish the route table: {status:?}");
                    }
                }
                worker.metrics.increment(Counter::SyncOk);
                worker.metrics.increment(Counter::SyncFull);
                let mut routes = worker.routes.borrow_mut();
                routes.sync_finished(true, now);
                routes.adopt_table(answer.version, answer.table);
            }
            Ok(None) => {
                worker.metrics.increment(Counter::SyncNotModified);
                worker.routes.borrow_mut().sync_finished(true, now);
            }
            Err(error) => self.failed(worker, now, &error),
        }
    }

    fn delta_answer(
        &mut self,
        worker: &Worker,
        now: u64,
        since: u64,
        num_headers: usize,
        body_size: usize,
    ) {
        let status = host::call_response_status(num_headers);
        match check_delta_status(status) {
            Ok(DeltaStatus::NotModified) => {
                worker.metrics.increment(Counter::SyncNotModified);
                worker.routes.borrow_mut().sync_finished(true, now);
            }
            Ok(DeltaStatus::Gone) => {
                log::info!(
                    "sandbox-router: the RouteService no longer knows table version {since}: taking the full table"
                );
                worker.metrics.increment(Counter::SyncGone);
                self.renew_lease(now);
                self.fetch(worker, now, Asked::Full);
            }
            Ok(DeltaStatus::Body) => self.apply_delta(worker, now, since, body_size),
            Err(BadAnswer::Status(400)) => {
                log::warn!(
                    "sandbox-router: the RouteService refused ?since= (400): taking full tables for {} s",
                    DELTA_RETRY_MS / 1000
                );
                self.no_delta_until_ms = now.saturating_add(DELTA_RETRY_MS);
                self.renew_lease(now);
                self.fetch(worker, now, Asked::Full);
            }
            Err(error) => self.failed(worker, now, &error),
        }
    }

    /// Applies a delta (or, if it cannot be, takes the full table at once).
    fn apply_delta(&mut self, worker: &Worker, now: u64, since: u64, body_size: usize) {
        let held = worker.routes.borrow().table_version();
        let parsed = if body_size > MAX_BODY_BYTES {
            Err(BadAnswer::TooLarge)
        } else {
            let body = host::call_response_body(body_size);
            parse_delta(&body, since).map(|delta| (delta, body))
        };
        let (delta, body) = match parsed {
            // The table held moved meanwhile (another worker's publication
            // was adopted on a tick): this delta is not for it.
            Ok(_) if held != Some(since) => {
                worker.metrics.increment(Counter::SyncNotModified);
                worker.routes.borrow_mut().sync_finished(true, now);
                return;
            }
            Ok(parsed) => parsed,
            Err(error) => {
                log::warn!("sandbox-router: unusable table delta ({error}): taking the full table");
                worker.metrics.increment(Counter::SyncError);
                self.renew_lease(now);
                self.fetch(worker, now, Asked::Full);
                return;
            }
        };
        let version = delta.version;
        {
            let mut routes = worker.routes.borrow_mut();
            routes.sync_finished(true, now);
            routes.apply_deltas(version, std::slice::from_ref(&delta));
        }
        worker.metrics.increment(Counter::SyncOk);
        worker.metrics.increment(Counter::SyncDelta);
        if !self.renew_lease(now) {
            return;
        }
        let (log, cas) = host::shared_data(&self.keys.deltas);
        let record = Record {
            from: since,
            to: version,
            body: &body,
        };
        let publication = publish_delta(log.as_deref(), record, worker.routes.borrow().table());
        let published = match publication {
            Publication::Log(log) => host::set_shared_data(&self.keys.deltas, &log, cas),
            Publication::TableAndLog { table, log } => {
                host::set_shared_data(&self.keys.table, &table, None)
                    .and_then(|()| host::set_shared_data(&self.keys.deltas, &log, None))
            }
        }
        .and_then(|()| host::set_shared_data(&self.keys.version, &encode_u64(version), None));
        if let Err(status) = published {
            log::warn!("sandbox-router: could not publish the route table delta: {status:?}");
        }
    }

    fn failed(&mut self, worker: &Worker, now: u64, error: &BadAnswer) {
        log::warn!("sandbox-router: route table sync failed, keeping the last good table: {error}");
        worker.metrics.increment(Counter::SyncError);
        worker.routes.borrow_mut().sync_finished(false, now);
    }

    fn fetch(&mut self, worker: &Worker, now: u64, asked: Asked) {
        let held = worker.routes.borrow().table_version();
        let rs = &self.route_service;
        let (path, etag) = match asked {
            Asked::Full => (ROUTES_PATH.to_owned(), held.map(routes_api::etag)),
            Asked::Since(since) => (routes_api::routes_since_path(since), None),
        };
        match host::get(
            &rs.cluster,
            &rs.authority,
            &path,
            etag.as_deref(),
            rs.timeout_ms,
        ) {
            Ok(token) => self.in_flight = Some((token, asked)),
            Err(status) => {
                log::warn!(
                    "sandbox-router: cannot call the RouteService cluster {}: {status:?}",
                    rs.cluster
                );
                worker.metrics.increment(Counter::SyncError);
                worker.routes.borrow_mut().sync_finished(false, now);
            }
        }
    }

    /// How long a lease lasts: one sync interval, and at least one call's
    /// timeout, so that a slow fetch (a 14 MB table) is not fetched again by
    /// another worker meanwhile.
    fn lease_ms(&self) -> u64 {
        let rs = &self.route_service;
        rs.sync_interval_ms.max(rs.timeout_ms)
    }

    /// Takes the fetch lease if it is free (compare-and-swap).
    fn take_lease(&mut self, now: u64) -> bool {
        let (lease, cas) = host::shared_data(&self.keys.lease);
        if !lease_is_free(lease.as_deref(), now) {
            return false;
        }
        let expiry = now.saturating_add(self.lease_ms());
        let taken = host::set_shared_data(&self.keys.lease, &encode_u64(expiry), cas).is_ok();
        self.lease = taken.then_some(expiry);
        self.lease_taken_ms = now;
        taken
    }

    /// The fetch is over: the lease now ends one sync interval after it was
    /// taken (it was held longer only in case the fetch was slow), so the
    /// next sync is one interval after this one, by whichever worker.
    fn end_lease(&mut self) {
        let Some(held) = self.lease.take() else {
            return;
        };
        let (lease, cas) = host::shared_data(&self.keys.lease);
        if lease.as_deref().and_then(decode_u64) == Some(held) {
            let expiry = self
                .lease_taken_ms
                .saturating_add(self.route_service.sync_interval_ms);
            let _ = host::set_shared_data(&self.keys.lease, &encode_u64(expiry), cas);
        }
    }

    /// Before publishing: extends the lease this worker took, if it still
    /// holds it (compare-and-swap), so that no other worker publishes while
    /// this one writes. `false`: another worker took it (this fetch ran past
    /// the lease); the answer is then used here but not published.
    fn renew_lease(&mut self, now: u64) -> bool {
        let (lease, cas) = host::shared_data(&self.keys.lease);
        let ours = self.lease.is_some() && lease.as_deref().and_then(decode_u64) == self.lease;
        if !ours {
            log::warn!("sandbox-router: the table sync lease was lost: not publishing");
            return false;
        }
        let expiry = now.saturating_add(self.lease_ms());
        let renewed = host::set_shared_data(&self.keys.lease, &encode_u64(expiry), cas).is_ok();
        self.lease = renewed.then_some(expiry);
        renewed
    }

    /// Catches up with the published state: the deltas after this worker's
    /// version, applied in place, or the published table (and the deltas
    /// after it) when the log does not reach back to this worker's version.
    fn adopt_published(&self, worker: &Worker) {
        let (version, _) = host::shared_data(&self.keys.version);
        let Some(version) = version.as_deref().and_then(decode_u64) else {
            return;
        };
        let held = worker.routes.borrow().table_version();
        if held == Some(version) {
            return;
        }
        let (log, _) = host::shared_data(&self.keys.deltas);
        let read_table = || host::shared_data(&self.keys.table).0;
        match plan_adoption(held, log.as_deref(), read_table) {
            Ok(Adoption::Nothing) => {}
            Ok(Adoption::Apply { version, deltas }) => {
                worker.routes.borrow_mut().apply_deltas(version, &deltas);
            }
            Ok(Adoption::Replace { version, table }) => {
                worker.routes.borrow_mut().adopt_table(version, table);
            }
            Err(error) => log::warn!("sandbox-router: {error}"),
        }
    }
}

/// The answer to `GET /v1/routes` being handled: a new table and its body,
/// or `None` for not modified.
fn read_table(
    num_headers: usize,
    body_size: usize,
) -> Result<Option<(RoutesAnswer, Vec<u8>)>, BadAnswer> {
    if !routes_api::check_status(host::call_response_status(num_headers))? {
        return Ok(None);
    }
    if body_size > MAX_BODY_BYTES {
        return Err(BadAnswer::TooLarge);
    }
    let body = host::call_response_body(body_size);
    let answer = routes_api::parse_routes(&body)?;
    Ok(Some((answer, body)))
}

fn publish_gauges(worker: &Worker) {
    let routes = worker.routes.borrow();
    let metrics = &worker.metrics;
    metrics.set(Gauge::TableRoutes, routes.table_len() as u64);
    metrics.set(Gauge::TableVersion, routes.table_version().unwrap_or(0));
    metrics.set(Gauge::CacheEntries, routes.cache_len() as u64);
    metrics.set(Gauge::BreakerState, routes.breaker().gauge());
}
