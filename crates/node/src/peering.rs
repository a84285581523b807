//! Who peers with whom, decided from the datastore alone, the way Calico decides it.
//!
//! Pure: `sessions_for` maps a snapshot of nodes, the BGP configuration and the BGPPeers to the
//! sessions one node must run. The agent feeds the result to the speaker, and
//! `calicoctl node peers` prints it so an operator can check a design before running it.
//!
//! Rules (Calico's):
//! - the node-to-node mesh (on unless `nodeToNodeMeshEnabled: false`) peers with every other
//!   node that has an address in the family;
//! - a BGPPeer with neither `node` nor `nodeSelector` is global; `node: X` applies to node X only;
//!   `nodeSelector` applies to the nodes it matches;
//! - a BGPPeer names its remote side by `peerIP` (optionally `ip:port`) or by `peerSelector`
//!   (every matching Calico node, with that node's own AS and address);
//! - a node never peers with itself; an explicit peer replaces a mesh session to the same address;
//! - a route reflector (a node with `routeReflectorClusterID`) treats selected Calico nodes that
//!   are not reflectors of the same cluster as its clients; when two sessions share an address
//!   the explicit one wins.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What the peering rules need to know about one Calico node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeView {
    pub name: String,
    pub ipv4: Option<IpAddr>,
    pub ipv6: Option<IpAddr>,
    pub as_number: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub rr_cluster_id: Option<String>,
    /// The node's own BGP listen port (`node.<name>` BGPConfiguration), when not 179.
    pub listen_port: Option<u16>,
}

/// A password held in a Kubernetes-style secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

/// The cluster-wide BGP settings (the `default` BGPConfiguration, with Calico's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalBgp {
    pub as_number: u32,
    pub mesh_enabled: bool,
    pub listen_port: u16,
    pub mesh_password: Option<SecretRef>,
    pub mesh_max_restart_time_secs: Option<u32>,
    /// Communities for exported routes inside a CIDR (`prefixAdvertisements`, names resolved;
    /// a node's own `node.<name>` configuration replaces the default's list).
    pub prefix_advertisements: Vec<calico_bgp::speaker::PrefixCommunities>,
}

impl Default for GlobalBgp {
    fn default() -> Self {
        GlobalBgp {
            as_number: 64512,
            mesh_enabled: true,
            listen_port: 179,
            mesh_password: None,
            mesh_max_restart_time_secs: None,
            prefix_advertisements: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NextHopMode {
    /// eBGP: next hop self; iBGP: keep the received next hop.
    #[default]
    Auto,
    #[serde(rename = "Self")]
    SelfHop,
    Keep,
}

/// One BGPPeer resource, as the peering rules read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerView {
    pub name: String,
    pub node: Option<String>,
    pub node_selector: Option<String>,
    pub peer_ip: Option<String>,
    pub peer_selector: Option<String>,
    pub as_number: Option<u32>,
    pub local_as_number: Option<u32>,
    pub password: Option<SecretRef>,
    pub next_hop_mode: NextHopMode,
    pub max_restart_time_secs: Option<u32>,
    pub keepalive_time_secs: Option<u32>,
    pub ttl_security: Option<u8>,
    pub filters: Vec<String>,
    pub source_address_node_ip: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SessionKind {
    Mesh,
    Global,
    Node,
    /// A route reflector's session with one of its clients (whatever BGPPeer asked for it):
    /// routes learned from the client are reflected to every other iBGP peer.
    #[serde(rename = "reflector-client")]
    ReflectorClient,
}

/// One BGP session a node must run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub peer_address: IpAddr,
    pub peer_port: u16,
    pub peer_as: u32,
    pub local_as: u32,
    #[serde(rename = "type")]
    pub kind: SessionKind,
    /// The BGPPeer that asked for this session (none for the mesh).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bgp_peer: Option<String>,
    /// The remote side is one of our nodes (mesh or peerSelector).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_node: Option<String>,
    pub route_reflector_client: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    pub next_hop_mode: NextHopMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graceful_restart_secs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_secs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub filters: Vec<String>,
}

impl Session {
    pub fn is_ipv6(&self) -> bool {
        self.peer_address.is_ipv6()
    }
    pub fn is_ebgp(&self) -> bool {
        self.peer_as != self.local_as
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeeringError {
    #[error("node {0:?} is not in the datastore")]
    UnknownNode(String),
    #[error("BGPPeer {peer:?}: {field}: {reason}")]
    BadPeer {
        peer: String,
        field: &'static str,
        reason: String,
    },
}

fn selector_matches(
    peer: &str,
    field: &'static str,
    selector: &str,
    labels: &BTreeMap<String, String>,
) -> Result<bool, PeeringError> {
    let sel = calico_selector::Selector::parse(selector).map_err(|e| PeeringError::BadPeer {
        peer: peer.to_string(),
        field,
        reason: e.to_string(),
    })?;
    Ok(sel.matches(labels))
}

/// Parses `peerIP`: an address, `a.b.c.d:port` or `[v6]:port`.
pub fn parse_peer_ip(peer: &str, value: &str) -> Result<(IpAddr, Option<u16>), PeeringError> {
    let bad = |reason: &str| PeeringError::BadPeer {
        peer: peer.to_string(),
        field: "spec.peerIP",
        reason: format!("{value:?} {reason}"),
    };
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    let addr: std::net::SocketAddr = value
        .parse()
        .map_err(|_| bad("is not an address, ip:port or [ipv6]:port"))?;
    Ok((addr.ip(), Some(addr.port())))
}

fn applies_to(peer: &PeerView, local: &NodeView) -> Result<bool, PeeringError> {
    if let Some(node) = &peer.node {
        return Ok(node == &local.name);
    }
    match &peer.node_selector {
        Some(sel) if !sel.trim().is_empty() => {
            selector_matches(&peer.name, "spec.nodeSelector", sel, &local.labels)
        }
        _ => Ok(true),
    }
}

fn kind_of(peer: &PeerView) -> SessionKind {
    if peer.node.is_some()
        || peer
            .node_selector
            .as_deref()
            .is_some_and(|s| !s.trim().is_empty())
    {
        SessionKind::Node
    } else {
        SessionKind::Global
    }
}

/// The sessions node `local_name` must run, IPv4 and IPv6, sorted by peer address.
pub fn sessions_for(
    local_name: &str,
    nodes: &[NodeView],
    global: &GlobalBgp,
    peers: &[PeerView],
) -> Result<Vec<Session>, PeeringError> {
    let local = nodes
        .iter()
        .find(|n| n.name == local_name)
        .ok_or_else(|| PeeringError::UnknownNode(local_name.to_string()))?;
    let local_as = local.as_number.unwrap_or(global.as_number);
    let node_as = |n: &NodeView| n.as_number.unwrap_or(global.as_number);
    let node_port = |n: &NodeView| n.listen_port.unwrap_or(global.listen_port);
    let local_addrs = [local.ipv4, local.ipv6];
    let mut by_addr: BTreeMap<IpAddr, Session> = BTreeMap::new();

    if global.mesh_enabled {
        for remote in nodes.iter().filter(|n| n.name != local.name) {
            for (mine, theirs) in local_addrs.iter().zip([remote.ipv4, remote.ipv6]) {
                let (Some(_), Some(addr)) = (mine, theirs) else {
                    continue;
                };
                by_addr.insert(
                    addr,
                    Session {
                        peer_address: addr,
                        peer_port: node_port(remote),
                        peer_as: node_as(remote),
                        local_as,
                        kind: SessionKind::Mesh,
                        bgp_peer: None,
                        peer_node: Some(remote.name.clone()),
                        route_reflector_client: false,
                        password: global.mesh_password.clone(),
                        next_hop_mode: NextHopMode::Auto,
                        graceful_restart_secs: global.mesh_max_restart_time_secs,
                        keepalive_secs: None,
                        ttl_security: None,
                        filters: vec![],
                    },
                );
            }
        }
    }

    for peer in peers {
        if !applies_to(peer, local)? {
            continue;
        }
        let session = |addr: IpAddr, port: u16, peer_as: u32, peer_node: Option<&NodeView>| {
            let rr_client = match (&local.rr_cluster_id, peer_node) {
                (Some(cluster), Some(n)) => n.rr_cluster_id.as_ref() != Some(cluster),
                _ => false,
            };
            Session {
                peer_address: addr,
                peer_port: port,
                peer_as,
                local_as: peer.local_as_number.unwrap_or(local_as),
                kind: if rr_client {
                    SessionKind::ReflectorClient
                } else {
                    kind_of(peer)
                },
                bgp_peer: Some(peer.name.clone()),
                peer_node: peer_node.map(|n| n.name.clone()),
                route_reflector_client: rr_client,
                password: peer.password.clone(),
                next_hop_mode: peer.next_hop_mode,
                graceful_restart_secs: peer.max_restart_time_secs,
                keepalive_secs: peer.keepalive_time_secs,
                ttl_security: peer.ttl_security,
                filters: peer.filters.clone(),
            }
        };
        match (&peer.peer_ip, &peer.peer_selector) {
            (Some(ip), None) => {
                let (addr, port) = parse_peer_ip(&peer.name, ip)?;
                if local_addrs.contains(&Some(addr)) {
                    continue;
                }
                let peer_as = peer.as_number.ok_or_else(|| PeeringError::BadPeer {
                    peer: peer.name.clone(),
                    field: "spec.asNumber",
                    reason: "required with spec.peerIP".into(),
                })?;
                // A peer address that is one of our nodes keeps that node's listen port.
                let known = nodes
                    .iter()
                    .find(|n| n.ipv4 == Some(addr) || n.ipv6 == Some(addr));
                let port = port.unwrap_or_else(|| known.map_or(179, node_port));
                by_addr.insert(addr, session(addr, port, peer_as, known));
            }
            (None, Some(sel)) => {
                for remote in nodes.iter().filter(|n| n.name != local.name) {
                    if !selector_matches(&peer.name, "spec.peerSelector", sel, &remote.labels)? {
                        continue;
                    }
                    for (mine, theirs) in local_addrs.iter().zip([remote.ipv4, remote.ipv6]) {
                        let (Some(_), Some(addr)) = (mine, theirs) else {
                            continue;
                        };
                        by_addr.insert(
                            addr,
                            session(addr, node_port(remote), node_as(remote), Some(remote)),
                        );
                    }
                }
            }
            (Some(_), Some(_)) => {
                return Err(PeeringError::BadPeer {
                    peer: peer.name.clone(),
                    field: "spec.peerSelector",
                    reason: "cannot be used together with spec.peerIP".into(),
                });
            }
            (None, None) => {
                return Err(PeeringError::BadPeer {
                    peer: peer.name.clone(),
                    field: "spec.peerIP",
                    reason: "one of spec.peerIP or spec.peerSelector is required".into(),
                });
            }
        }
    }
    Ok(by_addr.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, v4: &str) -> NodeView {
        NodeView {
            name: name.into(),
            ipv4: Some(v4.parse().unwrap()),
            ..Default::default()
        }
    }

    fn addrs(s: &[Session]) -> Vec<String> {
        s.iter().map(|s| s.peer_address.to_string()).collect()
    }

    #[test]
    fn mesh_peers_with_every_other_node() {
        let nodes = [
            node("node1", "192.168.33.11"),
            node("node2", "192.168.33.12"),
            node("node3", "192.168.33.13"),
        ];
        let s = sessions_for("node1", &nodes, &GlobalBgp::default(), &[]).unwrap();
        assert_eq!(addrs(&s), ["192.168.33.12", "192.168.33.13"]);
        assert!(
            s.iter()
                .all(|s| s.kind == SessionKind::Mesh && s.peer_as == 64512)
        );
    }

    #[test]
    fn mesh_off_leaves_only_explicit_peers() {
        let nodes = [
            node("node1", "192.168.33.11"),
            node("node2", "192.168.33.12"),
        ];
        let global = GlobalBgp {
            mesh_enabled: false,
            ..Default::default()
        };
        let peers = [PeerView {
            name: "tor".into(),
            peer_ip: Some("192.168.33.1".into()),
            as_number: Some(65001),
            ..Default::default()
        }];
        let s = sessions_for("node1", &nodes, &global, &peers).unwrap();
        assert_eq!(addrs(&s), ["192.168.33.1"]);
        assert_eq!(s[0].kind, SessionKind::Global);
        assert!(s[0].is_ebgp());
    }

    #[test]
    fn node_specific_peer_applies_only_to_its_node() {
        let nodes = [
            node("node1", "192.168.33.11"),
            node("node2", "192.168.33.12"),
        ];
        let peers = [PeerView {
            name: "tor-of-node2".into(),
            node: Some("node2".into()),
            peer_ip: Some("192.168.33.1:1790".into()),
            as_number: Some(65001),
            ..Default::default()
        }];
        let s1 = sessions_for("node1", &nodes, &GlobalBgp::default(), &peers).unwrap();
        assert_eq!(addrs(&s1), ["192.168.33.12"]);
        let s2 = sessions_for("node2", &nodes, &GlobalBgp::default(), &peers).unwrap();
        let tor = s2.iter().find(|s| s.bgp_peer.is_some()).unwrap();
        assert_eq!((tor.peer_port, tor.kind), (1790, SessionKind::Node));
    }

    #[test]
    fn route_reflector_topology_without_mesh() {
        let mut rr = node("rr", "192.168.33.20");
        rr.rr_cluster_id = Some("224.0.0.1".into());
        rr.labels.insert("route-reflector".into(), "true".into());
        let nodes = [
            rr,
            node("node1", "192.168.33.11"),
            node("node2", "192.168.33.12"),
        ];
        let global = GlobalBgp {
            mesh_enabled: false,
            ..Default::default()
        };
        let peers = [
            // Every node peers with the reflectors.
            PeerView {
                name: "peer-with-rr".into(),
                peer_selector: Some("has(route-reflector)".into()),
                ..Default::default()
            },
            // The reflectors peer with every node.
            PeerView {
                name: "rr-to-all".into(),
                node_selector: Some("has(route-reflector)".into()),
                peer_selector: Some("all()".into()),
                ..Default::default()
            },
        ];
        let at_rr = sessions_for("rr", &nodes, &global, &peers).unwrap();
        assert_eq!(addrs(&at_rr), ["192.168.33.11", "192.168.33.12"]);
        assert!(at_rr.iter().all(|s| s.route_reflector_client));
        assert!(at_rr.iter().all(|s| s.kind == SessionKind::ReflectorClient));
        let at_client = sessions_for("node1", &nodes, &global, &peers).unwrap();
        assert_eq!(addrs(&at_client), ["192.168.33.20"]);
        assert!(!at_client[0].route_reflector_client);
        // The client sees an ordinary session (peerSelector over all nodes, so "global").
        assert_eq!(at_client[0].kind, SessionKind::Global);
        let yaml = serde_yaml_ng::to_string(&at_rr[0]).unwrap();
        assert!(yaml.contains("type: reflector-client"), "{yaml}");
    }

    #[test]
    fn never_peers_with_itself_and_explicit_beats_mesh() {
        let nodes = [
            node("node1", "192.168.33.11"),
            node("node2", "192.168.33.12"),
        ];
        let peers = [PeerView {
            name: "explicit".into(),
            peer_ip: Some("192.168.33.12".into()),
            as_number: Some(64512),
            password: Some(SecretRef {
                name: "bgp-secrets".into(),
                key: "node2".into(),
            }),
            ..Default::default()
        }];
        let s = sessions_for("node2", &nodes, &GlobalBgp::default(), &peers).unwrap();
        assert_eq!(addrs(&s), ["192.168.33.11"]);
        let s = sessions_for("node1", &nodes, &GlobalBgp::default(), &peers).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].kind, SessionKind::Global);
        assert!(s[0].password.is_some());
    }

    #[test]
    fn per_node_as_and_local_as_override() {
        let mut n2 = node("node2", "192.168.33.12");
        n2.as_number = Some(65002);
        let nodes = [node("node1", "192.168.33.11"), n2];
        let s = sessions_for("node1", &nodes, &GlobalBgp::default(), &[]).unwrap();
        assert_eq!((s[0].local_as, s[0].peer_as), (64512, 65002));
        let peers = [PeerView {
            name: "p".into(),
            peer_ip: Some("192.168.33.1".into()),
            as_number: Some(65001),
            local_as_number: Some(65100),
            ..Default::default()
        }];
        let s = sessions_for("node1", &nodes, &GlobalBgp::default(), &peers).unwrap();
        let p = s.iter().find(|s| s.bgp_peer.is_some()).unwrap();
        assert_eq!(p.local_as, 65100);
    }

    #[test]
    fn bad_peers_name_the_field() {
        let nodes = [node("node1", "192.168.33.11")];
        let missing_as = [PeerView {
            name: "p".into(),
            peer_ip: Some("192.168.33.1".into()),
            ..Default::default()
        }];
        let err = sessions_for("node1", &nodes, &GlobalBgp::default(), &missing_as).unwrap_err();
        assert_eq!(
            err.to_string(),
            "BGPPeer \"p\": spec.asNumber: required with spec.peerIP"
        );
        let bad_ip = [PeerView {
            name: "p".into(),
            peer_ip: Some("not-an-ip".into()),
            as_number: Some(1),
            ..Default::default()
        }];
        let err = sessions_for("node1", &nodes, &GlobalBgp::default(), &bad_ip).unwrap_err();
        assert!(err.to_string().contains("spec.peerIP"), "{err}");
    }

    #[test]
    fn ipv6_sessions_only_between_nodes_with_ipv6() {
        let mut a = node("a", "192.168.33.11");
        a.ipv6 = Some("fd00::11".parse().unwrap());
        let mut b = node("b", "192.168.33.12");
        b.ipv6 = Some("fd00::12".parse().unwrap());
        let c = node("c", "192.168.33.13");
        let s = sessions_for("a", &[a, b, c], &GlobalBgp::default(), &[]).unwrap();
        assert_eq!(addrs(&s), ["192.168.33.12", "192.168.33.13", "fd00::12"]);
    }
}
