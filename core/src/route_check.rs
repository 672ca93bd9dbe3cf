//! Whether a marked request reached its fork (INTERFACES section 4, last
//! bullet), decided from the cluster Envoy's router finally used.
//!
//! Envoy 1.40 does not run route selection again when the filter's header
//! change clears the route cache: `xds.cluster_name` keeps naming the
//! cluster chosen before the filter until the router (after the filter)
//! selects the route, so the filter can only check the outcome once the
//! router has run (response headers, or the access-log phase). A fork found
//! unreachable is remembered for [`UNREACHABLE_TTL_MS`] (Envoy-wide, in
//! shared data): while remembered, requests for it are not marked at all and
//! go to baseline untouched.

use crate::config::Mode;
use crate::destination::from_cluster_name;

/// How long a fork found unreachable is believed so, in milliseconds.
pub const UNREACHABLE_TTL_MS: u64 = 5_000;

/// Why a marked request did not reach its fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Header mode: the route header did not select the fork (no
    /// VirtualService rule matches it on the baseline's host).
    RouteMissing,
    /// Authority mode: the fork's host is not routable from this sidecar
    /// (no virtual host: `PassthroughCluster`, `BlackHoleCluster`, no route).
    ForkUnknown,
}

impl Miss {
    /// The reason of a miss in `mode`.
    pub fn in_mode(mode: Mode) -> Self {
        match mode {
            Mode::Header => Miss::RouteMissing,
            Mode::Authority => Miss::ForkUnknown,
        }
    }

    /// The counter's name without prefix: `route_missing`, `fork_unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Miss::RouteMissing => "route_missing",
            Miss::ForkUnknown => "fork_unknown",
        }
    }
}

/// Istio's clusters that are not a service.
pub fn is_catch_all_cluster(cluster: &str) -> bool {
    matches!(
        cluster,
        "PassthroughCluster"
            | "BlackHoleCluster"
            | "InboundPassthroughCluster"
            | "InboundPassthroughClusterIpv4"
            | "InboundPassthroughClusterIpv6"
    )
}

/// Whether a request marked for `target` (the fork's FQDN) reached it:
/// `before` is the cluster chosen before the filter marked it, `after` the
/// one the router used.
///
/// An Istio cluster `outbound|<port>|<subset>|<fqdn>` reached the fork when
/// its FQDN is `target`. No cluster (no route) or a catch-all one
/// (`PassthroughCluster`, `BlackHoleCluster`) never did. A cluster of
/// another form (plain Envoy) reached it when it differs from `before`.
pub fn verify(
    mode: Mode,
    target: &str,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<(), Miss> {
    let reached = match after {
        None => false,
        Some(cluster) if is_catch_all_cluster(cluster) => false,
        Some(cluster) => match from_cluster_name(cluster) {
            Some(fqdn) => fqdn.eq_ignore_ascii_case(target),
            None => before != Some(cluster),
        },
    };
    if reached {
        Ok(())
    } else {
        Err(Miss::in_mode(mode))
    }
}

/// The shared-data key under which a fork's reachability is remembered.
/// Built on every checked routed request: pieces pushed into one
/// allocation of the right size, without `format!`'s machinery.
pub fn unreachable_key(destination: &str, sandbox: &str, target: &str) -> String {
    const PREFIX: &str = "sandbox_router.unreachable|";
    let mut key =
        String::with_capacity(PREFIX.len() + destination.len() + sandbox.len() + target.len() + 2);
    key.push_str(PREFIX);
    key.push_str(destination);
    key.push('|');
    key.push_str(sandbox);
    key.push('|');
    key.push_str(target);
    key
}

/// A remembered miss: why, and until when (host clock, ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable {
    pub miss: Miss,
    pub until_ms: u64,
}

impl Unreachable {
    /// A miss seen at `now_ms`, believed for [`UNREACHABLE_TTL_MS`].
    pub fn seen(miss: Miss, now_ms: u64) -> Self {
        Unreachable {
            miss,
            until_ms: now_ms.saturating_add(UNREACHABLE_TTL_MS),
        }
    }

    /// `<reason> <until_ms>`, e.g. `route_missing 1700000005000`.
    pub fn encode(&self) -> Vec<u8> {
        format!("{} {}", self.miss.as_str(), self.until_ms).into_bytes()
    }

    /// The record in `bytes` if it is one and still holds at `now_ms`.
    /// Anything else (empty: reached since, expired, unreadable) is `None`.
    pub fn fresh(bytes: &[u8], now_ms: u64) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (reason, until) = text.split_once(' ')?;
        let miss = match reason {
            "route_missing" => Miss::RouteMissing,
            "fork_unknown" => Miss::ForkUnknown,
            _ => return None,
        };
        let until_ms = until.parse().ok()?;
        (now_ms < until_ms).then_some(Unreachable { miss, until_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const FORK: &str = "catalog-pr-42.demo.svc.cluster.local";
    const BASELINE_CLUSTER: &str = "outbound|8080||catalog.demo.svc.cluster.local";

    #[test]
    fn the_forks_cluster_is_reached_with_any_port_or_subset() {
        for after in [
            "outbound|8080||catalog-pr-42.demo.svc.cluster.local",
            "outbound|9090|v2|catalog-pr-42.demo.svc.cluster.local",
            "outbound|8080||Catalog-PR-42.demo.svc.cluster.local",
        ] {
            for mode in [Mode::Header, Mode::Authority] {
                assert_eq!(
                    verify(mode, FORK, Some(BASELINE_CLUSTER), Some(after)),
                    Ok(()),
                    "{after}"
                );
            }
        }
    }

    #[test]
    fn header_mode_without_a_rule_for_the_header_is_route_missing() {
        // No VirtualService rule: the default route, the baseline's cluster.
        let still_baseline = Some(BASELINE_CLUSTER);
        assert_eq!(
            verify(Mode::Header, FORK, Some(BASELINE_CLUSTER), still_baseline),
            Err(Miss::RouteMissing)
        );
        // A rule that sends the header somewhere else is no better.
        let elsewhere = Some("outbound|8080||catalog-pr-7.demo.svc.cluster.local");
        assert_eq!(
            verify(Mode::Header, FORK, Some(BASELINE_CLUSTER), elsewhere),
            Err(Miss::RouteMissing)
        );
    }

    #[test]
    fn authority_mode_to_a_host_envoy_cannot_route_is_fork_unknown() {
        for after in [
            None,
            Some("PassthroughCluster"),
            Some("BlackHoleCluster"),
            Some(BASELINE_CLUSTER),
        ] {
            assert_eq!(
                verify(Mode::Authority, FORK, Some(BASELINE_CLUSTER), after),
                Err(Miss::ForkUnknown),
                "{after:?}"
            );
        }
    }

    #[test]
    fn plain_envoy_cluster_names_count_as_reached_when_the_route_moved() {
        assert_eq!(
            verify(Mode::Header, FORK, Some("catalog"), Some("catalog_fork")),
            Ok(())
        );
        assert_eq!(
            verify(Mode::Header, FORK, Some("catalog"), Some("catalog")),
            Err(Miss::RouteMissing)
        );
        assert_eq!(
            verify(Mode::Authority, FORK, None, Some("PassthroughCluster")),
            Err(Miss::ForkUnknown)
        );
    }

    #[test]
    fn a_remembered_miss_holds_for_its_ttl_then_lapses() {
        let seen = Unreachable::seen(Miss::ForkUnknown, 1_000);
        let bytes = seen.encode();
        assert_eq!(bytes, b"fork_unknown 6000");
        assert_eq!(Unreachable::fresh(&bytes, 1_000), Some(seen));
        assert_eq!(Unreachable::fresh(&bytes, 5_999), Some(seen));
        assert_eq!(Unreachable::fresh(&bytes, 6_000), None);
        let missing = Unreachable::seen(Miss::RouteMissing, 0).encode();
        assert_eq!(
            Unreachable::fresh(&missing, 0).map(|u| u.miss),
            Some(Miss::RouteMissing)
        );
        for garbage in [
            &b""[..],
            b"fork_unknown",
            b"other 9999",
            b"fork_unknown x",
            b"\xff 1",
        ] {
            assert_eq!(Unreachable::fresh(garbage, 0), None, "{garbage:?}");
        }
        assert_eq!(
            Unreachable::seen(Miss::RouteMissing, u64::MAX).until_ms,
            u64::MAX
        );
    }

    #[test]
    fn keys_name_destination_sandbox_and_target() {
        assert_eq!(
            unreachable_key("catalog.demo.svc.cluster.local", "pr-42", FORK),
            "sandbox_router.unreachable|catalog.demo.svc.cluster.local|pr-42|catalog-pr-42.demo.svc.cluster.local"
        );
    }
}
