//! The async clients (lapin, async-nats) behind the blocking
//! [`super::Subscription`]: each subscription owns a small Tokio runtime
//! with one worker thread. The client's connection tasks run on it all the
//! time (heartbeats, acks in flight), and each trait call blocks on it, as
//! the consumer threads of the other brokers block on their sockets.

use tokio::runtime::{Builder, Runtime};

/// A one-worker runtime named after the broker.
pub(crate) fn new(name: &str) -> std::io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
}
