//! Circuit breaker for RouteService calls: after repeated failures, stop
//! asking for a while, so an outage adds no latency to requests (they go to
//! baseline at once, counted as fail-open).
//!
//! Closed → (`FAILURE_THRESHOLD` failures in a row) → Open for a backoff →
//! HalfOpen: one probe call is let through; its success closes the breaker,
//! its failure opens it again with the backoff doubled (up to
//! `MAX_BACKOFF_MS`). Any success seen meanwhile (e.g. a table sync) closes it.

pub const FAILURE_THRESHOLD: u32 = 5;
pub const INITIAL_BACKOFF_MS: u64 = 1000;
pub const MAX_BACKOFF_MS: u64 = 30_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { probe_in_flight: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    backoff_ms: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            backoff_ms: INITIAL_BACKOFF_MS,
        }
    }
}

impl Breaker {
    /// Whether a call may be made now. In HalfOpen, `true` once (the probe).
    pub fn allow(&mut self, now_ms: u64) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until_ms } if now_ms >= until_ms => {
                self.state = BreakerState::HalfOpen {
                    probe_in_flight: true,
                };
                true
            }
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { probe_in_flight } => {
                self.state = BreakerState::HalfOpen {
                    probe_in_flight: true,
                };
                !probe_in_flight
            }
        }
    }

    /// The half-open probe will never answer (its request ended and the
    /// host cancelled the call): the next call may probe instead. Without
    /// this the breaker would stay half-open with a probe "in flight"
    /// forever, and refuse every call.
    pub fn probe_abandoned(&mut self) {
        if let BreakerState::HalfOpen {
            probe_in_flight: true,
        } = self.state
        {
            self.state = BreakerState::HalfOpen {
                probe_in_flight: false,
            };
        }
    }

    pub fn record_success(&mut self) {
        *self = Breaker::default();
    }

    pub fn record_failure(&mut self, now_ms: u64) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state {
            BreakerState::HalfOpen { .. } => {
                self.backoff_ms = self.backoff_ms.saturating_mul(2).min(MAX_BACKOFF_MS);
                self.open(now_ms);
            }
            BreakerState::Closed if self.consecutive_failures >= FAILURE_THRESHOLD => {
                self.open(now_ms);
            }
            BreakerState::Closed | BreakerState::Open { .. } => {}
        }
    }

    fn open(&mut self, now_ms: u64) {
        self.state = BreakerState::Open {
            until_ms: now_ms.saturating_add(self.backoff_ms),
        };
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// 0 closed, 1 open, 2 half-open: the value of the breaker-state gauge.
    pub fn gauge(&self) -> u64 {
        match self.state {
            BreakerState::Closed => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::HalfOpen { .. } => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn fail_times(b: &mut Breaker, n: u32, now: u64) {
        for _ in 0..n {
            b.record_failure(now);
        }
    }

    #[test]
    fn opens_after_threshold_and_probes_after_backoff() {
        let mut b = Breaker::default();
        fail_times(&mut b, FAILURE_THRESHOLD - 1, 0);
        assert!(b.allow(0));
        b.record_failure(10);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until_ms: 10 + INITIAL_BACKOFF_MS
            }
        );
        assert!(!b.allow(500));
        assert!(b.allow(10 + INITIAL_BACKOFF_MS), "probe");
        assert!(!b.allow(10 + INITIAL_BACKOFF_MS), "one probe at a time");
        assert_eq!(b.gauge(), 2);
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow(0));
    }

    #[test]
    fn failed_probe_doubles_the_backoff_up_to_the_cap() {
        let mut b = Breaker::default();
        fail_times(&mut b, FAILURE_THRESHOLD, 0);
        let mut now = 0;
        let mut expected = INITIAL_BACKOFF_MS;
        for _ in 0..10 {
            let BreakerState::Open { until_ms } = b.state() else {
                panic!("not open")
            };
            assert_eq!(until_ms - now, expected);
            now = until_ms;
            assert!(b.allow(now));
            b.record_failure(now);
            expected = (expected * 2).min(MAX_BACKOFF_MS);
        }
        assert_eq!(expected, MAX_BACKOFF_MS);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let mut b = Breaker::default();
        fail_times(&mut b, FAILURE_THRESHOLD, 0);
        assert!(b.allow(INITIAL_BACKOFF_MS), "probe");
        assert!(!b.allow(INITIAL_BACKOFF_MS));
        b.probe_abandoned();
        assert!(b.allow(INITIAL_BACKOFF_MS), "a new probe");
        assert!(!b.allow(INITIAL_BACKOFF_MS));
        // Only a probe in flight is released.
        let mut closed = Breaker::default();
        closed.probe_abandoned();
        assert_eq!(closed.state(), BreakerState::Closed);
    }

    #[test]
    fn a_success_elsewhere_closes_it() {
        let mut b = Breaker::default();
        fail_times(&mut b, FAILURE_THRESHOLD, 0);
        assert!(!b.allow(1));
        b.record_success();
        assert!(b.allow(1));
        assert_eq!(b.gauge(), 0);
    }
}
