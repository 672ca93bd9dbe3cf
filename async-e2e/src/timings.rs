//! The sync and cache timings of a run, the same for the filter and the
//! consumer clients (shorter than the defaults, so a run is short), and the
//! client configuration that follows from them.

use std::time::Duration;

use sandbox_router_consumer::{CachePolicy, ClientConfig};

use crate::error::{Error, Result};
use crate::message::{fqdn, WORKLOAD};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Table sync interval (`syncIntervalMs`).
    pub sync_interval_ms: u64,
    /// "No such key" answers live this long (`negativeCacheTtlMs`).
    pub negative_ttl_ms: u64,
    /// Single-key answers live this long (`cacheTtlMs`).
    pub cache_ttl_ms: u64,
}

impl Timings {
    /// What the end-to-end runs use.
    pub const RUN: Timings = Timings {
        sync_interval_ms: 1000,
        negative_ttl_ms: 500,
        cache_ttl_ms: 30_000,
    };

    /// The longest a sandbox change can stay unseen by one client: a
    /// deletion waits for the next sync; a creation for the next sync or the
    /// end of a cached "no such key", whichever comes first. Plus `slack`
    /// for the fetch itself and a loaded machine.
    pub fn window_bound_ms(&self, slack_ms: u64) -> u64 {
        self.sync_interval_ms.max(self.negative_ttl_ms) + slack_ms
    }

    /// The client configuration of the workload's consumer `sandbox`.
    pub fn client_config(&self, server: &str, sandbox: Option<&str>) -> Result<ClientConfig> {
        let config = ClientConfig::new(server, &fqdn(WORKLOAD), sandbox)
            .and_then(|c| c.with_sync_interval(Duration::from_millis(self.sync_interval_ms)))
            .and_then(|c| c.with_timeout(Duration::from_millis(1000)))
            .map_err(Error::harness)?;
        Ok(config.with_cache(CachePolicy {
            ttl_ms: self.cache_ttl_ms,
            negative_ttl_ms: self.negative_ttl_ms,
            max_entries: 10_000,
        }))
    }
}
