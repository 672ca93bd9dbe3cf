//! The Kubernetes store (`serve --store kubernetes`): sandboxes are
//! `Sandbox` objects (`sandboxes.sandbox-router.dev`), watched into a cache;
//! the table is computed from the cache alone, so every replica watching the
//! same objects serves the same table under the same version.
//!
//! - [`index`] (pure): the objects -> the served [`Stored`] state and a
//!   [`Verdict`] per object. An object is served unless it is being deleted,
//!   breaks a rule of the model ([`crate::model`]: the same rules and field
//!   names as the API; the CRD schema enforces most of them earlier), has
//!   expired, or forks a (routing key, baseline) pair that an older object
//!   (by `creationTimestamp`, then name) already forks: no schema can see
//!   across objects, and a rule that depends only on the objects gives every
//!   replica the same answer.
//! - The version is a content hash of the served table ([`table_version`]):
//!   equal objects give equal versions on every replica and after restarts;
//!   any change of the table changes it; it is not ordered.
//! - [`KubeStore`]: the watch loop (which also writes `status`, and deletes
//!   expired objects), and the writes of the API as single-object creates,
//!   replaces (`resourceVersion` precondition) and deletes (`uid`
//!   precondition).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use kube::{Client, Resource as _};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use sandbox_router_crd::{ReadyReason, Sandbox, SandboxStatus, CONDITION_READY};

use crate::kube_routes::{self, RouteWriter, ViewCache, ViewEvent};
use crate::mesh_routes::{self, ClusterView, DesiredRoute, RouteObjects, RoutingPolicy};
use crate::model::{validate_name, SandboxRoute, SandboxSpec, StoredSandbox};
use crate::store::{Batch, Committed, Feed, FeedState, Store, StoreError, Stored};

/// The field manager of every write of the RouteService.
pub const FIELD_MANAGER: &str = "routeservice";
/// How long a write waits for the watch to bring its own change back.
pub const DEFAULT_WRITE_WAIT: Duration = Duration::from_secs(10);
/// How long [`Store::load`] waits for the first full list.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Versions are masked to 53 bits: a JSON number any client (JavaScript's
/// included) reads exactly.
const VERSION_MASK: u64 = (1 << 53) - 1;

/// What became of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub reason: ReadyReason,
    pub message: String,
    /// When it expires, if it does (and its lifetime is valid).
    pub expires_at: Option<Timestamp>,
}

/// The table computed from the objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    /// The served sandboxes and the table's version.
    pub stored: Stored,
    /// Every object not being deleted, by name.
    pub verdicts: BTreeMap<String, Verdict>,
    /// Expired objects to delete.
    pub expired: Vec<String>,
    /// The earliest instant the table changes by itself: an expiry, or a
    /// sandbox whose routes have settled in the mesh.
    pub next_expiry: Option<Timestamp>,
    /// The routing objects that should exist (header mode), including
    /// those of sandboxes waiting for them ([`ReadyReason::RoutesPending`]).
    pub routes: Vec<DesiredRoute>,
}

/// What the index needs to check forks and plan routing objects.
#[derive(Debug, Clone, Copy)]
pub struct MeshContext<'a> {
    pub view: &'a ClusterView,
    pub policy: &'a RoutingPolicy,
}

fn creation(object: &Sandbox) -> Option<Timestamp> {
    object.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn object_version(object: &Sandbox) -> u64 {
    object
        .metadata
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

/// The model's view of an object, checked by the model's rules; errors name
/// the object's field (`spec.routes[0].target`).
fn to_model(name: &str, object: &Sandbox) -> Result<SandboxSpec, String> {
    validate_name(name).map_err(|e| format!("metadata.{e}"))?;
    let spec = SandboxSpec {
        routing_key: object.spec.routing_key.clone(),
        routes: object
            .spec
            .routes
            .iter()
            .map(|r| SandboxRoute {
                baseline: r.baseline.clone(),
                target: r.target.clone(),
            })
            .collect(),
    };
    spec.validate(name)
        .map_err(|e| format!("spec.{}: {}", e.field, e.problem))?;
    Ok(spec)
}

/// The served table of `objects` at `now` (see the module doc), with no
/// check of the cluster's Services and no routing objects.
pub fn index(objects: &BTreeMap<String, Sandbox>, now: Timestamp) -> Index {
    index_in(objects, None, now)
}

/// The served table of `objects` at `now`; with `mesh`, a sandbox is
/// served only once its forks exist and its routing objects are written
/// ([`crate::mesh_routes`]).
pub fn index_in(
    objects: &BTreeMap<String, Sandbox>,
    mesh: Option<MeshContext<'_>>,
    now: Timestamp,
) -> Index {
    let mut order: Vec<(&String, &Sandbox)> = objects
        .iter()
        .filter(|(_, o)| o.metadata.deletion_timestamp.is_none())
        .collect();
    // Oldest first: the first to fork a pair keeps it. An object without a
    // creation time (never the API server's) counts as created now.
    order.sort_by_key(|(name, o)| (creation(o).unwrap_or(now), name.as_str()));
    let mut out = Index::default();
    let mut claimed: HashMap<(String, String), String> = HashMap::new();
    for (name, object) in order {
        let mut verdict = |reason: ReadyReason, message: String, expires_at| {
            out.verdicts.insert(
                name.clone(),
                Verdict {
                    reason,
                    message,
                    expires_at,
                },
            );
        };
        let spec = match to_model(name, object) {
            Ok(spec) => spec,
            Err(problem) => {
                verdict(ReadyReason::Invalid, problem, None);
                continue;
            }
        };
        let expires_at = match object.spec.expiry(creation(object)) {
            Ok(at) => at,
            Err(e) => {
                verdict(
                    ReadyReason::Invalid,
                    format!("spec.{}: {}", e.field(), e.problem()),
                    None,
                );
                continue;
            }
        };
        if let Some(at) = expires_at {
            if at <= now {
                verdict(
                    ReadyReason::Expired,
                    format!("expired at {at}: out of the table, being deleted"),
                    Some(at),
                );
                out.expired.push(name.clone());
                continue;
            }
            out.next_expiry = Some(out.next_expiry.map_or(at, |next| next.min(at)));
        }
        let taken = spec.routes.iter().enumerate().find_map(|(i, route)| {
            claimed
                .get(&(spec.routing_key.clone(), route.baseline.clone()))
                .map(|owner| (i, route, owner))
        });
        if let Some((i, route, owner)) = taken {
            let message = format!(
                "spec.routes[{i}].baseline: routing key {:?} already forks {} in sandbox {owner:?} \
                 (created earlier); a request may be routed to only one sandbox",
                spec.routing_key, route.baseline
            );
            verdict(ReadyReason::Conflict, message, expires_at);
            continue;
        }
        // The pairs are its, served or not yet: the oldest sandbox keeps a
        // pair while it waits for a fork or its routing objects.
        for route in &spec.routes {
            claimed.insert(
                (spec.routing_key.clone(), route.baseline.clone()),
                name.clone(),
            );
        }
        let count = spec.routes.len();
        let mut message = format!("{count} route(s) served by the RouteService");
        if let Some(MeshContext { view, policy }) = mesh {
            let plans = match mesh_routes::plan(name, &spec, view, policy) {
                Ok(plans) => plans,
                Err(problem) => {
                    verdict(problem.reason, problem.message, expires_at);
                    continue;
                }
            };
            let uid = object.metadata.uid.as_deref().unwrap_or_default();
            let desired = mesh_routes::http_routes(name, uid, &plans, policy);
            let ready_at = mesh_routes::ready_at(&desired, view);
            let pending = desired.len();
            out.routes.extend(desired);
            if let Some(at) = ready_at.filter(|at| *at > now) {
                // Wake up then: the table changes by itself at that instant.
                out.next_expiry = Some(out.next_expiry.map_or(at, |next| next.min(at)));
            }
            if ready_at.is_none_or(|at| at > now) {
                verdict(
                    ReadyReason::RoutesPending,
                    format!(
                        "writing {pending} HTTPRoute(s); served once the mesh has accepted them"
                    ),
                    expires_at,
                );
                continue;
            }
            message = mesh_routes::describe(&plans);
        }
        verdict(ReadyReason::RoutesApplied, message, expires_at);
        out.stored.sandboxes.insert(
            name.clone(),
            StoredSandbox {
                spec,
                version: object_version(object),
            },
        );
    }
    out.stored.version = table_version(&out.stored.sandboxes);
    out
}

/// The version of a served table: the first 53 bits of the SHA-256 of its
/// content (name, routing key, routes, in name order). Depends on nothing
/// but the table, so replicas agree without talking to each other.
pub fn table_version(sandboxes: &BTreeMap<String, StoredSandbox>) -> u64 {
    let mut hash = Sha256::new();
    for (name, sandbox) in sandboxes {
        // Names, keys and hosts cannot hold NUL or newline: unambiguous.
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(sandbox.spec.routing_key.as_bytes());
        for route in &sandbox.spec.routes {
            hash.update([0]);
            hash.update(route.baseline.as_bytes());
            hash.update([0]);
            hash.update(route.target.as_bytes());
        }
        hash.update([b'\n']);
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    for (to, from) in first.iter_mut().zip(digest.iter()) {
        *to = *from;
    }
    u64::from_be_bytes(first) & VERSION_MASK
}

/// The status an object should have for `verdict`. Keeps the condition's
/// `lastTransitionTime` while its status and reason stay the same, so
/// replicas that agree write nothing.
pub fn desired_status(object: &Sandbox, verdict: &Verdict, now: Timestamp) -> SandboxStatus {
    let status = if verdict.reason.is_ready() {
        "True"
    } else {
        "False"
    };
    let generation = object.metadata.generation;
    let previous = object
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY));
    let last_transition_time = previous
        .filter(|c| c.status == status && c.reason == verdict.reason.as_str())
        .map_or(Time(now), |c| c.last_transition_time.clone());
    let routes: Vec<&str> = object
        .spec
        .routes
        .iter()
        .map(|r| r.baseline.as_str())
        .collect();
    SandboxStatus {
        conditions: vec![Condition {
            type_: CONDITION_READY.to_owned(),
            status: status.to_owned(),
            reason: verdict.reason.as_str().to_owned(),
            message: verdict.message.clone(),
            observed_generation: generation,
            last_transition_time,
        }],
        observed_generation: generation,
        expires_at: verdict.expires_at.map(|t| t.to_string()),
        routes: Some(routes.join(",")),
    }
}

/// The watch cache: the objects by name, and the number of the change that
/// made it so (the feed's `seq`).
#[derive(Debug, Default)]
struct Cache {
    objects: BTreeMap<String, Sandbox>,
    seq: u64,
    /// The first list of Sandboxes is in, and the view's watches have
    /// theirs (a table computed before would drop every sandbox whose fork
    /// was not listed yet).
    synced: bool,
}

/// What the loop checks and writes besides the table (`--route-objects`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshOptions {
    pub policy: RoutingPolicy,
    /// `reportingInstance` of the Events it writes (the pod's name).
    pub instance: String,
}

/// Sandboxes as Kubernetes objects.
pub struct KubeStore {
    api: Api<Sandbox>,
    runtime: tokio::runtime::Handle,
    cache: Arc<RwLock<Cache>>,
    feed: watch::Receiver<Arc<FeedState>>,
    write_wait: Duration,
    sync_timeout: Duration,
    server: String,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl KubeStore {
    /// Starts watching Sandboxes through `client` on the current runtime.
    /// [`Store::load`] waits for the first full list.
    /// With `mesh`, it also checks forks and writes routing objects
    /// ([`crate::mesh_routes`]).
    pub fn start(client: Client, server: String, mesh: Option<MeshOptions>) -> Self {
        let api: Api<Sandbox> = Api::all(client.clone());
        let cache = Arc::new(RwLock::new(Cache::default()));
        let (feed_tx, feed) = watch::channel(Arc::new(FeedState::default()));
        tokio::spawn(watch_loop(
            client,
            api.clone(),
            Arc::clone(&cache),
            feed_tx,
            mesh,
        ));
        KubeStore {
            api,
            runtime: tokio::runtime::Handle::current(),
            cache,
            feed,
            write_wait: DEFAULT_WRITE_WAIT,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
            server,
        }
    }

    fn cached(&self, name: &str) -> Option<Sandbox> {
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .objects
            .get(name)
            .cloned()
    }

    /// Waits until the cache satisfies `seen` (the write came back through
    /// the watch); the seq of the change that did. After [`Self::write_wait`]
    /// it gives up (the write is done all the same) and says so in the log.
    async fn wait_seen(&self, name: &str, seen: impl Fn(Option<&Sandbox>) -> bool) -> u64 {
        let mut feed = self.feed.clone();
        let deadline = tokio::time::Instant::now() + self.write_wait;
        loop {
            {
                let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
                if seen(cache.objects.get(name)) {
                    return cache.seq;
                }
            }
            match tokio::time::timeout_at(deadline, feed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(
                        sandbox = name,
                        wait_s = self.write_wait.as_secs_f64(),
                        "the watch has not brought this write back yet; answering anyway"
                    );
                    return self
                        .cache
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .seq;
                }
            }
        }
    }

    async fn put(&self, name: &str, spec: &SandboxSpec) -> Result<Committed, StoreError> {
        let routes: Vec<sandbox_router_crd::SandboxRoute> = spec
            .routes
            .iter()
            .map(|r| sandbox_router_crd::SandboxRoute {
                baseline: r.baseline.clone(),
                target: r.target.clone(),
            })
            .collect();
        let params = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.to_owned()),
        };
        let Some(seen) = self.cached(name) else {
            let object = Sandbox::new(
                name,
                sandbox_router_crd::SandboxSpec {
                    routing_key: spec.routing_key.clone(),
                    routes,
                    ttl: None,
                    expires_at: None,
                },
            );
            let written = self
                .api
                .create(&params, &object)
                .await
                .map_err(|e| write_error(name, e))?;
            let seq = self.wait_written(name, &written).await;
            return Ok(Committed::Fed { seq, created: true });
        };
        // Replace what this replica saw, and only that: the API server
        // refuses the write if the object changed since (409). A change of
        // anything but the spec (a replica's status write) is no reason to
        // refuse: then the write is tried again on the newer object, a few
        // times. Everything but the routing is kept (lifetime, labels).
        let mut object = seen.clone();
        for attempt in 1..=REPLACE_ATTEMPTS {
            let used = object.metadata.resource_version.clone();
            object.spec.routing_key = spec.routing_key.clone();
            object.spec.routes = routes.clone();
            object.metadata.managed_fields = None;
            object.status = None;
            match self.api.replace(name, &params, &object).await {
                Ok(written) => {
                    let seq = self.wait_written(name, &written).await;
                    return Ok(Committed::Fed {
                        seq,
                        created: false,
                    });
                }
                Err(kube::Error::Api(status))
                    if status.is_conflict() && attempt < REPLACE_ATTEMPTS =>
                {
                    self.wait_seen(name, |o| {
                        o.is_none_or(|o| o.metadata.resource_version != used)
                    })
                    .await;
                    match self.cached(name) {
                        Some(newer)
                            if newer.spec == seen.spec
                                && newer.metadata.uid == seen.metadata.uid =>
                        {
                            object = newer;
                        }
                        _ => return Err(StoreError::Concurrent(name.to_owned())),
                    }
                }
                Err(e) => return Err(write_error(name, e)),
            }
        }
        Err(StoreError::Concurrent(name.to_owned()))
    }

    /// Waits for the watch to bring `written` (or something newer) back.
    async fn wait_written(&self, name: &str, written: &Sandbox) -> u64 {
        let version = written.metadata.resource_version.clone();
        let number = object_version(written);
        self.wait_seen(name, |cached| {
            cached.is_some_and(|o| {
                o.metadata.resource_version == version || object_version(o) > number
            })
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<Committed, StoreError> {
        let object = self
            .cached(name)
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        let uid = object.metadata.uid.clone();
        // The uid, not the resourceVersion: a delete is meant whatever the
        // content (a status write must not make it fail), but never for an
        // object of the same name created since.
        self.api
            .delete(name, &delete_params(uid.clone()))
            .await
            .map_err(|e| write_error(name, e))?;
        let seq = self
            .wait_seen(name, |cached| cached.is_none_or(|o| o.metadata.uid != uid))
            .await;
        Ok(Committed::Fed {
            seq,
            created: false,
        })
    }
}

/// How often a replace is tried when only the object's status changed.
const REPLACE_ATTEMPTS: u32 = 3;

/// A delete of the object with this uid only.
fn delete_params(uid: Option<String>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// The store error of a failed write of `name`.
fn write_error(name: &str, error: kube::Error) -> StoreError {
    match error {
        kube::Error::Api(status) if status.is_conflict() || status.is_already_exists() => {
            StoreError::Concurrent(name.to_owned())
        }
        kube::Error::Api(status) if status.is_not_found() => StoreError::NotFound(name.to_owned()),
        kube::Error::Api(status) if status.is_invalid() => StoreError::Rejected(status.message),
        kube::Error::Api(status) if status.is_forbidden() => StoreError::Other(format!(
            "the RouteService's own identity may not write Sandboxes (see its ClusterRole): {}",
            status.message
        )),
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl Store for KubeStore {
    fn load(&self) -> Result<Stored, StoreError> {
        let mut feed = self.feed.clone();
        let cache = Arc::clone(&self.cache);
        let synced = move || cache.read().unwrap_or_else(PoisonError::into_inner).synced;
        let timeout = self.sync_timeout;
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                while !synced() {
                    if feed.changed().await.is_err() {
                        return Err(StoreError::Other("the Sandbox watch stopped".into()));
                    }
                }
                Ok(())
            })
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "no list of Sandboxes from {} within {timeout:?} (is the CRD applied, and may \
                     this identity list sandboxes.sandbox-router.dev, services, \
                     virtualservices and httproutes? see its ClusterRole)",
                    self.server
                ))
            })?
        })?;
        Ok(self.feed.borrow().stored.as_ref().clone())
    }

    fn commit(&self, batch: &Batch) -> Result<Committed, StoreError> {
        match (batch.upserts.as_slice(), batch.deletes.as_slice()) {
            ([(name, sandbox)], []) => self.runtime.block_on(self.put(name, &sandbox.spec)),
            ([], [name]) => self.runtime.block_on(self.delete(name)),
            _ => Err(StoreError::Unsupported(
                "the Kubernetes store writes one Sandbox at a time (apply many with kubectl)",
            )),
        }
    }

    fn describe(&self) -> String {
        format!("kubernetes {} (sandboxes.sandbox-router.dev)", self.server)
    }

    fn feed(&self) -> Option<Feed> {
        Some(self.feed.clone())
    }
}

/// What the loop last did about an object, so it does not do it again
/// before the watch shows the result.
#[derive(Debug, Default)]
struct Pending {
    /// name -> (resourceVersion it was written at, status sent).
    status: HashMap<String, (Option<String>, SandboxStatus)>,
    /// name -> when its deletion was asked.
    deletes: HashMap<String, Instant>,
}

/// One event of the loop's watches.
#[allow(clippy::large_enum_variant)] // moved once, one at a time (see ViewEvent)
enum Change {
    Sandbox(watcher::Result<Event<Sandbox>>),
    View(ViewEvent),
}

/// How often the loop looks again with no event (failed writes are retried).
const RESYNC: Duration = Duration::from_secs(10);

/// What the loop writes with.
struct Writers {
    api: Api<Sandbox>,
    recorder: Recorder,
    routes: Option<RouteWriter>,
}

/// Keeps the cache and the feed up to date; writes status; deletes what
/// expired; with `mesh`, keeps the view of Services (and VirtualServices
/// and HTTPRoutes) and writes HTTPRoutes. Runs until the process stops
/// (each watcher retries with backoff).
async fn watch_loop(
    client: Client,
    api: Api<Sandbox>,
    cache: Arc<RwLock<Cache>>,
    feed: watch::Sender<Arc<FeedState>>,
    mesh: Option<MeshOptions>,
) {
    let sandboxes = watcher::watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .map(Change::Sandbox)
        .boxed();
    let mut streams = vec![sandboxes];
    let mut view = mesh.as_ref().map(|m| ViewCache::new(&m.policy));
    if let Some(mesh) = &mesh {
        streams.extend(
            kube_routes::view_streams(&client, &mesh.policy)
                .into_iter()
                .map(|s| s.map(Change::View).boxed()),
        );
    }
    let mut stream = futures_util::stream::select_all(streams);
    let reporter = Reporter {
        controller: "sandbox-router-routeservice".to_owned(),
        instance: mesh.as_ref().map(|m| m.instance.clone()),
    };
    let mut writers = Writers {
        api: api.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        routes: mesh
            .as_ref()
            .filter(|m| m.policy.objects == RouteObjects::Httproute)
            .map(|_| RouteWriter::new(client.clone())),
    };
    let policy = mesh.map(|m| m.policy);
    let mut building: Option<BTreeMap<String, Sandbox>> = None;
    let mut sandboxes_synced = false;
    let mut pending = Pending::default();
    let mut next_expiry: Option<Timestamp> = None;
    loop {
        let until_expiry = next_expiry.map_or(RESYNC, |at| {
            let left = at.duration_since(Timestamp::now());
            // Just past the instant, so the index sees it as expired.
            (Duration::try_from(left).unwrap_or(Duration::ZERO) + Duration::from_millis(10))
                .min(RESYNC)
        });
        let event = tokio::select! {
            event = stream.next() => event,
            () = tokio::time::sleep(until_expiry) => {
                let mesh = mesh_context(view.as_ref(), policy.as_ref());
                next_expiry = publish(&mut writers, &cache, &feed, &mut pending, mesh, false);
                continue;
            }
        };
        let Some(event) = event else {
            tracing::error!("the Sandbox watch ended");
            return;
        };
        let changed = match event {
            Change::View(event) => match (view.as_mut(), policy.as_ref()) {
                (Some(view), Some(policy)) => view.apply(event, &policy.route_header),
                _ => false,
            },
            Change::Sandbox(Err(e)) => {
                // The backoff waits before the next attempt; the cache
                // (and so the table) stays as it was meanwhile.
                tracing::warn!(error = %e, "Sandbox watch failed; retrying");
                false
            }
            Change::Sandbox(Ok(event)) => {
                let mut cache = cache.write().unwrap_or_else(PoisonError::into_inner);
                match event {
                    Event::Init => {
                        building = Some(BTreeMap::new());
                        false
                    }
                    Event::InitApply(object) => {
                        if let Some(building) = building.as_mut() {
                            building.insert(object_name(&object), object);
                        }
                        false
                    }
                    Event::InitDone => {
                        cache.objects = building.take().unwrap_or_default();
                        sandboxes_synced = true;
                        true
                    }
                    Event::Apply(object) => {
                        cache.objects.insert(object_name(&object), object);
                        true
                    }
                    Event::Delete(object) => {
                        cache.objects.remove(&object_name(&object));
                        true
                    }
                }
            }
        };
        let all_synced = sandboxes_synced && view.as_ref().is_none_or(ViewCache::synced);
        if all_synced {
            cache.write().unwrap_or_else(PoisonError::into_inner).synced = true;
        }
        if changed {
            let mesh = mesh_context(view.as_ref(), policy.as_ref());
            next_expiry = publish(&mut writers, &cache, &feed, &mut pending, mesh, true);
        }
    }
}

fn mesh_context<'a>(
    view: Option<&'a ViewCache>,
    policy: Option<&'a RoutingPolicy>,
) -> Option<MeshContext<'a>> {
    match (view, policy) {
        (Some(view), Some(policy)) => Some(MeshContext {
            view: &view.view,
            policy,
        }),
        _ => None,
    }
}

fn object_name(object: &Sandbox) -> String {
    object.metadata.name.clone().unwrap_or_default()
}

/// Indexes the cache, sends the state on the feed (when the cache changed
/// or the table did), and starts the status writes, deletions and routing
/// object writes the index calls for. The next expiry to wake up for.
fn publish(
    writers: &mut Writers,
    cache: &RwLock<Cache>,
    feed: &watch::Sender<Arc<FeedState>>,
    pending: &mut Pending,
    mesh: Option<MeshContext<'_>>,
    cache_changed: bool,
) -> Option<Timestamp> {
    let now = Timestamp::now();
    let (index, objects) = {
        let mut cache = cache.write().unwrap_or_else(PoisonError::into_inner);
        if !cache.synced {
            return None;
        }
        let index = index_in(&cache.objects, mesh, now);
        let table_changed = feed.borrow().stored.as_ref() != &index.stored;
        if cache_changed || table_changed {
            cache.seq += 1;
            let state = FeedState {
                seq: cache.seq,
                stored: Arc::new(index.stored.clone()),
            };
            feed.send_replace(Arc::new(state));
        }
        (index, cache.objects.clone())
    };
    if let (Some(routes), Some(mesh)) = (writers.routes.as_mut(), mesh) {
        routes.reconcile(&index.routes, mesh.view);
    }
    pending
        .status
        .retain(|name, _| objects.contains_key(name.as_str()));
    pending
        .deletes
        .retain(|name, _| objects.contains_key(name.as_str()));
    for (name, verdict) in &index.verdicts {
        let Some(object) = objects.get(name) else {
            continue;
        };
        let desired = desired_status(object, verdict, now);
        if object.status.as_ref() == Some(&desired) {
            continue;
        }
        let key = (object.metadata.resource_version.clone(), desired.clone());
        if pending.status.get(name) == Some(&key) {
            continue;
        }
        pending.status.insert(name.clone(), key);
        let api = writers.api.clone();
        let name = name.clone();
        let resource_version = object.metadata.resource_version.clone();
        tokio::spawn(async move {
            // The resourceVersion precondition: a status computed from an
            // old object is not written over a newer one's.
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": resource_version },
                "status": desired,
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            match api
                .patch_status(&name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => {}
                Err(e) => tracing::warn!(sandbox = %name, error = %e, "cannot write status"),
            }
        });
    }
    for name in &index.expired {
        let asked = pending.deletes.get(name);
        if asked.is_some_and(|at| at.elapsed() < Duration::from_secs(10)) {
            continue;
        }
        let Some(object) = objects.get(name) else {
            continue;
        };
        pending.deletes.insert(name.clone(), Instant::now());
        let api = writers.api.clone();
        let recorder = writers.recorder.clone();
        let name = name.clone();
        let params = delete_params(object.metadata.uid.clone());
        let reference = object.object_ref(&());
        let note = index
            .verdicts
            .get(&name)
            .and_then(|v| v.expires_at)
            .map_or_else(
                || "expired: deleted by the RouteService".to_owned(),
                |at| {
                    let lifetime = object
                        .spec
                        .ttl
                        .as_deref()
                        .map_or_else(|| "expiresAt".to_owned(), |ttl| format!("ttl {ttl}"));
                    format!("expired at {at} ({lifetime}): deleted by the RouteService")
                },
            );
        tokio::spawn(async move {
            match api.delete(&name, &params).await {
                Ok(_) => {
                    // Only the replica whose delete went through says so.
                    tracing::info!(sandbox = %name, "{note}");
                    let event = KubeEvent {
                        type_: EventType::Normal,
                        reason: ReadyReason::Expired.as_str().to_owned(),
                        note: Some(note),
                        action: "Delete".to_owned(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&event, &reference).await {
                        tracing::warn!(sandbox = %name, error = %e, "cannot write the Expired event");
                    }
                }
                // Another replica was first (or it was re-created: the
                // next event decides again).
                Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(sandbox = %name, error = %e, "cannot delete expired sandbox")
                }
            }
        });
    }
    index.next_expiry
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn object(name: &str, key: &str, routes: &[(&str, &str)], created: &str) -> Sandbox {
        let mut object = Sandbox::new(
            name,
            sandbox_router_crd::SandboxSpec {
                routing_key: key.into(),
                routes: routes
                    .iter()
                    .map(|(b, t)| sandbox_router_crd::SandboxRoute {
                        baseline: (*b).into(),
                        target: (*t).into(),
                    })
                    .collect(),
                ttl: None,
                expires_at: None,
            },
        );
        object.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
        object.metadata.resource_version = Some("7".into());
        object.metadata.generation = Some(1);
        object
    }

    fn objects(list: Vec<Sandbox>) -> BTreeMap<String, Sandbox> {
        list.into_iter().map(|o| (object_name(&o), o)).collect()
    }

    fn now() -> Timestamp {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn the_older_sandbox_keeps_a_contested_pair() {
        let all = objects(vec![
            object("b", "k", &[("a.ns", "a-b.ns")], "2026-01-01T00:00:00Z"),
            object("a", "k", &[("a.ns", "a-a.ns")], "2026-01-02T00:00:00Z"),
            object("c", "other", &[("a.ns", "a-c.ns")], "2026-01-03T00:00:00Z"),
        ]);
        let index = index(&all, now());
        assert_eq!(
            index.stored.sandboxes.keys().collect::<Vec<_>>(),
            ["b", "c"]
        );
        let lost = &index.verdicts["a"];
        assert_eq!(lost.reason, ReadyReason::Conflict);
        assert!(lost.message.contains("sandbox \"b\""), "{}", lost.message);
        assert_eq!(index.verdicts["b"].reason, ReadyReason::RoutesApplied);
    }

    #[test]
    fn invalid_objects_are_named_by_field_and_not_served() {
        let all = objects(vec![
            object("ok", "k", &[("a.ns", "a-x.ns")], "2026-01-01T00:00:00Z"),
            object("self", "k2", &[("a.ns", "a.ns")], "2026-01-01T00:00:00Z"),
            object("Upper", "k3", &[("a.ns", "b.ns")], "2026-01-01T00:00:00Z"),
        ]);
        let index = index(&all, now());
        assert_eq!(index.stored.sandboxes.keys().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(index.verdicts["self"].reason, ReadyReason::Invalid);
        assert!(index.verdicts["self"]
            .message
            .starts_with("spec.routes[0].target:"));
        assert!(index.verdicts["Upper"]
            .message
            .starts_with("metadata.name:"));
    }

    #[test]
    fn expired_sandboxes_leave_the_table() {
        let mut old = object("old", "k", &[("a.ns", "a-x.ns")], "2026-05-31T23:00:00Z");
        old.spec.ttl = Some("30m".into());
        let mut young = object("young", "k2", &[("a.ns", "a-y.ns")], "2026-05-31T23:50:00Z");
        young.spec.ttl = Some("30m".into());
        let index = index(&objects(vec![old, young]), now());
        assert_eq!(index.stored.sandboxes.keys().collect::<Vec<_>>(), ["young"]);
        assert_eq!(index.expired, ["old"]);
        assert_eq!(index.verdicts["old"].reason, ReadyReason::Expired);
        assert_eq!(
            index.next_expiry,
            Some("2026-06-01T00:20:00Z".parse().unwrap())
        );
    }

    /// The version depends on the table only: not on resourceVersions,
    /// status, or the order objects arrived in.
    #[test]
    fn versions_are_content_hashes() {
        let a = object("a", "k", &[("a.ns", "a-x.ns")], "2026-01-01T00:00:00Z");
        let b = object("b", "k2", &[("a.ns", "a-y.ns")], "2026-01-01T00:00:00Z");
        let one = index(&objects(vec![a.clone(), b.clone()]), now());
        let mut b_again = b.clone();
        b_again.metadata.resource_version = Some("99".into());
        b_again.status = Some(SandboxStatus::default());
        let two = index(&objects(vec![b_again, a.clone()]), now());
        assert_eq!(one.stored.version, two.stored.version);
        let three = index(&objects(vec![a]), now());
        assert_ne!(one.stored.version, three.stored.version);
        assert!(one.stored.version <= VERSION_MASK);
    }

    fn mesh_view(services: &[&str]) -> ClusterView {
        ClusterView {
            services: services
                .iter()
                .map(|name| {
                    (
                        mesh_routes::ServiceKey {
                            namespace: "ns".into(),
                            name: (*name).into(),
                        },
                        mesh_routes::ServiceInfo {
                            ports: [8080].into_iter().collect(),
                        },
                    )
                })
                .collect(),
            ..ClusterView::default()
        }
    }

    const A: &str = "a.ns.svc.cluster.local";
    const A_X: &str = "a-x.ns.svc.cluster.local";
    const A_Y: &str = "a-y.ns.svc.cluster.local";

    /// Header mode: served only once its HTTPRoute is seen as written, so a
    /// marked request never finds the table ahead of the mesh.
    #[test]
    fn a_sandbox_is_served_once_its_routes_are_written() {
        let mut o = object("x", "k", &[(A, A_X)], "2026-01-01T00:00:00Z");
        o.metadata.uid = Some("uid-x".into());
        let all = objects(vec![o]);
        let policy = RoutingPolicy::default();
        let mut view = mesh_view(&["a", "a-x"]);
        let mesh = Some(MeshContext {
            view: &view,
            policy: &policy,
        });
        let pending = index_in(&all, mesh, now());
        assert!(pending.stored.sandboxes.is_empty());
        assert_eq!(pending.verdicts["x"].reason, ReadyReason::RoutesPending);
        assert_eq!(pending.routes.len(), 1);
        let route = &pending.routes[0];
        assert_eq!(route.name, "sandbox-x.a.8080");
        view.routes.insert(
            (route.namespace.clone(), route.name.clone()),
            mesh_routes::ObservedRoute {
                spec_hash: Some(route.spec_hash.clone()),
                uid: Some("r1".into()),
                accepted_at: Some("2026-05-31T23:59:00Z".parse().unwrap()),
                seen_at: Some("2026-05-31T23:59:00Z".parse().unwrap()),
            },
        );
        let mesh = Some(MeshContext {
            view: &view,
            policy: &policy,
        });
        let served = index_in(&all, mesh, now());
        assert_eq!(served.stored.sandboxes.keys().collect::<Vec<_>>(), ["x"]);
        assert_eq!(served.verdicts["x"].reason, ReadyReason::RoutesApplied);
        assert!(served.verdicts["x"]
            .message
            .contains("1 HTTPRoute(s) written"));
        assert_eq!(served.routes, pending.routes);
    }

    /// A sandbox waiting for its fork keeps its pair: a younger sandbox of
    /// the same key and baseline does not take it meanwhile.
    #[test]
    fn a_sandbox_waiting_for_its_fork_keeps_its_pair() {
        let all = objects(vec![
            object("old", "k", &[(A, A_X)], "2026-01-01T00:00:00Z"),
            object("young", "k", &[(A, A_Y)], "2026-01-02T00:00:00Z"),
        ]);
        let policy = RoutingPolicy {
            objects: RouteObjects::None,
            ..RoutingPolicy::default()
        };
        let view = mesh_view(&["a", "a-y"]);
        let mesh = Some(MeshContext {
            view: &view,
            policy: &policy,
        });
        let index = index_in(&all, mesh, now());
        assert!(index.stored.sandboxes.is_empty());
        assert_eq!(
            index.verdicts["old"].reason,
            ReadyReason::ForkServiceMissing
        );
        assert_eq!(
            index.verdicts["old"].message,
            "spec.routes[0].target: Service ns/a-x does not exist"
        );
        assert_eq!(index.verdicts["young"].reason, ReadyReason::Conflict);
        // Authority mode writes nothing.
        assert!(index.routes.is_empty());
        let view = mesh_view(&["a", "a-x", "a-y"]);
        let mesh = Some(MeshContext {
            view: &view,
            policy: &policy,
        });
        let index = index_in(&all, mesh, now());
        assert_eq!(index.stored.sandboxes.keys().collect::<Vec<_>>(), ["old"]);
    }

    #[test]
    fn status_keeps_its_transition_time_while_the_verdict_holds() {
        let mut o = object("a", "k", &[("a.ns", "a-x.ns")], "2026-01-01T00:00:00Z");
        let verdict = Verdict {
            reason: ReadyReason::RoutesApplied,
            message: "1 route(s) served by the RouteService".into(),
            expires_at: None,
        };
        let first = desired_status(&o, &verdict, now());
        o.status = Some(first.clone());
        let later: Timestamp = "2026-06-02T00:00:00Z".parse().unwrap();
        assert_eq!(desired_status(&o, &verdict, later), first);
        assert_eq!(first.routes.as_deref(), Some("a.ns"));
        assert_eq!(first.conditions[0].status, "True");
        let conflict = Verdict {
            reason: ReadyReason::Conflict,
            ..verdict
        };
        let changed = desired_status(&o, &conflict, later);
        assert_eq!(changed.conditions[0].last_transition_time, Time(later));
        assert_eq!(changed.conditions[0].status, "False");
    }
}
