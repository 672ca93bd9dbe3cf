//! NATS JetStream: a durable pull consumer per consumer (`orders-worker`,
//! `orders-worker-pr-42`) on the workload's stream, so each has its own
//! cursor and its own acks over the same stored messages; the routing key
//! read from the message headers (`baggage`); `ack` after processing and
//! `term` for messages that are another consumer's (done with, never
//! redelivered to this consumer; no `nak`, which would redeliver it here).
//!
//! Client: `async-nats`, the NATS maintainers' own Rust client (JetStream
//! streams, durable pull consumers, per-message acks), on Tokio; this
//! module runs it on a runtime of its own (see `runtime.rs`).
//!
//! Acks are sent per message and flushed once per batch, so a settled
//! batch has reached the server before the next is fetched.

use std::time::Duration;

pub use async_nats;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::AckKind;
use futures_util::StreamExt as _;
use tokio::runtime::Runtime;

use super::{Delivery, Settle, Subscription};
use crate::propagation::Injector;

/// A NATS or JetStream call failed, or the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nats: {0}")]
    Nats(String),
    #[error("nats: runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("nats: the subscription is closed")]
    Closed,
}

impl Error {
    /// async-nats has one error type per call; they all print well.
    pub fn nats(error: impl std::fmt::Display) -> Self {
        Error::Nats(error.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Which stream, and as which durable consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableConfig {
    /// `nats://host:port`.
    pub url: String,
    /// The workload's stream (it must exist: producers or operators create it).
    pub stream: String,
    /// One per (workload, sandbox or baseline).
    pub durable: String,
    /// Messages delivered and not yet acked, at most (flow control).
    pub max_ack_pending: i64,
    /// Redelivery after this long without an ack (a crashed consumer).
    pub ack_wait: Duration,
}

/// A durable pull consumer on a stream.
pub struct JetStreamDurable {
    /// Always `Some` until dropped.
    runtime: Option<Runtime>,
    client: async_nats::Client,
    consumer: PullConsumer,
}

impl std::fmt::Debug for JetStreamDurable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamDurable").finish_non_exhaustive()
    }
}

impl JetStreamDurable {
    /// Creates the durable consumer if it does not exist (from the stream's
    /// first message, explicit acks), else binds to it.
    pub fn subscribe(config: &DurableConfig) -> Result<Self> {
        let runtime = super::runtime::new("jetstream")?;
        let (client, consumer) = runtime.block_on(async {
            let client = async_nats::connect(&config.url)
                .await
                .map_err(Error::nats)?;
            let context = async_nats::jetstream::new(client.clone());
            let stream = context
                .get_stream(&config.stream)
                .await
                .map_err(Error::nats)?;
            let consumer = stream
                .get_or_create_consumer(
                    &config.durable,
                    pull::Config {
                        durable_name: Some(config.durable.clone()),
                        deliver_policy: DeliverPolicy::All,
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: config.ack_wait,
                        max_ack_pending: config.max_ack_pending,
                        ..pull::Config::default()
                    },
                )
                .await
                .map_err(Error::nats)?;
            Ok::<_, Error>((client, consumer))
        })?;
        Ok(JetStreamDurable {
            runtime: Some(runtime),
            client,
            consumer,
        })
    }
}

impl Drop for JetStreamDurable {
    /// Without blocking (it may be dropped on another runtime's thread).
    /// Unacked messages are redelivered after `ack_wait`.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Subscription for JetStreamDurable {
    type Token = Acker;
    type Error = Error;

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<Acker>>> {
        let consumer = &self.consumer;
        let runtime = self.runtime.as_ref().ok_or(Error::Closed)?;
        runtime.block_on(async move {
            // What is there now, without waiting; if nothing, wait for one.
            let mut batch = collect(consumer.fetch().max_messages(max).messages().await).await?;
            if batch.is_empty() {
                let waited = consumer.batch().max_messages(1).expires(wait).messages();
                batch = collect(waited.await).await?;
            }
            Ok(batch)
        })
    }

    /// `ack` or `term` each, then one flush.
    fn settle(&mut self, batch: Vec<(Acker, Settle)>) -> Result<()> {
        let client = &self.client;
        let runtime = self.runtime.as_ref().ok_or(Error::Closed)?;
        runtime.block_on(async move {
            for (acker, settle) in batch {
                match settle {
                    Settle::Processed => acker.ack().await.map_err(Error::nats)?,
                    Settle::Skipped => acker.ack_with(AckKind::Term).await.map_err(Error::nats)?,
                }
            }
            client.flush().await.map_err(Error::nats)
        })
    }
}

/// The messages of one pull request.
async fn collect<S, E, F>(messages: std::result::Result<S, F>) -> Result<Vec<Delivery<Acker>>>
where
    S: futures_util::Stream<Item = std::result::Result<async_nats::jetstream::Message, E>> + Unpin,
    E: std::fmt::Display,
    F: std::fmt::Display,
{
    let mut messages = messages.map_err(Error::nats)?;
    let mut batch = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.map_err(Error::nats)?;
        let info = message.info().ok();
        let id = info
            .as_ref()
            .map(|info| info.stream_sequence.to_string())
            .unwrap_or_default();
        // The time the server stored it.
        let produced = info.and_then(|info| {
            let ms = info.published.unix_timestamp_nanos() / 1_000_000;
            u64::try_from(ms).ok().and_then(super::unix_ms)
        });
        let (message, acker) = message.split();
        batch.push(Delivery {
            id,
            headers: message
                .headers
                .as_ref()
                .map(text_headers)
                .unwrap_or_default(),
            payload: message.payload.to_vec(),
            produced,
            token: acker,
        });
    }
    Ok(batch)
}

/// Every value of every header (a NATS header may repeat, like HTTP's).
pub fn text_headers(headers: &async_nats::HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut pairs = Vec::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        for value in values {
            pairs.push((name.to_owned(), value.as_str().as_bytes().to_vec()));
        }
    }
    pairs
}

/// A message's NATS headers, as a producer builds them.
impl Injector for async_nats::HeaderMap {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::inject_baggage;

    #[test]
    fn baggage_is_a_nats_header() {
        let mut headers = async_nats::HeaderMap::new();
        assert!(inject_baggage([&b"sd-routing-key=pr-42"[..]], &mut headers));
        assert_eq!(
            text_headers(&headers),
            [("baggage".to_owned(), b"sd-routing-key=pr-42".to_vec())]
        );
    }
}
