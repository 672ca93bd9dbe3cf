//! The one error type of the HTTP API, and what it answers.
//!
//! Every error answers JSON `{"error": "..."}`. Bad input says which field is
//! wrong; internal failures say only "internal error" and are logged instead.

use std::fmt;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Input that is wrong, with the field (or JSON path) that is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `routingKey`, `name`, `routes[1].baseline`, ...
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same error, its field placed under `prefix` (`sandboxes.pr-42`).
    pub fn under(self, prefix: &str) -> Self {
        FieldError {
            field: format!("{prefix}.{}", self.field),
            problem: self.problem,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for FieldError {}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed or invalid input.
    #[error("{0}")]
    Invalid(FieldError),
    /// 400: input that is wrong as a whole (malformed JSON, bad query string).
    #[error("{0}")]
    BadRequest(String),
    /// 401: a write without the right bearer token.
    #[error("{}", if *.invalid_token { "the bearer token is not valid" } else { "this call needs Authorization: Bearer <token>" })]
    Unauthorized { invalid_token: bool },
    /// 403: the token is good, its user may not do this (Kubernetes RBAC).
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request fights another sandbox over a request.
    #[error("{0}")]
    Conflict(FieldError),
    /// 410: `GET /v1/routes?since=V` for a version not in the history.
    #[error("{0}")]
    Gone(String),
    /// 408: the request was not complete (its body had not arrived) and
    /// answered within the request timeout.
    #[error("request not received and answered within {} s: send the body at once", .timeout.as_secs_f64())]
    RequestTimeout { timeout: Duration },
    /// 413: body larger than the limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415: a body that does not say it is JSON.
    #[error("Content-Type: must be application/json")]
    UnsupportedMediaType,
    /// 503: storage not open and loaded yet.
    #[error("not ready: storage is still loading")]
    NotReady,
    /// 503: a dependency (the Kubernetes API) cannot be reached now.
    #[error("{0}")]
    Unavailable(String),
    /// 500: logged where it happened; the client learns nothing more.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotReady | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Invalid(e)
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
}

/// A JSON `{"error": message}` answer.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::to_vec(&ErrorBody { error: message })
        .unwrap_or_else(|_| br#"{"error":"internal error"}"#.to_vec());
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = error_response(self.status(), &self.to_string());
        if let ApiError::Unauthorized { invalid_token } = self {
            let challenge = if invalid_token {
                r#"Bearer realm="routeservice", error="invalid_token""#
            } else {
                r#"Bearer realm="routeservice""#
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
