//! Differential fuzzing of the core's own JSON reader (`core/src/json.rs`)
//! against `serde_json`, which it stands in for in the `.wasm` (for size).
//!
//! Invariants, whatever the bytes:
//! - `json::Value::from_slice` accepts exactly what `serde_json` accepts as
//!   a `serde_json::Value`, and reads the same value (integers the same,
//!   anything else numeric a float in both, the last of duplicate keys);
//! - `parse_delta` (a `GET /v1/routes?since=7` body, read by hand) reads
//!   the same delta as `Delta`'s serde derive through `serde_json`, and
//!   refuses as malformed only what that refuses;
//! - `parse_routes` (a full table, read by hand) accepts a document only if
//!   `serde_json` reads it with a `u64` `version` and an array `routes`
//!   (the last of duplicate keys; other members skipped as both skip them,
//!   their strings' UTF-8 unchecked), and then holds that many routes at
//!   most.
#![no_main]

use std::fmt;

use libfuzzer_sys::fuzz_target;
use sandbox_router_core::json::{Number, Value};
use sandbox_router_core::routes_api::{parse_delta, parse_routes, BadAnswer, Delta};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

fuzz_target!(|data: &[u8]| {
    let ours = Value::from_slice(data);
    let theirs = serde_json::from_slice::<serde_json::Value>(data);
    match (&ours, &theirs) {
        (Ok(ours), Ok(theirs)) => assert_same(ours, theirs),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "acceptance differs: ours {:?}, serde_json {:?}",
            ours.as_ref().err(),
            theirs.as_ref().err()
        ),
    }

    let delta = parse_delta(data, 7);
    let derived = serde_json::from_slice::<Delta>(data);
    match (&delta, &derived) {
        (Ok(delta), Ok(derived)) => assert_eq!(delta, derived),
        (Ok(delta), Err(e)) => panic!("read {delta:?}, serde_json refused: {e}"),
        (Err(BadAnswer::Malformed(m)), Ok(derived)) => {
            panic!("refused as malformed ({m}), serde_json read {derived:?}")
        }
        _ => {}
    }

    if let Ok(answer) = parse_routes(data) {
        let table: Table = serde_json::from_slice(data).expect("parse_routes accepted it");
        assert_eq!(table.version, Some(answer.version));
        let routes = table.routes.expect("an accepted table has a routes array");
        assert!(answer.table.len() <= routes);
    }
});

/// A table document as `parse_routes` reads it, through `serde_json`'s
/// parser: `version`, how many `routes`, the last of duplicate keys; other
/// members skipped (`IgnoredAny`: a string's UTF-8 is not checked there, as
/// `parse_routes` does not check it either). A `serde_json::Value` would
/// check it, and refuse documents both readers accept.
struct Table {
    version: Option<u64>,
    routes: Option<usize>,
}

impl<'de> Deserialize<'de> for Table {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor;
        impl<'de> Visitor<'de> for TableVisitor {
            type Value = Table;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a routes document")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Table, A::Error> {
                let mut table = Table {
                    version: None,
                    routes: None,
                };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "version" => table.version = Some(map.next_value()?),
                        "routes" => table.routes = Some(map.next_value::<Vec<IgnoredAny>>()?.len()),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(table)
            }
        }
        deserializer.deserialize_map(TableVisitor)
    }
}

fn assert_same(ours: &Value, theirs: &serde_json::Value) {
    match (ours, theirs) {
        (Value::Null, serde_json::Value::Null) => {}
        (Value::Bool(a), serde_json::Value::Bool(b)) => assert_eq!(a, b),
        (Value::Number(Number::U64(a)), serde_json::Value::Number(b)) => {
            assert_eq!(Some(*a), b.as_u64())
        }
        (Value::Number(Number::I64(a)), serde_json::Value::Number(b)) => {
            assert!(b.as_u64().is_none());
            assert_eq!(Some(*a), b.as_i64())
        }
        (Value::Number(Number::Float(text)), serde_json::Value::Number(b)) => {
            assert!(b.is_f64(), "{text} is a float to us, {b} to serde_json")
        }
        (Value::String(a), serde_json::Value::String(b)) => assert_eq!(a, b),
        (Value::Array(a), serde_json::Value::Array(b)) => {
            assert_eq!(a.len(), b.len());
            for (a, b) in a.iter().zip(b) {
                assert_same(a, b);
            }
        }
        (Value::Object(a), serde_json::Value::Object(b)) => {
            assert_eq!(a.len(), b.len());
            for ((key, a), (their_key, b)) in a.iter().zip(b) {
                assert_eq!(key, their_key);
                assert_same(a, b);
            }
        }
        (ours, theirs) => panic!("ours {ours:?}, serde_json {theirs:?}"),
    }
}
