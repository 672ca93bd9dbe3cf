//! The per-request decision (INTERFACES section 1): what the filter does to
//! one request, computed from its headers, the cluster Envoy chose so far
//! and the route table. The proxy-wasm layer only reads the inputs and
//! applies the [`Decision`].

use std::borrow::Cow;

use crate::carrier::Carrier;
use crate::config::{FilterConfig, Mode};
use crate::destination::{self, RouteBefore};
use crate::route_table::{RouteTable, SandboxTarget};
use crate::routing_key::{self, InvalidRoutingKey};

/// What the filter read off a request, before any table lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection<'a> {
    /// A client-supplied route header that must be removed.
    pub spoofed_route_header: bool,
    /// An incoming route header is trusted and present: leave the request be.
    pub trusted_route_header: bool,
    pub key: KeyOutcome<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome<'a> {
    NoKey,
    Invalid(InvalidRoutingKey, Carrier),
    Valid(Cow<'a, str>, Carrier),
}

/// The outcome of a request, one counter each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'t> {
    /// No routing key in any carrier.
    NoKey,
    /// A routing key that failed validation: baseline.
    InvalidKey(InvalidRoutingKey),
    /// A valid key, but no sandbox forks this destination for it (or the
    /// destination is unknown): baseline.
    Baseline,
    /// An upstream hop already marked it and that mark is trusted.
    AlreadyRouted,
    /// The answer was needed from the RouteService and it could not give it
    /// in time (down, slow, wrong, or its breaker open): baseline.
    FailOpen,
    /// Send it to the sandbox.
    Routed(Marking<'t>),
}

/// How to mark a routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marking<'t> {
    pub target: &'t SandboxTarget,
    /// New `:authority` (mode `authority` only), port kept.
    pub authority: Option<String>,
    /// What checking that it reached the fork needs; `None` on a host that
    /// does not name the chosen cluster (the marking is then unchecked).
    pub check: Option<Check>,
}

/// What [`crate::route_check`] needs to check a marked request afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The baseline's FQDN (the destination the table was asked about).
    pub destination: String,
    /// The cluster Envoy chose before the marking, if it was trusted.
    pub before: Option<String>,
}

/// A request with a valid key and a known destination: what remains is to
/// ask the route table (or the RouteService) about `(key, destination)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'a> {
    pub key: Cow<'a, str>,
    pub destination: Cow<'a, str>,
    /// The port of the request's `:authority` (`Some(None)`: none), `None`
    /// if it is not an authority the filter can rewrite.
    port: Option<Option<Cow<'a, str>>>,
    /// The cluster chosen before the filter, when the host names it.
    before: Option<Option<Cow<'a, str>>>,
}

/// Either the decision is already made, or it needs a table answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'a> {
    Decided(Decision<'static>),
    Lookup(Query<'a>),
}

/// Reads the route header and the routing key of a request.
pub fn inspect<'a, K, V>(config: &FilterConfig, headers: &'a [(K, V)]) -> Inspection<'a>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let scan = config.carriers.scan(headers, &config.route_header);
    let has_route_header = scan.also_present;
    let key = match scan.candidate {
        None => KeyOutcome::NoKey,
        Some(candidate) => match routing_key::validate(&candidate.value) {
            Ok(_) => KeyOutcome::Valid(candidate.value, candidate.carrier),
            Err(e) => KeyOutcome::Invalid(e, candidate.carrier),
        },
    };
    Inspection {
        spoofed_route_header: has_route_header && !config.trust_incoming_route_header,
        trusted_route_header: has_route_header && config.trust_incoming_route_header,
        key,
    }
}

/// Everything up to the table lookup. `route` is what Envoy said about the
/// route it chose before the filter acted, `authority` the request's.
pub fn prepare<'a>(
    config: &FilterConfig,
    inspection: Inspection<'a>,
    route: RouteBefore<'a>,
    authority: Option<&'a [u8]>,
) -> Step<'a> {
    let key = match inspection.key {
        KeyOutcome::NoKey => return Step::Decided(Decision::NoKey),
        KeyOutcome::Invalid(e, _) => return Step::Decided(Decision::InvalidKey(e)),
        KeyOutcome::Valid(key, _) => key,
    };
    if inspection.trusted_route_header {
        return Step::Decided(Decision::AlreadyRouted);
    }
    // Envoy chose the cluster with the client's route header still present,
    // so after a spoofed header it may name the fork: trust only the authority.
    let before = match route {
        RouteBefore::Cluster(_) if inspection.spoofed_route_header => Some(None),
        RouteBefore::Cluster(cluster) => Some(Some(Cow::Borrowed(cluster))),
        RouteBefore::NoRoute => Some(None),
        RouteBefore::NotSaid => None,
    };
    let route = match route {
        RouteBefore::Cluster(_) if inspection.spoofed_route_header => RouteBefore::NotSaid,
        other => other,
    };
    let (port, authority) = authority.map_or((None, None), destination::parse_authority);
    match destination::resolve(route, authority.as_ref(), &config.namespace) {
        None => Step::Decided(Decision::Baseline),
        Some(destination) => Step::Lookup(Query {
            key,
            destination,
            port: port.map(|p| p.map(Cow::Borrowed)),
            before,
        }),
    }
}

impl<'a> Query<'a> {
    /// The decision given the table's answer for `(key, destination)`.
    pub fn decide<'t>(
        &self,
        config: &FilterConfig,
        answer: Option<&'t SandboxTarget>,
    ) -> Decision<'t> {
        let Some(target) = answer else {
            return Decision::Baseline;
        };
        let authority = match (config.mode, &self.port) {
            (Mode::Header, _) => None,
            (Mode::Authority, Some(Some(port))) => Some(format!("{}:{port}", target.target)),
            (Mode::Authority, Some(None)) => Some(target.target.clone()),
            // Nothing to rewrite: marking would reach nobody.
            (Mode::Authority, None) => return Decision::Baseline,
        };
        let check = self.before.as_ref().map(|before| Check {
            destination: self.destination.to_string(),
            before: before.as_deref().map(str::to_owned),
        });
        Decision::Routed(Marking {
            target,
            authority,
            check,
        })
    }

    /// The decision from a table that holds the whole answer.
    pub fn decide_from<'t>(&self, config: &FilterConfig, table: &'t RouteTable) -> Decision<'t> {
        self.decide(config, table.lookup(&self.key, &self.destination))
    }

    /// A copy that owns its data, to wait for a RouteService answer.
    pub fn into_owned(self) -> Query<'static> {
        Query {
            key: Cow::Owned(self.key.into_owned()),
            destination: Cow::Owned(self.destination.into_owned()),
            port: self.port.map(|p| p.map(|p| Cow::Owned(p.into_owned()))),
            before: self.before.map(|b| b.map(|b| Cow::Owned(b.into_owned()))),
        }
    }
}

/// The whole decision against one table (the static-routes path).
pub fn decide<'t, 'a>(
    config: &FilterConfig,
    table: &'t RouteTable,
    inspection: Inspection<'a>,
    route: RouteBefore<'a>,
    authority: Option<&'a [u8]>,
) -> Decision<'t> {
    match prepare(config, inspection, route, authority) {
        Step::Decided(decision) => decision,
        Step::Lookup(query) => query.decide_from(config, table),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route_table::Route;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const CATALOG: &str = "catalog.demo.svc.cluster.local";
    const FORK: &str = "catalog-pr-42.demo.svc.cluster.local";

    fn config(mode: Mode, trust: bool) -> FilterConfig {
        FilterConfig {
            mode,
            trust_incoming_route_header: trust,
            namespace: "demo".into(),
            static_routes: RouteTable::new(&[Route {
                routing_key: "pr-42".into(),
                sandbox: "pr-42".into(),
                baseline: CATALOG.into(),
                target: FORK.into(),
            }])
            .unwrap(),
            ..FilterConfig::default()
        }
    }

    fn run<'t>(
        config: &'t FilterConfig,
        headers: &[(&str, &str)],
        cluster: Option<&str>,
    ) -> (bool, Decision<'t>) {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let inspection = inspect(config, &headers);
        let authority = headers
            .iter()
            .find(|(k, _)| *k == ":authority")
            .map(|(_, v)| *v);
        let spoofed = inspection.spoofed_route_header;
        let route = cluster.map_or(RouteBefore::NotSaid, RouteBefore::Cluster);
        let decision = decide(config, &config.static_routes, inspection, route, authority);
        (spoofed, decision)
    }

    fn sandbox(decision: &Decision<'_>) -> Option<String> {
        match decision {
            Decision::Routed(m) => Some(m.target.sandbox.clone()),
            _ => None,
        }
    }

    #[test]
    fn routes_a_known_key_for_a_forked_destination() {
        let config = config(Mode::Header, false);
        let headers = [
            (":authority", "catalog:8080"),
            ("baggage", "sd-routing-key=pr-42"),
        ];
        let (_, decision) = run(&config, &headers, None);
        assert_eq!(sandbox(&decision).as_deref(), Some("pr-42"));
        let cluster = Some("outbound|8080||catalog.demo.svc.cluster.local");
        let headers = [
            (":authority", "anything"),
            ("baggage", "sd-routing-key=pr-42"),
        ];
        assert_eq!(
            sandbox(&run(&config, &headers, cluster).1).as_deref(),
            Some("pr-42")
        );
    }

    #[test]
    fn baseline_outcomes() {
        let config = config(Mode::Header, false);
        let reviews = [
            (":authority", "reviews"),
            ("baggage", "sd-routing-key=pr-42"),
        ];
        assert_eq!(run(&config, &reviews, None).1, Decision::Baseline);
        let unknown = [
            (":authority", "catalog"),
            ("baggage", "sd-routing-key=pr-9"),
        ];
        assert_eq!(run(&config, &unknown, None).1, Decision::Baseline);
        let none = [(":authority", "catalog")];
        assert_eq!(run(&config, &none, None).1, Decision::NoKey);
        let bad = [
            (":authority", "catalog"),
            ("baggage", "sd-routing-key=a%2Fb"),
        ];
        assert_eq!(
            run(&config, &bad, None).1,
            Decision::InvalidKey(InvalidRoutingKey::BadCharacter)
        );
        let ip = [
            (":authority", "10.0.0.1:80"),
            ("baggage", "sd-routing-key=pr-42"),
        ];
        assert_eq!(run(&config, &ip, None).1, Decision::Baseline);
    }

    #[test]
    fn authority_mode_rewrites_and_keeps_the_port() {
        let config = config(Mode::Authority, false);
        let headers = [
            (":authority", "catalog.demo.svc.cluster.local:8080"),
            ("baggage", "sd-routing-key=pr-42"),
        ];
        let Decision::Routed(marking) = run(&config, &headers, None).1 else {
            panic!("not routed");
        };
        assert_eq!(
            marking.authority.as_deref(),
            Some("catalog-pr-42.demo.svc.cluster.local:8080")
        );
        let config = self::config(Mode::Header, false);
        let Decision::Routed(marking) = run(&config, &headers, None).1 else {
            panic!("not routed");
        };
        assert_eq!(marking.authority, None);
    }

    #[test]
    fn incoming_route_header_is_spoofing_unless_trusted() {
        let untrusted = config(Mode::Header, false);
        let headers = [(":authority", "catalog"), ("x-sandbox-route", "pr-42")];
        assert_eq!(run(&untrusted, &headers, None), (true, Decision::NoKey));
        let with_key = [
            (":authority", "catalog"),
            ("X-Sandbox-Route", "evil"),
            ("baggage", "sd-routing-key=pr-42"),
        ];
        let (spoofed, decision) = run(&untrusted, &with_key, None);
        assert!(spoofed);
        assert_eq!(sandbox(&decision).as_deref(), Some("pr-42"));
        // The cluster Envoy picked because of the spoofed header is ignored.
        let fork_cluster = Some("outbound|8080||catalog-pr-42.demo.svc.cluster.local");
        let (_, decision) = run(&untrusted, &with_key, fork_cluster);
        assert_eq!(sandbox(&decision).as_deref(), Some("pr-42"));

        let trusted = config(Mode::Header, true);
        let (spoofed, decision) = run(&trusted, &with_key, None);
        assert!(!spoofed);
        assert_eq!(decision, Decision::AlreadyRouted);
    }

    fn run_with<'t>(
        config: &'t FilterConfig,
        headers: &[(&str, &str)],
        route: RouteBefore<'_>,
    ) -> Decision<'t> {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let inspection = inspect(config, &headers);
        let authority = headers
            .iter()
            .find(|(k, _)| *k == ":authority")
            .map(|(_, v)| *v);
        decide(config, &config.static_routes, inspection, route, authority)
    }

    const CATALOG_CLUSTER: &str = "outbound|8080||catalog.demo.svc.cluster.local";

    #[test]
    fn an_ip_host_routed_to_a_service_is_rewritten_to_the_fork_keeping_the_port() {
        // Istio lists a Service's ClusterIPs as domains of its virtual host.
        let config = config(Mode::Authority, false);
        let route = RouteBefore::Cluster(CATALOG_CLUSTER);
        for (host, rewritten) in [
            (
                "10.96.0.10:8080",
                "catalog-pr-42.demo.svc.cluster.local:8080",
            ),
            ("10.96.0.10", FORK),
            (
                "[fd00::10]:8080",
                "catalog-pr-42.demo.svc.cluster.local:8080",
            ),
        ] {
            let headers = [(":authority", host), ("baggage", "sd-routing-key=pr-42")];
            let Decision::Routed(marking) = run_with(&config, &headers, route) else {
                panic!("{host} not routed");
            };
            assert_eq!(marking.authority.as_deref(), Some(rewritten), "{host}");
        }
        // Header mode leaves the IP alone and sets the header.
        let config = self::config(Mode::Header, false);
        let headers = [
            (":authority", "10.96.0.10:8080"),
            ("baggage", "sd-routing-key=pr-42"),
        ];
        let Decision::Routed(marking) = run_with(&config, &headers, route) else {
            panic!("not routed");
        };
        assert_eq!(marking.authority, None);
    }

    #[test]
    fn a_request_envoy_does_not_route_to_a_service_is_left_to_envoy() {
        // Issue 10: a trailing-dot host, `host:9999` and CONNECT had no route
        // (404) without a key, yet were marked (and in authority mode sent to
        // the fork) with one.
        for mode in [Mode::Header, Mode::Authority] {
            let config = config(mode, false);
            for host in ["catalog.demo.svc.cluster.local.", "catalog:9999", "catalog"] {
                let headers = [(":authority", host), ("baggage", "sd-routing-key=pr-42")];
                for route in [
                    RouteBefore::NoRoute,
                    RouteBefore::Cluster("PassthroughCluster"),
                    RouteBefore::Cluster("BlackHoleCluster"),
                ] {
                    assert_eq!(
                        run_with(&config, &headers, route),
                        Decision::Baseline,
                        "{mode:?} {host} {route:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn authority_mode_without_an_authority_to_rewrite_is_baseline() {
        let config = config(Mode::Authority, false);
        let route = RouteBefore::Cluster(CATALOG_CLUSTER);
        let headers = [("baggage", "sd-routing-key=pr-42")];
        assert_eq!(run_with(&config, &headers, route), Decision::Baseline);
        let headers = [(":authority", "a b"), ("baggage", "sd-routing-key=pr-42")];
        assert_eq!(run_with(&config, &headers, route), Decision::Baseline);
    }

    #[test]
    fn a_marking_carries_what_its_check_needs() {
        let config = config(Mode::Header, false);
        let headers = [
            (":authority", "catalog"),
            ("baggage", "sd-routing-key=pr-42"),
        ];
        let Decision::Routed(marking) =
            run_with(&config, &headers, RouteBefore::Cluster(CATALOG_CLUSTER))
        else {
            panic!("not routed");
        };
        assert_eq!(
            marking.check,
            Some(Check {
                destination: CATALOG.into(),
                before: Some(CATALOG_CLUSTER.into()),
            })
        );
        // A host that names no cluster cannot be checked.
        let Decision::Routed(marking) = run_with(&config, &headers, RouteBefore::NotSaid) else {
            panic!("not routed");
        };
        assert_eq!(marking.check, None);
        // After a spoofed header the cluster chosen is not trusted.
        let spoofed = [
            (":authority", "catalog"),
            ("x-sandbox-route", "pr-42"),
            ("baggage", "sd-routing-key=pr-42"),
        ];
        let fork_cluster = "outbound|8080||catalog-pr-42.demo.svc.cluster.local";
        let Decision::Routed(marking) =
            run_with(&config, &spoofed, RouteBefore::Cluster(fork_cluster))
        else {
            panic!("not routed");
        };
        assert_eq!(marking.check.and_then(|c| c.before), None);
    }
}
