//! The Kubernetes side of [`crate::mesh_routes`]: the watches of what a
//! sandbox's routing depends on (Services, VirtualServices, and the
//! HTTPRoutes the RouteService wrote), mirrored into a [`ClusterView`], and
//! the writes that make the cluster's HTTPRoutes what the index wants.
//!
//! Every replica runs the same loop on the same objects: it computes the
//! same HTTPRoutes and writes them with a server-side apply under one field
//! manager, so a second replica's write of the same object changes nothing
//! (no new resourceVersion, no push from istiod). Deletes carry the uid of
//! the object seen, so a replica never deletes a newer object of the same
//! name. Owner references to the Sandbox let the garbage collector delete
//! them when no RouteService runs.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    Preconditions,
};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use kube::{Client, ResourceExt as _};

use crate::kube_store::FIELD_MANAGER;
use crate::mesh_routes::{
    self, ClusterView, DesiredRoute, ObjectKey, ObservedRoute, RouteObjects, RoutingPolicy,
    ServiceInfo, ServiceKey, VirtualServiceInfo, MANAGED_BY, MANAGED_BY_LABEL,
    SPEC_HASH_ANNOTATION,
};

/// How long a write (or delete) of a routing object is not repeated while
/// the watch has not shown its result.
const WRITE_RETRY: Duration = Duration::from_secs(10);

/// `gateway.networking.k8s.io/v1` `HTTPRoute`.
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// `networking.istio.io/v1` `VirtualService`.
pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

/// One event of one of the view's watches.
// Events are moved once, one at a time, from the stream to the cache:
// boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum ViewEvent {
    Service(watcher::Result<Event<Service>>),
    VirtualService(watcher::Result<Event<DynamicObject>>),
    Route(watcher::Result<Event<DynamicObject>>),
}

/// The watches the view needs under `policy`: Services always (forks are
/// checked in both modes); VirtualServices and the RouteService's own
/// HTTPRoutes in header mode.
pub fn view_streams(client: &Client, policy: &RoutingPolicy) -> Vec<BoxStream<'static, ViewEvent>> {
    let config = watcher::Config::default();
    let services: Api<Service> = Api::all(client.clone());
    let mut streams = vec![watcher::watcher(services, config.clone())
        .default_backoff()
        .map(ViewEvent::Service)
        .boxed()];
    if policy.objects == RouteObjects::Httproute {
        let virtual_services: Api<DynamicObject> =
            Api::all_with(client.clone(), &virtual_service_resource());
        streams.push(
            watcher::watcher(virtual_services, config.clone())
                .default_backoff()
                .map(ViewEvent::VirtualService)
                .boxed(),
        );
        // All of them: an app team's HTTPRoute attached to a baseline
        // changes what ours must route (see `RouteVia::HttpRoutes`).
        let routes: Api<DynamicObject> = Api::all_with(client.clone(), &http_route_resource());
        streams.push(
            watcher::watcher(routes, config)
                .default_backoff()
                .map(ViewEvent::Route)
                .boxed(),
        );
    }
    streams
}

/// A map kept by one watch: its objects, the list being rebuilt, and
/// whether a first list is in.
#[derive(Debug)]
struct Mirror<V> {
    building: Option<BTreeMap<ObjectKey, V>>,
    synced: bool,
}

impl<V> Default for Mirror<V> {
    fn default() -> Self {
        Mirror {
            building: None,
            synced: false,
        }
    }
}

impl<V> Mirror<V> {
    /// Applies `event` to `map`; whether `map` changed. `value` is told
    /// whether the object comes from a (re)list rather than a change.
    fn apply<O: kube::Resource>(
        &mut self,
        map: &mut BTreeMap<ObjectKey, V>,
        event: Event<O>,
        value: impl Fn(&O, bool) -> V,
    ) -> bool {
        let key = |o: &O| {
            (
                o.meta().namespace.clone().unwrap_or_default(),
                o.meta().name.clone().unwrap_or_default(),
            )
        };
        match event {
            Event::Init => {
                self.building = Some(BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                if let Some(building) = self.building.as_mut() {
                    building.insert(key(&object), value(&object, true));
                }
                false
            }
            Event::InitDone => {
                *map = self.building.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Event::Apply(object) => {
                map.insert(key(&object), value(&object, false));
                true
            }
            Event::Delete(object) => {
                map.remove(&key(&object));
                true
            }
        }
    }
}

/// The [`ClusterView`], kept by the view's watches.
#[derive(Debug, Default)]
pub struct ViewCache {
    pub view: ClusterView,
    /// Services by (namespace, name), as the mirror keeps them.
    services: BTreeMap<ObjectKey, ServiceInfo>,
    service_mirror: Mirror<ServiceInfo>,
    vs_mirror: Mirror<VirtualServiceInfo>,
    /// Every HTTPRoute: whether it is the RouteService's, as observed, and
    /// the Services it attaches to.
    all_routes: BTreeMap<ObjectKey, (bool, ObservedRoute, Vec<ServiceKey>)>,
    route_mirror: Mirror<(bool, ObservedRoute, Vec<ServiceKey>)>,
    /// Whether the view waits for VirtualServices and HTTPRoutes.
    header_mode: bool,
    /// What was said about a missing CRD, once.
    told_missing: [bool; 2],
}

impl ViewCache {
    pub fn new(policy: &RoutingPolicy) -> Self {
        ViewCache {
            header_mode: policy.objects == RouteObjects::Httproute,
            ..ViewCache::default()
        }
    }

    /// Whether every watch has its first list in.
    pub fn synced(&self) -> bool {
        self.service_mirror.synced
            && (!self.header_mode || (self.vs_mirror.synced && self.route_mirror.synced))
    }

    /// Applies one event; whether the view changed.
    pub fn apply(&mut self, event: ViewEvent, route_header: &str) -> bool {
        match event {
            ViewEvent::Service(Ok(event)) => {
                let changed = self
                    .service_mirror
                    .apply(&mut self.services, event, |s, _| ServiceInfo {
                        ports: s
                            .spec
                            .as_ref()
                            .and_then(|spec| spec.ports.as_ref())
                            .into_iter()
                            .flatten()
                            .filter_map(|p| u16::try_from(p.port).ok())
                            .collect(),
                    });
                if changed {
                    self.view.services = self
                        .services
                        .iter()
                        .map(|((namespace, name), info)| {
                            (
                                ServiceKey {
                                    namespace: namespace.clone(),
                                    name: name.clone(),
                                },
                                info.clone(),
                            )
                        })
                        .collect();
                }
                changed
            }
            ViewEvent::VirtualService(Ok(event)) => self.vs_mirror.apply(
                &mut self.view.virtual_services,
                event,
                |o: &DynamicObject, _| {
                    VirtualServiceInfo::from_object(
                        &o.namespace().unwrap_or_default(),
                        &o.name_any(),
                        &o.data,
                        route_header,
                    )
                },
            ),
            ViewEvent::Route(Ok(event)) => {
                let seen_before = self.all_routes.clone();
                let changed = self.route_mirror.apply(
                    &mut self.all_routes,
                    event,
                    |o: &DynamicObject, listed| {
                        let managed = o.labels().get(MANAGED_BY_LABEL).map(String::as_str)
                            == Some(MANAGED_BY);
                        let spec_hash = o.annotations().get(SPEC_HASH_ANNOTATION).cloned();
                        // When this spec was first seen, and first seen
                        // accepted: kept across updates of the same spec.
                        // What a (re)list finds was there before this
                        // replica looked: settled long ago (a restarted
                        // replica serves at once what the others serve).
                        let before = seen_before
                            .get(&(o.namespace().unwrap_or_default(), o.name_any()))
                            .map(|(_, before, _)| before)
                            .filter(|before| before.spec_hash == spec_hash);
                        let now = if listed {
                            Timestamp::UNIX_EPOCH
                        } else {
                            Timestamp::now()
                        };
                        let accepted = mesh_routes::accepted(&o.data, o.metadata.generation);
                        let observed = ObservedRoute {
                            spec_hash,
                            uid: o.uid(),
                            accepted_at: accepted
                                .then(|| before.and_then(|b| b.accepted_at).unwrap_or(now)),
                            seen_at: Some(before.and_then(|b| b.seen_at).unwrap_or(now)),
                        };
                        let parents = mesh_routes::service_parents(
                            &o.namespace().unwrap_or_default(),
                            o.data.get("spec").unwrap_or(&serde_json::Value::Null),
                        );
                        (managed, observed, parents)
                    },
                );
                if changed {
                    self.view.routes = self
                        .all_routes
                        .iter()
                        .filter(|(_, (managed, _, _))| *managed)
                        .map(|(key, (_, observed, _))| (key.clone(), observed.clone()))
                        .collect();
                    self.view.foreign_parents = self
                        .all_routes
                        .values()
                        .filter(|(managed, _, _)| !*managed)
                        .flat_map(|(_, _, parents)| parents.iter().cloned())
                        .collect();
                }
                changed
            }
            ViewEvent::Service(Err(e)) => {
                tracing::warn!(error = %e, "Service watch failed; retrying");
                false
            }
            ViewEvent::VirtualService(Err(e)) => {
                self.missing_crd(0, &e, "VirtualService", "networking.istio.io");
                false
            }
            ViewEvent::Route(Err(e)) => {
                self.missing_crd(1, &e, "HTTPRoute", "gateway.networking.k8s.io");
                false
            }
        }
    }

    /// A watch that failed. A resource the API server does not know (its
    /// CRD is not installed) holds nothing: the view is synced without it
    /// (said once); any other failure is retried with backoff.
    fn missing_crd(&mut self, which: usize, error: &watcher::Error, kind: &str, group: &str) {
        let not_found = matches!(
            error,
            watcher::Error::InitialListFailed(kube::Error::Api(status)) if status.is_not_found()
        );
        if !not_found {
            tracing::warn!(error = %error, kind, "watch failed; retrying");
            return;
        }
        let told = self.told_missing.get_mut(which);
        if told.as_deref() == Some(&false) {
            tracing::warn!(
                kind,
                group,
                "the API server does not serve this kind (CRD not installed): taken as none"
            );
        }
        if let Some(told) = told {
            *told = true;
        }
        let mirror_synced = match which {
            0 => &mut self.vs_mirror.synced,
            _ => &mut self.route_mirror.synced,
        };
        *mirror_synced = true;
    }
}

/// Writes HTTPRoutes so that the RouteService's are exactly the wanted ones.
pub struct RouteWriter {
    client: Client,
    resource: ApiResource,
    /// (namespace, name) -> what was last asked (the spec hash, or `None`
    /// for a delete) and when.
    asked: HashMap<ObjectKey, (Option<String>, Instant)>,
}

impl RouteWriter {
    pub fn new(client: Client) -> Self {
        RouteWriter {
            client,
            resource: http_route_resource(),
            asked: HashMap::new(),
        }
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &self.resource)
    }

    /// Starts the writes that take the HTTPRoutes of `view` to `desired`:
    /// applies what is missing or differs, deletes what is not wanted.
    pub fn reconcile(&mut self, desired: &[DesiredRoute], view: &ClusterView) {
        let wanted: BTreeMap<ObjectKey, &DesiredRoute> = desired
            .iter()
            .map(|d| ((d.namespace.clone(), d.name.clone()), d))
            .collect();
        self.asked.retain(|key, (hash, at)| {
            // Done (the watch shows it) or old enough to ask again.
            let done = match hash {
                Some(hash) => view
                    .routes
                    .get(key)
                    .is_some_and(|r| r.spec_hash.as_deref() == Some(hash.as_str())),
                None => !view.routes.contains_key(key),
            };
            !done && at.elapsed() < WRITE_RETRY
        });
        for (key, route) in &wanted {
            let as_written = view
                .routes
                .get(key)
                .is_some_and(|r| r.spec_hash.as_deref() == Some(route.spec_hash.as_str()));
            if as_written {
                continue;
            }
            let ask = Some(route.spec_hash.clone());
            if self.asked.get(key).is_some_and(|(asked, _)| *asked == ask) {
                continue;
            }
            self.asked.insert(key.clone(), (ask, Instant::now()));
            let api = self.api(&route.namespace);
            let (name, object) = (route.name.clone(), route.object.clone());
            tokio::spawn(async move {
                let params = PatchParams::apply(FIELD_MANAGER).force();
                match api.patch(&name, &params, &Patch::Apply(&object)).await {
                    Ok(_) => tracing::info!(httproute = %name, "HTTPRoute written"),
                    Err(e) => {
                        tracing::warn!(httproute = %name, error = %e, "cannot write HTTPRoute")
                    }
                }
            });
        }
        for (key, seen) in &view.routes {
            if wanted.contains_key(key) {
                continue;
            }
            if self
                .asked
                .get(key)
                .is_some_and(|(asked, _)| asked.is_none())
            {
                continue;
            }
            self.asked.insert(key.clone(), (None, Instant::now()));
            let api = self.api(&key.0);
            let name = key.1.clone();
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: seen.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            tokio::spawn(async move {
                match api.delete(&name, &params).await {
                    Ok(_) => tracing::info!(httproute = %name, "HTTPRoute deleted"),
                    // Another replica (or the garbage collector) was first.
                    Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
                    Err(e) => {
                        tracing::warn!(httproute = %name, error = %e, "cannot delete HTTPRoute");
                    }
                }
            });
        }
    }
}
