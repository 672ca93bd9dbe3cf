//! The pull flow with sandbox changes landing while messages flow: a
//! baseline and a sandbox consumer, each in its own consumer group, decide
//! with the client library. Exactly once everywhere except inside the
//! measured windows; the report is printed (`--show-output`).

// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use sandbox_router_async_e2e::scenario::{run_pull, PullMode};
use sandbox_router_async_e2e::timings::Timings;
use sandbox_router_async_e2e::traffic::Plan;

const PLAN: Plan = Plan {
    per_phase: 1000,
    rate_per_s: 400,
    senders: 4,
};

#[test]
fn pull_consumers_process_every_message_once_outside_the_sync_window() {
    let run = run_pull("async-pull-live", PLAN, Timings::RUN, PullMode::Live).unwrap();
    let report = &run.report;
    println!("{report}");
    assert!(report.problems.is_empty(), "{report}");
    assert_eq!(report.all.messages, 3000);
    assert_eq!(report.windows.len(), 2);
    for window in &report.windows {
        assert_eq!(window.latencies.len(), 2, "{report}");
    }
    // Only the changing sandbox's key can differ, and only in a window.
    assert_eq!(report.outside.differing(), 0);
    let in_windows: u64 = report.windows.iter().map(|w| w.touching.differing()).sum();
    assert_eq!(in_windows, report.all.differing(), "{report}");
}
