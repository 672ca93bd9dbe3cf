//! The mirror against istiod: the sidecar config `bootstrap.rs` and
//! `mesh.rs` write, compared with what a real istiod generated for the demo's
//! header-mode caller (`tests/data/istiod-sidecar-header.json`, see
//! `tests/data/README.md`), on every point that changes what the plugin sees
//! or where a request goes. No Envoy runs: this is the cheap check that the
//! fast tier has not drifted from the mesh. What is left different on
//! purpose is listed in `docs/istio.md` ("The mirror and istiod") and
//! skipped here by name.

// Test code throughout, helpers included: a fixture that is not what it
// should be must fail the test loudly. clippy.toml only exempts `#[test]`
// functions themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use sandbox_router_e2e::envoy::RunFiles;
use sandbox_router_e2e::mesh::{self, MeshOptions, Mode};
use serde_json::{json, Value};

/// Trimmed from `/config_dump` of the local mesh's `frontend` sidecar.
const ISTIOD: &str = include_str!("data/istiod-sidecar-header.json");

/// What pilot-agent's module path is replaced by in the fixture, and the
/// mirror's by in [`mirror`]: a cache path on one side, a build path on the other.
const MODULE_PATH: &str = "<pulled by pilot-agent>";

fn istiod() -> Value {
    serde_json::from_str(ISTIOD).expect("the fixture is JSON")
}

/// The plugin configuration istiod delivered, parsed.
fn istiod_plugin_config() -> Value {
    let text = istiod()["ecds"][0]["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .expect("a StringValue")
        .to_owned();
    serde_json::from_str(&text).expect("JSON text")
}

/// The mirror's bootstrap for the same world: header mode, the demo
/// services, the RouteService, the plugin config istiod delivered.
fn mirror(ecds: bool) -> Value {
    let mut options = MeshOptions::for_tests(Mode::Header, istiod_plugin_config());
    options.route_service = Some(loopback(9000));
    options.ecds = ecds;
    let endpoints = (1..).map(loopback);
    let services = mesh::demo_services(
        mesh::upstream_identities(&options.sandboxes)
            .into_iter()
            .zip(endpoints),
    );
    let files = RunFiles::in_dir(Path::new("/nonexistent/run"));
    let bootstrap = mesh::sidecar_bootstrap(
        &options,
        services,
        loopback(9001),
        PathBuf::from(MODULE_PATH),
        &files,
    );
    let mut json = bootstrap.to_json();
    json["ecds"] = sandbox_router_e2e::bootstrap::ecds_response(&bootstrap.plugin, 1);
    json
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn mirror_hcm(mirror: &Value) -> &Value {
    &mirror["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
}

fn filter_names(filters: &Value) -> Vec<&str> {
    filters
        .as_array()
        .expect("a list of filters")
        .iter()
        .map(|filter| filter["name"].as_str().expect("a name"))
        .collect()
}

#[test]
fn http_filters_are_istiods_in_istiods_order() {
    let istiod = istiod();
    let mirror = mirror(true);
    let want = &istiod["http_connection_manager"]["http_filters"];
    let got = &mirror_hcm(&mirror)["http_filters"];
    assert_eq!(filter_names(got), filter_names(want));
    // The plugin first (phase STATS comes before grpc_stats, fault, cors):
    // nothing has looked at the route before it changes the request.
    assert_eq!(
        filter_names(got)[0],
        "extensions.istio.io/trafficextension/demo.sandbox-router~istio-translated-wasmplugin"
    );
    for (got, want) in got
        .as_array()
        .into_iter()
        .flatten()
        .zip(want.as_array().into_iter().flatten())
        .skip(1)
    {
        assert_eq!(got, want, "filter {}", want["name"]);
    }
}

#[test]
fn the_plugin_comes_over_ecds_as_istiod_sends_it() {
    let istiod = istiod();
    let mirror = mirror(true);
    let want = &istiod["http_connection_manager"]["http_filters"][0]["config_discovery"];
    let got = &mirror_hcm(&mirror)["http_filters"][0]["config_discovery"];
    assert_eq!(got["type_urls"], want["type_urls"]);
    // Istio's source is ADS, the mirror's a file Envoy watches; both make the
    // listener wait for the first config.
    for key in ["initial_fetch_timeout", "resource_api_version"] {
        assert_eq!(
            got["config_source"][key], want["config_source"][key],
            "{key}"
        );
    }
    assert!(want["config_source"]["ads"].is_object());
    assert!(got["config_source"]["path_config_source"].is_object());
}

#[test]
fn the_plugin_config_is_encoded_as_istiod_encodes_it() {
    let istiod = istiod();
    let mirror = mirror(true);
    let want = &istiod["ecds"][0];
    let got = &mirror["ecds"]["resources"][0];
    assert_eq!(got["name"], want["name"]);
    // Everything: config name, no root_id, vm_config, the StringValue
    // holding the pluginConfig as the same JSON text byte for byte (sorted
    // keys, no spaces), failure_policy.
    assert_eq!(got["typed_config"], want["typed_config"]);
}

#[test]
fn the_inline_plugin_is_the_ecds_one() {
    let inline = mirror(false);
    let ecds = mirror(true);
    let filter = &mirror_hcm(&inline)["http_filters"][0];
    assert_eq!(filter["name"], ecds["ecds"]["resources"][0]["name"]);
    assert_eq!(
        filter["typed_config"],
        ecds["ecds"]["resources"][0]["typed_config"]
    );
}

#[test]
fn connection_manager_settings_are_istiods() {
    let istiod = istiod();
    let mirror = mirror(true);
    let want = &istiod["http_connection_manager"];
    let got = mirror_hcm(&mirror);
    for key in [
        "use_remote_address",
        "normalize_path",
        "path_with_escaped_slashes_action",
        "proxy_100_continue",
        "stream_idle_timeout",
        "upgrade_configs",
        "request_id_extension",
    ] {
        assert_eq!(got[key], want[key], "{key}");
    }
    // RDS there, inline here: the same route config by name.
    assert_eq!(
        got["route_config"]["name"],
        want["rds"]["route_config_name"]
    );
}

/// `route_config` with each virtual host's ClusterIP domain replaced, the
/// only value that differs by design (istiod's come from the API server).
fn without_cluster_ips(mut route_config: Value) -> Value {
    for host in route_config["virtual_hosts"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        for domain in host["domains"].as_array_mut().into_iter().flatten() {
            if domain
                .as_str()
                .is_some_and(|text| text.parse::<IpAddr>().is_ok())
            {
                *domain = json!("<cluster-ip>");
            }
        }
    }
    route_config
}

#[test]
fn route_config_is_istiods() {
    let want = without_cluster_ips(istiod()["route_config"].clone());
    let got = without_cluster_ips(mirror_hcm(&mirror(true))["route_config"].clone());
    let names = |config: &Value| filter_names(&config["virtual_hosts"]).join(" ");
    assert_eq!(names(&got), names(&want), "virtual hosts");
    for (got, want) in got["virtual_hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(want["virtual_hosts"].as_array().into_iter().flatten())
    {
        assert_eq!(got, want, "virtual host {}", want["name"]);
    }
    // And the rest: name, validate_clusters, ignore_port_in_host_matching, ...
    assert_eq!(got, want);
}

#[test]
fn unknown_hosts_leave_through_passthrough_cluster() {
    let route_config = &istiod()["route_config"];
    let last = &route_config["virtual_hosts"]
        .as_array()
        .and_then(|hosts| hosts.last())
        .cloned();
    assert_eq!(
        last.as_ref().map(|host| host["domains"].clone()),
        Some(json!(["*"]))
    );
    assert_eq!(
        last.as_ref()
            .map(|host| host["routes"][0]["route"]["cluster"].clone()),
        Some(json!("PassthroughCluster"))
    );
    assert_eq!(route_config["ignore_port_in_host_matching"], true);
}

/// Clusters by name.
fn clusters(list: &Value) -> Vec<(String, Value)> {
    let mut clusters: Vec<(String, Value)> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|cluster| {
            (
                cluster["name"].as_str().unwrap_or_default().to_owned(),
                cluster.clone(),
            )
        })
        .collect();
    clusters.sort_by(|a, b| a.0.cmp(&b.0));
    clusters
}

#[test]
fn clusters_are_istiods() {
    let istiod = istiod();
    let mirror = mirror(true);
    let want: Vec<(String, Value)> = clusters(&istiod["clusters"])
        .into_iter()
        // Inbound only; the mirror has no inbound listener.
        .filter(|(name, _)| name != "InboundPassthroughCluster")
        .collect();
    let got = clusters(&mirror["static_resources"]["clusters"]);
    let names = |clusters: &[(String, Value)]| {
        clusters
            .iter()
            .map(|(name, _)| name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&got), names(&want));
    for ((name, got), (_, want)) in got.iter().zip(&want) {
        // Type: STATIC here for EDS and ORIGINAL_DST there (no xDS server,
        // no redirect); lb_policy CLUSTER_PROVIDED goes with ORIGINAL_DST.
        for key in [
            "connect_timeout",
            "circuit_breakers",
            "metadata",
            "common_lb_config",
            "alt_stat_name",
        ] {
            assert_eq!(got[key], want[key], "{name}: {key}");
        }
        if want["type"] != "ORIGINAL_DST" {
            assert_eq!(got["lb_policy"], want["lb_policy"], "{name}: lb_policy");
        }
    }
}

#[test]
fn listener_is_outbound_on_the_service_port() {
    let istiod = istiod();
    let mirror = mirror(true);
    let listener = &mirror["static_resources"]["listeners"][0];
    assert_eq!(
        listener["traffic_direction"],
        istiod["listener"]["traffic_direction"]
    );
    // `<bind address>_8080`: 127.0.0.1 for the local mesh's bound listener
    // (interception NONE), 0.0.0.0 behind iptables, as the mirror has it.
    assert_eq!(istiod["listener"]["name"], "127.0.0.1_8080");
    assert_eq!(listener["name"], "0.0.0.0_8080");
}
