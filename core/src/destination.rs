//! The destination service of a request (INTERFACES section 3): the FQDN
//! of the service Envoy routes it to before the filter acts.
//!
//! Istio names outbound clusters `outbound|<port>|<subset>|<fqdn>`; when the
//! chosen route's cluster has that form, its FQDN is the destination. Else the
//! `:authority` is, without its port, a short name qualified in the caller's
//! namespace the way Kubernetes DNS search paths would.
//!
//! A request Envoy has no service route for (no route at all, or Istio's
//! catch-all `PassthroughCluster` / `BlackHoleCluster`: an unknown host, a
//! trailing-dot host, a port no service has, `CONNECT`) has no destination:
//! it is left to Envoy exactly as without a routing key.

use std::borrow::Cow;

use crate::route_check::is_catch_all_cluster;

const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// The FQDN of an Istio outbound cluster name.
pub fn from_cluster_name(cluster: &str) -> Option<&str> {
    let mut parts = cluster.split('|');
    let (direction, _port, _subset, fqdn) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let is_outbound = direction == "outbound" && parts.next().is_none();
    (is_outbound && is_dns_name(fqdn)).then_some(fqdn)
}

/// An `:authority` split into host and optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority<'a> {
    pub host: Cow<'a, str>,
    pub port: Option<Cow<'a, str>>,
}

impl<'a> Authority<'a> {
    /// `None` for anything that is not `host[:port]` with a DNS host
    /// (IP literals and garbage are never service names).
    pub fn parse(authority: &'a [u8]) -> Option<Self> {
        let authority = std::str::from_utf8(authority).ok()?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let host = host.strip_suffix('.').unwrap_or(host);
        (port_ok && is_dns_name(host)).then_some(Authority {
            host: Cow::Borrowed(host),
            port: port.map(Cow::Borrowed),
        })
    }

    /// The FQDN this host names from namespace `namespace`.
    pub fn service_fqdn(&self, namespace: &str) -> Cow<'a, str> {
        let lower = if self.host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(self.host.to_ascii_lowercase())
        } else {
            self.host.clone()
        };
        match lower.bytes().filter(|&b| b == b'.').count() {
            0 => Cow::Owned(format!("{lower}.{namespace}.{CLUSTER_DOMAIN}")),
            1 => Cow::Owned(format!("{lower}.{CLUSTER_DOMAIN}")),
            _ if lower.ends_with(".svc") => Cow::Owned(format!("{lower}.cluster.local")),
            _ => lower,
        }
    }

    /// A copy that owns its text.
    pub fn into_owned(self) -> Authority<'static> {
        Authority {
            host: Cow::Owned(self.host.into_owned()),
            port: self.port.map(|p| Cow::Owned(p.into_owned())),
        }
    }

    /// This authority with its host replaced, keeping the port.
    pub fn with_host(&self, host: &str) -> String {
        match &self.port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }
}

/// What Envoy said, before the filter acted, about the route it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteBefore<'a> {
    /// A route to this cluster (`xds.cluster_name`).
    Cluster(&'a str),
    /// No route: the host answers `xds` attributes but names no cluster
    /// (Envoy answers such a request itself, e.g. `404`).
    NoRoute,
    /// The host does not say (no `xds` attributes): decide from `:authority`.
    NotSaid,
}

/// Resolves the destination: the cluster if it is an Istio outbound one,
/// none for no route or a catch-all cluster, else the authority.
pub fn resolve<'a>(
    route: RouteBefore<'a>,
    authority: Option<&Authority<'a>>,
    namespace: &str,
) -> Option<Cow<'a, str>> {
    let from_authority = || authority.map(|a| a.service_fqdn(namespace));
    match route {
        RouteBefore::NoRoute => None,
        RouteBefore::Cluster(cluster) if is_catch_all_cluster(cluster) => None,
        RouteBefore::Cluster(cluster) => from_cluster_name(cluster)
            .map(Cow::Borrowed)
            .or_else(from_authority),
        RouteBefore::NotSaid => from_authority(),
    }
}

/// [`authority_port`] and [`Authority::parse`] of one `:authority`, with one
/// UTF-8 check and one DNS-name check for the usual `name[:port]` (every
/// keyed request); anything else (an IP literal, a bad name) takes the two
/// as they are.
pub fn parse_authority(authority: &[u8]) -> (Option<Option<&str>>, Option<Authority<'_>>) {
    let Some(parsed) = Authority::parse(authority) else {
        return (authority_port(authority), None);
    };
    // A DNS name with an all-digit port: `authority_port` agrees, but for
    // the length of the port it also checks.
    let port = match &parsed.port {
        None => Some(None),
        Some(Cow::Borrowed(port)) => (port.len() <= 5).then_some(Some(*port)),
        Some(Cow::Owned(_)) => authority_port(authority),
    };
    (port, Some(parsed))
}

/// The port of an `:authority` whose host is a name or an IP literal
/// (`10.96.0.10:8080`, `[fd00::1]:8080`): `Some(None)` when it has none,
/// `None` when it is not an authority at all.
pub fn authority_port(authority: &[u8]) -> Option<Option<&str>> {
    let authority = std::str::from_utf8(authority).ok()?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (v6, rest) = bracketed.split_once(']')?;
            let port = match rest {
                "" => None,
                _ => Some(rest.strip_prefix(':')?),
            };
            let v6_ok = !v6.is_empty()
                && v6
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            (v6_ok.then_some("v6")?, port)
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host = host.strip_suffix('.').unwrap_or(host);
    let ipv4 = host.split('.').count() == 4
        && host.split('.').all(|octet| {
            !octet.is_empty() && octet.len() <= 3 && octet.bytes().all(|b| b.is_ascii_digit())
        });
    let host_ok = host == "v6" || ipv4 || is_dns_name(host);
    (port_ok && host_ok).then_some(port)
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner
/// hyphens, 1-63 bytes each, 253 in all. Not all digits (that is an IP).
/// One pass over the bytes (every request's `:authority` goes through it).
pub fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let mut label_len = 0usize;
    let mut previous = b'.';
    let mut numeric = true;
    for &b in name.as_bytes() {
        match b {
            // An empty label, or one ending in `-`.
            b'.' if label_len == 0 || previous == b'-' => return false,
            b'.' => label_len = 0,
            b'0'..=b'9' => label_len += 1,
            // A label starting with `-`.
            b'-' if label_len == 0 => return false,
            b'-' => {
                numeric = false;
                label_len += 1;
            }
            _ if b.is_ascii_alphabetic() => {
                numeric = false;
                label_len += 1;
            }
            _ => return false,
        }
        if label_len > 63 {
            return false;
        }
        previous = b;
    }
    label_len > 0 && previous != b'-' && !numeric
}

/// DNS-1123 label, lower case only: what Kubernetes accepts as a name.
pub fn is_dns1123_label(label: &str) -> bool {
    is_dns_label_ignore_case(label) && !label.bytes().any(|b| b.is_ascii_uppercase())
}

fn is_dns_label_ignore_case(label: &str) -> bool {
    let bytes = label.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-');
    let ends_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    (1..=63).contains(&bytes.len()) && inner_ok && ends_ok
}

#[cfg(test)]
mod tests {
    /// The definition [`is_dns_name`] implements in one pass.
    fn is_dns_name_by_labels(name: &str) -> bool {
        let labels_ok = name.split('.').all(is_dns_label_ignore_case);
        let numeric = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        !name.is_empty() && name.len() <= 253 && labels_ok && !numeric
    }

    #[test]
    fn parse_authority_is_authority_port_and_authority_parse() {
        let mut inputs: Vec<String> = [
            "catalog.demo.svc.cluster.local",
            "catalog.demo.svc.cluster.local:8080",
            "catalog.demo.svc.cluster.local.:80",
            "Catalog:80",
            "catalog:",
            "catalog:123456",
            "catalog:8a",
            "catalog:99999",
            "10.96.0.10:8080",
            "10.96.0.10",
            "[fd00::1]:8080",
            "[fd00::1]",
            "a:b:80",
            "-bad:80",
            "",
            ":80",
            "1.2.3:80",
            "caf\u{e9}:80",
        ]
        .map(str::to_owned)
        .to_vec();
        // Every string of up to three bytes of a small alphabet.
        let alphabet = ["a", "1", ".", ":", "-", "[", "]"];
        let mut short = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = short
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            inputs.extend(longer.iter().cloned());
            short = longer;
        }
        for input in &inputs {
            let bytes = input.as_bytes();
            assert_eq!(
                parse_authority(bytes),
                (authority_port(bytes), Authority::parse(bytes)),
                "{input:?}"
            );
        }
        assert_eq!(parse_authority(b"\xff:80"), (None, None));
    }

    #[test]
    fn is_dns_name_agrees_with_its_definition() {
        let long_label = "a".repeat(63);
        let too_long_label = "a".repeat(64);
        let long_name = vec!["abcdefghi"; 26].join(".");
        let mut inputs: Vec<String> = [
            "",
            ".",
            "a",
            "a.",
            ".a",
            "a..b",
            "-a",
            "a-",
            "a-b",
            "a.-b",
            "a-.b",
            "1",
            "1.2",
            "1.2.3.4",
            "1a",
            "a1",
            "A.b",
            "a_b",
            "a b",
            "catalog.demo.svc.cluster.local",
            "x--y.z",
            "1-2",
            "é",
            "a.1",
            "0.0.0.0.",
            "--",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        inputs.push(long_label.clone());
        inputs.push(too_long_label);
        inputs.push(format!("{long_label}.b"));
        inputs.push(long_name.clone());
        inputs.push(format!("{long_name}.abcdefghij"));
        for name in &inputs {
            assert_eq!(is_dns_name(name), is_dns_name_by_labels(name), "{name:?}");
        }
        // Every string of up to three bytes from a small alphabet.
        let alphabet = ['a', 'Z', '0', '-', '.', '_'];
        let mut words = vec![String::new()];
        for _ in 0..3 {
            let mut longer = Vec::new();
            for word in &words {
                for c in alphabet {
                    longer.push(format!("{word}{c}"));
                }
            }
            words.extend(longer);
        }
        for name in &words {
            assert_eq!(is_dns_name(name), is_dns_name_by_labels(name), "{name:?}");
        }
    }

    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn istio_outbound_cluster_names() {
        assert_eq!(
            from_cluster_name("outbound|8080||catalog.demo.svc.cluster.local"),
            Some("catalog.demo.svc.cluster.local")
        );
        assert_eq!(
            from_cluster_name("outbound|8080|v1|catalog.demo.svc.cluster.local"),
            Some("catalog.demo.svc.cluster.local")
        );
        for other in [
            "inbound|8080||",
            "PassthroughCluster",
            "outbound|8080||",
            "outbound|8080||a|b",
            "",
        ] {
            assert_eq!(from_cluster_name(other), None, "{other}");
        }
    }

    fn fqdn(authority: &str, ns: &str) -> Option<String> {
        Authority::parse(authority.as_bytes()).map(|a| a.service_fqdn(ns).into_owned())
    }

    #[test]
    fn authority_is_qualified_like_kubernetes_dns() {
        let full = "catalog.demo.svc.cluster.local";
        assert_eq!(fqdn("catalog", "demo").as_deref(), Some(full));
        assert_eq!(fqdn("catalog:8080", "demo").as_deref(), Some(full));
        assert_eq!(fqdn("catalog.demo", "other").as_deref(), Some(full));
        assert_eq!(fqdn("catalog.demo.svc:80", "x").as_deref(), Some(full));
        assert_eq!(
            fqdn("Catalog.Demo.svc.cluster.local.:8080", "x").as_deref(),
            Some(full)
        );
        assert_eq!(
            fqdn("example.com", "x").as_deref(),
            Some("example.com.svc.cluster.local")
        );
        assert_eq!(
            fqdn("api.example.com", "x").as_deref(),
            Some("api.example.com")
        );
    }

    #[test]
    fn authority_rejects_ips_and_garbage() {
        for bad in [
            "127.0.0.1:80",
            "[::1]:80",
            "",
            ":80",
            "a:",
            "a:b",
            "a b",
            "-a",
            "a..b",
        ] {
            assert_eq!(Authority::parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(Authority::parse(b"\xff"), None);
    }

    #[test]
    fn rewrite_keeps_the_port() {
        let a = Authority::parse(b"catalog:8080").unwrap();
        assert_eq!(
            a.with_host("catalog-pr-42.demo.svc.cluster.local"),
            "catalog-pr-42.demo.svc.cluster.local:8080"
        );
        let a = Authority::parse(b"catalog").unwrap();
        assert_eq!(a.with_host("t"), "t");
    }

    #[test]
    fn cluster_wins_over_authority() {
        let a = Authority::parse(b"other").unwrap();
        let cluster = RouteBefore::Cluster("outbound|80||svc.ns.svc.cluster.local");
        let d = resolve(cluster, Some(&a), "ns");
        assert_eq!(d.as_deref(), Some("svc.ns.svc.cluster.local"));
        // A plain Envoy cluster name says nothing: the authority does.
        let d = resolve(RouteBefore::Cluster("other_cluster"), Some(&a), "ns");
        assert_eq!(d.as_deref(), Some("other.ns.svc.cluster.local"));
        let d = resolve(RouteBefore::NotSaid, Some(&a), "ns");
        assert_eq!(d.as_deref(), Some("other.ns.svc.cluster.local"));
        assert_eq!(resolve(RouteBefore::NotSaid, None, "ns"), None);
    }

    #[test]
    fn no_route_or_a_catch_all_cluster_has_no_destination() {
        // Issue 10: a trailing-dot host, `host:9999`, CONNECT: Envoy routes
        // them nowhere (or to Istio's catch-all), so the filter leaves them.
        let a = Authority::parse(b"catalog.demo.svc.cluster.local.").unwrap();
        for route in [
            RouteBefore::NoRoute,
            RouteBefore::Cluster("PassthroughCluster"),
            RouteBefore::Cluster("BlackHoleCluster"),
            RouteBefore::Cluster("InboundPassthroughClusterIpv4"),
        ] {
            assert_eq!(resolve(route, Some(&a), "demo"), None, "{route:?}");
        }
    }

    #[test]
    fn ports_of_names_and_ip_literals() {
        assert_eq!(authority_port(b"10.96.0.10:8080"), Some(Some("8080")));
        assert_eq!(authority_port(b"10.96.0.10"), Some(None));
        assert_eq!(authority_port(b"[fd00::1]:8080"), Some(Some("8080")));
        assert_eq!(authority_port(b"[fd00::1]"), Some(None));
        assert_eq!(authority_port(b"catalog:8080"), Some(Some("8080")));
        assert_eq!(
            authority_port(b"catalog.demo.svc.cluster.local.:80"),
            Some(Some("80"))
        );
        for bad in [
            &b""[..],
            b":80",
            b"a:",
            b"a:b",
            b"[::1",
            b"[]:80",
            b"[::1]x",
            b"1.2.3:80",
            b"a b",
            b"\xff",
            b"a:123456",
        ] {
            assert_eq!(
                authority_port(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns1123_label("pr-42"));
        assert!(!is_dns1123_label("PR-42"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }
}
