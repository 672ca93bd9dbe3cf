//! The Envoy of the flows: a sidecar-shaped Envoy (the e2e harness's
//! Istio-shaped bootstrap) running the release filter, configured with a
//! RouteService, in front of:
//!
//! - `orders-api` (the producer), which the traffic driver calls;
//! - `orders-worker` and its fork `orders-worker-pr-42` (the push
//!   receivers), which the relay calls: a VirtualService-style route sends
//!   `x-sandbox-route: pr-42` to the fork, everything else to the baseline;
//! - `routeservice.sandbox-system` (the filter's table sync and lookups).
//!
//! Services without an endpoint in a run are left out.

use std::net::SocketAddr;

use sandbox_router_e2e::bootstrap::{
    HeaderRoute, MeshService, SidecarBootstrap, WasmPlugin, Workload, LISTENER_NAME,
};
use sandbox_router_e2e::envoy::{self, Envoy, RunFiles};
use sandbox_router_e2e::mesh::{PLUGIN_NAME, ROUTE_HEADER};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::message::{fqdn, NAMESPACE, PRODUCER, SANDBOX, WORKLOAD};
use crate::timings::Timings;

const ROUTE_SERVICE: &str = "routeservice";
const ROUTE_SERVICE_NAMESPACE: &str = "sandbox-system";

/// Where each service of the flows listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub route_service: SocketAddr,
    pub producer: SocketAddr,
    /// The push receivers: baseline and fork.
    pub receivers: Option<(SocketAddr, SocketAddr)>,
}

/// A running Envoy and its listener.
#[derive(Debug)]
pub struct FlowEnvoy {
    envoy: Envoy,
    listener: SocketAddr,
}

impl FlowEnvoy {
    /// Starts Envoy (run files under `target/e2e-runs/<label>-...`).
    pub fn start(label: &str, endpoints: Endpoints, timings: Timings) -> Result<Self> {
        let dir = sandbox_router_e2e::new_run_dir(label).map_err(Error::harness)?;
        let files = RunFiles::in_dir(&dir);
        let bootstrap = bootstrap(endpoints, timings, &files)?;
        let envoy = Envoy::start(&bootstrap.to_json(), files).map_err(Error::harness)?;
        let listener = envoy.listener_addr(LISTENER_NAME).map_err(Error::harness)?;
        Ok(FlowEnvoy { envoy, listener })
    }

    /// The outbound listener the driver and the relay send to.
    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    pub fn envoy(&self) -> &Envoy {
        &self.envoy
    }

    /// A plugin counter (`sandbox_router.<name>`), 0 when undefined.
    pub fn counter(&self, name: &str) -> Result<u64> {
        let value = self
            .envoy
            .plugin_counter(&format!("sandbox_router.{name}"))
            .map_err(Error::harness)?;
        Ok(value.unwrap_or(0))
    }

    /// Plugin failures found in Envoy's log (must be none).
    pub fn plugin_problems(&self) -> Result<Vec<String>> {
        let log = self.envoy.log().map_err(Error::harness)?;
        Ok(sandbox_router_e2e::envoy_log::plugin_problems(&log)
            .into_iter()
            .map(str::to_owned)
            .collect())
    }
}

/// The filter's configuration: header mode, namespace `shop`, the
/// RouteService cluster with the run's sync timings.
pub fn plugin_config(timings: Timings) -> Value {
    json!({
        "mode": "header",
        "namespace": NAMESPACE,
        "routeService": {
            "cluster": sandbox_router_e2e::bootstrap::cluster_name(&route_service_fqdn()),
            "authority": route_service_fqdn(),
            "timeoutMs": 1000,
            "syncIntervalMs": timings.sync_interval_ms,
            "cacheTtlMs": timings.cache_ttl_ms,
            "negativeCacheTtlMs": timings.negative_ttl_ms,
            "maxEntries": 10000,
        },
    })
}

fn route_service_fqdn() -> String {
    format!("{ROUTE_SERVICE}.{ROUTE_SERVICE_NAMESPACE}.svc.cluster.local")
}

fn bootstrap(endpoints: Endpoints, timings: Timings, files: &RunFiles) -> Result<SidecarBootstrap> {
    let fork = format!("{WORKLOAD}-{SANDBOX}");
    let mut services = vec![service(PRODUCER, NAMESPACE, endpoints.producer)];
    let mut header_routes = Vec::new();
    if let Some((baseline, forked)) = endpoints.receivers {
        services.push(service(WORKLOAD, NAMESPACE, baseline));
        services.push(service(&fork, NAMESPACE, forked));
        header_routes.push(HeaderRoute {
            name: format!("sandbox-{SANDBOX}"),
            service: fqdn(WORKLOAD),
            header: ROUTE_HEADER.to_owned(),
            value: SANDBOX.to_owned(),
            target: fqdn(&fork),
        });
    }
    Ok(SidecarBootstrap {
        workload: Workload {
            name: "push-relay".to_owned(),
            namespace: NAMESPACE.to_owned(),
        },
        listener_port: 0,
        admin_port: 0,
        services,
        header_routes,
        plugin: WasmPlugin {
            name: PLUGIN_NAME.to_owned(),
            wasm_path: envoy::plugin_wasm().map_err(Error::harness)?,
            configuration: plugin_config(timings).to_string(),
            ecds_file: None,
            vm_env: Vec::new(),
        },
        access_log: files.access_log(),
        inbound: None,
        route_service: Some(service(
            ROUTE_SERVICE,
            ROUTE_SERVICE_NAMESPACE,
            endpoints.route_service,
        )),
        // Every request of these flows names a known host; one that did not
        // would leave the mesh here, where nothing listens (503).
        passthrough: SocketAddr::from(([127, 0, 0, 1], 9)),
    })
}

fn service(name: &str, namespace: &str, endpoint: SocketAddr) -> MeshService {
    // A made-up ClusterIP per service (Istio lists it as a route domain;
    // nothing listens there), distinct by the endpoint's port.
    let [hi, lo] = endpoint.port().to_be_bytes();
    MeshService {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        cluster_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 97, hi, lo)),
        endpoint,
    }
}
