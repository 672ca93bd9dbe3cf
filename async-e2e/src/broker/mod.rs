//! The brokers the pull flow runs on, each a real server started for the
//! run: Redis Streams, Apache Kafka, RabbitMQ, NATS JetStream. The flow
//! (producer, consumers, checks: [`crate::scenario`]) is the same for all;
//! a [`Broker`] supplies only what differs:
//!
//! - starting the server on loopback ports of its own, its files under the
//!   run's directory (`target/e2e-runs/...`), killed when dropped;
//! - a [`Publish`] for the producer (which puts the request's `baggage` on
//!   each message with `sandbox_router_consumer::propagation`);
//! - each consumer's own copy (a [`Subscription`] of the consumer crate);
//! - the broker-level checks after the run: every message stored once,
//!   every consumer's copy settled (nothing pending, no lag).
//!
//! A server that cannot start fails the run with an error that says why
//! (binary missing and how to install it, or the tail of its log).

pub mod kafka;
pub mod nats;
pub mod rabbitmq;
pub mod redis;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sandbox_router_consumer::broker::Subscription;

use crate::analysis::report::Report;
use crate::error::Result;

/// Publishes one message with these headers (baggage and test tags);
/// returns the broker's id for it once the broker has stored it.
pub trait Publish: Send + Sync {
    fn publish(&self, headers: Vec<(String, Vec<u8>)>) -> Result<String>;
}

/// A running broker of one kind, with the topic of a run.
pub trait Broker: Sized {
    /// A consumer's own copy of the topic.
    type Subscription: Subscription + Send + 'static;

    /// `redis-streams`, `kafka`, ...: labels and run directories.
    const NAME: &'static str;

    /// Starts the server, files in `dir`, and creates the run's topic
    /// (stream, topic, exchange, stream).
    fn start(dir: &Path) -> Result<Self>;

    /// The server's name and version, for the report.
    fn version(&self) -> String;

    fn publisher(&self) -> Result<Arc<dyn Publish>>;

    /// The copy of consumer group `group` (created if new, from the first
    /// message on).
    fn subscribe(&self, group: &str) -> Result<Self::Subscription>;

    /// After the run: `total` messages stored once, each of `groups`
    /// settled all of them. Findings go to `report.problems`; what was
    /// seen to `report.notes`.
    fn check(&self, total: u64, groups: &[String], report: &mut Report) -> Result<()>;
}

/// A free TCP port on 127.0.0.1, from the kernel's ephemeral range (far
/// from the fixed ports other tools of the project use).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `name` on `PATH` (or the path in environment variable `var`), with a
/// message saying how to install it when neither has it.
pub fn find_binary(name: &str, var: &str, install: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    on_path.ok_or_else(|| {
        crate::error::Error::Harness(format!("{name} not found on PATH: {install}, or set {var}"))
    })
}

/// The last `lines` lines of a log file, for an error message.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    let start = all.len().saturating_sub(lines);
    let tail = all.get(start..).unwrap_or_default().join("\n");
    if tail.is_empty() {
        format!("({} is empty)", path.display())
    } else {
        format!("{}:\n{tail}", path.display())
    }
}
