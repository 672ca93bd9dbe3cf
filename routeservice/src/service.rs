//! The RouteService proper: validated writes to the store, and the
//! in-memory snapshot every read is answered from.
//!
//! Invariants:
//! - All writes go through one lock: validate against the current snapshot,
//!   commit to the store, then publish the new snapshot. A write that is
//!   refused or fails to commit publishes nothing, so the snapshot always
//!   equals the store's last commit.
//! - No two sandboxes fork the same (routing key, baseline) pair: the filter
//!   must never have to choose between two sandboxes for one request.
//! - With an owned store (redb), `version` bumps by exactly one on every
//!   commit that changes something; a write that changes nothing (same
//!   content again) commits nothing. With a fed store (Kubernetes) the store
//!   numbers versions, every snapshot is one the feed sent, and a write
//!   returns once the feed has brought it back (read your writes).
//! - A snapshot carries the full-table JSON of `GET /v1/routes`, serialised
//!   once per version.
//! - A snapshot carries the [`ChangeLog`] of the versions before it: which
//!   (routing key, baseline) pairs each of the last commits touched. That is
//!   what `GET /v1/routes?since=V` answers from: every pair touched after
//!   `V`, as it is now (an upsert) or gone (a delete), so applying the delta
//!   to the table at `V` gives exactly the table now. The log is bounded
//!   ([`HISTORY_VERSIONS`], [`HISTORY_MIN_ROUTES`]) and starts empty in
//!   every process: a version it does not hold is answered `410 Gone`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde::{Deserialize, Serialize};

use sandbox_router_core::consumption::{self, Consumer, MessageKey, Verdict};
use sandbox_router_core::route_table::{Route, SandboxTarget};

use crate::error::FieldError;
use crate::model::{validate_name, Sandbox, SandboxList, SandboxSpec, StoredSandbox};
use crate::store::{Batch, Committed, FeedState, Store, StoreError, Stored};

/// One consistent view of the table, shared by every reader.
///
/// Built from the previous snapshot on every commit: the maps are cloned
/// (their values are shared `Arc`s) and only the changed sandboxes' routes
/// are serialised; the full-table JSON is then a concatenation of
/// pre-serialised route fragments.
#[derive(Debug)]
pub struct Snapshot {
    version: u64,
    sandboxes: BTreeMap<String, Arc<StoredSandbox>>,
    /// (routing key, baseline) -> the one route that forks it: the sort
    /// order of `GET /v1/routes` and the index of the conflict rule.
    routes: BTreeMap<(String, String), Arc<RouteEntry>>,
    /// `{"version":..,"routes":[..]}` of all routes.
    routes_json: Bytes,
    /// The versions before this one and what each change touched.
    log: ChangeLog,
    /// Delta bodies already made from this snapshot, by `since` (most
    /// sidecars ask for the same one after a change).
    deltas: Mutex<VecDeque<(u64, Bytes)>>,
}

/// At most this many versions are kept in the history of deltas. With the
/// filter's default 5 s sync, a sidecar that missed fewer than this many
/// changes gets a delta; one that missed more takes the full table.
pub const HISTORY_VERSIONS: usize = 4096;

/// The history keeps at most max(this, routes in the table) touched routes
/// (summed over its versions). Past the table's size a delta is about as
/// large as the full table, so forgetting older versions costs a lagging
/// client nothing, and the history never holds more than about one table's
/// worth of keys.
pub const HISTORY_MIN_ROUTES: usize = 4096;

/// How many delta bodies one snapshot keeps ready.
const DELTA_CACHE: usize = 8;

/// A (routing key, baseline) pair: what a route is known by.
type Pair = (String, String);

/// The history of the table: `versions[0]` is the oldest version a delta can
/// start from; `changes[i]` is what took `versions[i]` to `versions[i + 1]`;
/// the last of `versions` is the snapshot's own.
///
/// Versions are looked up by equality, never compared with `<`: a fed
/// (Kubernetes) store's versions are content hashes, not ordered. The same
/// version may appear twice (the table went back to an earlier content);
/// its last place is used (the shortest delta, and the same content).
#[derive(Debug, Clone, Default)]
struct ChangeLog {
    versions: VecDeque<u64>,
    changes: VecDeque<Arc<[Pair]>>,
    /// Pairs summed over `changes`.
    pairs: usize,
}

impl ChangeLog {
    fn starting_at(version: u64) -> Self {
        ChangeLog {
            versions: VecDeque::from([version]),
            ..ChangeLog::default()
        }
    }

    /// This log with one more change, from the last version to `version`,
    /// trimmed to the bound for a table of `routes` routes.
    fn then(&self, version: u64, touched: Vec<Pair>, routes: usize) -> Self {
        let mut next = self.clone();
        next.pairs += touched.len();
        next.changes.push_back(touched.into());
        next.versions.push_back(version);
        let max_pairs = HISTORY_MIN_ROUTES.max(routes);
        while next.changes.len() > HISTORY_VERSIONS
            || (next.pairs > max_pairs && !next.changes.is_empty())
        {
            if let Some(dropped) = next.changes.pop_front() {
                next.pairs -= dropped.len();
            }
            next.versions.pop_front();
        }
        next
    }

    /// The pairs touched after `since`, or `None` if `since` is not held.
    fn touched_since(&self, since: u64) -> Option<BTreeSet<&Pair>> {
        let at = self.versions.iter().rposition(|v| *v == since)?;
        Some(
            self.changes
                .iter()
                .skip(at)
                .flat_map(|c| c.iter())
                .collect(),
        )
    }

    /// The oldest version a delta can start from.
    fn oldest(&self) -> Option<u64> {
        self.versions.front().copied()
    }
}

/// The answer to `GET /v1/routes?since=V`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaAnswer {
    /// `V` is the current version: nothing changed (`304`).
    NotModified,
    /// `V` is not in the history (too old, unknown, another process or
    /// another store): take the full table (`410`).
    Gone,
    /// `{"version":W,"since":V,"upserts":[..],"deletes":[..]}`.
    Changes(Bytes),
}

/// A route and its JSON.
#[derive(Debug)]
struct RouteEntry {
    route: Route,
    json: Vec<u8>,
}

impl RouteEntry {
    fn new(route: Route) -> Self {
        // Serialising a struct of strings cannot fail; `null` would make a
        // client refuse the table rather than misread it.
        let json = serde_json::to_vec(&route).unwrap_or_else(|_| b"null".to_vec());
        RouteEntry { route, json }
    }
}

impl Snapshot {
    fn with_routes(
        version: u64,
        sandboxes: BTreeMap<String, Arc<StoredSandbox>>,
        routes: BTreeMap<(String, String), Arc<RouteEntry>>,
        log: ChangeLog,
    ) -> Self {
        let routes_json = Bytes::from(list_json(version, routes.values()));
        Snapshot {
            version,
            sandboxes,
            routes,
            routes_json,
            log,
            deltas: Mutex::new(VecDeque::new()),
        }
    }

    /// This snapshot with `upserts` written and `deletes` removed, at `version`.
    fn apply(
        &self,
        version: u64,
        upserts: Vec<(String, StoredSandbox)>,
        deletes: &[String],
    ) -> Self {
        let mut sandboxes = self.sandboxes.clone();
        let mut routes = self.routes.clone();
        let mut touched = BTreeSet::new();
        let gone = deletes.iter().chain(upserts.iter().map(|(name, _)| name));
        for name in gone {
            if let Some(old) = sandboxes.remove(name) {
                for route in &old.spec.routes {
                    let pair = (old.spec.routing_key.clone(), route.baseline.clone());
                    routes.remove(&pair);
                    touched.insert(pair);
                }
            }
        }
        for (name, sandbox) in upserts {
            for route in &sandbox.spec.routes {
                let pair = (sandbox.spec.routing_key.clone(), route.baseline.clone());
                touched.insert(pair.clone());
                routes.insert(
                    pair,
                    Arc::new(RouteEntry::new(sandbox.spec.route(&name, route))),
                );
            }
            sandboxes.insert(name, Arc::new(sandbox));
        }
        let log = self
            .log
            .then(version, touched.into_iter().collect(), routes.len());
        Snapshot::with_routes(version, sandboxes, routes, log)
    }

    /// The snapshot of a store just loaded: its history starts here.
    fn from_stored(stored: Stored) -> Self {
        let Stored { version, sandboxes } = stored;
        let empty =
            Snapshot::with_routes(0, BTreeMap::new(), BTreeMap::new(), ChangeLog::default());
        let loaded = empty.apply(version, sandboxes.into_iter().collect(), &[]);
        Snapshot {
            log: ChangeLog::starting_at(version),
            ..loaded
        }
    }

    /// `GET /v1/routes?since=V`: what changed after `since`. Made once per
    /// (snapshot, `since`) for the last few `since` asked.
    pub fn delta(&self, since: u64) -> DeltaAnswer {
        if since == self.version {
            return DeltaAnswer::NotModified;
        }
        let mut cache = self.deltas.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, body)) = cache.iter().find(|(v, _)| *v == since) {
            return DeltaAnswer::Changes(body.clone());
        }
        let Some(touched) = self.log.touched_since(since) else {
            return DeltaAnswer::Gone;
        };
        let body = Bytes::from(self.delta_json(since, &touched));
        if cache.len() >= DELTA_CACHE {
            cache.pop_front();
        }
        cache.push_back((since, body.clone()));
        DeltaAnswer::Changes(body)
    }

    fn delta_json(&self, since: u64, touched: &BTreeSet<&Pair>) -> Vec<u8> {
        let mut out = format!(
            "{{\"version\":{},\"since\":{since},\"upserts\":[",
            self.version
        )
        .into_bytes();
        let mut deletes = Vec::new();
        let mut first = true;
        for pair in touched {
            match self.routes.get(*pair) {
                Some(entry) => {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(&entry.json);
                }
                None => deletes.push(*pair),
            }
        }
        out.extend_from_slice(b"],\"deletes\":[");
        for (i, (routing_key, baseline)) in deletes.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let json = serde_json::to_vec(&RouteRef {
                routing_key,
                baseline,
            })
            .unwrap_or_else(|_| b"null".to_vec());
            out.extend_from_slice(&json);
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// The oldest version `GET /v1/routes?since=` answers a delta for, and
    /// how many versions the history holds.
    pub fn history(&self) -> (Option<u64>, usize) {
        (self.log.oldest(), self.log.changes.len())
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The pre-serialised body of `GET /v1/routes`.
    pub fn routes_json(&self) -> Bytes {
        self.routes_json.clone()
    }

    /// All routes, sorted by routing key, then baseline.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values().map(|entry| &entry.route)
    }

    fn key_range<'a>(
        &'a self,
        routing_key: &'a str,
    ) -> impl Iterator<Item = &'a Arc<RouteEntry>> + 'a {
        self.routes
            .range((routing_key.to_owned(), String::new())..)
            .take_while(move |((key, _), _)| key == routing_key)
            .map(|(_, entry)| entry)
    }

    /// The routes of one routing key, sorted by baseline.
    pub fn routes_for_key<'a>(
        &'a self,
        routing_key: &'a str,
    ) -> impl Iterator<Item = &'a Route> + 'a {
        self.key_range(routing_key).map(|entry| &entry.route)
    }

    /// The body of `GET /v1/routes?routingKey=K`.
    pub fn routes_json_for_key(&self, routing_key: &str) -> Bytes {
        Bytes::from(list_json(self.version, self.key_range(routing_key)))
    }

    pub fn sandbox(&self, name: &str) -> Option<Sandbox> {
        self.sandboxes.get(name).map(|s| Sandbox::new(name, s))
    }

    /// All sandboxes, sorted by name.
    pub fn sandbox_list(&self) -> SandboxList {
        SandboxList {
            version: self.version,
            sandboxes: self
                .sandboxes
                .iter()
                .map(|(name, s)| Sandbox::new(name, s))
                .collect(),
        }
    }

    pub fn sandbox_count(&self) -> usize {
        self.sandboxes.len()
    }

    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Which sandbox forks `baseline` for `routing_key`.
    pub fn owner(&self, routing_key: &str, baseline: &str) -> Option<&str> {
        self.routes
            .get(&(routing_key.to_owned(), baseline.to_owned()))
            .map(|entry| entry.route.sandbox.as_str())
    }

    /// The sandbox that forks `baseline` for `routing_key`, and its fork.
    pub fn fork(&self, routing_key: &str, baseline: &str) -> Option<SandboxTarget> {
        self.routes
            .get(&(routing_key.to_owned(), baseline.to_owned()))
            .map(|entry| SandboxTarget {
                sandbox: entry.route.sandbox.clone(),
                target: entry.route.target.clone(),
            })
    }

    /// The selective-consumption rule (the core's [`consumption::decide`])
    /// for a message whose routing key, as extracted by the consumer, is
    /// `routing_key`. An empty key is no key, as in every carrier.
    pub fn decide(&self, consumer: &Consumer, routing_key: Option<&str>) -> Verdict {
        let key = MessageKey::classify(routing_key.filter(|k| !k.is_empty()));
        let fork = match key {
            MessageKey::Valid(key) => self.fork(key, &consumer.workload),
            MessageKey::Missing | MessageKey::Invalid => None,
        };
        consumption::decide(consumer, key, fork.as_ref())
    }
}

/// One entry of a delta's `deletes`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RouteRef<'a> {
    routing_key: &'a str,
    baseline: &'a str,
}

/// `{"version":N,"routes":[fragment,fragment,...]}`.
fn list_json<'a>(version: u64, routes: impl Iterator<Item = &'a Arc<RouteEntry>>) -> Vec<u8> {
    let mut out = format!("{{\"version\":{version},\"routes\":[").into_bytes();
    for (i, entry) in routes.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&entry.json);
    }
    out.extend_from_slice(b"]}");
    out
}

/// What a `PUT` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Created(Sandbox),
    Replaced(Sandbox),
    /// The same content was already stored: nothing was committed.
    Unchanged(Sandbox),
}

/// What a seed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedOutcome {
    /// Sandboxes created or changed (0: the seed was already applied).
    pub changed: usize,
    pub version: u64,
}

/// Why a write was refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Invalid(FieldError),
    /// Another sandbox already forks a (routing key, baseline) pair.
    #[error("{0}")]
    Conflict(FieldError),
    #[error("no sandbox named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for WriteError {
    /// What a fed store's refusals mean to a client; anything else is a
    /// storage failure.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(name) => WriteError::NotFound(name),
            StoreError::Concurrent(_) => {
                WriteError::Conflict(FieldError::new("name", e.to_string()))
            }
            StoreError::Rejected(message) => {
                WriteError::Invalid(FieldError::new("sandbox", message))
            }
            other => WriteError::Store(other),
        }
    }
}

/// The sandboxes of a seed file: `{"sandboxes": {"<name>": SandboxSpec}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    pub sandboxes: BTreeMap<String, SandboxSpec>,
}

impl Seed {
    /// Parses and checks a seed file's content; errors name the JSON path
    /// (`sandboxes.pr-42.routes[0].baseline`). Conflicts with sandboxes
    /// already stored are found when it is applied.
    pub fn parse(json: &[u8]) -> Result<Self, FieldError> {
        let seed: Seed = crate::api::parse_json(json)?;
        seed.validate()?;
        Ok(seed)
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        for (name, spec) in &self.sandboxes {
            let prefix = format!("sandboxes.{name}");
            validate_name(name).map_err(|e| FieldError::new(prefix.clone(), e.problem))?;
            spec.validate(name).map_err(|e| e.under(&prefix))?;
        }
        Ok(())
    }
}

/// Durations of store commits, for `/metrics`.
pub trait CommitObserver: Send + Sync {
    fn commit(&self, took: Duration, ok: bool);
}

/// How long a write to a fed store waits for the service to publish the
/// feed's state that holds it (the store waits for its watch before that).
const FED_PUBLISH_WAIT: Duration = Duration::from_secs(10);

/// The service: a store, the snapshot of its last commit, one writer at a time.
pub struct RouteService {
    store: Arc<dyn Store>,
    snapshot: RwLock<Arc<Snapshot>>,
    writer: Mutex<()>,
    observer: Option<Arc<dyn CommitObserver>>,
    /// A fed store: the `seq` of the feed state last published.
    fed: Option<(Mutex<u64>, Condvar)>,
}

impl std::fmt::Debug for RouteService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteService")
            .field("store", &self.store.describe())
            .field("version", &self.snapshot().version)
            .finish_non_exhaustive()
    }
}

impl RouteService {
    /// Loads the store's last commit. Blocks.
    pub fn open(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let stored = store.load()?;
        let fed = store
            .feed()
            .map(|feed| (Mutex::new(feed.borrow().seq), Condvar::new()));
        Ok(RouteService {
            store,
            snapshot: RwLock::new(Arc::new(Snapshot::from_stored(stored))),
            writer: Mutex::new(()),
            observer: None,
            fed,
        })
    }

    /// Publishes every state of a fed store's feed until it closes; returns
    /// at once for an owned store. Run it as a task beside the server.
    pub async fn follow_feed(self: Arc<Self>) {
        let Some(mut feed) = self.store.feed() else {
            return;
        };
        loop {
            let state = Arc::clone(&feed.borrow_and_update());
            self.publish_fed(&state);
            if feed.changed().await.is_err() {
                tracing::error!("the store's feed closed: the table is no longer updated");
                return;
            }
        }
    }

    /// Publishes one state of a fed store: the snapshot is rebuilt from the
    /// current one, only changed sandboxes re-serialised.
    pub fn publish_fed(&self, state: &FeedState) {
        let Some((seen, published)) = &self.fed else {
            return;
        };
        let current = self.snapshot();
        let next = &state.stored;
        let upserts: Vec<(String, StoredSandbox)> = next
            .sandboxes
            .iter()
            .filter(|(name, s)| current.sandboxes.get(*name).is_none_or(|old| **old != **s))
            .map(|(name, s)| (name.clone(), s.clone()))
            .collect();
        let deletes: Vec<String> = current
            .sandboxes
            .keys()
            .filter(|name| !next.sandboxes.contains_key(*name))
            .cloned()
            .collect();
        if !(upserts.is_empty() && deletes.is_empty() && current.version == next.version) {
            let snapshot = Arc::new(current.apply(next.version, upserts, &deletes));
            *self
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner) = snapshot;
        }
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        *seen = (*seen).max(state.seq);
        published.notify_all();
    }

    /// Waits until the feed state `seq` is published (or gives up after
    /// [`FED_PUBLISH_WAIT`]: the write is done all the same).
    fn wait_published(&self, seq: u64) {
        let Some((seen, published)) = &self.fed else {
            return;
        };
        let guard = seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (_guard, timeout) = published
            .wait_timeout_while(guard, FED_PUBLISH_WAIT, |seen| *seen < seq)
            .unwrap_or_else(PoisonError::into_inner);
        if timeout.timed_out() {
            tracing::warn!(seq, "a write's feed state was not published in time");
        }
    }

    /// Whether the store is fed (it numbers versions, others write to it).
    pub fn is_fed(&self) -> bool {
        self.fed.is_some()
    }

    /// Reports every commit's duration to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn CommitObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The current snapshot (cheap: one `Arc` clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn describe_store(&self) -> String {
        self.store.describe()
    }

    /// Creates or replaces sandbox `name`. Blocks (commits durably).
    pub fn put(&self, name: &str, spec: SandboxSpec) -> Result<PutOutcome, WriteError> {
        validate_name(name).map_err(WriteError::Invalid)?;
        spec.validate(name).map_err(WriteError::Invalid)?;
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshot();
        let existing = current.sandboxes.get(name);
        if let Some(existing) = existing.filter(|e| e.spec == spec) {
            return Ok(PutOutcome::Unchanged(Sandbox::new(name, existing)));
        }
        find_conflict(&current, &[(name, &spec)]).map_err(|c| WriteError::Conflict(c.1))?;
        let mut created = existing.is_none();
        let version = self.next_version(&current)?;
        let stored = StoredSandbox { spec, version };
        let committed = self.commit(
            &current,
            Batch {
                version,
                upserts: vec![(name.to_owned(), stored.clone())],
                deletes: vec![],
            },
        )?;
        let sandbox = match committed {
            Committed::Applied => Sandbox::new(name, &stored),
            Committed::Fed { created: made, .. } => {
                created = made;
                // As served now; not served (another replica's sandbox won a
                // race for a pair: its status says Conflict), as written.
                self.snapshot()
                    .sandbox(name)
                    .unwrap_or_else(|| Sandbox::new(name, &stored))
            }
        };
        Ok(if created {
            PutOutcome::Created(sandbox)
        } else {
            PutOutcome::Replaced(sandbox)
        })
    }

    /// Removes sandbox `name`; returns the new version. Blocks.
    pub fn delete(&self, name: &str) -> Result<u64, WriteError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshot();
        // A fed store also deletes objects that are not served (invalid,
        // in conflict): it says itself whether the object exists.
        if !self.is_fed() && !current.sandboxes.contains_key(name) {
            return Err(WriteError::NotFound(name.to_owned()));
        }
        let version = self.next_version(&current)?;
        match self.commit(
            &current,
            Batch {
                version,
                upserts: vec![],
                deletes: vec![name.to_owned()],
            },
        )? {
            Committed::Applied => Ok(version),
            Committed::Fed { .. } => Ok(self.snapshot().version),
        }
    }

    /// Creates or replaces every sandbox of `seed` in one commit (sandboxes
    /// not in the seed are kept). Applying the same seed again commits
    /// nothing and keeps the version. Blocks.
    pub fn apply_seed(&self, seed: &Seed) -> Result<SeedOutcome, WriteError> {
        seed.validate().map_err(WriteError::Invalid)?;
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshot();
        let changes: Vec<(&str, &SandboxSpec)> = seed
            .sandboxes
            .iter()
            .filter(|(name, spec)| {
                current
                    .sandboxes
                    .get(name.as_str())
                    .is_none_or(|e| e.spec != **spec)
            })
            .map(|(name, spec)| (name.as_str(), spec))
            .collect();
        if changes.is_empty() {
            return Ok(SeedOutcome {
                changed: 0,
                version: current.version,
            });
        }
        find_conflict(&current, &changes).map_err(|ConflictAt(name, e)| {
            WriteError::Conflict(e.under(&format!("sandboxes.{name}")))
        })?;
        let version = self.next_version(&current)?;
        let upserts = changes
            .iter()
            .map(|(name, spec)| {
                (
                    (*name).to_owned(),
                    StoredSandbox {
                        spec: (*spec).clone(),
                        version,
                    },
                )
            })
            .collect();
        let changed = changes.len();
        self.commit(
            &current,
            Batch {
                version,
                upserts,
                deletes: vec![],
            },
        )?;
        Ok(SeedOutcome { changed, version })
    }

    /// The version of the next commit: the current one + 1 for an owned
    /// store; a fed store numbers its own (the batch's is not used).
    fn next_version(&self, current: &Snapshot) -> Result<u64, StoreError> {
        if self.is_fed() {
            return Ok(current.version);
        }
        current
            .version
            .checked_add(1)
            .ok_or_else(|| StoreError::Other("version counter exhausted".into()))
    }

    /// Commits `batch` and, only if that succeeded, publishes the snapshot
    /// it makes (an owned store) or waits for the feed to publish it (a fed
    /// store). Called with the writer lock held.
    fn commit(&self, current: &Snapshot, batch: Batch) -> Result<Committed, StoreError> {
        let started = Instant::now();
        let result = self.store.commit(&batch);
        if let Some(observer) = &self.observer {
            observer.commit(started.elapsed(), result.is_ok());
        }
        let committed = result?;
        if let Committed::Fed { seq, .. } = committed {
            self.wait_published(seq);
            return Ok(committed);
        }
        let Batch {
            version,
            upserts,
            deletes,
        } = batch;
        let next = Arc::new(current.apply(version, upserts, &deletes));
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = next;
        Ok(Committed::Applied)
    }
}

/// The first route of `changes` whose (routing key, baseline) pair another
/// sandbox forks, in the table as it would be after `changes`. Sandboxes in
/// `changes` give up their current routes.
fn find_conflict<'a>(
    current: &Snapshot,
    changes: &[(&'a str, &'a SandboxSpec)],
) -> Result<(), ConflictAt<'a>> {
    let replaced: HashSet<&str> = changes.iter().map(|(name, _)| *name).collect();
    let mut claimed: HashMap<(&str, &str), &str> = HashMap::new();
    for (name, spec) in changes {
        for (index, route) in spec.routes.iter().enumerate() {
            let pair = (spec.routing_key.as_str(), route.baseline.as_str());
            let owner = claimed.get(&pair).copied().or_else(|| {
                current
                    .owner(pair.0, pair.1)
                    .filter(|owner| !replaced.contains(owner))
            });
            if let Some(other) = owner.filter(|other| other != name) {
                return Err(ConflictAt(
                    name,
                    FieldError::new(
                        format!("routes[{index}].baseline"),
                        format!(
                            "routing key {:?} already forks {} in sandbox {other:?} \
                             (a request may be routed to only one sandbox)",
                            spec.routing_key, route.baseline
                        ),
                    ),
                ));
            }
            claimed.insert(pair, name);
        }
    }
    Ok(())
}

/// A conflict found in the changes of sandbox `.0`.
struct ConflictAt<'a>(&'a str, FieldError);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SandboxRoute;
    use crate::store::MemoryStore;

    fn spec(key: &str, baselines: &[&str]) -> SandboxSpec {
        SandboxSpec {
            routing_key: key.into(),
            routes: baselines
                .iter()
                .map(|b| SandboxRoute {
                    baseline: format!("{b}.ns"),
                    target: format!("{b}-{key}.ns"),
                })
                .collect(),
        }
    }

    /// The snapshot built change by change equals one built from the store.
    #[test]
    fn incremental_snapshots_equal_a_fresh_load() {
        let store = Arc::new(MemoryStore::new());
        let service = RouteService::open(store.clone()).unwrap();
        let names = ["a", "b", "c", "d"];
        let keys = ["k1", "k2"];
        let baselines = ["x", "y", "z"];
        for step in 0..200usize {
            let name = names[step % names.len()];
            let result = if step % 7 == 3 {
                service.delete(name).map(|_| ())
            } else {
                let key = keys[(step / 3) % keys.len()];
                let take = 1 + step % baselines.len();
                let start = step % 2;
                let chosen: Vec<&str> = baselines
                    .iter()
                    .cycle()
                    .skip(start)
                    .take(take)
                    .copied()
                    .collect();
                service.put(name, spec(key, &chosen)).map(|_| ())
            };
            match result {
                Ok(()) | Err(WriteError::Conflict(_)) | Err(WriteError::NotFound(_)) => {}
                Err(e) => panic!("step {step}: {e}"),
            }
            let incremental = service.snapshot();
            let fresh = Snapshot::from_stored(store.load().unwrap());
            assert_eq!(
                incremental.routes_json(),
                fresh.routes_json(),
                "step {step}"
            );
            assert_eq!(
                incremental.sandbox_list(),
                fresh.sandbox_list(),
                "step {step}"
            );
            for key in keys {
                assert_eq!(
                    incremental.routes_json_for_key(key),
                    fresh.routes_json_for_key(key)
                );
            }
            // The conflict rule holds: every (key, baseline) once.
            let routes: Vec<&Route> = incremental.routes().collect();
            let total: usize = incremental
                .sandbox_list()
                .sandboxes
                .iter()
                .map(|s| s.routes.len())
                .sum();
            assert_eq!(routes.len(), total, "step {step}");
        }
    }

    /// A fed store in memory: versions of its own (`1000 + n`), changes
    /// from outside through [`FedStore::external`].
    struct FedStore {
        state: Mutex<Stored>,
        feed: tokio::sync::watch::Sender<Arc<FeedState>>,
        next_error: Mutex<Option<StoreError>>,
    }

    impl FedStore {
        fn new() -> Arc<Self> {
            let (feed, _) = tokio::sync::watch::channel(Arc::new(FeedState::default()));
            Arc::new(FedStore {
                state: Mutex::new(Stored::default()),
                feed,
                next_error: Mutex::new(None),
            })
        }

        /// Applies a change and sends the new state; its seq.
        fn apply(&self, upserts: &[(String, StoredSandbox)], deletes: &[String]) -> u64 {
            let mut state = self.state.lock().unwrap();
            for (name, s) in upserts {
                state.sandboxes.insert(name.clone(), s.clone());
            }
            for name in deletes {
                state.sandboxes.remove(name);
            }
            state.version += 1;
            let mut stored = state.clone();
            stored.version += 1000;
            let seq = self.feed.borrow().seq + 1;
            self.feed.send_replace(Arc::new(FeedState {
                seq,
                stored: Arc::new(stored),
            }));
            seq
        }

        fn external(&self, name: &str, spec: SandboxSpec) {
            self.apply(
                &[(name.to_owned(), StoredSandbox { spec, version: 77 })],
                &[],
            );
        }
    }

    impl Store for FedStore {
        fn load(&self) -> Result<Stored, StoreError> {
            Ok(self.feed.borrow().stored.as_ref().clone())
        }
        fn commit(&self, batch: &Batch) -> Result<Committed, StoreError> {
            if let Some(e) = self.next_error.lock().unwrap().take() {
                return Err(e);
            }
            if !batch.deletes.is_empty()
                && !self
                    .state
                    .lock()
                    .unwrap()
                    .sandboxes
                    .contains_key(&batch.deletes[0])
            {
                return Err(StoreError::NotFound(batch.deletes[0].clone()));
            }
            let created = batch
                .upserts
                .first()
                .is_some_and(|(n, _)| !self.state.lock().unwrap().sandboxes.contains_key(n));
            let seq = self.apply(&batch.upserts, &batch.deletes);
            Ok(Committed::Fed { seq, created })
        }
        fn describe(&self) -> String {
            "fed memory".into()
        }
        fn feed(&self) -> Option<crate::store::Feed> {
            Some(self.feed.subscribe())
        }
    }

    /// A fed store: the service serves only what the feed sends, its own
    /// writes included (and answers them once it serves them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fed_store_is_served_from_its_feed() {
        let store = FedStore::new();
        let service = Arc::new(RouteService::open(store.clone()).unwrap());
        assert!(service.is_fed());
        tokio::spawn(Arc::clone(&service).follow_feed());
        let writer = Arc::clone(&service);
        let outcome = tokio::task::spawn_blocking(move || writer.put("a", spec("k", &["x"])))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(outcome, PutOutcome::Created(_)), "{outcome:?}");
        // Read your writes: served, at the store's version.
        assert_eq!(service.snapshot().version(), 1001);
        assert!(service.snapshot().sandbox("a").is_some());

        // A change from outside is served too.
        store.external("b", spec("k2", &["y"]));
        for _ in 0..200 {
            if service.snapshot().sandbox("b").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(service.snapshot().sandbox("b").unwrap().version, 77);
        assert_eq!(service.snapshot().version(), 1002);

        // The store's refusals mean what they say.
        *store.next_error.lock().unwrap() = Some(StoreError::Concurrent("a".into()));
        let writer = Arc::clone(&service);
        let refused = tokio::task::spawn_blocking(move || writer.put("a", spec("k", &["z"])))
            .await
            .unwrap();
        assert!(
            matches!(refused, Err(WriteError::Conflict(_))),
            "{refused:?}"
        );
        let writer = Arc::clone(&service);
        let missing = tokio::task::spawn_blocking(move || writer.delete("nope"))
            .await
            .unwrap();
        assert!(
            matches!(missing, Err(WriteError::NotFound(_))),
            "{missing:?}"
        );
        let writer = Arc::clone(&service);
        let version = tokio::task::spawn_blocking(move || writer.delete("a"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(version, 1003);
        assert!(service.snapshot().sandbox("a").is_none());
    }

    #[test]
    fn the_table_json_is_what_serde_makes() {
        let service = RouteService::open(Arc::new(MemoryStore::new())).unwrap();
        service.put("b", spec("k", &["y"])).unwrap();
        service.put("a", spec("k", &["x"])).unwrap();
        let snapshot = service.snapshot();
        let expected = serde_json::to_vec(&crate::model::RouteList {
            version: 2,
            routes: snapshot.routes().cloned().collect(),
        })
        .unwrap();
        assert_eq!(snapshot.routes_json(), expected);
        assert_eq!(
            snapshot.routes_json_for_key("nope"),
            &br#"{"version":2,"routes":[]}"#[..]
        );
    }
}

#[cfg(test)]
mod delta_tests {
    use super::*;
    use crate::model::SandboxRoute;
    use crate::store::MemoryStore;

    /// A small deterministic generator (no dependency needed).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }

    type Table = BTreeMap<(String, String), Route>;

    fn table_of(snapshot: &Snapshot) -> Table {
        snapshot
            .routes()
            .map(|r| ((r.routing_key.clone(), r.baseline.clone()), r.clone()))
            .collect()
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Delta {
        version: u64,
        since: u64,
        upserts: Vec<Route>,
        deletes: Vec<Ref>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Ref {
        routing_key: String,
        baseline: String,
    }

    /// `table` (at `since`) with the delta to `snapshot` applied.
    fn apply(mut table: Table, since: u64, snapshot: &Snapshot) -> Option<Table> {
        match snapshot.delta(since) {
            DeltaAnswer::NotModified => Some(table),
            DeltaAnswer::Gone => None,
            DeltaAnswer::Changes(body) => {
                let delta: Delta = serde_json::from_slice(&body).unwrap();
                assert_eq!((delta.version, delta.since), (snapshot.version(), since));
                for d in delta.deletes {
                    assert!(!delta
                        .upserts
                        .iter()
                        .any(|u| u.routing_key == d.routing_key && u.baseline == d.baseline));
                    table.remove(&(d.routing_key, d.baseline));
                }
                for u in delta.upserts {
                    table.insert((u.routing_key.clone(), u.baseline.clone()), u);
                }
                Some(table)
            }
        }
    }

    fn random_spec(rng: &mut Lcg) -> SandboxSpec {
        let keys = ["k1", "k2", "k3"];
        let baselines = ["a", "b", "c", "d"];
        let n = 1 + rng.next(3);
        let start = rng.next(baselines.len());
        SandboxSpec {
            routing_key: keys[rng.next(keys.len())].into(),
            routes: (0..n)
                .map(|i| {
                    let b = baselines[(start + i) % baselines.len()];
                    SandboxRoute {
                        baseline: format!("{b}.ns"),
                        target: format!("{b}-{}.ns", rng.next(3)),
                    }
                })
                .collect(),
        }
    }

    /// The property: for every version V of a run and every later snapshot
    /// W, the delta from V applied to the table at V is the table at W (or
    /// the answer is 410, only for versions the history dropped).
    #[test]
    fn a_delta_applied_to_the_table_at_v_gives_the_table_at_w() {
        for seed in 0..40u64 {
            let mut rng = Lcg(seed);
            let service = RouteService::open(Arc::new(MemoryStore::new())).unwrap();
            let names = ["s1", "s2", "s3", "s4", "s5"];
            let mut seen: Vec<(u64, Table)> = vec![(0, Table::new())];
            for _ in 0..60 {
                let name = names[rng.next(names.len())];
                let _ = match rng.next(4) {
                    0 => service.delete(name).map(|_| ()),
                    1 => {
                        let seed = Seed {
                            sandboxes: (0..2)
                                .map(|_| {
                                    (
                                        names[rng.next(names.len())].to_owned(),
                                        random_spec(&mut rng),
                                    )
                                })
                                .collect(),
                        };
                        service.apply_seed(&seed).map(|_| ())
                    }
                    _ => service.put(name, random_spec(&mut rng)).map(|_| ()),
                };
                let now = service.snapshot();
                if seen.last().map(|(v, _)| *v) != Some(now.version()) {
                    seen.push((now.version(), table_of(&now)));
                }
                for (v, at_v) in &seen {
                    let applied = apply(at_v.clone(), *v, &now)
                        .unwrap_or_else(|| panic!("seed {seed}: 410 for {v} within history"));
                    assert_eq!(
                        applied,
                        table_of(&now),
                        "seed {seed}: {v} -> {}",
                        now.version()
                    );
                }
            }
        }
    }

    #[test]
    fn unknown_future_and_restarted_versions_are_gone() {
        let store = Arc::new(MemoryStore::new());
        let service = RouteService::open(store.clone()).unwrap();
        let spec = |key: &str| SandboxSpec {
            routing_key: key.into(),
            routes: vec![SandboxRoute {
                baseline: "a.ns".into(),
                target: format!("a-{key}.ns"),
            }],
        };
        service.put("s", spec("k")).unwrap();
        service.put("t", spec("j")).unwrap();
        let now = service.snapshot();
        assert_eq!(now.version(), 2);
        assert_eq!(now.delta(2), DeltaAnswer::NotModified);
        assert!(matches!(now.delta(1), DeltaAnswer::Changes(_)));
        assert_eq!(now.delta(3), DeltaAnswer::Gone, "a version not reached");
        // Another process over the same store knows only its own versions.
        let restarted = RouteService::open(store).unwrap();
        assert_eq!(restarted.snapshot().delta(2), DeltaAnswer::NotModified);
        assert_eq!(restarted.snapshot().delta(1), DeltaAnswer::Gone);
        assert_eq!(restarted.snapshot().delta(0), DeltaAnswer::Gone);
        let DeltaAnswer::Changes(body) = now.delta(1) else {
            panic!("not a delta")
        };
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"version":2,"since":1,"upserts":[{"routingKey":"j","sandbox":"t","baseline":"a.ns","target":"a-j.ns"}],"deletes":[]}"#
        );
        service.delete("s").unwrap();
        let DeltaAnswer::Changes(body) = service.snapshot().delta(2) else {
            panic!("not a delta")
        };
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"version":3,"since":2,"upserts":[],"deletes":[{"routingKey":"k","baseline":"a.ns"}]}"#
        );
    }

    #[test]
    fn the_history_is_bounded() {
        let log = (1..=(HISTORY_VERSIONS as u64 + 10)).fold(ChangeLog::starting_at(0), |log, v| {
            log.then(v, vec![("k".into(), format!("b{v}"))], 10)
        });
        assert_eq!(log.changes.len(), HISTORY_VERSIONS);
        assert_eq!(log.versions.len(), HISTORY_VERSIONS + 1);
        assert!(log.touched_since(9).is_none());
        assert_eq!(
            log.touched_since(10).map(|t| t.len()),
            Some(HISTORY_VERSIONS)
        );
        // A big change pushes out as many older ones as the table is large.
        let big: Vec<Pair> = (0..HISTORY_MIN_ROUTES)
            .map(|i| ("k".into(), format!("x{i}")))
            .collect();
        let log = log.then(1_000_000, big, 100);
        assert_eq!(log.changes.len(), 1);
        assert!(log.pairs <= HISTORY_MIN_ROUTES);
        assert!(log.touched_since(HISTORY_VERSIONS as u64 + 10).is_some());
        // Versions are found by equality: unordered (hash) versions work,
        // and a version seen twice is taken at its last place.
        let log = ChangeLog::starting_at(900)
            .then(5, vec![("k".into(), "a".into())], 10)
            .then(900, vec![("k".into(), "b".into())], 10)
            .then(7, vec![("k".into(), "c".into())], 10);
        assert_eq!(log.touched_since(900).unwrap().len(), 1);
        assert_eq!(log.touched_since(5).unwrap().len(), 2);
    }
}

#[cfg(test)]
mod fed_delta_tests {
    use super::*;
    use crate::model::SandboxRoute;

    /// A fed store whose versions are content hashes (unordered, and equal
    /// when the content comes back), as the Kubernetes store's are.
    struct Hashed {
        feed: tokio::sync::watch::Sender<Arc<FeedState>>,
    }

    impl Store for Hashed {
        fn load(&self) -> Result<Stored, StoreError> {
            Ok(self.feed.borrow().stored.as_ref().clone())
        }
        fn commit(&self, _: &Batch) -> Result<Committed, StoreError> {
            Err(StoreError::Unsupported("read only"))
        }
        fn describe(&self) -> String {
            "hashed".into()
        }
        fn feed(&self) -> Option<crate::store::Feed> {
            Some(self.feed.subscribe())
        }
    }

    fn state(seq: u64, sandboxes: &[(&str, &str)]) -> FeedState {
        let sandboxes: BTreeMap<String, StoredSandbox> = sandboxes
            .iter()
            .map(|(name, baseline)| {
                let spec = SandboxSpec {
                    routing_key: (*name).into(),
                    routes: vec![SandboxRoute {
                        baseline: format!("{baseline}.ns"),
                        target: format!("{baseline}-{name}.ns"),
                    }],
                };
                ((*name).to_owned(), StoredSandbox { spec, version: 1 })
            })
            .collect();
        // A stand-in for the content hash: unordered, equal for equal content.
        let text = format!("{sandboxes:?}");
        let version = text.bytes().fold(1_469_598_103_934_665_603u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(1_099_511_628_211)
        }) >> 11;
        FeedState {
            seq,
            stored: Arc::new(Stored { version, sandboxes }),
        }
    }

    fn routes(snapshot: &Snapshot) -> Vec<Route> {
        snapshot.routes().cloned().collect()
    }

    #[test]
    fn deltas_of_a_fed_store_follow_versions_by_equality() {
        let states = [
            state(0, &[("a", "x")]),
            state(1, &[("a", "x"), ("b", "y")]),
            state(2, &[("a", "z"), ("b", "y")]),
            // Back to the content of state 1: the same version again.
            state(3, &[("a", "x"), ("b", "y")]),
            state(4, &[("b", "y")]),
        ];
        assert_eq!(states[1].stored.version, states[3].stored.version);
        let (feed, _) = tokio::sync::watch::channel(Arc::new(states[0].clone()));
        let service = RouteService::open(Arc::new(Hashed { feed })).unwrap();
        let mut seen = vec![(states[0].stored.version, routes(&service.snapshot()))];
        for s in &states[1..] {
            service.publish_fed(s);
            seen.push((s.stored.version, routes(&service.snapshot())));
        }
        let now = service.snapshot();
        for (version, table) in &seen {
            let body = match now.delta(*version) {
                DeltaAnswer::Changes(body) => body,
                DeltaAnswer::NotModified => Bytes::from_static(br#"{"upserts":[],"deletes":[]}"#),
                DeltaAnswer::Gone => panic!("410 from {version}"),
            };
            let delta: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let mut applied: BTreeMap<(String, String), Route> = table
                .iter()
                .map(|r| ((r.routing_key.clone(), r.baseline.clone()), r.clone()))
                .collect();
            for d in delta["deletes"].as_array().unwrap() {
                applied.remove(&(
                    d["routingKey"].as_str().unwrap().to_owned(),
                    d["baseline"].as_str().unwrap().to_owned(),
                ));
            }
            for u in delta["upserts"].as_array().unwrap() {
                let r: Route = serde_json::from_value(u.clone()).unwrap();
                applied.insert((r.routing_key.clone(), r.baseline.clone()), r);
            }
            assert_eq!(
                applied.into_values().collect::<Vec<_>>(),
                routes(&now),
                "from {version}"
            );
        }
        assert_eq!(now.delta(now.version()), DeltaAnswer::NotModified);
        assert_eq!(now.delta(12345), DeltaAnswer::Gone);
    }
}
