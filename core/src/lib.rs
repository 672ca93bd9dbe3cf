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
//! - [`decision`]: what the filter does to one request.

pub mod baggage;
pub mod carrier;
pub mod config;
pub mod decision;
pub mod destination;
pub mod legacy;
pub mod route_table;
pub mod routing_key;
