//! Selective consumption for message consumers (see `docs/async.md`).
//!
//! A producer handling a sandboxed request publishes a message carrying the
//! request's `baggage`; every consumer group of a topic gets a copy; exactly
//! one consumer must process it: the fork of the consuming workload if the
//! message's sandbox forks it, else the baseline consumer. Each consumer
//! asks [`RouteClient::should_process`] and acks the message either way.
//!
//! The rule is the core's (`sandbox_router_core::consumption`); this crate
//! keeps the RouteService table in sync the way the filter does:
//!
//! - [`config`]: server, consumer identity, key carriers, intervals;
//! - [`http`]: the two RouteService calls (table with `If-None-Match`, one key);
//! - the table, key cache and breaker policy is the core's
//!   `route_knowledge::RouteKnowledge`, the same the filter's workers use;
//! - [`client`]: [`RouteClient`]: refresh, decide, table version, and the
//!   hand-over grace after a sandbox change (`sandbox_router_core::handover`:
//!   a message is processed twice at worst, never by nobody);
//! - [`sync`]: [`SyncThread`], the background refresh;
//! - [`broker`]: [`broker::Subscription`], one small trait over a broker's
//!   own copy of a topic, and [`broker::consume`], the one consumer loop;
//!   a module per broker (Redis Streams, Kafka, RabbitMQ, NATS JetStream),
//!   each behind a cargo feature;
//! - [`propagation`]: producers put the W3C `baggage` into a message's
//!   headers ([`propagation::inject_baggage`]);
//! - [`stats`], [`error`].
//!
//! ```no_run
//! use sandbox_router_consumer::{sync, ClientConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::new(
//!     "http://routeservice.sandbox-system.svc.cluster.local:8080",
//!     "orders-worker.shop.svc.cluster.local", // the baseline workload
//!     Some("pr-42"),                           // None in the baseline consumer
//! )?;
//! let (client, _sync) = sync::start(config)?;
//! // For each message, with its headers as any string map:
//! let headers = [("baggage", "sd-routing-key=pr-42,userId=7")];
//! if client.should_process(headers).process {
//!     // handle it
//! }
//! // ack it either way: the other consumer groups have their own copies.
//! # Ok(())
//! # }
//! ```

pub mod broker;
pub mod client;
pub mod config;
pub mod error;
pub mod http;
pub mod propagation;
pub mod stats;
pub mod sync;

pub use client::{Decision, Refresh, RouteClient, Source};
pub use config::ClientConfig;
pub use error::{ConfigError, FetchError, WaitTimeout};
pub use sandbox_router_core::carrier::KeyCarriers;
pub use sandbox_router_core::consumption::{Consumer, Reason, Verdict};
pub use sandbox_router_core::key_cache::CachePolicy;
pub use stats::Stats;
pub use sync::SyncThread;
