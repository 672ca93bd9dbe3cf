//! Redis Streams: a consumer group per consumer (`XGROUP CREATE ...
//! MKSTREAM`), read with `XREADGROUP`, settled with `XACK` whether
//! processed or skipped. Also the few other commands producers and checks
//! use: `XADD`, `XPENDING`, `XLEN`. A producer's fields are a
//! `Vec<(String, Vec<u8>)>`, which is a [`crate::propagation::Injector`]. Raw commands, parsed here, so what is
//! sent to Redis is in plain sight.

use std::collections::HashMap;
use std::time::Duration;

pub use redis;
use redis::{Connection, Value};

use super::{unix_ms, Delivery, Settle, Subscription};

/// A Redis command failed, or answered in a shape these commands never get.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: unexpected answer: {0}")]
    Malformed(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A consumer group's view of a stream, for one consumer of the group.
pub struct StreamGroup {
    conn: Connection,
    stream: String,
    group: String,
    consumer: String,
}

impl std::fmt::Debug for StreamGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamGroup")
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl StreamGroup {
    /// Joins (creating if needed) `group` on `stream` as `consumer`. A new
    /// group starts at the stream's first entry.
    pub fn join(mut conn: Connection, stream: &str, group: &str, consumer: &str) -> Result<Self> {
        create_group(&mut conn, stream, group)?;
        Ok(StreamGroup {
            conn,
            stream: stream.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
        })
    }
}

impl Subscription for StreamGroup {
    /// The entry id.
    type Token = String;
    type Error = Error;

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<String>>> {
        let block_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let entries = read_group(
            &mut self.conn,
            &self.stream,
            &self.group,
            &self.consumer,
            max,
            block_ms,
        )?;
        Ok(entries
            .into_iter()
            .map(|entry| Delivery {
                id: entry.id.clone(),
                headers: entry.fields.into_iter().collect(),
                payload: Vec::new(),
                produced: entry_time(&entry.id),
                token: entry.id,
            })
            .collect())
    }

    /// `XACK` for all: a skipped entry is done with as much as a processed one.
    fn settle(&mut self, batch: Vec<(String, Settle)>) -> Result<()> {
        let ids: Vec<String> = batch.into_iter().map(|(id, _)| id).collect();
        ack(&mut self.conn, &self.stream, &self.group, &ids)?;
        Ok(())
    }
}

/// One stream entry: its id and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub fields: HashMap<String, Vec<u8>>,
}

/// Appends an entry; returns its id.
pub fn add(conn: &mut Connection, stream: &str, fields: &[(&str, &[u8])]) -> Result<String> {
    let mut command = redis::cmd("XADD");
    command.arg(stream).arg("*");
    for (name, value) in fields {
        command.arg(*name).arg(*value);
    }
    Ok(command.query(conn)?)
}

/// Creates consumer group `group` reading `stream` from its first entry
/// (creating the stream if needed). An existing group is kept.
pub fn create_group(conn: &mut Connection, stream: &str, group: &str) -> Result<()> {
    let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query(conn);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Up to `count` new entries for `consumer` of `group`, waiting up to
/// `block_ms` for the first one.
pub fn read_group(
    conn: &mut Connection,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
    block_ms: u64,
) -> Result<Vec<Entry>> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query(conn)?;
    parse_read_reply(reply)
}

/// Acknowledges entries for `group`.
pub fn ack(conn: &mut Connection, stream: &str, group: &str, ids: &[String]) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(redis::cmd("XACK")
        .arg(stream)
        .arg(group)
        .arg(ids)
        .query(conn)?)
}

/// The number of entries of the stream.
pub fn len(conn: &mut Connection, stream: &str) -> Result<u64> {
    Ok(redis::cmd("XLEN").arg(stream).query(conn)?)
}

/// The number of entries delivered to `group` and not acknowledged.
pub fn pending(conn: &mut Connection, stream: &str, group: &str) -> Result<u64> {
    let summary: Value = redis::cmd("XPENDING").arg(stream).arg(group).query(conn)?;
    match summary {
        Value::Array(items) => match items.first() {
            Some(Value::Int(n)) => u64::try_from(*n).map_err(|e| malformed(e.to_string())),
            _ => Err(malformed("XPENDING: no count")),
        },
        other => Err(malformed(format!("XPENDING: {other:?}"))),
    }
}

/// `[[stream, [[id, [field, value, ...]], ...]]]`, or nil on timeout.
fn parse_read_reply(reply: Value) -> Result<Vec<Entry>> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams,
        other => return Err(malformed(format!("XREADGROUP: {other:?}"))),
    };
    let mut entries = Vec::new();
    for stream in streams {
        let [_, Value::Array(items)] = two(stream)? else {
            return Err(malformed("XREADGROUP: stream without entries"));
        };
        for item in items {
            entries.push(parse_entry(item)?);
        }
    }
    Ok(entries)
}

fn parse_entry(item: Value) -> Result<Entry> {
    let [id, Value::Array(flat)] = two(item)? else {
        return Err(malformed("entry without fields"));
    };
    let id = bytes(id).and_then(|b| String::from_utf8(b).map_err(|e| malformed(e.to_string())))?;
    let mut fields = HashMap::new();
    let mut flat = flat.into_iter();
    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
        let name = String::from_utf8(bytes(name)?).map_err(|e| malformed(e.to_string()))?;
        fields.insert(name, bytes(value)?);
    }
    Ok(Entry { id, fields })
}

fn two(value: Value) -> Result<[Value; 2]> {
    match value {
        Value::Array(items) => <[Value; 2]>::try_from(items)
            .map_err(|v| malformed(format!("{} items, not 2", v.len()))),
        other => Err(malformed(format!("not a pair: {other:?}"))),
    }
}

fn bytes(value: Value) -> Result<Vec<u8>> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(malformed(format!("not a string: {other:?}"))),
    }
}

fn malformed(problem: impl Into<String>) -> Error {
    Error::Malformed(problem.into())
}

/// An entry id's time: `<milliseconds>-<sequence>`, stamped by the server
/// (unless the producer chose the id).
fn entry_time(id: &str) -> Option<std::time::SystemTime> {
    let (ms, _sequence) = id.split_once('-')?;
    unix_ms(ms.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_ids_time_is_its_milliseconds() {
        let at = entry_time("1700000000123-4").unwrap();
        let since = at.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(since.as_millis(), 1_700_000_000_123);
        assert_eq!(entry_time("not-an-id"), None);
        assert_eq!(entry_time("123"), None);
    }
}
