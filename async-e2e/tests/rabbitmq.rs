//! The pull flow on a real RabbitMQ (a node started for the test): a
//! durable queue per consumer bound to the workload's fanout exchange, the
//! routing key from the message's headers table, ack after processing and
//! ack-and-drop for another consumer's messages. The sandbox is created and
//! deleted while messages flow. Exactly once outside the measured windows;
//! no queue holds a message at the end.

// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use sandbox_router_async_e2e::broker::rabbitmq::RabbitServer;
use sandbox_router_async_e2e::scenario::{run_pull, PullMode, LIVE_PLAN};
use sandbox_router_async_e2e::timings::Timings;

#[test]
fn rabbitmq_queues_process_every_message_once_outside_the_sync_window() {
    let run = run_pull::<RabbitServer>(
        "async-rabbitmq-live",
        LIVE_PLAN,
        Timings::RUN,
        PullMode::Live,
    )
    .unwrap();
    common::check_live(&run.report);
}
