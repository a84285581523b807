//! Calico's IPAM records as stored in etcd (libcalico-go's backend model, not the v3 CRDs): their
//! JSON field names and their keys.
//!
//! | record | key | value |
//! |---|---|---|
//! | block | `/calico/ipam/v2/assignment/ipv4/block/10.0.0.64-26` | [`AllocationBlock`] |
//! | affinity | `/calico/ipam/v2/host/<node>/ipv4/block/10.0.0.64-26` | [`AffinityValue`] |
//! | handle | `/calico/ipam/v2/handle/<handle id>` | [`HandleValue`] |
//!
//! The cluster-wide settings ([`IpamConfig`]) are not a record of this model: they are the
//! `default` IPAMConfiguration resource (`/calico/resources/v3/projectcalico.org/
//! ipamconfigurations/default`), the one object that calicoctl, kubectl (through the
//! controllers' mirror) and `calicoctl ipam configure` all write and the allocator reads.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cidr::{Family, key_cidr, parse_key_cidr};

pub const IPAM_PREFIX: &str = "/calico/ipam/v2/";
pub const BLOCKS_PREFIX: &str = "/calico/ipam/v2/assignment/";
pub const HOSTS_PREFIX: &str = "/calico/ipam/v2/host/";
pub const HANDLES_PREFIX: &str = "/calico/ipam/v2/handle/";
/// The one IPAMConfiguration that counts (Calico reads only `default`).
pub const IPAM_CONFIG_NAME: &str = "default";

/// Attribute keys Calico clients set on allocations.
pub const ATTR_NODE: &str = "node";
pub const ATTR_NAMESPACE: &str = "namespace";
pub const ATTR_POD: &str = "pod";
pub const ATTR_TYPE: &str = "type";
pub const ATTR_TIMESTAMP: &str = "timestamp";

pub fn block_key(cidr: &IpNet) -> String {
    format!(
        "{BLOCKS_PREFIX}ipv{}/block/{}",
        Family::of_net(cidr).version(),
        key_cidr(cidr)
    )
}

pub fn blocks_prefix(family: Family) -> String {
    format!("{BLOCKS_PREFIX}ipv{}/block/", family.version())
}

pub fn affinity_key(host: &str, cidr: &IpNet) -> String {
    format!(
        "{HOSTS_PREFIX}{host}/ipv{}/block/{}",
        Family::of_net(cidr).version(),
        key_cidr(cidr)
    )
}

pub fn host_affinities_prefix(host: &str, family: Family) -> String {
    format!("{HOSTS_PREFIX}{host}/ipv{}/block/", family.version())
}

pub fn handle_key(handle_id: &str) -> String {
    format!("{HANDLES_PREFIX}{handle_id}")
}

/// The CIDR of a block key, or None for any other key.
pub fn parse_block_key(key: &str) -> Option<IpNet> {
    let rest = key.strip_prefix(BLOCKS_PREFIX)?;
    let (_, cidr) = rest.split_once("/block/")?;
    parse_key_cidr(cidr).ok()
}

/// The (host, CIDR) of an affinity key, or None for any other key.
pub fn parse_affinity_key(key: &str) -> Option<(String, IpNet)> {
    let rest = key.strip_prefix(HOSTS_PREFIX)?;
    let (host, rest) = rest.split_once('/')?;
    let (_, cidr) = rest.split_once("/block/")?;
    Some((host.to_owned(), parse_key_cidr(cidr).ok()?))
}

pub fn parse_handle_key(key: &str) -> Option<&str> {
    key.strip_prefix(HANDLES_PREFIX)
        .filter(|h| !h.contains('/'))
}

/// Metadata of one allocation: the handle it belongs to and free-form attributes (node,
/// namespace, pod, container, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationAttribute {
    #[serde(rename = "handle_id")]
    pub handle_id: Option<String>,
    #[serde(default)]
    pub secondary: BTreeMap<String, String>,
}

/// One block: which of its addresses are allocated, and to what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationBlock {
    pub cidr: IpNet,
    /// `host:<node>` when the block is affine to a node.
    pub affinity: Option<String>,
    /// One entry per address: None when free, otherwise an index into `attributes`.
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals in the order they will be handed out (released ones go to the back).
    pub unallocated: Vec<usize>,
    pub attributes: Vec<AllocationAttribute>,
    #[serde(default)]
    pub strict_affinity: bool,
    /// Incremented on every write; recorded per allocation so a release can prove it is
    /// releasing the same allocation it saw.
    #[serde(default)]
    pub sequence_number: u64,
    #[serde(default)]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    #[serde(default)]
    pub deleted: bool,
}

/// The value under an affinity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffinityValue {
    pub state: AffinityState,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AffinityState {
    #[serde(rename = "pending")]
    Pending,
    #[serde(rename = "confirmed")]
    Confirmed,
    #[serde(rename = "pendingDeletion")]
    PendingDeletion,
}

impl AffinityValue {
    pub fn new(state: AffinityState) -> Self {
        AffinityValue {
            state,
            deleted: false,
        }
    }
}

/// The value under a handle key: how many addresses the handle holds in each block (keyed by
/// the block CIDR with its `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleValue {
    #[serde(default)]
    pub block: BTreeMap<String, usize>,
    #[serde(default)]
    pub deleted: bool,
}

impl HandleValue {
    pub fn total(&self) -> usize {
        self.block.values().sum()
    }

    /// Adds `n` addresses in `block`.
    pub fn add(&mut self, block: &IpNet, n: usize) {
        if n > 0 {
            *self.block.entry(block.to_string()).or_default() += n;
        }
    }

    /// Removes `n` addresses in `block` (saturating), dropping the entry at zero.
    pub fn remove(&mut self, block: &IpNet, n: usize) {
        let k = block.to_string();
        if let Some(c) = self.block.get_mut(&k) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.block.remove(&k);
            }
        }
    }
}

/// Cluster-wide IPAM settings: what the allocator takes from the `default`
/// IPAMConfiguration's spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpamConfig {
    pub strict_affinity: bool,
    pub auto_allocate_blocks: bool,
    /// 0 means unlimited.
    pub max_blocks_per_host: u32,
}

impl IpamConfig {
    /// The settings of an IPAMConfiguration spec (a negative maxBlocksPerHost, which
    /// validation refuses, counts as unlimited).
    pub fn from_spec(spec: &calico_api::IPAMConfigurationSpec) -> IpamConfig {
        IpamConfig {
            strict_affinity: spec.strict_affinity,
            auto_allocate_blocks: spec.auto_allocate_blocks,
            max_blocks_per_host: spec
                .max_blocks_per_host
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(0),
        }
    }

    /// Writes these settings into `spec`, leaving its other fields alone.
    pub fn write_spec(&self, spec: &mut calico_api::IPAMConfigurationSpec) {
        spec.strict_affinity = self.strict_affinity;
        spec.auto_allocate_blocks = self.auto_allocate_blocks;
        spec.max_blocks_per_host = match self.max_blocks_per_host {
            0 => None,
            m => Some(i32::try_from(m).unwrap_or(i32::MAX)),
        };
    }
}

impl Default for IpamConfig {
    /// Calico's defaults when no configuration is stored: blocks are claimed automatically,
    /// borrowing is allowed, no per-host limit.
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_calicos_layout() {
        let b: IpNet = "10.0.0.64/26".parse().unwrap();
        assert_eq!(
            block_key(&b),
            "/calico/ipam/v2/assignment/ipv4/block/10.0.0.64-26"
        );
        assert_eq!(
            affinity_key("node1", &b),
            "/calico/ipam/v2/host/node1/ipv4/block/10.0.0.64-26"
        );
        assert_eq!(parse_block_key(&block_key(&b)), Some(b));
        assert_eq!(
            parse_affinity_key(&affinity_key("node1", &b)),
            Some(("node1".to_owned(), b))
        );
        let v6: IpNet = "fd00::40/122".parse().unwrap();
        assert_eq!(
            block_key(&v6),
            "/calico/ipam/v2/assignment/ipv6/block/fd00::40-122"
        );
        assert_eq!(
            handle_key("k8s-pod-network.abc"),
            "/calico/ipam/v2/handle/k8s-pod-network.abc"
        );
    }

    #[test]
    fn block_json_matches_libcalico_field_names() {
        let json = r#"{"cidr":"10.0.0.0/30","affinity":"host:n1","allocations":[0,null,null,null],
            "unallocated":[1,2,3],"attributes":[{"handle_id":"h1","secondary":{"node":"n1"}}],
            "strictAffinity":false,"sequenceNumber":3,"sequenceNumberForAllocation":{"0":2},
            "deleted":false}"#;
        let b: AllocationBlock = serde_json::from_str(json).unwrap();
        assert_eq!(b.allocations, vec![Some(0), None, None, None]);
        assert_eq!(b.attributes[0].handle_id.as_deref(), Some("h1"));
        let back = serde_json::to_value(&b).unwrap();
        for field in [
            "cidr",
            "affinity",
            "allocations",
            "unallocated",
            "attributes",
            "strictAffinity",
            "sequenceNumber",
            "sequenceNumberForAllocation",
            "deleted",
        ] {
            assert!(back.get(field).is_some(), "missing {field}");
        }
    }

    #[test]
    fn affinity_and_config_json() {
        let a = AffinityValue::new(AffinityState::Pending);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"state":"pending","deleted":false}"#
        );
        let mut spec = calico_api::IPAMConfigurationSpec {
            strict_affinity: true,
            auto_allocate_blocks: true,
            max_blocks_per_host: Some(4),
            ip_cooldown_seconds: Some(10),
            ..Default::default()
        };
        let c = IpamConfig::from_spec(&spec);
        assert!(c.strict_affinity && c.auto_allocate_blocks && c.max_blocks_per_host == 4);
        IpamConfig {
            max_blocks_per_host: 0,
            ..c
        }
        .write_spec(&mut spec);
        assert_eq!(spec.max_blocks_per_host, None);
        assert_eq!(spec.ip_cooldown_seconds, Some(10), "other fields stay");
    }
}
