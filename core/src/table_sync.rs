//! Table sync across worker VMs: one worker at a time fetches
//! `GET /v1/routes` and publishes the validated body through proxy-wasm
//! shared data; every worker adopts a new version once, on its next tick.
//!
//! Which worker fetches is settled by a lease in shared data: an expiry time
//! written with compare-and-swap. Whoever swaps in a new expiry fetches; the
//! lease lasts one sync interval, so there is about one fetch per interval
//! per Envoy, whatever the number of workers.

/// Shared-data keys of one RouteService (one Envoy may run several plugins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedKeys {
    /// The last good `GET /v1/routes` body, as received.
    pub table: String,
    /// Its version, 8 bytes little-endian: cheap to poll.
    pub version: String,
    /// The fetch lease: expiry in ms, 8 bytes little-endian.
    pub lease: String,
}

impl SharedKeys {
    pub fn new(route_service_cluster: &str) -> Self {
        let prefix = format!("sandbox-router/{route_service_cluster}");
        SharedKeys {
            table: format!("{prefix}/table"),
            version: format!("{prefix}/version"),
            lease: format!("{prefix}/lease"),
        }
    }
}

pub fn encode_u64(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

/// `None` unless exactly 8 bytes.
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let array: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(array))
}

/// Whether a lease read from shared data (absent, garbage or an expiry) is
/// free to take at `now_ms`.
pub fn lease_is_free(lease: Option<&[u8]>, now_ms: u64) -> bool {
    lease
        .and_then(decode_u64)
        .is_none_or(|expiry| expiry <= now_ms)
}

/// The tick period of the root context: often enough to adopt a table
/// another worker published well within one sync interval, rarely enough to
/// cost nothing.
pub fn tick_period_ms(sync_interval_ms: u64) -> u64 {
    (sync_interval_ms / 4).clamp(50, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn keys_are_per_route_service() {
        let keys = SharedKeys::new("outbound|8080||rs.ns.svc.cluster.local");
        assert_eq!(
            keys.table,
            "sandbox-router/outbound|8080||rs.ns.svc.cluster.local/table"
        );
        assert_ne!(keys.version, keys.lease);
    }

    #[test]
    fn u64_round_trip_and_garbage() {
        assert_eq!(decode_u64(&encode_u64(42)), Some(42));
        assert_eq!(decode_u64(b"short"), None);
        assert_eq!(decode_u64(b"nine bytes"), None);
    }

    #[test]
    fn lease() {
        assert!(lease_is_free(None, 0));
        assert!(lease_is_free(Some(b"junk"), 0));
        assert!(lease_is_free(Some(&encode_u64(100)), 100));
        assert!(!lease_is_free(Some(&encode_u64(101)), 100));
    }

    #[test]
    fn tick_period() {
        assert_eq!(tick_period_ms(5000), 1000);
        assert_eq!(tick_period_ms(1000), 250);
        assert_eq!(tick_period_ms(100), 50);
    }
}
