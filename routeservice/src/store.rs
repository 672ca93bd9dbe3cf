//! Storage behind a trait: the server uses [`crate::redb_store::RedbStore`]
//! (durable), tests may use [`MemoryStore`].
//!
//! The contract every store keeps:
//! - [`Store::commit`] applies a whole [`Batch`] (its sandboxes and the new
//!   version) atomically and durably before it returns `Ok`; on `Err` nothing
//!   of the batch is visible, then or after a restart.
//! - [`Store::load`] returns the last committed state.
//!
//! Stores do not validate: the caller ([`crate::service::RouteService`])
//! decides what is committed and serialises all writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::model::StoredSandbox;

/// Everything a store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub version: u64,
    pub sandboxes: BTreeMap<String, StoredSandbox>,
}

/// One atomic change: sandboxes written or removed, and the new version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub version: u64,
    pub upserts: Vec<(String, StoredSandbox)>,
    pub deletes: Vec<String>,
}

/// A storage failure. Its detail is logged, never sent to a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("storage: corrupt record {key:?}: {problem}")]
    Corrupt { key: String, problem: String },
    #[error("storage: {0}")]
    Other(String),
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// Where sandboxes are kept. Implementations block (a commit may fsync):
/// call them from a blocking thread.
pub trait Store: Send + Sync + 'static {
    /// The last committed state.
    fn load(&self) -> Result<Stored, StoreError>;
    /// Applies `batch` atomically and durably, or not at all.
    fn commit(&self, batch: &Batch) -> Result<(), StoreError>;
    /// A short name for logs (`redb /var/lib/routeservice/routes.redb`).
    fn describe(&self) -> String;
}

/// A store in memory, for tests. Not durable.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<Stored>,
    fail_next_commit: AtomicBool,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from `state`, as if it had been committed before.
    pub fn with_state(state: Stored) -> Self {
        MemoryStore {
            state: Mutex::new(state),
            fail_next_commit: AtomicBool::new(false),
        }
    }

    /// Makes the next commit fail (and change nothing), as a full disk would.
    pub fn fail_next_commit(&self) {
        self.fail_next_commit.store(true, Ordering::SeqCst);
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Stored, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if self.fail_next_commit.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Other("injected commit failure".into()));
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, sandbox) in &batch.upserts {
            state.sandboxes.insert(name.clone(), sandbox.clone());
        }
        for name in &batch.deletes {
            state.sandboxes.remove(name);
        }
        state.version = batch.version;
        Ok(())
    }

    fn describe(&self) -> String {
        "memory (not durable)".into()
    }
}
