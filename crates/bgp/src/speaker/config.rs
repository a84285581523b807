//! Configuration: the desired state the agent hands the speaker ([`SpeakerConfig`], one
//! [`PeerConfig`] per session, the routes this node originates) and what a change of it means
//! for a running session ([`PeerConfig::needs_restart`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::policy::PolicyRule;
use crate::codec::{Family, LargeCommunity};

/// What the agent wants the speaker to do. Every call to
/// [`Speaker::set_config`](super::Speaker::set_config) replaces the whole desired state; the
/// speaker changes only what differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// Default: `::` (dual stack).
    #[serde(default)]
    pub listen_addr: Option<IpAddr>,
    #[serde(default = "default_port")]
    pub listen_port: u16,
    /// Next hop for IPv4 routes sent over IPv6 sessions (and for next-hop-self when the
    /// session is IPv6); IPv4 sessions use their local address.
    #[serde(default)]
    pub next_hop_v4: Option<Ipv4Addr>,
    #[serde(default)]
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Cluster id when this node is a route reflector (Calico's routeReflectorClusterID).
    /// Without it, `route_reflector_client` peers are treated as plain iBGP peers.
    #[serde(default)]
    pub cluster_id: Option<Ipv4Addr>,
    /// This process restarted with forwarding state preserved: announce the Restart State bit
    /// (RFC 4724) in the first OPEN to each peer.
    #[serde(default)]
    pub restarted: bool,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub originated: Vec<Route>,
    /// Communities added to every exported route inside a CIDR (Calico's BGPConfiguration
    /// `prefixAdvertisements`), after the peer's export rules accepted it.
    #[serde(default)]
    pub prefix_communities: Vec<PrefixCommunities>,
}

/// Communities that every route announced inside `cidr` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrefixCommunities {
    pub cidr: IpNet,
    #[serde(default)]
    pub communities: Vec<u32>,
    #[serde(default)]
    pub large_communities: Vec<LargeCommunity>,
}

fn default_port() -> u16 {
    179
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NextHopMode {
    /// eBGP: self; iBGP: keep learned, self for our own routes (BGP default, Calico `Auto`).
    #[default]
    Auto,
    /// Always set ourselves as next hop (Calico `Self`).
    #[serde(rename = "Self")]
    SelfMode,
    /// Never change a learned next hop, even on eBGP (Calico `Keep`).
    Keep,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerConfig {
    pub address: IpAddr,
    #[serde(default = "default_port")]
    pub port: u16,
    pub remote_as: u32,
    /// Overrides [`SpeakerConfig::local_as`] for this session (Calico localASNumber).
    #[serde(default)]
    pub local_as: Option<u32>,
    /// TCP-MD5 key (RFC 2385).
    #[serde(default)]
    pub password: Option<String>,
    /// GTSM: accept packets from at most this many hops away.
    #[serde(default)]
    pub ttl_security: Option<u8>,
    #[serde(default)]
    pub keepalive: Option<u16>,
    /// Proposed hold time, default 90 s.
    #[serde(default)]
    pub hold_time: Option<u16>,
    /// Our restart time announced in the graceful-restart capability (default 120 s); `Some(0)`
    /// disables graceful restart for this peer.
    #[serde(default)]
    pub graceful_restart_time: Option<u16>,
    #[serde(default)]
    pub next_hop_mode: NextHopMode,
    #[serde(default)]
    pub route_reflector_client: bool,
    #[serde(default)]
    pub import: Vec<PolicyRule>,
    #[serde(default)]
    pub export: Vec<PolicyRule>,
    #[serde(default)]
    pub passive: bool,
    /// Address families to exchange; default: the family of `address` (Calico runs separate
    /// IPv4 and IPv6 sessions).
    #[serde(default)]
    pub families: Option<Vec<AfiName>>,
    /// First connect-retry delay in seconds (default 5, doubling up to 120).
    #[serde(default)]
    pub connect_retry: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfiName {
    Ipv4,
    Ipv6,
}

impl AfiName {
    pub fn family(self) -> Family {
        match self {
            AfiName::Ipv4 => Family::IPV4_UNICAST,
            AfiName::Ipv6 => Family::IPV6_UNICAST,
        }
    }
    pub fn of(addr: IpAddr) -> AfiName {
        if addr.is_ipv4() {
            AfiName::Ipv4
        } else {
            AfiName::Ipv6
        }
    }
}

impl PeerConfig {
    pub(crate) fn families(&self) -> Vec<Family> {
        match &self.families {
            Some(f) if !f.is_empty() => f.iter().map(|a| a.family()).collect(),
            _ => vec![Family::of(self.address)],
        }
    }

    /// Whether a change from `self` to `new` needs the session to restart.
    pub(crate) fn needs_restart(&self, new: &PeerConfig) -> bool {
        let strip = |p: &PeerConfig| PeerConfig {
            import: Vec::new(),
            export: Vec::new(),
            next_hop_mode: NextHopMode::Auto,
            ..p.clone()
        };
        strip(self) != strip(new)
    }
}

/// A route this node originates (its IPAM blocks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub prefix: IpNet,
    /// Default: ourselves (the session's local address).
    #[serde(default)]
    pub next_hop: Option<IpAddr>,
    #[serde(default)]
    pub communities: Vec<u32>,
    #[serde(default)]
    pub large_communities: Vec<LargeCommunity>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_uses_calico_style_names() {
        let cfg: SpeakerConfig = serde_json::from_value(serde_json::json!({
            "routerId": "10.0.0.1", "localAs": 64512,
            "peers": [{"address": "10.0.0.2", "remoteAs": 65000, "nextHopMode": "Self",
                       "export": [{"cidr": "192.168.0.0/16", "action": "Reject"}]}],
            "originated": [{"prefix": "192.168.1.0/26"}]
        }))
        .expect("parses");
        assert_eq!(cfg.listen_port, 179);
        assert_eq!(cfg.peers[0].next_hop_mode, NextHopMode::SelfMode);
        assert_eq!(cfg.peers[0].families(), vec![Family::IPV4_UNICAST]);
        assert!(!cfg.peers[0].needs_restart(&PeerConfig {
            export: vec![],
            ..cfg.peers[0].clone()
        }));
        assert!(cfg.peers[0].needs_restart(&PeerConfig {
            remote_as: 1,
            ..cfg.peers[0].clone()
        }));
    }
}
