//! A request while the configuration is refused: nothing is routed, and a
//! client-supplied route header is removed (so a client cannot pick a route
//! by sending it); Envoy selects the route again, as on the routing path.
//! At the mesh's edge the routing-key carriers are stripped too, so a
//! refused configuration does not let keys from outside in. What to remove
//! is the core's [`PassThrough`].

use sandbox_router_core::config::PassThrough;

use crate::edge;
use crate::host;
use crate::metrics::{Counter, Metrics};

/// A request while the configuration is refused: its only callback.
pub fn on_request_headers(pass: &PassThrough, metrics: &Metrics) {
    let mut headers = host::request_headers();
    // At the edge, keys from outside stay out even now.
    if let Some(carriers) = &pass.strip {
        edge::strip_carriers(carriers, &mut headers, metrics);
    }
    // Route selection ran with the client's headers: removing one makes
    // Envoy run it again (`host`).
    if pass.has_route_header(&headers) {
        let _ = host::remove_request_header(&pass.route_header);
        metrics.increment(Counter::SpoofedHeaderRemoved);
    }
    metrics.increment(Counter::Passthrough);
    host::set_filter_state(crate::worker::OUTCOME_STATE, "passthrough");
}
