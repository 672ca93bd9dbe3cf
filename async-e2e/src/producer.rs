//! The producer: an HTTP service (`POST /orders`) that publishes one stream
//! entry per request, carrying the request's W3C `baggage` as a field, as
//! an OpenTelemetry messaging instrumentation copies the context into
//! message headers. It knows nothing about sandboxes: the context rides
//! along, and whoever consumes the entry decides.
//!
//! Fields: `baggage` (all `baggage` lines of the request joined with `,`,
//! absent when the request had none) and the test tags (`test-seq`, ...).

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use crate::message::{field_name, TAG_HEADERS};
use crate::stream;

/// The stream field holding the message's baggage.
pub const BAGGAGE_FIELD: &str = "baggage";

#[derive(Clone)]
struct Producer {
    conn: Arc<Mutex<redis::Connection>>,
    stream: Arc<str>,
}

/// The producer's routes, publishing to `stream` over `conn`.
pub fn router(conn: redis::Connection, stream: &str) -> Router {
    let producer = Producer {
        conn: Arc::new(Mutex::new(conn)),
        stream: stream.into(),
    };
    Router::new()
        .route("/orders", post(publish))
        .with_state(producer)
}

async fn publish(State(producer): State<Producer>, headers: HeaderMap) -> Response {
    let fields = message_fields(&headers);
    let published = tokio::task::spawn_blocking(move || {
        let mut conn = producer.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let refs: Vec<(&str, &[u8])> = fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
            .collect();
        stream::add(&mut conn, &producer.stream, &refs)
    })
    .await;
    match published {
        Ok(Ok(id)) => (StatusCode::CREATED, id).into_response(),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// The stream fields of a request: its baggage and its test tags.
fn message_fields(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let lines: Vec<&[u8]> = headers
        .get_all("baggage")
        .iter()
        .map(|value| value.as_bytes())
        .collect();
    let baggage = (!lines.is_empty()).then(|| lines.join(&b","[..]));
    let tags = TAG_HEADERS.iter().filter_map(|name| {
        let value = headers.get(*name)?;
        Some((field_name(name).to_owned(), value.as_bytes().to_vec()))
    });
    baggage
        .map(|b| (BAGGAGE_FIELD.to_owned(), b))
        .into_iter()
        .chain(tags)
        .collect()
}
