//! Apache Kafka: a consumer group per consumer (`group.id` =
//! `orders-worker`, `orders-worker-pr-42`), the routing key read from the
//! record's `baggage` header (and the legacy carriers), and the offsets of
//! every record committed, processed or skipped, so the group's lag stays
//! at zero and nothing is redelivered after a restart or a rebalance.
//!
//! Client: `rdkafka`, the bindings of librdkafka (the C client Confluent
//! maintains and the Kafka project's own clients are measured against),
//! built from its bundled sources (`cmake-build`), so no system package is
//! needed. It does consumer groups, rebalances and commits; the pure-Rust
//! `rskafka` has no consumer groups.
//!
//! Auto-commit is off: offsets are committed once per batch, after the
//! batch is decided (and processed), so a crash redelivers rather than
//! loses (at least once).

use std::time::{Duration, Instant};

pub use rdkafka;
use rdkafka::config::ClientConfig as KafkaConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};

use super::{Delivery, Settle, Subscription};
use crate::propagation::Injector;

/// A Kafka call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("kafka: {0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Where a group with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The topic's first record (a group created before its traffic).
    Earliest,
    /// New records only: a fork's group created with its sandbox.
    Latest,
}

/// How to reach the topic, and as which group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap: String,
    pub topic: String,
    /// One per (workload, sandbox or baseline).
    pub group: String,
    pub start_at: StartAt,
}

/// One member of a consumer group, subscribed to one topic.
pub struct KafkaGroup {
    consumer: BaseConsumer,
    topic: String,
}

impl std::fmt::Debug for KafkaGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaGroup")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaGroup {
    /// Joins the group and subscribes to the topic. Partitions are assigned
    /// at the first [`Subscription::receive`] calls (the group's rebalance).
    pub fn subscribe(config: &GroupConfig) -> Result<Self> {
        let reset = match config.start_at {
            StartAt::Earliest => "earliest",
            StartAt::Latest => "latest",
        };
        let consumer: BaseConsumer = KafkaConfig::new()
            .set("bootstrap.servers", &config.bootstrap)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", reset)
            // A consumer decides in milliseconds: do not sit on a fetch
            // for the default half second when few records are waiting.
            .set("fetch.wait.max.ms", "50")
            .create()?;
        consumer.subscribe(&[config.topic.as_str()])?;
        Ok(KafkaGroup {
            consumer,
            topic: config.topic.clone(),
        })
    }
}

/// A record's place: partition and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    pub partition: i32,
    pub offset: i64,
}

impl Subscription for KafkaGroup {
    type Token = RecordPosition;
    type Error = Error;

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<RecordPosition>>> {
        let mut batch = Vec::new();
        let deadline = Instant::now() + wait;
        while batch.len() < max {
            // Wait for the first record; then take what is already here.
            let timeout = if batch.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let Some(polled) = self.consumer.poll(timeout) else {
                break;
            };
            let message = polled?;
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .filter_map(|h| Some((h.key.to_owned(), h.value?.to_vec())))
                        .collect()
                })
                .unwrap_or_default();
            let position = RecordPosition {
                partition: message.partition(),
                offset: message.offset(),
            };
            batch.push(Delivery {
                id: format!("{}@{}", position.partition, position.offset),
                headers,
                payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                // CreateTime (the producer's) or LogAppendTime (the broker's).
                produced: message
                    .timestamp()
                    .to_millis()
                    .and_then(|ms| u64::try_from(ms).ok())
                    .and_then(super::unix_ms),
                token: position,
            });
            if Instant::now() >= deadline && batch.is_empty() {
                break;
            }
        }
        Ok(batch)
    }

    /// Commits, per partition, the offset after the batch's last record:
    /// skipped records are committed like processed ones.
    fn settle(&mut self, batch: Vec<(RecordPosition, Settle)>) -> Result<()> {
        let mut next: Vec<(i32, i64)> = Vec::new();
        for (position, _) in batch {
            let after = position.offset.saturating_add(1);
            match next.iter_mut().find(|(p, _)| *p == position.partition) {
                Some((_, offset)) => *offset = (*offset).max(after),
                None => next.push((position.partition, after)),
            }
        }
        if next.is_empty() {
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets.add_partition_offset(&self.topic, partition, Offset::Offset(offset))?;
        }
        self.consumer.commit(&offsets, CommitMode::Sync)?;
        Ok(())
    }
}

/// How far `group` is behind on `topic`: records between its committed
/// offsets and the end of each partition (a group that never committed a
/// partition is behind by all of it). Zero when every record was settled.
pub fn group_lag(bootstrap: &str, topic: &str, group: &str, timeout: Duration) -> Result<u64> {
    let consumer: BaseConsumer = KafkaConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(Error::Other(format!("topic {topic} has no partitions")));
    }
    let mut wanted = TopicPartitionList::new();
    for partition in &partitions {
        wanted.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(wanted, timeout)?;
    let mut lag = 0u64;
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        let done = match committed
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(offset)) => offset,
            _ => low,
        };
        lag += u64::try_from(high.saturating_sub(done)).unwrap_or(0);
    }
    Ok(lag)
}

/// Record headers being built for a producer's record.
impl Injector for OwnedHeaders {
    fn set(&mut self, key: &str, value: String) {
        // `insert` consumes and returns the list (a builder).
        let headers = std::mem::replace(self, OwnedHeaders::new());
        *self = headers.insert(Header {
            key,
            value: Some(value.as_str()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::inject_baggage;

    #[test]
    fn baggage_is_injected_as_a_record_header() {
        let mut headers = OwnedHeaders::new();
        assert!(inject_baggage([&b"sd-routing-key=pr-42"[..]], &mut headers));
        let first = headers.iter().next().unwrap();
        assert_eq!(first.key, "baggage");
        assert_eq!(first.value, Some(&b"sd-routing-key=pr-42"[..]));
    }
}
