//! RabbitMQ (AMQP 0-9-1): a queue per consumer (`orders-worker`,
//! `orders-worker-pr-42`) bound to the workload's fanout exchange, so each
//! consumer gets its own copy of every message; the routing key read from
//! the message's headers table (`baggage`); `basic.ack` after processing,
//! and ack-and-drop for messages that are another consumer's. Never
//! `basic.reject`/`basic.nack` with requeue to pass a message on: it would
//! come back to the same queue (docs/async.md, "Broker notes").
//!
//! Client: `lapin`, the maintained pure-Rust AMQP 0-9-1 client (publisher
//! confirms, consumer prefetch, the headers table), on Tokio; this module
//! runs it on a runtime of its own (see `runtime.rs`).
//!
//! Acks are cumulative: one `basic.ack` with `multiple` for the last tag of
//! a batch settles the whole batch.

use std::time::Duration;

use futures_util::StreamExt as _;
pub use lapin;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::runtime::Runtime;

use super::{Delivery, Settle, Subscription};
use crate::propagation::Injector;

/// An AMQP call failed, or the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("rabbitmq: runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("rabbitmq: consumer {0} was cancelled by the broker")]
    Cancelled(String),
    #[error("rabbitmq: the subscription is closed")]
    Closed,
}

pub type Result<T> = std::result::Result<T, Error>;

/// Where the consumer's queue is and what it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// `amqp://user:password@host:port/vhost`.
    pub uri: String,
    /// The workload's fanout exchange, which producers publish to.
    pub exchange: String,
    /// One per (workload, sandbox or baseline).
    pub queue: String,
    /// Unacknowledged messages the broker sends ahead (`basic.qos`).
    pub prefetch: u16,
}

/// A consumer on its own queue.
pub struct AmqpQueue {
    /// Always `Some` until dropped.
    runtime: Option<Runtime>,
    // Kept open for as long as the queue is consumed.
    _connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    queue: String,
}

impl std::fmt::Debug for AmqpQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpQueue")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl AmqpQueue {
    /// Declares the exchange (fanout, durable), the queue (durable) and the
    /// binding, and starts consuming with manual acks.
    pub fn subscribe(config: &QueueConfig) -> Result<Self> {
        let runtime = super::runtime::new("amqp")?;
        let (connection, channel, consumer) = runtime.block_on(async {
            let connection =
                Connection::connect(&config.uri, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            declare_exchange(&channel, &config.exchange).await?;
            let durable = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(config.queue.as_str().into(), durable, FieldTable::default())
                .await?;
            channel
                .queue_bind(
                    config.queue.as_str().into(),
                    config.exchange.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            channel
                .basic_qos(config.prefetch, BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    config.queue.as_str().into(),
                    format!("{}-1", config.queue).as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, Error>((connection, channel, consumer))
        })?;
        Ok(AmqpQueue {
            runtime: Some(runtime),
            _connection: connection,
            channel,
            consumer,
            queue: config.queue.clone(),
        })
    }
}

impl Drop for AmqpQueue {
    /// Without blocking: the queue may be dropped on another runtime's
    /// thread, where waiting for this one to shut down is not allowed.
    /// Unacknowledged deliveries go back to the queue when the connection
    /// closes.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The workload's exchange: fanout (every bound queue gets a copy), durable.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

impl Subscription for AmqpQueue {
    /// The delivery tag.
    type Token = u64;
    type Error = Error;

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<u64>>> {
        let queue = self.queue.clone();
        let consumer = &mut self.consumer;
        let runtime = self.runtime.as_ref().ok_or(Error::Closed)?;
        runtime.block_on(async move {
            let mut batch = Vec::new();
            // Wait for the first; then take what the prefetch already brought.
            let mut timeout = wait;
            while batch.len() < max {
                let next = match tokio::time::timeout(timeout, consumer.next()).await {
                    Ok(next) => next,
                    Err(_elapsed) => break,
                };
                let delivery = match next {
                    Some(delivery) => delivery?,
                    None => return Err(Error::Cancelled(queue)),
                };
                batch.push(Delivery {
                    id: delivery.delivery_tag.to_string(),
                    headers: delivery
                        .properties
                        .headers()
                        .as_ref()
                        .map(text_headers)
                        .unwrap_or_default(),
                    payload: delivery.data,
                    // Whole seconds, if the producer set it: rounded down,
                    // which only makes the grace keep more.
                    produced: delivery
                        .properties
                        .timestamp()
                        .and_then(|s| s.checked_mul(1000))
                        .and_then(super::unix_ms),
                    token: delivery.delivery_tag,
                });
                timeout = Duration::from_millis(1);
            }
            Ok(batch)
        })
    }

    /// One cumulative `basic.ack` up to the batch's last tag: processed and
    /// skipped messages alike leave the queue.
    fn settle(&mut self, batch: Vec<(u64, Settle)>) -> Result<()> {
        let Some(last) = batch.iter().map(|(tag, _)| *tag).max() else {
            return Ok(());
        };
        let channel = &self.channel;
        let runtime = self.runtime.as_ref().ok_or(Error::Closed)?;
        runtime.block_on(async move {
            channel
                .basic_ack(last, BasicAckOptions { multiple: true })
                .await
        })?;
        Ok(())
    }
}

/// The string-valued entries of an AMQP headers table (`baggage` is a long
/// string; other types cannot carry a routing key).
pub fn text_headers(table: &FieldTable) -> Vec<(String, Vec<u8>)> {
    table
        .inner()
        .iter()
        .filter_map(|(name, value)| {
            let bytes = match value {
                AMQPValue::LongString(s) => s.as_bytes().to_vec(),
                AMQPValue::ShortString(s) => s.as_str().as_bytes().to_vec(),
                _ => return None,
            };
            Some((name.as_str().to_owned(), bytes))
        })
        .collect()
}

/// A message's headers table, as a producer builds it.
impl Injector for FieldTable {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::inject_baggage;

    #[test]
    fn baggage_is_a_long_string_in_the_headers_table() {
        let mut table = FieldTable::default();
        assert!(inject_baggage([&b"sd-routing-key=pr-42"[..]], &mut table));
        table.insert("x-count".into(), AMQPValue::LongInt(3));
        assert_eq!(
            text_headers(&table),
            [("baggage".to_owned(), b"sd-routing-key=pr-42".to_vec())]
        );
    }
}
