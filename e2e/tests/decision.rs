//! The decision where operators look (issue 14): Envoy's own access log
//! reads each request's outcome and sandbox from the plugin's filter state
//! (`%FILTER_STATE(wasm.sandbox_router.outcome:PLAIN)%`, `...sandbox`), and
//! the opt-in `responseHeader` answers with it. A real Envoy running the
//! release plugin; the access log format is the harness's (bootstrap.rs).
//! Tracing reads the same filter state into span tags (`custom_tags` with
//! `value`): spans sent to a Zipkin collector run by the test (zipkin.rs).

// Test code, helpers included (see envoy_filter.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use sandbox_router_e2e::client::Request;
use sandbox_router_e2e::mesh::{self, DemoMesh, MeshOptions, Mode};
use sandbox_router_e2e::zipkin::Collector;

const CATALOG: &str = "catalog.demo.svc.cluster.local";
const HEADER: &str = "x-sandbox-routed";

fn start(label: &str, response_header: bool) -> DemoMesh {
    DemoMesh::start(&options(label, response_header)).unwrap()
}

fn options(label: &str, response_header: bool) -> MeshOptions {
    let mut config = mesh::demo_plugin_config(Mode::Header);
    // A sandbox whose route header no VirtualService rule matches.
    config["routes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "routingKey": "pr-77",
            "sandbox": "pr-77",
            "baseline": CATALOG,
            "target": "catalog-pr-77.demo.svc.cluster.local",
        }));
    if response_header {
        config["responseHeader"] = HEADER.into();
    }
    let mut options = MeshOptions::for_tests(Mode::Header, config);
    options.label = label.to_owned();
    options
}

/// Sends a request tagged with `id`, returns the response header (if any)
/// and the access log line Envoy wrote for it.
fn request(mesh: &DemoMesh, id: &str, baggage: Option<&str>) -> (Option<String>, String) {
    let mut request = Request::get("/")
        .header("host", CATALOG)
        .header("x-request-id", id);
    if let Some(baggage) = baggage {
        request = request.header("baggage", baggage);
    }
    let response = request.send(mesh.listener()).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    (response.header(HEADER), access_log_line(mesh, id))
}

fn access_log_line(mesh: &DemoMesh, id: &str) -> String {
    let path = mesh.envoy().files().access_log();
    let wanted = format!("request_id={id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(line) = log.lines().find(|line| line.ends_with(&wanted)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no access log line for {id} in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_access_log_shows_each_outcome_and_sandbox() {
    let mesh = start("decision-log", false);
    let cases = [
        (
            "a",
            Some("sd-routing-key=pr-42"),
            "outcome=routed sandbox=pr-42",
        ),
        ("b", None, "outcome=no_key sandbox=-"),
        (
            "c",
            Some("sd-routing-key=nobody"),
            "outcome=baseline sandbox=-",
        ),
        (
            "d",
            Some("sd-routing-key=bad%20key"),
            "outcome=invalid_key sandbox=-",
        ),
        // Marked, then checked after the router: the later outcome wins.
        (
            "e",
            Some("sd-routing-key=pr-77"),
            "outcome=route_missing sandbox=pr-77",
        ),
        // Remembered: no longer marked, the same outcome.
        (
            "f",
            Some("sd-routing-key=pr-77"),
            "outcome=route_missing sandbox=pr-77",
        ),
    ];
    for (id, baggage, want) in cases {
        let (header, line) = request(&mesh, id, baggage);
        println!("{line}");
        assert!(line.contains(want), "{id}: {want:?} not in {line}");
        assert_eq!(header, None, "{id}: no response header unless configured");
    }
}

#[test]
fn the_opt_in_response_header_says_the_same() {
    let mesh = start("decision-header", true);
    for (id, baggage, want) in [
        ("a", Some("sd-routing-key=pr-42"), "routed; sandbox=pr-42"),
        ("b", None, "no_key"),
        (
            "e",
            Some("sd-routing-key=pr-77"),
            "route_missing; sandbox=pr-77",
        ),
    ] {
        let (header, line) = request(&mesh, id, baggage);
        assert_eq!(header.as_deref(), Some(want), "{id} ({line})");
    }
}

/// Envoy's span for each request carries the decision as the tags
/// `sandbox_router.outcome` and `sandbox_router.sandbox`, read from the
/// filter state when the span finishes: after the plugin's response-phase
/// check, so a marked request's span shows the final outcome. A state the
/// plugin did not set (no sandbox) leaves its tag out of the span.
#[test]
fn every_span_carries_the_decision() {
    let collector = Collector::start().unwrap();
    let mut options = options("decision-trace", false);
    options.zipkin_collector = Some(collector.addr());
    let mesh = DemoMesh::start(&options).unwrap();
    // UUID request ids already marked sampled (`9` at index 14, which
    // Envoy would write there: `use_request_id_for_trace_sampling`), so
    // Envoy keeps them; the span names its request by it.
    let id = |n: u32| format!("7c9e6679-7425-90de-944b-e07fc1f9{n:04x}");
    // (request, baggage, outcome tag, sandbox tag)
    let cases = [
        (1, Some("sd-routing-key=pr-42"), "routed", Some("pr-42")),
        (2, None, "no_key", None),
        (3, Some("sd-routing-key=nobody"), "baseline", None),
        (4, Some("sd-routing-key=bad%20key"), "invalid_key", None),
        // Marked, then checked after the router: the span has the later outcome.
        (
            5,
            Some("sd-routing-key=pr-77"),
            "route_missing",
            Some("pr-77"),
        ),
        // Remembered: no longer marked, the same outcome.
        (
            6,
            Some("sd-routing-key=pr-77"),
            "route_missing",
            Some("pr-77"),
        ),
    ];
    for (n, baggage, outcome, sandbox) in cases {
        let id = id(n);
        let (_, line) = request(&mesh, &id, baggage);
        let span = collector
            .span_for_request(&id, Duration::from_secs(10))
            .unwrap();
        let tags = &span["tags"];
        println!("{id}: {tags}");
        assert_eq!(
            tags["sandbox_router.outcome"].as_str(),
            Some(outcome),
            "{id} ({line}): span {span}"
        );
        // Unset filter state (no sandbox): Envoy leaves the tag out.
        assert_eq!(
            tags["sandbox_router.sandbox"].as_str(),
            sandbox,
            "{id}: span {span}"
        );
    }
}

/// A marked request that gets no response (the client leaves while the
/// upstream still waits for the body): its check runs only in the log
/// phase, after Envoy finished the span, so the span has no decision tags
/// while the access log has the outcome. A known gap, pinned here: if Envoy
/// ever finishes spans after `on_log`, this fails and the docs change.
#[test]
fn a_request_without_response_is_checked_after_its_span() {
    use std::io::Write as _;
    let collector = Collector::start().unwrap();
    let mut options = options("decision-trace-reset", false);
    options.zipkin_collector = Some(collector.addr());
    let mesh = DemoMesh::start(&options).unwrap();
    let id = "7c9e6679-7425-90de-944b-e07fc1f90107";
    let mut stream = std::net::TcpStream::connect(mesh.listener()).unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {CATALOG}\r\nx-request-id: {id}\r\n\
         baggage: sd-routing-key=pr-77\r\ncontent-length: 100\r\n\r\npartial"
    );
    stream.write_all(head.as_bytes()).unwrap();
    // Let Envoy forward the headers upstream, then leave.
    std::thread::sleep(Duration::from_millis(500));
    drop(stream);
    let line = access_log_line(&mesh, id);
    let span = collector
        .span_for_request(id, Duration::from_secs(10))
        .unwrap();
    let tags = &span["tags"];
    println!("{line}\n{tags}");
    assert!(
        line.contains("outcome=route_missing sandbox=pr-77"),
        "the access log has the check's outcome: {line}"
    );
    // Envoy 1.40 finishes the span (`completeRequest`) before access logs
    // and `on_log` run: no outcome yet, so no tags.
    assert_eq!(tags["http.status_code"].as_str(), Some("0"), "span {span}");
    assert_eq!(
        tags["sandbox_router.outcome"],
        serde_json::Value::Null,
        "span {span}"
    );
    assert_eq!(
        tags["sandbox_router.sandbox"],
        serde_json::Value::Null,
        "span {span}"
    );
}
