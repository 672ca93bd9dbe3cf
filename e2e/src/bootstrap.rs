//! An Envoy bootstrap shaped like the one Istio gives a caller's sidecar.
//!
//! The point is that the plugin sees the same world here as in a mesh, so the
//! same `pluginConfig` works in both. What Istio would send over xDS is
//! written inline (static resources). `tests/mirror_fidelity.rs` compares
//! this config with what a real istiod generated (`tests/data/`), and
//! `docs/istio.md` ("The mirror and istiod") lists what still differs.
//!
//! | Istio (outbound, via xDS)                                | here |
//! |----------------------------------------------------------|------|
//! | listener `0.0.0.0_8080`, reached through the 15001 redirect | listener `0.0.0.0_8080` bound to `127.0.0.1:<port>` |
//! | RDS route config `8080`, one virtual host per service, `ignore_port_in_host_matching` | inline route config `8080`, same virtual hosts, domains, route names |
//! | VirtualService match on a header → other host              | a header-match route before the default route |
//! | virtual host `allow_any` (`*`) → `PassthroughCluster` (ORIGINAL_DST) | the same virtual host; the cluster is STATIC, to a stand-in for "the address the client dialled" |
//! | EDS cluster `outbound\|8080\|\|<fqdn>`                     | STATIC cluster of that name, endpoint on loopback |
//! | WasmPlugin → ECDS filter `extensions.istio.io/trafficextension/<ns>.<name>~istio-translated-wasmplugin`, first in the chain (phase STATS), `FAIL_OPEN` | the same filter, same place, same `configuration` wrapping; inline or over ECDS from a file Envoy watches ([`WasmPlugin::ecds_file`]), with Istio's `initial_fetch_timeout: 0s` |
//! | node metadata `NAMESPACE`, `WORKLOAD_NAME`, ...           | the same keys |
//! | EDS cluster `outbound\|8080\|\|routeservice.sandbox-system...` | STATIC cluster of that name (the plugin calls it) |
//!
//! Istio puts a STATS-phase plugin before grpc_stats, fault and cors; none
//! of them looks at the route before the plugin has changed the request.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde_json::{json, Value};

/// The port every demo service exposes (the `8080` in `outbound|8080||...`).
pub const SERVICE_PORT: u16 = 8080;

/// Istio's DNS suffix.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// Istio's cluster for traffic to a host it does not know (`allow_any`).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

/// Istio's cluster that drops traffic (`REGISTRY_ONLY`, or a route with no
/// destination left).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// Prefix Istio gives the ECDS resource (and so the HTTP filter) of a
/// WasmPlugin (`pilot/pkg/model/extensions.go`).
pub const TRAFFIC_EXTENSION_PREFIX: &str = "extensions.istio.io/trafficextension/";

/// A Kubernetes service as the sidecar knows it.
#[derive(Debug, Clone)]
pub struct MeshService {
    /// Short name, e.g. `catalog` or `catalog-pr-42`.
    pub name: String,
    /// Namespace, e.g. `demo`.
    pub namespace: String,
    /// Its ClusterIP: Istio adds it to the virtual host's domains. Nothing
    /// listens there; a request with this `Host` reaches [`Self::endpoint`].
    pub cluster_ip: IpAddr,
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

    /// The domains of Istio's virtual host for this service, for a caller in
    /// `caller_namespace`, in istiod's order: FQDN, FQDN with the root dot,
    /// the short name (same namespace only), `<name>.<ns>.svc`,
    /// `<name>.<ns>`, the ClusterIP. No `:port` forms: the route config
    /// ignores the port in host matching, as Istio's does.
    pub fn domains(&self, caller_namespace: &str) -> Vec<String> {
        let fqdn = self.fqdn();
        let with_svc = format!("{}.{}.svc", self.name, self.namespace);
        let with_namespace = format!("{}.{}", self.name, self.namespace);
        let mut domains = vec![fqdn.clone(), format!("{fqdn}.")];
        if self.namespace == caller_namespace {
            domains.extend([self.name.clone(), with_svc, with_namespace]);
        } else {
            domains.extend([with_namespace, with_svc]);
        }
        domains.push(self.cluster_ip.to_string());
        domains
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
    /// The VirtualService's name for this `http` entry, which Istio makes
    /// the route name (`sandbox-pr-42` in `istio-config/sample`).
    pub name: String,
    /// Virtual host (service FQDN) the rule belongs to.
    pub service: String,
    /// Header name, e.g. `x-sandbox-route`.
    pub header: String,
    /// Exact value, e.g. `pr-42`.
    pub value: String,
    /// FQDN of the service that gets the request.
    pub target: String,
}

/// The route name of a VirtualService's last `http` entry, the one to the
/// baseline (`istio-config/sample/virtualservices.yaml`). A host without a
/// VirtualService gets Istio's `default`.
pub const BASELINE_ROUTE: &str = "baseline";

/// The plugin as a WasmPlugin would deliver it.
#[derive(Debug, Clone)]
pub struct WasmPlugin {
    /// The plugin name Istio derives from the WasmPlugin,
    /// `<namespace>.<name>~istio-translated-wasmplugin`; the filter is
    /// named [`Self::filter_name`].
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
    /// The VM's environment (`WasmPlugin.vmConfig.env` with `INLINE`
    /// values, which istiod renders as `environment_variables.key_values`).
    pub vm_env: Vec<(String, String)>,
}

impl WasmPlugin {
    /// The HTTP filter's (and ECDS resource's) name, as istiod names it.
    pub fn filter_name(&self) -> String {
        format!("{TRAFFIC_EXTENSION_PREFIX}{}", self.name)
    }
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
    /// the sidecar for a service in another namespace (with its virtual
    /// host, as Istio has it too).
    pub route_service: Option<MeshService>,
    /// Where [`PASSTHROUGH_CLUSTER`] sends requests. Istio's is an
    /// ORIGINAL_DST cluster: the address the client dialled, which the
    /// iptables redirect keeps. Here the client dials the listener itself,
    /// so that would loop; a fixed address stands in for "outside the mesh".
    pub passthrough: SocketAddr,
    /// The sidecar's inbound side, in front of the workload's own app (for
    /// `recovery`, which needs the plugin on both listeners of one Envoy).
    pub inbound: Option<InboundListener>,
}

/// Name of the outbound listener, as Istio names it.
pub const LISTENER_NAME: &str = "0.0.0.0_8080";

/// Name of the inbound listener (Istio's, with traffic interception).
pub const INBOUND_LISTENER_NAME: &str = "virtualInbound";

/// Istio's cluster for the app behind the sidecar, port 8080.
pub const INBOUND_CLUSTER: &str = "inbound|8080||";

/// An inbound listener shaped like Istio's: `traffic_direction: INBOUND`
/// (Envoy's `xds.listener_direction` 1), every request to the app's cluster,
/// the same plugin (so the same VM and the same shared data) in its chain.
#[derive(Debug, Clone)]
pub struct InboundListener {
    /// Port on 127.0.0.1 (`0`: any free port).
    pub port: u16,
    /// Where the app listens.
    pub app: SocketAddr,
    /// A plugin of its own: the same module with another name and
    /// configuration (Envoy then runs both plugins in one VM per worker,
    /// with a root context each). `None`: the sidecar's plugin.
    pub plugin: Option<WasmPlugin>,
}

impl SidecarBootstrap {
    /// The bootstrap as JSON (Envoy reads JSON as YAML).
    pub fn to_json(&self) -> Value {
        let mut clusters: Vec<Value> = self
            .services
            .iter()
            .chain(&self.route_service)
            .map(cluster)
            .collect();
        clusters.extend([passthrough_cluster(self.passthrough), blackhole_cluster()]);
        let mut listeners = vec![self.listener()];
        if let Some(inbound) = &self.inbound {
            listeners.push(self.inbound_listener(inbound));
            clusters.push(json!({
                "name": INBOUND_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "10s",
                "load_assignment": load_assignment(INBOUND_CLUSTER, inbound.app),
            }));
        }
        json!({
            "node": self.node(),
            "admin": {
                "address": socket_address(self.admin_port),
            },
            "static_resources": {
                "listeners": listeners,
                "clusters": clusters,
            },
        })
    }

    fn inbound_listener(&self, inbound: &InboundListener) -> Value {
        let hcm = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "inbound_0.0.0.0_8080",
            "use_remote_address": false,
            "normalize_path": true,
            "request_id_extension": {"typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                "use_request_id_for_trace_sampling": true,
            }},
            "route_config": {
                "name": INBOUND_CLUSTER,
                "validate_clusters": false,
                "virtual_hosts": [{
                    "name": "inbound|http|8080",
                    "domains": ["*"],
                    "routes": [{
                        "match": {"prefix": "/"},
                        "route": {"cluster": INBOUND_CLUSTER, "timeout": "0s", "max_grpc_timeout": "0s"},
                        "decorator": {"operation": "frontend.demo.svc.cluster.local:8080/*"},
                        "name": "default",
                    }],
                }],
            },
            "access_log": [access_log(&self.access_log)],
            "http_filters": [
                wasm_filter(inbound.plugin.as_ref().unwrap_or(&self.plugin)),
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                },
            ],
        });
        json!({
            "name": INBOUND_LISTENER_NAME,
            "address": socket_address(inbound.port),
            "traffic_direction": "INBOUND",
            "filter_chains": [{
                "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }],
            }],
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

    /// The HTTP connection manager with the settings of Istio's that change
    /// what a request looks like (path handling, 100-continue, upgrades).
    pub fn http_connection_manager(&self) -> Value {
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": format!("outbound_{LISTENER_NAME}"),
            "use_remote_address": false,
            "normalize_path": true,
            "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
            "proxy_100_continue": true,
            "stream_idle_timeout": "0s",
            "upgrade_configs": [{"upgrade_type": "websocket"}],
            "request_id_extension": {"typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                "use_request_id_for_trace_sampling": true,
            }},
            "route_config": self.route_config(),
            "access_log": [access_log(&self.access_log)],
            "http_filters": [
                wasm_filter(&self.plugin),
                {
                    "name": "envoy.filters.http.grpc_stats",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
                        "emit_filter_state": true,
                        "stats_for_all_methods": false,
                    },
                },
                {
                    "name": "envoy.filters.http.fault",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"},
                },
                {
                    "name": "envoy.filters.http.cors",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
                },
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                },
            ],
        })
    }

    /// Route config `8080`: a virtual host per service, sorted by name as
    /// istiod sorts them, then the catch-all `allow_any`.
    pub fn route_config(&self) -> Value {
        let mut services: Vec<&MeshService> =
            self.services.iter().chain(&self.route_service).collect();
        services.sort_by_key(|service| service.fqdn());
        let mut virtual_hosts: Vec<Value> =
            services.into_iter().map(|s| self.virtual_host(s)).collect();
        virtual_hosts.push(allow_any_virtual_host());
        json!({
            "name": SERVICE_PORT.to_string(),
            "virtual_hosts": virtual_hosts,
            "validate_clusters": false,
            "max_direct_response_body_size_bytes": 1_048_576,
            // Istio's: `catalog:8080` and `catalog` match the same virtual
            // host, so the plugin's authority rewrite may keep the port.
            "ignore_port_in_host_matching": true,
        })
    }

    /// One virtual host per service: its VirtualService rules, then the
    /// route to the service itself (named by the VirtualService if it has one).
    fn virtual_host(&self, service: &MeshService) -> Value {
        let fqdn = service.fqdn();
        let rules: Vec<&HeaderRoute> = self
            .header_routes
            .iter()
            .filter(|rule| rule.service == fqdn)
            .collect();
        let virtual_service = (!rules.is_empty()).then(|| virtual_service_path(service));
        let mut routes: Vec<Value> = rules
            .iter()
            .map(|rule| header_route(rule, virtual_service.as_deref()))
            .collect();
        let default_name = if rules.is_empty() {
            "default"
        } else {
            BASELINE_ROUTE
        };
        routes.push(route(
            default_name,
            json!({"prefix": "/"}),
            &fqdn,
            virtual_service.as_deref(),
        ));
        json!({
            "name": format!("{fqdn}:{SERVICE_PORT}"),
            "domains": service.domains(&self.workload.namespace),
            "routes": routes,
            "include_request_attempt_count": true,
        })
    }
}

/// The VirtualService Istio records in a route's metadata; here, as in the
/// demo, one per service named after it.
fn virtual_service_path(service: &MeshService) -> String {
    format!(
        "/apis/networking.istio.io/v1/namespaces/{}/virtual-service/{}",
        service.namespace, service.name
    )
}

/// Istio's catch-all for hosts it does not know (`outboundTrafficPolicy:
/// ALLOW_ANY`, the default): out through [`PASSTHROUGH_CLUSTER`], no retries.
fn allow_any_virtual_host() -> Value {
    json!({
        "name": "allow_any",
        "domains": ["*"],
        "routes": [{
            "match": {"prefix": "/"},
            "route": {"cluster": PASSTHROUGH_CLUSTER, "timeout": "0s", "max_grpc_timeout": "0s"},
            "name": "allow_any",
        }],
        "include_request_attempt_count": true,
    })
}

fn header_route(rule: &HeaderRoute, virtual_service: Option<&str>) -> Value {
    let matcher = json!({
        "prefix": "/",
        "case_sensitive": true,
        "headers": [{"name": rule.header, "string_match": {"exact": rule.value}}],
    });
    route(&rule.name, matcher, &rule.target, virtual_service)
}

/// A route to `fqdn`'s cluster with the timeouts and retries Istio sets by
/// default. `retry_on` names `retriable-status-codes` but, as in Istio's
/// default policy, lists no codes: an upstream's 503 is not retried.
fn route(name: &str, matcher: Value, fqdn: &str, virtual_service: Option<&str>) -> Value {
    let mut route = json!({
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
            },
            "max_grpc_timeout": "0s",
        },
        "decorator": {"operation": format!("{fqdn}:{SERVICE_PORT}/*")},
        "name": name,
    });
    if let (Some(path), Some(fields)) = (virtual_service, route.as_object_mut()) {
        fields.insert(
            "metadata".to_owned(),
            json!({"filter_metadata": {"istio": {"config": path}}}),
        );
    }
    route
}

/// The type of the wasm filter's config.
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// What else istiod lets the ECDS resource of a WasmPlugin be: the agent
/// puts an RBAC filter in its place when it cannot fetch the module.
const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";

/// The wasm filter in the HTTP filter chain: inline, or by ECDS.
fn wasm_filter(plugin: &WasmPlugin) -> Value {
    match &plugin.ecds_file {
        None => json!({"name": plugin.filter_name(), "typed_config": wasm_config(plugin)}),
        Some(path) => json!({
            "name": plugin.filter_name(),
            "config_discovery": {
                "config_source": {
                    "path_config_source": {"path": path.display().to_string()},
                    "initial_fetch_timeout": "0s",
                    "resource_api_version": "V3",
                },
                "type_urls": [WASM_TYPE, RBAC_TYPE],
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
            "name": plugin.filter_name(),
            "typed_config": wasm_config(plugin),
        }],
    })
}

/// The wasm filter's config exactly as Istio renders a WasmPlugin: the
/// plugin config travels as a `google.protobuf.StringValue` holding JSON
/// text; no `root_id` (the WasmPlugin sets no `pluginName`); `FAIL_OPEN`
/// because `wasmplugin/` sets `failStrategy: FAIL_OPEN`, so a crashed VM
/// lets requests through instead of answering 503.
pub fn wasm_config(plugin: &WasmPlugin) -> Value {
    let mut vm_config = serde_json::Map::new();
    vm_config.insert("runtime".into(), json!("envoy.wasm.runtime.v8"));
    vm_config.insert(
        "code".into(),
        json!({"local": {"filename": plugin.wasm_path.display().to_string()}}),
    );
    if !plugin.vm_env.is_empty() {
        let values: serde_json::Map<String, Value> = plugin
            .vm_env
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect();
        vm_config.insert(
            "environment_variables".into(),
            json!({"key_values": values}),
        );
    }
    json!({
        "@type": WASM_TYPE,
        "config": {
            "name": plugin.name,
            "vm_config": vm_config,
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": plugin.configuration,
            },
            "failure_policy": "FAIL_OPEN",
        },
    })
}

/// Istio's limits that never bind (Envoy's defaults of 1024 would).
fn circuit_breakers() -> Value {
    json!({"thresholds": [{
        "max_connections": 4_294_967_295_u64,
        "max_pending_requests": 4_294_967_295_u64,
        "max_requests": 4_294_967_295_u64,
        "max_retries": 4_294_967_295_u64,
    }]})
}

/// A STATIC stand-in for Istio's EDS cluster of a service.
fn cluster(service: &MeshService) -> Value {
    json!({
        "name": service.cluster_name(),
        "type": "STATIC",
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": load_assignment(&service.cluster_name(), service.endpoint),
        "circuit_breakers": circuit_breakers(),
        "metadata": {"filter_metadata": {"istio": {"services": [{
            "host": service.fqdn(),
            "name": service.name,
            "namespace": service.namespace,
        }]}}},
        // Istio's: no panic mode, an unhealthy endpoint gets no traffic.
        "common_lb_config": {"healthy_panic_threshold": {}},
        "alt_stat_name": format!("{};", service.cluster_name()),
    })
}

/// [`PASSTHROUGH_CLUSTER`], STATIC instead of ORIGINAL_DST (see
/// [`SidecarBootstrap::passthrough`]).
fn passthrough_cluster(endpoint: SocketAddr) -> Value {
    json!({
        "name": PASSTHROUGH_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "10s",
        "load_assignment": load_assignment(PASSTHROUGH_CLUSTER, endpoint),
        "circuit_breakers": circuit_breakers(),
        "alt_stat_name": format!("{PASSTHROUGH_CLUSTER};"),
    })
}

/// [`BLACKHOLE_CLUSTER`] as Istio has it: no endpoints.
fn blackhole_cluster() -> Value {
    json!({
        "name": BLACKHOLE_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "10s",
        "alt_stat_name": format!("{BLACKHOLE_CLUSTER};"),
    })
}

fn load_assignment(cluster_name: &str, endpoint: SocketAddr) -> Value {
    json!({
        "cluster_name": cluster_name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": endpoint.ip().to_string(),
            "port_value": endpoint.port(),
        }}}}]}],
    })
}

/// The access log: a few of the fields of Istio's format. The cluster is
/// `%UPSTREAM_CLUSTER_RAW%`, as in Istio's: `%UPSTREAM_CLUSTER%` prints the
/// `alt_stat_name` (the name with a `;` appended).
fn access_log(path: &std::path::Path) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path.display().to_string(),
            "log_format": {"text_format_source": {"inline_string":
                "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\" authority=%REQ(:AUTHORITY)% route=%ROUTE_NAME% cluster=%UPSTREAM_CLUSTER_RAW% status=%RESPONSE_CODE% flags=%RESPONSE_FLAGS% details=%RESPONSE_CODE_DETAILS% outcome=%FILTER_STATE(wasm.sandbox_router.outcome:PLAIN)% sandbox=%FILTER_STATE(wasm.sandbox_router.sandbox:PLAIN)% request_id=%REQ(X-REQUEST-ID)%\n"
            }},
        },
    })
}

fn socket_address(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}
