//! The producer: an HTTP service (`POST /orders`) that publishes one
//! message per request, carrying the request's W3C `baggage` in the
//! message's headers as an OpenTelemetry messaging instrumentation copies
//! the context (`sandbox_router_consumer::propagation::inject_baggage`). It
//! knows nothing about sandboxes: the context rides along, and whoever
//! consumes the message decides.
//!
//! Headers: `baggage` (all `baggage` lines of the request joined with `,`,
//! absent when the request had none) and the test tags (`test-seq`, ...).
//! The broker is behind [`Publish`]: a stream entry's fields, Kafka record
//! headers, AMQP headers, NATS headers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use sandbox_router_consumer::propagation::inject_baggage;

use crate::broker::Publish;
use crate::message::{field_name, TAG_HEADERS};

/// The message header holding the baggage.
pub const BAGGAGE_FIELD: &str = sandbox_router_consumer::propagation::BAGGAGE;

/// The producer's routes, publishing with `publisher`.
pub fn router(publisher: Arc<dyn Publish>) -> Router {
    Router::new()
        .route("/orders", post(publish))
        .with_state(publisher)
}

async fn publish(State(publisher): State<Arc<dyn Publish>>, headers: HeaderMap) -> Response {
    let fields = message_headers(&headers);
    // The brokers' publishers block until the message is stored.
    let published = tokio::task::spawn_blocking(move || publisher.publish(fields)).await;
    match published {
        Ok(Ok(id)) => (StatusCode::CREATED, id).into_response(),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// The message headers of a request: its baggage and its test tags.
fn message_headers(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    let lines = headers
        .get_all(BAGGAGE_FIELD)
        .iter()
        .map(|value| value.as_bytes());
    inject_baggage(lines, &mut fields);
    let tags = TAG_HEADERS.iter().filter_map(|name| {
        let value = headers.get(*name)?;
        Some((field_name(name).to_owned(), value.as_bytes().to_vec()))
    });
    fields.extend(tags);
    fields
}
