//! A worker's budget of RouteService lookups: a token bucket, so a client
//! that sends a fresh routing key with every request cannot turn each of
//! its requests into a RouteService call. Keys the table or the key cache
//! know, and requests that wait for a lookup already in flight, cost
//! nothing; only a new call takes a token.
//!
//! The bucket holds up to `burst` tokens and gains `rate_per_second`
//! tokens a second. It starts full. Time is passed in (milliseconds, any
//! epoch); a clock that goes back adds nothing.

/// Tokens are counted in thousandths, so that a rate in tokens per second is
/// exactly that many thousandths per millisecond (no rounding, no floats).
const MILLI: u64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupBudget {
    rate_per_second: u64,
    /// Capacity, in thousandths of a token.
    capacity: u64,
    /// Tokens left, in thousandths.
    level: u64,
    /// When `level` was last brought up to date.
    updated_ms: Option<u64>,
}

impl LookupBudget {
    /// A full bucket of `burst` tokens refilled at `rate_per_second`.
    pub fn new(rate_per_second: u64, burst: u64) -> Self {
        let capacity = burst.saturating_mul(MILLI);
        LookupBudget {
            rate_per_second,
            capacity,
            level: capacity,
            updated_ms: None,
        }
    }

    /// Whether a lookup may be made now (a whole token is left).
    pub fn available(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        self.level >= MILLI
    }

    /// Takes a token for a lookup made now; `false` (and nothing taken)
    /// when the budget is spent.
    pub fn take(&mut self, now_ms: u64) -> bool {
        if !self.available(now_ms) {
            return false;
        }
        self.level -= MILLI;
        true
    }

    /// Whole tokens left now.
    pub fn tokens(&mut self, now_ms: u64) -> u64 {
        self.refill(now_ms);
        self.level / MILLI
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed_ms = match self.updated_ms {
            Some(then) if now_ms > then => now_ms - then,
            Some(_) => return,
            None => 0,
        };
        self.updated_ms = Some(now_ms);
        let gained = elapsed_ms.saturating_mul(self.rate_per_second);
        self.level = self.level.saturating_add(gained).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn starts_full_and_a_burst_spends_it() {
        let mut budget = LookupBudget::new(10, 3);
        assert!(budget.take(0));
        assert!(budget.take(0));
        assert!(budget.take(0));
        assert!(!budget.take(0), "burst spent");
        assert!(!budget.available(0));
        assert_eq!(budget.tokens(0), 0);
    }

    #[test]
    fn refills_at_the_rate_up_to_the_burst() {
        let mut budget = LookupBudget::new(10, 3);
        for _ in 0..3 {
            assert!(budget.take(1_000));
        }
        // 10/s: a token every 100 ms, partial tokens kept.
        assert!(!budget.take(1_099));
        assert!(budget.take(1_100));
        assert!(!budget.take(1_150));
        assert!(budget.take(1_200));
        // A long pause refills to the burst, not beyond.
        assert_eq!(budget.tokens(60_000), 3);
        for _ in 0..3 {
            assert!(budget.take(60_000));
        }
        assert!(!budget.take(60_000));
    }

    #[test]
    fn over_a_second_at_most_burst_plus_rate_lookups() {
        let mut budget = LookupBudget::new(100, 100);
        // A request every millisecond for one second: 1000 tries.
        let granted = (0..1_000).filter(|&ms| budget.take(ms)).count();
        // 100 at once, then one per 10 ms for the 999 ms that follow.
        assert_eq!(granted, 100 + 99);
    }

    #[test]
    fn a_clock_going_back_adds_nothing() {
        let mut budget = LookupBudget::new(1000, 1);
        assert!(budget.take(5_000));
        assert!(!budget.take(4_000));
        assert!(!budget.take(5_000));
        assert!(budget.take(5_001));
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let mut budget = LookupBudget::new(u64::MAX, u64::MAX);
        assert!(budget.take(0));
        assert!(budget.take(u64::MAX));
        assert!(budget.available(u64::MAX));
    }
}
