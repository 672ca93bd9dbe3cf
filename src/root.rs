//! The root context: turns the plugin configuration into a worker state once
//! per (re)configuration, hands it to every request's filter, and runs the
//! table sync on its tick.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use sandbox_router_core::config::FilterConfig;
use sandbox_router_core::table_sync::tick_period_ms;

use crate::filter::RequestFilter;
use crate::host;
use crate::metrics::{Counter, Metrics};
use crate::table_sync::TableSync;
use crate::worker::Worker;

#[derive(Default)]
pub struct Root {
    worker: Option<Rc<Worker>>,
    sync: Option<TableSync>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let (Some(sync), Some(worker)) = (&mut self.sync, &self.worker) {
            sync.on_response(worker, token_id, num_headers, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let metrics = Rc::new(Metrics::define());
        let config = match FilterConfig::from_json(&host::plugin_configuration()) {
            Ok(config) => config,
            Err(error) => {
                // One line naming the field; Envoy then applies the plugin's
                // fail strategy (the config is not used).
                log::error!("sandbox-router: invalid configuration: {error}");
                metrics.increment(Counter::ConfigRejected);
                self.worker = None;
                self.sync = None;
                return false;
            }
        };
        log::info!(
            "sandbox-router: configured: mode {:?}, route header {}, {} static routes, RouteService {}",
            config.mode,
            config.route_header,
            config.static_routes.len(),
            config.route_service.as_ref().map_or("none", |rs| rs.cluster.as_str()),
        );
        self.sync = config.route_service.clone().map(|rs| {
            host::set_tick_period(tick_period_ms(rs.sync_interval_ms));
            TableSync::new(rs)
        });
        self.worker = Some(Rc::new(Worker::new(Rc::new(config), metrics)));
        true
    }

    fn on_tick(&mut self) {
        if let (Some(sync), Some(worker)) = (&mut self.sync, &self.worker) {
            sync.on_tick(worker);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = Rc::clone(self.worker.as_ref()?);
        Some(Box::new(RequestFilter::new(context_id, worker)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
