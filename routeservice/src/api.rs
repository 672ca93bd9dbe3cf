//! The HTTP API v1 (INTERFACES section 5) as an axum [`Router`]: [`app`].
//!
//! | call | answers |
//! |---|---|
//! | `GET /v1/routes[?routingKey=K]` | `{"version","routes"}`, `ETag`, `304` on `If-None-Match` |
//! | `GET /v1/routes?since=V` | `{"version","since","upserts","deletes"}`; `304` when `V` is current; `410` when `V` is not in the history |
//! | `PUT /v1/sandboxes/{name}` | `201` created / `200` replaced or unchanged, the stored sandbox |
//! | `GET /v1/sandboxes`, `GET /v1/sandboxes/{name}` | list / one (`404`) |
//! | `DELETE /v1/sandboxes/{name}` | `204` / `404` |
//! | `GET /v1/decisions?routingKey=K&workload=W[&sandbox=S]` | `{"process","reason","version"}`: the selective-consumption rule |
//! | `GET /healthz`, `/readyz`, `/metrics` | liveness, readiness latch, Prometheus text |
//!
//! Reads are open; writes need the bearer token. Every handler answers from
//! the service's current snapshot; writes run on a blocking thread (the store
//! fsyncs) that finishes even if the client goes away, so a commit is never
//! left unpublished.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use tower::timeout::error::Elapsed;
use tower::{BoxError, ServiceBuilder};

use crate::auth::Auth;
use crate::error::{error_response, ApiError, FieldError};
use crate::kube_auth::{Access, Verb};
use crate::metrics::{Metrics, TableRead};
use crate::model::{validate_name, validate_routing_key, SandboxSpec};
use crate::service::{DeltaAnswer, PutOutcome, RouteService, WriteError};
use crate::store::StoreError;
use sandbox_router_core::consumption::Consumer;
use sandbox_router_core::destination::{is_dns1123_label, is_dns_name};

/// Default limit of a request body.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Default time a request gets from the end of its headers to its answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one request may cost once its headers are in (the connection's
/// own limits are [`crate::connections::ConnectionLimits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest body accepted (`413` past it).
    pub body_bytes: usize,
    /// Time from the end of the headers to the answer, the body's arrival
    /// included (`408` past it): a body sent a byte at a time cannot hold a
    /// handler, and its buffer, for longer.
    pub timeout: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            body_bytes: DEFAULT_BODY_LIMIT,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Set once storage is open and loaded; once ready, never unready.
    service: OnceLock<Arc<RouteService>>,
    auth: Auth,
    metrics: Arc<Metrics>,
    limits: RequestLimits,
}

impl AppState {
    /// A state that is not ready yet: `/v1/*` answer `503` until
    /// [`AppState::set_ready`].
    pub fn new(auth: Auth, metrics: Arc<Metrics>, body_limit: usize) -> Self {
        let limits = RequestLimits {
            body_bytes: body_limit,
            ..RequestLimits::default()
        };
        AppState::with_limits(auth, metrics, limits)
    }

    /// [`AppState::new`] with every request limit given.
    pub fn with_limits(auth: Auth, metrics: Arc<Metrics>, limits: RequestLimits) -> Self {
        AppState {
            inner: Arc::new(Shared {
                service: OnceLock::new(),
                auth,
                metrics,
                limits,
            }),
        }
    }

    /// A ready state around `service` (tests, embedding).
    pub fn ready(service: RouteService, auth: Auth) -> Self {
        let metrics = Arc::new(Metrics::new());
        let state = AppState::new(auth, Arc::clone(&metrics), DEFAULT_BODY_LIMIT);
        state.set_ready(Arc::new(service.with_observer(metrics)));
        state
    }

    /// Latches readiness. A second call is ignored (returns `false`).
    pub fn set_ready(&self, service: Arc<RouteService>) -> bool {
        self.inner.service.set(service).is_ok()
    }

    pub fn is_ready(&self) -> bool {
        self.inner.service.get().is_some()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The service, or `503` while storage loads.
    pub fn service(&self) -> Result<Arc<RouteService>, ApiError> {
        self.inner.service.get().cloned().ok_or(ApiError::NotReady)
    }

    async fn authorize(&self, headers: &HeaderMap, access: Access<'_>) -> Result<(), ApiError> {
        self.inner.auth.authorize(headers, access).await
    }
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    let timeout = state.inner.limits.timeout;
    // Inside the access log, so a timed-out request is logged and counted.
    let request_timeout = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |e: BoxError| async move {
            if e.is::<Elapsed>() {
                ApiError::RequestTimeout { timeout }
            } else {
                tracing::error!(error = %e, "request failed in a middleware");
                ApiError::Internal
            }
        }))
        .timeout(timeout);
    Router::new()
        .route("/v1/routes", get(get_routes))
        .route("/v1/decisions", get(get_decision))
        .route("/v1/sandboxes", get(list_sandboxes))
        .route(
            "/v1/sandboxes/{name}",
            get(get_sandbox).put(put_sandbox).delete(delete_sandbox),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(request_timeout)
        .layer(middleware::from_fn_with_state(state.clone(), access_log))
        .with_state(state)
}

/// One log line and one metrics sample per request.
async fn access_log(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics()
        .request(method.as_str(), &route, status, took);
    tracing::info!(
        target: "routeservice::access",
        method = %method,
        route = %route,
        path = %path,
        status,
        latency_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RoutesQuery {
    routing_key: Option<String>,
    since: Option<String>,
}

/// The `since` of `GET /v1/routes?since=V`: a table version.
fn parse_since(since: &str) -> Result<u64, FieldError> {
    let digits = !since.is_empty() && since.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| since.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| {
            FieldError::new(
                "since",
                "must be a table version (an unsigned 64-bit integer, as in `version`)",
            )
        })
}

async fn get_routes(
    State(state): State<AppState>,
    query: Result<Query<RoutesQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    if let Some(key) = &query.routing_key {
        validate_routing_key(key)?;
    }
    let since = query.since.as_deref().map(parse_since).transpose()?;
    if since.is_some() && query.routing_key.is_some() {
        return Err(FieldError::new(
            "since",
            "cannot be combined with routingKey (a delta is of the whole table)",
        )
        .into());
    }
    state.authorize(&headers, LIST).await?;
    let snapshot = state.service()?.snapshot();
    let etag = format!("\"{}\"", snapshot.version());
    let etag_header = HeaderValue::from_str(&etag).map_err(|_| ApiError::Internal)?;
    let metrics = state.metrics();
    if let Some(since) = since {
        return Ok(match snapshot.delta(since) {
            DeltaAnswer::NotModified => {
                metrics.table_read(TableRead::DeltaNotModified, 0);
                (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response()
            }
            DeltaAnswer::Gone => {
                metrics.table_read(TableRead::Gone, 0);
                let (oldest, held) = snapshot.history();
                tracing::debug!(since, ?oldest, held, "delta asked for a version not held");
                ApiError::Gone(format!(
                    "since: version {since} is not in this server's history \
                     (too old, or from another server or process): take the full table, GET {ROUTES_PATH}"
                ))
                .into_response()
            }
            DeltaAnswer::Changes(body) => {
                metrics.table_read(TableRead::Delta, body.len());
                json_with_etag(etag_header, body)
            }
        });
    }
    if if_none_match_matches(&headers, &etag) {
        if query.routing_key.is_none() {
            metrics.table_read(TableRead::FullNotModified, 0);
        }
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response());
    }
    if query.routing_key.is_none() {
        metrics.table_read(TableRead::Full, snapshot.routes_json().len());
    }
    let body = match &query.routing_key {
        None => snapshot.routes_json(),
        Some(key) => snapshot.routes_json_for_key(key),
    };
    Ok(json_with_etag(etag_header, body))
}

/// The path of the full table, for messages.
const ROUTES_PATH: &str = "/v1/routes";

fn json_with_etag(etag: HeaderValue, body: Bytes) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response()
}

/// RFC 9110 section 13.1.2: `*` matches any current representation; else
/// the weak comparison of each listed entity tag (`W/"7"` matches `"7"`).
/// A malformed field matches nothing (the full answer is always safe).
pub fn if_none_match_matches(headers: &HeaderMap, etag: &str) -> bool {
    let current = etag.strip_prefix("W/").unwrap_or(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| {
            entity_tags(value).is_some_and(|tags| tags.iter().any(|t| *t == "*" || *t == current))
        })
}

/// The opaque tags (with quotes, without `W/`) of an `If-None-Match` value,
/// or `None` if it is malformed. `*` stands for itself.
fn entity_tags(value: &str) -> Option<Vec<&str>> {
    let value = value.trim_matches([' ', '\t']);
    if value == "*" {
        return Some(vec!["*"]);
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(tags);
        }
        let tag = rest.strip_prefix("W/").unwrap_or(rest);
        // opaque-tag = DQUOTE *etagc DQUOTE; etagc has no DQUOTE.
        let inner = tag.strip_prefix('"')?;
        let close = inner.find('"')?;
        let end = close + 2; // both quotes
        tags.push(tag.get(..end)?);
        rest = tag.get(end..)?;
        let next = rest.trim_start_matches([' ', '\t']);
        if !(next.is_empty() || next.starts_with(',')) {
            return None;
        }
        rest = next;
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DecisionQuery {
    routing_key: Option<String>,
    workload: Option<String>,
    sandbox: Option<String>,
}

/// The answer of `GET /v1/decisions`.
#[derive(Debug, Serialize)]
struct DecisionBody {
    process: bool,
    /// [`sandbox_router_core::consumption::Reason::code`].
    reason: String,
    /// The table version the decision was made from.
    version: u64,
}

/// `GET /v1/decisions`: the selective-consumption rule for one message, for
/// consumers that do not hold the table. A missing or invalid routing key is
/// an answer (baseline's), not an error: the consumer must get one.
async fn get_decision(
    State(state): State<AppState>,
    query: Result<Query<DecisionQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    let consumer = decision_consumer(query.workload, query.sandbox)?;
    state.authorize(&headers, LIST).await?;
    let snapshot = state.service()?.snapshot();
    let verdict = snapshot.decide(&consumer, query.routing_key.as_deref());
    Ok(Json(DecisionBody {
        process: verdict.process,
        reason: verdict.reason.code(),
        version: snapshot.version(),
    })
    .into_response())
}

/// The consumer a decision is for: `workload` a lower-case DNS name (a
/// route's `baseline`), `sandbox` a DNS-1123 label.
fn decision_consumer(
    workload: Option<String>,
    sandbox: Option<String>,
) -> Result<Consumer, FieldError> {
    let workload = workload.ok_or_else(|| {
        FieldError::new(
            "workload",
            "is required: the FQDN of the consumer's baseline workload",
        )
    })?;
    if !is_dns_name(&workload) || workload.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(FieldError::new(
            "workload",
            "must be a lower-case DNS name (service FQDN)",
        ));
    }
    if sandbox.as_deref().is_some_and(|s| !is_dns1123_label(s)) {
        return Err(FieldError::new(
            "sandbox",
            "must be a DNS-1123 label (1-63 lower-case letters, digits and inner '-')",
        ));
    }
    Ok(Consumer { workload, sandbox })
}

/// A read of the whole table (or a decision from it).
const LIST: Access<'static> = Access {
    verb: Verb::List,
    name: None,
};

async fn list_sandboxes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.authorize(&headers, LIST).await?;
    let snapshot = state.service()?.snapshot();
    Ok(Json(snapshot.sandbox_list()).into_response())
}

fn sandbox_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::BadRequest(format!("name: {}", e.body_text())))?;
    validate_name(&name)?;
    Ok(name)
}

async fn get_sandbox(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = sandbox_name(path)?;
    let access = Access {
        verb: Verb::Get,
        name: Some(&name),
    };
    state.authorize(&headers, access).await?;
    let snapshot = state.service()?.snapshot();
    let sandbox = snapshot
        .sandbox(&name)
        .ok_or_else(|| ApiError::NotFound(format!("name: no sandbox named {name:?}")))?;
    Ok(Json(sandbox).into_response())
}

async fn put_sandbox(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Auth before anything else (an invalid request of a stranger is a
    // 401, not a 400). Only the Kubernetes auth tells create from update:
    // by what this replica serves (an object it does not serve, in conflict
    // or invalid, is replaced under `create`; the shipped ClusterRole has
    // both).
    let raw_name = path.as_ref().ok().map(|Path(name)| name.clone());
    let exists = raw_name.as_deref().is_some_and(|name| {
        state
            .service()
            .is_ok_and(|s| s.snapshot().sandbox(name).is_some())
    });
    let access = Access {
        verb: if exists { Verb::Update } else { Verb::Create },
        name: raw_name.as_deref(),
    };
    state.authorize(&headers, access).await?;
    let name = sandbox_name(path)?;
    let service = state.service()?;
    require_json(&headers)?;
    let bytes = read_body(&headers, body, state.inner.limits.body_bytes).await?;
    let spec: SandboxSpec = parse_json(&bytes)?;
    let write_name = name.clone();
    let outcome = run_write(move || service.put(&write_name, spec)).await?;
    let (status, sandbox) = match outcome {
        PutOutcome::Created(s) => (StatusCode::CREATED, s),
        PutOutcome::Replaced(s) | PutOutcome::Unchanged(s) => (StatusCode::OK, s),
    };
    let mut response = (status, Json(sandbox)).into_response();
    if status == StatusCode::CREATED {
        if let Ok(location) = HeaderValue::from_str(&format!("/v1/sandboxes/{name}")) {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    Ok(response)
}

async fn delete_sandbox(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let raw_name = path.as_ref().ok().map(|Path(name)| name.clone());
    let access = Access {
        verb: Verb::Delete,
        name: raw_name.as_deref(),
    };
    state.authorize(&headers, access).await?;
    let name = sandbox_name(path)?;
    let service = state.service()?;
    run_write(move || service.delete(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Runs a write on a blocking thread. The thread runs to the end even if
/// this future is dropped (client gone), so a commit is always published.
async fn run_write<T: Send + 'static>(
    write: impl FnOnce() -> Result<T, WriteError> + Send + 'static,
) -> Result<T, ApiError> {
    let result = tokio::task::spawn_blocking(write).await.map_err(|e| {
        tracing::error!(error = %e, "write task failed");
        ApiError::Internal
    })?;
    result.map_err(|e| match e {
        WriteError::Invalid(e) => ApiError::Invalid(e),
        WriteError::Conflict(e) => ApiError::Conflict(e),
        WriteError::NotFound(name) => {
            ApiError::NotFound(format!("name: no sandbox named {name:?}"))
        }
        WriteError::Store(StoreError::Unavailable(e)) => {
            tracing::error!(error = %e, "write failed: storage unavailable");
            ApiError::Unavailable("storage unavailable: retry".into())
        }
        WriteError::Store(e) => {
            tracing::error!(error = %e, "write refused: storage failed; nothing was changed");
            ApiError::Internal
        }
    })
}

/// `Content-Type` must be `application/json` (parameters allowed).
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Reads the body, refusing it (`413`) past `limit` bytes, by
/// `Content-Length` before reading a byte when the client states it.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "body: could not be read: {e}"
        ))),
    }
}

/// Parses strict JSON; errors say where: the JSON path of a wrong value
/// (`routes[0].baseline: invalid type ...`), or the line and column of
/// malformed JSON.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, FieldError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data => {
                let field = if path == "." { "body".to_owned() } else { path };
                FieldError::new(field, inner.to_string())
            }
            Category::Syntax | Category::Eof | Category::Io => {
                FieldError::new("body", format!("malformed JSON: {inner}"))
            }
        }
    })?;
    de.end()
        .map_err(|e| FieldError::new("body", format!("malformed JSON: {e}")))?;
    Ok(value)
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
}

async fn healthz() -> Response {
    Json(Status {
        status: "ok",
        version: None,
    })
    .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.service() {
        Ok(service) => Json(Status {
            status: "ready",
            version: Some(service.snapshot().version()),
        })
        .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status {
                status: "loading",
                version: None,
            }),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let snapshot = state.service().ok().map(|s| s.snapshot());
    let text = state.metrics().render(snapshot.as_deref());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed(method: Method) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method {method} is not allowed here"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inm(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn if_none_match_follows_rfc_9110() {
        let etag = "\"7\"";
        for matching in [
            &["\"7\""][..],
            &["W/\"7\""],
            &["*"],
            &[" \"3\", \"7\" "],
            &["\"3\",W/\"7\""],
            &["\"3\"", "\"7\""],
            &["\"a,b\", \"7\""],
        ] {
            assert!(if_none_match_matches(&inm(matching), etag), "{matching:?}");
        }
        for other in [
            &[][..],
            &["\"8\""],
            &["7"],
            &["\"7"],
            &["\"77\""],
            &["W/7"],
            &["\"3\" \"7\""],
            &["\"7\"x"],
            &["**"],
            &["\"a,\"7\"\""],
        ] {
            assert!(!if_none_match_matches(&inm(other), etag), "{other:?}");
        }
    }

    #[test]
    fn json_errors_say_where() {
        let e = parse_json::<SandboxSpec>(br#"{"routingKey": "k", "routes": [{"baseline": 1}]}"#)
            .unwrap_err();
        assert_eq!(e.field, "routes[0].baseline", "{e}");
        let e =
            parse_json::<SandboxSpec>(br#"{"routingKey": "k", "routes": [], "x": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `x`"), "{e}");
        let e = parse_json::<SandboxSpec>(b"{\"routingKey\": \n").unwrap_err();
        assert_eq!(e.field, "body");
        assert!(e.problem.contains("line 2"), "{e}");
        let e = parse_json::<SandboxSpec>(br#"{"routingKey": "k", "routes": []} x"#).unwrap_err();
        assert!(e.problem.contains("trailing"), "{e}");
    }
}
