//! One clock for every part of a run (they share the test process):
//! microseconds since the first reading, so a message's send, decision and
//! delivery times and a sandbox change's time compare directly.

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since the epoch of this process's runs.
pub fn now_us() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// `us` in milliseconds, for reports.
pub fn ms(us: u64) -> f64 {
    // Run times are far below 2^52 microseconds: the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let ms = us as f64 / 1000.0;
    ms
}
