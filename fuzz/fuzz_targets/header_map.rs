//! Fuzz the reader of the host's serialized header map.
//!
//! The input is read two ways:
//! - as a serialized map: `header_map::pairs` never panics, and a map it
//!   accepts is written back byte for byte by `header_map::serialize` when
//!   every name is UTF-8 and the buffer is not empty (a map with a non-UTF-8 name reads as the same map
//!   without that header); the routing key is read from what it accepted;
//! - as headers, `name: value` per `\n`-separated line: serialized and read
//!   back, they are the same headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandbox_router_core::carrier::KeyCarriers;
use sandbox_router_core::header_map;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = header_map::pairs(data) {
        let written = header_map::serialize(&pairs);
        // An empty buffer is the host's other way to say "no headers".
        if written != data && !data.is_empty() {
            // Only a header left out (a non-UTF-8 name) may make it differ,
            // and then the shorter map reads as the same pairs.
            assert!(written.len() < data.len(), "a map read back differently");
            assert_eq!(header_map::pairs(&written).as_ref(), Ok(&pairs));
        }
        let _ = KeyCarriers::default().extract(&pairs);
    }

    let headers: Vec<(&[u8], &[u8])> = data
        .split(|&b| b == b'\n')
        .map(|line| {
            let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
            let (name, value) = line.split_at(colon);
            (name, value.get(1..).unwrap_or_default())
        })
        .collect();
    let buffer = header_map::serialize(&headers);
    let read = header_map::pairs(&buffer).expect("a serialized map is read");
    let utf8: Vec<(&str, &[u8])> = headers
        .iter()
        .filter_map(|(name, value)| Some((std::str::from_utf8(name).ok()?, *value)))
        .collect();
    assert_eq!(read, utf8);
});
