//! The filter's Envoy metrics. Envoy shows them in `/stats` with the
//! `wasmcustom.` prefix, e.g. `wasmcustom.sandbox_router.routed`.
//!
//! Counters are counted in the worker's VM and added to Envoy's on the
//! root context's tick ([`FLUSH_PERIOD_MS`]), not one host call per count:
//! an `increment_metric` costs about 1,000 Envoy instructions, and every
//! request counts its outcome (docs/performance.md). So Envoy's counters lag
//! the requests by at most one flush period. Gauges are set directly.

use std::cell::Cell;

use crate::abi::MetricType;
use crate::host;

/// Counters. The first nine count requests, one outcome each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Sent to a sandbox, and the router used the fork's cluster.
    Routed,
    /// Header mode: marked, but the route header did not select the fork
    /// (no VirtualService rule for it), or a recent request found so.
    RouteMissing,
    /// Authority mode: marked, but the fork's host is not routable here
    /// (no route, `PassthroughCluster`, `BlackHoleCluster`), or a recent
    /// request found so.
    ForkUnknown,
    /// Valid routing key, no sandbox forks this destination for it.
    Baseline,
    /// No routing key in any carrier.
    NoKey,
    /// A routing key that failed validation.
    InvalidKey,
    /// A trusted incoming route header left in place.
    AlreadyRouted,
    /// Baseline because the RouteService could not answer (fail open).
    FailOpen,
    /// Baseline untouched because the configuration was refused (the
    /// plugin runs as a pass-through until a valid one arrives).
    Passthrough,
    /// A client-supplied route header removed.
    SpoofedHeaderRemoved,
    /// A configuration refused in `on_configure`.
    ConfigRejected,
    /// Answered by the synced (or static) table.
    TableHit,
    /// Answered by the key cache.
    CacheHit,
    /// Neither knew the key: the RouteService was needed.
    CacheMiss,
    /// `GET /v1/routes?routingKey=K` calls made.
    Lookup,
    /// Lookups that failed (connection, status, body).
    LookupError,
    /// Lookups that timed out.
    LookupTimeout,
    /// Lookups not made because the worker's lookup budget was spent (the
    /// request went to baseline, counted as `fail_open`).
    LookupShed,
    /// Requests whose routing-key carriers were removed at the mesh's edge
    /// (`edge.stripIncomingKeys`), once per request.
    EdgeKeyStripped,
    /// Signed routing keys let in at the edge (`edge.signedKeys`).
    SignedKeyAccepted,
    /// Signed routing keys refused at the edge (malformed, bad signature,
    /// expired, too far ahead): stripped, the request decided with no key.
    SignedKeyRejected,
    /// Outbound requests without a routing key that got it back from their
    /// trace id (`recovery.enabled`), beside their outcome counter.
    KeyRecovered,
    /// Outbound requests without a routing key whose trace id came in with
    /// one (`recovery` present, `enabled: false`): where a key was lost.
    KeyDropped,
    /// Trace ids recorded with their key by the inbound side.
    RecoveryRecorded,
    /// Recorded trace ids that pushed out an older live one (table full).
    RecoveryEvicted,
    /// Table syncs: new table, not modified (304), failed.
    SyncOk,
    SyncNotModified,
    SyncError,
    /// Of `sync_ok`: a delta (`?since=V`) applied.
    SyncDelta,
    /// Of `sync_ok`: a full table taken (the first sync, after a `410`, or
    /// after a delta that could not be applied).
    SyncFull,
    /// `410 Gone` answers to `?since=V` (the full table is taken next).
    SyncGone,
}

impl Counter {
    /// The request's outcome as operators read it (filter state
    /// `wasm.sandbox_router.outcome`, the opt-in response header): the
    /// counter's name, for the counters that count requests.
    pub fn outcome(self) -> Option<&'static str> {
        Some(match self {
            Counter::Routed => "routed",
            Counter::RouteMissing => "route_missing",
            Counter::ForkUnknown => "fork_unknown",
            Counter::Baseline => "baseline",
            Counter::NoKey => "no_key",
            Counter::InvalidKey => "invalid_key",
            Counter::AlreadyRouted => "already_routed",
            Counter::FailOpen => "fail_open",
            Counter::Passthrough => "passthrough",
            _ => return None,
        })
    }
}

/// Gauges, set by each worker on its tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    TableRoutes,
    TableVersion,
    CacheEntries,
    /// 0 closed, 1 open, 2 half-open.
    BreakerState,
    /// 1 while the configuration in use is valid, 0 while it was refused
    /// (pass-through). Set on every (re)configuration.
    ConfigValid,
}

const COUNTERS: [(Counter, &str); 31] = [
    (Counter::Routed, "sandbox_router.routed"),
    (Counter::RouteMissing, "sandbox_router.route_missing"),
    (Counter::ForkUnknown, "sandbox_router.fork_unknown"),
    (Counter::Baseline, "sandbox_router.baseline"),
    (Counter::NoKey, "sandbox_router.no_key"),
    (Counter::InvalidKey, "sandbox_router.invalid_key"),
    (Counter::AlreadyRouted, "sandbox_router.already_routed"),
    (Counter::FailOpen, "sandbox_router.fail_open"),
    (Counter::Passthrough, "sandbox_router.passthrough"),
    (
        Counter::SpoofedHeaderRemoved,
        "sandbox_router.spoofed_header_removed",
    ),
    (Counter::ConfigRejected, "sandbox_router.config_rejected"),
    (Counter::TableHit, "sandbox_router.table_hit"),
    (Counter::CacheHit, "sandbox_router.cache_hit"),
    (Counter::CacheMiss, "sandbox_router.cache_miss"),
    (Counter::Lookup, "sandbox_router.lookup"),
    (Counter::LookupError, "sandbox_router.lookup_error"),
    (Counter::LookupTimeout, "sandbox_router.lookup_timeout"),
    (Counter::LookupShed, "sandbox_router.lookup_shed"),
    (Counter::EdgeKeyStripped, "sandbox_router.edge_key_stripped"),
    (
        Counter::SignedKeyAccepted,
        "sandbox_router.signed_key_accepted",
    ),
    (
        Counter::SignedKeyRejected,
        "sandbox_router.signed_key_rejected",
    ),
    (Counter::KeyRecovered, "sandbox_router.key_recovered"),
    (Counter::KeyDropped, "sandbox_router.key_dropped"),
    (
        Counter::RecoveryRecorded,
        "sandbox_router.recovery_recorded",
    ),
    (Counter::RecoveryEvicted, "sandbox_router.recovery_evicted"),
    (Counter::SyncOk, "sandbox_router.sync_ok"),
    (Counter::SyncNotModified, "sandbox_router.sync_not_modified"),
    (Counter::SyncError, "sandbox_router.sync_error"),
    (Counter::SyncDelta, "sandbox_router.sync_delta"),
    (Counter::SyncFull, "sandbox_router.sync_full"),
    (Counter::SyncGone, "sandbox_router.sync_gone"),
];

const GAUGES: [(Gauge, &str); 5] = [
    (Gauge::TableRoutes, "sandbox_router.table_routes"),
    (Gauge::TableVersion, "sandbox_router.table_version"),
    (Gauge::CacheEntries, "sandbox_router.cache_entries"),
    (Gauge::BreakerState, "sandbox_router.breaker_state"),
    (Gauge::ConfigValid, "sandbox_router.config_valid"),
];

/// How often each worker adds its counts to Envoy's counters, at most: the
/// root context ticks at least this often.
pub const FLUSH_PERIOD_MS: u64 = 100;

/// Metric ids defined with the host (a metric the host refused is skipped),
/// and the counts not yet added to Envoy's counters.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    counters: [Option<u32>; COUNTERS.len()],
    gauges: [Option<u32>; GAUGES.len()],
    pending: [Cell<u64>; COUNTERS.len()],
}

impl Metrics {
    pub fn define() -> Self {
        let mut metrics = Metrics::default();
        for (slot, (_, name)) in metrics.counters.iter_mut().zip(COUNTERS) {
            *slot = host::define_metric(MetricType::Counter, name);
        }
        for (slot, (_, name)) in metrics.gauges.iter_mut().zip(GAUGES) {
            *slot = host::define_metric(MetricType::Gauge, name);
        }
        metrics
    }

    /// Counts one, in the VM: Envoy's counter has it after the next
    /// [`Metrics::flush`].
    pub fn increment(&self, counter: Counter) {
        // `COUNTERS` is in the enum's order (a test holds it so).
        if let Some(pending) = self.pending.get(counter as usize) {
            pending.set(pending.get().saturating_add(1));
        }
    }

    /// Adds the counts made since the last flush to Envoy's counters (on
    /// the tick, and before a new configuration replaces these metrics).
    /// The module has no callback when its VM goes away (`proxy_on_done`
    /// would cost every request a call into the VM, `crate::exports`): the
    /// counts of that VM's last tick period are not added.
    pub fn flush(&self) {
        for (id, pending) in self.counters.iter().zip(&self.pending) {
            let count = pending.take();
            if let (Some(id), true) = (id, count > 0) {
                host::increment_metric(*id, i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
    }

    pub fn set(&self, gauge: Gauge, value: u64) {
        let id = self.gauges.get(gauge as usize).copied().flatten();
        if let Some(id) = id {
            host::record_metric(id, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_are_in_the_enums_order() {
        for (index, (counter, _)) in COUNTERS.iter().enumerate() {
            assert_eq!(*counter as usize, index, "{counter:?}");
        }
        for (index, (gauge, _)) in GAUGES.iter().enumerate() {
            assert_eq!(*gauge as usize, index, "{gauge:?}");
        }
    }
}
