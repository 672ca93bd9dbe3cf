//! The per-request decision (INTERFACES section 1): what the filter does to
//! one request, computed from its headers, the cluster Envoy chose so far
//! and the route table. The proxy-wasm layer only reads the inputs and
//! applies the [`Decision`].

use std::borrow::Cow;

use crate::carrier::Carrier;
use crate::config::{FilterConfig, Mode};
use crate::destination::{self, Authority};
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
}

/// A request with a valid key and a known destination: what remains is to
/// ask the route table (or the RouteService) about `(key, destination)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'a> {
    pub key: Cow<'a, str>,
    pub destination: Cow<'a, str>,
    authority: Option<Authority<'a>>,
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
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    let has_route_header = headers
        .iter()
        .any(|(name, _)| name.as_ref().eq_ignore_ascii_case(&config.route_header));
    let key = match config.carriers.extract(headers) {
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

/// Everything up to the table lookup. `cluster` is the cluster of the route
/// Envoy chose before the filter acted, `authority` the request's.
pub fn prepare<'a>(
    config: &FilterConfig,
    inspection: Inspection<'a>,
    cluster: Option<&'a str>,
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
    let cluster = cluster.filter(|_| !inspection.spoofed_route_header);
    let authority = authority.and_then(Authority::parse);
    match destination::resolve(cluster, authority.as_ref(), &config.namespace) {
        None => Step::Decided(Decision::Baseline),
        Some(destination) => Step::Lookup(Query {
            key,
            destination,
            authority,
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
        match answer {
            None => Decision::Baseline,
            Some(target) => Decision::Routed(Marking {
                target,
                authority: match config.mode {
                    Mode::Header => None,
                    Mode::Authority => self.authority.as_ref().map(|a| a.with_host(&target.target)),
                },
            }),
        }
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
            authority: self.authority.map(Authority::into_owned),
        }
    }
}

/// The whole decision against one table (the static-routes path).
pub fn decide<'t, 'a>(
    config: &FilterConfig,
    table: &'t RouteTable,
    inspection: Inspection<'a>,
    cluster: Option<&'a str>,
    authority: Option<&'a [u8]>,
) -> Decision<'t> {
    match prepare(config, inspection, cluster, authority) {
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
        let decision = decide(
            config,
            &config.static_routes,
            inspection,
            cluster,
            authority,
        );
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
}
