//! The release plugin in a real Envoy, driven by real requests.
//!
//! Each mode gets one Envoy (with its four upstreams) shared by the tests of
//! this binary: starting V8 costs about a second, and every port is picked
//! free, so tests run in parallel. Each test ends by checking that Envoy's
//! log shows no plugin failure. Counters are checked as "moved" (before <
//! after), which holds however the parallel tests interleave.
//!
//! Needs the release `.wasm` (`make build`) and Envoy (`make run` installs
//! it); see e2e/README.md.

// This whole file is test code, helpers included: a failing check should
// fail the test loudly. clippy.toml only exempts `#[test]` functions
// themselves, not the helpers they share.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::OnceLock;

use sandbox_router_e2e::client::{Request, Response};
use sandbox_router_e2e::envoy_log;
use sandbox_router_e2e::mesh::{self, DemoMesh, MeshOptions, Mode};
use sandbox_router_e2e::upstream::Echo;

const KEY: &str = "pr-42";
const CATALOG: &str = "catalog.demo.svc.cluster.local";
const CATALOG_PORT: &str = "catalog.demo.svc.cluster.local:8080";
const REVIEWS: &str = "reviews.demo.svc.cluster.local";
const CATALOG_FORK: &str = "catalog-pr-42.demo.svc.cluster.local";

// ---------------------------------------------------------------- harness

fn header_mesh() -> &'static DemoMesh {
    static MESH: OnceLock<Result<DemoMesh, String>> = OnceLock::new();
    shared_mesh(&MESH, Mode::Header)
}

fn authority_mesh() -> &'static DemoMesh {
    static MESH: OnceLock<Result<DemoMesh, String>> = OnceLock::new();
    shared_mesh(&MESH, Mode::Authority)
}

/// Header mode with every carrier option changed and the incoming route
/// header trusted (a caller behind a gateway that already routed it).
fn custom_config_mesh() -> &'static DemoMesh {
    static MESH: OnceLock<Result<DemoMesh, String>> = OnceLock::new();
    let started = MESH.get_or_init(|| {
        let mut config = mesh::demo_plugin_config(Mode::Header);
        config["trustIncomingRouteHeader"] = true.into();
        config["routingKey"] = serde_json::json!({
            "baggageKeys": ["sandbox"],
            "legacyHeaders": false,
            "headers": ["x-routing-key"],
        });
        let mut options = MeshOptions::for_tests(Mode::Header, config);
        options.label = "mesh-custom".to_owned();
        DemoMesh::start(&options).map_err(|error| format!("{error:#}"))
    });
    started
        .as_ref()
        .unwrap_or_else(|error| panic!("could not start the custom-config mesh: {error}"))
}

/// Header mode at the mesh's edge: incoming routing keys are stripped.
fn edge_mesh() -> &'static DemoMesh {
    static MESH: OnceLock<Result<DemoMesh, String>> = OnceLock::new();
    let started = MESH.get_or_init(|| {
        let mut config = mesh::demo_plugin_config(Mode::Header);
        config["edge"] = serde_json::json!({"stripIncomingKeys": true});
        config["routingKey"] = serde_json::json!({"headers": ["x-routing-key"]});
        let mut options = MeshOptions::for_tests(Mode::Header, config);
        options.label = "mesh-edge".to_owned();
        DemoMesh::start(&options).map_err(|error| format!("{error:#}"))
    });
    started
        .as_ref()
        .unwrap_or_else(|error| panic!("could not start the edge mesh: {error}"))
}

/// Starts the mesh once per test binary; never dropped, so Envoy goes when
/// the test process does (parent-death signal).
fn shared_mesh(cell: &'static OnceLock<Result<DemoMesh, String>>, mode: Mode) -> &'static DemoMesh {
    let started = cell.get_or_init(|| {
        let options = MeshOptions::for_tests(mode, mesh::demo_plugin_config(mode));
        DemoMesh::start(&options).map_err(|error| format!("{error:#}"))
    });
    match started {
        Ok(mesh) => mesh,
        Err(error) => panic!("could not start the {mode:?} mesh: {error}"),
    }
}

/// A GET of `/` to `host` (the Host header becomes `:authority`).
fn to(host: &str) -> Request {
    Request::get("/").header("host", host)
}

/// `baggage: sd-routing-key=<value>`.
fn with_key(host: &str, value: &str) -> Request {
    to(host).header("baggage", format!("sd-routing-key={value}"))
}

fn send(mesh: &DemoMesh, request: &Request) -> Response {
    request
        .send(mesh.listener())
        .unwrap_or_else(|error| panic!("{error:#}\nrequest:\n{}", shown(request)))
}

/// Sends `request`, asserts a 200 from `served_by`, returns what the upstream saw.
#[track_caller]
fn assert_served_by(mesh: &DemoMesh, request: &Request, served_by: &str) -> Echo {
    let response = send(mesh, request);
    assert_eq!(
        (response.status, response.header("x-served-by").as_deref()),
        (200, Some(served_by)),
        "request:\n{}\nresponse: {} {}\n{}",
        shown(request),
        response.status,
        response.headers_text(),
        response.text()
    );
    Echo::parse(&response.body).unwrap()
}

fn shown(request: &Request) -> String {
    let text = String::from_utf8_lossy(&request.to_bytes()).into_owned();
    match text.char_indices().nth(600) {
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
        None => text,
    }
}

/// The plugin never failed, trapped or panicked in this Envoy so far.
#[track_caller]
fn assert_plugin_healthy(mesh: &DemoMesh) {
    let log = mesh.envoy().log().unwrap();
    let problems = envoy_log::plugin_problems(&log);
    assert!(
        problems.is_empty(),
        "plugin problems in {}:\n{}",
        mesh.envoy().files().log.display(),
        problems.join("\n")
    );
}

fn counter(mesh: &DemoMesh, name: &str) -> u64 {
    mesh.envoy()
        .plugin_counter(name)
        .unwrap()
        .unwrap_or_else(|| {
            panic!("the plugin defines no counter {name} (looked for wasmcustom.{name} in /stats)")
        })
}

/// Asserts that sending `request` moves counter `name`.
#[track_caller]
fn assert_counts(mesh: &DemoMesh, name: &str, request: &Request) {
    let before = counter(mesh, name);
    let response = send(mesh, request);
    let after = counter(mesh, name);
    assert!(
        after > before,
        "{name} stayed at {before} after:\n{}\n(response {})",
        shown(request),
        response.status
    );
}

// ---------------------------------------------------------- routing key

#[test]
fn key_routes_catalog_to_its_fork_with_the_route_header() {
    let mesh = header_mesh();
    let echo = assert_served_by(mesh, &with_key(CATALOG, KEY), "catalog/pr-42");
    assert_eq!(echo.header_values("x-sandbox-route"), ["pr-42"]);
    // Header mode leaves the authority alone.
    assert_eq!(echo.header("host").as_deref(), Some(CATALOG));
    assert_plugin_healthy(mesh);
}

#[test]
fn no_key_goes_to_baseline_untouched() {
    let mesh = header_mesh();
    let echo = assert_served_by(mesh, &to(CATALOG), "catalog/baseline");
    assert_eq!(echo.header("x-sandbox-route"), None);
    assert_eq!(echo.header("host").as_deref(), Some(CATALOG));
    // Baggage without our member is not a key either.
    assert_served_by(
        mesh,
        &to(CATALOG).header("baggage", "userId=alice,sd-routing-keys=pr-42"),
        "catalog/baseline",
    );
    assert_served_by(mesh, &with_key(CATALOG, ""), "catalog/baseline");
    assert_plugin_healthy(mesh);
}

#[test]
fn invalid_keys_go_to_baseline() {
    let mesh = header_mesh();
    let too_long = "a".repeat(200);
    let just_too_long = "a".repeat(129);
    for key in [
        "bad%20key",
        too_long.as_str(),
        just_too_long.as_str(),
        "pr%2F42",
        "pr/42",
        "pr-42%",
        "pr-%ZZ42",
        "%C3%A9t%C3%A9",
        "pr+42",
        "\"pr-42\"",
    ] {
        let echo = assert_served_by(mesh, &with_key(CATALOG, key), "catalog/baseline");
        assert_eq!(echo.header("x-sandbox-route"), None, "key {key:?}");
    }
    assert_plugin_healthy(mesh);
}

#[test]
fn longest_valid_key_is_accepted_as_a_key() {
    // 128 bytes is valid but unknown: baseline, counted as a valid key's miss,
    // not as an invalid key.
    let mesh = header_mesh();
    let key = "k".repeat(128);
    assert_served_by(mesh, &with_key(CATALOG, &key), "catalog/baseline");
    assert_counts(mesh, "sandbox_router.baseline", &with_key(CATALOG, &key));
    assert_plugin_healthy(mesh);
}

#[test]
fn unknown_key_goes_to_baseline() {
    let mesh = header_mesh();
    let echo = assert_served_by(mesh, &with_key(CATALOG, "pr-99"), "catalog/baseline");
    assert_eq!(echo.header("x-sandbox-route"), None);
    assert_plugin_healthy(mesh);
}

#[test]
fn key_for_a_service_the_sandbox_does_not_fork_goes_to_baseline() {
    // Envoy has a route to reviews-pr-42, but sandbox pr-42 forks catalog only.
    let mesh = header_mesh();
    let echo = assert_served_by(mesh, &with_key(REVIEWS, KEY), "reviews/baseline");
    assert_eq!(echo.header("x-sandbox-route"), None);
    assert_served_by(mesh, &with_key("reviews:8080", KEY), "reviews/baseline");
    assert_plugin_healthy(mesh);
}

// ------------------------------------------------------ baggage parsing

#[test]
fn key_in_a_second_baggage_line_routes() {
    let mesh = header_mesh();
    let request = to(CATALOG)
        .header("baggage", "userId=alice,tenant=acme")
        .header("baggage", "sd-routing-key=pr-42");
    let echo = assert_served_by(mesh, &request, "catalog/pr-42");
    assert_eq!(echo.header_values("x-sandbox-route"), ["pr-42"]);
    assert_plugin_healthy(mesh);
}

#[test]
fn key_among_members_with_properties_routes() {
    let mesh = header_mesh();
    for baggage in [
        "a=1;p=2,b=2,sd-routing-key=pr-42;ttl=10,c=3",
        "sd-routing-key=pr-42;ttl=10;flag",
        "a=1, sd-routing-key = pr-42 ;ttl=10 , c=3",
    ] {
        assert_served_by(
            mesh,
            &to(CATALOG).header("baggage", baggage),
            "catalog/pr-42",
        );
    }
    assert_plugin_healthy(mesh);
}

#[test]
fn percent_encoded_key_routes() {
    let mesh = header_mesh();
    assert_served_by(mesh, &with_key(CATALOG, "pr%2D42"), "catalog/pr-42");
    assert_served_by(mesh, &with_key(CATALOG, "%70%72%2d%34%32"), "catalog/pr-42");
    assert_plugin_healthy(mesh);
}

#[test]
fn legacy_jaeger_and_opentracing_headers_route() {
    let mesh = header_mesh();
    for name in [
        "uberctx-sd-routing-key",
        "ot-baggage-sd-routing-key",
        "Uberctx-SD-Routing-Key",
    ] {
        let echo = assert_served_by(mesh, &to(CATALOG).header(name, KEY), "catalog/pr-42");
        assert_eq!(echo.header_values("x-sandbox-route"), ["pr-42"], "{name}");
    }
    // Jaeger's value is URL-query-encoded.
    assert_served_by(
        mesh,
        &to(CATALOG).header("uberctx-sd-routing-key", "pr%2D42"),
        "catalog/pr-42",
    );
    assert_plugin_healthy(mesh);
}

#[test]
fn w3c_baggage_wins_over_legacy_headers() {
    let mesh = header_mesh();
    let baggage_routes = with_key(CATALOG, KEY)
        .header("uberctx-sd-routing-key", "pr-99")
        .header("ot-baggage-sd-routing-key", "pr-99");
    assert_served_by(mesh, &baggage_routes, "catalog/pr-42");
    let baggage_unknown = with_key(CATALOG, "pr-99")
        .header("uberctx-sd-routing-key", KEY)
        .header("ot-baggage-sd-routing-key", KEY);
    assert_served_by(mesh, &baggage_unknown, "catalog/baseline");
    assert_plugin_healthy(mesh);
}

// -------------------------------------------------------- anti-spoofing

#[test]
fn spoofed_route_header_without_key_is_removed() {
    let mesh = header_mesh();
    // Envoy has a header rule to each fork: only the plugin's removal (and
    // its route-cache clearing) keeps these on baseline.
    for host in [CATALOG, REVIEWS, "catalog:8080"] {
        let request = to(host).header("x-sandbox-route", KEY);
        let service = host.split(['.', ':']).next().unwrap();
        let echo = assert_served_by(mesh, &request, &format!("{service}/baseline"));
        assert_eq!(echo.header("x-sandbox-route"), None, "{host}");
    }
    assert_plugin_healthy(mesh);
}

#[test]
fn spoofed_route_header_with_a_valid_key_still_routes_to_the_fork() {
    let mesh = header_mesh();
    for spoofed in ["pr-42", "pr-99", "other"] {
        let request = with_key(CATALOG, KEY).header("x-sandbox-route", spoofed);
        let echo = assert_served_by(mesh, &request, "catalog/pr-42");
        assert_eq!(
            echo.header_values("x-sandbox-route"),
            ["pr-42"],
            "spoofed {spoofed:?}"
        );
    }
    // A spoofed header to a service the key does not fork is dropped too.
    let request = with_key(REVIEWS, KEY).header("x-sandbox-route", KEY);
    let echo = assert_served_by(mesh, &request, "reviews/baseline");
    assert_eq!(echo.header("x-sandbox-route"), None);
    assert_plugin_healthy(mesh);
}

#[test]
fn spoofed_route_header_lines_are_all_removed() {
    let mesh = header_mesh();
    let request = to(CATALOG)
        .header("x-sandbox-route", KEY)
        .header("X-Sandbox-Route", KEY)
        .header("x-sandbox-route", [0xff, 0xfe]);
    let echo = assert_served_by(mesh, &request, "catalog/baseline");
    assert_eq!(echo.header("x-sandbox-route"), None);
    assert_plugin_healthy(mesh);
}

// ---------------------------------------------------------------- hosts

#[test]
fn short_and_qualified_hosts_all_route() {
    let mesh = header_mesh();
    for host in [
        "catalog",
        "catalog:8080",
        "catalog.demo",
        "catalog.demo:8080",
        CATALOG,
        CATALOG_PORT,
    ] {
        let echo = assert_served_by(mesh, &with_key(host, KEY), "catalog/pr-42");
        assert_eq!(
            echo.header("host").as_deref(),
            Some(host),
            "header mode keeps the authority"
        );
        assert_served_by(mesh, &to(host), "catalog/baseline");
    }
    assert_plugin_healthy(mesh);
}

/// Istio's catch-all virtual host `allow_any` sends a host it does not know
/// out through `PassthroughCluster` (the mirror used to answer 404 here,
/// which no Istio sidecar does); the plugin forks nothing there.
#[test]
fn unknown_host_with_a_key_leaves_the_mesh_unforked() {
    let mesh = header_mesh();
    for host in ["nowhere.example", "nowhere.example:8080"] {
        let echo = assert_served_by(mesh, &with_key(host, KEY), mesh::PASSTHROUGH_SERVED_BY);
        assert_eq!(echo.header("host").as_deref(), Some(host));
        assert!(echo.header_values("x-sandbox-route").is_empty(), "{host}");
    }
    assert_plugin_healthy(mesh);
}

/// Istio's virtual hosts also answer to the rooted name `<fqdn>.`.
#[test]
fn rooted_fqdn_routes_like_the_fqdn() {
    let mesh = header_mesh();
    let host = format!("{CATALOG}.");
    assert_served_by(mesh, &with_key(&host, KEY), "catalog/pr-42");
    assert_served_by(mesh, &to(&host), "catalog/baseline");
    assert_plugin_healthy(mesh);
}

#[test]
fn other_methods_and_bodies_route_too() {
    let mesh = header_mesh();
    let request = Request::new("POST", "/orders?id=7")
        .header("host", CATALOG)
        .header("baggage", "sd-routing-key=pr-42")
        .body(r#"{"item": 1}"#);
    let echo = assert_served_by(mesh, &request, "catalog/pr-42");
    assert_eq!(
        (echo.method.as_str(), echo.target.as_str()),
        ("POST", "/orders?id=7")
    );
    assert_plugin_healthy(mesh);
}

// ------------------------------------------------------- authority mode

#[test]
fn authority_mode_rewrites_the_authority_and_keeps_the_port() {
    let mesh = authority_mesh();
    let cases = [
        (CATALOG_PORT, "catalog-pr-42.demo.svc.cluster.local:8080"),
        ("catalog:8080", "catalog-pr-42.demo.svc.cluster.local:8080"),
        (CATALOG, CATALOG_FORK),
        ("catalog", CATALOG_FORK),
    ];
    for (host, rewritten) in cases {
        let echo = assert_served_by(mesh, &with_key(host, KEY), "catalog/pr-42");
        assert_eq!(
            echo.header("host").as_deref(),
            Some(rewritten),
            "from {host}"
        );
        assert_eq!(
            echo.header_values("x-sandbox-route"),
            ["pr-42"],
            "from {host}"
        );
    }
    assert_plugin_healthy(mesh);
}

#[test]
fn authority_mode_leaves_baseline_requests_alone() {
    let mesh = authority_mesh();
    let cases = [
        (to(CATALOG_PORT), "catalog/baseline", CATALOG_PORT),
        (
            with_key(CATALOG_PORT, "pr-99"),
            "catalog/baseline",
            CATALOG_PORT,
        ),
        (
            with_key(CATALOG_PORT, "bad%20key"),
            "catalog/baseline",
            CATALOG_PORT,
        ),
        (
            with_key("reviews:8080", KEY),
            "reviews/baseline",
            "reviews:8080",
        ),
        (
            to(CATALOG).header("x-sandbox-route", KEY),
            "catalog/baseline",
            CATALOG,
        ),
    ];
    for (request, served_by, host) in cases {
        let echo = assert_served_by(mesh, &request, served_by);
        assert_eq!(echo.header("host").as_deref(), Some(host));
        assert_eq!(echo.header("x-sandbox-route"), None, "{}", shown(&request));
    }
    assert_plugin_healthy(mesh);
}

#[test]
fn authority_mode_reads_every_carrier() {
    let mesh = authority_mesh();
    let requests = [
        to(CATALOG_PORT)
            .header("baggage", "a=1")
            .header("baggage", "sd-routing-key=pr%2D42;ttl=1"),
        to(CATALOG_PORT).header("uberctx-sd-routing-key", KEY),
        to(CATALOG_PORT).header("ot-baggage-sd-routing-key", KEY),
    ];
    for request in requests {
        let echo = assert_served_by(mesh, &request, "catalog/pr-42");
        assert_eq!(
            echo.header("host").as_deref(),
            Some("catalog-pr-42.demo.svc.cluster.local:8080")
        );
    }
    assert_plugin_healthy(mesh);
}

// ------------------------------------------------------- custom config

#[test]
fn configured_carriers_replace_the_defaults() {
    let mesh = custom_config_mesh();
    assert_served_by(
        mesh,
        &to(CATALOG).header("baggage", "sandbox=pr-42"),
        "catalog/pr-42",
    );
    assert_served_by(
        mesh,
        &to(CATALOG).header("x-routing-key", KEY),
        "catalog/pr-42",
    );
    // The default baggage key and the legacy headers are off.
    assert_served_by(mesh, &with_key(CATALOG, KEY), "catalog/baseline");
    assert_served_by(
        mesh,
        &to(CATALOG).header("uberctx-sandbox", KEY),
        "catalog/baseline",
    );
    assert_served_by(
        mesh,
        &to(CATALOG).header("ot-baggage-sandbox", KEY),
        "catalog/baseline",
    );
    // Baggage still comes before plain headers.
    let both = to(CATALOG)
        .header("baggage", "sandbox=pr-99")
        .header("x-routing-key", KEY);
    assert_served_by(mesh, &both, "catalog/baseline");
    assert_plugin_healthy(mesh);
}

#[test]
fn trusted_route_header_is_kept() {
    let mesh = custom_config_mesh();
    let echo = assert_served_by(
        mesh,
        &to(CATALOG).header("x-sandbox-route", KEY),
        "catalog/pr-42",
    );
    assert_eq!(echo.header_values("x-sandbox-route"), ["pr-42"]);
    let echo = assert_served_by(
        mesh,
        &to(REVIEWS).header("x-sandbox-route", KEY),
        "reviews/pr-42",
    );
    assert_eq!(echo.header_values("x-sandbox-route"), ["pr-42"]);
    assert_plugin_healthy(mesh);
}

// ------------------------------------------------------------ edge

#[test]
fn edge_strips_incoming_keys_and_routes_to_baseline() {
    let mesh = edge_mesh();
    let request = to(CATALOG)
        .header("baggage", "other=1,sd-routing-key=pr-42")
        .header("baggage", "sd-routing-key=pr-42")
        .header("uberctx-sd-routing-key", KEY)
        .header("ot-baggage-sd-routing-key", KEY)
        .header("x-routing-key", KEY)
        .header("uberctx-user", "alice");
    let before = counter(mesh, "sandbox_router.edge_key_stripped");
    let echo = assert_served_by(mesh, &request, "catalog/baseline");
    assert!(counter(mesh, "sandbox_router.edge_key_stripped") > before);
    assert_eq!(echo.header_values("baggage"), ["other=1"]);
    assert_eq!(echo.header("x-sandbox-route"), None);
    for stripped in [
        "uberctx-sd-routing-key",
        "ot-baggage-sd-routing-key",
        "x-routing-key",
    ] {
        assert_eq!(echo.header(stripped), None, "{stripped}");
    }
    assert_eq!(echo.header("uberctx-user").as_deref(), Some("alice"));
    // Each carrier on its own is stripped too.
    for (name, value) in [
        ("baggage", "sd-routing-key=pr-42"),
        ("Uberctx-SD-Routing-Key", KEY),
        ("ot-baggage-sd-routing-key", KEY),
        ("x-routing-key", KEY),
    ] {
        let echo = assert_served_by(mesh, &to(CATALOG).header(name, value), "catalog/baseline");
        assert_eq!(echo.header(name), None, "{name}");
    }
    // A request with no carrier is not counted and keeps its baggage.
    let before = counter(mesh, "sandbox_router.edge_key_stripped");
    let echo = assert_served_by(
        mesh,
        &to(CATALOG).header("baggage", "other=1"),
        "catalog/baseline",
    );
    assert_eq!(echo.header_values("baggage"), ["other=1"]);
    assert_eq!(counter(mesh, "sandbox_router.edge_key_stripped"), before);
    assert_plugin_healthy(mesh);
}

#[test]
fn without_an_edge_block_the_same_request_routes_to_the_fork() {
    let mesh = header_mesh();
    let request = to(CATALOG).header("baggage", "other=1,sd-routing-key=pr-42");
    let echo = assert_served_by(mesh, &request, "catalog/pr-42");
    assert_eq!(
        echo.header_values("baggage"),
        ["other=1,sd-routing-key=pr-42"]
    );
    assert_plugin_healthy(mesh);
}

// ------------------------------------------------ garbage and oversize

/// Baggage values Envoy's codec lets through that no parser should choke on.
fn garbage_baggage() -> Vec<(&'static str, Vec<u8>)> {
    let high_bytes: Vec<u8> = (0x80..=0xff).collect();
    let mut with_high_bytes = b"sd-routing-key=".to_vec();
    with_high_bytes.extend(&high_bytes);
    let sixteen_kib = format!("big={}", "x".repeat(16 * 1024)).into_bytes();
    let many_members = (0..300)
        .map(|i| format!("m{i}=v{i}"))
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes();
    vec![
        ("bytes 0x80-0xFF", high_bytes),
        ("key with bytes 0x80-0xFF", with_high_bytes),
        ("16 KiB", sixteen_kib),
        ("300 members", many_members),
        ("separators only", b",,,;;;===".to_vec()),
        (
            "tabs and quotes",
            b"\ta=\"1\"\t,\tb=\\x,{}=[],sd-routing-key=\tpr 42".to_vec(),
        ),
        ("empty", Vec::new()),
        ("equals only", b"=".to_vec()),
        ("key without value", b"sd-routing-key".to_vec()),
        ("double equals", b"sd-routing-key==pr-42".to_vec()),
        ("truncated percent", b"sd-routing-key=%".to_vec()),
        ("percent-encoded NUL", b"sd-routing-key=pr%0042".to_vec()),
        ("overlong UTF-8", b"sd-routing-key=%C0%AF".to_vec()),
        ("spaces", b"   ,   ,   ".to_vec()),
    ]
}

#[test]
fn garbage_baggage_goes_to_baseline_never_5xx() {
    for mesh in [header_mesh(), authority_mesh()] {
        for (what, baggage) in garbage_baggage() {
            let request = to(CATALOG_PORT).header("baggage", &baggage);
            let echo = assert_served_by(mesh, &request, "catalog/baseline");
            assert_eq!(echo.header("x-sandbox-route"), None, "{what}");
        }
        assert_plugin_healthy(mesh);
    }
}

#[test]
fn garbage_in_legacy_headers_goes_to_baseline() {
    let mesh = header_mesh();
    let values: [&[u8]; 4] = [&[0x80, 0xff], b"%", b"%ZZ", b"pr 42"];
    for value in values {
        for name in ["uberctx-sd-routing-key", "ot-baggage-sd-routing-key"] {
            assert_served_by(mesh, &to(CATALOG).header(name, value), "catalog/baseline");
        }
    }
    assert_plugin_healthy(mesh);
}

#[test]
fn many_baggage_lines_go_to_baseline() {
    let mesh = header_mesh();
    // Envoy's default limit is 100 header lines (431 beyond): stay just below.
    let request = (0..95).fold(to(CATALOG), |request, i| {
        request.header("baggage", format!("m{i}=v{i}"))
    });
    assert_served_by(mesh, &request, "catalog/baseline");
    assert_plugin_healthy(mesh);
}

#[test]
fn control_characters_are_refused_by_envoy_before_the_plugin() {
    // Envoy's HTTP/1 codec answers 400 to CTLs other than HTAB in a header
    // value; the plugin never sees them. What matters: no 5xx, no crash.
    let mesh = header_mesh();
    for value in [
        &b"a=\x01"[..],
        b"sd-routing-key=pr-42\x0b",
        b"a=\x7f",
        b"a=\x1f",
    ] {
        let request = to(CATALOG).header("baggage", value);
        let response = send(mesh, &request);
        assert_eq!(response.status, 400, "{}", shown(&request));
        assert_eq!(response.header("x-served-by"), None);
    }
    assert_plugin_healthy(mesh);
}

// ------------------------------------------------------------- counters

#[test]
fn plugin_counters_are_exposed_under_wasmcustom() {
    let mesh = header_mesh();
    let stats = mesh.envoy().stats().unwrap();
    for name in [
        "sandbox_router.routed",
        "sandbox_router.baseline",
        "sandbox_router.no_key",
        "sandbox_router.invalid_key",
        "sandbox_router.spoofed_header_removed",
        "sandbox_router.config_rejected",
        "sandbox_router.passthrough",
        "sandbox_router.lookup_shed",
        "sandbox_router.config_valid",
    ] {
        assert!(
            stats.contains_key(&format!("wasmcustom.{name}")),
            "no wasmcustom.{name} in /stats"
        );
    }
    assert_eq!(stats["wasmcustom.sandbox_router.config_rejected"], 0);
    assert_eq!(stats["wasmcustom.sandbox_router.config_valid"], 1);
    assert_eq!(stats["wasmcustom.sandbox_router.passthrough"], 0);
}

#[test]
fn plugin_counters_move_with_each_outcome() {
    let mesh = header_mesh();
    assert_counts(mesh, "sandbox_router.routed", &with_key(CATALOG, KEY));
    assert_counts(mesh, "sandbox_router.baseline", &with_key(CATALOG, "pr-99"));
    assert_counts(mesh, "sandbox_router.no_key", &to(CATALOG));
    assert_counts(
        mesh,
        "sandbox_router.invalid_key",
        &with_key(CATALOG, "bad%20key"),
    );
    assert_counts(
        mesh,
        "sandbox_router.spoofed_header_removed",
        &to(CATALOG).header("x-sandbox-route", KEY),
    );
    assert_plugin_healthy(mesh);
}

#[test]
fn prometheus_output_names_plugin_counters_without_the_namespace() {
    let mesh = header_mesh();
    send(mesh, &with_key(CATALOG, KEY));
    sandbox_router_e2e::envoy::wait_for_plugin_counts();
    let (status, text) = mesh.envoy().admin_get("/stats/prometheus").unwrap();
    assert_eq!(status, 200);
    assert!(
        text.lines()
            .any(|line| line.starts_with("sandbox_router_routed")),
        "no sandbox_router_routed in /stats/prometheus"
    );
}

// ------------------------------------------------------ rejected config
//
// Issue 10: a bad configuration must never stop a pod. Envoy refuses a
// whole filter config whose plugin fails `on_configure`, whatever the fail
// policy, and Istio's ECDS waits for a good one forever (initial fetch
// timeout 0). So the plugin accepts it and runs as a pass-through.

/// The demo config (static route `pr-42` for catalog) with `field` set to
/// `value`, which makes it invalid.
fn invalid_demo_config(field: &str, value: serde_json::Value) -> serde_json::Value {
    let mut config = mesh::demo_plugin_config(Mode::Header);
    config[field] = value;
    config
}

/// Starts an Envoy whose plugin gets `plugin_config` (over ECDS if `ecds`);
/// it must come up.
fn start_with_bad_config(label: &str, plugin_config: serde_json::Value, ecds: bool) -> DemoMesh {
    let mut options = MeshOptions::for_tests(Mode::Header, plugin_config);
    options.label = label.to_owned();
    options.ecds = ecds;
    DemoMesh::start(&options).unwrap_or_else(|error| {
        panic!("Envoy did not come up with an invalid plugin config: {error:#}")
    })
}

/// The plugin's invalid-configuration log lines so far.
fn invalid_config_lines(mesh: &DemoMesh) -> Vec<String> {
    let log = mesh.envoy().log().unwrap();
    envoy_log::plugin_lines(&log)
        .into_iter()
        .filter(|line| line.contains("sandbox-router: invalid configuration:"))
        .map(str::to_owned)
        .collect()
}

/// Every request goes to baseline untouched, a spoofed route header is
/// removed, and the counters say so.
#[track_caller]
fn assert_passes_through(mesh: &DemoMesh) {
    let before = mesh.envoy().stats().unwrap();
    // pr-42 would route with this config if it were valid.
    let echo = assert_served_by(mesh, &with_key(CATALOG, KEY), "catalog/baseline");
    assert_eq!(echo.header("x-sandbox-route"), None);
    // Envoy's VirtualService rule would send this to the fork: only the
    // plugin's removal (and route-cache clearing) keeps it on baseline.
    for request in [
        to(CATALOG).header("x-sandbox-route", KEY),
        with_key(CATALOG, KEY).header("X-Sandbox-Route", KEY),
    ] {
        let echo = assert_served_by(mesh, &request, "catalog/baseline");
        assert_eq!(echo.header("x-sandbox-route"), None, "{}", shown(&request));
    }
    assert_served_by(mesh, &to(REVIEWS), "reviews/baseline");
    let after = mesh.envoy().stats().unwrap();
    let moved = |name: &str| {
        let name = format!("wasmcustom.sandbox_router.{name}");
        after.get(&name).copied().unwrap_or_default()
            - before.get(&name).copied().unwrap_or_default()
    };
    assert_eq!(moved("passthrough"), 4);
    assert_eq!(moved("spoofed_header_removed"), 2);
    assert_eq!(moved("routed") + moved("baseline") + moved("no_key"), 0);
    assert_eq!(after["wasmcustom.sandbox_router.config_valid"], 0);
}

#[track_caller]
fn assert_rejected_once_naming(mesh: &DemoMesh, field: &str) {
    let stats = mesh.envoy().stats().unwrap();
    println!(
        "MEASURE config_rejected {} config_valid {} after one refused config",
        stats["wasmcustom.sandbox_router.config_rejected"],
        stats["wasmcustom.sandbox_router.config_valid"]
    );
    assert_eq!(stats["wasmcustom.sandbox_router.config_rejected"], 1);
    assert_eq!(stats["wasmcustom.sandbox_router.config_valid"], 0);
    let lines = invalid_config_lines(mesh);
    assert_eq!(lines.len(), 1, "one line per refused config: {lines:#?}");
    assert!(lines[0].contains("[error]"), "at error level: {}", lines[0]);
    assert!(lines[0].contains(field), "names {field}: {}", lines[0]);
    // Envoy accepted the filter: it did not log a plugin failure.
    let log = mesh.envoy().log().unwrap();
    for sign in [
        "Unable to create Wasm plugin",
        "Failed to configure base Wasm plugin",
    ] {
        assert!(!log.contains(sign), "Envoy logged {sign:?}");
    }
}

#[test]
fn unknown_field_runs_as_a_pass_through_instead_of_stopping_envoy() {
    let config = invalid_demo_config("routeHeaderz", "x".into());
    let mesh = start_with_bad_config("bad-config-field", config, false);
    assert_passes_through(&mesh);
    assert_rejected_once_naming(&mesh, "routeHeaderz");
}

#[test]
fn bad_mode_runs_as_a_pass_through_instead_of_stopping_envoy() {
    let mesh = start_with_bad_config(
        "bad-config-mode",
        invalid_demo_config("mode", "sideways".into()),
        false,
    );
    assert_passes_through(&mesh);
    assert_rejected_once_naming(&mesh, "mode");
}

/// The gateway's configuration in authority mode is refused (a gateway
/// routes only its Gateway's hosts), naming `mode`; and a refused edge
/// configuration must not let keys from outside in: the pass-through still
/// strips every carrier, the configured plain header too.
#[test]
fn a_refused_edge_config_still_strips_incoming_keys() {
    let mut config = mesh::demo_plugin_config(Mode::Authority);
    config["edge"] = serde_json::json!({});
    config["routingKey"] = serde_json::json!({"headers": ["x-routing-key"]});
    let mesh = start_with_bad_config("bad-config-edge", config, false);
    assert_rejected_once_naming(&mesh, "mode");
    let line = invalid_config_lines(&mesh).join("\n");
    assert!(line.contains("use `header`"), "says what to do: {line}");
    assert!(
        line.contains("(removing x-sandbox-route and incoming routing keys)"),
        "says it still strips: {line}"
    );

    let before = mesh.envoy().stats().unwrap();
    let request = to(CATALOG)
        .header("baggage", "other=1,sd-routing-key=pr-42")
        .header("uberctx-sd-routing-key", KEY)
        .header("ot-baggage-sd-routing-key", KEY)
        .header("x-routing-key", KEY)
        .header("x-sandbox-route", KEY);
    let echo = assert_served_by(&mesh, &request, "catalog/baseline");
    assert_eq!(echo.header_values("baggage"), ["other=1"]);
    for stripped in [
        "uberctx-sd-routing-key",
        "ot-baggage-sd-routing-key",
        "x-routing-key",
        "x-sandbox-route",
    ] {
        assert_eq!(echo.header(stripped), None, "{stripped}");
    }
    let after = mesh.envoy().stats().unwrap();
    let moved = |name: &str| {
        let name = format!("wasmcustom.sandbox_router.{name}");
        after.get(&name).copied().unwrap_or_default()
            - before.get(&name).copied().unwrap_or_default()
    };
    assert_eq!(moved("edge_key_stripped"), 1);
    assert_eq!(moved("passthrough"), 1);
    assert_eq!(moved("spoofed_header_removed"), 1);
}

/// As Istio delivers it (ECDS, `initial_fetch_timeout: 0s`). An invalid
/// config used to be refused by Envoy: from this file source Envoy 1.40 then
/// answered every request `500` (`NFCF`, no filter config found); over
/// Istio's xDS a new sidecar's listener waits for a config it accepts. Now
/// the plugin runs as a pass-through, and a valid config, when it arrives,
/// routes again (`config_valid` back to 1).
#[test]
fn invalid_config_over_ecds_lets_the_listener_up_and_a_valid_one_routes_again() {
    let config = invalid_demo_config("routeService", serde_json::json!({"cluster": "c"}));
    let mut mesh = start_with_bad_config("bad-config-ecds", config, true);
    assert_passes_through(&mesh);
    assert_rejected_once_naming(&mesh, "routeService");

    let wait_for_valid = |mesh: &DemoMesh, valid: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while counter(mesh, "sandbox_router.config_valid") != valid {
            assert!(
                std::time::Instant::now() < deadline,
                "config_valid never {valid}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    mesh.reconfigure_plugin(&mesh::demo_plugin_config(Mode::Header), 2)
        .unwrap();
    wait_for_valid(&mesh, 1);
    // Requests already on a connection may still meet the old filter
    // config for a moment: poll until the new one routes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let response = send(&mesh, &with_key(CATALOG, KEY));
        if response.header("x-served-by").as_deref() == Some("catalog/pr-42") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the valid config never routed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_served_by(&mesh, &with_key(CATALOG, KEY), "catalog/pr-42");
    assert_served_by(
        &mesh,
        &to(CATALOG).header("x-sandbox-route", KEY),
        "catalog/baseline",
    );

    // And a bad one again: pass-through again, counted again.
    mesh.reconfigure_plugin(&invalid_demo_config("bogus", 1.into()), 3)
        .unwrap();
    wait_for_valid(&mesh, 0);
    assert_eq!(counter(&mesh, "sandbox_router.config_rejected"), 2);
}

// ------------------------------------------- routed means the fork answered
//
// Issue 10. Envoy 1.40 does not select the route again when the plugin's
// header change clears the route cache: `xds.cluster_name` keeps naming the
// baseline's cluster until the router (after the plugin) selects it. So the
// plugin checks the cluster the router used in the response phase: `routed`
// only when it is the fork's; else `route_missing` (header mode) or
// `fork_unknown` (authority mode), and later requests for that fork are not
// marked (Envoy-wide, for a few seconds) and reach baseline untouched.

/// A sandbox whose fork the mirror knows nothing of: no upstream, no
/// cluster, no virtual host, no VirtualService rule.
const UNREACHABLE_KEY: &str = "pr-77";
const UNREACHABLE_FORK: &str = "catalog-pr-77.demo.svc.cluster.local";

/// The demo config plus a route of key `pr-77` to [`UNREACHABLE_FORK`].
fn config_with_an_unreachable_fork(mode: Mode) -> serde_json::Value {
    let mut config = mesh::demo_plugin_config(mode);
    config["routes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "routingKey": UNREACHABLE_KEY,
            "sandbox": UNREACHABLE_KEY,
            "baseline": CATALOG,
            "target": UNREACHABLE_FORK,
        }));
    config
}

/// An Envoy of its own, so that counters move only by this test's requests.
fn own_mesh(label: &str, mode: Mode) -> DemoMesh {
    let mut options = MeshOptions::for_tests(mode, config_with_an_unreachable_fork(mode));
    options.label = label.to_owned();
    DemoMesh::start(&options).unwrap()
}

/// How much each plugin counter moved since `before`.
fn moved(mesh: &DemoMesh, before: &std::collections::BTreeMap<String, u64>) -> Moved {
    Moved {
        after: mesh.envoy().stats().unwrap(),
        before: before.clone(),
    }
}

struct Moved {
    before: std::collections::BTreeMap<String, u64>,
    after: std::collections::BTreeMap<String, u64>,
}

impl Moved {
    fn by(&self, name: &str) -> u64 {
        let name = format!("wasmcustom.sandbox_router.{name}");
        self.after.get(&name).copied().unwrap_or_default()
            - self.before.get(&name).copied().unwrap_or_default()
    }
}

/// Waits (the log is flushed every few hundred ms) for `count` plugin
/// lines containing `text`.
#[track_caller]
fn assert_logged(mesh: &DemoMesh, text: &str, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = mesh.envoy().log().unwrap();
        let found = envoy_log::plugin_lines(&log)
            .into_iter()
            .filter(|line| line.contains(text))
            .count();
        if found == count || std::time::Instant::now() > deadline {
            assert_eq!(found, count, "plugin lines with {text:?}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn header_mode_without_a_virtualservice_rule_for_the_sandbox_is_route_missing_not_routed() {
    let mesh = own_mesh("verify-header", Mode::Header);
    let before = mesh.envoy().stats().unwrap();
    // The first request is marked; the router finds no rule for
    // `x-sandbox-route: pr-77` and takes the default route: baseline.
    assert_served_by(
        &mesh,
        &with_key(CATALOG, UNREACHABLE_KEY),
        "catalog/baseline",
    );
    let first = moved(&mesh, &before);
    assert_eq!(
        (first.by("routed"), first.by("route_missing")),
        (0, 1),
        "routed must not count a request the baseline served"
    );
    // Every later one (any worker) is not marked at all: baseline untouched.
    for _ in 0..4 {
        let echo = assert_served_by(
            &mesh,
            &with_key(CATALOG, UNREACHABLE_KEY),
            "catalog/baseline",
        );
        assert_eq!(echo.header("x-sandbox-route"), None);
        assert_eq!(echo.header("host").as_deref(), Some(CATALOG));
    }
    // A sandbox that has its rule still routes, and is counted so.
    assert_served_by(&mesh, &with_key(CATALOG, KEY), "catalog/pr-42");
    let all = moved(&mesh, &before);
    assert_eq!(
        (
            all.by("routed"),
            all.by("route_missing"),
            all.by("fork_unknown")
        ),
        (1, 5, 0)
    );
    assert_logged(&mesh, &format!("did not reach {UNREACHABLE_FORK}"), 1);
    assert_plugin_healthy(&mesh);
}

#[test]
fn authority_mode_to_a_fork_envoy_has_no_route_for_is_fork_unknown_not_routed() {
    let mesh = own_mesh("verify-authority", Mode::Authority);
    let before = mesh.envoy().stats().unwrap();
    // The first request is marked and rewritten; the router has no route for
    // the fork's host (Istio's catch-all would send it to PassthroughCluster).
    let response = send(&mesh, &with_key(CATALOG_PORT, UNREACHABLE_KEY));
    assert_ne!(
        response.header("x-served-by").as_deref(),
        Some("catalog/pr-77")
    );
    let first = moved(&mesh, &before);
    assert_eq!((first.by("routed"), first.by("fork_unknown")), (0, 1));
    // Later ones are left alone: the baseline answers, authority untouched.
    for _ in 0..4 {
        let echo = assert_served_by(
            &mesh,
            &with_key(CATALOG_PORT, UNREACHABLE_KEY),
            "catalog/baseline",
        );
        assert_eq!(echo.header("host").as_deref(), Some(CATALOG_PORT));
        assert_eq!(echo.header("x-sandbox-route"), None);
    }
    assert_served_by(&mesh, &with_key(CATALOG_PORT, KEY), "catalog/pr-42");
    let all = moved(&mesh, &before);
    assert_eq!(
        (
            all.by("routed"),
            all.by("fork_unknown"),
            all.by("route_missing")
        ),
        (1, 5, 0)
    );
    assert_logged(&mesh, &format!("did not reach {UNREACHABLE_FORK}"), 1);
    assert_plugin_healthy(&mesh);
}

#[test]
fn an_ip_host_of_a_service_reaches_the_fork_in_both_modes() {
    // Istio lists a Service's ClusterIPs as domains of its virtual host; the
    // destination comes from the cluster, and authority mode rewrites the
    // IP to the fork's host, keeping the port.
    let ip = mesh::catalog_cluster_ip();
    for (mesh, rewritten) in [
        (header_mesh(), None),
        (
            authority_mesh(),
            Some("catalog-pr-42.demo.svc.cluster.local:8080".to_owned()),
        ),
    ] {
        let host = format!("{ip}:8080");
        let echo = assert_served_by(mesh, &with_key(&host, KEY), "catalog/pr-42");
        assert_eq!(echo.header_values("x-sandbox-route"), ["pr-42"]);
        assert_eq!(echo.header("host"), Some(rewritten.unwrap_or(host.clone())));
        assert_served_by(mesh, &to(&host), "catalog/baseline");
        assert_plugin_healthy(mesh);
    }
}

/// With a key, `request` gets the same answer as without one, and is
/// counted `baseline` (a request Envoy routes to no service is not the
/// plugin's to route), or it reaches the fork and is counted `routed`:
/// `routed` never moves unless the fork answered.
#[track_caller]
fn assert_routed_only_if_the_fork_answers(
    mode: Mode,
    label: &str,
    request: &dyn Fn(Option<&str>) -> Request,
) {
    let mesh = own_mesh(label, mode);
    let keyless = send(&mesh, &request(None));
    let before = mesh.envoy().stats().unwrap();
    let keyed_request = request(Some(KEY));
    let keyed = send(&mesh, &keyed_request);
    let counted = moved(&mesh, &before);
    if keyed.header("x-served-by").as_deref() == Some("catalog/pr-42") {
        assert_eq!(counted.by("routed"), 1, "{}", shown(&keyed_request));
    } else {
        assert_eq!(
            (keyed.status, keyed.header("x-served-by")),
            (keyless.status, keyless.header("x-served-by")),
            "a key changed the answer to:\n{}",
            shown(&keyed_request)
        );
        assert_eq!(
            (counted.by("routed"), counted.by("baseline")),
            (0, 1),
            "{}",
            shown(&keyed_request)
        );
    }
    assert_plugin_healthy(&mesh);
}

#[test]
fn a_trailing_dot_host_gets_the_same_answer_with_a_key_as_without() {
    // Envoy matches domains exactly: no virtual host has the trailing dot
    // (404 here; Istio's catch-all would pick PassthroughCluster). Before the
    // fix authority mode rewrote it and reached the fork, while the same
    // request without a key was 404.
    for mode in [Mode::Header, Mode::Authority] {
        assert_routed_only_if_the_fork_answers(
            mode,
            &format!("verify-dot-{}", mode.as_str()),
            &|key| {
                let host = "catalog.demo.svc.cluster.local.:8080";
                match key {
                    Some(key) => with_key(host, key),
                    None => to(host),
                }
            },
        );
    }
}

#[test]
fn a_port_no_service_has_gets_the_same_answer_with_a_key_as_without() {
    // `catalog:9999` matches no domain here (404); with Istio's
    // `ignore_port_in_host_matching` it matches catalog's virtual host, and
    // then the fork's: either way `routed` only when the fork answers.
    for mode in [Mode::Header, Mode::Authority] {
        assert_routed_only_if_the_fork_answers(
            mode,
            &format!("verify-port-{}", mode.as_str()),
            &|key| match key {
                Some(key) => with_key("catalog:9999", key),
                None => to("catalog:9999"),
            },
        );
    }
}

#[test]
fn connect_gets_the_same_answer_with_a_key_as_without() {
    // A CONNECT matches no route (Envoy needs a connect_matcher): 404.
    assert_routed_only_if_the_fork_answers(Mode::Authority, "verify-connect", &|key| {
        let request = Request::new("CONNECT", CATALOG_PORT).header("host", CATALOG_PORT);
        match key {
            Some(key) => request.header("baggage", format!("sd-routing-key={key}")),
            None => request,
        }
    });
}
