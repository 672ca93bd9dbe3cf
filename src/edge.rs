//! At the mesh's edge: takes the routing-key carriers out of the request
//! (`edge.stripIncomingKeys`, policy in [`sandbox_router_core::edge`])
//! before the key is read, so the request is decided with no key; then lets
//! a signed key in (`edge.signedKeys`, policy in
//! [`sandbox_router_core::signed_admission`]).

use sandbox_router_core::carrier::KeyCarriers;
use sandbox_router_core::config::FilterConfig;
use sandbox_router_core::edge::{self, BAGGAGE};
use sandbox_router_core::signed_admission;

use crate::host::{self, Bytes};
use crate::metrics::{Counter, Metrics};

/// Strips the request and `headers` (the filter's copy of them) alike.
pub fn strip_incoming_keys(
    config: &FilterConfig,
    headers: &mut Vec<(String, Bytes)>,
    metrics: &Metrics,
) {
    if config.strips_incoming_keys() {
        strip_carriers(&config.carriers, headers, metrics);
    }
}

/// Takes every carrier of `carriers` out of the request and `headers`
/// alike (also while a refused configuration passes traffic through at the
/// edge). Envoy selects the route again after the change (`host`).
pub fn strip_carriers(
    carriers: &KeyCarriers,
    headers: &mut Vec<(String, Bytes)>,
    metrics: &Metrics,
) {
    let strip = edge::strip_incoming_keys(carriers, headers);
    if strip.is_empty() {
        return;
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
}

/// Lets a signed routing key in (`edge.signedKeys`), after the plain ones
/// were stripped: the request and `headers` are changed alike. Returns the
/// `Set-Cookie` for the response, if any.
pub fn admit_signed_key(
    config: &FilterConfig,
    headers: &mut Vec<(String, Bytes)>,
    metrics: &Metrics,
) -> Option<String> {
    let signed = config.edge.as_ref().and_then(|e| e.signed_keys.as_ref());
    let (Some(signed), Some(verifier)) = (signed, &config.signed_key_verifier) else {
        return None;
    };
    let member = config.carriers.baggage_keys.first()?;
    let now = host::now_ms() / 1000;
    let admission = signed_admission::admit(signed, verifier, member, headers, now);
    let (source, verdict) = admission.verdict.as_ref()?;
    match verdict {
        Ok(key) => {
            metrics.increment(Counter::SignedKeyAccepted);
            log::debug!("sandbox-router: signed key for {key} accepted from the {source:?}");
        }
        Err(error) => {
            metrics.increment(Counter::SignedKeyRejected);
            // The token itself is not logged: it may be forged or a secret.
            log::debug!(
                "sandbox-router: signed key in the {source:?} rejected: {}",
                error.as_str()
            );
        }
    }
    if let Some(path) = &admission.path {
        let _ = host::set_request_header(":path", path);
    }
    if let Some(lines) = &admission.cookie {
        let _ = host::remove_request_header("cookie");
        for line in lines {
            let _ = host::add_request_header("cookie", line);
        }
    }
    if let Some(baggage) = &admission.baggage {
        let _ = host::remove_request_header(BAGGAGE);
        let _ = host::add_request_header(BAGGAGE, baggage);
    }
    admission.apply_to(headers);
    admission.set_cookie
}
