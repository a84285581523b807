//! `BGPPeer` (skeleton generated once by tools/gen_skeletons.py, maintained by hand).

#![allow(clippy::upper_case_acronyms)]

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum NextHopMode {
    Auto,
    #[serde(rename = "Self")]
    SelfAddress,
    Keep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ReversePeering {
    Auto,
    Manual,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SourceAddress {
    UseNodeIP,
    None,
}

/// A BGP session (or set of sessions) Calico nodes establish.
#[derive(CustomResource)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "BGPPeer",
    plural = "bgppeers",
    singular = "bgppeer",
    printcolumn(
        name = "Node Selector",
        type_ = "string",
        json_path = ".spec.nodeSelector"
    ),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(
        name = "Local ASN",
        type_ = "string",
        json_path = ".spec.localASNumber"
    ),
    printcolumn(
        name = "Peer Selector",
        type_ = "string",
        json_path = ".spec.peerSelector"
    ),
    printcolumn(name = "Peer IP", type_ = "string", json_path = ".spec.peerIP"),
    printcolumn(name = "Peer ASN", type_ = "string", json_path = ".spec.asNumber"),
    derive = "PartialEq",
    derive = "Default"
)]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPPeerSpec {
    /// AS number of the remote peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    /// Names of BGPFilters applied to the session, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub filters: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_original_next_hop: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    /// AS number this side presents, instead of the node's.
    #[serde(rename = "localASNumber", skip_serializing_if = "Option::is_none")]
    pub local_as_number: Option<AsNumber>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_workload_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<NextHopMode>,
    /// The one node that peers (empty with nodeSelector for many).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Nodes that peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    #[serde(
        rename = "numAllowedLocalASNumbers",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_allowed_local_as_numbers: Option<i32>,
    /// TCP-MD5 password, from a Kubernetes secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<BGPPassword>,
    /// Address of the remote peer, optionally with :port.
    #[serde(rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<String>,
    /// Calico nodes to peer with (instead of peerIP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachable_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse_peering: Option<ReversePeering>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<i64>,
}
