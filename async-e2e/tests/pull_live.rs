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

mod common;

use sandbox_router_async_e2e::broker::redis::RedisServer;
use sandbox_router_async_e2e::scenario::{run_pull, PullMode, LIVE_PLAN};
use sandbox_router_async_e2e::timings::Timings;

#[test]
fn pull_consumers_process_every_message_once_outside_the_sync_window() {
    let run = run_pull::<RedisServer>("async-pull-live", LIVE_PLAN, Timings::RUN, PullMode::Live)
        .unwrap();
    common::check_live(&run.report);
}
