//! Maps keyed by the host's context ids (a request, a root context).
//!
//! The host numbers contexts itself, one after the other: no client picks
//! them, so these maps need no keyed hash against chosen collisions (the
//! filter's other maps, keyed by what clients send, use SipHash under
//! random keys: `sandbox_router_core::random_state`). One multiplication
//! spreads an id over the hash's bits; a request touches these maps in each
//! of its callbacks.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by context ids (or by pairs of them).
pub type ContextMap<K, V> = HashMap<K, V, BuildHasherDefault<ContextIdHasher>>;

/// Fibonacci hashing of the `u32`s written to it.
#[derive(Debug, Default, Clone, Copy)]
pub struct ContextIdHasher {
    hash: u64,
}

impl Hasher for ContextIdHasher {
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u32` is used by the maps' keys; any other input is
        // still hashed, byte by byte.
        for &byte in bytes {
            self.write_u32(u32::from(byte));
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.hash = (self.hash.rotate_left(5) ^ u64::from(id)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_pairs_are_found_again_and_spread() {
        let mut map: ContextMap<u32, u32> = ContextMap::default();
        for id in 0..10_000 {
            map.insert(id, id * 2);
        }
        for id in 0..10_000 {
            assert_eq!(map.get(&id), Some(&(id * 2)));
        }
        let mut pairs: ContextMap<(u32, u32), u32> = ContextMap::default();
        pairs.insert((1, 2), 3);
        pairs.insert((2, 1), 4);
        assert_eq!(pairs.get(&(1, 2)), Some(&3));
        assert_eq!(pairs.get(&(2, 1)), Some(&4));
        // Consecutive ids differ in the top bits, which the map's control
        // bytes take.
        let top = |id: u32| {
            let mut hasher = ContextIdHasher::default();
            hasher.write_u32(id);
            hasher.finish() >> 57
        };
        let distinct: std::collections::HashSet<u64> = (0..64).map(top).collect();
        assert!(distinct.len() > 32, "{} distinct", distinct.len());
    }
}
