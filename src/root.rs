//! The root context: turns the plugin configuration into a
//! [`FilterConfig`] once per (re)configuration and hands it, with the
//! counters, to every request's filter.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use sandbox_router_core::config::FilterConfig;

use crate::filter::RequestFilter;
use crate::host;
use crate::metrics::{Counter, Metrics};

#[derive(Default)]
pub struct Root {
    config: Option<Rc<FilterConfig>>,
    metrics: Rc<Metrics>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.metrics = Rc::new(Metrics::define());
        match FilterConfig::from_json(&host::plugin_configuration()) {
            Ok(config) => {
                log::info!(
                    "sandbox-router: configured: mode {:?}, route header {}, {} static routes, RouteService {}",
                    config.mode,
                    config.route_header,
                    config.static_routes.len(),
                    config.route_service.as_ref().map_or("none", |rs| rs.cluster.as_str()),
                );
                self.config = Some(Rc::new(config));
                true
            }
            Err(error) => {
                // One line naming the field; Envoy then applies the plugin's
                // fail strategy (the config is not used).
                log::error!("sandbox-router: invalid configuration: {error}");
                self.metrics.increment(Counter::ConfigRejected);
                self.config = None;
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(RequestFilter::new(
            config,
            Rc::clone(&self.metrics),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
