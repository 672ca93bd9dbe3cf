//! The root context: turns the plugin configuration into a worker state once
//! per (re)configuration, hands it to every request's filter, and on its
//! tick adds the worker's counts to Envoy's counters and runs the table sync.
//!
//! A configuration that does not parse or validate is refused without
//! failing `on_configure`: Envoy would refuse the whole filter config (and a
//! new Istio sidecar would wait for it forever). The plugin then runs as a
//! pass-through until a valid configuration arrives.

use std::rc::Rc;

use sandbox_router_core::config::{config_fingerprint, last_config_key, FilterConfig, PassThrough};
use sandbox_router_core::table_sync::tick_period_ms;

use crate::host;
use crate::metrics::{Counter, Gauge, Metrics, FLUSH_PERIOD_MS};
use crate::table_sync::TableSync;
use crate::worker::Worker;

/// What requests get, from the last configuration.
#[derive(Clone)]
pub enum Mode {
    /// A valid configuration: requests are routed.
    Routing(Rc<Worker>),
    /// A refused one: every request goes to baseline.
    PassThrough {
        pass: Rc<PassThrough>,
        metrics: Rc<Metrics>,
    },
}

#[derive(Default)]
pub struct Root {
    mode: Option<Mode>,
    sync: Option<TableSync>,
}

impl Root {
    /// Adds the counts of the configuration in use to Envoy's counters.
    fn flush(&self) {
        match &self.mode {
            Some(Mode::Routing(worker)) => worker.metrics.flush(),
            Some(Mode::PassThrough { metrics, .. }) => metrics.flush(),
            None => {}
        }
    }

    /// What requests get now; `None` before the first configuration.
    pub fn mode(&self) -> Option<&Mode> {
        self.mode.as_ref()
    }

    /// The answer to the table sync's call.
    pub fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize) {
        if let (Some(sync), Some(Mode::Routing(worker))) = (&mut self.sync, &self.mode) {
            sync.on_response(worker, token_id, num_headers, body_size);
        }
    }

    /// Takes the plugin configuration. A refused one turns the plugin into
    /// a pass-through (see the module's comment): the host is never told
    /// no.
    pub fn on_configure(&mut self) {
        // What the previous configuration counted is not lost with it.
        self.flush();
        let metrics = Rc::new(Metrics::define());
        let json = host::plugin_configuration();
        // Whether this VM is the first in this Envoy to get this config.
        let first = host::first_to_store(
            &last_config_key(&host::plugin_name()),
            &config_fingerprint(&json),
        );
        let config = match FilterConfig::from_json_with_env(&json, vm_env) {
            Ok(config) => config,
            Err(error) => {
                let pass = PassThrough::for_refused(&json);
                // One line naming the field, and one count, per Envoy.
                // Returning false would make Envoy refuse the filter config
                // whatever the fail policy.
                if first {
                    log::error!(
                        "sandbox-router: invalid configuration: {error}; passing every request \
                         to baseline (removing {}{}) until a valid configuration arrives",
                        pass.route_header,
                        if pass.strip.is_some() {
                            " and incoming routing keys"
                        } else {
                            ""
                        }
                    );
                    metrics.increment(Counter::ConfigRejected);
                    metrics.flush();
                }
                metrics.set(Gauge::ConfigValid, 0);
                host::set_tick_period(FLUSH_PERIOD_MS);
                self.sync = None;
                self.mode = Some(Mode::PassThrough {
                    pass: Rc::new(pass),
                    metrics,
                });
                return;
            }
        };
        log::info!(
            "sandbox-router: configured: mode {:?}, route header {}, {} static routes, RouteService {}",
            config.mode,
            config.route_header,
            config.static_routes.len(),
            config.route_service.as_ref().map_or("none", |rs| rs.cluster.as_str()),
        );
        metrics.set(Gauge::ConfigValid, 1);
        // The sync keeps its own schedule (it fetches when its interval is
        // up); the tick is as often as either needs.
        let sync_tick_ms = config
            .route_service
            .as_ref()
            .map_or(FLUSH_PERIOD_MS, |rs| tick_period_ms(rs.sync_interval_ms));
        host::set_tick_period(sync_tick_ms.min(FLUSH_PERIOD_MS));
        self.sync = config.route_service.clone().map(TableSync::new);
        self.mode = Some(Mode::Routing(Rc::new(Worker::new(
            Rc::new(config),
            metrics,
            &host::plugin_name(),
        ))));
    }

    pub fn on_tick(&mut self) {
        if let (Some(sync), Some(Mode::Routing(worker))) = (&mut self.sync, &self.mode) {
            sync.on_tick(worker);
        }
        self.flush();
    }
}

/// A variable of the VM's environment (Envoy's `vm_config.environment_variables`,
/// Istio's `WasmPlugin.vmConfig.env`), as WASI hands it to the module.
fn vm_env(name: &str) -> Option<Vec<u8>> {
    std::env::var_os(name).map(|value| value.into_encoded_bytes())
}
