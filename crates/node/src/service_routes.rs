//! Kubernetes service addresses over BGP, as Calico advertises them
//! (BGPConfiguration `serviceClusterIPs`, `serviceExternalIPs`, `serviceLoadBalancerIPs`):
//!
//! - every node advertises each configured range whole (ECMP across all nodes; kube-proxy on
//!   the node that receives the traffic forwards it to an endpoint);
//! - for a Service with `externalTrafficPolicy: Local`, the nodes hosting a ready endpoint also
//!   advertise each of its cluster, external and load-balancer addresses that lies inside the
//!   matching range as a /32 (/128): the longer prefix draws the traffic to those nodes only,
//!   which keeps the client's source address.
//!
//! The ranges come from the BGPConfiguration named `default`; the Services from the records the
//! controllers publish ([`calico_api::service_advertisement`]). Routes to these addresses that
//! other nodes advertise are never installed into the kernel (Calico's BIRD rejects them the
//! same way): every node reaches a service locally through kube-proxy.

use std::collections::BTreeSet;
use std::net::IpAddr;

use calico_api::BGPConfiguration;
use calico_api::service_advertisement::{AdvertisedService, SERVICES_PREFIX};
use calico_datastore::{Datastore, EtcdClient, ResourceError};

use crate::snapshot::SnapshotError;
use ipnet::IpNet;
use tracing::warn;

/// The configured service ranges (from the `default` BGPConfiguration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRanges {
    pub cluster: Vec<IpNet>,
    pub external: Vec<IpNet>,
    pub load_balancer: Vec<IpNet>,
}

/// A CIDR or a single address (`10.96.0.10` is `10.96.0.10/32`), as the fields allow.
fn net_of(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .ok()
}

impl ServiceRanges {
    pub fn from_configs(configs: &[BGPConfiguration]) -> ServiceRanges {
        let Some(d) = configs
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some("default"))
        else {
            return ServiceRanges::default();
        };
        let nets = |cidrs: Vec<Option<&String>>| -> Vec<IpNet> {
            cidrs
                .into_iter()
                .flatten()
                .filter_map(|c| net_of(c))
                .collect()
        };
        let s = &d.spec;
        ServiceRanges {
            cluster: nets(
                s.service_cluster_ips
                    .iter()
                    .map(|b| b.cidr.as_ref())
                    .collect(),
            ),
            external: nets(
                s.service_external_ips
                    .iter()
                    .map(|b| b.cidr.as_ref())
                    .collect(),
            ),
            load_balancer: nets(
                s.service_load_balancer_ips
                    .iter()
                    .map(|b| b.cidr.as_ref())
                    .collect(),
            ),
        }
    }

    /// Every configured range, cluster, external and load-balancer.
    pub fn all(&self) -> impl Iterator<Item = &IpNet> {
        self.cluster
            .iter()
            .chain(&self.external)
            .chain(&self.load_balancer)
    }

    /// Whether a route learned from a peer is for service addresses (never installed).
    pub fn covers(&self, prefix: &IpNet) -> bool {
        self.all().any(|r| r.contains(prefix))
    }

    /// What node `node` advertises: every range, plus the /32s (/128s) of the Local Services
    /// it hosts an endpoint of.
    pub fn advertised(&self, services: &[AdvertisedService], node: &str) -> BTreeSet<IpNet> {
        let mut out: BTreeSet<IpNet> = self.all().copied().collect();
        let inside = |ranges: &[IpNet], ip: &IpAddr| ranges.iter().any(|r| r.contains(ip));
        for s in services.iter().filter(|s| s.nodes.contains(node)) {
            for (ips, ranges) in [
                (&s.cluster_ips, &self.cluster),
                (&s.external_ips, &self.external),
                (&s.load_balancer_ips, &self.load_balancer),
            ] {
                out.extend(
                    ips.iter()
                        .filter(|ip| inside(ranges, ip))
                        .map(|ip| IpNet::from(*ip)),
                );
            }
        }
        out
    }
}

/// What this node advertises for services, and which learned routes it leaves out of the
/// kernel.
#[derive(Debug, Clone, Default)]
pub struct ServiceAdvertisement {
    pub ranges: ServiceRanges,
    pub advertised: BTreeSet<IpNet>,
}

/// Reads the ranges and the published Local Services and computes node `node`'s share. A
/// record that does not parse is skipped with a warning (one bad record must not stop the
/// others being advertised).
pub async fn read(
    ds: &Datastore,
    kv: &EtcdClient,
    node: &str,
) -> Result<ServiceAdvertisement, SnapshotError> {
    let configs = ds
        .list::<BGPConfiguration>(None)
        .await
        .map_err(|source| SnapshotError::Datastore {
            what: "listing BGPConfigurations".into(),
            source: Box::new(source),
        })?
        .items;
    let ranges = ServiceRanges::from_configs(&configs);
    let listing = kv
        .list(SERVICES_PREFIX)
        .await
        .map_err(|source| SnapshotError::Datastore {
            what: "listing published services".into(),
            source: Box::new(ResourceError::DatastorePrefix {
                kind: "Service".into(),
                prefix: SERVICES_PREFIX.into(),
                source: Box::new(source),
            }),
        })?;
    let services: Vec<AdvertisedService> = listing
        .kvs
        .iter()
        .filter_map(
            |kv| match serde_json::from_slice::<AdvertisedService>(&kv.value) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(key = %kv.key, error = %e, "service record ignored: not understood");
                    None
                }
            },
        )
        .collect();
    Ok(ServiceAdvertisement {
        advertised: ranges.advertised(&services, node),
        ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> BGPConfiguration {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn ranges() -> ServiceRanges {
        ServiceRanges::from_configs(&[
            config(
                "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n\
                 spec:\n  serviceClusterIPs: [{cidr: 10.96.0.0/16}, {cidr: 'fd00:96::/112'}]\n\
                 \x20 serviceExternalIPs: [{cidr: 203.0.113.0/24}]\n\
                 \x20 serviceLoadBalancerIPs: [{cidr: 198.51.100.7}]\n",
            ),
            // A node-specific configuration carries no ranges (the API refuses them there).
            config(
                "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: node.n1}\n\
                 spec: {listenPort: 1790}\n",
            ),
        ])
    }

    fn nets(v: &[&str]) -> BTreeSet<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn every_node_advertises_the_ranges_whole() {
        let r = ranges();
        let all = nets(&[
            "10.96.0.0/16",
            "fd00:96::/112",
            "203.0.113.0/24",
            "198.51.100.7/32",
        ]);
        assert_eq!(r.advertised(&[], "n1"), all);
        assert_eq!(r.advertised(&[], "n2"), all);
        assert!(
            ServiceRanges::from_configs(&[])
                .advertised(&[], "n1")
                .is_empty()
        );
    }

    #[test]
    fn a_local_service_adds_host_routes_only_on_its_endpoint_nodes_and_only_inside_ranges() {
        let r = ranges();
        let svc = AdvertisedService {
            cluster_ips: ["10.96.0.10".parse().unwrap(), "fd00:96::a".parse().unwrap()].into(),
            // The second external IP lies outside serviceExternalIPs: never advertised.
            external_ips: ["203.0.113.5".parse().unwrap(), "192.0.2.9".parse().unwrap()].into(),
            load_balancer_ips: ["198.51.100.7".parse().unwrap()].into(),
            nodes: ["n1".to_string()].into(),
        };
        let on_n1 = r.advertised(std::slice::from_ref(&svc), "n1");
        for p in [
            "10.96.0.10/32",
            "fd00:96::a/128",
            "203.0.113.5/32",
            "198.51.100.7/32",
        ] {
            assert!(
                on_n1.contains(&p.parse().unwrap()),
                "{p} missing: {on_n1:?}"
            );
        }
        assert!(!on_n1.contains(&"192.0.2.9/32".parse().unwrap()));
        assert!(
            !r.advertised(&[svc], "n2")
                .contains(&"203.0.113.5/32".parse().unwrap())
        );
    }

    #[test]
    fn learned_service_routes_are_recognised() {
        let r = ranges();
        assert!(r.covers(&"10.96.0.0/16".parse().unwrap()));
        assert!(r.covers(&"203.0.113.5/32".parse().unwrap()));
        assert!(!r.covers(&"10.65.0.0/26".parse().unwrap()));
        assert!(!r.covers(&"10.0.0.0/8".parse().unwrap()));
    }
}
