//! The root context's table sync: every tick, adopt a table another worker
//! published; when the sync interval is due and this worker wins the lease,
//! fetch `GET /v1/routes` (with `If-None-Match`) and publish the answer.
//! Policy (keys, lease, periods) is in `sandbox_router_core::table_sync`.

use sandbox_router_core::config::RouteServiceConfig;
use sandbox_router_core::routes_api::{self, BadAnswer, RoutesAnswer, MAX_BODY_BYTES, ROUTES_PATH};
use sandbox_router_core::table_sync::{decode_u64, encode_u64, lease_is_free, SharedKeys};

use crate::host;
use crate::metrics::{Counter, Gauge};
use crate::worker::Worker;

pub struct TableSync {
    route_service: RouteServiceConfig,
    keys: SharedKeys,
    /// Token of this worker's fetch in flight.
    in_flight: Option<u32>,
    next_fetch_ms: u64,
}

impl TableSync {
    pub fn new(route_service: RouteServiceConfig) -> Self {
        let keys = SharedKeys::new(&route_service.cluster);
        TableSync {
            route_service,
            keys,
            in_flight: None,
            next_fetch_ms: 0,
        }
    }

    pub fn on_tick(&mut self, worker: &Worker) {
        let now = host::now_ms();
        self.adopt_published(worker);
        if self.in_flight.is_none() && now >= self.next_fetch_ms {
            self.next_fetch_ms = now.saturating_add(self.route_service.sync_interval_ms);
            if self.take_lease(now) {
                self.fetch(worker, now);
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
        if self.in_flight != Some(token) {
            return false;
        }
        self.in_flight = None;
        let now = host::now_ms();
        match read_table(num_headers, body_size) {
            Ok(Some((answer, body))) => {
                // Table first, then version: a worker that sees the new
                // version finds the new table.
                let published =
                    host::set_shared_data(&self.keys.table, &body, None).and_then(|()| {
                        host::set_shared_data(&self.keys.version, &encode_u64(answer.version), None)
                    });
                if let Err(status) = published {
                    log::warn!("sandbox-router: could not publish the route table: {status:?}");
                }
                worker.metrics.increment(Counter::SyncOk);
                let mut routes = worker.routes.borrow_mut();
                routes.sync_finished(true, now);
                routes.adopt_table(answer.version, answer.table);
            }
            Ok(None) => {
                worker.metrics.increment(Counter::SyncNotModified);
                worker.routes.borrow_mut().sync_finished(true, now);
            }
            Err(error) => {
                log::warn!(
                    "sandbox-router: route table sync failed, keeping the last good table: {error}"
                );
                worker.metrics.increment(Counter::SyncError);
                worker.routes.borrow_mut().sync_finished(false, now);
            }
        }
        publish_gauges(worker);
        true
    }

    fn fetch(&mut self, worker: &Worker, now: u64) {
        let etag = worker.routes.borrow().table_version().map(routes_api::etag);
        let rs = &self.route_service;
        match host::get(
            &rs.cluster,
            &rs.authority,
            ROUTES_PATH,
            etag.as_deref(),
            rs.timeout_ms,
        ) {
            Ok(token) => self.in_flight = Some(token),
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

    /// Takes the fetch lease if it is free (compare-and-swap).
    fn take_lease(&self, now: u64) -> bool {
        let (lease, cas) = host::shared_data(&self.keys.lease);
        if !lease_is_free(lease.as_deref(), now) {
            return false;
        }
        let expiry = now.saturating_add(self.route_service.sync_interval_ms);
        host::set_shared_data(&self.keys.lease, &encode_u64(expiry), cas).is_ok()
    }

    /// Adopts the published table if its version is not ours; the table is
    /// decoded once per version per worker.
    fn adopt_published(&self, worker: &Worker) {
        let (version, _) = host::shared_data(&self.keys.version);
        let Some(version) = version.as_deref().and_then(decode_u64) else {
            return;
        };
        if worker.routes.borrow().table_version() == Some(version) {
            return;
        }
        let (table, _) = host::shared_data(&self.keys.table);
        match table.as_deref().map(routes_api::parse_routes) {
            Some(Ok(answer)) => worker
                .routes
                .borrow_mut()
                .adopt_table(answer.version, answer.table),
            Some(Err(error)) => {
                log::warn!("sandbox-router: published route table unreadable: {error}")
            }
            None => {}
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
