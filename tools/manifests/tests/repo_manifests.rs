//! The repository's own manifests: valid against their schemas, accepted by
//! the filter's config parser, and consistent with one another (the names
//! one file uses are the names another defines).

#![cfg(feature = "schemas")]
// This whole file is test code, helpers included: a failing check should
// fail the test loudly. clippy.toml only exempts `#[test]` functions
// themselves, not the helpers they share.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sandbox_router_core::config::{FilterConfig, Mode};
use sandbox_router_manifests::check::{check_paths, Class};
use sandbox_router_manifests::crd::CrdSchemas;
use sandbox_router_manifests::istio::OutboundCluster;
use sandbox_router_manifests::{load_documents, plugin_config_from_wasmplugin, Document};
use serde_json::Value;

const CLUSTER_DOMAIN: &str = "cluster.local";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn docs(dir: &str) -> Vec<Document> {
    let roots = [repo().join(dir)];
    let (report, documents) = check_paths(&roots, CrdSchemas::istio());
    assert!(report.file_errors.is_empty(), "{:?}", report.file_errors);
    documents
}

fn plugin_files() -> Vec<PathBuf> {
    vec![
        repo().join("wasmplugin/wasmplugin.yaml"),
        repo().join("wasmplugin/wasmplugin-gateway.yaml"),
    ]
}

fn plugin_doc(path: &Path) -> Document {
    let mut docs: Vec<Document> = load_documents(path)
        .unwrap()
        .into_iter()
        .filter(|d| d.kind() == "WasmPlugin")
        .collect();
    assert_eq!(docs.len(), 1, "{}", path.display());
    docs.remove(0)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

/// The namespace a document ends up in: its own, else its kustomization's.
fn namespace_of(doc: &Document) -> String {
    if let Some(ns) = doc.namespace() {
        return ns.to_owned();
    }
    let kustomization = doc.path.parent().unwrap().join("kustomization.yaml");
    let k = &load_documents(&kustomization).unwrap()[0].value;
    str_at(k, "/namespace").to_owned()
}

#[test]
fn every_manifest_is_valid() {
    let roots: Vec<PathBuf> = ["wasmplugin", "istio-config", "e2e/kind"]
        .iter()
        .map(|d| repo().join(d))
        .collect();
    let (report, _) = check_paths(&roots, CrdSchemas::istio());
    let problems: Vec<String> = report
        .findings
        .iter()
        .filter(|f| !f.problems.is_empty())
        .map(|f| format!("{}: {:?}", f.document, f.problems))
        .chain(report.file_errors.iter().cloned())
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    // Each kind of document is there, so the check cannot pass vacuously.
    assert!(
        report.count(Class::Istio) >= 6,
        "{}",
        report.count(Class::Istio)
    );
    assert!(
        report.count(Class::Core) >= 15,
        "{}",
        report.count(Class::Core)
    );
    assert!(report.count(Class::Kustomization) >= 5);
    assert_eq!(report.count(Class::KindCluster), 1);
}

#[test]
fn the_shipped_plugin_configs_are_accepted_by_the_filter() {
    for path in plugin_files() {
        let config = plugin_config_from_wasmplugin(&path).unwrap();
        let json = serde_json::to_vec(&config).unwrap();
        let parsed = FilterConfig::from_json(&json).unwrap_or_else(|e| {
            panic!(
                "{}: the filter refuses its pluginConfig: {e}",
                path.display()
            )
        });
        assert_eq!(parsed.mode, Mode::Header, "{}", path.display());
        assert!(!parsed.trust_incoming_route_header, "{}", path.display());
        assert!(parsed.route_service.is_some(), "{}", path.display());
        // Every field is spelled out, so the file documents the defaults.
        for field in [
            "routingKey",
            "mode",
            "routeHeader",
            "trustIncomingRouteHeader",
            "namespace",
            "routeService",
        ] {
            assert!(
                config.get(field).is_some(),
                "{}: {field} missing",
                path.display()
            );
        }
    }
}

#[test]
fn the_route_service_cluster_names_the_route_service_service() {
    let base = docs("istio-config/base");
    for path in plugin_files() {
        let config = plugin_config_from_wasmplugin(&path).unwrap();
        let cluster_name = str_at(&config, "/routeService/cluster");
        let cluster = OutboundCluster::parse(cluster_name).unwrap();
        assert_eq!(cluster.subset, "", "{cluster_name}: no subset");
        // The filter reads the same destination out of the name.
        assert_eq!(
            sandbox_router_core::destination::from_cluster_name(cluster_name),
            Some(cluster.fqdn.as_str())
        );
        let (service_name, namespace) =
            cluster
                .kubernetes_service(CLUSTER_DOMAIN)
                .unwrap_or_else(|| {
                    panic!("{cluster_name}: not <service>.<namespace>.svc.{CLUSTER_DOMAIN}")
                });

        let service = base
            .iter()
            .find(|d| d.kind() == "Service" && d.name() == service_name)
            .unwrap_or_else(|| panic!("no Service {service_name} in istio-config/base"));
        assert_eq!(namespace_of(service), namespace, "the Service's namespace");
        let ports = service
            .value
            .pointer("/spec/ports")
            .unwrap()
            .as_array()
            .unwrap();
        let port = ports
            .iter()
            .find(|p| p["port"].as_u64() == Some(u64::from(cluster.port)))
            .unwrap_or_else(|| panic!("Service {service_name} has no port {}", cluster.port));
        assert_eq!(
            port["name"], "http",
            "Istio needs the port named http(-*) for HTTP"
        );

        // The port reaches the container, which listens on it.
        let deployment = base
            .iter()
            .find(|d| d.kind() == "Deployment" && d.name() == "routeservice")
            .unwrap();
        let container = &deployment
            .value
            .pointer("/spec/template/spec/containers/0")
            .unwrap();
        let container_port = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port["targetPort"])
            .unwrap_or_else(|| panic!("no container port named {}", port["targetPort"]));
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let listen = args
            .windows(2)
            .find(|w| w[0] == "--listen")
            .map(|w| w[1])
            .unwrap();
        assert_eq!(
            listen,
            format!("0.0.0.0:{}", container_port["containerPort"]),
            "--listen must be the container port, on all interfaces"
        );

        // The authority names the same host.
        let authority = str_at(&config, "/routeService/authority");
        let host = authority.split(':').next().unwrap();
        assert_eq!(host, cluster.fqdn, "routeService.authority");
    }
}

#[test]
fn each_plugin_is_set_up_as_documented() {
    let version = root_package_version();
    for path in plugin_files() {
        let doc = plugin_doc(&path);
        let spec = &doc.value["spec"];
        let where_ = path.display().to_string();
        assert_eq!(spec["failStrategy"], "FAIL_OPEN", "{where_}");
        assert_eq!(spec["phase"], "STATS", "{where_}");
        assert_eq!(spec["imagePullPolicy"], "IfNotPresent", "{where_}");
        // A gateway's listeners are CLIENT listeners for WasmPlugin matching.
        assert_eq!(
            spec["match"],
            serde_json::json!([{"mode": "CLIENT"}]),
            "{where_}"
        );
        // CEL rules of the CRD that the schema check does not evaluate.
        let targeting = ["selector", "targetRef", "targetRefs"]
            .iter()
            .filter(|f| spec.get(**f).is_some())
            .count();
        assert!(
            targeting <= 1,
            "{where_}: only one of selector/targetRef(s)"
        );
        let url = str_at(spec, "/url");
        let expected = format!("oci://ghcr.io/sandbox-router/sandbox-router:{version}");
        assert_eq!(url, expected, "{where_}: the url follows the crate version");
        // pluginConfig.namespace is the namespace the plugin applies in.
        assert_eq!(
            Some(str_at(spec, "/pluginConfig/namespace")),
            doc.namespace(),
            "{where_}"
        );
    }
    let sidecar = plugin_doc(&repo().join("wasmplugin/wasmplugin.yaml"));
    let label = sidecar.value.pointer("/spec/selector/matchLabels").unwrap();
    assert_eq!(
        label,
        &serde_json::json!({"sandbox-router/enabled": "true"})
    );
    let gateway = plugin_doc(&repo().join("wasmplugin/wasmplugin-gateway.yaml"));
    let label = gateway.value.pointer("/spec/selector/matchLabels").unwrap();
    assert_eq!(label, &serde_json::json!({"istio": "ingressgateway"}));
}

/// The sample's callers carry the plugin's selector label.
#[test]
fn the_sample_callers_carry_the_plugin_label() {
    let sample = docs("istio-config/sample");
    let deployments: Vec<&Document> = sample.iter().filter(|d| d.kind() == "Deployment").collect();
    assert_eq!(deployments.len(), 5);
    for d in deployments {
        let labels = d.value.pointer("/spec/template/metadata/labels").unwrap();
        assert_eq!(labels["sandbox-router/enabled"], "true", "{}", d.label());
    }
}

#[test]
fn the_virtual_services_match_the_route_header() {
    let config = plugin_config_from_wasmplugin(repo().join("wasmplugin/wasmplugin.yaml")).unwrap();
    let route_header = str_at(&config, "/routeHeader");
    let namespace = str_at(&config, "/namespace");
    let sample = docs("istio-config/sample");
    let services: BTreeSet<String> = sample
        .iter()
        .filter(|d| d.kind() == "Service")
        .map(|d| format!("{}.{}.svc.{CLUSTER_DOMAIN}", d.name(), namespace_of(d)))
        .collect();
    let virtual_services: Vec<&Document> = sample
        .iter()
        .filter(|d| d.kind() == "VirtualService")
        .collect();
    assert_eq!(virtual_services.len(), 2);
    for vs in virtual_services {
        assert_eq!(namespace_of(vs), namespace);
        let hosts = vs.value.pointer("/spec/hosts").unwrap().as_array().unwrap();
        assert_eq!(hosts.len(), 1);
        let host = hosts[0].as_str().unwrap();
        assert!(services.contains(host), "{host} is no sample Service");
        let routes = vs.value.pointer("/spec/http").unwrap().as_array().unwrap();
        let (default, sandbox_routes) = routes.split_last().unwrap();
        assert!(
            default.get("match").is_none(),
            "{}: the last route is the default",
            vs.label()
        );
        assert_eq!(str_at(default, "/route/0/destination/host"), host);
        assert!(!sandbox_routes.is_empty());
        for route in sandbox_routes {
            let headers = route
                .pointer("/match/0/headers")
                .unwrap()
                .as_object()
                .unwrap();
            let keys: Vec<&String> = headers.keys().collect();
            assert_eq!(
                keys,
                [route_header],
                "{}: match on the route header only",
                vs.label()
            );
            let sandbox = str_at(&headers[route_header], "/exact");
            let target = str_at(route, "/route/0/destination/host");
            assert!(services.contains(target), "{target} is no sample Service");
            let short = host.split('.').next().unwrap();
            assert!(
                target.starts_with(&format!("{short}-{sandbox}.")),
                "{target} forks {host} for {sandbox}"
            );
        }
    }
}

#[test]
fn the_demo_seed_names_sample_services() {
    let text =
        std::fs::read_to_string(repo().join("istio-config/overlays/demo/seed.json")).unwrap();
    let seed: Value = serde_json::from_str(&text).unwrap();
    let sample = docs("istio-config/sample");
    let services: BTreeSet<String> = sample
        .iter()
        .filter(|d| d.kind() == "Service")
        .map(|d| format!("{}.{}.svc.{CLUSTER_DOMAIN}", d.name(), namespace_of(d)))
        .collect();
    let sandboxes = seed["sandboxes"].as_object().unwrap();
    assert!(sandboxes.contains_key("pr-42"));
    for (name, sandbox) in sandboxes {
        let key = str_at(sandbox, "/routingKey");
        sandbox_router_core::routing_key::validate(key).unwrap();
        assert!(sandbox_router_core::destination::is_dns1123_label(name));
        for route in sandbox["routes"].as_array().unwrap() {
            for field in ["/baseline", "/target"] {
                let fqdn = str_at(route, field);
                assert!(
                    services.contains(fqdn),
                    "{name}: {fqdn} is no sample Service"
                );
            }
        }
    }
}

#[test]
fn writes_are_allowed_only_for_the_tooling_service_account() {
    let base = docs("istio-config/base");
    let policy = base
        .iter()
        .find(|d| d.kind() == "AuthorizationPolicy")
        .unwrap();
    let rules = policy
        .value
        .pointer("/spec/rules")
        .unwrap()
        .as_array()
        .unwrap();
    let mut writers = Vec::new();
    for rule in rules {
        let methods: Vec<&str> = rule
            .pointer("/to/0/operation/methods")
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(!methods.is_empty(), "every rule names its methods");
        if methods.iter().any(|m| !matches!(*m, "GET" | "HEAD")) {
            let principals = rule.pointer("/from/0/source/principals").unwrap();
            writers.push(principals.clone());
        }
    }
    let principal = "cluster.local/ns/sandbox-system/sa/sandbox-tooling";
    assert_eq!(writers, [serde_json::json!([principal])]);
    assert!(base.iter().any(|d| d.kind() == "ServiceAccount"
        && d.name() == "sandbox-tooling"
        && namespace_of(d) == "sandbox-system"));
    // The e2e tooling pod runs as that account.
    let tooling = docs("e2e/kind/manifests");
    let pod = tooling
        .iter()
        .find(|d| d.kind() == "Deployment" && d.name() == "tooling")
        .unwrap();
    assert_eq!(
        str_at(&pod.value, "/spec/template/spec/serviceAccountName"),
        "sandbox-tooling"
    );
    assert_eq!(pod.namespace(), Some("sandbox-system"));
}

#[test]
fn sidecar_egress_scopes_include_the_route_service() {
    let mut sidecars = 0;
    for dir in ["istio-config", "e2e/kind"] {
        for doc in docs(dir).iter().filter(|d| d.kind() == "Sidecar") {
            sidecars += 1;
            let hosts: Vec<&str> = doc
                .value
                .pointer("/spec/egress")
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|e| {
                    e["hosts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(Value::as_str)
                })
                .collect();
            let covered = hosts.iter().any(|h| {
                matches!(
                    *h,
                    "*/*"
                        | "sandbox-system/*"
                        | "sandbox-system/routeservice.sandbox-system.svc.cluster.local"
                )
            });
            assert!(
                covered,
                "{}: egress {hosts:?} lacks sandbox-system",
                doc.label()
            );
        }
    }
    assert!(sidecars >= 1);
}

#[test]
fn the_e2e_run_deploys_the_shipped_plugin() {
    let deploy = std::fs::read_to_string(repo().join("e2e/kind/deploy.sh")).unwrap();
    assert!(deploy.contains("\"$REPO_ROOT/wasmplugin/wasmplugin.yaml\""));
    let patch_line = deploy
        .lines()
        .find(|l| l.contains("-p \"{"))
        .expect("deploy.sh patches the WasmPlugin");
    // Only where the image is: the pluginConfig stays as shipped.
    assert!(
        patch_line.contains("\\\"url\\\"") && patch_line.contains("\\\"sha256\\\""),
        "{patch_line}"
    );
    assert!(!patch_line.contains("pluginConfig"), "{patch_line}");
}

fn root_package_version() -> String {
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let package = text.split("[package]").nth(1).unwrap();
    let line = package.lines().find(|l| l.starts_with("version")).unwrap();
    line.split('"').nth(1).unwrap().to_owned()
}
