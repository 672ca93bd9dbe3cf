//! Two plugins of one module in one Envoy, each with its own configuration:
//! the outbound listener's and the inbound listener's (another name, another
//! `responseHeader`). Envoy runs plugins that share their code and VM
//! configuration in one VM per worker, with a root context each, and hands
//! every request to the VM with no word of which plugin it is for but the
//! root id given when the request's context is created. The filter speaks
//! the proxy-wasm ABI itself (`src/exports.rs`), so this is what holds that
//! each request is decided by its own plugin's configuration.

// Test code, helpers included (see envoy_filter.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use sandbox_router_e2e::app::ForwardingApp;
use sandbox_router_e2e::client::Request;
use sandbox_router_e2e::mesh::{self, DemoMesh, MeshOptions, Mode, ROUTE_HEADER};

const CATALOG: &str = "catalog.demo.svc.cluster.local";
const FRONTEND: &str = "frontend.demo.svc.cluster.local";
const OUTBOUND_HEADER: &str = "x-outbound-decision";
const INBOUND_HEADER: &str = "x-inbound-decision";

#[test]
fn each_request_is_decided_by_its_own_plugins_configuration() {
    let app = ForwardingApp::start(CATALOG, &["baggage"], ROUTE_HEADER).unwrap();
    let mut outbound = mesh::demo_plugin_config(Mode::Header);
    outbound["responseHeader"] = OUTBOUND_HEADER.into();
    // The inbound plugin knows no sandbox: a keyed request is baseline there.
    let mut inbound = mesh::demo_plugin_config(Mode::Header);
    inbound["routes"] = serde_json::json!([]);
    inbound["responseHeader"] = INBOUND_HEADER.into();
    let mut options = MeshOptions::for_tests(Mode::Header, outbound);
    options.label = "shared-vm".to_owned();
    options.inbound_app = Some(app.addr());
    options.inbound_plugin_config = Some(inbound);
    let mesh = DemoMesh::start(&options).unwrap();
    app.set_onward(mesh.listener());

    // Interleaved, several times: requests of both plugins in flight on
    // the same workers.
    for round in 0..5 {
        let response = Request::get("/")
            .header("host", CATALOG)
            .header("baggage", "sd-routing-key=pr-42")
            .send(mesh.listener())
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            response.header("x-served-by").as_deref(),
            Some("catalog/pr-42"),
            "round {round}"
        );
        assert_eq!(
            response.header(OUTBOUND_HEADER).as_deref(),
            Some("routed; sandbox=pr-42"),
            "round {round}"
        );
        assert_eq!(response.header(INBOUND_HEADER), None, "round {round}");

        let response = Request::get("/")
            .header("host", FRONTEND)
            .header("baggage", "sd-routing-key=pr-42")
            .send(mesh.inbound_listener().unwrap())
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        // The inbound plugin: a valid key it has no sandbox for.
        assert_eq!(
            response.header(INBOUND_HEADER).as_deref(),
            Some("baseline"),
            "round {round}"
        );
        assert_eq!(response.header(OUTBOUND_HEADER), None, "round {round}");
        // The app's own call went out through the outbound plugin.
        assert_eq!(
            response.header("x-onward-served-by").as_deref(),
            Some("catalog/pr-42"),
            "round {round}"
        );
    }

    // The two plugins share their VMs: Envoy runs as many V8 VMs for them
    // as for one plugin on both listeners (so the requests above were told
    // apart inside one VM, by their root context).
    let one_plugin = {
        let mut options =
            MeshOptions::for_tests(Mode::Header, mesh::demo_plugin_config(Mode::Header));
        options.label = "shared-vm-one".to_owned();
        options.inbound_app = Some(app.addr());
        DemoMesh::start(&options).unwrap()
    };
    let vms = |mesh: &DemoMesh| {
        mesh.envoy()
            .stats()
            .unwrap()
            .get("wasm.envoy.wasm.runtime.v8.active")
            .copied()
    };
    assert!(vms(&mesh).is_some_and(|n| n > 0), "no V8 VM count");
    assert_eq!(
        vms(&mesh),
        vms(&one_plugin),
        "V8 VMs: two plugins, one plugin"
    );
}
