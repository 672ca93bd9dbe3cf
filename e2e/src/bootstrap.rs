//! An Envoy bootstrap shaped like the one Istio gives a caller's sidecar.
//!
//! The point is that the plugin sees the same world here as in a mesh, so the
//! same `pluginConfig` works in both. What Istio would send over xDS is
//! written inline (static resources):
//!
//! | Istio (outbound, via xDS)                                | here |
//! |----------------------------------------------------------|------|
//! | listener `0.0.0.0_8080`, reached through the 15001 redirect | listener `0.0.0.0_8080` bound to `127.0.0.1:<port>` |
//! | RDS route config `8080`, one virtual host per service     | inline route config `8080`, same virtual hosts and domains |
//! | VirtualService match on a header → subset / other host    | a header-match route before the default route |
//! | EDS cluster `outbound\|8080\|\|<fqdn>`                     | STATIC cluster of that name, endpoint on loopback |
//! | WasmPlugin → ECDS `envoy.filters.http.wasm`, before router | the same filter inline, same `configuration` wrapping; or over ECDS from a file Envoy watches ([`WasmPlugin::ecds_file`]), with Istio's `initial_fetch_timeout: 0s` |
//! | node metadata `NAMESPACE`, `WORKLOAD_NAME`, ...           | the same keys |
//! | EDS cluster `outbound\|8080\|\|routeservice.sandbox-system...` | STATIC cluster of that name (the plugin calls it) |
//!
//! The cors and fault filters sit before the plugin as in Istio's chain; they
//! look up the route early, so the plugin really has to clear the route cache
//! for its header change to count.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{json, Value};

/// The port every demo service exposes (the `8080` in `outbound|8080||...`).
pub const SERVICE_PORT: u16 = 8080;

/// Istio's DNS suffix.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// A Kubernetes service as the sidecar knows it.
#[derive(Debug, Clone)]
pub struct MeshService {
    /// Short name, e.g. `catalog` or `catalog-pr-42`.
    pub name: String,
    /// Namespace, e.g. `demo`.
    pub namespace: String,
    /// Where its (single) endpoint listens.
    pub endpoint: SocketAddr,
}

impl MeshService {
    /// `<name>.<namespace>.svc.cluster.local`.
    pub fn fqdn(&self) -> String {
        format!("{}.{}.{CLUSTER_DOMAIN}", self.name, self.namespace)
    }

    /// Istio's outbound cluster name, `outbound|8080||<fqdn>`.
    pub fn cluster_name(&self) -> String {
        cluster_name(&self.fqdn())
    }

    /// The `:authority` values Istio's virtual host accepts for a caller in
    /// the same namespace: FQDN, `<name>.<ns>.svc`, `<name>.<ns>`, `<name>`,
    /// each with and without the port.
    pub fn domains(&self) -> Vec<String> {
        let names = [
            self.fqdn(),
            format!("{}.{}.svc", self.name, self.namespace),
            format!("{}.{}", self.name, self.namespace),
            self.name.clone(),
        ];
        names
            .iter()
            .flat_map(|name| [name.clone(), format!("{name}:{SERVICE_PORT}")])
            .collect()
    }
}

/// `outbound|8080||<fqdn>`.
pub fn cluster_name(fqdn: &str) -> String {
    format!("outbound|{SERVICE_PORT}||{fqdn}")
}

/// A VirtualService rule: requests to `service` carrying `header: value` go
/// to `target` (both FQDNs).
#[derive(Debug, Clone)]
pub struct HeaderRoute {
    /// Virtual host (service FQDN) the rule belongs to.
    pub service: String,
    /// Header name, e.g. `x-sandbox-route`.
    pub header: String,
    /// Exact value, e.g. `pr-42`.
    pub value: String,
    /// FQDN of the service that gets the request.
    pub target: String,
}

/// The plugin as a WasmPlugin would deliver it.
#[derive(Debug, Clone)]
pub struct WasmPlugin {
    /// Filter and plugin name; Istio uses `<namespace>.<WasmPlugin name>`.
    pub name: String,
    /// The `.wasm` file.
    pub wasm_path: PathBuf,
    /// The plugin configuration, JSON text (`pluginConfig`).
    pub configuration: String,
    /// Deliver the filter over ECDS, as Istio does, from this file (a
    /// `DiscoveryResponse`, see [`ecds_response`]) instead of inline. Envoy
    /// watches it: replacing it (by a rename) reconfigures the plugin. The
    /// listener waits for the first good answer (`initial_fetch_timeout:
    /// 0s`, as Istio sets it), so a refused filter config keeps it down.
    pub ecds_file: Option<PathBuf>,
}

/// The caller's workload, as Istio describes it in the node metadata.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Workload (deployment) name, e.g. `frontend`.
    pub name: String,
    /// Its namespace, e.g. `demo`.
    pub namespace: String,
}

/// Everything the sidecar bootstrap is made from.
#[derive(Debug, Clone)]
pub struct SidecarBootstrap {
    /// The caller.
    pub workload: Workload,
    /// Outbound listener port on 127.0.0.1 (`0`: any free port).
    pub listener_port: u16,
    /// Admin port on 127.0.0.1 (`0`: any free port).
    pub admin_port: u16,
    /// Every service the sidecar can reach (baselines and forks).
    pub services: Vec<MeshService>,
    /// VirtualService header rules, tried before each service's default route.
    pub header_routes: Vec<HeaderRoute>,
    /// The plugin under test.
    pub plugin: WasmPlugin,
    /// Where Envoy writes its access log.
    pub access_log: PathBuf,
    /// The RouteService, reached by the plugin through its cluster
    /// `outbound|8080||<fqdn>` (`dispatch_http_call`), as Istio would give
    /// the sidecar for a service in another namespace. Only the cluster:
    /// no request is routed to it by host.
    pub route_service: Option<MeshService>,
}

/// Name of the outbound listener, as Istio names it.
pub const LISTENER_NAME: &str = "0.0.0.0_8080";

impl SidecarBootstrap {
    /// The bootstrap as JSON (Envoy reads JSON as YAML).
    pub fn to_json(&self) -> Value {
        json!({
            "node": self.node(),
            "admin": {
                "address": socket_address(self.admin_port),
            },
            "static_resources": {
                "listeners": [self.listener()],
                "clusters": self.services.iter().chain(&self.route_service).map(cluster).collect::<Vec<_>>(),
            },
        })
    }

    fn node(&self) -> Value {
        let Workload { name, namespace } = &self.workload;
        json!({
            "id": format!("sidecar~127.0.0.1~{name}-5d8f7c9b6-x2x7k.{namespace}~{namespace}.{CLUSTER_DOMAIN}"),
            "cluster": format!("{name}.{namespace}"),
            "metadata": {
                "NAMESPACE": namespace,
                "WORKLOAD_NAME": name,
                "CLUSTER_ID": "Kubernetes",
                "MESH_ID": "cluster.local",
                "LABELS": {"app": name},
                "NAME": format!("{name}-5d8f7c9b6-x2x7k"),
            },
        })
    }

    fn listener(&self) -> Value {
        json!({
            "name": LISTENER_NAME,
            "address": socket_address(self.listener_port),
            "traffic_direction": "OUTBOUND",
            "filter_chains": [{
                "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": self.http_connection_manager(),
                }],
            }],
        })
    }

    fn http_connection_manager(&self) -> Value {
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": format!("outbound_{LISTENER_NAME}"),
            "use_remote_address": false,
            "normalize_path": true,
            "stream_idle_timeout": "0s",
            "upgrade_configs": [{"upgrade_type": "websocket"}],
            "route_config": {
                "name": SERVICE_PORT.to_string(),
                "validate_clusters": false,
                "virtual_hosts": self.services.iter().map(|s| self.virtual_host(s)).collect::<Vec<_>>(),
            },
            "access_log": [access_log(&self.access_log)],
            "http_filters": [
                {
                    "name": "envoy.filters.http.cors",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
                },
                {
                    "name": "envoy.filters.http.fault",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"},
                },
                wasm_filter(&self.plugin),
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                },
            ],
        })
    }

    /// One virtual host per service: its VirtualService rules, then the default route.
    fn virtual_host(&self, service: &MeshService) -> Value {
        let fqdn = service.fqdn();
        let mut routes: Vec<Value> = self
            .header_routes
            .iter()
            .filter(|rule| rule.service == fqdn)
            .map(header_route)
            .collect();
        routes.push(route("default", json!({"prefix": "/"}), &fqdn));
        json!({
            "name": format!("{fqdn}:{SERVICE_PORT}"),
            "domains": service.domains(),
            "routes": routes,
            "include_request_attempt_count": true,
        })
    }
}

fn header_route(rule: &HeaderRoute) -> Value {
    let matcher = json!({
        "prefix": "/",
        "case_sensitive": true,
        "headers": [{"name": rule.header, "string_match": {"exact": rule.value}}],
    });
    let name = rule.target.split('.').next().unwrap_or(&rule.target);
    route(name, matcher, &rule.target)
}

/// A route to `fqdn`'s cluster with the timeouts and retries Istio sets by default.
fn route(name: &str, matcher: Value, fqdn: &str) -> Value {
    json!({
        "name": name,
        "match": matcher,
        "route": {
            "cluster": cluster_name(fqdn),
            "timeout": "0s",
            "retry_policy": {
                "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                "num_retries": 2,
                "retry_host_predicate": [{
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
                }],
                "host_selection_retry_max_attempts": "5",
                "retriable_status_codes": [503],
            },
            "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"},
        },
        "decorator": {"operation": format!("{fqdn}:{SERVICE_PORT}/*")},
    })
}

/// The type of the wasm filter's config.
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// The wasm filter in the HTTP filter chain: inline, or by ECDS.
fn wasm_filter(plugin: &WasmPlugin) -> Value {
    match &plugin.ecds_file {
        None => json!({"name": plugin.name, "typed_config": wasm_config(plugin)}),
        Some(path) => json!({
            "name": plugin.name,
            "config_discovery": {
                "config_source": {
                    "path_config_source": {"path": path.display().to_string()},
                    "initial_fetch_timeout": "0s",
                    "resource_api_version": "V3",
                },
                "type_urls": [WASM_TYPE],
            },
        }),
    }
}

/// The ECDS answer that delivers `plugin` (version `version`), the content
/// of [`WasmPlugin::ecds_file`].
pub fn ecds_response(plugin: &WasmPlugin, version: u64) -> Value {
    json!({
        "version_info": version.to_string(),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": plugin.name,
            "typed_config": wasm_config(plugin),
        }],
    })
}

/// The wasm filter's config exactly as Istio renders a WasmPlugin: the
/// plugin config travels as a `google.protobuf.StringValue` holding JSON text.
fn wasm_config(plugin: &WasmPlugin) -> Value {
    json!({
            "@type": WASM_TYPE,
            "config": {
                "name": plugin.name,
                "root_id": "",
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": plugin.wasm_path.display().to_string()}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin.configuration,
                },
            },
    })
}

/// A STATIC stand-in for Istio's EDS cluster of a service.
fn cluster(service: &MeshService) -> Value {
    json!({
        "name": service.cluster_name(),
        "type": "STATIC",
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": {
            "cluster_name": service.cluster_name(),
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": service.endpoint.ip().to_string(),
                "port_value": service.endpoint.port(),
            }}}}]}],
        },
        "circuit_breakers": {"thresholds": [{
            "max_connections": 4_294_967_295_u64,
            "max_pending_requests": 4_294_967_295_u64,
            "max_requests": 4_294_967_295_u64,
            "max_retries": 4_294_967_295_u64,
        }]},
        "metadata": {"filter_metadata": {"istio": {"services": [{
            "host": service.fqdn(),
            "name": service.name,
            "namespace": service.namespace,
        }]}}},
    })
}

fn access_log(path: &std::path::Path) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path.display().to_string(),
            "log_format": {"text_format_source": {"inline_string":
                "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\" authority=%REQ(:AUTHORITY)% route=%ROUTE_NAME% cluster=%UPSTREAM_CLUSTER% status=%RESPONSE_CODE% flags=%RESPONSE_FLAGS% details=%RESPONSE_CODE_DETAILS%\n"
            }},
        },
    })
}

fn socket_address(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}
