//! Recovering a routing key that an application dropped (issue 14, part 1).
//!
//! Many applications forward trace headers but not `baggage`. The filter runs
//! on both listeners of one sidecar, in one VM: on the **inbound** side it
//! records, for a request with a valid routing key, *trace id -> key*; on the
//! **outbound** side a request with no key whose trace id was recorded gets
//! the key back. This module is the host-free part:
//!
//! - [`TraceHeader`], [`TraceId`]: the trace id of a request, from
//!   `traceparent` (W3C), `x-b3-traceid` (B3), `uber-trace-id` (Jaeger) or
//!   `x-request-id` (Envoy/Istio), a malformed value ignored;
//! - [`Direction`]: which listener a request came through (Envoy's
//!   `xds.listener_direction` attribute);
//! - [`Store`]: the bounded table in proxy-wasm shared data, over a narrow
//!   [`SharedData`] trait so it is tested here with a map.
//!
//! # The table's layout
//!
//! proxy-wasm shared data cannot delete a key, so the table never creates
//! more than `ceil(maxEntries / 4)` keys: bucket `i` is the key
//! `sr-rec/<plugin hash>/<i>` and holds up to [`BUCKET_ENTRIES`] (4) entries,
//! one line `<recorded ms> <trace id> <key>` each. A trace id may live in one
//! of **two** buckets, chosen by the two halves of a 64-bit FNV-1a hash of it
//! (two-choice hashing): a new trace goes to the emptier of its two buckets
//! (an entry older than `ttlMs` counts as absent and is dropped whenever its
//! bucket is written); when both hold 4 live entries, the **oldest** of those
//! 8 is evicted (counted). A lookup reads the two buckets. So memory is
//! bounded by `maxEntries` entries of at most [`MAX_ENTRY_BYTES`] bytes
//! (about 70 for a `traceparent` id and a short key), whatever the traffic,
//! and a live entry is evicted before its TTL only when 8 younger live
//! traces share its two buckets: with the default 20 000 entries and 10 000
//! live traces, 32 (0.3 %) are evicted early (unit test below).
//!
//! One more key, `sr-rec/<plugin hash>/last`, holds when something was last
//! recorded (rewritten at most every quarter TTL): an outbound request
//! without a key reads only it on a sidecar whose inbound side has recorded
//! nothing within the TTL ([`Store::may_hold`]).

use crate::routing_key;

/// The trace headers the filter knows, in the default order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraceHeader {
    /// W3C Trace Context: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
    Traceparent,
    /// B3 multi-header: `x-b3-traceid: <16 or 32 hex>`.
    B3TraceId,
    /// Jaeger: `uber-trace-id: <trace id>:<span id>:<parent>:<flags>`.
    UberTraceId,
    /// Envoy's (and Istio's) request id, which Istio asks every app to forward.
    RequestId,
}

impl TraceHeader {
    pub const ALL: [TraceHeader; 4] = [
        TraceHeader::Traceparent,
        TraceHeader::B3TraceId,
        TraceHeader::UberTraceId,
        TraceHeader::RequestId,
    ];

    /// The header's name (lower case, as Envoy presents it).
    pub fn name(self) -> &'static str {
        match self {
            TraceHeader::Traceparent => "traceparent",
            TraceHeader::B3TraceId => "x-b3-traceid",
            TraceHeader::UberTraceId => "uber-trace-id",
            TraceHeader::RequestId => "x-request-id",
        }
    }

    /// The header named `name` (any case), if the filter knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|header| header.name().eq_ignore_ascii_case(name))
    }

    /// One letter that keeps ids of different kinds apart in the table.
    fn tag(self) -> char {
        match self {
            TraceHeader::Traceparent => 'w',
            TraceHeader::B3TraceId => 'b',
            TraceHeader::UberTraceId => 'j',
            TraceHeader::RequestId => 'r',
        }
    }

    /// The trace id in a value of this header, or `None` if it is malformed.
    pub fn parse(self, value: &[u8]) -> Option<TraceId> {
        let value = trim(value);
        let id = match self {
            TraceHeader::Traceparent => traceparent_trace_id(value)?,
            TraceHeader::B3TraceId => b3_trace_id(value)?,
            TraceHeader::UberTraceId => uber_trace_id(value)?,
            TraceHeader::RequestId => request_id(value)?,
        };
        let mut text = String::with_capacity(id.len() + 2);
        text.push(self.tag());
        text.push(':');
        // Hex ids compare in lower case; request ids are kept as sent.
        for &byte in id {
            text.push(char::from(if self == TraceHeader::RequestId {
                byte
            } else {
                byte.to_ascii_lowercase()
            }));
        }
        Some(TraceId(text))
    }
}

/// The default `recovery.traceHeaders`.
pub const DEFAULT_TRACE_HEADERS: [&str; 4] = [
    "traceparent",
    "x-b3-traceid",
    "uber-trace-id",
    "x-request-id",
];

/// A request id shorter than this is not used: a short id is likely to be
/// shared by unrelated requests, whose keys must not mix.
pub const MIN_REQUEST_ID_BYTES: usize = 16;
/// Longer ids of any kind are ignored.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// A validated trace id, tagged with its kind (`w:4bf9...`, `r:<uuid>`); only
/// characters of `[A-Za-z0-9._~:-]`, at most 130 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceId(String);

impl TraceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Two slots of a table of `slots` slots (equal when `slots` is 1).
    pub fn slots(&self, slots: u32) -> [u32; 2] {
        let hash = fnv1a64(self.0.as_bytes());
        let slots = slots.max(1);
        let first = (hash as u32) % slots;
        let mut second = ((hash >> 32) as u32) % slots;
        if second == first && slots > 1 {
            second = (first + 1) % slots;
        }
        [first, second]
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |i| i + 1);
    value.get(start..end.max(start)).unwrap_or_default()
}

fn is_hex(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_hexdigit)
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == b'0')
}

/// W3C Trace Context `traceparent`: `version-traceid-parentid-flags`, all
/// lower-case hex; version `ff` is invalid, ids of all zeros are invalid;
/// version `00` has exactly these four fields, a later version may add more
/// after another `-`.
fn traceparent_trace_id(value: &[u8]) -> Option<&[u8]> {
    let lower_hex = |bytes: &[u8]| bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let mut fields = value.split(|b| *b == b'-');
    let version = fields.next()?;
    let trace_id = fields.next()?;
    let parent_id = fields.next()?;
    let flags = fields.next()?;
    let rest = fields.next();
    let well_formed = version.len() == 2
        && lower_hex(version)
        && version != b"ff"
        && trace_id.len() == 32
        && lower_hex(trace_id)
        && !all_zero(trace_id)
        && parent_id.len() == 16
        && lower_hex(parent_id)
        && !all_zero(parent_id)
        && flags.len() == 2
        && lower_hex(flags)
        && (rest.is_none() || version != b"00");
    well_formed.then_some(trace_id)
}

/// B3 `x-b3-traceid`: 16 or 32 hex digits, not all zero.
fn b3_trace_id(value: &[u8]) -> Option<&[u8]> {
    let ok = matches!(value.len(), 16 | 32) && is_hex(value) && !all_zero(value);
    ok.then_some(value)
}

/// Jaeger `uber-trace-id`: the part before the first `:` (or `%3A`, as some
/// clients URL-encode the value), 1-32 hex digits, not all zero; the rest
/// must be present (`trace:span:parent:flags`) but is not checked further.
fn uber_trace_id(value: &[u8]) -> Option<&[u8]> {
    let colon = value.iter().position(|b| *b == b':');
    let encoded = value
        .windows(3)
        .position(|w| w.eq_ignore_ascii_case(b"%3a"));
    let end = match (colon, encoded) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return None,
    };
    let id = value.get(..end)?;
    let ok = (1..=32).contains(&id.len()) && is_hex(id) && !all_zero(id);
    ok.then_some(id)
}

/// `x-request-id`: 16-128 bytes of `[A-Za-z0-9._~-]` (a UUID is 36).
fn request_id(value: &[u8]) -> Option<&[u8]> {
    let ok = (MIN_REQUEST_ID_BYTES..=MAX_REQUEST_ID_BYTES).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    ok.then_some(value)
}

/// Which side of the sidecar a request came through: Envoy's
/// `xds.listener_direction` attribute (the listener's `traffic_direction`, an
/// int64: 1 inbound, 2 outbound). Istio sets it on every sidecar listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
    /// Not said (0, unset, not an int64, or a host without the property):
    /// the filter treats the request as outbound, as it always has, and
    /// records nothing.
    Unspecified,
}

impl Direction {
    /// From the property's bytes (an int64, little-endian, as Envoy
    /// serialises integer attributes for proxy-wasm).
    pub fn from_property(bytes: Option<&[u8]>) -> Self {
        let value = bytes
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_le_bytes);
        match value {
            Some(1) => Direction::Inbound,
            Some(2) => Direction::Outbound,
            _ => Direction::Unspecified,
        }
    }
}

/// Entries per bucket (one shared-data key).
pub const BUCKET_ENTRIES: usize = 4;

/// The most bytes one entry takes in a bucket: a 20-digit time, a tagged
/// trace id, a routing key, two separators and a newline.
pub const MAX_ENTRY_BYTES: usize = 20 + 2 + MAX_REQUEST_ID_BYTES + routing_key::MAX_LEN + 3;

/// One entry of a bucket: `<recorded ms> <trace id> <key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub recorded_ms: u64,
    pub trace_id: String,
    pub key: String,
}

impl Entry {
    /// Recorded less than `ttl_ms` ago (an entry from the future, after
    /// the clock went back, is not).
    fn live(&self, now_ms: u64, ttl_ms: u64) -> bool {
        self.recorded_ms <= now_ms && now_ms - self.recorded_ms < ttl_ms
    }
}

/// A bucket's entries as stored: one line each.
pub fn encode_bucket(entries: &[Entry]) -> Vec<u8> {
    let mut text = String::new();
    for entry in entries {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!(
            "{} {} {}",
            entry.recorded_ms, entry.trace_id, entry.key
        ));
    }
    text.into_bytes()
}

/// A bucket's entries; lines that are not an entry with a valid key are
/// dropped (a bucket is only ever written by this code, but it is read as
/// untrusted bytes all the same), and at most [`BUCKET_ENTRIES`] are kept.
pub fn decode_bucket(bytes: &[u8]) -> Vec<Entry> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Vec::new();
    };
    text.split('\n')
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let recorded_ms = parts.next()?.parse().ok()?;
            let trace_id = parts.next()?;
            let key = parts.next()?;
            if parts.next().is_some() || trace_id.is_empty() {
                return None;
            }
            routing_key::validate(key).ok()?;
            Some(Entry {
                recorded_ms,
                trace_id: trace_id.to_owned(),
                key: key.to_owned(),
            })
        })
        .take(BUCKET_ENTRIES)
        .collect()
}

/// proxy-wasm shared data as the table uses it: a value and its CAS token;
/// a write that names a stale token fails.
pub trait SharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// `true` if written.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// What recording one trace id did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored (new, refreshed, or in place of an expired entry).
    Stored,
    /// Stored in place of the oldest live entry of another trace.
    Evicted,
    /// Already there with the same key, recorded recently: nothing written.
    Fresh,
    /// Another worker wrote the bucket in between: left to it.
    Lost,
}

/// The bounded trace id -> routing key table (see the module's docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// Bucket keys are `<prefix><bucket>`.
    pub prefix: String,
    pub buckets: u32,
    pub ttl_ms: u64,
    /// `<prefix>last`, the table's marker ([`Store::note_recorded`]): built
    /// once, since every key-less outbound request reads it.
    marker_key: String,
}

impl Store {
    /// The table of plugin `plugin_name` (so two plugins sharing a VM id
    /// keep their own), for `max_entries` entries, with short keys
    /// `sr-rec/<hash of the name>/<bucket>`.
    pub fn new(plugin_name: &str, max_entries: u32, ttl_ms: u64) -> Self {
        let hash = fnv1a64(plugin_name.as_bytes()) as u32;
        let per_bucket = BUCKET_ENTRIES as u32;
        let prefix = format!("sr-rec/{hash:08x}/");
        Store {
            marker_key: format!("{prefix}last"),
            prefix,
            buckets: max_entries.div_ceil(per_bucket).max(1),
            ttl_ms,
        }
    }

    /// The most entries the table holds.
    pub fn capacity(&self) -> usize {
        self.buckets as usize * BUCKET_ENTRIES
    }

    fn bucket_key(&self, bucket: u32) -> String {
        format!("{}{bucket}", self.prefix)
    }

    /// Records `trace_id -> key` at `now_ms`. An entry of the same trace
    /// with the same key younger than a quarter of the TTL is left alone, so
    /// a busy trace does not write on every request. Any other entry of the
    /// trace (in either bucket: two workers may have recorded it at once) is
    /// replaced, so the trace has one entry, with this key.
    pub fn record(
        &self,
        data: &impl SharedData,
        trace_id: &TraceId,
        key: &str,
        now_ms: u64,
    ) -> Recorded {
        struct Bucket {
            id: u32,
            entries: Vec<Entry>,
            cas: Option<u32>,
            dirty: bool,
        }
        let mut buckets: Vec<Bucket> = dedup(trace_id.slots(self.buckets))
            .map(|id| {
                let (value, cas) = data.get(&self.bucket_key(id));
                let mut entries = value.as_deref().map(decode_bucket).unwrap_or_default();
                // Expired entries (and any from the future) are free room.
                entries.retain(|entry| entry.live(now_ms, self.ttl_ms));
                Bucket {
                    id,
                    entries,
                    cas,
                    dirty: false,
                }
            })
            .collect();
        let own = |entry: &Entry| entry.trace_id == trace_id.as_str();
        let mut owned = buckets
            .iter()
            .flat_map(|bucket| bucket.entries.iter().filter(|e| own(e)));
        let newest = owned.clone().map(|e| e.recorded_ms).max();
        if owned.all(|e| e.key == key)
            && newest.is_some_and(|at| now_ms.saturating_sub(at) < self.ttl_ms / 4)
        {
            return Recorded::Fresh;
        }
        // The trace's bucket if it has one, else the emptier with room.
        let mut target = None;
        for (index, bucket) in buckets.iter_mut().enumerate() {
            let before = bucket.entries.len();
            bucket.entries.retain(|e| !own(e));
            if bucket.entries.len() != before {
                bucket.dirty = true;
                target.get_or_insert(index);
            }
        }
        let mut outcome = Recorded::Stored;
        let target = match target {
            Some(index) => index,
            None => match buckets
                .iter()
                .enumerate()
                .filter(|(_, bucket)| bucket.entries.len() < BUCKET_ENTRIES)
                .min_by_key(|(_, bucket)| bucket.entries.len())
            {
                Some((index, _)) => index,
                None => {
                    // Both full of live entries: the oldest of them goes.
                    let oldest = buckets
                        .iter()
                        .enumerate()
                        .flat_map(|(index, bucket)| {
                            bucket
                                .entries
                                .iter()
                                .enumerate()
                                .map(move |(at, e)| (e.recorded_ms, index, at))
                        })
                        .min();
                    let Some((_, index, at)) = oldest else {
                        return Recorded::Lost;
                    };
                    if let Some(bucket) = buckets.get_mut(index) {
                        if at < bucket.entries.len() {
                            bucket.entries.remove(at);
                        }
                    }
                    outcome = Recorded::Evicted;
                    index
                }
            },
        };
        let Some(bucket) = buckets.get_mut(target) else {
            return Recorded::Lost;
        };
        bucket.entries.push(Entry {
            recorded_ms: now_ms,
            trace_id: trace_id.as_str().to_owned(),
            key: key.to_owned(),
        });
        bucket.dirty = true;
        let mut written = false;
        for (index, bucket) in buckets.iter().enumerate() {
            if !bucket.dirty {
                continue;
            }
            let ok = data.set(
                &self.bucket_key(bucket.id),
                &encode_bucket(&bucket.entries),
                bucket.cas,
            );
            if index == target {
                written = ok;
            }
        }
        if written {
            outcome
        } else {
            Recorded::Lost
        }
    }

    /// Notes that an entry was recorded at `now_ms` (in one more key, the
    /// table's marker), at most every quarter TTL, so that the outbound
    /// side can tell with one read that the table holds nothing live.
    pub fn note_recorded(&self, data: &impl SharedData, now_ms: u64) {
        let marked = data.get(&self.marker_key).0.and_then(|b| parse_ms(&b));
        let stale = marked.is_none_or(|at| at > now_ms || now_ms - at >= self.ttl_ms / 4);
        if stale {
            let _ = data.set(&self.marker_key, now_ms.to_string().as_bytes(), None);
        }
    }

    /// Whether the table may hold a live entry: something was recorded
    /// within `ttlMs` plus the quarter TTL the marker may lag by. If so, the
    /// time `clock` read (the lookups use it); `None` after one read (no
    /// trace header, no bucket, no clock read: `clock` is asked only when
    /// there is a marker) on a sidecar whose inbound side has seen no keyed
    /// request, which is most of them.
    pub fn may_hold(&self, data: &impl SharedData, clock: impl FnOnce() -> u64) -> Option<u64> {
        let at = data.get(&self.marker_key).0.and_then(|b| parse_ms(&b))?;
        let now_ms = clock();
        // A clock that went back: be safe.
        let live = at > now_ms || now_ms - at < self.ttl_ms.saturating_add(self.ttl_ms / 4);
        live.then_some(now_ms)
    }

    /// The key recorded for `trace_id`, if a live entry has it (the newest,
    /// should two workers have recorded it in both buckets).
    pub fn find(&self, data: &impl SharedData, trace_id: &TraceId, now_ms: u64) -> Option<String> {
        // The per-request path: lines are compared in place, and only the
        // one that matches is validated and copied.
        let mut best: Option<(u64, String)> = None;
        for bucket in dedup(trace_id.slots(self.buckets)) {
            let Some(bytes) = data.get(&self.bucket_key(bucket)).0 else {
                continue;
            };
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            // The entries `decode_bucket` would keep, in the same order.
            let entries = text.split('\n').filter_map(|line| {
                let mut parts = line.split(' ');
                let (Some(at), Some(id), Some(key), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return None;
                };
                let at = at.parse::<u64>().ok()?;
                let valid = !id.is_empty() && routing_key::validate(key).is_ok();
                valid.then_some((at, id, key))
            });
            for (at, id, key) in entries.take(BUCKET_ENTRIES) {
                let live = at <= now_ms && now_ms - at < self.ttl_ms;
                let newer = best.as_ref().is_none_or(|(best_at, _)| at >= *best_at);
                if id == trace_id.as_str() && live && newer {
                    best = Some((at, key.to_owned()));
                }
            }
        }
        best.map(|(_, key)| key)
    }
}

fn parse_ms(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn dedup(slots: [u32; 2]) -> impl Iterator<Item = u32> {
    let [first, second] = slots;
    std::iter::once(first).chain((second != first).then_some(second))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(header: TraceHeader, value: &str) -> Option<String> {
        header.parse(value.as_bytes()).map(|id| id.0)
    }

    #[test]
    fn traceparent_gives_the_trace_id_not_the_span_id() {
        assert_eq!(
            parse(TraceHeader::Traceparent, TP).as_deref(),
            Some("w:4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            parse(TraceHeader::Traceparent, &format!("  {TP}\t")).as_deref(),
            Some("w:4bf92f3577b34da6a3ce929d0e0e4736")
        );
        // A later version may add fields; version 00 may not.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(parse(TraceHeader::Traceparent, future).is_some());
        assert_eq!(
            parse(TraceHeader::Traceparent, &format!("{TP}-extra")),
            None
        );
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(TraceHeader::Traceparent, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn b3_trace_ids_are_16_or_32_hex() {
        assert_eq!(
            parse(TraceHeader::B3TraceId, "463AC35C9F6413AD").as_deref(),
            Some("b:463ac35c9f6413ad")
        );
        assert!(parse(TraceHeader::B3TraceId, "463ac35c9f6413ad48485a3953bb6124").is_some());
        for bad in [
            "",
            "463ac35c9f6413a",
            "0000000000000000",
            "463ac35c9f6413adx",
            "463ac35c-9f6413a",
        ] {
            assert_eq!(parse(TraceHeader::B3TraceId, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn uber_trace_id_is_the_part_before_the_first_colon() {
        assert_eq!(
            parse(
                TraceHeader::UberTraceId,
                "5b8aa5a2d2c872e8321cf37308d69df2:5fb6ca2c14a3dd0c:0:1"
            )
            .as_deref(),
            Some("j:5b8aa5a2d2c872e8321cf37308d69df2")
        );
        assert_eq!(
            parse(TraceHeader::UberTraceId, "ABC%3A1%3A0%3A1").as_deref(),
            Some("j:abc")
        );
        for bad in [
            "",
            "abc",
            ":1:0:1",
            "0:1:0:1",
            "xyz:1:0:1",
            "123456789012345678901234567890123:1:0:1",
        ] {
            assert_eq!(parse(TraceHeader::UberTraceId, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn request_ids_are_long_enough_and_plain() {
        let uuid = "7f3c9a52-1c2b-4e5f-9a8b-0c1d2e3f4a5b";
        assert_eq!(
            parse(TraceHeader::RequestId, uuid).as_deref(),
            Some(format!("r:{uuid}").as_str())
        );
        for bad in ["", "short-id", "has space in it, 1234", &"a".repeat(129)] {
            assert_eq!(parse(TraceHeader::RequestId, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn kinds_do_not_mix() {
        let id = "463ac35c9f6413ad";
        let b3 = TraceHeader::B3TraceId.parse(id.as_bytes()).unwrap();
        let rid = TraceHeader::RequestId.parse(id.as_bytes()).unwrap();
        assert_ne!(b3, rid);
    }

    #[test]
    fn header_names_are_known_in_any_case() {
        assert_eq!(
            TraceHeader::from_name("TraceParent"),
            Some(TraceHeader::Traceparent)
        );
        assert_eq!(TraceHeader::from_name("x-b3-spanid"), None);
        for (name, header) in DEFAULT_TRACE_HEADERS.iter().zip(TraceHeader::ALL) {
            assert_eq!(header.name(), *name);
        }
    }

    #[test]
    fn direction_from_the_listener_property() {
        let int = |v: i64| v.to_le_bytes().to_vec();
        assert_eq!(Direction::from_property(Some(&int(1))), Direction::Inbound);
        assert_eq!(Direction::from_property(Some(&int(2))), Direction::Outbound);
        assert_eq!(
            Direction::from_property(Some(&int(0))),
            Direction::Unspecified
        );
        assert_eq!(Direction::from_property(None), Direction::Unspecified);
        assert_eq!(Direction::from_property(Some(b"1")), Direction::Unspecified);
    }

    #[test]
    fn buckets_round_trip_and_bad_lines_are_dropped() {
        let entry = |ms, key: &str| Entry {
            recorded_ms: ms,
            trace_id: "w:abc".into(),
            key: key.into(),
        };
        let entries = vec![entry(12, "pr-42"), entry(13, &"k".repeat(128))];
        let bytes = encode_bucket(&entries);
        assert!(bytes.len() <= 2 * MAX_ENTRY_BYTES);
        assert_eq!(decode_bucket(&bytes), entries);
        let mixed = b"x w:abc pr-42\n1 w:abc bad/key\n2 w:abc\n3 w:abc pr-1 extra\n4 w:abc pr-1";
        assert_eq!(decode_bucket(mixed), vec![entry(4, "pr-1")]);
        assert_eq!(decode_bucket(b"\xff"), vec![]);
        let many = encode_bucket(&vec![entry(1, "a"); 9]);
        assert_eq!(decode_bucket(&many).len(), BUCKET_ENTRIES);
    }

    /// Shared data as Envoy keeps it: values with CAS tokens, keys forever.
    #[derive(Default)]
    struct Map(RefCell<HashMap<String, (Vec<u8>, u32)>>);

    impl SharedData for Map {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.0.borrow().get(key) {
                Some((value, cas)) => (Some(value.clone()), Some(*cas)),
                None => (None, None),
            }
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            let mut map = self.0.borrow_mut();
            let current = map.get(key).map(|(_, c)| *c);
            if cas.is_some() && cas != current {
                return false;
            }
            let next = current.map_or(1, |c| c + 1);
            map.insert(key.to_owned(), (value.to_vec(), next));
            true
        }
    }

    fn id(n: u32) -> TraceId {
        TraceHeader::B3TraceId
            .parse(format!("{:016x}", u64::from(n) + 1).as_bytes())
            .unwrap()
    }

    #[test]
    fn a_recorded_trace_is_found_until_its_ttl() {
        let store = Store::new("p", 100, 1000);
        let data = Map::default();
        assert_eq!(store.find(&data, &id(1), 0), None);
        assert_eq!(store.record(&data, &id(1), "pr-42", 10), Recorded::Stored);
        assert_eq!(store.find(&data, &id(1), 10).as_deref(), Some("pr-42"));
        assert_eq!(store.find(&data, &id(1), 1009).as_deref(), Some("pr-42"));
        assert_eq!(store.find(&data, &id(1), 1010), None, "expired");
        assert_eq!(store.find(&data, &id(2), 10), None, "another trace");
    }

    #[test]
    fn a_busy_trace_is_not_rewritten_on_every_request() {
        let store = Store::new("p", 100, 1000);
        let data = Map::default();
        assert_eq!(store.record(&data, &id(1), "pr-42", 0), Recorded::Stored);
        assert_eq!(store.record(&data, &id(1), "pr-42", 100), Recorded::Fresh);
        // Refreshed after a quarter of the TTL: alive a TTL from then.
        assert_eq!(store.record(&data, &id(1), "pr-42", 300), Recorded::Stored);
        assert_eq!(store.find(&data, &id(1), 1200).as_deref(), Some("pr-42"));
        // A new key for the same trace replaces the old at once.
        assert_eq!(store.record(&data, &id(1), "pr-7", 301), Recorded::Stored);
        assert_eq!(store.find(&data, &id(1), 302).as_deref(), Some("pr-7"));
    }

    #[test]
    fn memory_is_bounded_by_max_entries_and_the_oldest_entry_is_evicted() {
        let slots = 64;
        let store = Store::new("p", slots, 1_000_000);
        let data = Map::default();
        let mut evicted = 0;
        for n in 0..10_000 {
            match store.record(&data, &id(n), "pr-42", u64::from(n)) {
                Recorded::Evicted => evicted += 1,
                Recorded::Stored => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(store.capacity(), slots as usize);
        assert!(
            data.0.borrow().len() <= slots as usize / BUCKET_ENTRIES,
            "never more keys than buckets"
        );
        assert!(data
            .0
            .borrow()
            .values()
            .all(|(v, _)| v.len() <= BUCKET_ENTRIES * MAX_ENTRY_BYTES));
        assert!(evicted >= 10_000 - slots as usize);
        // The newest traces are still there: an eviction takes the older.
        assert_eq!(
            store.find(&data, &id(9_999), 10_000).as_deref(),
            Some("pr-42")
        );
        let survivors = (0..10_000).filter(|n| store.find(&data, &id(*n), 10_000).is_some());
        assert!(survivors.count() <= slots as usize);
    }

    #[test]
    fn with_room_to_spare_two_choices_keep_almost_every_live_trace() {
        // 20 000 entries (the default) and 10 000 live traces.
        let store = Store::new("p", 20_000, 1_000_000);
        let data = Map::default();
        let evicted = (0..10_000)
            .filter(|n| store.record(&data, &id(*n), "k", u64::from(*n)) == Recorded::Evicted)
            .count();
        let lost = (0..10_000)
            .filter(|n| store.find(&data, &id(*n), 10_000).is_none())
            .count();
        println!("10 000 traces in 20 000 entries: {evicted} evicted, {lost} lost");
        assert_eq!(evicted, lost);
        // Measured: 32 (0.3 %).
        assert!(lost < 100, "{lost}");
    }

    #[test]
    fn expired_entries_are_reused_without_eviction() {
        let store = Store::new("p", 4, 100);
        let data = Map::default();
        for n in 0..4 {
            assert_eq!(store.record(&data, &id(n), "a", n.into()), Recorded::Stored);
        }
        assert_eq!(store.record(&data, &id(4), "b", 50), Recorded::Evicted);
        assert_eq!(store.find(&data, &id(0), 51), None, "the oldest went");
        assert_eq!(store.find(&data, &id(1), 51).as_deref(), Some("a"));
        assert_eq!(store.record(&data, &id(5), "c", 500), Recorded::Stored);
        assert_eq!(store.find(&data, &id(5), 501).as_deref(), Some("c"));
        assert_eq!(store.find(&data, &id(4), 501), None);
    }

    #[test]
    fn a_write_racing_another_worker_is_left_to_it() {
        struct Racing(Map);
        impl SharedData for Racing {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                let read = self.0.get(key);
                // Another worker writes right after this read.
                self.0.set(key, b"9 b:x other", None);
                read
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
                self.0.set(key, value, cas)
            }
        }
        let store = Store::new("p", 16, 1000);
        let data = Racing(Map::default());
        for bucket in id(1).slots(store.buckets) {
            data.0.set(&store.bucket_key(bucket), b"junk", None);
        }
        assert_eq!(store.record(&data, &id(1), "pr-42", 10), Recorded::Lost);
    }

    #[test]
    fn a_trace_recorded_twice_by_racing_workers_ends_with_one_entry() {
        // Found by the fuzz target: the same trace in both buckets (two
        // workers recording at once), one with another key, or from the
        // future (the clock went back).
        let store = Store::new("p", 16, 1000);
        let data = Map::default();
        let [a, b] = id(1).slots(store.buckets);
        let trace = id(1).as_str().to_owned();
        data.set(
            &store.bucket_key(a),
            format!("1 {trace} pr-42").as_bytes(),
            None,
        );
        data.set(
            &store.bucket_key(b),
            format!("5 {trace} other\n3 b:2 x").as_bytes(),
            None,
        );
        assert_eq!(store.record(&data, &id(1), "pr-42", 5), Recorded::Stored);
        assert_eq!(store.find(&data, &id(1), 5).as_deref(), Some("pr-42"));
        let future = Map::default();
        future.set(
            &store.bucket_key(a),
            format!("14 {trace} prr").as_bytes(),
            None,
        );
        assert_eq!(
            store.find(&future, &id(1), 5),
            None,
            "from the future: not live"
        );
        assert_eq!(store.record(&future, &id(1), "pr-42", 5), Recorded::Stored);
        assert_eq!(store.find(&future, &id(1), 5).as_deref(), Some("pr-42"));
        // The other worker's entry in the other bucket was dropped.
        let other = future.get(&store.bucket_key(b)).0.unwrap_or_default();
        assert!(!String::from_utf8_lossy(&other).contains(&trace));
    }

    #[test]
    fn the_marker_says_when_the_table_cannot_hold_anything_live() {
        let store = Store::new("p", 16, 1000);
        let data = Map::default();
        let never = || -> u64 { panic!("no marker: the clock is not read") };
        assert_eq!(store.may_hold(&data, never), None, "never recorded");
        store.record(&data, &id(1), "pr-42", 100);
        store.note_recorded(&data, 100);
        assert_eq!(store.may_hold(&data, || 100), Some(100));
        // Not rewritten within a quarter TTL...
        store.record(&data, &id(2), "pr-42", 340);
        store.note_recorded(&data, 340);
        assert_eq!(data.get(&store.marker_key).0.as_deref(), Some(&b"100"[..]));
        // ...so it stays true until that entry has expired too.
        assert_eq!(store.find(&data, &id(2), 1339).as_deref(), Some("pr-42"));
        assert_eq!(store.may_hold(&data, || 1339), Some(1339));
        assert_eq!(store.may_hold(&data, || 1350), None);
        assert!(store.find(&data, &id(2), 1350).is_none());
        // A clock that went back: may hold.
        assert_eq!(store.may_hold(&data, || 50), Some(50));
        store.note_recorded(&data, 1400);
        assert_eq!(store.may_hold(&data, || 1400), Some(1400));
    }

    #[test]
    fn plugins_keep_their_own_tables() {
        assert_ne!(Store::new("a", 1, 1).prefix, Store::new("b", 1, 1).prefix);
        assert!(
            Store::new("demo.sandbox-router~istio-translated-wasmplugin", 20_000, 1)
                .bucket_key(4_999)
                .len()
                <= 24
        );
    }
}
