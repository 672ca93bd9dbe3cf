//! The push flow: a relay delivers each stream entry as an HTTP POST with
//! its `baggage` through Envoy running the filter; the fork upstream gets
//! the sandbox's messages by routing alone. Exactly-once delivery over both
//! upstreams; the right upstream everywhere except inside the filter's
//! measured sync window.

// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use sandbox_router_async_e2e::scenario::run_push;
use sandbox_router_async_e2e::timings::Timings;
use sandbox_router_async_e2e::traffic::Plan;

const PLAN: Plan = Plan {
    per_phase: 1000,
    rate_per_s: 400,
    senders: 4,
};

#[test]
fn the_relay_delivers_every_message_once_to_the_upstream_routing_picks() {
    let run = run_push("async-push", PLAN, Timings::RUN).unwrap();
    let report = &run.report;
    println!("{report}");
    assert!(report.problems.is_empty(), "{report}");
    assert_eq!(report.all.messages, 3000);
    assert_eq!(report.all.twice + report.all.never, 0);
    assert_eq!(report.outside.differing(), 0);
    // The fork got messages by routing alone, and most sandbox-key
    // messages lived outside every window (so "exact outside" says a lot).
    assert!(report.processed_by[1].1 > 0, "{report}");
    assert!(report.outside.sandbox_key >= 300, "{report}");
}
