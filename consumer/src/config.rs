//! What a consumer client needs to know: where the RouteService is, who the
//! consumer is, where messages carry their routing key, and how often to
//! sync and how long to cache.
//!
//! The defaults are the filter's (`routeService` in INTERFACES section 6), so
//! a consumer and the sidecars in front of it see a sandbox change within
//! the same bounds.

use std::time::Duration;

use sandbox_router_core::carrier::KeyCarriers;
use sandbox_router_core::consumption::Consumer;
use sandbox_router_core::destination::{is_dns1123_label, is_dns_name};
use sandbox_router_core::key_cache::CachePolicy;

use crate::error::ConfigError;

/// The filter's `syncIntervalMs` default.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(5000);
/// One RouteService call, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
/// The filter's cache defaults (`cacheTtlMs`, `negativeCacheTtlMs`, `maxEntries`).
pub const DEFAULT_CACHE: CachePolicy = CachePolicy {
    ttl_ms: 30_000,
    negative_ttl_ms: 2_000,
    max_entries: 10_000,
};

/// A validated client configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `http://host:port`, without a trailing slash.
    pub server: String,
    /// Who decides: the workload (baseline FQDN) and the sandbox, if a fork.
    pub consumer: Consumer,
    /// Where messages carry the routing key (default: baggage
    /// `sd-routing-key`, then `uberctx-`/`ot-baggage-`).
    pub carriers: KeyCarriers,
    /// Time between two table syncs of the background thread.
    pub sync_interval: Duration,
    /// Time limit of one RouteService call.
    pub timeout: Duration,
    /// Single-key answers: positive TTL, negative TTL, capacity.
    pub cache: CachePolicy,
    /// The hand-over grace, if set; `None`: derived from the timings
    /// ([`ClientConfig::handover_grace`]).
    pub handover: Option<Duration>,
}

impl ClientConfig {
    /// A configuration with the defaults. `server` is `http://host[:port]`
    /// (plain HTTP); `workload` a lower-case service FQDN; `sandbox` a
    /// DNS-1123 label, `None` for the baseline consumer.
    pub fn new(server: &str, workload: &str, sandbox: Option<&str>) -> Result<Self, ConfigError> {
        Ok(ClientConfig {
            server: validate_server(server)?,
            consumer: validate_consumer(workload, sandbox)?,
            carriers: KeyCarriers::default(),
            sync_interval: DEFAULT_SYNC_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            cache: DEFAULT_CACHE,
            handover: None,
        })
    }

    /// How long this consumer keeps taking a key's messages after the key
    /// stopped being its own (`sandbox_router_core::handover`): long enough
    /// for the *other* consumers, which lose nothing in that change, to see
    /// it too. They are assumed to run with this client's timings.
    ///
    /// - A fork loses its key when its sandbox is deleted. The baseline sees
    ///   a deletion at its next sync: a table it holds can be
    ///   `sync_interval` plus two fetches old (the fetch that brought it,
    ///   the next one). So `sync_interval + 2 × timeout`.
    /// - The baseline loses a key when a sandbox forks it. A fork sees the
    ///   creation at its next message of that key (lookup on miss), unless
    ///   it cached "no such key" for it: then when that answer expires, plus
    ///   the lookup, or at its next sync, whichever comes first. So
    ///   `min(negative_ttl, sync_interval + timeout) + timeout`.
    ///
    /// A failed sync or lookup keeps a consumer on its old table longer
    /// than this: set a longer grace with [`Self::with_handover_grace`] if
    /// the RouteService is often unreachable.
    pub fn handover_grace(&self) -> Duration {
        if let Some(grace) = self.handover {
            return grace;
        }
        let negative_ttl = Duration::from_millis(self.cache.negative_ttl_ms);
        match self.consumer.sandbox {
            Some(_) => self.sync_interval + self.timeout * 2,
            None => negative_ttl.min(self.sync_interval + self.timeout) + self.timeout,
        }
    }

    /// The same, with this hand-over grace instead of the derived one.
    /// `Duration::ZERO` turns it off: the bare rule, exactly once when all
    /// consumers hold the same table, but a message decided while the fork
    /// has seen a deletion and the baseline not yet (or the baseline a
    /// creation and the fork not yet) is processed by nobody.
    pub fn with_handover_grace(mut self, grace: Duration) -> Self {
        self.handover = Some(grace);
        self
    }

    /// The same, syncing every `interval` (at least 10 ms).
    pub fn with_sync_interval(mut self, interval: Duration) -> Result<Self, ConfigError> {
        self.sync_interval = at_least("sync_interval", interval, Duration::from_millis(10))?;
        Ok(self)
    }

    /// The same, with this time limit per RouteService call (at least 1 ms).
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        self.timeout = at_least("timeout", timeout, Duration::from_millis(1))?;
        Ok(self)
    }

    /// The same, with this cache policy.
    pub fn with_cache(mut self, cache: CachePolicy) -> Self {
        self.cache = cache;
        self
    }

    /// The same, reading the routing key from these carriers.
    pub fn with_carriers(mut self, carriers: KeyCarriers) -> Self {
        self.carriers = carriers;
        self
    }
}

fn validate_server(server: &str) -> Result<String, ConfigError> {
    let trimmed = server.trim_end_matches('/');
    let host = trimmed.strip_prefix("http://").unwrap_or_default();
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
        return Err(ConfigError::new(
            "server",
            "must be http://host[:port] (plain HTTP, no path)",
        ));
    }
    Ok(trimmed.to_owned())
}

fn validate_consumer(workload: &str, sandbox: Option<&str>) -> Result<Consumer, ConfigError> {
    if !is_dns_name(workload) || workload.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ConfigError::new(
            "workload",
            "must be a lower-case DNS name (the baseline service FQDN)",
        ));
    }
    if sandbox.is_some_and(|s| !is_dns1123_label(s)) {
        return Err(ConfigError::new("sandbox", "must be a DNS-1123 label"));
    }
    Ok(Consumer {
        workload: workload.to_owned(),
        sandbox: sandbox.map(str::to_owned),
    })
}

fn at_least(
    field: &'static str,
    value: Duration,
    minimum: Duration,
) -> Result<Duration, ConfigError> {
    if value < minimum {
        return Err(ConfigError::new(
            field,
            format!("must be at least {minimum:?}"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: &str = "orders.shop.svc.cluster.local";

    #[test]
    fn defaults_are_the_filters() {
        let config = ClientConfig::new("http://127.0.0.1:8080/", W, None).unwrap();
        assert_eq!(config.server, "http://127.0.0.1:8080");
        assert_eq!(config.sync_interval, Duration::from_secs(5));
        assert_eq!(config.cache.negative_ttl_ms, 2000);
        assert_eq!(config.consumer.sandbox, None);
    }

    #[test]
    fn the_handover_grace_is_derived_from_the_timings() {
        let base = ClientConfig::new("http://rs", W, None).unwrap();
        let fork = ClientConfig::new("http://rs", W, Some("pr-1")).unwrap();
        // 5 s sync, 1 s timeout, 2 s negative TTL.
        assert_eq!(fork.handover_grace(), Duration::from_secs(7));
        assert_eq!(base.handover_grace(), Duration::from_secs(3));
        let fork = fork
            .with_sync_interval(Duration::from_secs(1))
            .and_then(|c| c.with_timeout(Duration::from_millis(500)))
            .unwrap();
        assert_eq!(fork.handover_grace(), Duration::from_secs(2));
        // A negative TTL longer than a sync: the sync bounds it.
        let base = base.with_cache(CachePolicy {
            negative_ttl_ms: 60_000,
            ..DEFAULT_CACHE
        });
        assert_eq!(base.handover_grace(), Duration::from_secs(7));
        let off = fork.with_handover_grace(Duration::ZERO);
        assert_eq!(off.handover_grace(), Duration::ZERO);
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            ("https://rs:8080", W, None, "server"),
            ("rs:8080", W, None, "server"),
            ("http://", W, None, "server"),
            ("http://rs/v1", W, None, "server"),
            ("http://rs", "Orders.shop", None, "workload"),
            ("http://rs", "10.0.0.1", None, "workload"),
            ("http://rs", W, Some("PR-1"), "sandbox"),
            ("http://rs", W, Some(""), "sandbox"),
        ];
        for (server, workload, sandbox, field) in cases {
            let err = ClientConfig::new(server, workload, sandbox).unwrap_err();
            assert_eq!(err.field, field, "{server} {workload} {sandbox:?}: {err}");
        }
        let config = ClientConfig::new("http://rs", W, Some("pr-1")).unwrap();
        let err = config.with_sync_interval(Duration::ZERO).unwrap_err();
        assert_eq!(err.to_string(), "sync_interval: must be at least 10ms");
    }
}
