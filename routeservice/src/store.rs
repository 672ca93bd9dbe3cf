//! Storage behind a trait: the server uses [`crate::redb_store::RedbStore`]
//! (durable, the default) or [`crate::kube_store::KubeStore`] (Sandbox
//! objects of the Kubernetes API); tests may use [`MemoryStore`].
//!
//! The contract every store keeps:
//! - [`Store::commit`] applies a whole [`Batch`] atomically and durably
//!   before it returns `Ok`; on `Err` nothing of the batch is visible, then
//!   or after a restart.
//! - [`Store::load`] returns the last committed state.
//!
//! Two kinds of store, told apart by [`Store::feed`]:
//! - an **owned** store (redb, memory) changes only through the service's
//!   commits: the service numbers versions (`+1` per commit) and publishes
//!   the snapshot it computed once the commit returns [`Committed::Applied`];
//! - a **fed** store (Kubernetes) also changes without the service (kubectl,
//!   GitOps, other replicas): it numbers the versions itself and pushes every
//!   state it reaches on its [`Feed`]; the service publishes only what comes
//!   from the feed, its own writes included ([`Committed::Fed`] says which
//!   state of the feed holds them), so every replica serves what the store
//!   holds and nothing else.
//!
//! Stores do not validate: the caller ([`crate::service::RouteService`])
//! decides what is committed and serialises all writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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

/// A storage failure. Unless said otherwise, its detail is logged, never
/// sent to a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("storage: corrupt record {key:?}: {problem}")]
    Corrupt { key: String, problem: String },
    #[error("storage: {0}")]
    Other(String),
    /// A fed store: the object to replace or delete is not there (deleted
    /// by someone else). Answered as `404`.
    #[error("no sandbox named {0:?}")]
    NotFound(String),
    /// A fed store: the object changed since the service last saw it (a
    /// precondition failed), or was created by someone else meanwhile.
    /// Nothing was written; answered as `409`, the client may retry.
    #[error("sandbox {0:?} was changed by someone else meanwhile: nothing was written, retry")]
    Concurrent(String),
    /// The store refused the content (a Kubernetes admission rule): the
    /// message names the field. Answered as `400`.
    #[error("{0}")]
    Rejected(String),
    /// The store cannot do this kind of batch (a fed store writes one object
    /// at a time: there are no multi-object transactions to make it atomic).
    #[error("storage: {0}")]
    Unsupported(&'static str),
    /// The store is not reachable now. Answered as `503`.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// An owned store holds the batch: the service publishes the snapshot
    /// it computed for it.
    Applied,
    /// A fed store holds the batch; the feed's state numbered `seq` (or a
    /// later one) is the first to include it. `created` says whether the
    /// upsert created its object (rather than replacing one).
    Fed { seq: u64, created: bool },
}

/// One state of a fed store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedState {
    /// Counts the states this process has seen (not shared by replicas).
    pub seq: u64,
    /// What is served: `version` is the store's, equal on every replica
    /// that holds the same objects.
    pub stored: Arc<Stored>,
}

/// The states of a fed store, newest last; a slow reader skips states.
pub type Feed = tokio::sync::watch::Receiver<Arc<FeedState>>;

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
    /// Applies `batch` atomically and durably, or not at all. A fed store
    /// ignores `batch.version` (it numbers versions itself).
    fn commit(&self, batch: &Batch) -> Result<Committed, StoreError>;
    /// A short name for logs (`redb /var/lib/routeservice/routes.redb`).
    fn describe(&self) -> String;
    /// `Some` for a fed store: the feed of its states, starting with the one
    /// [`Store::load`] returned. `None` (the default) for an owned store.
    fn feed(&self) -> Option<Feed> {
        None
    }
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

    fn commit(&self, batch: &Batch) -> Result<Committed, StoreError> {
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
        Ok(Committed::Applied)
    }

    fn describe(&self) -> String {
        "memory (not durable)".into()
    }
}
