//! What calico-node needs to know of a Kubernetes Service to advertise its addresses over BGP
//! (BGPConfiguration `serviceClusterIPs`, `serviceExternalIPs`, `serviceLoadBalancerIPs`).
//!
//! calico-node holds no Kubernetes credentials. calico-kube-controllers (which watch Services
//! and EndpointSlices) write one [`AdvertisedService`] per Service with
//! `externalTrafficPolicy: Local` under [`SERVICES_PREFIX`]`<namespace>/<name>` in the Calico
//! etcd, as JSON, and delete it when the Service goes or stops being Local. Services with the
//! `Cluster` policy need no record: every node advertises the configured ranges whole. The
//! key lives under `/calico/` so that the agent's one watch sees it change; the `calico-rs`
//! segment marks it as this project's, not one of Calico's keys.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Where the controllers publish [`AdvertisedService`]s (docs/kubernetes.md).
pub const SERVICES_PREFIX: &str = "/calico/calico-rs/v1/services/";

/// The etcd key of one Service's record.
pub fn service_key(namespace: &str, name: &str) -> String {
    format!("{SERVICES_PREFIX}{namespace}/{name}")
}

/// One Service with `externalTrafficPolicy: Local`: its addresses and the nodes that host a
/// ready endpoint of it. A node in `nodes` advertises each address as a /32 (/128) when it
/// lies inside the matching configured range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdvertisedService {
    /// `spec.clusterIPs` (a headless Service has none).
    #[serde(default)]
    pub cluster_ips: BTreeSet<IpAddr>,
    /// `spec.externalIPs`.
    #[serde(default)]
    pub external_ips: BTreeSet<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` and `spec.loadBalancerIP`.
    #[serde(default)]
    pub load_balancer_ips: BTreeSet<IpAddr>,
    /// Nodes (Calico node names, which are the Kubernetes node names) with a ready endpoint.
    #[serde(default)]
    pub nodes: BTreeSet<String>,
}
