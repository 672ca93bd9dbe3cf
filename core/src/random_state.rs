//! The hasher of the filter's hash maps: SipHash-1-3 under random keys, as
//! std's `RandomState` gives it (so a client that picks routing keys cannot
//! pick collisions), with the keys drawn differently.
//!
//! Why not std's `RandomState`: on `wasm32-wasip1` std draws its keys from
//! WASI's `random_get` with an `expect` whose message formats the WASI
//! error with `{:?}`, which brings `str`'s `Debug` into the `.wasm`
//! (`char::escape_debug`, the Unicode printable tables,
//! `str::slice_error_fail`): ~12 KB of a ~265 KB filter, for a message it
//! never prints. Here the keys come from the same `random_get` through
//! `getrandom`, whose error is a number. Elsewhere (the core's native and
//! `wasm32-unknown-unknown` tests, the RouteService) they come from std's
//! `RandomState`, which has no such cost there.
//!
//! As in std, the keys are drawn once per thread and each new state gets
//! them with the first one incremented, so no two maps hash alike.

use std::cell::Cell;
use std::hash::BuildHasher;

use siphasher::sip::SipHasher13;

/// `std::collections::HashMap` with [`RandomState`].
pub type HashMap<K, V> = std::collections::HashMap<K, V, RandomState>;

/// Builds SipHash-1-3 hashers under this state's random keys.
#[derive(Clone)]
pub struct RandomState {
    k0: u64,
    k1: u64,
}

impl RandomState {
    pub fn new() -> Self {
        thread_local! {
            static KEYS: Cell<(u64, u64)> = Cell::new(random_keys());
        }
        KEYS.with(|keys| {
            let (k0, k1) = keys.get();
            keys.set((k0.wrapping_add(1), k1));
            RandomState { k0, k1 }
        })
    }
}

impl Default for RandomState {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for RandomState {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// Never shows the keys.
impl std::fmt::Debug for RandomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RandomState { .. }")
    }
}

/// Two random keys from WASI. A host that has no random bytes to give
/// (std would abort the VM there) gets fixed keys: maps still work, only
/// without protection from chosen collisions.
#[cfg(target_os = "wasi")]
fn random_keys() -> (u64, u64) {
    let key = |fixed| getrandom::u64().unwrap_or(fixed);
    (key(0x243f_6a88_85a3_08d3), key(0x1319_8a2e_0370_7344))
}

/// Two random keys from std (which has them cheaply off `wasm32-wasip1`).
#[cfg(not(target_os = "wasi"))]
fn random_keys() -> (u64, u64) {
    let std_keys = std::hash::RandomState::new();
    (std_keys.hash_one(0_u8), std_keys.hash_one(1_u8))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn states_hash_alike_only_with_themselves() {
        let (a, b) = (RandomState::new(), RandomState::new());
        assert_eq!(a.hash_one("pr-42"), a.clone().hash_one("pr-42"));
        assert_ne!(a.hash_one("pr-42"), b.hash_one("pr-42"));
        assert_eq!((a.k0.wrapping_add(1), a.k1), (b.k0, b.k1));
        assert_eq!(format!("{a:?}"), "RandomState { .. }");
    }

    #[test]
    fn maps_work_as_std_maps() {
        let mut map: HashMap<String, u32> = HashMap::default();
        for n in 0..1000 {
            map.insert(format!("key-{n}"), n);
        }
        assert_eq!(map.len(), 1000);
        assert_eq!(map.get("key-417"), Some(&417));
        assert_eq!(map.remove("key-0"), Some(0));
        assert_eq!(map.get("key-0"), None);
    }
}
