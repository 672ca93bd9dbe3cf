//! One request: read the inputs, ask the core, apply its decision, count.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use sandbox_router_core::config::FilterConfig;
use sandbox_router_core::decision::{self, Decision, Marking};

use crate::host;
use crate::metrics::{Counter, Metrics};

pub struct RequestFilter {
    config: Rc<FilterConfig>,
    metrics: Rc<Metrics>,
}

impl RequestFilter {
    pub fn new(config: Rc<FilterConfig>, metrics: Rc<Metrics>) -> Self {
        RequestFilter { config, metrics }
    }

    fn route(&self) {
        let headers = host::request_headers();
        let inspection = decision::inspect(&self.config, &headers);
        let mut headers_changed = false;
        if inspection.spoofed_route_header {
            headers_changed |= host::remove_request_header(&self.config.route_header).is_ok();
            self.metrics.increment(Counter::SpoofedHeaderRemoved);
        }
        let authority = headers
            .iter()
            .find(|(name, _)| name == ":authority")
            .map(|(_, value)| value.as_slice());
        let cluster = host::route_cluster_name();
        let table = &self.config.static_routes;
        let decision = decision::decide(
            &self.config,
            table,
            &inspection,
            cluster.as_deref(),
            authority,
        );
        let counter = match decision {
            Decision::NoKey => Counter::NoKey,
            Decision::InvalidKey(_) => Counter::InvalidKey,
            Decision::Baseline => Counter::Baseline,
            Decision::AlreadyRouted => Counter::AlreadyRouted,
            Decision::Routed(marking) => {
                headers_changed |= self.mark(&marking);
                Counter::Routed
            }
        };
        self.metrics.increment(counter);
        if headers_changed {
            // Route selection ran before this filter; make it run again.
            host::clear_route_cache();
        }
    }

    /// Marks a routed request; `true` if any header changed.
    fn mark(&self, marking: &Marking<'_>) -> bool {
        let sandbox = &marking.target.sandbox;
        let mut changed = match host::set_request_header(&self.config.route_header, sandbox) {
            Ok(()) => true,
            Err(status) => {
                log::warn!(
                    "sandbox-router: could not set {}: {status:?}",
                    self.config.route_header
                );
                false
            }
        };
        if let Some(authority) = &marking.authority {
            changed |= host::set_request_header(":authority", authority).is_ok();
        }
        log::debug!(
            "sandbox-router: routed to sandbox {sandbox} ({})",
            marking.target.target
        );
        changed
    }
}

impl Context for RequestFilter {}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.route();
        Action::Continue
    }
}
