//! Fuzz the reader of the host's serialized header map.
//!
//! The input is read two ways:
//! - as a serialized map: `header_map::pairs` never panics, and a map it
//!   accepts is written back byte for byte by `header_map::serialize`
//!   (unless the buffer is empty, the host's other way to say "no
//!   headers"); the routing key is read from what it accepted;
//! - as headers, `name: value` per `\n`-separated line: serialized and read
//!   back, they are the same headers, names that are not UTF-8 included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandbox_router_core::carrier::KeyCarriers;
use sandbox_router_core::header_map;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = header_map::pairs(data) {
        if !data.is_empty() {
            assert_eq!(
                header_map::serialize(&pairs),
                data,
                "a map read back differently"
            );
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
    assert_eq!(read, headers);
});
