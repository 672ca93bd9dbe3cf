//! Asynchronous hops end to end (issue 6, `docs/async.md`): a sandboxed
//! request's context has to survive a message queue.
//!
//! A traffic driver posts requests with mixed routing keys through an Envoy
//! running the release filter to a producer, which publishes one message
//! per request with the request's `baggage` (issue 13: on Redis Streams,
//! Apache Kafka, RabbitMQ or NATS JetStream, each a real server). Then either
//!
//! - **pull**: a baseline consumer and the sandbox's consumer read their own
//!   copies (consumer group, queue, durable consumer) and ask the client
//!   library (`sandbox-router-consumer`) whether to process each message; or
//! - **push** (Redis Streams): a relay delivers each entry as an HTTP `POST` with its
//!   `baggage` through Envoy, whose filter routes it to the baseline or the
//!   fork upstream.
//!
//! A sandbox is created and deleted through the RouteService API in the
//! middle of each run, and the analysis checks exactly-once processing and
//! measures the window in which a change is not yet seen everywhere.
//!
//! Modules, one concept each:
//! - [`message`]: the messages, their key kinds, the expected owner;
//! - [`clock`], [`error`], [`timings`];
//! - [`broker`]: the brokers, one module each, behind one harness trait;
//! - [`http_server`], [`route_service`], [`producer`], [`receiver`]: the
//!   loopback services; [`mesh`]: the Envoy in front of them;
//! - [`pull`], [`relay`]: the two ways of consuming;
//! - [`traffic`], [`changes`]: the load and the sandbox changes;
//! - [`ledger`], [`analysis`]: what was recorded, and what it shows;
//! - [`scenario`]: a whole run.

pub mod analysis;
pub mod broker;
pub mod changes;
pub mod clock;
pub mod error;
pub mod http_server;
pub mod ledger;
pub mod mesh;
pub mod message;
pub mod producer;
pub mod pull;
pub mod receiver;
pub mod relay;
pub mod route_service;
pub mod scenario;
pub mod timings;
pub mod traffic;

pub use error::{Error, Result};
