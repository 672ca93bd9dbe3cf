//! Host-free core of sandbox-router.
//!
//! Everything the filter decides, as plain Rust with no proxy-wasm calls, so
//! it is unit-tested natively and on `wasm32`, fuzzed, and shared by the
//! filter, the RouteService and message-consumer clients:
//!
//! - [`baggage`]: W3C Baggage parsing within fixed limits;
//! - [`legacy`]: the Jaeger `uberctx-` and OpenTracing `ot-baggage-` carriers;
//! - [`carrier`]: where the routing key is read from, in order;
//! - [`routing_key`]: routing-key validation;
//! - [`destination`]: the destination service of a request;
//! - [`route_table`]: which key forks which service;
//! - [`config`]: the plugin configuration;
//! - [`header_map`]: a request's headers as the host hands them over, read in place;
//! - [`edge`]: routing keys from outside the mesh, removed at the gateway;
//! - [`decision`]: what the filter does to one request;
//! - [`route_check`]: whether a marked request reached its fork;
//! - [`routes_api`]: the RouteService's answers, read defensively;
//! - [`json`]: the JSON reader of both (serde's derives, serde_json's rules);
//! - [`random_state`]: the hasher of the filter's maps (std's, without its panic path);
//! - [`key_cache`]: per-worker cache of single-key answers;
//! - [`route_knowledge`]: table + key cache + breaker, for any RouteService client;
//! - [`breaker`]: stop calling a failing RouteService for a while;
//! - [`inflight`]: one RouteService call per key per worker;
//! - [`lookup_budget`]: at most so many RouteService lookups a second per worker;
//! - [`table_sync`]: one table fetch per Envoy, shared by every worker;
//! - [`worker_routes`]: what a worker knows, and when it must ask;
//! - [`recovery`]: the routing key of a trace whose app dropped it;
//! - [`consumption`]: which message-queue consumer processes a message;
//! - [`handover`]: the grace after a sandbox change, so no message goes to nobody;
//! - [`signed_key`], [`signed_carrier`], [`signed_admission`]: routing keys
//!   from outside the mesh, accepted at the edge when signed.

pub mod baggage;
pub mod breaker;
pub mod carrier;
pub mod config;
pub mod consumption;
pub mod decision;
pub mod destination;
pub mod edge;
pub mod handover;
pub mod header_map;
pub mod inflight;
pub mod json;
pub mod key_cache;
pub mod legacy;
pub mod lookup_budget;
pub mod random_state;
pub mod recovery;
pub mod route_check;
pub mod route_knowledge;
pub mod route_table;
pub mod routes_api;
pub mod routing_key;
pub mod signed_admission;
pub mod signed_carrier;
pub mod signed_key;
pub mod table_sync;
pub mod worker_routes;
