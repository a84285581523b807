//! Node start-up, in the order of Calico's (the seed's transcript):
//! host settings, this node's address (autodetected or given) checked for conflicts, the Node
//! resource, the global AS, the cluster GUID, and the default pools when none exist.
//! Every write is one item of calico-datastore's batch writer (`Datastore::write`): created
//! only if still absent, replaced only at the revision read, unchanged objects not rewritten.

use std::net::IpAddr;

use calico_api::{
    AsNumber, ClusterInformation, ClusterInformationSpec, IPIPMode, IPPool, IPPoolSpec, Node,
    NodeBGPSpec, NodeSpec,
};
use calico_datastore::{BatchOp, Datastore, ResourceError};
use ipnet::IpNet;
use tracing::{info, warn};

use crate::autodetect::{self, AutodetectError};
use crate::config::{AddressSource, AutodetectMethod, DefaultPool, NodeConfig};

pub const DEFAULT_IPV4_POOL_NAME: &str = "default-ipv4-ippool";
pub const DEFAULT_IPV6_POOL_NAME: &str = "default-ipv6-ippool";
/// The AS a node uses when neither it nor the default BGPConfiguration names one.
pub const DEFAULT_AS_NUMBER: u32 = 64512;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("datastore: {what}")]
    Datastore {
        what: String,
        #[source]
        source: Box<ResourceError>,
    },
    #[error("autodetecting the node's address")]
    Autodetect(#[source] AutodetectError),
    #[error(
        "Calico node '{other}' is already using the IPv{family} address {address}: \
         give this node another address (IP/IP6) or remove the stale node"
    )]
    AddressConflict {
        other: String,
        family: u8,
        address: IpAddr,
    },
    #[error("node {node}: spec.bgp.{field}: {value:?} is not an address/prefix")]
    BadNodeAddress {
        node: String,
        field: &'static str,
        value: String,
    },
}

/// What start-up settled on, for the agent's run loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub node_name: String,
    pub ipv4: Option<IpNet>,
    pub ipv6: Option<IpNet>,
    pub as_number: u32,
}

fn ds_err(what: impl Into<String>) -> impl FnOnce(ResourceError) -> StartupError {
    let what = what.into();
    move |source| StartupError::Datastore {
        what,
        source: Box::new(source),
    }
}

/// Host settings the dataplane needs. Each is best effort (a read-only /proc/sys inside a
/// container or a namespace is reported, not fatal), as Calico's are.
pub fn configure_host(ipv6: bool) {
    let mut settings = vec![
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv4/conf/all/forwarding", "1"),
    ];
    if ipv6 {
        settings.push(("net/ipv6/conf/all/forwarding", "1"));
    }
    for (key, value) in settings {
        let path = format!("/proc/sys/{key}");
        if let Err(e) = std::fs::write(&path, value) {
            warn!(%path, error = %e, "could not set sysctl");
        }
    }
    // Raise the conntrack limit, never lower it (only writable in the initial namespace).
    let path = "/proc/sys/net/netfilter/nf_conntrack_max";
    if let Ok(cur) = std::fs::read_to_string(path)
        && cur.trim().parse::<u64>().is_ok_and(|c| c < 1_000_000)
        && let Err(e) = std::fs::write(path, "1000000")
    {
        info!(error = %e, "conntrack limit left as it is");
    }
}

fn parse_node_addr(node: &str, field: &'static str, v: &str) -> Result<IpNet, StartupError> {
    v.parse::<IpNet>()
        .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| StartupError::BadNodeAddress {
            node: node.to_string(),
            field,
            value: v.to_string(),
        })
}

/// Picks one family's address: from the configuration, the existing Node, or autodetection.
fn resolve_address(
    source: &AddressSource,
    method: &AutodetectMethod,
    existing: Option<IpNet>,
    want_v6: bool,
) -> Result<Option<IpNet>, StartupError> {
    let detect = || -> Result<Option<IpNet>, StartupError> {
        let ifs = autodetect::local_interfaces().map_err(StartupError::Autodetect)?;
        let net = autodetect::choose(&ifs, method, want_v6, autodetect::can_reach_source)
            .map_err(StartupError::Autodetect)?;
        let iface = ifs
            .iter()
            .find(|i| i.addrs.contains(&net))
            .map_or("?", |i| i.name.as_str());
        let fam = if want_v6 { "IPv6" } else { "IPv4" };
        info!("Using autodetected {fam} address on interface {iface}: {net}");
        Ok(Some(net))
    };
    match source {
        AddressSource::None => Ok(None),
        AddressSource::Fixed(net) => Ok(Some(*net)),
        AddressSource::Autodetect => detect(),
        AddressSource::KeepOrAutodetect => match existing {
            Some(net) => Ok(Some(net)),
            None => detect(),
        },
    }
}

fn node_addresses(node: &Node) -> Result<(Option<IpNet>, Option<IpNet>), StartupError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let bgp = node.spec.bgp.as_ref();
    let v4 = bgp
        .and_then(|b| b.ipv4_address.as_deref())
        .map(|v| parse_node_addr(&name, "ipv4Address", v))
        .transpose()?;
    let v6 = bgp
        .and_then(|b| b.ipv6_address.as_deref())
        .map(|v| parse_node_addr(&name, "ipv6Address", v))
        .transpose()?;
    Ok((v4, v6))
}

/// Runs Calico's start-up against the datastore. Idempotent: a restart finds everything in
/// place and changes nothing.
pub async fn run(cfg: &NodeConfig, ds: &Datastore) -> Result<Started, StartupError> {
    let name = cfg.node_name.clone();
    configure_host(!matches!(cfg.ipv6, AddressSource::None));

    let existing: Option<Node> = ds
        .get(None, &name)
        .await
        .map_err(ds_err(format!("reading Node {name}")))?;
    if existing.is_none() {
        info!(Name = %name, "Building new node resource");
    }
    let (old4, old6) = match &existing {
        Some(n) => node_addresses(n)?,
        None => (None, None),
    };
    let ipv4 = resolve_address(&cfg.ipv4, &cfg.ipv4_method, old4, false)?;
    let ipv6 = resolve_address(&cfg.ipv6, &cfg.ipv6_method, old6, true)?;

    // Refuse an address another node already owns: two routers with one address would
    // blackhole each other's workloads.
    if ipv4 != old4 || ipv6 != old6 || existing.is_none() {
        info!("Node IP changed, will check for conflicts");
        let nodes = ds
            .list::<Node>(None)
            .await
            .map_err(ds_err("listing Nodes"))?;
        for other in nodes.items.iter() {
            let other_name = other.metadata.name.clone().unwrap_or_default();
            if other_name == name {
                continue;
            }
            let (o4, o6) = node_addresses(other)?;
            for (mine, theirs, family) in [(ipv4, o4, 4), (ipv6, o6, 6)] {
                if let (Some(m), Some(t)) = (mine, theirs)
                    && m.addr() == t.addr()
                {
                    return Err(StartupError::AddressConflict {
                        other: other_name,
                        family,
                        address: m.addr(),
                    });
                }
            }
        }
    }

    let mut node = existing
        .clone()
        .unwrap_or_else(|| Node::new(&name, NodeSpec::default()));
    let bgp = node.spec.bgp.get_or_insert_with(NodeBGPSpec::default);
    bgp.ipv4_address = ipv4.map(|n| n.to_string());
    bgp.ipv6_address = ipv6.map(|n| n.to_string());
    if let Some(asn) = cfg.as_number {
        bgp.as_number = Some(AsNumber(asn));
    }
    if existing.as_ref() != Some(&node) {
        // Created if still absent, else replaced only at the revision read above.
        let op = if existing.is_some() {
            BatchOp::Replace
        } else {
            BatchOp::Create
        };
        ds.write(op, &node)
            .await
            .map_err(ds_err(format!("writing Node {name}")))?;
    }

    let global_as = global_as_number(ds).await?;
    let as_number = match node.spec.bgp.as_ref().and_then(|b| b.as_number) {
        Some(a) => a.0,
        None => {
            info!("No AS number configured on node resource, using global value");
            global_as
        }
    };

    ensure_cluster_information(ds).await?;
    if !cfg.no_default_pools {
        ensure_default_pool(ds, DEFAULT_IPV4_POOL_NAME, &cfg.ipv4_pool, false).await?;
        // As Calico: an IPv6 pool too whenever this host supports IPv6 (FELIX_IPV6SUPPORT
        // defaults to true), even if this node has no IPv6 address of its own.
        let ipv6_supported =
            cfg.ipv6_support && std::path::Path::new("/proc/net/if_inet6").exists();
        info!("IPv6 supported on this platform: {ipv6_supported}");
        if ipv6_supported {
            ensure_default_pool(ds, DEFAULT_IPV6_POOL_NAME, &cfg.ipv6_pool, true).await?;
        }
    }
    // As Felix: a pod MTU that cannot be written is logged; the CNI plugin and the Docker
    // driver then use the kernel's default (or an explicit MTU).
    if let Err(e) = crate::mtu::write(cfg, ds).await {
        tracing::error!(error = %e, "Failed to write the MTU file; pod MTU may not be properly set");
    }
    info!("Using node name: {name}");
    Ok(Started {
        node_name: name,
        ipv4,
        ipv6,
        as_number,
    })
}

/// The cluster-wide AS number: the default BGPConfiguration's, else 64512.
pub async fn global_as_number(ds: &Datastore) -> Result<u32, StartupError> {
    let cfg: Option<calico_api::BGPConfiguration> = ds
        .get(None, "default")
        .await
        .map_err(ds_err("reading BGPConfiguration default"))?;
    Ok(cfg
        .and_then(|c| c.spec.as_number)
        .map_or(DEFAULT_AS_NUMBER, |a| a.0))
}

async fn ensure_cluster_information(ds: &Datastore) -> Result<(), StartupError> {
    let existing: Option<ClusterInformation> = ds
        .get(None, "default")
        .await
        .map_err(ds_err("reading ClusterInformation default"))?;
    if let Some(ci) = &existing
        && ci.spec.cluster_guid.is_some()
        && ci.spec.datastore_ready == Some(true)
    {
        return Ok(());
    }
    let guid = existing
        .as_ref()
        .and_then(|c| c.spec.cluster_guid.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let mut ci = existing
        .clone()
        .unwrap_or_else(|| ClusterInformation::new("default", ClusterInformationSpec::default()));
    ci.spec.cluster_guid = Some(guid.clone());
    ci.spec.datastore_ready = Some(true);
    ci.spec
        .calico_version
        .get_or_insert_with(|| env!("CARGO_PKG_VERSION").to_string());
    ci.spec
        .cluster_type
        .get_or_insert_with(|| "docker,bgp".to_string());
    let op = if existing.is_some() {
        BatchOp::Replace
    } else {
        BatchOp::Create
    };
    match ds.write(op, &ci).await {
        Ok(_) => info!(ClusterGUID = %guid, "Assigned cluster GUID"),
        // Another node won the race to create it: its GUID stands.
        Err(e) if e.is_already_exists() || e.is_conflict() => {}
        Err(e) => return Err(ds_err("writing ClusterInformation default")(e)),
    }
    Ok(())
}

/// A random unique-local /64 (RFC 4193: fd00::/8 plus 40 random bits of global ID).
fn random_ula_64() -> IpNet {
    let r = uuid::Uuid::new_v4().as_u128();
    let global_id = (r >> 64) & ((1u128 << 56) - 1);
    let bits = (0xfdu128 << 120) | (global_id << 64);
    IpNet::new(IpAddr::V6(bits.into()), 64).expect("64 is a valid IPv6 prefix")
}

async fn ensure_default_pool(
    ds: &Datastore,
    name: &str,
    pool: &DefaultPool,
    v6: bool,
) -> Result<(), StartupError> {
    let fam = if v6 { "IPv6" } else { "IPv4" };
    let pools = ds
        .list::<IPPool>(None)
        .await
        .map_err(ds_err("listing IPPools"))?;
    let has_family = pools.items.iter().any(|p| {
        p.spec
            .cidr
            .parse::<IpNet>()
            .is_ok_and(|n| matches!(n, IpNet::V6(_)) == v6)
    });
    let ipip = if v6 { IPIPMode::Never } else { pool.ipip_mode };
    let mode_text = |m: &str| match m {
        "Never" => "off".to_string(),
        other => other.to_string(),
    };
    let ipip_text = mode_text(&format!("{ipip:?}"));
    let vxlan_text = mode_text(&format!("{:?}", pool.vxlan_mode));
    info!("Ensure default {fam} pool is created. IPIP mode: {ipip_text}, VXLAN mode: {vxlan_text}");
    if has_family {
        return Ok(());
    }
    let cidr = pool.cidr.unwrap_or_else(random_ula_64);
    let spec = IPPoolSpec {
        cidr: cidr.to_string(),
        block_size: Some(i64::from(pool.block_size.unwrap_or(if v6 {
            122
        } else {
            26
        }))),
        nat_outgoing: Some(pool.nat_outgoing),
        ipip_mode: Some(ipip),
        vxlan_mode: Some(pool.vxlan_mode),
        node_selector: Some("all()".into()),
        ..Default::default()
    };
    match ds.write(BatchOp::Create, &IPPool::new(name, spec)).await {
        Ok(_) => info!(
            "Created default {fam} pool ({cidr}) with NAT outgoing {}. IPIP mode: {ipip_text}, VXLAN mode: {vxlan_text}",
            pool.nat_outgoing
        ),
        Err(e) if e.is_already_exists() => {}
        Err(e) => return Err(ds_err(format!("creating IPPool {name}"))(e)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ula_is_a_unique_local_64() {
        let a = random_ula_64();
        let b = random_ula_64();
        assert_eq!(a.prefix_len(), 64);
        assert_eq!(a.trunc(), a);
        let IpAddr::V6(addr) = a.addr() else { panic!() };
        assert_eq!(addr.segments()[0] >> 8, 0xfd);
        assert_ne!(a, b);
    }

    #[test]
    fn node_addresses_accept_bare_and_prefixed_forms() {
        assert_eq!(
            parse_node_addr("n", "ipv4Address", "192.168.33.11/24").unwrap(),
            "192.168.33.11/24".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_node_addr("n", "ipv4Address", "192.168.33.11").unwrap(),
            "192.168.33.11/32".parse::<IpNet>().unwrap()
        );
        let err = parse_node_addr("n", "ipv4Address", "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "node n: spec.bgp.ipv4Address: \"x\" is not an address/prefix"
        );
    }
}
