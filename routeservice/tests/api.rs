//! The HTTP API in-process: `app(state)` driven with `tower::ServiceExt::oneshot`,
//! over an in-memory store. Every error path is named in its test.

// A test crate: its helpers, like its tests, fail loudly (clippy.toml allows
// that only inside `#[test]` functions themselves).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use routeservice::metrics::Metrics;
use routeservice::service::Seed;
use routeservice::store::{MemoryStore, Store};
use routeservice::{app, AppState, Auth, RouteService};
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "dev-token";

struct Harness {
    app: Router,
    store: Arc<MemoryStore>,
    service: Arc<RouteService>,
}

fn harness() -> Harness {
    let store = Arc::new(MemoryStore::new());
    let metrics = Arc::new(Metrics::new());
    let service = Arc::new(
        RouteService::open(store.clone() as Arc<dyn Store>)
            .unwrap()
            .with_observer(metrics.clone()),
    );
    let state = AppState::new(
        Auth::token(TOKEN).unwrap(),
        metrics,
        routeservice::api::DEFAULT_BODY_LIMIT,
    );
    state.set_ready(service.clone());
    Harness {
        app: app(state),
        store,
        service,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn error(&self) -> String {
        let json = self.json();
        assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
        json["error"].as_str().unwrap().to_owned()
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn get_with(&self, uri: &str, name: &str, value: &str) -> Answer {
        self.send(
            Request::get(uri)
                .header(name, value)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn put_raw(&self, name: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
        let mut request = Request::put(format!("/v1/sandboxes/{name}"))
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    async fn put(&self, name: &str, body: Value) -> Answer {
        self.put_raw(
            name,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    async fn delete(&self, name: &str) -> Answer {
        self.send(
            Request::delete(format!("/v1/sandboxes/{name}"))
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    fn version(&self) -> u64 {
        self.service.snapshot().version()
    }

    /// The stored state, to check a refused request changed nothing.
    fn stored(&self) -> routeservice::store::Stored {
        self.store.load().unwrap()
    }
}

fn sandbox(key: &str, routes: &[(&str, &str)]) -> Value {
    json!({
        "routingKey": key,
        "routes": routes.iter().map(|(b, t)| json!({"baseline": b, "target": t})).collect::<Vec<_>>(),
    })
}

const CATALOG: &str = "catalog.demo.svc.cluster.local";
const CATALOG_FORK: &str = "catalog-pr-42.demo.svc.cluster.local";
const REVIEWS: &str = "reviews.demo.svc.cluster.local";
const REVIEWS_FORK: &str = "reviews-pr-42.demo.svc.cluster.local";

#[tokio::test]
async fn put_creates_then_replaces_and_bumps_the_version() {
    let h = harness();
    assert_eq!(h.version(), 0);

    let created = h
        .put("pr-42", sandbox("pr-42", &[(CATALOG, CATALOG_FORK)]))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        created.header(header::LOCATION),
        Some("/v1/sandboxes/pr-42")
    );
    assert_eq!(
        created.json(),
        json!({"name": "pr-42", "routingKey": "pr-42", "version": 1,
               "routes": [{"baseline": CATALOG, "target": CATALOG_FORK}]})
    );

    let replaced = h
        .put(
            "pr-42",
            sandbox("pr-42", &[(CATALOG, CATALOG_FORK), (REVIEWS, REVIEWS_FORK)]),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK);
    assert_eq!(replaced.json()["version"], 2);
    assert_eq!(replaced.json()["routes"].as_array().unwrap().len(), 2);
    assert_eq!(h.version(), 2);
    assert_eq!(h.stored().version, 2);

    // The same content again changes nothing: no commit, no new version.
    let same = h
        .put(
            "pr-42",
            sandbox("pr-42", &[(CATALOG, CATALOG_FORK), (REVIEWS, REVIEWS_FORK)]),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.json()["version"], 2);
    assert_eq!(h.version(), 2);
}

#[tokio::test]
async fn routes_are_the_whole_table_sorted_with_an_etag() {
    let h = harness();
    h.put("zeta", sandbox("b-key", &[(REVIEWS, "reviews-z.demo")]))
        .await;
    h.put("alpha", sandbox("b-key", &[(CATALOG, "catalog-a.demo")]))
        .await;
    h.put(
        "mid",
        sandbox("a-key", &[(REVIEWS, "r.m"), (CATALOG, "c.m")]),
    )
    .await;

    let all = h.get("/v1/routes").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.header(header::CONTENT_TYPE), Some("application/json"));
    assert_eq!(all.header(header::ETAG), Some("\"3\""));
    assert_eq!(
        all.json(),
        json!({"version": 3, "routes": [
            {"routingKey": "a-key", "sandbox": "mid", "baseline": CATALOG, "target": "c.m"},
            {"routingKey": "a-key", "sandbox": "mid", "baseline": REVIEWS, "target": "r.m"},
            {"routingKey": "b-key", "sandbox": "alpha", "baseline": CATALOG, "target": "catalog-a.demo"},
            {"routingKey": "b-key", "sandbox": "zeta", "baseline": REVIEWS, "target": "reviews-z.demo"},
        ]})
    );
    // Every route parses as the core's `Route` and passes its validation.
    let parsed: routeservice::model::RouteList = serde_json::from_slice(&all.body).unwrap();
    for route in &parsed.routes {
        route.validate().unwrap();
    }
}

#[tokio::test]
async fn if_none_match_answers_304_for_the_current_version_only() {
    let h = harness();
    h.put("pr-42", sandbox("pr-42", &[(CATALOG, CATALOG_FORK)]))
        .await;
    for matching in ["\"1\"", "W/\"1\"", "*", "\"0\", \"1\"", "W/\"9\",W/\"1\""] {
        let answer = h.get_with("/v1/routes", "if-none-match", matching).await;
        assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "{matching}");
        assert_eq!(answer.header(header::ETAG), Some("\"1\""));
        assert!(answer.body.is_empty());
        let by_key = h
            .get_with("/v1/routes?routingKey=pr-42", "if-none-match", matching)
            .await;
        assert_eq!(by_key.status, StatusCode::NOT_MODIFIED, "{matching}");
    }
    for stale in ["\"0\"", "W/\"0\"", "1", "\"1", "garbage"] {
        let answer = h.get_with("/v1/routes", "if-none-match", stale).await;
        assert_eq!(answer.status, StatusCode::OK, "{stale}");
    }
    // A change makes the old tag stale.
    h.put("pr-7", sandbox("pr-7", &[(CATALOG, "c7.demo")]))
        .await;
    let answer = h.get_with("/v1/routes", "if-none-match", "\"1\"").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header(header::ETAG), Some("\"2\""));
}

#[tokio::test]
async fn routes_of_one_key() {
    let h = harness();
    h.put("pr-42", sandbox("pr-42", &[(CATALOG, CATALOG_FORK)]))
        .await;
    h.put("pr-7", sandbox("pr-7", &[(REVIEWS, "r7.demo")]))
        .await;

    let one = h.get("/v1/routes?routingKey=pr-42").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.header(header::ETAG), Some("\"2\""));
    assert_eq!(
        one.json(),
        json!({"version": 2, "routes": [
            {"routingKey": "pr-42", "sandbox": "pr-42", "baseline": CATALOG, "target": CATALOG_FORK}
        ]})
    );
    let none = h.get("/v1/routes?routingKey=pr-99").await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.json(), json!({"version": 2, "routes": []}));
}

#[tokio::test]
async fn routes_400_bad_routing_key_names_routing_key() {
    let h = harness();
    for bad in ["bad%20key", "", "a%2Fb", &"k".repeat(129)] {
        let answer = h.get(&format!("/v1/routes?routingKey={bad}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            answer.error().starts_with("routingKey: "),
            "{}",
            answer.error()
        );
    }
}

#[tokio::test]
async fn routes_400_unknown_query_parameter() {
    let h = harness();
    let answer = h.get("/v1/routes?routing_key=pr-42").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("routing_key"), "{}", answer.error());
}

#[tokio::test]
async fn list_get_and_delete() {
    let h = harness();
    h.put("pr-7", sandbox("pr-7", &[(REVIEWS, "r7.demo")]))
        .await;
    h.put("pr-42", sandbox("pr-42", &[(CATALOG, CATALOG_FORK)]))
        .await;

    let list = h.get("/v1/sandboxes").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(
        list.json(),
        json!({"version": 2, "sandboxes": [
            {"name": "pr-42", "routingKey": "pr-42", "version": 2,
             "routes": [{"baseline": CATALOG, "target": CATALOG_FORK}]},
            {"name": "pr-7", "routingKey": "pr-7", "version": 1,
             "routes": [{"baseline": REVIEWS, "target": "r7.demo"}]},
        ]})
    );

    let one = h.get("/v1/sandboxes/pr-7").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["name"], "pr-7");

    let deleted = h.delete("pr-7").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.body.is_empty());
    assert_eq!(h.version(), 3);
    assert_eq!(h.stored().version, 3);
    assert!(!h.stored().sandboxes.contains_key("pr-7"));
    assert_eq!(
        h.get("/v1/routes").await.json()["routes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn get_404_absent_sandbox() {
    let h = harness();
    let answer = h.get("/v1/sandboxes/pr-1").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.error().contains("pr-1"), "{}", answer.error());
}

#[tokio::test]
async fn delete_404_absent_sandbox_keeps_the_version() {
    let h = harness();
    h.put("pr-42", sandbox("pr-42", &[(CATALOG, CATALOG_FORK)]))
        .await;
    let answer = h.delete("pr-1").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.error().contains("pr-1"), "{}", answer.error());
    assert_eq!(h.version(), 1);
}

#[tokio::test]
async fn get_400_bad_sandbox_name() {
    let h = harness();
    let answer = h.get("/v1/sandboxes/Bad_Name").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().starts_with("name: "), "{}", answer.error());
}

/// Each refused PUT: the status, a piece of the error (the field), and
/// nothing stored changed.
#[tokio::test]
async fn put_400_paths_name_the_field_and_change_nothing() {
    let h = harness();
    h.put("pr-42", sandbox("pr-42", &[(CATALOG, CATALOG_FORK)]))
        .await;
    let before = h.stored();
    let routes_before = h.get("/v1/routes").await.body;

    let long_name = "a".repeat(64);
    let json_cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "bad sandbox name",
            "Bad_Name",
            sandbox("k", &[(CATALOG, "t.demo")]),
            "name: ",
        ),
        (
            "name too long",
            &long_name,
            sandbox("k", &[(CATALOG, "t.demo")]),
            "name: ",
        ),
        (
            "routing key charset",
            "pr-42",
            sandbox("pr 42", &[(CATALOG, "t.demo")]),
            "routingKey: ",
        ),
        (
            "routing key empty",
            "pr-42",
            sandbox("", &[(CATALOG, "t.demo")]),
            "routingKey: ",
        ),
        ("no routes", "pr-42", sandbox("pr-42", &[]), "routes: "),
        (
            "upper-case baseline",
            "pr-42",
            sandbox("pr-42", &[("Catalog.demo", "t.demo")]),
            "routes[0].baseline: ",
        ),
        (
            "empty baseline",
            "pr-42",
            sandbox("pr-42", &[("", "t.demo")]),
            "routes[0].baseline: ",
        ),
        (
            "target equal to its baseline",
            "pr-42",
            sandbox("pr-42", &[(CATALOG, CATALOG)]),
            "routes[0].target: must differ from baseline",
        ),
        (
            "single-label target",
            "pr-42",
            sandbox("pr-42", &[(CATALOG, "evil")]),
            "routes[0].target: must be a fully qualified service name",
        ),
        (
            "target not a DNS name",
            "pr-42",
            sandbox("pr-42", &[(CATALOG, "t_x.demo")]),
            "routes[0].target: ",
        ),
        (
            "target an IP",
            "pr-42",
            sandbox("pr-42", &[(CATALOG, "10.0.0.1")]),
            "routes[0].target: ",
        ),
        (
            "duplicate baseline",
            "pr-42",
            sandbox(
                "pr-42",
                &[
                    (CATALOG, "a.demo"),
                    (REVIEWS, "r.demo"),
                    (CATALOG, "b.demo"),
                ],
            ),
            "routes[2].baseline: ",
        ),
        (
            "unknown top-level field",
            "pr-42",
            json!({"routingKey": "pr-42", "routes": [], "sandbox": "x"}),
            "unknown field `sandbox`",
        ),
        (
            "unknown route field",
            "pr-42",
            json!({"routingKey": "pr-42", "routes": [{"baseline": CATALOG, "target": "t.demo", "weight": 1}]}),
            "routes[0]",
        ),
        (
            "missing routingKey",
            "pr-42",
            json!({"routes": []}),
            "missing field `routingKey`",
        ),
        (
            "missing target",
            "pr-42",
            json!({"routingKey": "k", "routes": [{"baseline": CATALOG}]}),
            "missing field `target`",
        ),
        (
            "wrong type",
            "pr-42",
            json!({"routingKey": 42, "routes": []}),
            "routingKey: invalid type",
        ),
        (
            "routes not a list",
            "pr-42",
            json!({"routingKey": "k", "routes": {"baseline": CATALOG}}),
            "routes: invalid type",
        ),
        (
            "body not an object",
            "pr-42",
            json!("x"),
            "body: invalid type",
        ),
        (
            "body a short list",
            "pr-42",
            json!(["x"]),
            "body: invalid length",
        ),
    ];
    for (what, name, body, expected) in json_cases {
        let answer = h.put(name, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}");
        let error = answer.error();
        assert!(
            error.contains(expected),
            "{what}: {error:?} lacks {expected:?}"
        );
    }

    let raw_cases: Vec<(&str, &[u8], &str)> = vec![
        (
            "malformed JSON",
            b"{\"routingKey\": \"k\",\n \"routes\": [}",
            "body: malformed JSON",
        ),
        (
            "malformed JSON says where",
            b"{\"routingKey\": \"k\",\n \"routes\": [}",
            "line 2 column",
        ),
        (
            "truncated JSON",
            b"{\"routingKey\": \"k\"",
            "body: malformed JSON",
        ),
        (
            "trailing bytes",
            b"{\"routingKey\": \"k\", \"routes\": []} {}",
            "trailing characters",
        ),
        ("empty body", b"", "body: malformed JSON"),
        (
            "not UTF-8",
            b"{\"routingKey\": \"\xff\", \"routes\": []}",
            "body",
        ),
    ];
    for (what, body, expected) in raw_cases {
        let answer = h
            .put_raw("pr-42", Some("application/json"), body.to_vec())
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}");
        let error = answer.error();
        assert!(
            error.contains(expected),
            "{what}: {error:?} lacks {expected:?}"
        );
    }

    assert_eq!(h.stored(), before, "a refused PUT changed the store");
    assert_eq!(h.get("/v1/routes").await.body, routes_before);
}

#[tokio::test]
async fn put_415_wrong_content_type() {
    let h = harness();
    let body = sandbox("k", &[(CATALOG, "t.demo")])
        .to_string()
        .into_bytes();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let answer = h.put_raw("pr-1", content_type, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert!(
            answer.error().starts_with("Content-Type: "),
            "{}",
            answer.error()
        );
    }
    // Parameters are fine.
    let answer = h
        .put_raw("pr-1", Some("Application/JSON; charset=utf-8"), body)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
}

#[tokio::test]
async fn put_413_body_past_the_limit() {
    let h = harness();
    let big = vec![b' '; routeservice::api::DEFAULT_BODY_LIMIT + 1];
    // Declared length: refused before reading.
    let declared = h
        .send(
            Request::put("/v1/sandboxes/pr-1")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, big.len())
                .body(Body::from(big.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(declared.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(declared.error().contains("65536"), "{}", declared.error());
    // No declared length: refused while reading.
    let streamed = h.put_raw("pr-1", Some("application/json"), big).await;
    assert_eq!(streamed.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.version(), 0);
}

#[tokio::test]
async fn put_409_routing_key_and_baseline_forked_by_another_sandbox() {
    let h = harness();
    h.put("pr-42", sandbox("shared", &[(CATALOG, CATALOG_FORK)]))
        .await;
    let before = h.stored();

    // The second route of another sandbox takes the same (key, baseline).
    let answer = h
        .put(
            "pr-43",
            sandbox("shared", &[(REVIEWS, "r43.demo"), (CATALOG, "c43.demo")]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    let error = answer.error();
    assert!(error.starts_with("routes[1].baseline: "), "{error}");
    assert!(error.contains("\"pr-42\""), "{error}");
    assert_eq!(h.stored(), before);

    // The same baseline under another key is no conflict; nor is the owner
    // replacing its own route.
    assert_eq!(
        h.put("pr-44", sandbox("other", &[(CATALOG, "c44.demo")]))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        h.put("pr-42", sandbox("shared", &[(CATALOG, "c42b.demo")]))
            .await
            .status,
        StatusCode::OK
    );
    // Once the owner lets go, another sandbox may take it.
    h.put("pr-42", sandbox("shared", &[(REVIEWS, REVIEWS_FORK)]))
        .await;
    assert_eq!(
        h.put("pr-43", sandbox("shared", &[(CATALOG, "c43.demo")]))
            .await
            .status,
        StatusCode::CREATED
    );
    h.delete("pr-43").await;
    assert_eq!(
        h.put("pr-45", sandbox("shared", &[(CATALOG, "c45.demo")]))
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn writes_401_without_the_token() {
    let h = harness();
    let body = sandbox("k", &[(CATALOG, "t.demo")]).to_string();
    let cases: Vec<(&str, Option<&str>, Option<&str>)> = vec![
        ("no Authorization", None, None),
        ("wrong token", Some("Bearer nope"), Some("invalid_token")),
        (
            "token prefix",
            Some("Bearer dev-toke"),
            Some("invalid_token"),
        ),
        ("other scheme", Some("Basic ZGV2LXRva2Vu"), None),
        ("no scheme", Some("dev-token"), None),
    ];
    for (what, authorization, challenge_has) in cases {
        for method in ["PUT", "DELETE"] {
            let mut request = Request::builder()
                .method(method)
                .uri("/v1/sandboxes/pr-1")
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            let answer = h
                .send(request.body(Body::from(body.clone())).unwrap())
                .await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{what} {method}");
            let challenge = answer.header(header::WWW_AUTHENTICATE).unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
            if let Some(part) = challenge_has {
                assert!(challenge.contains(part), "{what}: {challenge}");
            }
            assert!(!answer.error().is_empty());
        }
    }
    // Auth comes before anything else: an invalid body is still a 401.
    let answer = h
        .send(
            Request::put("/v1/sandboxes/Bad_Name")
                .body(Body::from("{"))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.version(), 0);
    // Reads need no token.
    assert_eq!(h.get("/v1/routes").await.status, StatusCode::OK);
    assert_eq!(h.get("/v1/sandboxes").await.status, StatusCode::OK);
}

/// Issue 10: with two `Authorization` fields, only the first was checked,
/// so a proxy that reads the last could see another identity.
#[tokio::test]
async fn writes_400_with_two_authorization_headers() {
    let h = harness();
    let body = sandbox("k", &[(CATALOG, "t.demo")]).to_string();
    for second in [format!("Bearer {TOKEN}"), "Bearer nope".to_owned()] {
        for method in ["PUT", "DELETE"] {
            let request = Request::builder()
                .method(method)
                .uri("/v1/sandboxes/pr-1")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::AUTHORIZATION, &second);
            let answer = h
                .send(request.body(Body::from(body.clone())).unwrap())
                .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{method} {second}");
            let error = answer.error();
            assert!(error.starts_with("Authorization: sent 2 times"), "{error}");
        }
    }
    assert_eq!(h.version(), 0, "a refused write changed the table");
}

#[tokio::test]
async fn insecure_mode_writes_without_a_token() {
    let service = RouteService::open(Arc::new(MemoryStore::new())).unwrap();
    let app = app(AppState::ready(service, Auth::Disabled));
    let request = Request::put("/v1/sandboxes/pr-1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(sandbox("k", &[(CATALOG, "t.demo")]).to_string()))
        .unwrap();
    assert_eq!(
        app.oneshot(request).await.unwrap().status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn put_500_storage_failure_changes_nothing() {
    let h = harness();
    h.put("pr-42", sandbox("pr-42", &[(CATALOG, CATALOG_FORK)]))
        .await;
    let before = h.stored();
    let routes_before = h.get("/v1/routes").await.body;
    h.store.fail_next_commit();
    let answer = h
        .put("pr-43", sandbox("pr-43", &[(CATALOG, "c43.demo")]))
        .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.error(), "internal error", "no internal detail leaks");
    assert_eq!(h.stored(), before);
    assert_eq!(h.get("/v1/routes").await.body, routes_before);
    // The next write goes through, with the next version.
    let answer = h
        .put("pr-43", sandbox("pr-43", &[(CATALOG, "c43.demo")]))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.json()["version"], 2);
}

#[tokio::test]
async fn unknown_endpoints_and_methods() {
    let h = harness();
    let answer = h.get("/v2/routes").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(!answer.error().is_empty());
    let answer = h
        .send(Request::post("/v1/routes").body(Body::empty()).unwrap())
        .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(answer.error().contains("POST"));
}

#[tokio::test]
async fn readiness_is_a_latch_over_loading() {
    let state = AppState::new(Auth::token(TOKEN).unwrap(), Arc::new(Metrics::new()), 1024);
    let app = app(state.clone());
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    assert_eq!(
        app.clone().oneshot(get("/healthz")).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        app.clone().oneshot(get("/readyz")).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        app.clone()
            .oneshot(get("/v1/routes"))
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        app.clone().oneshot(get("/metrics")).await.unwrap().status(),
        StatusCode::OK
    );

    let service = Arc::new(RouteService::open(Arc::new(MemoryStore::new())).unwrap());
    assert!(state.set_ready(service.clone()));
    assert!(!state.set_ready(service), "once ready, never set again");
    let ready = app.clone().oneshot(get("/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body = to_bytes(ready.into_body(), usize::MAX).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"status": "ready", "version": 0})
    );
    assert_eq!(
        app.oneshot(get("/v1/routes")).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let h = harness();
    h.put(
        "pr-42",
        sandbox("pr-42", &[(CATALOG, CATALOG_FORK), (REVIEWS, REVIEWS_FORK)]),
    )
    .await;
    h.get("/v1/sandboxes/pr-1").await;
    h.get("/v1/routes").await;
    h.get("/nowhere").await;
    let answer = h.get("/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer
        .header(header::CONTENT_TYPE)
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(answer.body).unwrap();
    for line in [
        "routeservice_http_requests_total{method=\"PUT\",route=\"/v1/sandboxes/{name}\",status=\"201\"} 1",
        "routeservice_http_requests_total{method=\"GET\",route=\"/v1/sandboxes/{name}\",status=\"404\"} 1",
        "routeservice_http_requests_total{method=\"GET\",route=\"/v1/routes\",status=\"200\"} 1",
        "routeservice_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        "routeservice_http_request_duration_seconds_count{route=\"/v1/routes\"} 1",
        "routeservice_store_commit_duration_seconds_count 1",
        "routeservice_store_commit_failures_total 0",
        "routeservice_ready 1",
        "routeservice_routes 2",
        "routeservice_sandboxes 1",
        "routeservice_table_version 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

fn seed(json: Value) -> Seed {
    serde_json::from_value(json).unwrap()
}

#[tokio::test]
async fn seeding_twice_bumps_the_version_once() {
    let h = harness();
    h.put("kept", sandbox("kept", &[(REVIEWS, "r.kept")])).await;
    let s = seed(json!({"sandboxes": {
        "pr-42": {"routingKey": "pr-42", "routes": [{"baseline": CATALOG, "target": CATALOG_FORK}]},
        "pr-7": {"routingKey": "pr-7", "routes": [{"baseline": REVIEWS, "target": "r7.demo"}]},
    }}));
    let first = h.service.apply_seed(&s).unwrap();
    assert_eq!((first.changed, first.version), (2, 2));
    let again = h.service.apply_seed(&s).unwrap();
    assert_eq!((again.changed, again.version), (0, 2));
    assert_eq!(h.stored().version, 2);
    // Sandboxes not in the seed stay.
    assert_eq!(h.get("/v1/sandboxes/kept").await.status, StatusCode::OK);

    // One sandbox changed: one commit, one bump, only it rewritten.
    let changed = seed(json!({"sandboxes": {
        "pr-42": {"routingKey": "pr-42", "routes": [{"baseline": CATALOG, "target": "other.demo"}]},
        "pr-7": {"routingKey": "pr-7", "routes": [{"baseline": REVIEWS, "target": "r7.demo"}]},
    }}));
    let third = h.service.apply_seed(&changed).unwrap();
    assert_eq!((third.changed, third.version), (1, 3));
    assert_eq!(h.get("/v1/sandboxes/pr-7").await.json()["version"], 2);
    assert_eq!(h.get("/v1/sandboxes/pr-42").await.json()["version"], 3);
}

#[tokio::test]
async fn seed_400_and_409_paths_name_the_sandbox_and_change_nothing() {
    let h = harness();
    h.put("owner", sandbox("shared", &[(CATALOG, "c.owner")]))
        .await;
    let before = h.stored();
    let cases = [
        (
            json!({"sandboxes": {"Bad": {"routingKey": "k", "routes": [{"baseline": CATALOG, "target": "t.x"}]}}}),
            "sandboxes.Bad: ",
        ),
        (
            json!({"sandboxes": {"ok": {"routingKey": "k", "routes": [{"baseline": "A.b", "target": "t.x"}]}}}),
            "sandboxes.ok.routes[0].baseline: ",
        ),
        (
            json!({"sandboxes": {
                "a-ok": {"routingKey": "k", "routes": [{"baseline": REVIEWS, "target": "t.x"}]},
                "b-thief": {"routingKey": "shared", "routes": [{"baseline": CATALOG, "target": "t.y"}]},
            }}),
            "sandboxes.b-thief.routes[0].baseline: ",
        ),
        (
            json!({"sandboxes": {
                "a": {"routingKey": "same", "routes": [{"baseline": REVIEWS, "target": "t.x"}]},
                "b": {"routingKey": "same", "routes": [{"baseline": REVIEWS, "target": "t.y"}]},
            }}),
            "sandboxes.b.routes[0].baseline: ",
        ),
    ];
    for (json, expected) in cases {
        let err = h.service.apply_seed(&seed(json)).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{err:?} is not {expected:?}");
        assert_eq!(h.stored(), before);
    }
    // The parser names unknown fields with their path.
    let err = Seed::parse(br#"{"sandboxes": {"a": {"routingKey": "k", "routes": [], "x": 1}}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("sandboxes.a"), "{err}");
    assert!(err.contains("unknown field `x`"), "{err}");
}

#[tokio::test]
async fn the_seed_may_take_over_routes_among_its_own_sandboxes() {
    let h = harness();
    h.put("a", sandbox("k", &[(CATALOG, "c.a")])).await;
    // In one seed, `a` lets go of CATALOG and `b` takes it.
    let s = seed(json!({"sandboxes": {
        "a": {"routingKey": "k", "routes": [{"baseline": REVIEWS, "target": "r.a"}]},
        "b": {"routingKey": "k", "routes": [{"baseline": CATALOG, "target": "c.b"}]},
    }}));
    assert_eq!(h.service.apply_seed(&s).unwrap().changed, 2);
    assert_eq!(h.service.snapshot().owner("k", CATALOG), Some("b"));
}

// ------------------------------------------------------- GET /v1/decisions

/// `(process, reason, version)` of a decision that must answer 200.
async fn decision(h: &Harness, query: &str) -> (bool, String, u64) {
    let answer = h.get(&format!("/v1/decisions?{query}")).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{query}: {:?}",
        answer.json()
    );
    assert_eq!(
        answer.header(header::CONTENT_TYPE),
        Some("application/json")
    );
    let json = answer.json();
    assert_eq!(json.as_object().unwrap().len(), 3, "{json}");
    (
        json["process"].as_bool().unwrap(),
        json["reason"].as_str().unwrap().to_owned(),
        json["version"].as_u64().unwrap(),
    )
}

/// A table where `pr-42` forks catalog and `pr-7` forks reviews only.
async fn decisions_harness() -> Harness {
    let h = harness();
    h.put("pr-42", sandbox("pr-42", &[(CATALOG, CATALOG_FORK)]))
        .await;
    h.put(
        "pr-7",
        sandbox("pr-7", &[(REVIEWS, "reviews-pr-7.demo.svc.cluster.local")]),
    )
    .await;
    assert_eq!(h.version(), 2);
    h
}

const BASELINE: &str = "workload=catalog.demo.svc.cluster.local";
const FORK: &str = "workload=catalog.demo.svc.cluster.local&sandbox=pr-42";
const OTHER_FORK: &str = "workload=catalog.demo.svc.cluster.local&sandbox=pr-7";

#[tokio::test]
async fn decisions_forked_key_goes_to_the_sandbox_consumer_only() {
    let h = decisions_harness().await;
    let key = "routingKey=pr-42";
    let reason = "forked-by:pr-42".to_owned();
    assert_eq!(
        decision(&h, &format!("{key}&{BASELINE}")).await,
        (false, reason.clone(), 2)
    );
    assert_eq!(
        decision(&h, &format!("{key}&{FORK}")).await,
        (true, reason.clone(), 2)
    );
    assert_eq!(
        decision(&h, &format!("{key}&{OTHER_FORK}")).await,
        (false, reason, 2)
    );
}

#[tokio::test]
async fn decisions_no_key_invalid_key_and_unknown_key_are_baselines() {
    let h = decisions_harness().await;
    let too_long = format!("routingKey={}&", "x".repeat(129));
    let cases = [
        ("", "no-key"),
        ("routingKey=&", "no-key"),
        ("routingKey=bad%20key&", "invalid-key"),
        ("routingKey=a%2Fb&", "invalid-key"),
        (too_long.as_str(), "invalid-key"),
        ("routingKey=pr-99&", "not-forked"),
        // pr-7 is a sandbox, but it does not fork catalog.
        ("routingKey=pr-7&", "not-forked"),
    ];
    for (key, reason) in cases {
        let baseline = decision(&h, &format!("{key}{BASELINE}")).await;
        assert_eq!(baseline, (true, reason.to_owned(), 2), "{key}");
        for fork in [FORK, OTHER_FORK] {
            let forked = decision(&h, &format!("{key}{fork}")).await;
            assert_eq!(forked, (false, reason.to_owned(), 2), "{key}{fork}");
        }
    }
}

#[tokio::test]
async fn decisions_follow_the_table_and_its_version() {
    let h = decisions_harness().await;
    let query = format!("routingKey=pr-7&workload={REVIEWS}");
    assert_eq!(
        decision(&h, &query).await,
        (false, "forked-by:pr-7".into(), 2)
    );
    assert_eq!(h.delete("pr-7").await.status, StatusCode::NO_CONTENT);
    assert_eq!(decision(&h, &query).await, (true, "not-forked".into(), 3));
    assert_eq!(
        decision(&h, &format!("{query}&sandbox=pr-7")).await,
        (false, "not-forked".into(), 3)
    );
}

#[tokio::test]
async fn decisions_400_name_the_field() {
    let h = decisions_harness().await;
    let cases = [
        ("routingKey=pr-42", "workload: is required"),
        ("routingKey=pr-42&workload=", "workload: must be"),
        (
            "workload=Catalog.demo.svc.cluster.local",
            "workload: must be",
        ),
        ("workload=10.0.0.1", "workload: must be"),
        ("workload=catalog_x.demo", "workload: must be"),
        ("workload=catalog.demo&sandbox=", "sandbox: must be"),
        ("workload=catalog.demo&sandbox=PR-42", "sandbox: must be"),
        ("workload=catalog.demo&sandbox=pr.42", "sandbox: must be"),
        ("workload=catalog.demo&ttl=5", "query: "),
        ("workload=a.b&workload=c.d", "query: "),
    ];
    for (query, prefix) in cases {
        let answer = h.get(&format!("/v1/decisions?{query}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        let error = answer.error();
        assert!(error.starts_with(prefix), "{query}: {error}");
    }
    let answer = h
        .send(
            Request::post(format!("/v1/decisions?{BASELINE}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn decisions_503_while_loading_and_counted_by_route() {
    let metrics = Arc::new(Metrics::new());
    let state = AppState::new(
        Auth::token(TOKEN).unwrap(),
        metrics,
        routeservice::api::DEFAULT_BODY_LIMIT,
    );
    let loading = app(state);
    let response = loading
        .oneshot(
            Request::get(format!("/v1/decisions?{BASELINE}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    let h = decisions_harness().await;
    decision(&h, BASELINE).await;
    let text = String::from_utf8(h.get("/metrics").await.body).unwrap();
    assert!(
        text.contains(
            r#"routeservice_http_requests_total{method="GET",route="/v1/decisions",status="200"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn since_answers_what_changed_then_304_then_410() {
    let h = harness();
    h.put("pr-42", sandbox("pr-42", &[(CATALOG, CATALOG_FORK)]))
        .await;
    h.put("pr-7", sandbox("pr-7", &[(REVIEWS, "r7.demo")]))
        .await;
    // pr-42 now forks reviews instead of catalog.
    h.put("pr-42", sandbox("pr-42", &[(REVIEWS, REVIEWS_FORK)]))
        .await;
    assert_eq!(h.version(), 3);

    let delta = h.get("/v1/routes?since=2").await;
    assert_eq!(delta.status, StatusCode::OK);
    assert_eq!(delta.header(header::ETAG), Some("\"3\""));
    assert_eq!(delta.header(header::CONTENT_TYPE), Some("application/json"));
    assert_eq!(
        delta.json(),
        json!({"version": 3, "since": 2,
            "upserts": [{"routingKey": "pr-42", "sandbox": "pr-42", "baseline": REVIEWS, "target": REVIEWS_FORK}],
            "deletes": [{"routingKey": "pr-42", "baseline": CATALOG}]})
    );
    // From the empty table: everything is an upsert, the deleted pair too
    // is named (deleting what a client does not hold is a no-op).
    let from_zero = h.get("/v1/routes?since=0").await.json();
    assert_eq!(from_zero["upserts"].as_array().unwrap().len(), 2);
    assert_eq!(
        from_zero["deletes"],
        json!([{"routingKey": "pr-42", "baseline": CATALOG}])
    );

    let current = h.get("/v1/routes?since=3").await;
    assert_eq!(current.status, StatusCode::NOT_MODIFIED);
    assert_eq!(current.header(header::ETAG), Some("\"3\""));
    assert!(current.body.is_empty());

    for unknown in ["4", "99999", &u64::MAX.to_string()] {
        let gone = h.get(&format!("/v1/routes?since={unknown}")).await;
        assert_eq!(gone.status, StatusCode::GONE, "{unknown}");
        assert!(gone.error().starts_with("since: "), "{}", gone.error());
        assert!(gone.error().contains("full table"), "{}", gone.error());
    }
    // The full form is unchanged.
    let full = h.get("/v1/routes").await.json();
    assert_eq!(full["version"], 3);
    assert_eq!(full["routes"].as_array().unwrap().len(), 2);

    let text = String::from_utf8(h.get("/metrics").await.body).unwrap();
    for line in [
        "routeservice_table_reads_total{answer=\"delta\"} 2",
        "routeservice_table_reads_total{answer=\"delta_not_modified\"} 1",
        "routeservice_table_reads_total{answer=\"gone\"} 3",
        "routeservice_table_reads_total{answer=\"full\"} 1",
        "routeservice_table_reads_total{answer=\"full_not_modified\"} 0",
        "routeservice_table_history_versions 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text
        .lines()
        .any(|l| l.starts_with("routeservice_table_read_bytes_total{answer=\"delta\"} ")));
}

#[tokio::test]
async fn since_410_after_a_restart_of_the_server() {
    let h = harness();
    h.put("pr-42", sandbox("pr-42", &[(CATALOG, CATALOG_FORK)]))
        .await;
    h.put("pr-7", sandbox("pr-7", &[(REVIEWS, "r7.demo")]))
        .await;
    // A new process over the same store: its history starts at version 2.
    let restarted = RouteService::open(h.store.clone() as Arc<dyn Store>).unwrap();
    let state = AppState::ready(restarted, Auth::token(TOKEN).unwrap());
    let again = Harness {
        app: app(state),
        store: h.store.clone(),
        service: h.service.clone(),
    };
    assert_eq!(
        again.get("/v1/routes?since=1").await.status,
        StatusCode::GONE
    );
    assert_eq!(
        again.get("/v1/routes?since=2").await.status,
        StatusCode::NOT_MODIFIED
    );
}

#[tokio::test]
async fn since_400_names_since() {
    let h = harness();
    for bad in ["", "-1", "x", "1.5", "18446744073709551616", "%201", "+1"] {
        let answer = h.get(&format!("/v1/routes?since={bad}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(answer.error().starts_with("since: "), "{}", answer.error());
    }
    let both = h.get("/v1/routes?since=0&routingKey=pr-42").await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert!(
        both.error().starts_with("since: ") && both.error().contains("routingKey"),
        "{}",
        both.error()
    );
}
