//! A consistent read of everything this node's routing depends on, and the conversion of
//! Calico resources into what the pure peering and route rules read. Used by the agent's
//! reconcile loop and by `calicoctl node peers`, which prints the sessions a node must have
//! from the datastore alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_api::{BGPConfiguration, BGPPeer, Node, WorkloadEndpoint};
use calico_datastore::{Datastore, ResourceError};
use calico_ipam::Ipam;
use ipnet::IpNet;

use crate::peering::{self, GlobalBgp, NodeView, PeerView, Session};
use crate::routes::LocalWorkload;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("datastore: {what}")]
    Datastore {
        what: String,
        #[source]
        source: Box<ResourceError>,
    },
    #[error("IPAM: {what}")]
    Ipam {
        what: String,
        #[source]
        source: calico_ipam::IpamError,
    },
    #[error(transparent)]
    Peering(#[from] peering::PeeringError),
}

/// A consistent read of everything this node's routing depends on.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeView>,
    pub global: GlobalBgp,
    pub peers: Vec<PeerView>,
    pub own_blocks: BTreeSet<IpNet>,
    pub workloads: Vec<LocalWorkload>,
    /// CIDRs of pools with `disableBGPExport: true`: routed locally, never announced.
    pub no_export: Vec<IpNet>,
    /// BGPFilter resources by name (BGPPeers refer to them).
    pub bgp_filters: BTreeMap<String, calico_api::BGPFilterSpec>,
}

/// Converts a Calico Node into what the peering rules read.
pub fn node_view(n: &Node, listen_ports: &BTreeMap<String, u16>) -> NodeView {
    let name = n.metadata.name.clone().unwrap_or_default();
    let bgp = n.spec.bgp.as_ref();
    let addr = |v: Option<&String>| {
        v.and_then(|s| {
            s.parse::<IpNet>()
                .map(|n| n.addr())
                .or_else(|_| s.parse::<IpAddr>())
                .ok()
        })
    };
    NodeView {
        listen_port: listen_ports.get(&name).copied(),
        name,
        ipv4: addr(bgp.and_then(|b| b.ipv4_address.as_ref())),
        ipv6: addr(bgp.and_then(|b| b.ipv6_address.as_ref())),
        as_number: bgp.and_then(|b| b.as_number).map(|a| a.0),
        labels: n.metadata.labels.clone().unwrap_or_default(),
        rr_cluster_id: bgp.and_then(|b| b.route_reflector_cluster_id.clone()),
    }
}

/// Calico durations are Go durations ([`calico_api::GoDuration`]: `120s`, `2m`, `1h30m`);
/// whole seconds here, `None` for a text that is not one, or a negative value.
pub fn parse_duration_secs(s: &str) -> Option<u32> {
    calico_api::GoDuration::parse(s)
        .ok()
        .and_then(calico_api::GoDuration::whole_secs_u32)
}

pub fn peer_view(p: &BGPPeer) -> PeerView {
    use calico_api::NextHopMode as ApiMode;
    let s = &p.spec;
    let next_hop_mode = match (s.next_hop_mode, s.keep_original_next_hop) {
        (Some(ApiMode::SelfAddress), _) => peering::NextHopMode::SelfHop,
        (Some(ApiMode::Keep), _) | (None, Some(true)) => peering::NextHopMode::Keep,
        _ => peering::NextHopMode::Auto,
    };
    PeerView {
        name: p.metadata.name.clone().unwrap_or_default(),
        node: s.node.clone().filter(|n| !n.is_empty()),
        node_selector: s.node_selector.clone(),
        peer_ip: s.peer_ip.clone().filter(|n| !n.is_empty()),
        peer_selector: s.peer_selector.clone().filter(|n| !n.is_empty()),
        as_number: s.as_number.map(|a| a.0),
        local_as_number: s.local_as_number.map(|a| a.0),
        password: s
            .password
            .as_ref()
            .and_then(|pw| pw.secret_key_ref.as_ref())
            .map(|r| peering::SecretRef {
                name: r.name.clone().unwrap_or_default(),
                key: r.key.clone(),
            }),
        next_hop_mode,
        max_restart_time_secs: s.max_restart_time.as_deref().and_then(parse_duration_secs),
        keepalive_time_secs: s.keepalive_time.as_deref().and_then(parse_duration_secs),
        ttl_security: s.ttl_security.and_then(|t| u8::try_from(t).ok()),
        filters: s.filters.clone(),
        source_address_node_ip: true,
    }
}

fn global_view(configs: &[BGPConfiguration]) -> GlobalBgp {
    let mut g = GlobalBgp::default();
    if let Some(d) = configs
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("default"))
    {
        let s = &d.spec;
        if let Some(a) = s.as_number {
            g.as_number = a.0;
        }
        if let Some(m) = s.node_to_node_mesh_enabled {
            g.mesh_enabled = m;
        }
        if let Some(p) = s.listen_port.and_then(|p| u16::try_from(p).ok()) {
            g.listen_port = p;
        }
        g.mesh_password = s
            .node_mesh_password
            .as_ref()
            .and_then(|pw| pw.secret_key_ref.as_ref())
            .map(|r| peering::SecretRef {
                name: r.name.clone().unwrap_or_default(),
                key: r.key.clone(),
            });
        g.mesh_max_restart_time_secs = s
            .node_mesh_max_restart_time
            .as_deref()
            .and_then(parse_duration_secs);
    }
    g
}

/// Everything a [`Snapshot`] is computed from, as resources: what the agent's model holds
/// (kept by its watch) and what [`read_snapshot`] lists (the full-recompute oracle). Both go
/// through [`Snapshot::compute`], so they cannot disagree on the rules.
#[derive(Debug, Clone, Copy)]
pub struct RoutingResources<'a> {
    pub bgp_configs: &'a [&'a BGPConfiguration],
    pub nodes: &'a [&'a Node],
    pub peers: &'a [&'a BGPPeer],
    pub bgp_filters: &'a [&'a calico_api::BGPFilter],
    pub ip_pools: &'a [&'a calico_api::IPPool],
    /// Blocks with a confirmed affinity to this node.
    pub own_blocks: &'a BTreeSet<IpNet>,
    /// This node's workload endpoints (others are ignored).
    pub local_workloads: &'a [&'a WorkloadEndpoint],
}

impl Snapshot {
    /// The snapshot of node `name` from its resources (pure).
    pub fn compute(r: &RoutingResources<'_>, name: &str) -> Snapshot {
        // Per-node listen ports live in `node.<name>` BGPConfigurations.
        let listen_ports: BTreeMap<String, u16> = r
            .bgp_configs
            .iter()
            .filter_map(|c| {
                let node = c.metadata.name.as_deref()?.strip_prefix("node.")?;
                let port = u16::try_from(c.spec.listen_port?).ok()?;
                Some((node.to_string(), port))
            })
            .collect();
        let nodes = r
            .nodes
            .iter()
            .map(|n| node_view(n, &listen_ports))
            .collect();
        let peers = r.peers.iter().map(|p| peer_view(p)).collect();
        let workloads = r
            .local_workloads
            .iter()
            .filter(|w| w.spec.node.as_deref() == Some(name))
            .flat_map(|w| {
                let iface = w.spec.interface_name.clone().unwrap_or_default();
                w.spec
                    .ip_networks
                    .iter()
                    .filter_map(|n| n.parse::<IpNet>().ok())
                    .map(move |ip| LocalWorkload {
                        ip,
                        interface: iface.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|w| !w.interface.is_empty())
            .collect();
        let no_export = r
            .ip_pools
            .iter()
            .filter(|p| p.spec.disable_bgp_export == Some(true))
            .filter_map(|p| p.spec.cidr.parse::<IpNet>().ok())
            .collect();
        let bgp_filters = r
            .bgp_filters
            .iter()
            .filter_map(|f| Some((f.metadata.name.clone()?, f.spec.clone())))
            .collect();
        let configs: Vec<BGPConfiguration> = r.bgp_configs.iter().map(|c| (*c).clone()).collect();
        Snapshot {
            no_export,
            bgp_filters,
            nodes,
            global: GlobalBgp {
                prefix_advertisements: crate::bgpfilter::prefix_advertisements(&configs, name)
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "prefixAdvertisements ignored");
                        Vec::new()
                    }),
                ..global_view(&configs)
            },
            peers,
            own_blocks: r.own_blocks.clone(),
            workloads,
        }
    }
}

/// Reads the snapshot for node `name` by listing the datastore: the full recompute the
/// agent's watch-fed model is checked against, and what `calicoctl node peers` uses.
pub async fn read_snapshot(
    ds: &Datastore,
    ipam: &Ipam,
    name: &str,
) -> Result<Snapshot, SnapshotError> {
    let err = |what: &str| {
        let what = what.to_string();
        move |source| SnapshotError::Datastore {
            what,
            source: Box::new(source),
        }
    };
    let configs = ds
        .list::<BGPConfiguration>(None)
        .await
        .map_err(err("listing BGPConfigurations"))?
        .items;
    let nodes = ds
        .list::<Node>(None)
        .await
        .map_err(err("listing Nodes"))?
        .items;
    let peers = ds
        .list::<BGPPeer>(None)
        .await
        .map_err(err("listing BGPPeers"))?
        .items;
    let own_blocks: BTreeSet<IpNet> = ipam
        .host_affinities(name)
        .await
        .map_err(|source| SnapshotError::Ipam {
            what: format!("reading affinities of {name}"),
            source,
        })?
        .into_iter()
        .filter(|(_, state)| *state == calico_ipam::model::AffinityState::Confirmed)
        .map(|(cidr, _)| cidr)
        .collect();
    let workloads = ds
        .list::<WorkloadEndpoint>(None)
        .await
        .map_err(err("listing WorkloadEndpoints"))?
        .items;
    let pools = ds
        .list::<calico_api::IPPool>(None)
        .await
        .map_err(err("listing IPPools"))?
        .items;
    let filters = ds
        .list::<calico_api::BGPFilter>(None)
        .await
        .map_err(err("listing BGPFilters"))?
        .items;
    let configs: Vec<&BGPConfiguration> = configs.iter().collect();
    let nodes: Vec<&Node> = nodes.iter().collect();
    let peers: Vec<&BGPPeer> = peers.iter().collect();
    let filters: Vec<&calico_api::BGPFilter> = filters.iter().collect();
    let pools: Vec<&calico_api::IPPool> = pools.iter().collect();
    let local: Vec<&WorkloadEndpoint> = workloads
        .iter()
        .filter(|w| w.spec.node.as_deref() == Some(name))
        .collect();
    Ok(Snapshot::compute(
        &RoutingResources {
            bgp_configs: &configs,
            nodes: &nodes,
            peers: &peers,
            bgp_filters: &filters,
            ip_pools: &pools,
            own_blocks: &own_blocks,
            local_workloads: &local,
        },
        name,
    ))
}

/// The sessions node `name` must run, from the datastore alone (`calicoctl node peers`).
pub async fn sessions_of(
    ds: &Datastore,
    ipam: &Ipam,
    name: &str,
) -> Result<Vec<Session>, SnapshotError> {
    let snap = read_snapshot(ds, ipam, name).await?;
    Ok(peering::sessions_for(
        name,
        &snap.nodes,
        &snap.global,
        &snap.peers,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_to_seconds() {
        assert_eq!(parse_duration_secs("120s"), Some(120));
        assert_eq!(parse_duration_secs("2m"), Some(120));
        assert_eq!(parse_duration_secs("1h30m5s"), Some(5405));
        assert_eq!(parse_duration_secs("5"), None);
        assert_eq!(parse_duration_secs("5d"), None);
    }

    #[test]
    fn node_view_reads_addresses_with_prefixes() {
        let mut n = Node::new("node1", Default::default());
        n.spec.bgp = Some(calico_api::NodeBGPSpec {
            ipv4_address: Some("192.168.33.11/24".into()),
            route_reflector_cluster_id: Some("224.0.0.1".into()),
            ..Default::default()
        });
        let v = node_view(&n, &BTreeMap::from([("node1".to_string(), 1790)]));
        assert_eq!(v.ipv4, Some("192.168.33.11".parse().unwrap()));
        assert_eq!(v.listen_port, Some(1790));
        assert_eq!(v.rr_cluster_id.as_deref(), Some("224.0.0.1"));
    }
}
