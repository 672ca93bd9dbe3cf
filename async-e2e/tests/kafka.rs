//! The pull flow on a real Apache Kafka (one KRaft node started for the
//! test): a consumer group per consumer, the routing key from the record's
//! `baggage` header, offsets committed for processed and skipped records.
//! The sandbox is created and deleted while records flow. Exactly once
//! outside the measured windows; nothing left uncommitted in either group.

// A test crate: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use sandbox_router_async_e2e::broker::kafka::KafkaServer;
use sandbox_router_async_e2e::scenario::{run_pull, PullMode, LIVE_PLAN};
use sandbox_router_async_e2e::timings::Timings;

#[test]
fn kafka_groups_process_every_record_once_outside_the_sync_window() {
    let run = run_pull::<KafkaServer>("async-kafka-live", LIVE_PLAN, Timings::RUN, PullMode::Live)
        .unwrap();
    common::check_live(&run.report);
}
