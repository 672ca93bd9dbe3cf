//! Fuzz the recovery feature's parsers: trace ids from the four trace
//! headers, and the table's buckets as read back from shared data.
//!
//! The first byte picks the trace header (`traceparent`, `x-b3-traceid`,
//! `uber-trace-id`, `x-request-id`), the rest is its value; the whole input
//! is also read as a bucket. Invariants:
//! - neither parser panics;
//! - a trace id has only `[A-Za-z0-9._~:-]` (never the bucket's separators,
//!   space and newline) and at most 130 bytes;
//! - a trace id recorded with a key is found with it (a table of one bucket,
//!   over an in-memory shared data);
//! - a bucket holds at most `BUCKET_ENTRIES`, and what it decodes to is
//!   written and read back unchanged.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use sandbox_router_core::recovery::{
    decode_bucket, encode_bucket, Recorded, SharedData, Store, TraceHeader, BUCKET_ENTRIES,
};

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
        map.insert(
            key.to_owned(),
            (value.to_vec(), current.map_or(1, |c| c + 1)),
        );
        true
    }
}

fuzz_target!(|data: &[u8]| {
    let entries = decode_bucket(data);
    assert!(entries.len() <= BUCKET_ENTRIES);
    assert_eq!(decode_bucket(&encode_bucket(&entries)), entries);

    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let header = TraceHeader::ALL[usize::from(selector) % TraceHeader::ALL.len()];
    let Some(id) = header.parse(value) else {
        return;
    };
    let text = id.as_str();
    assert!(text.len() <= 130, "{text:?}");
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b':' | b'-')),
        "{text:?}"
    );
    let store = Store::new("fuzz", 4, 1000);
    let shared = Map::default();
    // Whatever was in the bucket before (the input, read as one).
    for bucket in id.slots(store.buckets) {
        shared.set(&format!("{}{bucket}", store.prefix), data, None);
    }
    let recorded = store.record(&shared, &id, "pr-42", 5);
    assert_ne!(recorded, Recorded::Lost);
    assert_eq!(store.find(&shared, &id, 5).as_deref(), Some("pr-42"));
});
