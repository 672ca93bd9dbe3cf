//! RouteService: the central table of which routing key forks which service
//! (INTERFACES section 5), for the sandbox-router filter and message
//! consumers.
//!
//! - [`model`]: sandboxes and routes on the wire, and their validation
//!   (reusing the core's routing-key and DNS rules);
//! - [`service`]: validated, serialised writes and the in-memory snapshot
//!   reads are answered from (with the pre-serialised `GET /v1/routes` body);
//! - [`store`]: the storage trait and an in-memory store for tests;
//!   [`redb_store`]: the durable default; [`kube_store`]: Sandbox objects of
//!   the Kubernetes API (`serve --store kubernetes`), with [`kube_auth`]
//!   (TokenReview + SubjectAccessReview);
//! - [`api`]: the axum [`api::app`], [`auth`] and [`metrics`];
//! - [`server`]: `routeservice serve`; [`connections`]: accepting and
//!   serving connections within their limits; [`cli`] and [`client`]: the
//!   command line for people.

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod connections;
pub mod error;
pub mod kube_auth;
pub mod kube_routes;
pub mod kube_store;
pub mod mesh_routes;
pub mod metrics;
pub mod model;
pub mod redb_store;
pub mod server;
pub mod service;
pub mod store;

pub use api::{app, AppState};
pub use auth::Auth;
pub use service::RouteService;
