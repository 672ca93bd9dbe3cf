//! Brokers: how a consumer gets its own copy of each message and tells the
//! broker it is done with it, behind one small trait, [`Subscription`], so
//! that one loop ([`consume`]) serves every broker.
//!
//! A subscription is the consumer's *own* copy of the topic: a Redis
//! consumer group, a Kafka `group.id`, a RabbitMQ queue bound to the
//! workload's exchange, a JetStream durable consumer. One per (workload,
//! sandbox or baseline): `orders-worker`, `orders-worker-pr-42`. Each
//! consumer decides on its copy and settles it either way (docs/async.md,
//! "The pattern"); nothing is passed between consumers.
//!
//! One module per broker, each behind a cargo feature of its own:
//! [`redis_streams`] (`redis-streams`), [`kafka`] (`kafka`), [`rabbitmq`]
//! (`rabbitmq`), [`jetstream`] (`jetstream`). Each also implements
//! [`crate::propagation::Injector`] for its client's header map, so a
//! producer can put the W3C `baggage` on a message.

use std::time::{Duration, SystemTime};

use crate::client::{Decision, RouteClient};

#[cfg(feature = "jetstream")]
pub mod jetstream;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis-streams")]
pub mod redis_streams;
#[cfg(any(feature = "rabbitmq", feature = "jetstream"))]
mod runtime;

/// One received message: its headers (the carriers of the routing key),
/// its body, an id for logs, and what the broker needs to settle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<T> {
    /// Broker-specific and stable: `<stream entry id>`, `<partition>@<offset>`,
    /// `<delivery tag>`, `<stream sequence>`.
    pub id: String,
    /// Header names as the broker stores them; values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    pub payload: Vec<u8>,
    /// When the broker stored (or the producer stamped) the message, if it
    /// says: the Redis entry id's milliseconds, the Kafka record
    /// timestamp, the JetStream stored time, the AMQP `timestamp` property
    /// (whole seconds, set by the producer). The hand-over grace uses it
    /// for a consumer that lags behind.
    pub produced: Option<SystemTime>,
    pub token: T,
}

/// How a consumer is done with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// This consumer processed it.
    Processed,
    /// Another consumer's: dropped from this consumer's copy, never handed
    /// to anyone (each consumer has its own copy; a requeue would only
    /// bring it back here).
    Skipped,
}

/// A consumer's own copy of a topic on one broker.
///
/// Settling is once per batch, in the order received, so brokers that
/// acknowledge cumulatively (Kafka offsets, AMQP `multiple`) do one call.
pub trait Subscription {
    /// What settling a message needs (entry id, offset, delivery tag, ...).
    type Token;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Up to `max` messages, waiting at most `wait` for the first; empty
    /// when none came.
    fn receive(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery<Self::Token>>, Self::Error>;

    /// Tells the broker these messages are done with: nothing of them is
    /// delivered to this consumer again.
    fn settle(&mut self, batch: Vec<(Self::Token, Settle)>) -> Result<(), Self::Error>;
}

/// Why one [`consume`] round stopped before settling its batch.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError<B: std::error::Error + 'static, H: std::error::Error + 'static> {
    #[error("broker: {0}")]
    Broker(#[source] B),
    /// The handler failed: the batch is left unsettled, so the broker
    /// delivers it again (at least once).
    #[error("handler: {0}")]
    Handler(#[source] H),
}

/// One round of a consumer: receive up to `max` messages, decide each with
/// `client`, call `handle` with every message and its decision (the
/// handler processes those whose `decision.verdict.process` is true), then
/// settle the batch: processed or skipped. Returns how many were settled.
///
/// A handler error leaves the whole batch unsettled (redelivered later).
pub fn consume<S, H, E>(
    client: &RouteClient,
    subscription: &mut S,
    max: usize,
    wait: Duration,
    mut handle: H,
) -> Result<usize, ConsumeError<S::Error, E>>
where
    S: Subscription,
    H: FnMut(&Delivery<S::Token>, &Decision) -> Result<(), E>,
    E: std::error::Error + 'static,
{
    let batch = subscription
        .receive(max, wait)
        .map_err(ConsumeError::Broker)?;
    let mut settled = Vec::with_capacity(batch.len());
    for delivery in batch {
        let decision = client.decide_produced(header_pairs(&delivery.headers), delivery.produced);
        handle(&delivery, &decision).map_err(ConsumeError::Handler)?;
        let settle = if decision.verdict.process {
            Settle::Processed
        } else {
            Settle::Skipped
        };
        settled.push((delivery.token, settle));
    }
    let count = settled.len();
    subscription.settle(settled).map_err(ConsumeError::Broker)?;
    Ok(count)
}

/// A time given in milliseconds since the Unix epoch (a broker's stamp).
pub fn unix_ms(ms: u64) -> Option<SystemTime> {
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// `(name, value)` pairs as [`RouteClient::decide`] takes them.
pub fn header_pairs(headers: &[(String, Vec<u8>)]) -> impl Iterator<Item = (&str, &[u8])> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_slice()))
}
