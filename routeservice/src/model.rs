//! What the RouteService stores and how its input is checked.
//!
//! A sandbox is a name (a DNS-1123 label), one routing key, and the services
//! it forks: `baseline` FQDN -> `target` FQDN. The flat [`Route`] list the
//! filter reads is derived from the sandboxes; it is never stored on its own.
//!
//! Validation reuses the core's rules (routing-key charset, DNS names) so the
//! RouteService cannot accept a route the filter would refuse.

use serde::{Deserialize, Serialize};

use sandbox_router_core::destination::is_dns1123_label;
use sandbox_router_core::route_table::Route;
use sandbox_router_core::routing_key;

use crate::error::FieldError;

/// At most this many routes per sandbox (the Sandbox CRD has the same limit).
pub use sandbox_router_crd::MAX_ROUTES;

/// One service a sandbox forks, as sent in `PUT /v1/sandboxes/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxRoute {
    /// FQDN of the baseline service the sandbox forks.
    pub baseline: String,
    /// FQDN of the fork that replaces it for the sandbox's routing key.
    pub target: String,
}

/// The body of `PUT /v1/sandboxes/{name}`, and one entry of a seed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxSpec {
    pub routing_key: String,
    pub routes: Vec<SandboxRoute>,
}

/// A sandbox as stored: its spec and the table version that wrote it.
/// (Flat JSON; serde cannot deny unknown fields beside `flatten`, and this
/// is our own storage format, not input.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSandbox {
    #[serde(flatten)]
    pub spec: SandboxSpec,
    /// The table version at which this content was written.
    pub version: u64,
}

/// A sandbox as the API shows it (`GET /v1/sandboxes/{name}`, the answer to a PUT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sandbox {
    pub name: String,
    pub routing_key: String,
    pub routes: Vec<SandboxRoute>,
    /// The table version at which this content was written.
    pub version: u64,
}

impl Sandbox {
    pub fn new(name: &str, stored: &StoredSandbox) -> Self {
        Sandbox {
            name: name.to_owned(),
            routing_key: stored.spec.routing_key.clone(),
            routes: stored.spec.routes.clone(),
            version: stored.version,
        }
    }
}

/// `GET /v1/sandboxes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxList {
    pub version: u64,
    pub sandboxes: Vec<Sandbox>,
}

/// `GET /v1/routes`: the table the filter decides from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteList {
    pub version: u64,
    pub routes: Vec<Route>,
}

/// Checks a sandbox name (the `{name}` of the URL).
pub fn validate_name(name: &str) -> Result<(), FieldError> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(FieldError::new(
            "name",
            "must be a DNS-1123 label (1-63 lower-case letters, digits and inner '-')",
        ))
    }
}

/// Checks a routing key given on its own (the `routingKey` query parameter).
pub fn validate_routing_key(key: &str) -> Result<(), FieldError> {
    routing_key::validate(key)
        .map(|_| ())
        .map_err(|e| FieldError::new("routingKey", e.to_string()))
}

impl SandboxSpec {
    /// Checks everything that does not depend on other sandboxes: the key,
    /// each host, at least one route, no baseline twice. `name` must already
    /// be valid. Field names in errors are relative to the spec
    /// (`routes[1].baseline`).
    pub fn validate(&self, name: &str) -> Result<(), FieldError> {
        validate_routing_key(&self.routing_key)?;
        if self.routes.is_empty() {
            return Err(FieldError::new(
                "routes",
                "must list at least one route (delete the sandbox to fork nothing)",
            ));
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(FieldError::new(
                "routes",
                format!("must list at most {MAX_ROUTES} routes"),
            ));
        }
        for (index, route) in self.routes.iter().enumerate() {
            self.route(name, route).validate().map_err(|invalid| {
                FieldError::new(
                    format!("routes[{index}].{}", invalid.field),
                    invalid.problem,
                )
            })?;
            let earlier = self
                .routes
                .iter()
                .take(index)
                .position(|other| other.baseline == route.baseline);
            if let Some(first) = earlier {
                return Err(FieldError::new(
                    format!("routes[{index}].baseline"),
                    format!(
                        "{} is already forked by routes[{first}] of this sandbox",
                        route.baseline
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The wire [`Route`] of one of this sandbox's routes.
    pub fn route(&self, name: &str, route: &SandboxRoute) -> Route {
        Route {
            routing_key: self.routing_key.clone(),
            sandbox: name.to_owned(),
            baseline: route.baseline.clone(),
            target: route.target.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(key: &str, routes: &[(&str, &str)]) -> SandboxSpec {
        SandboxSpec {
            routing_key: key.into(),
            routes: routes
                .iter()
                .map(|(b, t)| SandboxRoute {
                    baseline: (*b).into(),
                    target: (*t).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_good_spec_passes() {
        spec(
            "pr-42",
            &[("a.ns.svc.cluster.local", "a-pr-42.ns.svc.cluster.local")],
        )
        .validate("pr-42")
        .unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (spec("bad key", &[("a.b", "c.d")]), "routingKey"),
            (spec("", &[("a.b", "c.d")]), "routingKey"),
            (spec("k", &[]), "routes"),
            (spec("k", &vec![("a.b", "c.d"); MAX_ROUTES + 1]), "routes"),
            (
                spec("k", &[("a.b", "c.d"), ("A.b", "c.d")]),
                "routes[1].baseline",
            ),
            (spec("k", &[("a.b", "c d")]), "routes[0].target"),
            (spec("k", &[("", "c.d")]), "routes[0].baseline"),
            (spec("k", &[("a.b", "a.b")]), "routes[0].target"),
            (spec("k", &[("a.b", "evil")]), "routes[0].target"),
            (
                spec("k", &[("a.b", "c.d"), ("a.b", "e.f")]),
                "routes[1].baseline",
            ),
        ];
        for (spec, field) in cases {
            let err = spec.validate("s").unwrap_err();
            assert_eq!(err.field, field, "{spec:?}: {err}");
        }
    }

    #[test]
    fn names_are_dns_labels() {
        validate_name("pr-42").unwrap();
        for bad in ["", "PR-42", "-a", "a.b", "a_b", &"a".repeat(64)] {
            assert_eq!(validate_name(bad).unwrap_err().field, "name", "{bad:?}");
        }
    }

    #[test]
    fn stored_sandbox_round_trips_flat() {
        let stored = StoredSandbox {
            spec: spec("k", &[("a.b", "c.d")]),
            version: 3,
        };
        let json = serde_json::to_string(&stored).unwrap();
        assert_eq!(
            json,
            r#"{"routingKey":"k","routes":[{"baseline":"a.b","target":"c.d"}],"version":3}"#
        );
        assert_eq!(
            serde_json::from_str::<StoredSandbox>(&json).unwrap(),
            stored
        );
    }
}
