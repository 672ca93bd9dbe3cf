//! The sync and cache timings of a run, the same for the filter and the
//! consumer clients (shorter than the defaults, so a run is short), and the
//! client configuration that follows from them.

use std::time::Duration;

use sandbox_router_consumer::{CachePolicy, ClientConfig};

use crate::error::{Error, Result};
use crate::message::{fqdn, WORKLOAD};

/// One RouteService call of a consumer client. Loopback, so short; it
/// also sets the hand-over graces (sync + 2 × 500 ms = 2 s for the fork,
/// negative TTL + 500 ms = 1 s for the baseline), which must end within
/// the run's phases for the windows to close.
const TIMEOUT_MS: u64 = 500;

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

    /// The same for pull consumers, whose windows also hold the hand-over
    /// grace: the consumer that lost the key keeps its messages that long
    /// after it saw the change.
    pub fn pull_window_bound_ms(&self, slack_ms: u64) -> Result<u64> {
        let grace = self.handover_grace_ms()?;
        Ok(self.window_bound_ms(slack_ms).saturating_add(grace))
    }

    /// The longer of the two consumers' derived hand-over graces.
    pub fn handover_grace_ms(&self) -> Result<u64> {
        let mut longest = Duration::ZERO;
        for sandbox in [None, Some(crate::message::SANDBOX)] {
            let grace = self
                .client_config("http://127.0.0.1", sandbox)?
                .handover_grace();
            longest = longest.max(grace);
        }
        Ok(u64::try_from(longest.as_millis()).unwrap_or(u64::MAX))
    }

    /// The client configuration of the workload's consumer `sandbox`.
    pub fn client_config(&self, server: &str, sandbox: Option<&str>) -> Result<ClientConfig> {
        let config = ClientConfig::new(server, &fqdn(WORKLOAD), sandbox)
            .and_then(|c| c.with_sync_interval(Duration::from_millis(self.sync_interval_ms)))
            .and_then(|c| c.with_timeout(Duration::from_millis(TIMEOUT_MS)))
            .map_err(Error::harness)?;
        Ok(config.with_cache(CachePolicy {
            ttl_ms: self.cache_ttl_ms,
            negative_ttl_ms: self.negative_ttl_ms,
            max_entries: 10_000,
        }))
    }
}
