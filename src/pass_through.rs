//! A request while the configuration is refused: nothing is routed, and a
//! client-supplied route header is removed (so a client cannot pick a route
//! by sending it), with the route cache cleared as on the routing path.
//! What to remove is the core's [`PassThrough`].

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use sandbox_router_core::config::PassThrough;

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
        if self.pass.has_route_header(&host::request_headers()) {
            // Route selection ran with the client's header: run it again.
            host::reselect_route_if(host::remove_request_header(&self.pass.route_header).is_ok());
            self.metrics.increment(Counter::SpoofedHeaderRemoved);
        }
        self.metrics.increment(Counter::Passthrough);
        Action::Continue
    }
}
