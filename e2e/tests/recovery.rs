//! Recovering a routing key that an app dropped (issue 14, part 1), in a
//! real Envoy running the release plugin on both listeners of one sidecar:
//! an inbound listener (`traffic_direction: INBOUND`) in front of an app that
//! forwards only `traceparent` (or only `x-request-id`) on its own call to
//! `catalog`, and the outbound listener that call goes through.
//!
//! With `recovery.enabled` the onward call reaches the fork (`key_recovered`,
//! outcome `key_recovered`); with it off the call goes to baseline and
//! `key_dropped` says where the key was lost; a malformed trace id does
//! nothing; an entry is forgotten after `ttlMs`.

// Test code, helpers included (see envoy_filter.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use sandbox_router_e2e::app::ForwardingApp;
use sandbox_router_e2e::client::{Request, Response};
use sandbox_router_e2e::mesh::{self, DemoMesh, MeshOptions, Mode, ROUTE_HEADER};
use sandbox_router_e2e::upstream::Echo;

const CATALOG: &str = "catalog.demo.svc.cluster.local";
const FRONTEND: &str = "frontend.demo.svc.cluster.local";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

struct Sidecar {
    mesh: DemoMesh,
    _app: ForwardingApp,
}

fn start(label: &str, recovery: Option<Value>, forward: &[&str]) -> Sidecar {
    let app = ForwardingApp::start(CATALOG, forward, ROUTE_HEADER).unwrap();
    let mut config = mesh::demo_plugin_config(Mode::Header);
    if let Some(recovery) = recovery {
        config["recovery"] = recovery;
    }
    let mut options = MeshOptions::for_tests(Mode::Header, config);
    options.label = label.to_owned();
    options.inbound_app = Some(app.addr());
    let mesh = DemoMesh::start(&options).unwrap();
    app.set_onward(mesh.listener());
    Sidecar { mesh, _app: app }
}

impl Sidecar {
    /// A request into the app through the inbound listener.
    fn inbound(&self, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get("/").header("host", FRONTEND);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send(self.mesh.inbound_listener().unwrap()).unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        response
    }

    /// A request the app makes itself, straight to the outbound listener.
    fn outbound(&self, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get("/").header("host", CATALOG);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send(self.mesh.listener()).unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        response
    }

    fn counter(&self, name: &str) -> u64 {
        self.mesh
            .envoy()
            .plugin_counter(&format!("sandbox_router.{name}"))
            .unwrap()
            .unwrap_or(0)
    }

    fn counters(&self) -> String {
        [
            "recovery_recorded",
            "recovery_evicted",
            "key_recovered",
            "key_dropped",
            "routed",
            "baseline",
            "no_key",
        ]
        .iter()
        .map(|name| format!("{name}={}", self.counter(name)))
        .collect::<Vec<_>>()
        .join(" ")
    }

    /// Waits for an access log line containing every one of `wanted`.
    fn access_log_line(&self, wanted: &[&str]) -> String {
        let path = self.mesh.envoy().files().access_log();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(line) = log
                .lines()
                .find(|line| wanted.iter().all(|w| line.contains(w)))
            {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no access log line with {wanted:?} in {}:\n{log}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn onward(response: &Response) -> (String, Echo) {
    (
        response.header("x-onward-served-by").unwrap_or_default(),
        Echo::parse(&response.body).unwrap(),
    )
}

fn recovery(enabled: bool) -> Value {
    json!({"enabled": enabled, "ttlMs": 30000, "maxEntries": 1000})
}

#[test]
fn an_app_forwarding_only_traceparent_gets_its_key_back() {
    let sidecar = start(
        "recovery-traceparent",
        Some(recovery(true)),
        &["traceparent"],
    );
    let response = sidecar.inbound(&[
        ("baggage", "sd-routing-key=pr-42"),
        ("traceparent", TRACEPARENT),
        ("x-request-id", "0b5a3f7e-4a1c-4f4e-9d2b-recovery-tp"),
        // A route header an earlier hop set: left to the app on the way in.
        (ROUTE_HEADER, "pr-42"),
    ]);
    let (served_by, echo) = onward(&response);
    println!("{}", sidecar.counters());
    assert_eq!(served_by, "catalog/pr-42", "{}", sidecar.counters());
    // The key travels on: later hops see it in baggage.
    assert_eq!(
        echo.header("baggage").as_deref(),
        Some("sd-routing-key=pr-42")
    );
    assert_eq!(echo.header("traceparent").as_deref(), Some(TRACEPARENT));
    // The inbound side marks nothing and removes nothing.
    assert_eq!(
        response.header("x-app-received-route-header").as_deref(),
        Some("yes")
    );
    assert_eq!(sidecar.counter("key_recovered"), 1);
    assert_eq!(sidecar.counter("routed"), 1, "{}", sidecar.counters());
    // traceparent and x-request-id were both recorded.
    assert_eq!(sidecar.counter("recovery_recorded"), 2);
    assert_eq!(sidecar.counter("key_dropped"), 0);
    let line = sidecar.access_log_line(&["authority=catalog", "outcome=key_recovered"]);
    assert!(line.contains("sandbox=pr-42"), "{line}");
    // The inbound request counts no outcome.
    let inbound = sidecar.access_log_line(&["authority=frontend"]);
    assert!(inbound.contains("outcome=- sandbox=-"), "{inbound}");

    // A call of another trace gets nothing.
    let other = "00-11111111111111111111111111111111-00f067aa0ba902b7-01";
    let echo = Echo::parse(&sidecar.outbound(&[("traceparent", other)]).body).unwrap();
    assert_eq!(echo.served_by, "catalog/baseline");
    assert_eq!(sidecar.counter("key_recovered"), 1);
}

#[test]
fn an_app_forwarding_only_x_request_id_gets_its_key_back() {
    let sidecar = start(
        "recovery-request-id",
        Some(recovery(true)),
        &["x-request-id"],
    );
    let response = sidecar.inbound(&[
        ("baggage", "other=1,sd-routing-key=pr-42"),
        ("x-request-id", "7f3c9a52-1c2b-4e5f-9a8b-0c1d2e3f4a5b"),
    ]);
    let (served_by, echo) = onward(&response);
    assert_eq!(served_by, "catalog/pr-42", "{}", sidecar.counters());
    assert_eq!(
        echo.header("x-request-id").as_deref(),
        Some("7f3c9a52-1c2b-4e5f-9a8b-0c1d2e3f4a5b")
    );
    assert_eq!(sidecar.counter("key_recovered"), 1);
    assert_eq!(sidecar.counter("recovery_recorded"), 1);
}

#[test]
fn with_recovery_off_the_drop_is_counted_and_the_call_goes_to_baseline() {
    let sidecar = start("recovery-off", Some(recovery(false)), &["traceparent"]);
    let response = sidecar.inbound(&[
        ("baggage", "sd-routing-key=pr-42"),
        ("traceparent", TRACEPARENT),
    ]);
    let (served_by, echo) = onward(&response);
    println!("{}", sidecar.counters());
    assert_eq!(served_by, "catalog/baseline");
    assert_eq!(echo.header("baggage"), None, "nothing added");
    assert_eq!(sidecar.counter("key_dropped"), 1);
    assert_eq!(sidecar.counter("no_key"), 1);
    assert_eq!(sidecar.counter("key_recovered"), 0);
    let line = sidecar.access_log_line(&["authority=catalog", "outcome=key_dropped"]);
    assert!(
        line.contains("cluster=outbound|8080||catalog.demo"),
        "{line}"
    );
}

#[test]
fn without_a_recovery_block_nothing_is_recorded_or_counted() {
    let sidecar = start("recovery-absent", None, &["traceparent"]);
    let (served_by, _) = onward(&sidecar.inbound(&[
        ("baggage", "sd-routing-key=pr-42"),
        ("traceparent", TRACEPARENT),
    ]));
    assert_eq!(served_by, "catalog/baseline");
    for name in ["recovery_recorded", "key_dropped", "key_recovered"] {
        assert_eq!(sidecar.counter(name), 0, "{name}");
    }
}

#[test]
fn a_malformed_trace_id_does_nothing() {
    let sidecar = start("recovery-malformed", Some(recovery(true)), &["traceparent"]);
    // Upper-case hex: not a W3C traceparent. A short request id: not used.
    let malformed = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
    let (served_by, echo) = onward(&sidecar.inbound(&[
        ("baggage", "sd-routing-key=pr-42"),
        ("traceparent", malformed),
        ("x-request-id", "short"),
    ]));
    assert_eq!(served_by, "catalog/baseline");
    assert_eq!(echo.header("baggage"), None);
    assert_eq!(sidecar.counter("recovery_recorded"), 0);
    assert_eq!(sidecar.counter("key_recovered"), 0);
    // A valid id in, a malformed one out: nothing either.
    sidecar.inbound(&[
        ("baggage", "sd-routing-key=pr-42"),
        ("traceparent", TRACEPARENT),
    ]);
    let recovered = sidecar.counter("key_recovered");
    let response = sidecar.outbound(&[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    )]);
    assert_eq!(
        Echo::parse(&response.body).unwrap().served_by,
        "catalog/baseline"
    );
    assert_eq!(sidecar.counter("key_recovered"), recovered);
}

#[test]
fn an_entry_is_forgotten_after_ttl_ms() {
    let sidecar = start(
        "recovery-ttl",
        Some(json!({"enabled": true, "ttlMs": 1500})),
        &["traceparent"],
    );
    let (served_by, _) = onward(&sidecar.inbound(&[
        ("baggage", "sd-routing-key=pr-42"),
        ("traceparent", TRACEPARENT),
    ]));
    assert_eq!(served_by, "catalog/pr-42");
    // The app calls again within the TTL: recovered.
    let echo = Echo::parse(&sidecar.outbound(&[("traceparent", TRACEPARENT)]).body).unwrap();
    assert_eq!(echo.served_by, "catalog/pr-42");
    assert_eq!(sidecar.counter("key_recovered"), 2);
    std::thread::sleep(Duration::from_millis(2000));
    let echo = Echo::parse(&sidecar.outbound(&[("traceparent", TRACEPARENT)]).body).unwrap();
    assert_eq!(echo.served_by, "catalog/baseline", "{}", sidecar.counters());
    assert_eq!(sidecar.counter("key_recovered"), 2);
}
