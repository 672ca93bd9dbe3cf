//! What a run records, all timed on [`crate::clock`]: each message as sent,
//! each consumer's decision about it, each push delivery, each sandbox
//! change. The analysis works on these alone.

use sandbox_router_consumer::Source;

use crate::message::{Owner, Tags};

/// A message as the traffic driver sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub tags: Tags,
    /// When the request to the producer started and when its `201` came
    /// back: the stream entry was added in between.
    pub start_us: u64,
    pub end_us: u64,
}

/// A pull consumer's decision about one stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub seq: u64,
    /// The consumer that decided.
    pub consumer: Owner,
    pub process: bool,
    /// `Reason::code()`: `no-key`, `forked-by:pr-42`, ...
    pub reason: String,
    pub source: Source,
    pub table_version: Option<u64>,
    pub at_us: u64,
}

/// A message the relay delivered, as the receiving upstream saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub seq: u64,
    /// The upstream that received it.
    pub to: Owner,
    /// The `x-sandbox-route` header it arrived with, if any.
    pub route_header: Option<String>,
    pub at_us: u64,
}

/// What a sandbox change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Delete,
}

/// One sandbox change, made while no message was being produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub action: Action,
    /// The table version it made.
    pub version: u64,
    /// The API call's start and answer: the commit is in between.
    pub started_us: u64,
    pub done_us: u64,
    /// When production resumed (later than `done_us` when the run waits
    /// for the consumers to hold `version` first).
    pub resumed_us: u64,
    /// The phase that starts with it.
    pub phase_after: usize,
}
