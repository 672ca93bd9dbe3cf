//! `routeservice serve --store kubernetes` against a real kube-apiserver
//! (the control plane of the local Istio mesh, without istiod): the Sandbox
//! CRD as shipped, its CEL rules, the shipped RBAC, two RouteService
//! replicas on one set of objects (with `--route-objects none`: the routing
//! objects of header mode are `kube_routes.rs`'s, through istiod).
//!
//! One control plane for the whole binary, one test: the steps build on
//! each other (the control plane's ports are fixed: a second run waits for
//! the first, see `sandbox_router_e2e::istio::kube::LOCK_FILE`).

#![cfg(feature = "local-istio")]
// This whole file is test code, helpers included.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sandbox_router_e2e::client::{Request, Response};
use sandbox_router_e2e::istio::kube::{KubeControlPlane, KubePorts, Kubectl};
use sandbox_router_e2e::istio::local_mesh::kubeconfig_with_token;
use sandbox_router_e2e::istio::pki::Pki;
use sandbox_router_e2e::istio::probe::{self, sandbox_yaml};
use sandbox_router_e2e::istio::tools::Tools;
use sandbox_router_e2e::routeservice::{Options, RouteService};
use serde_json::{json, Value};

const CATALOG: &str = "catalog.demo.svc.cluster.local";
const CATALOG_FORK: &str = "catalog-pr-1.demo.svc.cluster.local";
const REVIEWS: &str = "reviews.demo.svc.cluster.local";
const REVIEWS_FORK: &str = "reviews-pr-1.demo.svc.cluster.local";

fn repo_file(path: &str) -> PathBuf {
    sandbox_router_e2e::repo_root().join(path)
}

fn send(
    to: &RouteService,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Response {
    let mut request = Request::new(method, path)
        .header("host", to.addr().to_string())
        .header("connection", "close");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    request.send(to.addr()).unwrap()
}

fn routes(to: &RouteService) -> (String, String) {
    let answer = to.get("/v1/routes").unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    (answer.header("etag").unwrap(), answer.text())
}

fn sandbox_body(key: &str, routes: &[(&str, &str)]) -> Value {
    let routes: Vec<Value> = routes
        .iter()
        .map(|(b, t)| json!({"baseline": b, "target": t}))
        .collect();
    json!({"routingKey": key, "routes": routes})
}

/// Polls `check` every 5 ms until it is true; how long that took.
fn wait(what: &str, timeout: Duration, check: impl FnMut() -> bool) -> Duration {
    probe::wait(what, timeout, check).unwrap_or_else(|e| panic!("{e:#}"))
}

fn has_sandbox(to: &RouteService, name: &str) -> bool {
    to.get(&format!("/v1/sandboxes/{name}"))
        .is_ok_and(|r| r.status == 200)
}

fn ready_reason(kubectl: impl Fn() -> Kubectl, name: &str) -> String {
    kubectl()
        .args([
            "get",
            "sandbox",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
        ])
        .run()
        .unwrap_or_default()
}

#[test]
fn routeservice_on_the_kubernetes_api() {
    let tools = Tools::find().unwrap();
    let dir = sandbox_router_e2e::new_run_dir("kube-store").unwrap();
    let pki = Pki::generate(&dir).unwrap();
    let started = Instant::now();
    let plane = KubeControlPlane::start(&tools, &pki, KubePorts::default(), &dir).unwrap();
    eprintln!(
        "kube-store: control plane up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let kubectl = || plane.kubectl();

    // -- The CRD and the RBAC, as shipped.
    kubectl()
        .args(["apply", "-f"])
        .arg_path(&repo_file("istio-config/base/sandbox-crd.yaml"))
        .run()
        .unwrap();
    kubectl()
        .args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/sandboxes.sandbox-router.dev",
        ])
        .run()
        .unwrap();
    kubectl()
        .args(["apply", "-f"])
        .arg_path(&repo_file("istio-config/base/namespace.yaml"))
        .run()
        .unwrap();
    for file in [
        "istio-config/base/serviceaccounts.yaml",
        "istio-config/overlays/kubernetes/rbac.yaml",
    ] {
        kubectl()
            .args(["apply", "-f"])
            .arg_path(&repo_file(file))
            .run()
            .unwrap();
    }
    kubectl()
        .args(["-n", "sandbox-system", "create", "serviceaccount", "nobody"])
        .run()
        .unwrap();
    // The forks exist (the RouteService checks: `ForkServiceMissing`).
    let mut services = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n");
    let forks = [
        "catalog-pr-1",
        "catalog-pr-3",
        "catalog-pr-4",
        "reviews-pr-1",
    ]
    .map(String::from)
    .into_iter()
    .chain((0..20).map(|i| format!("catalog-pr-1-{i}")));
    for name in forks {
        services.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: demo\nspec:\n  ports: [{{port: 8080, name: http}}]\n"
        ));
    }
    kubectl()
        .args(["apply", "-f", "-"])
        .stdin(services)
        .run()
        .unwrap();
    let token_of = |sa: &str| {
        kubectl()
            .args([
                "-n",
                "sandbox-system",
                "create",
                "token",
                sa,
                "--duration=1h",
            ])
            .run()
            .unwrap()
            .trim()
            .to_owned()
    };
    let routeservice_token = token_of("routeservice");
    let writer_token = token_of("sandbox-tooling");
    let nobody_token = token_of("nobody");

    // -- The schema and CEL refuse bad objects, naming the field.
    let refused = kubectl()
        .args(["apply", "-f", "-"])
        .stdin(sandbox_yaml("bad", "k", &[(CATALOG, CATALOG)], ""))
        .run()
        .unwrap_err()
        .to_string();
    assert!(refused.contains("spec.routes[0].target"), "{refused}");
    assert!(refused.contains("must differ from baseline"), "{refused}");
    let refused = kubectl()
        .args(["apply", "-f", "-"])
        .stdin(sandbox_yaml(
            "bad",
            "k",
            &[(CATALOG, CATALOG_FORK)],
            "  ttl: 30m\n  expiresAt: \"2030-01-01T00:00:00Z\"\n",
        ))
        .run()
        .unwrap_err()
        .to_string();
    assert!(refused.contains("spec.ttl"), "{refused}");
    let refused = kubectl()
        .args(["apply", "-f", "-"])
        .stdin(sandbox_yaml(
            "bad",
            "bad key!",
            &[(CATALOG, CATALOG_FORK)],
            "",
        ))
        .run()
        .unwrap_err()
        .to_string();
    assert!(refused.contains("spec.routingKey"), "{refused}");
    eprintln!("kube-store: CEL/schema refusal: {}", refused.trim());

    // -- Two replicas, each with the RouteService's own identity (the
    // shipped ClusterRole).
    let kubeconfig = dir.join("routeservice.kubeconfig");
    kubeconfig_with_token(plane.kubeconfig(), &routeservice_token, &kubeconfig).unwrap();
    let replica = |label: &str| {
        let mut options = Options::for_tests(label).unwrap();
        options.kubeconfig = Some(kubeconfig.clone());
        options.token = writer_token.clone();
        // Authority mode's: no routing objects (this API server has no
        // Gateway API; e2e/tests/kube_routes.rs has them, with istiod).
        options.args = vec!["--route-objects".into(), "none".into()];
        RouteService::start(options).unwrap()
    };
    let a = replica("kube-store-a");
    let b = replica("kube-store-b");
    assert_eq!(routes(&a), routes(&b), "empty tables differ");

    // -- Auth: no token 401, a bad token 401, no RBAC 403 naming the verb.
    let body = sandbox_body("pr-1", &[(CATALOG, CATALOG_FORK)]);
    let answer = send(&a, "PUT", "/v1/sandboxes/pr-1", None, Some(body.clone()));
    assert_eq!(answer.status, 401, "{}", answer.text());
    let answer = send(
        &a,
        "PUT",
        "/v1/sandboxes/pr-1",
        Some("not-a-token"),
        Some(body.clone()),
    );
    assert_eq!(answer.status, 401, "{}", answer.text());
    let answer = send(
        &a,
        "PUT",
        "/v1/sandboxes/pr-1",
        Some(&nobody_token),
        Some(body.clone()),
    );
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert!(
        answer.text().contains("may not create"),
        "{}",
        answer.text()
    );

    // -- A PUT through A, served by B: how long it takes.
    let before = routes(&b).0;
    let sent = Instant::now();
    let written = a
        .put_sandbox("pr-1", "pr-1", &[(CATALOG, CATALOG_FORK)])
        .unwrap();
    let put_took = sent.elapsed();
    assert_eq!(written.status, 201);
    // Read your writes: A serves it as soon as it answered.
    assert!(has_sandbox(&a, "pr-1"));
    let on_b = wait(
        "B serves the PUT through A",
        Duration::from_secs(10),
        || routes(&b).0 != before,
    );
    let after_put = sent.elapsed();
    eprintln!(
        "kube-store: PUT through A answered in {:.1} ms; served by B {:.1} ms after the PUT was sent ({:.1} ms after A answered)",
        put_took.as_secs_f64() * 1e3,
        after_put.as_secs_f64() * 1e3,
        on_b.as_secs_f64() * 1e3,
    );
    let (etag_a, body_a) = routes(&a);
    let (etag_b, body_b) = routes(&b);
    assert_eq!(etag_a, etag_b);
    assert_eq!(body_a, body_b);
    eprintln!("kube-store: both replicas: ETag {etag_a}");
    // The If-None-Match sync of the filter: either replica answers 304 to
    // the other's ETag.
    let not_modified = Request::get("/v1/routes")
        .header("host", b.addr().to_string())
        .header("if-none-match", &etag_a)
        .header("connection", "close")
        .send(b.addr())
        .unwrap();
    assert_eq!(not_modified.status, 304);

    // -- The delta sync across replicas: versions are content hashes
    // (unordered), looked up by equality in each replica's own history. A
    // change written through A: B answers the delta from the version the
    // client got from A, and applying it to A's old table gives B's table.
    let since: u64 = etag_a.trim_matches('"').parse().unwrap();
    for replica in [&a, &b] {
        let current = replica.get(&format!("/v1/routes?since={since}")).unwrap();
        assert_eq!(current.status, 304, "{}", current.text());
    }
    a.put_sandbox(
        "pr-delta",
        "pr-delta",
        &[(CATALOG, "catalog-pr-delta.demo.svc.cluster.local")],
    )
    .unwrap();
    let etag_now = routes(&a).0;
    wait("B has the delta's change", Duration::from_secs(10), || {
        routes(&b).0 == etag_now
    });
    let old: Value = serde_json::from_str(&body_a).unwrap();
    for replica in [&a, &b] {
        let answer = replica.get(&format!("/v1/routes?since={since}")).unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
        let delta: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(delta["since"], since);
        assert_eq!(format!("\"{}\"", delta["version"]), etag_now);
        let key = |r: &Value| (r["routingKey"].to_string(), r["baseline"].to_string());
        let mut table: std::collections::BTreeMap<_, Value> = old["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (key(r), r.clone()))
            .collect();
        for gone in delta["deletes"].as_array().unwrap() {
            table.remove(&key(gone));
        }
        for route in delta["upserts"].as_array().unwrap() {
            table.insert(key(route), route.clone());
        }
        let full: Value = serde_json::from_str(&routes(replica).1).unwrap();
        assert_eq!(
            Value::Array(table.into_values().collect()),
            full["routes"],
            "the delta from A's version, applied, is the table now"
        );
        eprintln!(
            "kube-store: delta since {since} from {}: {} bytes (full table {} bytes)",
            replica.addr(),
            answer.body.len(),
            routes(replica).1.len()
        );
    }
    let gone = b.get("/v1/routes?since=12345").unwrap();
    assert_eq!(gone.status, 410, "{}", gone.text());
    a.delete_sandbox("pr-delta").unwrap();

    // -- The same, 20 times: PUT latency through A, and how long after A
    // answered B serves the same table (same ETag).
    let mut put_ms = Vec::new();
    let mut lag_ms = Vec::new();
    for i in 0..20 {
        let target = format!("catalog-pr-1-{i}.demo.svc.cluster.local");
        let sent = Instant::now();
        a.put_sandbox("pr-1", "pr-1", &[(CATALOG, &target)])
            .unwrap();
        put_ms.push(sent.elapsed().as_secs_f64() * 1e3);
        let etag = routes(&a).0;
        let lag = wait("B catches up", Duration::from_secs(10), || {
            routes(&b).0 == etag
        });
        lag_ms.push(lag.as_secs_f64() * 1e3);
    }
    let summary = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!("p50 {:.1} ms, max {:.1} ms", v[v.len() / 2], v[v.len() - 1])
    };
    eprintln!(
        "kube-store: 20 PUTs through A: answered {}; served by B after A answered {}",
        summary(put_ms),
        summary(lag_ms)
    );
    a.put_sandbox("pr-1", "pr-1", &[(CATALOG, CATALOG_FORK)])
        .unwrap();
    assert_eq!(routes(&a), routes(&b));

    // -- Status and the printer columns.
    wait("pr-1 Ready", Duration::from_secs(10), || {
        ready_reason(kubectl, "pr-1") == "RoutesApplied"
    });
    let table = kubectl().args(["get", "sandboxes"]).run().unwrap();
    eprintln!("kube-store: kubectl get sandboxes:\n{table}");
    let header = table.lines().next().unwrap();
    for column in ["NAME", "ROUTING KEY", "ROUTES", "READY", "AGE", "EXPIRES"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(table.contains(CATALOG) && table.contains("True"), "{table}");
    let wide = kubectl()
        .args(["get", "sandboxes", "-o", "wide"])
        .run()
        .unwrap();
    assert!(
        wide.contains("REASON") && wide.contains("RoutesApplied"),
        "{wide}"
    );
    // Two replicas that agree write the status once, not in turns.
    let resource_version = || {
        kubectl()
            .args([
                "get",
                "sandbox",
                "pr-1",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ])
            .run()
            .unwrap()
    };
    let settled = resource_version();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        resource_version(),
        settled,
        "the status keeps being rewritten"
    );

    // -- A Sandbox applied with kubectl appears in both APIs.
    let sent = Instant::now();
    kubectl()
        .args(["apply", "-f", "-"])
        .stdin(sandbox_yaml("pr-2", "pr-2", &[(REVIEWS, REVIEWS_FORK)], ""))
        .run()
        .unwrap();
    let seen = wait(
        "kubectl's sandbox in A and B",
        Duration::from_secs(10),
        || has_sandbox(&a, "pr-2") && has_sandbox(&b, "pr-2"),
    );
    eprintln!(
        "kube-store: kubectl apply -> served by both replicas in {:.1} ms",
        (sent.elapsed().max(seen)).as_secs_f64() * 1e3
    );
    assert_eq!(routes(&a), routes(&b));

    // -- A conflict made with kubectl is not served and says so.
    kubectl()
        .args(["apply", "-f", "-"])
        .stdin(sandbox_yaml(
            "pr-3",
            "pr-1",
            &[(CATALOG, "catalog-pr-3.demo.svc.cluster.local")],
            "",
        ))
        .run()
        .unwrap();
    wait("pr-3 Conflict", Duration::from_secs(10), || {
        ready_reason(kubectl, "pr-3") == "Conflict"
    });
    assert!(!has_sandbox(&a, "pr-3") && !has_sandbox(&b, "pr-3"));
    // The API refuses the same conflict at once.
    let answer = send(
        &b,
        "PUT",
        "/v1/sandboxes/pr-4",
        Some(&writer_token),
        Some(sandbox_body(
            "pr-1",
            &[(CATALOG, "catalog-pr-4.demo.svc.cluster.local")],
        )),
    );
    assert_eq!(answer.status, 409, "{}", answer.text());

    // -- Deletes both ways: the API deletes kubectl's object, kubectl the API's.
    let answer = send(
        &b,
        "DELETE",
        "/v1/sandboxes/pr-3",
        Some(&writer_token),
        None,
    );
    assert_eq!(answer.status, 204, "{}", answer.text());
    assert!(!kubectl().args(["get", "sandbox", "pr-3"]).ok());
    b.delete_sandbox("pr-2").unwrap();
    assert!(!kubectl().args(["get", "sandbox", "pr-2"]).ok());
    assert!(!has_sandbox(&b, "pr-2"));
    wait("pr-2 gone from A", Duration::from_secs(10), || {
        !has_sandbox(&a, "pr-2")
    });
    kubectl().args(["delete", "sandbox", "pr-1"]).run().unwrap();
    wait("pr-1 gone from both", Duration::from_secs(10), || {
        !has_sandbox(&a, "pr-1") && !has_sandbox(&b, "pr-1")
    });
    let answer = send(
        &a,
        "DELETE",
        "/v1/sandboxes/pr-1",
        Some(&writer_token),
        None,
    );
    assert_eq!(answer.status, 404, "{}", answer.text());

    // -- A ttl expires: out of the table, then deleted.
    let sent = Instant::now();
    kubectl()
        .args(["apply", "-f", "-"])
        .stdin(sandbox_yaml(
            "short",
            "short",
            &[(CATALOG, CATALOG_FORK)],
            "  ttl: 3s\n",
        ))
        .run()
        .unwrap();
    wait("short served", Duration::from_secs(10), || {
        has_sandbox(&a, "short")
    });
    wait("short expired and deleted", Duration::from_secs(20), || {
        !has_sandbox(&a, "short") && !kubectl().args(["get", "sandbox", "short"]).ok()
    });
    eprintln!(
        "kube-store: ttl 3s: gone from the API and the cluster {:.1}s after apply",
        sent.elapsed().as_secs_f64()
    );
    assert_eq!(routes(&a), routes(&b));
    plane.check_running().unwrap();
}
