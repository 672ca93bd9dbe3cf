//! Istio naming conventions the manifests rely on.

use std::fmt;

/// An Istio outbound cluster name, `outbound|<port>|<subset>|<fqdn>`: the
/// cluster a sidecar has for each port of each service it can reach, and the
/// name the filter's `routeService.cluster` must use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundCluster {
    pub port: u16,
    pub subset: String,
    pub fqdn: String,
}

impl OutboundCluster {
    pub fn parse(name: &str) -> Result<OutboundCluster, String> {
        let mut parts = name.split('|');
        let (Some(direction), Some(port), Some(subset), Some(fqdn), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(format!("{name:?} is not outbound|<port>|<subset>|<fqdn>"));
        };
        if direction != "outbound" {
            return Err(format!("{name:?} is not an outbound cluster"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{name:?}: {port:?} is not a port number"))?;
        if fqdn.is_empty() {
            return Err(format!("{name:?} has no host"));
        }
        Ok(OutboundCluster {
            port,
            subset: subset.to_owned(),
            fqdn: fqdn.to_owned(),
        })
    }

    /// `(service, namespace)` when the host is `<service>.<namespace>.svc.<domain>`.
    pub fn kubernetes_service(&self, cluster_domain: &str) -> Option<(&str, &str)> {
        let rest = self
            .fqdn
            .strip_suffix(cluster_domain)?
            .strip_suffix('.')?
            .strip_suffix(".svc")?;
        let (service, namespace) = rest.split_once('.')?;
        (!service.is_empty() && !namespace.is_empty() && !namespace.contains('.'))
            .then_some((service, namespace))
    }
}

impl fmt::Display for OutboundCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "outbound|{}|{}|{}", self.port, self.subset, self.fqdn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_cluster_names() {
        let name = "outbound|8080||routeservice.sandbox-system.svc.cluster.local";
        let c = OutboundCluster::parse(name).unwrap();
        assert_eq!((c.port, c.subset.as_str()), (8080, ""));
        assert_eq!(
            c.kubernetes_service("cluster.local"),
            Some(("routeservice", "sandbox-system"))
        );
        assert_eq!(c.to_string(), name);
        assert_eq!(
            OutboundCluster::parse("outbound|80|v1|a.b.svc.cluster.local")
                .unwrap()
                .subset,
            "v1"
        );
    }

    #[test]
    fn refuses_other_names() {
        for bad in [
            "inbound|8080||a.b.svc.cluster.local",
            "outbound|http||a.b.svc.cluster.local",
            "outbound|0||a",
            "outbound|8080|a.b.svc.cluster.local",
            "outbound|8080|||a",
            "outbound|8080||",
            "routeservice",
        ] {
            assert!(OutboundCluster::parse(bad).is_err(), "{bad}");
        }
        let external = OutboundCluster::parse("outbound|443||api.example.com").unwrap();
        assert_eq!(external.kubernetes_service("cluster.local"), None);
    }
}
