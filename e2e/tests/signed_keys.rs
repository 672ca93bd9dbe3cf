//! Signed routing keys at the mesh's edge (`edge.signedKeys`), in a real
//! Envoy running the release plugin: keys minted by the real
//! `routeservice sign`, the secret handed to the VM as Istio hands it
//! (`vmConfig.env`, rendered as `environment_variables`).

// Test code, helpers included (see envoy_filter.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;
use std::sync::OnceLock;

use sandbox_router_e2e::client::{Request, Response};
use sandbox_router_e2e::envoy_log;
use sandbox_router_e2e::mesh::{self, DemoMesh, MeshOptions, Mode};
use sandbox_router_e2e::routeservice;
use sandbox_router_e2e::upstream::Echo;

const CATALOG: &str = "catalog.demo.svc.cluster.local";
const SECRET_ENV: &str = "SANDBOX_ROUTER_SIGNING_KEY";
const SECRET: &str = "e2e-signing-secret-0123456789abcdef";
const PARAM: &str = "sd-routing-key";
const COOKIE: &str = "sd-key";

fn signed_config() -> serde_json::Value {
    let mut config = mesh::demo_plugin_config(Mode::Header);
    config["edge"] = serde_json::json!({
        "signedKeys": {
            "secretEnv": SECRET_ENV,
            "queryParameter": PARAM,
            "cookie": COOKIE,
            "setCookie": true,
            "maxTtlSeconds": 86_400,
        }
    });
    config
}

/// The gateway: header mode at the edge, signed keys accepted.
fn gateway() -> &'static DemoMesh {
    static MESH: OnceLock<Result<DemoMesh, String>> = OnceLock::new();
    let started = MESH.get_or_init(|| {
        let mut options = MeshOptions::for_tests(Mode::Header, signed_config());
        options.label = "mesh-signed".to_owned();
        options.plugin_env = vec![(SECRET_ENV.to_owned(), SECRET.to_owned())];
        DemoMesh::start(&options).map_err(|error| format!("{error:#}"))
    });
    started
        .as_ref()
        .unwrap_or_else(|error| panic!("could not start the signed-keys mesh: {error}"))
}

/// `routeservice sign` with the test secret.
fn sign(key: &str, ttl: &str) -> String {
    let output = Command::new(routeservice::binary().unwrap())
        .args([
            "sign",
            "--key",
            key,
            "--ttl",
            ttl,
            "--secret-env",
            SECRET_ENV,
        ])
        .env(SECRET_ENV, SECRET)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "routeservice sign: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn send(mesh: &DemoMesh, request: &Request) -> Response {
    request.send(mesh.listener()).unwrap()
}

#[track_caller]
fn served(mesh: &DemoMesh, request: &Request, by: &str) -> (Response, Echo) {
    let response = send(mesh, request);
    assert_eq!(
        (response.status, response.header("x-served-by").as_deref()),
        (200, Some(by)),
        "{}",
        response.text()
    );
    let echo = Echo::parse(&response.body).unwrap();
    (response, echo)
}

fn counter(mesh: &DemoMesh, name: &str) -> u64 {
    mesh.envoy().plugin_counter(name).unwrap().unwrap_or(0)
}

#[track_caller]
fn assert_plugin_healthy(mesh: &DemoMesh) {
    let log = mesh.envoy().log().unwrap();
    let problems = envoy_log::plugin_problems(&log);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_preview_link_routes_to_the_fork_and_sets_the_cookie() {
    let mesh = gateway();
    let token = sign("pr-42", "2h");
    let accepted = counter(mesh, "sandbox_router.signed_key_accepted");
    let request = Request::get(&format!("/shop?page=2&{PARAM}={token}"))
        .header("host", CATALOG)
        .header("baggage", "other=1");
    let (response, echo) = served(mesh, &request, "catalog/pr-42");
    // The key joined baggage for the hops behind; the signature did not.
    assert_eq!(
        echo.header_values("baggage"),
        ["other=1,sd-routing-key=pr-42"]
    );
    assert_eq!(echo.target, "/shop?page=2");
    assert_eq!(echo.header("x-sandbox-route").as_deref(), Some("pr-42"));
    let set_cookie = response.header("set-cookie").unwrap();
    assert!(
        set_cookie.starts_with(&format!("{COOKIE}={token}; Max-Age=")),
        "{set_cookie}"
    );
    assert!(set_cookie.ends_with("; Path=/; HttpOnly; Secure; SameSite=Lax"));
    assert_eq!(
        counter(mesh, "sandbox_router.signed_key_accepted"),
        accepted + 1
    );
    assert_plugin_healthy(mesh);
}

#[test]
fn the_cookie_then_routes_the_next_pages_and_is_not_forwarded() {
    let mesh = gateway();
    let token = sign("pr-42", "30m");
    let request = Request::get("/next")
        .header("host", CATALOG)
        .header("cookie", format!("session=abc; {COOKIE}={token}"));
    let (response, echo) = served(mesh, &request, "catalog/pr-42");
    assert_eq!(echo.header_values("cookie"), ["session=abc"]);
    assert_eq!(echo.header_values("baggage"), ["sd-routing-key=pr-42"]);
    assert_eq!(response.header("set-cookie"), None, "only a link sets it");
    assert_plugin_healthy(mesh);
}

#[test]
fn forged_expired_and_plain_keys_reach_baseline_stripped() {
    let mesh = gateway();
    let good = sign("pr-42", "1h");
    let (rest, signature) = good.rsplit_once('.').unwrap();
    let (_, expiry) = rest.rsplit_once('.').unwrap();
    let forged_key = format!("pr-43.{expiry}.{signature}");
    let expired = {
        // Signed with the right secret, a second in the past is not
        // possible through the CLI (ttl >= 1s): sign for 1s and wait it out.
        let token = sign("pr-42", "1s");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        token
    };
    let too_long = sign("pr-42", "2d");
    let before = counter(mesh, "sandbox_router.signed_key_rejected");
    let tokens = [
        forged_key.as_str(),
        expired.as_str(),
        too_long.as_str(),
        "pr-42",
        "pr-42.1.AAAA",
    ];
    for token in tokens {
        let request = Request::get(&format!("/?{PARAM}={token}&a=1"))
            .header("host", CATALOG)
            .header("baggage", "sd-routing-key=pr-42");
        let (response, echo) = served(mesh, &request, "catalog/baseline");
        assert_eq!(echo.target, "/?a=1", "{token}: stripped");
        assert!(echo.header_values("baggage").is_empty(), "{token}");
        assert_eq!(response.header("set-cookie"), None);
        // In a cookie too.
        let request = Request::get("/")
            .header("host", CATALOG)
            .header("cookie", format!("{COOKIE}={token}"));
        let (_, echo) = served(mesh, &request, "catalog/baseline");
        assert!(echo.header_values("cookie").is_empty(), "{token}");
    }
    assert_eq!(
        counter(mesh, "sandbox_router.signed_key_rejected"),
        before + 2 * tokens.len() as u64
    );
    // A plain key from outside is still stripped (edge.stripIncomingKeys
    // is on inside an edge block): baseline, not counted as signed.
    let request = Request::get("/")
        .header("host", CATALOG)
        .header("baggage", "sd-routing-key=pr-42");
    let (_, echo) = served(mesh, &request, "catalog/baseline");
    assert!(echo.header_values("baggage").is_empty());
    assert_plugin_healthy(mesh);
}

/// Without the secret in the VM the configuration is refused, naming the
/// field, and the gateway still strips every key (pass-through at the edge).
#[test]
fn a_missing_secret_refuses_the_config_and_still_strips() {
    let mut options = MeshOptions::for_tests(Mode::Header, signed_config());
    options.label = "mesh-signed-no-secret".to_owned();
    let mesh = DemoMesh::start(&options).unwrap();
    let log = mesh.envoy().log().unwrap();
    let lines: Vec<&str> = envoy_log::plugin_lines(&log)
        .into_iter()
        .filter(|line| line.contains("invalid configuration"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(&format!(
            "edge.signedKeys.secretEnv: environment variable {SECRET_ENV} is not set"
        )),
        "{}",
        lines[0]
    );
    assert!(!lines[0].contains(SECRET));
    let token = sign("pr-42", "1h");
    let request = Request::get(&format!("/?{PARAM}={token}"))
        .header("host", CATALOG)
        .header("baggage", "sd-routing-key=pr-42");
    let (_, echo) = served(&mesh, &request, "catalog/baseline");
    assert!(echo.header_values("baggage").is_empty());
    assert_eq!(counter(&mesh, "sandbox_router.config_valid"), 0);
}
