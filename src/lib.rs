//! sandbox-router: the proxy-wasm HTTP filter.
//!
//! A thin layer over [`sandbox_router_core`]: it reads what the core needs
//! from Envoy (request headers, the chosen cluster, the plugin
//! configuration), applies the core's decision (route header, `:authority`:
//! Envoy then selects the route again), and counts the outcome. All policy lives in the core.
//!
//! It speaks the proxy-wasm ABI itself ([`abi`], [`exports`]) rather than
//! through the Rust SDK: it exports only the callbacks it needs (each one
//! is a call into V8 on every request), and no host status can panic it.

mod abi;
mod context_map;
mod edge;
mod exports;
mod filter;
mod host;
mod logger;
mod metrics;
mod pass_through;
mod root;
mod table_sync;
mod worker;
