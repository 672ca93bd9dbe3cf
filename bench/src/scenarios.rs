//! The scenarios and the Envoy bootstrap that gives each its own listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use sandbox_router_e2e::routeservice;
use serde_json::{json, Value};

/// The routing key and sandbox every hit scenario uses.
pub const SANDBOX: &str = "pr-421";
/// Where the requests go (`:authority`), and the service the sandbox forks.
pub const HOST: &str = "catalog.demo.svc.cluster.local";
/// The sandbox's fork of it.
pub const FORK_HOST: &str = "catalog-pr-421.demo.svc.cluster.local";
pub const BAGGAGE_KEY: &str = "sd-routing-key";
const ROUTE_HEADER: &str = "x-sandbox-route";
/// The trace the `recovery_*` scenarios record (inbound) and recover
/// (outbound) the key of.
pub const TRACEPARENT_RECORDED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// A trace nobody recorded.
pub const TRACEPARENT_UNKNOWN: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// The `x-request-id` sent with [`TRACEPARENT_RECORDED`] (recorded too).
pub const REQUEST_ID_RECORDED: &str = "6d1f0e8a-3b7c-4c2e-9f1a-bench-recorded";
/// The `x-request-id` sent with [`TRACEPARENT_UNKNOWN`].
pub const REQUEST_ID_UNKNOWN: &str = "6d1f0e8a-3b7c-4c2e-9f1a-bench-unknown";
/// The plugin name the `recovery_*` listeners share, so they share the table.
const RECOVERY_PLUGIN: &str = "recovery";
/// What a per-sandbox VirtualService matches on `baggage` (Istio `regex`,
/// RE2, whole-value match).
pub const VS_REGEX: &str = ".*sd-routing-key=pr-421.*";

/// Who should answer a scenario's request.
#[derive(Debug, Clone)]
pub enum Expect {
    Baseline,
    Sandbox,
    /// A new key per request (wrk script): baseline, after a RouteService lookup.
    Miss,
    /// Not through Envoy (RouteService load).
    Nothing,
}

impl Expect {
    pub fn served_by(&self) -> String {
        match self {
            Expect::Sandbox => format!("catalog/{SANDBOX}"),
            _ => "catalog/baseline".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Floor,
    /// The floor making a routed request's host calls (`routed`), every
    /// request marked for the fork.
    FloorRouted,
    /// The floor setting the route header and nothing else (`marked`):
    /// the least any Wasm filter routing by a header can cost.
    FloorMarked,
    Lua,
    VsRegex,
    Router {
        authority: bool,
    },
    /// The floor plus `PROBE_CALLS` host calls of one kind per request.
    Probe(&'static str),
}

/// The host calls the `probe_*` scenarios make (`bench/wasm-floor`'s
/// probes), with their scenario names.
pub const PROBES: &[(&str, &str)] = &[
    ("header_absent", "probe_header_absent"),
    ("header_present", "probe_header_present"),
    ("header_present_string", "probe_header_present_string"),
    ("authority", "probe_authority"),
    ("header_attribute", "probe_header_attribute"),
    ("cluster_property", "probe_cluster_property"),
    ("increment_metric", "probe_increment_metric"),
    ("set_filter_state", "probe_set_filter_state"),
    ("shared_data", "probe_shared_data"),
    ("shared_data_absent", "probe_shared_data_absent"),
    ("header_map", "probe_header_map"),
    ("header_map_raw", "probe_header_map_raw"),
    ("set_header", "probe_set_header"),
    ("clear_route_cache", "probe_clear_route_cache"),
    ("clock", "probe_clock"),
];
/// Host calls per request of a `probe_*` scenario.
pub const PROBE_CALLS: u32 = 10;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    kind: Kind,
    pub host: &'static str,
    pub baggage: Option<String>,
    pub expect: Expect,
    /// Through a real upstream instead of `direct_response`.
    upstream: bool,
    /// wrk script (router_miss), with the path wrk requests.
    pub script: Option<PathBuf>,
    pub path: String,
    /// Synced from the RouteService holding [`crate::SANDBOXES_LARGE`]
    /// sandboxes instead of [`crate::SANDBOXES`].
    pub large_table: bool,
    /// Headers sent besides `host` and `baggage` (trace headers).
    pub headers: Vec<(&'static str, &'static str)>,
    /// The router plugin has a `recovery` block (`enabled: true`); its
    /// listener is an inbound one when this says so.
    recovery: Option<Side>,
}

/// Which listener of a sidecar a `recovery` scenario plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Inbound,
    Outbound,
    /// Outbound, with a table of its own that nothing records into (a
    /// sidecar whose inbound side saw no keyed request lately).
    OutboundIdle,
}

impl Scenario {
    fn new(name: &'static str, kind: Kind, baggage: Option<String>, expect: Expect) -> Self {
        Scenario {
            name,
            kind,
            host: HOST,
            baggage,
            expect,
            upstream: false,
            script: None,
            path: "/".into(),
            large_table: false,
            headers: Vec::new(),
            recovery: None,
        }
    }

    /// Through a real upstream (the `*_upstream` scenarios).
    fn upstream(mut self) -> Self {
        self.upstream = true;
        self
    }

    fn traced(mut self, recorded: bool) -> Self {
        self.headers = if recorded {
            vec![
                ("traceparent", TRACEPARENT_RECORDED),
                ("x-request-id", REQUEST_ID_RECORDED),
            ]
        } else {
            vec![
                ("traceparent", TRACEPARENT_UNKNOWN),
                ("x-request-id", REQUEST_ID_UNKNOWN),
            ]
        };
        self
    }

    fn recovery(mut self, side: Side) -> Self {
        self.recovery = Some(side);
        self
    }

    /// A `probe_*` scenario: measured only when asked for by name (or by
    /// `BENCH_SCENARIOS=probes`), and only by `make bench-callgrind`.
    pub fn is_probe(&self) -> bool {
        matches!(self.kind, Kind::Probe(_))
    }

    pub fn router_plugin(&self) -> bool {
        matches!(self.kind, Kind::Router { .. })
    }

    /// `GET /v1/routes?routingKey=K` straight at the RouteService.
    pub fn route_service_lookup(key: &str) -> Self {
        let mut scenario = Scenario::new("routeservice_lookup", Kind::Plain, None, Expect::Nothing);
        scenario.host = "routeservice";
        scenario.path = format!("/v1/routes?routingKey={key}");
        scenario
    }
}

/// Every scenario, in the order they run within a round.
pub fn all() -> Vec<Scenario> {
    let hit = Some(baggage_300());
    let router = Kind::Router { authority: false };
    let mut miss = Scenario::new("router_miss", router, None, Expect::Miss);
    miss.script = Some(crate::lua_path("miss.lua"));
    let plain_up =
        Scenario::new("plain_upstream", Kind::Plain, hit.clone(), Expect::Baseline).upstream();
    let floor_up = Scenario::new(
        "wasm_floor_upstream",
        Kind::Floor,
        hit.clone(),
        Expect::Baseline,
    )
    .upstream();
    let router_up =
        Scenario::new("router_hit_upstream", router, hit.clone(), Expect::Sandbox).upstream();
    let floor_routed_up = Scenario::new(
        "wasm_floor_routed_upstream",
        Kind::FloorRouted,
        hit.clone(),
        Expect::Sandbox,
    )
    .upstream();
    let floor_marked_up = Scenario::new(
        "wasm_floor_marked_upstream",
        Kind::FloorMarked,
        hit.clone(),
        Expect::Sandbox,
    )
    .upstream();
    let mut hit_100k = Scenario::new("router_hit_100k", router, hit.clone(), Expect::Sandbox);
    hit_100k.large_table = true;
    let probes: Vec<Scenario> = PROBES
        .iter()
        .map(|&(probe, name)| {
            Scenario::new(name, Kind::Probe(probe), hit.clone(), Expect::Baseline)
        })
        .collect();
    let mut all = vec![
        Scenario::new("plain", Kind::Plain, hit.clone(), Expect::Baseline),
        Scenario::new("wasm_floor", Kind::Floor, hit.clone(), Expect::Baseline),
        // The floors of a routed request (issue 12): the host calls the
        // filter makes to route one, and no decision; for `router_hit`,
        // `router_hit_large` and `router_hit_upstream`.
        Scenario::new(
            "wasm_floor_routed",
            Kind::FloorRouted,
            hit.clone(),
            Expect::Sandbox,
        ),
        Scenario::new(
            "wasm_floor_routed_large",
            Kind::FloorRouted,
            Some(baggage_large()),
            Expect::Sandbox,
        ),
        // The least a Wasm filter routing by a header costs: the floor's
        // read, the header set, nothing else (no check, no access-log
        // field); the ceilings of the routed goals against `wasm_floor`.
        Scenario::new(
            "wasm_floor_marked",
            Kind::FloorMarked,
            hit.clone(),
            Expect::Sandbox,
        ),
        Scenario::new(
            "wasm_floor_marked_large",
            Kind::FloorMarked,
            Some(baggage_large()),
            Expect::Sandbox,
        ),
        Scenario::new("lua", Kind::Lua, hit.clone(), Expect::Sandbox),
        Scenario::new("vs_regex", Kind::VsRegex, hit.clone(), Expect::Sandbox),
        Scenario::new(
            "router_no_key",
            router,
            Some(baggage_no_key()),
            Expect::Baseline,
        ),
        Scenario::new("router_hit", router, hit.clone(), Expect::Sandbox),
        hit_100k,
        Scenario::new(
            "router_hit_large",
            router,
            Some(baggage_large()),
            Expect::Sandbox,
        ),
        Scenario::new(
            "router_authority",
            Kind::Router { authority: true },
            hit,
            Expect::Sandbox,
        ),
        miss,
        plain_up,
        floor_up,
        router_up,
        floor_routed_up,
        floor_marked_up,
        // Recovery (issue 14): the no-key request as `router_no_key` plus a
        // `traceparent` and an `x-request-id`, without and with a `recovery`
        // block (both trace ids unknown: four shared-data reads); the inbound
        // side recording a keyed request's trace ids (refreshing them every
        // quarter TTL, else two reads each); the outbound side recovering a
        // key from the trace the inbound side recorded (it runs first in
        // every round) and routing it.
        Scenario::new(
            "router_no_key_traced",
            router,
            Some(baggage_no_key()),
            Expect::Baseline,
        )
        .traced(false),
        Scenario::new(
            "recovery_no_key",
            router,
            Some(baggage_no_key()),
            Expect::Baseline,
        )
        .traced(false)
        .recovery(Side::Outbound),
        Scenario::new(
            "recovery_no_key_idle",
            router,
            Some(baggage_no_key()),
            Expect::Baseline,
        )
        .traced(false)
        .recovery(Side::OutboundIdle),
        Scenario::new(
            "recovery_inbound",
            router,
            Some(baggage_300()),
            Expect::Baseline,
        )
        .traced(true)
        .recovery(Side::Inbound),
        Scenario::new(
            "recovery_hit",
            router,
            Some(baggage_no_key()),
            Expect::Sandbox,
        )
        .traced(true)
        .recovery(Side::Outbound),
    ];
    all.extend(probes);
    all
}

/// A scenario that needs another one's listener: `recovery_hit` recovers
/// what `recovery_inbound` recorded.
pub fn needs(name: &str) -> Option<&'static str> {
    (name == "recovery_hit").then_some("recovery_inbound")
}

pub fn by_name(name: &str) -> Result<Scenario> {
    all()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow!("no scenario {name}"))
}

/// Tracing-style members, `m<i>=<value>`, until `len` bytes.
fn filler(count: usize, value_len: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("m{i:02}={}", "v".repeat(value_len)))
        .collect()
}

/// About 300 bytes, the key in the middle, one member with a property.
pub fn baggage_300() -> String {
    let mut members = filler(8, 22);
    members.insert(4, format!("{BAGGAGE_KEY}={SANDBOX}"));
    members.push("userId=alice;sampled=1".into());
    pad(members.join(","), 300)
}

/// About 300 bytes, no routing key.
fn baggage_no_key() -> String {
    let mut members = filler(8, 22);
    members.push("userId=alice;sampled=1".into());
    pad(members.join(","), 300)
}

/// About 2 KB, 32 members, the key last.
pub fn baggage_large() -> String {
    let mut members = filler(32, 56);
    members.push(format!("{BAGGAGE_KEY}={SANDBOX}"));
    members.join(",")
}

fn pad(mut text: String, len: usize) -> String {
    if text.len() < len {
        let fill = len - text.len() - ",pad=".len();
        text.push_str(",pad=");
        text.push_str(&"x".repeat(fill));
    }
    text
}

/// Baggage values the report shows `vs_regex` getting wrong or right.
pub fn regex_probes() -> [&'static str; 4] {
    [
        "sd-routing-key=pr-421",
        "userId=alice;sd-routing-key=pr-421",
        "sd-routing-key=pr-4210",
        "sd-routing-key=pr-42",
    ]
}

/// The routing key of seeded sandbox `i` (`pr-421` is one of them).
pub fn key_of(i: usize) -> String {
    format!("sb-{i:05}")
}

/// The RouteService seed: `pr-421` forking `catalog`, and `count - 1` more
/// sandboxes forking other services, so the synced table holds `count` routes.
pub fn seed(count: usize) -> Value {
    let mut sandboxes = serde_json::Map::new();
    sandboxes.insert(
        SANDBOX.into(),
        json!({"routingKey": SANDBOX, "routes": [{"baseline": HOST, "target": FORK_HOST}]}),
    );
    for i in 1..count {
        let key = key_of(i);
        sandboxes.insert(
            key.clone(),
            json!({"routingKey": key, "routes": [{
                "baseline": format!("svc-{}.demo.svc.cluster.local", i % 50),
                "target": format!("svc-{}-{key}.demo.svc.cluster.local", i % 50),
            }]}),
        );
    }
    json!({ "sandboxes": sandboxes })
}

/// The routes of [`seed`] in the table's wire shape.
fn routes(count: usize) -> Vec<Value> {
    let mut routes = vec![json!({
        "routingKey": SANDBOX, "sandbox": SANDBOX, "baseline": HOST, "target": FORK_HOST,
    })];
    for i in 1..count {
        let key = key_of(i);
        routes.push(json!({
            "routingKey": key, "sandbox": key,
            "baseline": format!("svc-{}.demo.svc.cluster.local", i % 50),
            "target": format!("svc-{}-{key}.demo.svc.cluster.local", i % 50),
        }));
    }
    routes
}

/// What the bootstrap needs to know.
pub struct Setup {
    pub router_wasm: PathBuf,
    pub floor_wasm: PathBuf,
    pub lua_source: String,
    pub route_service: SocketAddr,
    /// The one holding [`crate::SANDBOXES_LARGE`] sandboxes.
    pub route_service_large: SocketAddr,
    pub baseline_upstream: SocketAddr,
    pub fork_upstream: SocketAddr,
    /// Envoy runs under callgrind (some 50 times slower): RouteService
    /// calls get a minute.
    pub slow: bool,
}

/// The cluster of the RouteService holding [`crate::SANDBOXES_LARGE`] sandboxes.
pub const LARGE_CLUSTER: &str = "outbound|8080||routeservice-100k.sandbox-system.svc.cluster.local";
const LARGE_FQDN: &str = "routeservice-100k.sandbox-system.svc.cluster.local";
const BASELINE_CLUSTER: &str = "outbound|8080||catalog.demo.svc.cluster.local";
const FORK_CLUSTER: &str = "outbound|8080||catalog-pr-421.demo.svc.cluster.local";

pub fn bootstrap(setup: &Setup, ports: &BTreeMap<&'static str, u16>) -> Value {
    let connect_timeout = if setup.slow { "30s" } else { "1s" };
    let listeners: Vec<Value> = all()
        .iter()
        .filter_map(|s| Some(listener(setup, s, *ports.get(s.name)?)))
        .collect();
    json!({
        "node": {
            "id": "sidecar~127.0.0.1~bench-0.demo~demo.svc.cluster.local",
            "cluster": "bench.demo",
            "metadata": {"NAMESPACE": "demo", "WORKLOAD_NAME": "bench"},
        },
        "admin": {"address": address(0)},
        "static_resources": {
            "listeners": listeners,
            "clusters": [
                cluster(routeservice::CLUSTER, setup.route_service, connect_timeout),
                cluster(LARGE_CLUSTER, setup.route_service_large, connect_timeout),
                cluster(BASELINE_CLUSTER, setup.baseline_upstream, connect_timeout),
                cluster(FORK_CLUSTER, setup.fork_upstream, connect_timeout),
            ],
        },
    })
}

fn address(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

fn cluster(name: &str, addr: SocketAddr, connect_timeout: &str) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": addr.ip().to_string(), "port_value": addr.port(),
            }}}}]}],
        },
        "circuit_breakers": {"thresholds": [{
            "max_connections": 100_000, "max_pending_requests": 100_000, "max_requests": 100_000,
        }]},
    })
}

fn listener(setup: &Setup, scenario: &Scenario, port: u16) -> Value {
    let mut filters = Vec::new();
    match scenario.kind {
        Kind::Plain | Kind::VsRegex => {}
        Kind::Floor => filters.push(wasm(scenario.name, &setup.floor_wasm, "")),
        Kind::FloorRouted => filters.push(wasm(
            scenario.name,
            &setup.floor_wasm,
            &format!("routed {ROUTE_HEADER} {SANDBOX}"),
        )),
        Kind::FloorMarked => filters.push(wasm(
            scenario.name,
            &setup.floor_wasm,
            &format!("marked {ROUTE_HEADER} {SANDBOX}"),
        )),
        Kind::Probe(probe) => filters.push(wasm(
            scenario.name,
            &setup.floor_wasm,
            &format!("{probe} {PROBE_CALLS}"),
        )),
        Kind::Lua => filters.push(json!({
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": setup.lua_source},
            },
        })),
        Kind::Router { authority } => {
            let (cluster, authority_name) = if scenario.large_table {
                (LARGE_CLUSTER, LARGE_FQDN)
            } else {
                (routeservice::CLUSTER, routeservice::FQDN)
            };
            // The 100k table is some 14 MB: more than 200 ms to fetch.
            let timeout_ms = match (setup.slow, scenario.large_table) {
                (true, _) => 60_000,
                (false, true) => 5_000,
                (false, false) => 200,
            };
            let mut config = json!({
                "namespace": "demo",
                "routeService": {
                    "cluster": cluster,
                    "authority": authority_name,
                    "timeoutMs": timeout_ms,
                    "syncIntervalMs": 5000,
                    "cacheTtlMs": 30000,
                    "negativeCacheTtlMs": 2000,
                    "maxEntries": 10000,
                    // The highest lookup budget, so that `router_miss` keeps
                    // measuring a lookup per request (the default, 100/s per
                    // worker, would send most of them to baseline unasked).
                    "maxLookupsPerSecond": 100_000,
                    "lookupBurst": 100_000,
                },
            });
            if let (true, Some(object)) = (authority, config.as_object_mut()) {
                object.insert("mode".into(), json!("authority"));
            }
            if let (Some(_), Some(object)) = (scenario.recovery, config.as_object_mut()) {
                // The longest TTL: the entry `recovery_inbound` records stays
                // for the whole bench.
                object.insert(
                    "recovery".into(),
                    json!({"enabled": true, "ttlMs": 3_600_000}),
                );
            }
            // Under valgrind, RouteService calls from Envoy mostly time out:
            // the plugin starts from the same table as its bootstrap
            // (`routes`), which answers exactly as the synced table does.
            if let (true, Some(object)) = (setup.slow, config.as_object_mut()) {
                let count = if scenario.large_table {
                    crate::SANDBOXES_LARGE
                } else {
                    crate::SANDBOXES
                };
                object.insert("routes".into(), Value::Array(routes(count)));
                // No table sync during the count (one at start, then hourly).
                if let Some(rs) = object
                    .get_mut("routeService")
                    .and_then(Value::as_object_mut)
                {
                    rs.insert("syncIntervalMs".into(), json!(3_600_000));
                }
            }
            let name = match scenario.recovery {
                Some(Side::Inbound | Side::Outbound) => RECOVERY_PLUGIN,
                Some(Side::OutboundIdle) | None => scenario.name,
            };
            filters.push(wasm(name, &setup.router_wasm, &config.to_string()));
        }
    }
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }));
    // Envoy's `xds.listener_direction` tells a `recovery` plugin which side it
    // is on (the other scenarios keep the listener as it was).
    let direction = match scenario.recovery {
        Some(Side::Inbound) => json!("INBOUND"),
        Some(Side::Outbound | Side::OutboundIdle) => json!("OUTBOUND"),
        None => json!("UNSPECIFIED"),
    };
    json!({
        "name": scenario.name,
        "address": address(port),
        "traffic_direction": direction,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": scenario.name,
                "route_config": route_config(scenario),
                "http_filters": filters,
            },
        }]}],
    })
}

/// Where a route goes: a `direct_response` naming who answers, or (for the
/// `*_upstream` pair) the upstream's cluster.
fn answer(scenario: &Scenario, variant: &str, cluster: &str) -> (&'static str, Value) {
    if scenario.upstream {
        ("route", json!({"cluster": cluster, "timeout": "5s"}))
    } else {
        (
            "direct_response",
            json!({"status": 200, "body": {"inline_string": format!("catalog/{variant}")}}),
        )
    }
}

fn route(name: &str, matcher: Value, (action, value): (&'static str, Value)) -> Value {
    let mut route = serde_json::Map::new();
    route.insert("name".into(), json!(name));
    route.insert("match".into(), matcher);
    route.insert(action.into(), value);
    Value::Object(route)
}

fn route_config(scenario: &Scenario) -> Value {
    let baseline = answer(scenario, "baseline", BASELINE_CLUSTER);
    let fork = answer(scenario, SANDBOX, FORK_CLUSTER);
    let default = route("default", json!({"prefix": "/"}), baseline);
    let virtual_hosts = if scenario.kind == (Kind::Router { authority: true }) {
        // Istio's per-host routes: the fork's own virtual host, no header rule.
        json!([
            {"name": "fork", "domains": [FORK_HOST, format!("{FORK_HOST}:*")],
             "routes": [route("fork", json!({"prefix": "/"}), fork)]},
            {"name": "catalog", "domains": ["*"], "routes": [default]},
        ])
    } else {
        let header = if scenario.kind == Kind::VsRegex {
            json!({"name": "baggage", "string_match": {"safe_regex": {"regex": VS_REGEX}}})
        } else {
            json!({"name": ROUTE_HEADER, "string_match": {"exact": SANDBOX}})
        };
        let sandbox = route(SANDBOX, json!({"prefix": "/", "headers": [header]}), fork);
        json!([{"name": "catalog", "domains": ["*"], "routes": [sandbox, default]}])
    };
    json!({"name": scenario.name, "validate_clusters": false, "virtual_hosts": virtual_hosts})
}

fn wasm(name: &str, path: &std::path::Path, configuration: &str) -> Value {
    json!({
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": "",
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": path.display().to_string()}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration,
                },
            },
        },
    })
}
