//! The filter's Envoy counters. Envoy shows them in `/stats` with the
//! `wasmcustom.` prefix, e.g. `wasmcustom.sandbox_router.routed`.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// One counter per request outcome, plus configuration rejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Sent to a sandbox.
    Routed,
    /// Valid routing key, no sandbox forks this destination for it.
    Baseline,
    /// No routing key in any carrier.
    NoKey,
    /// A routing key that failed validation.
    InvalidKey,
    /// A client-supplied route header removed.
    SpoofedHeaderRemoved,
    /// A trusted incoming route header left in place.
    AlreadyRouted,
    /// A configuration refused in `on_configure`.
    ConfigRejected,
}

impl Counter {
    const ALL: [Counter; 7] = [
        Counter::Routed,
        Counter::Baseline,
        Counter::NoKey,
        Counter::InvalidKey,
        Counter::SpoofedHeaderRemoved,
        Counter::AlreadyRouted,
        Counter::ConfigRejected,
    ];

    fn name(self) -> &'static str {
        match self {
            Counter::Routed => "sandbox_router.routed",
            Counter::Baseline => "sandbox_router.baseline",
            Counter::NoKey => "sandbox_router.no_key",
            Counter::InvalidKey => "sandbox_router.invalid_key",
            Counter::SpoofedHeaderRemoved => "sandbox_router.spoofed_header_removed",
            Counter::AlreadyRouted => "sandbox_router.already_routed",
            Counter::ConfigRejected => "sandbox_router.config_rejected",
        }
    }
}

/// Metric ids defined with the host; a counter the host refused is skipped.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    ids: [Option<u32>; Counter::ALL.len()],
}

impl Metrics {
    pub fn define() -> Self {
        let mut metrics = Metrics::default();
        for (slot, counter) in metrics.ids.iter_mut().zip(Counter::ALL) {
            *slot = hostcalls::define_metric(MetricType::Counter, counter.name()).ok();
        }
        metrics
    }

    pub fn increment(&self, counter: Counter) {
        let id = Counter::ALL
            .iter()
            .position(|c| *c == counter)
            .and_then(|index| self.ids.get(index).copied().flatten());
        if let Some(id) = id {
            // A failed increment loses one count; it must not fail a request.
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}
