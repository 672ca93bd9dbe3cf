//! The pull flow on a real NATS JetStream (`nats-server -js` started for
//! the test): a durable pull consumer per consumer on the stream, the
//! routing key from the message headers, `ack` after processing and `term`
//! for another consumer's messages. The sandbox is created and deleted
//! while messages flow. Exactly once outside the measured windows; no
//! durable has anything pending at the end.

// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use sandbox_router_async_e2e::broker::nats::NatsServer;
use sandbox_router_async_e2e::scenario::{run_pull, PullMode, LIVE_PLAN};
use sandbox_router_async_e2e::timings::Timings;

#[test]
fn jetstream_durables_process_every_message_once_outside_the_sync_window() {
    let run = run_pull::<NatsServer>(
        "async-jetstream-live",
        LIVE_PLAN,
        Timings::RUN,
        PullMode::Live,
    )
    .unwrap();
    common::check_live(&run.report);
}
