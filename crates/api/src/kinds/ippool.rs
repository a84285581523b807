//! `IPPool` (skeleton generated once by tools/gen_skeletons.py, maintained by hand).

#![allow(clippy::upper_case_acronyms)]

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum IPPoolAllowedUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AssignmentMode {
    Automatic,
    Manual,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum IPIPMode {
    Never,
    Always,
    CrossSubnet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum VXLANMode {
    Never,
    Always,
    CrossSubnet,
}

/// A range of addresses that Calico IPAM hands out in blocks.
#[derive(CustomResource)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "IPPool",
    plural = "ippools",
    singular = "ippool",
    status = "IPPoolStatus",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "VXLAN", type_ = "string", json_path = ".spec.vxlanMode"),
    printcolumn(name = "IPIP", type_ = "string", json_path = ".spec.ipipMode"),
    printcolumn(name = "NAT", type_ = "boolean", json_path = ".spec.natOutgoing"),
    printcolumn(
        name = "Allocatable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Allocatable')].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    derive = "PartialEq",
    derive = "Default"
)]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPPoolSpec {
    /// What addresses from the pool are for (default Workload and Tunnel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allowed_uses: Vec<IPPoolAllowedUse>,
    /// Automatic pools serve any request; Manual pools only explicit ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Automatic"))]
    pub assignment_mode: Option<AssignmentMode>,
    /// Prefix length of the blocks nodes claim (default 26 for IPv4, 122 for IPv6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<i64>,
    /// The pool's network, strictly masked.
    pub cidr: String,
    /// Do not announce this pool's routes over BGP.
    #[serde(rename = "disableBGPExport", skip_serializing_if = "Option::is_none")]
    pub disable_bgp_export: Option<bool>,
    /// Stop allocating from this pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// IP-in-IP encapsulation between nodes (IPv4 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<IPIPMode>,
    /// Namespaces whose workloads may use the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    /// Masquerade traffic from the pool to destinations outside all pools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat_outgoing: Option<bool>,
    /// Nodes that may allocate from the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "all()"))]
    pub node_selector: Option<String>,
    /// VXLAN encapsulation between nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<VXLANMode>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPPoolStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-map-keys" = ["type"]))]
    #[schemars(extend("x-kubernetes-list-type" = "map"))]
    pub conditions: Vec<Condition>,
}

impl IPPoolSpec {
    /// The pool's network, if `cidr` parses.
    pub fn net(&self) -> Option<ipnet::IpNet> {
        self.cidr.parse().ok()
    }

    /// Block size in effect: the one set, or Calico's default for the family (26 / 122).
    pub fn effective_block_size(&self) -> Option<u8> {
        match self.block_size.filter(|b| *b != 0) {
            Some(b) => u8::try_from(b).ok(),
            None => match self.net()? {
                ipnet::IpNet::V4(_) => Some(26),
                ipnet::IpNet::V6(_) => Some(122),
            },
        }
    }

    /// Whether traffic leaving the pool is masqueraded (unset means no).
    pub fn nat_outgoing(&self) -> bool {
        self.nat_outgoing == Some(true)
    }

    /// Whether IPAM may allocate from the pool.
    pub fn is_enabled(&self) -> bool {
        self.disabled != Some(true)
    }

    /// Whether the pool serves `usage`; no allowed uses means Workload and Tunnel.
    pub fn allows(&self, usage: IPPoolAllowedUse) -> bool {
        if self.allowed_uses.is_empty() {
            matches!(usage, IPPoolAllowedUse::Workload | IPPoolAllowedUse::Tunnel)
        } else {
            self.allowed_uses.contains(&usage)
        }
    }
}
