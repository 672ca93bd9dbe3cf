//! The routing objects Istio needs for a Sandbox, decided from the objects
//! alone (pure; the Kubernetes store's watch loop feeds it and writes what
//! it returns, `crate::kube_store`).
//!
//! - **Forks are checked**: a route whose target is not an existing Service
//!   (`<name>.<namespace>.svc.<cluster domain>`), or lacks a port of its
//!   baseline, makes the sandbox `ForkServiceMissing` and unserved: a keyed
//!   request would otherwise be sent to a host no proxy can route.
//! - **Header mode** (`--route-objects httproute`): per served sandbox,
//!   baseline and baseline port, one Gateway API `HTTPRoute` attached to the
//!   baseline Service (GAMMA) that sends requests carrying
//!   `<route header>: <sandbox>` to the fork, owned by the Sandbox. istiod
//!   merges the HTTPRoutes of one Service and sorts header matches before
//!   anything else, so sandboxes compose with each other and with an app
//!   team's own HTTPRoutes. An HTTPRoute attached to a Service takes all of
//!   its traffic (what no rule matches gets 404, seen through istiod), so
//!   ours also routes everything else to the baseline, unless an app team's
//!   own HTTPRoute for that Service does.
//! - **Served once the mesh has the route**: a sandbox is served [`SETTLE`]
//!   after istiod accepted its HTTPRoutes (their `status`), or
//!   [`ACCEPT_WAIT`] after they were written ([`ready_at`]).
//! - **A VirtualService for the same host is not merged** with HTTPRoutes:
//!   istiod keeps one of them for a host and drops the other, silently
//!   (docs/kubernetes.md). So where an app team's VirtualService routes the
//!   baseline, no HTTPRoute is written: if that VirtualService already has a
//!   rule for the sandbox's route header (as `istio-config/sample/` does),
//!   the sandbox is routed by it; if not, the sandbox is `Conflict`, naming
//!   the VirtualService, and unserved. Never an override.
//! - **Authority mode** (`--route-objects none`) needs no routing objects:
//!   only the forks are checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use sandbox_router_crd::ReadyReason;

use crate::model::SandboxSpec;

/// The label every routing object of the RouteService carries (the watch
/// of routing objects selects on it).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "sandbox-router-routeservice";
/// The label naming the Sandbox a routing object is for.
pub const SANDBOX_LABEL: &str = "sandbox-router.dev/sandbox";
/// The annotation holding the hash of what the RouteService wrote: a routing
/// object whose annotation matches is as wanted (the API server adds
/// defaults to the spec, so the spec itself cannot be compared).
pub const SPEC_HASH_ANNOTATION: &str = "sandbox-router.dev/spec-hash";
/// The Gateway API version written.
pub const HTTP_ROUTE_API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// Which routing objects the RouteService writes (`--route-objects`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RouteObjects {
    /// Header mode: an HTTPRoute per sandbox, baseline and port.
    Httproute,
    /// Authority mode (or routes written by hand): none; forks are checked.
    None,
}

/// How the mesh routes a marked request, as the RouteService must know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingPolicy {
    pub objects: RouteObjects,
    /// The filter's `routeHeader`.
    pub route_header: String,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
}

impl Default for RoutingPolicy {
    fn default() -> Self {
        RoutingPolicy {
            objects: RouteObjects::Httproute,
            route_header: "x-sandbox-route".to_owned(),
            cluster_domain: "cluster.local".to_owned(),
        }
    }
}

/// A Kubernetes Service, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The Service a host names, when it is `<name>.<namespace>.svc.<domain>`.
pub fn service_of(host: &str, cluster_domain: &str) -> Option<ServiceKey> {
    let rest = host.strip_suffix(cluster_domain)?.strip_suffix(".svc.")?;
    let (name, namespace) = rest.split_once('.')?;
    if name.is_empty() || namespace.is_empty() || namespace.contains('.') {
        return None;
    }
    Some(ServiceKey {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// What the RouteService needs of a Service: its ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    pub ports: BTreeSet<u16>,
}

/// What the RouteService needs of a VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtualServiceInfo {
    pub namespace: String,
    pub name: String,
    /// `spec.hosts`, as written.
    pub hosts: Vec<String>,
    /// Whether it applies to sidecars: no `spec.gateways`, or `mesh` among them.
    pub mesh: bool,
    /// The values of every exact match on the route header in its HTTP rules.
    pub header_rules: BTreeSet<String>,
}

impl VirtualServiceInfo {
    /// From a VirtualService object (`networking.istio.io`), as JSON.
    pub fn from_object(namespace: &str, name: &str, object: &Value, route_header: &str) -> Self {
        let spec = field(object, "spec");
        let strings = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let gateways = strings(field(spec, "gateways"));
        let mut header_rules = BTreeSet::new();
        for rule in field(spec, "http").as_array().into_iter().flatten() {
            for matched in field(rule, "match").as_array().into_iter().flatten() {
                let Some(headers) = field(matched, "headers").as_object() else {
                    continue;
                };
                for (header, condition) in headers {
                    if header.eq_ignore_ascii_case(route_header) {
                        if let Some(value) = field(condition, "exact").as_str() {
                            header_rules.insert(value.to_owned());
                        }
                    }
                }
            }
        }
        VirtualServiceInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            hosts: strings(field(spec, "hosts")),
            mesh: gateways.is_empty() || gateways.iter().any(|g| g == "mesh"),
            header_rules,
        }
    }

    /// Whether one of its hosts is `fqdn` as a sidecar resolves it: short
    /// names relative to the VirtualService's namespace, `*` and `*.suffix`
    /// wildcards.
    pub fn routes_host(&self, fqdn: &str, cluster_domain: &str) -> bool {
        self.mesh
            && self.hosts.iter().any(|host| {
                if host == "*" {
                    return true;
                }
                if let Some(suffix) = host.strip_prefix('*') {
                    return fqdn.ends_with(suffix);
                }
                let dots = host.matches('.').count();
                let full = match dots {
                    0 => format!("{host}.{}.svc.{cluster_domain}", self.namespace),
                    1 => format!("{host}.svc.{cluster_domain}"),
                    2 if host.ends_with(".svc") => format!("{host}.{cluster_domain}"),
                    _ => host.clone(),
                };
                full == fqdn
            })
    }
}

/// A routing object the RouteService wrote, as the watch last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedRoute {
    /// The [`SPEC_HASH_ANNOTATION`].
    pub spec_hash: Option<String>,
    pub uid: Option<String>,
    /// When the watch first showed that the mesh's controller (istiod)
    /// took this spec: a parent in `status.parents` with `Accepted` and
    /// `ResolvedRefs` true for the current generation.
    pub accepted_at: Option<Timestamp>,
    /// When the watch first showed it with this spec hash.
    pub seen_at: Option<Timestamp>,
}

/// How long a written HTTPRoute that no controller has accepted is waited
/// for before its sandbox is served anyway (a mesh that writes no route
/// status): requests that find no route meanwhile are `route_missing`, and
/// go to baseline.
pub const ACCEPT_WAIT: Duration = Duration::from_secs(10);
/// How long after istiod accepted an HTTPRoute its sandbox is served:
/// istiod writes the status as soon as it has translated the route, and
/// pushes it to the proxies after its debounce (100 ms and more), so a
/// table served at once can reach a sidecar before the route does (seen
/// in one run of `e2e/tests/kube_routes.rs` in three).
pub const SETTLE: Duration = Duration::from_secs(2);

/// Whether an HTTPRoute's `status` says a controller accepted its current
/// generation.
pub fn accepted(object: &Value, generation: Option<i64>) -> bool {
    field(field(object, "status"), "parents")
        .as_array()
        .into_iter()
        .flatten()
        .any(|parent| {
            let conditions = field(parent, "conditions").as_array();
            let is_true = |kind: &str| {
                conditions.into_iter().flatten().any(|c| {
                    field(c, "type") == kind
                        && field(c, "status") == "True"
                        && (generation.is_none()
                            || field(c, "observedGeneration").as_i64() == generation)
                })
            };
            is_true("Accepted") && is_true("ResolvedRefs")
        })
}

/// A routing object, by namespace and name.
pub type ObjectKey = (String, String);

/// What the RouteService sees of the cluster besides Sandboxes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub services: BTreeMap<ServiceKey, ServiceInfo>,
    pub virtual_services: BTreeMap<ObjectKey, VirtualServiceInfo>,
    /// The HTTPRoutes carrying [`MANAGED_BY_LABEL`].
    pub routes: BTreeMap<ObjectKey, ObservedRoute>,
    /// Services that an HTTPRoute of someone else's (an app team's) is
    /// attached to: they route what carries no route header.
    pub foreign_parents: BTreeSet<ServiceKey>,
}

/// `value[key]`, or null: JSON from the API server may lack any field.
fn field<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

/// The Services an HTTPRoute in `namespace` attaches to (GAMMA parentRefs
/// of kind Service; a missing namespace is the route's).
pub fn service_parents(namespace: &str, spec: &Value) -> Vec<ServiceKey> {
    field(spec, "parentRefs")
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            field(p, "kind") == "Service" && field(p, "group").as_str().unwrap_or("").is_empty()
        })
        .filter_map(|p| {
            Some(ServiceKey {
                namespace: field(p, "namespace")
                    .as_str()
                    .unwrap_or(namespace)
                    .to_owned(),
                name: field(p, "name").as_str()?.to_owned(),
            })
        })
        .collect()
}

/// Why a sandbox's routes cannot be served: the condition's reason and a
/// message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: ReadyReason,
    pub message: String,
}

/// How one route reaches its fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteVia {
    /// HTTPRoutes attached to the baseline Service: (baseline port, fork port).
    HttpRoutes {
        baseline: ServiceKey,
        fork: ServiceKey,
        ports: Vec<(u16, u16)>,
        /// Whether they also route everything else to the baseline: an
        /// HTTPRoute attached to a Service takes all its traffic (what no
        /// rule matches gets 404), so unless an app team's own HTTPRoute
        /// routes that traffic, ours must.
        catch_all: bool,
    },
    /// An app team's VirtualService that has a rule for the sandbox.
    VirtualService { namespace: String, name: String },
    /// Nothing to write (authority mode).
    Nothing,
}

/// How each route of sandbox `name` reaches its fork, or why it cannot.
pub fn plan(
    name: &str,
    spec: &SandboxSpec,
    view: &ClusterView,
    policy: &RoutingPolicy,
) -> Result<Vec<RouteVia>, Problem> {
    let domain = &policy.cluster_domain;
    let mut out = Vec::with_capacity(spec.routes.len());
    for (i, route) in spec.routes.iter().enumerate() {
        let missing_fork = |what: String| Problem {
            reason: ReadyReason::ForkServiceMissing,
            message: format!("spec.routes[{i}].target: {what}"),
        };
        let fork = service_of(&route.target, domain).ok_or_else(|| {
            missing_fork(format!(
                "{} is not a Kubernetes Service name (<service>.<namespace>.svc.{domain})",
                route.target
            ))
        })?;
        let fork_info = view
            .services
            .get(&fork)
            .ok_or_else(|| missing_fork(format!("Service {fork} does not exist")))?;
        if policy.objects == RouteObjects::None {
            out.push(RouteVia::Nothing);
            continue;
        }
        // Header mode: an app team's VirtualService for the host first.
        if let Some(vs) = view
            .virtual_services
            .values()
            .find(|vs| vs.routes_host(&route.baseline, domain))
        {
            if vs.header_rules.contains(name) {
                out.push(RouteVia::VirtualService {
                    namespace: vs.namespace.clone(),
                    name: vs.name.clone(),
                });
                continue;
            }
            return Err(Problem {
                reason: ReadyReason::Conflict,
                message: format!(
                    "spec.routes[{i}].baseline: VirtualService {}/{} routes {} and has no rule \
                     for header {}: {name}; istiod keeps one VirtualService or HTTPRoute set per \
                     host, so no HTTPRoute is written (add that rule to the VirtualService, or \
                     delete it)",
                    vs.namespace, vs.name, route.baseline, policy.route_header
                ),
            });
        }
        let baseline = service_of(&route.baseline, domain).ok_or_else(|| Problem {
            reason: ReadyReason::BaselineServiceMissing,
            message: format!(
                "spec.routes[{i}].baseline: {} is not a Kubernetes Service name \
                 (<service>.<namespace>.svc.{domain}): no HTTPRoute can attach to it",
                route.baseline
            ),
        })?;
        let baseline_info = view.services.get(&baseline).ok_or_else(|| Problem {
            reason: ReadyReason::BaselineServiceMissing,
            message: format!("spec.routes[{i}].baseline: Service {baseline} does not exist"),
        })?;
        let mut ports = Vec::with_capacity(baseline_info.ports.len());
        for &port in &baseline_info.ports {
            let fork_port = if fork_info.ports.contains(&port) {
                port
            } else if let (1, Some(&only)) = (fork_info.ports.len(), fork_info.ports.first()) {
                only
            } else {
                return Err(missing_fork(format!(
                    "Service {fork} has no port {port} (a port of {baseline})"
                )));
            };
            ports.push((port, fork_port));
        }
        let catch_all = !view.foreign_parents.contains(&baseline);
        out.push(RouteVia::HttpRoutes {
            baseline,
            fork,
            ports,
            catch_all,
        });
    }
    Ok(out)
}

/// A routing object the RouteService wants to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRoute {
    pub namespace: String,
    pub name: String,
    /// The [`SPEC_HASH_ANNOTATION`] it carries.
    pub spec_hash: String,
    /// The whole object, for a server-side apply.
    pub object: Value,
}

/// The HTTPRoute's name: `sandbox-<sandbox>.<baseline service>.<port>`
/// (unique in the baseline's namespace; at most 8 + 63 + 1 + 63 + 6 bytes).
pub fn http_route_name(sandbox: &str, baseline: &ServiceKey, port: u16) -> String {
    format!("sandbox-{sandbox}.{}.{port}", baseline.name)
}

/// The HTTPRoutes of a served sandbox (`uid`: the Sandbox's, for the owner
/// reference) and its routes' plans.
pub fn http_routes(
    sandbox: &str,
    uid: &str,
    plans: &[RouteVia],
    policy: &RoutingPolicy,
) -> Vec<DesiredRoute> {
    let mut out = Vec::new();
    for via in plans {
        let RouteVia::HttpRoutes {
            baseline,
            fork,
            ports,
            catch_all,
        } = via
        else {
            continue;
        };
        for &(port, fork_port) in ports {
            let mut rules = vec![json!({
                "matches": [{
                    "headers": [{
                        "type": "Exact",
                        "name": policy.route_header,
                        "value": sandbox,
                    }],
                }],
                "backendRefs": [{
                    "group": "",
                    "kind": "Service",
                    "name": fork.name,
                    "namespace": fork.namespace,
                    "port": fork_port,
                }],
            })];
            if *catch_all {
                // Every other request, as the Service routed it before.
                rules.push(json!({
                    "backendRefs": [{
                        "group": "",
                        "kind": "Service",
                        "name": baseline.name,
                        "port": port,
                    }],
                }));
            }
            let spec = json!({
                "parentRefs": [{
                    "group": "",
                    "kind": "Service",
                    "name": baseline.name,
                    "port": port,
                }],
                "rules": rules,
            });
            let spec_hash = hash_of(uid, &spec);
            let name = http_route_name(sandbox, baseline, port);
            let object = json!({
                "apiVersion": HTTP_ROUTE_API_VERSION,
                "kind": "HTTPRoute",
                "metadata": {
                    "name": name,
                    "namespace": baseline.namespace,
                    "labels": {
                        MANAGED_BY_LABEL: MANAGED_BY,
                        SANDBOX_LABEL: sandbox,
                    },
                    "annotations": { SPEC_HASH_ANNOTATION: spec_hash },
                    // Deleting the Sandbox deletes its HTTPRoutes (the
                    // garbage collector), also when no RouteService runs.
                    "ownerReferences": [{
                        "apiVersion": format!("{}/{}", sandbox_router_crd::GROUP, sandbox_router_crd::VERSION),
                        "kind": "Sandbox",
                        "name": sandbox,
                        "uid": uid,
                        "controller": true,
                        "blockOwnerDeletion": false,
                    }],
                },
                "spec": spec,
            });
            out.push(DesiredRoute {
                namespace: baseline.namespace.clone(),
                name,
                spec_hash,
                object,
            });
        }
    }
    out
}

/// The first 16 hex digits of the SHA-256 of the owner and the spec.
fn hash_of(uid: &str, spec: &Value) -> String {
    let mut hash = Sha256::new();
    hash.update(uid.as_bytes());
    hash.update([0]);
    hash.update(spec.to_string().as_bytes());
    let digest = hash.finalize();
    let mut out = String::with_capacity(16);
    for byte in digest.iter().take(8) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// When the sandbox of `desired` may be served: every route in `view` as
/// written, and taken by the mesh ([`SETTLE`] after its controller
/// accepted it, or [`ACCEPT_WAIT`] after it was written, whichever comes
/// first). `None` while one is not written as wanted. Serving a sandbox
/// earlier sends its marked requests to proxies with no route for them.
pub fn ready_at(desired: &[DesiredRoute], view: &ClusterView) -> Option<Timestamp> {
    let span = |d: Duration| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    let mut ready: Option<Timestamp> = None;
    for route in desired {
        let seen = view
            .routes
            .get(&(route.namespace.clone(), route.name.clone()))
            .filter(|seen| seen.spec_hash.as_deref() == Some(route.spec_hash.as_str()))?;
        let waited = seen.seen_at?.checked_add(span(ACCEPT_WAIT)).ok()?;
        let at = seen
            .accepted_at
            .and_then(|at| at.checked_add(span(SETTLE)).ok())
            .map_or(waited, |settled| settled.min(waited));
        ready = Some(ready.map_or(at, |r| r.max(at)));
    }
    // No routes to write (authority mode, or routed by a VirtualService).
    Some(ready.unwrap_or(Timestamp::UNIX_EPOCH))
}

/// How a served sandbox's routes reach their forks, for its status message.
pub fn describe(plans: &[RouteVia]) -> String {
    let mut routes = 0;
    let mut by_vs = Vec::new();
    for via in plans {
        match via {
            RouteVia::HttpRoutes { ports, .. } => routes += ports.len(),
            RouteVia::VirtualService { namespace, name } => {
                by_vs.push(format!("{namespace}/{name}"));
            }
            RouteVia::Nothing => {}
        }
    }
    let mut out = format!("{} route(s) served by the RouteService", plans.len());
    if routes > 0 {
        let _ = write!(out, "; {routes} HTTPRoute(s) written");
    }
    if !by_vs.is_empty() {
        by_vs.dedup();
        let _ = write!(
            out,
            "; routed by the rules of VirtualService {}",
            by_vs.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::model::SandboxRoute;

    fn spec(routes: &[(&str, &str)]) -> SandboxSpec {
        SandboxSpec {
            routing_key: "k".into(),
            routes: routes
                .iter()
                .map(|(b, t)| SandboxRoute {
                    baseline: (*b).into(),
                    target: (*t).into(),
                })
                .collect(),
        }
    }

    fn service(ns: &str, name: &str) -> ServiceKey {
        ServiceKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn view(services: &[(&str, &str, &[u16])]) -> ClusterView {
        ClusterView {
            services: services
                .iter()
                .map(|(ns, name, ports)| {
                    (
                        service(ns, name),
                        ServiceInfo {
                            ports: ports.iter().copied().collect(),
                        },
                    )
                })
                .collect(),
            ..ClusterView::default()
        }
    }

    const SHOP: &str = "shop.demo.svc.cluster.local";
    const SHOP_FORK: &str = "shop-pr-7.demo.svc.cluster.local";

    #[test]
    fn route_status_as_istiod_writes_it() {
        let status = |accepted: &str, generation: i64| {
            json!({"status": {"parents": [{
                "controllerName": "istio.io/gateway-controller",
                "parentRef": {"group": "", "kind": "Service", "name": "shop"},
                "conditions": [
                    {"type": "Accepted", "status": accepted, "observedGeneration": generation},
                    {"type": "ResolvedRefs", "status": "True", "observedGeneration": generation},
                ],
            }]}})
        };
        assert!(accepted(&status("True", 2), Some(2)));
        assert!(
            !accepted(&status("True", 1), Some(2)),
            "an older generation"
        );
        assert!(!accepted(&status("False", 2), Some(2)));
        assert!(!accepted(&json!({"status": {}}), Some(1)));
        assert!(!accepted(&json!({}), None));
    }

    #[test]
    fn service_names() {
        assert_eq!(
            service_of(SHOP, "cluster.local"),
            Some(service("demo", "shop"))
        );
        assert_eq!(
            service_of("shop.demo.svc.example.org", "cluster.local"),
            None
        );
        assert_eq!(
            service_of("shop.demo.svc.cluster.local", "example.org"),
            None
        );
        assert_eq!(service_of("a.b.c.svc.cluster.local", "cluster.local"), None);
        assert_eq!(service_of("api.example.com", "cluster.local"), None);
        assert_eq!(service_of(".demo.svc.cluster.local", "cluster.local"), None);
    }

    #[test]
    fn a_missing_fork_is_named_by_its_field() {
        let policy = RoutingPolicy::default();
        let v = view(&[("demo", "shop", &[8080])]);
        let problem = plan("pr-7", &spec(&[(SHOP, SHOP_FORK)]), &v, &policy).unwrap_err();
        assert_eq!(problem.reason, ReadyReason::ForkServiceMissing);
        assert_eq!(
            problem.message,
            "spec.routes[0].target: Service demo/shop-pr-7 does not exist"
        );
        // Authority mode checks forks too.
        let none = RoutingPolicy {
            objects: RouteObjects::None,
            ..policy.clone()
        };
        let problem = plan("pr-7", &spec(&[(SHOP, "x.example.com")]), &v, &none).unwrap_err();
        assert_eq!(problem.reason, ReadyReason::ForkServiceMissing);
        assert!(problem.message.contains("not a Kubernetes Service name"));
        let v = view(&[("demo", "shop", &[8080]), ("demo", "shop-pr-7", &[80])]);
        assert_eq!(
            plan("pr-7", &spec(&[(SHOP, SHOP_FORK)]), &v, &none).unwrap(),
            [RouteVia::Nothing]
        );
    }

    #[test]
    fn ports_map_to_the_same_port_or_the_forks_only_one() {
        let policy = RoutingPolicy::default();
        let v = view(&[
            ("demo", "shop", &[8080, 9090]),
            ("demo", "shop-pr-7", &[80]),
        ]);
        let plans = plan("pr-7", &spec(&[(SHOP, SHOP_FORK)]), &v, &policy).unwrap();
        assert_eq!(
            plans,
            [RouteVia::HttpRoutes {
                baseline: service("demo", "shop"),
                fork: service("demo", "shop-pr-7"),
                ports: vec![(8080, 80), (9090, 80)],
                catch_all: true,
            }]
        );
        let v = view(&[
            ("demo", "shop", &[8080, 9090]),
            ("demo", "shop-pr-7", &[8080, 81]),
        ]);
        let problem = plan("pr-7", &spec(&[(SHOP, SHOP_FORK)]), &v, &policy).unwrap_err();
        assert_eq!(problem.reason, ReadyReason::ForkServiceMissing);
        assert!(
            problem.message.contains("has no port 9090"),
            "{}",
            problem.message
        );
        let v = view(&[("demo", "shop-pr-7", &[8080])]);
        let problem = plan("pr-7", &spec(&[(SHOP, SHOP_FORK)]), &v, &policy).unwrap_err();
        assert_eq!(problem.reason, ReadyReason::BaselineServiceMissing);
    }

    fn virtual_service(
        hosts: &[&str],
        gateways: &[&str],
        rule_for: Option<&str>,
    ) -> VirtualServiceInfo {
        let mut http = vec![json!({"route": [{"destination": {"host": "shop"}}]})];
        if let Some(sandbox) = rule_for {
            http.insert(
                0,
                json!({"match": [{"headers": {"x-sandbox-route": {"exact": sandbox}}}],
                       "route": [{"destination": {"host": "shop-pr-7"}}]}),
            );
        }
        let object = json!({"spec": {"hosts": hosts, "gateways": gateways, "http": http}});
        VirtualServiceInfo::from_object("demo", "shop", &object, "x-sandbox-route")
    }

    #[test]
    fn virtual_service_hosts_resolve_as_a_sidecar_does() {
        for host in [
            "shop",
            "shop.demo",
            "shop.demo.svc",
            SHOP,
            "*",
            "*.demo.svc.cluster.local",
        ] {
            assert!(
                virtual_service(&[host], &[], None).routes_host(SHOP, "cluster.local"),
                "{host}"
            );
        }
        for host in ["shop.other", "other", "*.other.svc.cluster.local"] {
            assert!(
                !virtual_service(&[host], &[], None).routes_host(SHOP, "cluster.local"),
                "{host}"
            );
        }
        // Bound to a gateway only: not a sidecar's.
        assert!(!virtual_service(&["shop"], &["demo/gw"], None).routes_host(SHOP, "cluster.local"));
        assert!(virtual_service(&["shop"], &["demo/gw", "mesh"], None)
            .routes_host(SHOP, "cluster.local"));
    }

    #[test]
    fn an_app_teams_virtual_service_is_never_overridden() {
        let policy = RoutingPolicy::default();
        let mut v = view(&[("demo", "shop", &[8080]), ("demo", "shop-pr-7", &[8080])]);
        v.virtual_services.insert(
            ("demo".into(), "shop".into()),
            virtual_service(&["shop"], &[], None),
        );
        let problem = plan("pr-7", &spec(&[(SHOP, SHOP_FORK)]), &v, &policy).unwrap_err();
        assert_eq!(problem.reason, ReadyReason::Conflict);
        assert!(
            problem
                .message
                .starts_with("spec.routes[0].baseline: VirtualService demo/shop routes"),
            "{}",
            problem.message
        );
        assert!(
            problem.message.contains("x-sandbox-route: pr-7"),
            "{}",
            problem.message
        );
        // With a rule for the sandbox, it routes it: nothing is written.
        v.virtual_services.insert(
            ("demo".into(), "shop".into()),
            virtual_service(&["shop"], &[], Some("pr-7")),
        );
        let plans = plan("pr-7", &spec(&[(SHOP, SHOP_FORK)]), &v, &policy).unwrap();
        assert_eq!(
            plans,
            [RouteVia::VirtualService {
                namespace: "demo".into(),
                name: "shop".into()
            }]
        );
        assert!(http_routes("pr-7", "uid-1", &plans, &policy).is_empty());
        assert!(describe(&plans).contains("VirtualService demo/shop"));
    }

    /// An app team's own HTTPRoute routes what has no route header: ours
    /// then adds the header rule only, and never competes with theirs.
    #[test]
    fn an_app_teams_http_route_keeps_the_rest_of_the_traffic() {
        let policy = RoutingPolicy::default();
        let mut v = view(&[("demo", "shop", &[8080]), ("demo", "shop-pr-7", &[8080])]);
        let theirs = json!({"parentRefs": [{"group": "", "kind": "Service", "name": "shop", "port": 8080},
                                           {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]});
        v.foreign_parents.extend(service_parents("demo", &theirs));
        assert_eq!(v.foreign_parents.len(), 1);
        let plans = plan("pr-7", &spec(&[(SHOP, SHOP_FORK)]), &v, &policy).unwrap();
        let routes = http_routes("pr-7", "uid-1", &plans, &policy);
        let rules = routes[0].object["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["backendRefs"][0]["name"], "shop-pr-7");
    }

    #[test]
    fn one_http_route_per_baseline_port_owned_by_the_sandbox() {
        let policy = RoutingPolicy::default();
        let v = view(&[("demo", "shop", &[8080]), ("demo", "shop-pr-7", &[8080])]);
        let plans = plan("pr-7", &spec(&[(SHOP, SHOP_FORK)]), &v, &policy).unwrap();
        let routes = http_routes("pr-7", "uid-1", &plans, &policy);
        assert_eq!(routes.len(), 1);
        let route = &routes[0];
        assert_eq!(
            (route.namespace.as_str(), route.name.as_str()),
            ("demo", "sandbox-pr-7.shop.8080")
        );
        let o = &route.object;
        assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(o["metadata"]["ownerReferences"][0]["kind"], "Sandbox");
        assert_eq!(o["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(o["spec"]["parentRefs"][0]["kind"], "Service");
        assert_eq!(o["spec"]["parentRefs"][0]["port"], 8080);
        let rule = &o["spec"]["rules"][0];
        assert_eq!(rule["matches"][0]["headers"][0]["name"], "x-sandbox-route");
        assert_eq!(rule["matches"][0]["headers"][0]["value"], "pr-7");
        assert_eq!(rule["backendRefs"][0]["name"], "shop-pr-7");
        // Everything else to the baseline, as before the route.
        let rest = &o["spec"]["rules"][1];
        assert!(rest.get("matches").is_none());
        assert_eq!(rest["backendRefs"][0]["name"], "shop");
        assert_eq!(rest["backendRefs"][0]["port"], 8080);
        // The hash moves with the owner and the spec, and only then.
        let again = http_routes("pr-7", "uid-1", &plans, &policy);
        assert_eq!(again[0].spec_hash, route.spec_hash);
        let other_owner = http_routes("pr-7", "uid-2", &plans, &policy);
        assert_ne!(other_owner[0].spec_hash, route.spec_hash);
        // Served once written and accepted (and settled), or waited for.
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| now.checked_add(SignedDuration::from_secs(s)).unwrap();
        let mut seen = ClusterView::default();
        assert_eq!(ready_at(&routes, &seen), None);
        let key = ("demo".to_owned(), "sandbox-pr-7.shop.8080".to_owned());
        let observed = ObservedRoute {
            spec_hash: Some(route.spec_hash.clone()),
            uid: Some("r".into()),
            accepted_at: None,
            seen_at: Some(now),
        };
        seen.routes.insert(key.clone(), observed.clone());
        assert_eq!(ready_at(&routes, &seen), Some(at(10)), "never accepted");
        seen.routes.insert(
            key,
            ObservedRoute {
                accepted_at: Some(at(1)),
                ..observed
            },
        );
        assert_eq!(
            ready_at(&routes, &seen),
            Some(at(3)),
            "accepted, then settled"
        );
        assert_eq!(
            ready_at(&other_owner, &seen),
            None,
            "written for another owner"
        );
        assert_eq!(ready_at(&[], &seen), Some(Timestamp::UNIX_EPOCH));
    }
}
