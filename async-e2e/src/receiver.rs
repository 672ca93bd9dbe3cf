//! The push targets: the workload's baseline and its sandbox fork as HTTP
//! services (`POST /messages`), recording every message they receive, with
//! the route header it came with. They are the consumers of the push flow,
//! and they know nothing about sandboxes: routing alone picks them.

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use crate::clock::now_us;
use crate::ledger::Delivered;
use crate::message::{Owner, SEQ};
use sandbox_router_e2e::mesh::ROUTE_HEADER;

/// Deliveries to every receiver of a run, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Deliveries {
    records: Arc<Mutex<Vec<Delivered>>>,
}

impl Deliveries {
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn all(&self) -> Vec<Delivered> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Delivered>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone)]
struct Receiver {
    owner: Owner,
    deliveries: Deliveries,
}

/// The routes of the receiver `owner`, recording into `deliveries`.
pub fn router(owner: Owner, deliveries: &Deliveries) -> Router {
    let receiver = Receiver {
        owner,
        deliveries: deliveries.clone(),
    };
    Router::new()
        .route("/messages", post(receive))
        .with_state(receiver)
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap) -> StatusCode {
    let seq = headers
        .get(SEQ)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let Some(seq) = seq else {
        return StatusCode::BAD_REQUEST;
    };
    let route_header = headers
        .get(ROUTE_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    receiver.deliveries.lock().push(Delivered {
        seq,
        to: receiver.owner,
        route_header,
        at_us: now_us(),
    });
    StatusCode::NO_CONTENT
}
