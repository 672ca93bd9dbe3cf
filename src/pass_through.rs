//! A request while the configuration is refused: nothing is routed, and a
//! client-supplied route header is removed (so a client cannot pick a route
//! by sending it), with the route cache cleared as on the routing path.
//! At the mesh's edge the routing-key carriers are stripped too, so a
//! refused configuration does not let keys from outside in. What to remove
//! is the core's [`PassThrough`].

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use sandbox_router_core::config::PassThrough;

use crate::edge;
use crate::host;
use crate::metrics::{Counter, Metrics};

pub struct PassThroughFilter {
    pass: Rc<PassThrough>,
    metrics: Rc<Metrics>,
}

impl PassThroughFilter {
    pub fn new(pass: Rc<PassThrough>, metrics: Rc<Metrics>) -> Self {
        PassThroughFilter { pass, metrics }
    }
}

impl Context for PassThroughFilter {}

impl HttpContext for PassThroughFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let mut headers = host::request_headers();
        // At the edge, keys from outside stay out even now.
        let mut changed = match &self.pass.strip {
            Some(carriers) => edge::strip_carriers(carriers, &mut headers, &self.metrics),
            None => false,
        };
        if self.pass.has_route_header(&headers) {
            changed |= host::remove_request_header(&self.pass.route_header).is_ok();
            self.metrics.increment(Counter::SpoofedHeaderRemoved);
        }
        // Route selection ran with the client's headers: run it again.
        host::reselect_route_if(changed);
        self.metrics.increment(Counter::Passthrough);
        host::set_filter_state(crate::worker::OUTCOME_STATE, "passthrough");
        Action::Continue
    }
}
