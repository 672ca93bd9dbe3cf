//! What a client did, counted: for a consumer's own metrics and for tests.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Decisions made.
    pub decisions: u64,
    /// Table syncs that brought a new table (`200`).
    pub tables_adopted: u64,
    /// Of `tables_adopted`: deltas (`?since=V`) applied.
    pub deltas: u64,
    /// Of `tables_adopted`: full tables taken (the first sync, after a
    /// `410`, after a delta that could not be applied).
    pub full_tables: u64,
    /// `410 Gone` answers to `?since=V` (a full table was asked next).
    pub gone: u64,
    /// Table syncs answered `304 Not Modified`.
    pub not_modified: u64,
    /// Table syncs that failed (the last good table stayed).
    pub sync_errors: u64,
    /// Single-key calls made on a miss.
    pub lookups: u64,
    /// Single-key calls that failed.
    pub lookup_errors: u64,
    /// Decisions made without an answer for a key the table did not know
    /// (call failed or breaker open): baseline's.
    pub fail_open: u64,
    /// Messages processed only because their key is in its hand-over grace
    /// (`Reason::Handover`): the ones that may be processed twice.
    pub handover: u64,
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub decisions: AtomicU64,
    pub tables_adopted: AtomicU64,
    pub deltas: AtomicU64,
    pub full_tables: AtomicU64,
    pub gone: AtomicU64,
    pub not_modified: AtomicU64,
    pub sync_errors: AtomicU64,
    pub lookups: AtomicU64,
    pub lookup_errors: AtomicU64,
    pub fail_open: AtomicU64,
    pub handover: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Stats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            decisions: read(&self.decisions),
            tables_adopted: read(&self.tables_adopted),
            deltas: read(&self.deltas),
            full_tables: read(&self.full_tables),
            gone: read(&self.gone),
            not_modified: read(&self.not_modified),
            sync_errors: read(&self.sync_errors),
            lookups: read(&self.lookups),
            lookup_errors: read(&self.lookup_errors),
            fail_open: read(&self.fail_open),
            handover: read(&self.handover),
        }
    }
}
