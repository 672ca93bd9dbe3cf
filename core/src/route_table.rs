//! Which routing key forks which service: the table the filter decides from.
//!
//! A [`Route`] is the RouteService's wire shape (INTERFACES section 5) and the
//! shape of the static `routes` list in the plugin configuration. A
//! [`RouteTable`] is a validated, indexed set of them.

use serde::{Deserialize, Serialize};

use crate::destination::{is_dns1123_label, is_dns_name};
use crate::random_state::HashMap;
use crate::routing_key;

/// One forked service of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    pub routing_key: String,
    pub sandbox: String,
    /// FQDN of the baseline service this sandbox forks.
    pub baseline: String,
    /// FQDN of the fork that replaces it for this routing key.
    pub target: String,
}

/// A route that is wrong, with the field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidRoute {
    /// Field name relative to the route, e.g. `sandbox`.
    pub field: &'static str,
    pub problem: String,
}

impl Route {
    /// Checks every field before it can reach a header or a host name, and
    /// that the target is a qualified name other than the baseline.
    pub fn validate(&self) -> Result<(), InvalidRoute> {
        routing_key::validate(&self.routing_key).map_err(|e| InvalidRoute {
            field: "routingKey",
            problem: e.to_string(),
        })?;
        if !is_dns1123_label(&self.sandbox) {
            return Err(InvalidRoute {
                field: "sandbox",
                problem: "must be a DNS-1123 label (lower-case letters, digits, '-', at most 63)"
                    .into(),
            });
        }
        for (field, host) in [("baseline", &self.baseline), ("target", &self.target)] {
            if !is_dns_name(host) || host.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(InvalidRoute {
                    field,
                    problem: "must be a lower-case DNS name (service FQDN)".into(),
                });
            }
        }
        // A single label is resolved against the search domains of whoever
        // resolves it (the caller's namespace first), so `evil` names a
        // different service in every namespace: a fork must be named whole.
        if !self.target.contains('.') {
            return Err(InvalidRoute {
                field: "target",
                problem: "must be a fully qualified service name (svc.ns..., not a single label)"
                    .into(),
            });
        }
        // A fork of a service onto itself forks nothing: the "routed"
        // requests would reach baseline while counted as routed.
        if self.target == self.baseline {
            return Err(InvalidRoute {
                field: "target",
                problem: "must differ from baseline (a route to itself forks nothing)".into(),
            });
        }
        Ok(())
    }
}

/// Where a routed request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxTarget {
    pub sandbox: String,
    pub target: String,
}

/// Routes indexed by routing key, then by baseline FQDN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    by_key: HashMap<String, Vec<(String, SandboxTarget)>>,
    len: usize,
}

/// A route of a list that is wrong, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{index}].{source}")]
pub struct InvalidRouteAt {
    pub index: usize,
    #[source]
    pub source: InvalidRoute,
}

impl RouteTable {
    /// Builds a table from routes, refusing the whole list if any route is
    /// invalid. A later route for the same key and baseline replaces an
    /// earlier one.
    pub fn new(routes: &[Route]) -> Result<Self, InvalidRouteAt> {
        let mut table = RouteTable::default();
        for (index, route) in routes.iter().enumerate() {
            route
                .validate()
                .map_err(|source| InvalidRouteAt { index, source })?;
            table.insert(route);
        }
        Ok(table)
    }

    /// Adds or replaces the route of `route`'s (key, baseline). `route`
    /// must be valid ([`Route::validate`]): the table trusts what it holds.
    pub(crate) fn insert(&mut self, route: &Route) {
        let forks = self.by_key.entry(route.routing_key.clone()).or_default();
        let target = SandboxTarget {
            sandbox: route.sandbox.clone(),
            target: route.target.clone(),
        };
        match forks
            .iter_mut()
            .find(|(baseline, _)| *baseline == route.baseline)
        {
            Some(existing) => existing.1 = target,
            None => {
                forks.push((route.baseline.clone(), target));
                self.len += 1;
            }
        }
    }

    /// Removes the route of (`routing_key`, `baseline`), if there is one; a
    /// key left with no route is forgotten (the table no longer knows it).
    pub fn remove(&mut self, routing_key: &str, baseline: &str) -> bool {
        let Some(forks) = self.by_key.get_mut(routing_key) else {
            return false;
        };
        let Some(at) = forks.iter().position(|(b, _)| b == baseline) else {
            return false;
        };
        forks.swap_remove(at);
        if forks.is_empty() {
            self.by_key.remove(routing_key);
        }
        self.len -= 1;
        true
    }

    /// Every route, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = Route> + '_ {
        self.by_key.iter().flat_map(|(key, forks)| {
            forks.iter().map(move |(baseline, t)| Route {
                routing_key: key.clone(),
                sandbox: t.sandbox.clone(),
                baseline: baseline.clone(),
                target: t.target.clone(),
            })
        })
    }

    /// Every route, sorted by key then baseline: equal tables give equal lists.
    pub fn sorted_routes(&self) -> Vec<Route> {
        let mut routes: Vec<Route> = self.routes().collect();
        routes.sort_by(|a, b| (&a.routing_key, &a.baseline).cmp(&(&b.routing_key, &b.baseline)));
        routes
    }

    /// The table as a `GET /v1/routes` body at `version`, in no particular
    /// route order. Every field was validated to characters JSON needs no
    /// escape for (`[A-Za-z0-9._~-]`), so this writes them as they are.
    pub fn write_json(&self, version: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"version\":");
        out.extend_from_slice(version.to_string().as_bytes());
        out.extend_from_slice(b",\"routes\":[");
        let mut first = true;
        for (key, forks) in &self.by_key {
            for (baseline, t) in forks {
                if !first {
                    out.push(b',');
                }
                first = false;
                for (name, value) in [
                    ("{\"routingKey\":\"", key.as_str()),
                    ("\",\"sandbox\":\"", t.sandbox.as_str()),
                    ("\",\"baseline\":\"", baseline.as_str()),
                    ("\",\"target\":\"", t.target.as_str()),
                ] {
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(value.as_bytes());
                }
                out.extend_from_slice(b"\"}");
            }
        }
        out.extend_from_slice(b"]}");
    }

    /// Where `routing_key` sends a request bound for `destination`, if a
    /// sandbox forks it.
    pub fn lookup(&self, routing_key: &str, destination: &str) -> Option<&SandboxTarget> {
        self.by_key
            .get(routing_key)?
            .iter()
            .find(|(baseline, _)| baseline == destination)
            .map(|(_, target)| target)
    }

    /// Whether the table knows this routing key at all.
    pub fn knows_key(&self, routing_key: &str) -> bool {
        self.by_key.contains_key(routing_key)
    }

    /// The routing keys this table routes.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.by_key.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn route(key: &str, sandbox: &str, baseline: &str, target: &str) -> Route {
        Route {
            routing_key: key.into(),
            sandbox: sandbox.into(),
            baseline: baseline.into(),
            target: target.into(),
        }
    }

    #[test]
    fn lookup_by_key_and_destination() {
        let table = RouteTable::new(&[
            route(
                "pr-42",
                "pr-42",
                "catalog.demo.svc.cluster.local",
                "catalog-pr-42.demo.svc.cluster.local",
            ),
            route(
                "pr-7",
                "pr-7",
                "reviews.demo.svc.cluster.local",
                "reviews-pr-7.demo.svc.cluster.local",
            ),
        ])
        .unwrap();
        assert_eq!(table.len(), 2);
        let hit = table
            .lookup("pr-42", "catalog.demo.svc.cluster.local")
            .unwrap();
        assert_eq!(hit.sandbox, "pr-42");
        assert_eq!(hit.target, "catalog-pr-42.demo.svc.cluster.local");
        assert!(table
            .lookup("pr-42", "reviews.demo.svc.cluster.local")
            .is_none());
        assert!(table
            .lookup("pr-99", "catalog.demo.svc.cluster.local")
            .is_none());
        assert!(table.knows_key("pr-7"));
    }

    #[test]
    fn remove_forgets_a_key_with_no_route_left() {
        let mut table = RouteTable::new(&[
            route("k", "a", "svc.ns", "svc-a.ns"),
            route("k", "a", "other.ns", "other-a.ns"),
        ])
        .unwrap();
        assert!(!table.remove("k", "nope.ns"));
        assert!(!table.remove("j", "svc.ns"));
        assert!(table.remove("k", "svc.ns"));
        assert!(table.knows_key("k"));
        assert_eq!(table.len(), 1);
        assert!(table.remove("k", "other.ns"));
        assert!(!table.knows_key("k"));
        assert!(table.is_empty());
    }

    #[test]
    fn write_json_is_a_routes_body_of_the_same_table() {
        let table = RouteTable::new(&[
            route("pr-42", "pr-42", "a.ns.svc", "a-pr-42.ns.svc"),
            route("K~_.x", "s", "b.ns", "b-s.ns"),
            route("pr-42", "pr-42", "b.ns", "b-pr-42.ns"),
        ])
        .unwrap();
        let mut body = Vec::new();
        table.write_json(7, &mut body);
        let answer = crate::routes_api::parse_routes(&body).unwrap();
        assert_eq!(answer.version, 7);
        assert_eq!(answer.table.sorted_routes(), table.sorted_routes());
        let mut empty = Vec::new();
        RouteTable::default().write_json(0, &mut empty);
        assert_eq!(empty, br#"{"version":0,"routes":[]}"#);
    }

    #[test]
    fn later_route_for_same_key_and_baseline_replaces() {
        let table = RouteTable::new(&[
            route("k", "a", "svc.ns", "svc-a.ns"),
            route("k", "b", "svc.ns", "svc-b.ns"),
        ])
        .unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(table.lookup("k", "svc.ns").unwrap().sandbox, "b");
    }

    #[test]
    fn invalid_routes_name_the_field_and_index() {
        let good = route("k", "s", "a.b", "c.d");
        let cases = [
            (route("bad key", "s", "a.b", "c.d"), "[1].routingKey: "),
            (route("k", "Bad_Name", "a.b", "c.d"), "[1].sandbox: "),
            (route("k", "s", "a b", "c.d"), "[1].baseline: "),
            (route("k", "s", "a.b", "C.d"), "[1].target: "),
            (route("k", "s", "a.b", "evil"), "[1].target: "),
            (route("k", "s", "a.b", "a.b"), "[1].target: "),
        ];
        for (bad, prefix) in cases {
            let err = RouteTable::new(&[good.clone(), bad])
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(prefix), "{err}");
        }
    }
}
