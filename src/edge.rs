//! At the mesh's edge: takes the routing-key carriers out of the request
//! (`edge.stripIncomingKeys`, policy in [`sandbox_router_core::edge`])
//! before the key is read, so the request is decided with no key.

use proxy_wasm::types::Bytes;
use sandbox_router_core::carrier::KeyCarriers;
use sandbox_router_core::config::FilterConfig;
use sandbox_router_core::edge::{self, BAGGAGE};

use crate::host;
use crate::metrics::{Counter, Metrics};

/// Strips the request and `headers` (the filter's copy of them) alike;
/// `true` if a header changed (the caller clears the route cache).
pub fn strip_incoming_keys(
    config: &FilterConfig,
    headers: &mut Vec<(String, Bytes)>,
    metrics: &Metrics,
) -> bool {
    if !config.strips_incoming_keys() {
        return false;
    }
    strip_carriers(&config.carriers, headers, metrics)
}

/// Takes every carrier of `carriers` out of the request and `headers`
/// alike (also while a refused configuration passes traffic through at the
/// edge); `true` if a header changed.
pub fn strip_carriers(
    carriers: &KeyCarriers,
    headers: &mut Vec<(String, Bytes)>,
    metrics: &Metrics,
) -> bool {
    let strip = edge::strip_incoming_keys(carriers, headers);
    if strip.is_empty() {
        return false;
    }
    if let Some(lines) = &strip.baggage {
        let _ = host::remove_request_header(BAGGAGE);
        for line in lines {
            let _ = host::add_request_header(BAGGAGE, line);
        }
    }
    for name in &strip.remove {
        let _ = host::remove_request_header(name);
    }
    strip.apply_to(headers);
    metrics.increment(Counter::EdgeKeyStripped);
    true
}
