//! Address allocation for the IPAM driver, behind [`AddressAllocator`].
//!
//! [`CalicoIpam`] is the production allocator: `calico-ipam`, Calico's block / affinity /
//! handle layout in etcd, which the node agent reads to program its blackhole and block routes
//! and to announce them over BGP.
//!
//! (An earlier stand-alone etcd allocator, written before `calico-ipam` existed, was removed
//! once the driver moved to it.)

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_datastore::EtcdClient;
use ipnet::IpNet;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no enabled IPv{version} IPPool is configured")]
    NoPool { version: u8 },
    #[error("address {ip} is not inside any enabled IPPool")]
    OutsidePools { ip: IpAddr },
    #[error("address {ip} is already assigned (handle {handle})")]
    InUse { ip: IpAddr, handle: String },
    #[error("pool {pool} has no free address for this host")]
    Exhausted { pool: IpNet },
    #[error(transparent)]
    Calico(#[from] calico_ipam::IpamError),
}

/// An enabled pool as the allocator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub cidr: IpNet,
    pub block_prefix: u8,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
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
