//! The `Sandbox` custom resource (`sandboxes.sandbox-router.dev/v1alpha1`,
//! INTERFACES section 10) as Rust types, and its CRD generated from them.
//!
//! A Sandbox is cluster-scoped: its name is the sandbox's name, as in
//! `PUT /v1/sandboxes/{name}`, and a routing key is a cluster-wide thing (a
//! request crosses namespaces). Its spec is the RouteService's
//! [`SandboxSpec`] plus an optional lifetime (`ttl` or `expiresAt`).
//!
//! The schema enforces what the API server can check on one object: the
//! routing-key charset and length of the core, lower-case DNS names, at
//! least one and at most [`MAX_ROUTES`] routes, each baseline once
//! (`x-kubernetes-list-type: map` keyed by `baseline`), a target that is
//! qualified and differs from its baseline, `ttl` or `expiresAt` but not
//! both, and a DNS-1123 label as name (CEL). The RouteService checks every
//! object it reads again with its own model (the same rules, the same field
//! names) and conflicts between objects, which no schema can see.
//!
//! This crate has no Kubernetes client: it is what both the RouteService and
//! the CRD generator (`routeservice crd`) need, and nothing else.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::{CustomResource, CustomResourceExt as _, KubeSchema};
use serde::{Deserialize, Serialize};

pub use sandbox_router_core::routing_key::MAX_LEN as MAX_ROUTING_KEY_LEN;

/// The API group.
pub const GROUP: &str = "sandbox-router.dev";
/// The served (and stored) version.
pub const VERSION: &str = "v1alpha1";
/// The resource (plural) name, as RBAC rules name it.
pub const RESOURCE: &str = "sandboxes";
/// At most this many routes per sandbox, in the CRD and in the API: the CEL
/// rules' cost is bounded by it, and a sandbox forking more services than
/// this is a mistake rather than a plan.
pub const MAX_ROUTES: usize = 64;
/// Longest DNS name (RFC 1123).
pub const MAX_HOST_LEN: usize = 253;

/// `status.conditions[].type` of the one condition a Sandbox has.
pub const CONDITION_READY: &str = "Ready";

/// Why a Sandbox is (not) ready: `status.conditions[type=Ready].reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyReason {
    /// Its routes are in the RouteService's table (and, in header mode, the
    /// routing objects Istio needs are written).
    RoutesApplied,
    /// Its routing objects (HTTPRoutes) are being written: it is served once
    /// the API server has them.
    RoutesPending,
    /// A fork (target) Service does not exist, or lacks a port of its
    /// baseline.
    ForkServiceMissing,
    /// A baseline Service does not exist (header mode: an HTTPRoute needs
    /// it as its parent).
    BaselineServiceMissing,
    /// Another Sandbox forks the same (routing key, baseline) pair first, or
    /// (header mode) an app team's VirtualService routes the baseline host
    /// and has no rule for this sandbox.
    Conflict,
    /// Its `ttl` or `expiresAt` has passed: it is out of the table and is
    /// being deleted.
    Expired,
    /// The object breaks a rule the schema could not check.
    Invalid,
}

impl ReadyReason {
    /// The `reason` string (CamelCase, as Kubernetes conditions have it).
    pub fn as_str(self) -> &'static str {
        match self {
            ReadyReason::RoutesApplied => "RoutesApplied",
            ReadyReason::RoutesPending => "RoutesPending",
            ReadyReason::ForkServiceMissing => "ForkServiceMissing",
            ReadyReason::BaselineServiceMissing => "BaselineServiceMissing",
            ReadyReason::Conflict => "Conflict",
            ReadyReason::Expired => "Expired",
            ReadyReason::Invalid => "Invalid",
        }
    }

    /// Whether a Sandbox with this reason is ready (its routes are served).
    pub fn is_ready(self) -> bool {
        matches!(self, ReadyReason::RoutesApplied)
    }
}

/// A lower-case RFC 1123 DNS name that is not all digits: what the core's
/// `is_dns_name` accepts, lower case (the API's `baseline`/`target` rule).
pub const HOST_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$";
/// The routing-key charset of the core (RFC 3986 unreserved characters).
pub const ROUTING_KEY_PATTERN: &str = r"^[A-Za-z0-9._~-]+$";
/// A Go duration of whole hours, minutes and seconds (`90s`, `1h30m`).
pub const TTL_PATTERN: &str = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$";

/// One service a sandbox forks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.target != self.baseline").message("target must differ from baseline (a route to itself forks nothing)").field_path(".target"),
    validation = Rule::new("self.target.contains('.')").message("target must be a fully qualified service name (svc.ns..., not a single label)").field_path(".target"),
)]
pub struct SandboxRoute {
    /// FQDN of the baseline Service the sandbox forks
    /// (`catalog.demo.svc.cluster.local`).
    #[schemars(length(min = 1, max = MAX_HOST_LEN), pattern(HOST_PATTERN))]
    #[x_kube(validation = Rule::new("!self.matches('^[0-9.]+$')").message("must be a lower-case DNS name (service FQDN), not an IP address"))]
    pub baseline: String,
    /// FQDN of the fork that replaces it for the sandbox's routing key
    /// (`catalog-pr-42.demo.svc.cluster.local`).
    #[schemars(length(min = 1, max = MAX_HOST_LEN), pattern(HOST_PATTERN))]
    #[x_kube(validation = Rule::new("!self.matches('^[0-9.]+$')").message("must be a lower-case DNS name (service FQDN), not an IP address"))]
    pub target: String,
}

/// A sandbox: requests carrying `routingKey` go to the forks of `routes`.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[kube(
    group = "sandbox-router.dev",
    version = "v1alpha1",
    kind = "Sandbox",
    plural = "sandboxes",
    shortname = "sbx",
    category = "sandbox-router",
    status = "SandboxStatus",
    doc = "A sandbox of sandbox-router: requests whose W3C baggage carries spec.routingKey are routed to the fork (target) of each baseline Service in spec.routes. Cluster-scoped; the name is the sandbox's name.",
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63").message("metadata.name must be a DNS-1123 label (1-63 lower-case letters, digits and inner '-')"),
    printcolumn(name = "Routing Key", type_ = "string", json_path = ".spec.routingKey", description = "The routing key (W3C baggage sd-routing-key) of the sandbox"),
    printcolumn(name = "Routes", type_ = "string", json_path = ".status.routes", description = "The baseline Services it forks"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether its routes are served"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1, description = "Why it is (not) ready"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt", description = "When it expires (ttl or expiresAt)"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.ttl) && has(self.expiresAt))").message("set ttl or expiresAt, not both").field_path(".ttl"))]
pub struct SandboxSpec {
    /// The routing key requests of this sandbox carry
    /// (`baggage: sd-routing-key=<key>`): 1-128 of `[A-Za-z0-9._~-]`.
    #[schemars(length(min = 1, max = MAX_ROUTING_KEY_LEN), pattern(ROUTING_KEY_PATTERN))]
    pub routing_key: String,
    /// The services the sandbox forks, each baseline once.
    #[schemars(length(min = 1, max = MAX_ROUTES))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["baseline".into()]))]
    pub routes: Vec<SandboxRoute>,
    /// How long after its creation the sandbox expires (`30m`, `1h30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), pattern(TTL_PATTERN))]
    pub ttl: Option<String>,
    /// When the sandbox expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: Option<String>,
}

/// What the RouteService last saw of a Sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// `Ready`, with a reason: RoutesApplied, RoutesPending, ForkServiceMissing,
    /// BaselineServiceMissing, Conflict, Expired or Invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the sandbox expires (RFC 3339), from `ttl` or `expiresAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The baselines it forks, comma-separated (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<String>,
}

/// A lifetime that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifetimeError {
    /// The field (`ttl` or `expiresAt`) and what is wrong with it.
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

impl LifetimeError {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        LifetimeError::Invalid {
            field,
            problem: problem.into(),
        }
    }

    /// The field, relative to the spec.
    pub fn field(&self) -> &'static str {
        match self {
            LifetimeError::Invalid { field, .. } => field,
        }
    }

    /// What is wrong.
    pub fn problem(&self) -> &str {
        match self {
            LifetimeError::Invalid { problem, .. } => problem,
        }
    }
}

/// Parses a `ttl`: whole hours, minutes and seconds ([`TTL_PATTERN`]),
/// more than zero.
pub fn parse_ttl(ttl: &str) -> Result<Duration, LifetimeError> {
    let bad = || LifetimeError::new("ttl", "must be a duration of h, m and s, like 30m or 1h30m");
    let mut seconds: u64 = 0;
    let mut number: Option<u64> = None;
    let mut last_unit = 0u8;
    for byte in ttl.bytes() {
        if let Some(digit) = char::from(byte).to_digit(10) {
            let so_far = number.unwrap_or(0);
            number = Some(
                so_far
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(digit)))
                    .ok_or_else(bad)?,
            );
            continue;
        }
        let (rank, unit) = match byte {
            b'h' => (1, 3600),
            b'm' => (2, 60),
            b's' => (3, 1),
            _ => return Err(bad()),
        };
        // h before m before s, each at most once, each after a number.
        let value = number.take().ok_or_else(bad)?;
        if rank <= last_unit {
            return Err(bad());
        }
        last_unit = rank;
        seconds = value
            .checked_mul(unit)
            .and_then(|s| seconds.checked_add(s))
            .ok_or_else(bad)?;
    }
    if number.is_some() || last_unit == 0 {
        return Err(bad());
    }
    if seconds == 0 {
        return Err(LifetimeError::new("ttl", "must be more than 0s"));
    }
    Ok(Duration::from_secs(seconds))
}

impl SandboxSpec {
    /// When a sandbox created at `created` expires, if it does: `ttl` after
    /// its creation, or `expiresAt`.
    pub fn expiry(&self, created: Option<Timestamp>) -> Result<Option<Timestamp>, LifetimeError> {
        match (&self.ttl, &self.expires_at) {
            (Some(_), Some(_)) => Err(LifetimeError::new("ttl", "set ttl or expiresAt, not both")),
            (Some(ttl), None) => {
                let ttl = parse_ttl(ttl)?;
                // An object not yet created (no timestamp) starts now.
                let start = created.unwrap_or_else(Timestamp::now);
                let span = k8s_openapi::jiff::SignedDuration::try_from(ttl)
                    .map_err(|e| LifetimeError::new("ttl", e.to_string()))?;
                start
                    .checked_add(span)
                    .map(Some)
                    .map_err(|e| LifetimeError::new("ttl", e.to_string()))
            }
            (None, Some(at)) => at
                .parse::<Timestamp>()
                .map(Some)
                .map_err(|_| LifetimeError::new("expiresAt", "must be an RFC 3339 time")),
            (None, None) => Ok(None),
        }
    }
}

/// The CRD, as `kubectl apply` takes it.
pub fn crd() -> CustomResourceDefinition {
    Sandbox::crd()
}

/// Why the CRD could not be written as YAML.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the CRD as YAML: {0}")]
pub struct CrdYamlError(#[from] serde_norway::Error);

/// The CRD as the YAML committed in `istio-config/base/sandbox-crd.yaml`.
pub fn crd_yaml() -> Result<String, CrdYamlError> {
    let body = serde_norway::to_string(&crd())?;
    Ok(format!(
        "# Generated by `routeservice crd` from the Rust types in sandbox-crd/ (do not edit:\n\
         # change the types and run `make crd`; a test fails when this file is stale).\n\
         {body}"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("1h30m5s").unwrap(), Duration::from_secs(5405));
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        for bad in [
            "",
            "0s",
            "m",
            "30",
            "5m1h",
            "1h1h",
            "1.5h",
            "-1m",
            "1d",
            "99999999999999999999h",
        ] {
            let err = parse_ttl(bad).unwrap_err();
            assert_eq!(err.field(), "ttl", "{bad:?}");
        }
    }

    #[test]
    fn expiry_from_ttl_or_time() {
        let created: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let spec = |ttl: Option<&str>, at: Option<&str>| SandboxSpec {
            routing_key: "k".into(),
            routes: vec![],
            ttl: ttl.map(Into::into),
            expires_at: at.map(Into::into),
        };
        assert_eq!(
            spec(Some("30m"), None).expiry(Some(created)).unwrap(),
            Some("2026-01-01T00:30:00Z".parse().unwrap())
        );
        assert_eq!(
            spec(None, Some("2026-02-01T10:00:00+01:00"))
                .expiry(Some(created))
                .unwrap(),
            Some("2026-02-01T09:00:00Z".parse().unwrap())
        );
        assert_eq!(spec(None, None).expiry(Some(created)).unwrap(), None);
        assert_eq!(
            spec(Some("1m"), Some("2026-02-01T10:00:00Z"))
                .expiry(None)
                .unwrap_err()
                .field(),
            "ttl"
        );
        assert_eq!(
            spec(None, Some("tomorrow"))
                .expiry(None)
                .unwrap_err()
                .field(),
            "expiresAt"
        );
    }

    /// The patterns say what the core says.
    #[test]
    fn the_schema_carries_the_rules() {
        let crd = serde_json::to_value(crd()).unwrap();
        let version = &crd["spec"]["versions"][0];
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert_eq!(version["name"], VERSION);
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["routingKey"]["maxLength"], 128);
        assert_eq!(spec["properties"]["routes"]["maxItems"], MAX_ROUTES);
        assert_eq!(
            spec["properties"]["routes"]["x-kubernetes-list-type"],
            "map"
        );
        assert_eq!(
            spec["properties"]["routes"]["x-kubernetes-list-map-keys"][0],
            "baseline"
        );
        assert!(version["subresources"]["status"].is_object());
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            ["Routing Key", "Routes", "Ready", "Reason", "Age", "Expires"]
        );
    }

    /// The committed CRD is what the types generate: run `make crd` when
    /// this fails.
    #[test]
    fn the_committed_crd_is_generated_from_these_types() {
        let committed = include_str!("../../istio-config/base/sandbox-crd.yaml");
        assert!(
            committed == crd_yaml().unwrap(),
            "istio-config/base/sandbox-crd.yaml is stale: run `make crd` and commit it"
        );
    }

    #[test]
    fn the_yaml_says_it_is_generated() {
        let yaml = crd_yaml().unwrap();
        assert!(yaml.starts_with("# Generated by `routeservice crd`"));
        assert!(yaml.contains("name: sandboxes.sandbox-router.dev"));
    }
}
