//! The pull flow with a coordinated handoff: before each sandbox change the
//! consumers finish what was produced, and production resumes only once
//! both clients hold the new table version (`wait_for_version`). Then no
//! message is decided from two tables: every message is processed exactly
//! once, by the owner the producer expected.

// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use sandbox_router_async_e2e::broker::redis::RedisServer;
use sandbox_router_async_e2e::scenario::{run_pull, PullMode};
use sandbox_router_async_e2e::timings::Timings;
use sandbox_router_async_e2e::traffic::Plan;

const PLAN: Plan = Plan {
    per_phase: 1000,
    rate_per_s: 400,
    senders: 4,
};

#[test]
fn waiting_for_the_consumers_version_makes_every_message_exact() {
    let run = run_pull::<RedisServer>(
        "async-pull-handoff",
        PLAN,
        Timings::RUN,
        PullMode::WaitForConsumers,
    )
    .unwrap();
    let report = &run.report;
    println!("{report}");
    assert!(report.problems.is_empty(), "{report}");
    assert_eq!(report.all.messages, 3000);
    assert_eq!(report.all.exact, 3000, "{report}");
    // The fork processed exactly the sandbox's messages of the phase in
    // which the sandbox existed.
    assert_eq!(
        report.processed_by[1].1, report.phases[1].sandbox_key,
        "{report}"
    );
}
