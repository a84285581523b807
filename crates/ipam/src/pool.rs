//! The allocator's view of IPPool and IPReservation resources: which pools a node may allocate
//! from, with which block size, and which addresses are never handed out.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_api::{IPPool, IPPoolAllowedUse, IPReservation};
use calico_selector::Selector;
use ipnet::IpNet;

use crate::cidr::{CidrError, Family, check_block_size};

/// Errors turning resources into pool views.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("IPPool {pool}: spec.cidr {cidr:?} is not a CIDR")]
    Cidr { pool: String, cidr: String },
    #[error("IPPool {pool}: spec.blockSize {block_size} is not a prefix length")]
    BlockSizeRange { pool: String, block_size: i64 },
    #[error("IPPool {pool}: spec.blockSize")]
    BlockSize {
        pool: String,
        #[source]
        source: CidrError,
    },
    #[error("IPPool {pool}: spec.nodeSelector {selector:?} does not parse")]
    NodeSelector {
        pool: String,
        selector: String,
        #[source]
        source: calico_selector::ParseError,
    },
    #[error(
        "IPReservation {name}: spec.reservedCIDRs entry {cidr:?} is neither an address nor a CIDR"
    )]
    Reservation { name: String, cidr: String },
}

/// What an allocation is for; a pool serves only the uses it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AllowedUse {
    #[default]
    Workload,
    Tunnel,
    LoadBalancer,
}

/// An IP pool as the allocator needs it.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    /// The pool's network (host bits cleared).
    pub cidr: IpNet,
    /// Prefix length of its blocks.
    pub block_size: u8,
    pub disabled: bool,
    /// None means `all()`.
    pub node_selector: Option<Selector>,
    pub allowed_uses: Vec<AllowedUse>,
    /// `assignmentMode: Manual`: used only when a request names the pool, never picked
    /// automatically.
    pub manual: bool,
}

impl Pool {
    /// A pool with defaults (family block size, all nodes, workloads and tunnels).
    pub fn new(name: impl Into<String>, cidr: IpNet) -> Pool {
        Pool {
            name: name.into(),
            cidr: cidr.trunc(),
            block_size: Family::of_net(&cidr).default_block_size(),
            disabled: false,
            node_selector: None,
            allowed_uses: vec![AllowedUse::Workload, AllowedUse::Tunnel],
            manual: false,
        }
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    pub fn from_resource(p: &IPPool) -> Result<Pool, PoolError> {
        let name = p.metadata.name.clone().unwrap_or_default();
        let cidr: IpNet = p.spec.cidr.parse().map_err(|_| PoolError::Cidr {
            pool: name.clone(),
            cidr: p.spec.cidr.clone(),
        })?;
        let cidr = cidr.trunc();
        let block_size = match p.spec.block_size {
            None => Family::of_net(&cidr).default_block_size(),
            Some(b) => u8::try_from(b).map_err(|_| PoolError::BlockSizeRange {
                pool: name.clone(),
                block_size: b,
            })?,
        };
        check_block_size(&cidr, block_size).map_err(|source| PoolError::BlockSize {
            pool: name.clone(),
            source,
        })?;
        let node_selector = match p.spec.node_selector.as_deref().map(str::trim) {
            None | Some("") | Some("all()") => None,
            Some(s) => Some(
                Selector::parse(s).map_err(|source| PoolError::NodeSelector {
                    pool: name.clone(),
                    selector: s.to_owned(),
                    source,
                })?,
            ),
        };
        let mut allowed_uses: Vec<AllowedUse> = p
            .spec
            .allowed_uses
            .iter()
            .map(|u| match u {
                IPPoolAllowedUse::Workload => AllowedUse::Workload,
                IPPoolAllowedUse::Tunnel => AllowedUse::Tunnel,
                IPPoolAllowedUse::LoadBalancer => AllowedUse::LoadBalancer,
            })
            .collect();
        if allowed_uses.is_empty() {
            allowed_uses = vec![AllowedUse::Workload, AllowedUse::Tunnel];
        }
        Ok(Pool {
            name,
            cidr,
            block_size,
            disabled: p.spec.disabled.unwrap_or(false),
            node_selector,
            allowed_uses,
            manual: p.spec.assignment_mode == Some(calico_api::AssignmentMode::Manual),
        })
    }

    /// Whether a node with `labels` may take blocks from this pool for `use_`.
    pub fn usable_by(&self, labels: &BTreeMap<String, String>, use_: AllowedUse) -> bool {
        !self.disabled
            && self.allowed_uses.contains(&use_)
            && self
                .node_selector
                .as_ref()
                .is_none_or(|s| s.matches(labels))
    }
}

/// Addresses that are never handed out automatically (IPReservation `reservedCIDRs`).
#[derive(Debug, Clone, Default)]
pub struct Reservations {
    pub cidrs: Vec<IpNet>,
}

impl Reservations {
    pub fn from_resources(rs: &[IPReservation]) -> Result<Reservations, PoolError> {
        let mut cidrs = Vec::new();
        for r in rs {
            for c in &r.spec.reserved_cidrs {
                let net = c
                    .parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| PoolError::Reservation {
                        name: r.metadata.name.clone().unwrap_or_default(),
                        cidr: c.clone(),
                    })?;
                cidrs.push(net.trunc());
            }
        }
        Ok(Reservations { cidrs })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(spec: serde_json::Value) -> IPPool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "p"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn defaults_follow_the_family() {
        let p = Pool::from_resource(&pool(serde_json::json!({"cidr": "10.1.0.0/16"}))).unwrap();
        assert_eq!(p.block_size, 26);
        let p6 = Pool::from_resource(&pool(serde_json::json!({"cidr": "fd00::/64"}))).unwrap();
        assert_eq!(p6.block_size, 122);
        assert!(p.usable_by(&BTreeMap::new(), AllowedUse::Workload));
        assert!(!p.usable_by(&BTreeMap::new(), AllowedUse::LoadBalancer));
    }

    #[test]
    fn node_selector_and_disabled_are_honoured() {
        let p = Pool::from_resource(&pool(serde_json::json!({
            "cidr": "10.1.0.0/16", "nodeSelector": "rack == 'a'"
        })))
        .unwrap();
        let a = BTreeMap::from([("rack".to_owned(), "a".to_owned())]);
        let b = BTreeMap::from([("rack".to_owned(), "b".to_owned())]);
        assert!(p.usable_by(&a, AllowedUse::Workload));
        assert!(!p.usable_by(&b, AllowedUse::Workload));
        let d = Pool::from_resource(&pool(
            serde_json::json!({"cidr": "10.2.0.0/16", "disabled": true}),
        ))
        .unwrap();
        assert!(!d.usable_by(&a, AllowedUse::Workload));
    }

    #[test]
    fn bad_block_size_names_the_pool_and_field() {
        let e = Pool::from_resource(&pool(
            serde_json::json!({"cidr": "10.1.0.0/16", "blockSize": 8}),
        ))
        .unwrap_err();
        assert!(e.to_string().contains("IPPool p: spec.blockSize"), "{e}");
    }
}
