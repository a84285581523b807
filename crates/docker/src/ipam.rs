//! Address allocation for the IPAM driver, behind [`AddressAllocator`].
//!
//! [`CalicoIpam`] is the production allocator: `calico-ipam`, Calico's block / affinity /
//! handle layout in etcd, which the node agent reads to program its blackhole and block routes
//! and to announce them over BGP.
//!
//! [`EtcdAllocator`] predates `calico-ipam` and is kept only as a small reference
//! implementation for tests: a deliberately small
//! allocator with the same shape (host-affine blocks carved from IPPools, one record per
//! assigned address holding its handle) under its own prefix [`IPAM_PREFIX`], so it never
//! collides with Calico's keys. Gaps against Calico: no borrowing from other hosts' blocks when
//! the pool has no free block, no block release when a block empties, no IPReservations. The
//! driver talks to it only through [`AddressAllocator`], so swapping in `calico-ipam` is one
//! impl.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_api::IPPool;
use calico_datastore::{Compare, Datastore, EtcdClient, KvError, TxnOutcome, Write};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub const IPAM_PREFIX: &str = "/calico-rs/docker-ipam/v1/";
const ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no enabled IPv{version} IPPool is configured")]
    NoPool { version: u8 },
    #[error("IPPool {name}: spec.cidr {cidr:?} is not a CIDR")]
    BadPoolCidr { name: String, cidr: String },
    #[error("address {ip} is not inside any enabled IPPool")]
    OutsidePools { ip: IpAddr },
    #[error("address {ip} is already assigned (handle {handle})")]
    InUse { ip: IpAddr, handle: String },
    #[error("pool {pool} has no free address in this host's blocks and no unclaimed block")]
    Exhausted { pool: IpNet },
    #[error("allocation in pool {pool} lost {attempts} races in a row")]
    Contention { pool: IpNet, attempts: usize },
    #[error("datastore: {0}")]
    Kv(#[from] KvError),
    #[error("datastore: {0}")]
    Resource(#[from] calico_datastore::ResourceError),
    #[error(transparent)]
    Calico(#[from] calico_ipam::IpamError),
    #[error("stored IPAM record {key} is not valid JSON: {reason}")]
    BadRecord { key: String, reason: String },
}

/// An enabled pool as the allocator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub cidr: IpNet,
    pub block_prefix: u8,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub handle: String,
    pub host: String,
}

pub trait AddressAllocator: Send + Sync + 'static {
    /// Enabled pools, from the IPPool resources.
    fn pools(&self) -> impl Future<Output = Result<Vec<Pool>, IpamError>> + Send;
    /// One address from `pool` in a block affine to `host`.
    fn auto_assign(
        &self,
        pool: &Pool,
        host: &str,
        handle: &str,
    ) -> impl Future<Output = Result<IpAddr, IpamError>> + Send;
    /// Exactly `ip` (the `--ip` case); it must lie in an enabled pool.
    fn assign_ip(
        &self,
        ip: IpAddr,
        host: &str,
        handle: &str,
    ) -> impl Future<Output = Result<(), IpamError>> + Send;
    /// Frees `ip`; freeing a free address is not an error (dockerd retries releases).
    fn release(&self, ip: IpAddr) -> impl Future<Output = Result<(), IpamError>> + Send;
    /// Who holds `ip`, if anyone.
    fn assignment(
        &self,
        ip: IpAddr,
    ) -> impl Future<Output = Result<Option<Assignment>, IpamError>> + Send;
}

/// Pools from IPPool specs; disabled pools and pools with a broken CIDR are skipped (the
/// latter with a warning: one bad object must not stop allocation from the others).
pub fn pools_from(ippools: &[IPPool]) -> Vec<Pool> {
    ippools
        .iter()
        .filter(|p| p.spec.disabled != Some(true))
        .filter_map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let cidr: IpNet = match p.spec.cidr.parse() {
                Ok(c) => c,
                Err(_) => {
                    tracing::warn!(pool = %name, cidr = %p.spec.cidr, "IPPool cidr does not parse; skipped");
                    return None;
                }
            };
            let default = if cidr.addr().is_ipv4() { 26 } else { 122 };
            let block_prefix = p
                .spec
                .block_size
                .and_then(|b| u8::try_from(b).ok())
                .filter(|b| *b >= cidr.prefix_len() && *b <= cidr.max_prefix_len())
                .unwrap_or(default.max(cidr.prefix_len()));
            Some(Pool {
                name,
                cidr: cidr.trunc(),
                block_prefix,
            })
        })
        .collect()
}

/// What an allocation must do: take `ip`, claiming `block` for this host first if `claim`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub block: IpNet,
    pub ip: IpAddr,
    pub claim: bool,
}

/// Pure choice of the next address: the lowest free address of this host's blocks (lowest
/// block first), else the first address of the lowest unclaimed block. Bounded: it looks at
/// the host's blocks and at most `claimed + used + 1` candidate blocks. `used` must hold every
/// assigned address of the pool.
pub fn pick_address(
    pool: &Pool,
    host: &str,
    affinities: &BTreeMap<IpNet, String>,
    used: &BTreeSet<IpAddr>,
) -> Option<Pick> {
    for (block, owner) in affinities {
        if owner != host || !pool.cidr.contains(block) {
            continue;
        }
        if let Some(ip) = block.hosts_all().find(|ip| !used.contains(ip)) {
            return Some(Pick {
                block: *block,
                ip,
                claim: false,
            });
        }
    }
    // An unclaimed block may still hold `--ip` assignments: take its first free address.
    let blocks = pool.cidr.subnets(pool.block_prefix).ok()?;
    let limit = affinities.len() + used.len() + 1;
    blocks
        .take(limit)
        .filter(|b| !affinities.contains_key(b))
        .find_map(|block| {
            block
                .hosts_all()
                .find(|ip| !used.contains(ip))
                .map(|ip| Pick {
                    block,
                    ip,
                    claim: true,
                })
        })
}

/// All addresses of a block, network and broadcast included (Calico hands out `.0` too, as the
/// seed's 192.168.104.0 shows).
trait AllAddrs {
    fn hosts_all(&self) -> Box<dyn Iterator<Item = IpAddr>>;
}

impl AllAddrs for IpNet {
    fn hosts_all(&self) -> Box<dyn Iterator<Item = IpAddr>> {
        match self {
            IpNet::V4(n) => {
                let start = u32::from(n.network());
                let end = u32::from(n.broadcast());
                Box::new((start..=end).map(|v| IpAddr::V4(v.into())))
            }
            IpNet::V6(n) => {
                let start = u128::from(n.network());
                let end = u128::from(n.broadcast());
                Box::new((start..=end).map(|v| IpAddr::V6(v.into())))
            }
        }
    }
}

fn block_key(block: &IpNet) -> String {
    format!(
        "{IPAM_PREFIX}affinity/{}",
        block.to_string().replace('/', "-")
    )
}

fn assignment_key(ip: &IpAddr) -> String {
    format!("{IPAM_PREFIX}assignment/{ip}")
}

/// The etcd-backed stopgap allocator (see the module comment).
#[derive(Debug, Clone)]
pub struct EtcdAllocator {
    kv: EtcdClient,
    datastore: Datastore,
}

impl EtcdAllocator {
    pub fn new(kv: EtcdClient) -> Self {
        EtcdAllocator {
            datastore: Datastore::from_etcd(kv.clone()),
            kv,
        }
    }

    async fn affinities(&self) -> Result<BTreeMap<IpNet, String>, IpamError> {
        let prefix = format!("{IPAM_PREFIX}affinity/");
        let listing = self.kv.list(&prefix).await?;
        let mut out = BTreeMap::new();
        for kv in listing.kvs {
            let cidr = kv.key[prefix.len()..].replacen('-', "/", 1);
            let Ok(block) = cidr.parse::<IpNet>() else {
                return Err(IpamError::BadRecord {
                    key: kv.key,
                    reason: "key does not end in a block CIDR".into(),
                });
            };
            out.insert(block, String::from_utf8_lossy(&kv.value).into_owned());
        }
        Ok(out)
    }

    async fn used_in(&self, blocks: &[IpNet]) -> Result<BTreeSet<IpAddr>, IpamError> {
        let prefix = format!("{IPAM_PREFIX}assignment/");
        let listing = self.kv.list(&prefix).await?;
        Ok(listing
            .kvs
            .iter()
            .filter_map(|kv| kv.key[prefix.len()..].parse::<IpAddr>().ok())
            .filter(|ip| blocks.iter().any(|b| b.contains(ip)))
            .collect())
    }

    fn record(host: &str, handle: &str) -> Vec<u8> {
        serde_json::to_vec(&Assignment {
            handle: handle.to_string(),
            host: host.to_string(),
        })
        .unwrap_or_default()
    }
}

impl AddressAllocator for EtcdAllocator {
    async fn pools(&self) -> Result<Vec<Pool>, IpamError> {
        let list = self.datastore.list::<IPPool>(None).await?;
        Ok(pools_from(&list.items))
    }

    async fn auto_assign(
        &self,
        pool: &Pool,
        host: &str,
        handle: &str,
    ) -> Result<IpAddr, IpamError> {
        for _ in 0..ATTEMPTS {
            let affinities = self.affinities().await?;
            let used = self.used_in(&[pool.cidr]).await?;
            let pick = pick_address(pool, host, &affinities, &used)
                .ok_or(IpamError::Exhausted { pool: pool.cidr })?;
            let akey = assignment_key(&pick.ip);
            let bkey = block_key(&pick.block);
            let mut compares = vec![Compare::Absent { key: akey.clone() }];
            let mut writes = vec![Write::Put {
                key: akey,
                value: Self::record(host, handle),
            }];
            if pick.claim {
                compares.push(Compare::Absent { key: bkey.clone() });
                writes.push(Write::Put {
                    key: bkey,
                    value: host.as_bytes().to_vec(),
                });
            } else {
                compares.push(Compare::Value {
                    key: bkey,
                    value: host.as_bytes().to_vec(),
                });
            }
            match self.kv.txn(compares, writes).await? {
                TxnOutcome::Committed { .. } => {
                    tracing::info!(ip = %pick.ip, block = %pick.block, host, handle, "address assigned");
                    return Ok(pick.ip);
                }
                TxnOutcome::Failed { .. } => continue,
            }
        }
        Err(IpamError::Contention {
            pool: pool.cidr,
            attempts: ATTEMPTS,
        })
    }

    async fn assign_ip(&self, ip: IpAddr, host: &str, handle: &str) -> Result<(), IpamError> {
        let pools = self.pools().await?;
        if !pools.iter().any(|p| p.cidr.contains(&ip)) {
            return Err(IpamError::OutsidePools { ip });
        }
        match self
            .kv
            .create(&assignment_key(&ip), Self::record(host, handle))
            .await
        {
            Ok(_) => Ok(()),
            Err(KvError::AlreadyExists { .. }) => {
                let handle = self
                    .assignment(ip)
                    .await?
                    .map(|a| a.handle)
                    .unwrap_or_default();
                Err(IpamError::InUse { ip, handle })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn release(&self, ip: IpAddr) -> Result<(), IpamError> {
        match self.kv.delete(&assignment_key(&ip), None).await {
            Ok(_) | Err(KvError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn assignment(&self, ip: IpAddr) -> Result<Option<Assignment>, IpamError> {
        let key = assignment_key(&ip);
        let Some(kv) = self.kv.get(&key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(|e| IpamError::BadRecord {
                key,
                reason: e.to_string(),
            })
    }
}

/// `calico-ipam` as the driver's allocator.
#[derive(Clone)]
pub struct CalicoIpam {
    ipam: std::sync::Arc<calico_ipam::Ipam>,
}

impl std::fmt::Debug for CalicoIpam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CalicoIpam")
    }
}

impl CalicoIpam {
    pub fn new(kv: EtcdClient) -> Self {
        CalicoIpam {
            ipam: std::sync::Arc::new(calico_ipam::Ipam::new(kv)),
        }
    }

    fn attrs(host: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("node".to_string(), host.to_string()),
            (
                "orchestrator".to_string(),
                crate::naming::ORCHESTRATOR.to_string(),
            ),
        ])
    }
}

impl AddressAllocator for CalicoIpam {
    async fn pools(&self) -> Result<Vec<Pool>, IpamError> {
        Ok(self
            .ipam
            .load_pools()
            .await?
            .into_iter()
            .filter(|p| !p.disabled)
            .map(|p| Pool {
                name: p.name,
                cidr: p.cidr,
                block_prefix: p.block_size,
            })
            .collect())
    }

    async fn auto_assign(
        &self,
        pool: &Pool,
        host: &str,
        handle: &str,
    ) -> Result<IpAddr, IpamError> {
        let v6 = pool.cidr.addr().is_ipv6();
        let args = calico_ipam::AutoAssignArgs {
            num_v4: usize::from(!v6),
            num_v6: usize::from(v6),
            handle_id: Some(handle.to_string()),
            attrs: Self::attrs(host),
            hostname: host.to_string(),
            v4_pools: if v6 { Vec::new() } else { vec![pool.cidr] },
            v6_pools: if v6 { vec![pool.cidr] } else { Vec::new() },
            ..Default::default()
        };
        let got = match self.ipam.auto_assign(args).await {
            Ok(got) => got,
            Err(calico_ipam::IpamError::Exhausted { .. }) => {
                return Err(IpamError::Exhausted { pool: pool.cidr });
            }
            Err(e) => return Err(e.into()),
        };
        got.v4
            .into_iter()
            .chain(got.v6)
            .next()
            .ok_or(IpamError::Exhausted { pool: pool.cidr })
    }

    async fn assign_ip(&self, ip: IpAddr, host: &str, handle: &str) -> Result<(), IpamError> {
        match self
            .ipam
            .assign_ip(ip, Some(handle), Self::attrs(host), host)
            .await
        {
            Ok(()) => Ok(()),
            Err(calico_ipam::IpamError::AlreadyAllocated { ip }) => {
                let handle = self
                    .assignment(ip)
                    .await?
                    .map(|a| a.handle)
                    .unwrap_or_default();
                Err(IpamError::InUse { ip, handle })
            }
            Err(calico_ipam::IpamError::NoPoolForIp { ip }) => Err(IpamError::OutsidePools { ip }),
            Err(e) => Err(e.into()),
        }
    }

    async fn release(&self, ip: IpAddr) -> Result<(), IpamError> {
        self.ipam.release_ips(&[ip]).await?;
        Ok(())
    }

    async fn assignment(&self, ip: IpAddr) -> Result<Option<Assignment>, IpamError> {
        Ok(self
            .ipam
            .get_assignment_attributes(ip)
            .await?
            .map(|info| Assignment {
                handle: info.attributes.handle_id.unwrap_or_default(),
                host: info
                    .attributes
                    .secondary
                    .get("node")
                    .cloned()
                    .or(info.block_affinity)
                    .unwrap_or_default(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(cidr: &str, block: u8) -> Pool {
        Pool {
            name: "p".into(),
            cidr: cidr.parse().unwrap(),
            block_prefix: block,
        }
    }

    #[test]
    fn first_allocation_claims_the_first_block_and_takes_dot_zero() {
        let p = pool("192.168.0.0/16", 26);
        let pick = pick_address(&p, "node1", &BTreeMap::new(), &BTreeSet::new()).unwrap();
        assert_eq!(pick.block, "192.168.0.0/26".parse::<IpNet>().unwrap());
        assert_eq!(pick.ip, "192.168.0.0".parse::<IpAddr>().unwrap());
        assert!(pick.claim);
    }

    #[test]
    fn own_block_is_used_before_claiming_and_other_hosts_blocks_are_skipped() {
        let p = pool("192.168.0.0/16", 26);
        let mut aff = BTreeMap::new();
        aff.insert("192.168.0.0/26".parse().unwrap(), "node2".to_string());
        aff.insert("192.168.0.64/26".parse().unwrap(), "node1".to_string());
        let used: BTreeSet<IpAddr> = ["192.168.0.64".parse().unwrap()].into();
        let pick = pick_address(&p, "node1", &aff, &used).unwrap();
        assert_eq!(pick.ip, "192.168.0.65".parse::<IpAddr>().unwrap());
        assert!(!pick.claim);
        let pick = pick_address(&p, "node3", &aff, &used).unwrap();
        assert_eq!(pick.block, "192.168.0.128/26".parse::<IpNet>().unwrap());
        assert!(pick.claim);
    }

    #[test]
    fn a_full_pool_is_exhausted() {
        let p = pool("10.0.0.0/30", 30);
        let mut aff = BTreeMap::new();
        aff.insert("10.0.0.0/30".parse().unwrap(), "a".to_string());
        let used: BTreeSet<IpAddr> = (0..4).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        assert_eq!(pick_address(&p, "a", &aff, &used), None);
        assert_eq!(pick_address(&p, "b", &aff, &BTreeSet::new()), None);
    }

    proptest! {
        /// Whatever is claimed and used, a pick is inside the pool, inside its block, not used,
        /// and in a block that is this host's or unclaimed.
        #[test]
        fn picks_are_free_and_owned(
            claims in proptest::collection::btree_map(0u32..16, prop_oneof![Just("a"), Just("b")], 0..16),
            used_offsets in proptest::collection::btree_set(0u32..1024, 0..200),
        ) {
            let p = pool("10.1.0.0/22", 26);
            let aff: BTreeMap<IpNet, String> = claims.iter()
                .map(|(i, h)| (IpNet::new(IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + i * 64)), 26).unwrap(), h.to_string()))
                .collect();
            let used: BTreeSet<IpAddr> = used_offsets.iter()
                .map(|o| IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + o))).collect();
            if let Some(pick) = pick_address(&p, "a", &aff, &used) {
                prop_assert!(p.cidr.contains(&pick.ip));
                prop_assert!(pick.block.contains(&pick.ip));
                prop_assert!(!used.contains(&pick.ip));
                match aff.get(&pick.block) {
                    Some(h) => prop_assert_eq!(h, "a"),
                    None => prop_assert!(pick.claim),
                }
            } else {
                // None only when no block is both usable by "a" and not full.
                let usable = p.cidr.subnets(26).unwrap().any(|b| {
                    aff.get(&b).is_none_or(|h| h == "a") && b.hosts_all().any(|ip| !used.contains(&ip))
                });
                prop_assert!(!usable);
            }
        }
    }
}
