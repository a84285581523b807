//! What an administrator asks of IPAM (what `calicoctl ipam ...` and the controllers call):
//! usage per pool and block, borrowed addresses, configuration, the consistency check and its
//! report, releasing what a report found, splitting a pool. Data only: calicoctl (crates/ctl,
//! `ipam_view`) renders it; see docs/ipam.md for the mapping.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use calico_api::{IPPool, Node, WorkloadEndpoint};
use calico_datastore::{KvError, ResourceError};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::allocator::{Ipam, IpamError};
use crate::cidr::{net_len, split as split_cidr};
use crate::model::{self, AffinityState, AffinityValue, AllocationBlock, HandleValue, IpamConfig};

/// Why an IPAM administration step failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Ipam(#[from] Box<IpamError>),
    #[error("etcd {what}")]
    Etcd {
        what: String,
        #[source]
        source: KvError,
    },
    #[error("{kind} resources")]
    Resource {
        kind: &'static str,
        #[source]
        source: Box<ResourceError>,
    },
    #[error("{key}: stored value is not valid JSON")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("report: {reason}")]
    Report { reason: String },
    #[error("ipam split: {reason}")]
    Split { reason: String },
}

impl From<IpamError> for AdminError {
    fn from(e: IpamError) -> Self {
        AdminError::Ipam(Box::new(e))
    }
}

fn etcd(what: impl Into<String>) -> impl FnOnce(KvError) -> AdminError {
    let what = what.into();
    move |source| AdminError::Etcd { what, source }
}

fn res(kind: &'static str) -> impl FnOnce(ResourceError) -> AdminError {
    move |source| AdminError::Resource {
        kind,
        source: Box::new(source),
    }
}

async fn list_blocks(ipam: &Ipam) -> Result<Vec<(AllocationBlock, i64)>, AdminError> {
    let listing = ipam
        .kv()
        .list(model::BLOCKS_PREFIX)
        .await
        .map_err(etcd("list blocks"))?;
    let mut out = Vec::new();
    for kv in &listing.kvs {
        if model::parse_block_key(&kv.key).is_none() {
            continue;
        }
        let b: AllocationBlock =
            serde_json::from_slice(&kv.value).map_err(|source| AdminError::Decode {
                key: kv.key.clone(),
                source,
            })?;
        out.push((b, kv.mod_revision));
    }
    Ok(out)
}

/// Usage of one pool or block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub cidr: IpNet,
    pub total: u128,
    pub in_use: u128,
}

/// Pools with their blocks' usage, in pool order.
pub async fn utilization(ipam: &Ipam) -> Result<Vec<(Usage, Vec<Usage>)>, AdminError> {
    let pools = ipam.load_pools().await?;
    let blocks = list_blocks(ipam).await?;
    let mut out = Vec::new();
    for p in &pools {
        let mut brows = Vec::new();
        let mut in_use = 0u128;
        for (b, _) in blocks
            .iter()
            .filter(|(b, _)| p.cidr.contains(&b.cidr.network()))
        {
            let u = b.in_use() as u128;
            in_use += u;
            brows.push(Usage {
                cidr: b.cidr,
                total: b.len() as u128,
                in_use: u,
            });
        }
        out.push((
            Usage {
                cidr: p.cidr,
                total: net_len(&p.cidr),
                in_use,
            },
            brows,
        ));
    }
    Ok(out)
}

/// One borrowed address (allocated by a node other than the block's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Borrowed {
    pub ip: IpAddr,
    pub borrowing_node: String,
    pub block: IpNet,
    pub block_owner: String,
    pub allocation_type: String,
    pub allocated_to: String,
}

/// Every address allocated by a node other than its block's owner.
pub async fn borrowed(ipam: &Ipam) -> Result<Vec<Borrowed>, AdminError> {
    let mut out = Vec::new();
    for (b, _) in list_blocks(ipam).await? {
        let owner = b.host().unwrap_or("").to_owned();
        for a in b.allocated() {
            let Some(attr) = a.attribute else { continue };
            let Some(node) = attr.secondary.get(model::ATTR_NODE) else {
                continue;
            };
            if *node == owner {
                continue;
            }
            let ns = attr
                .secondary
                .get(model::ATTR_NAMESPACE)
                .cloned()
                .unwrap_or_default();
            let (ty, to) = if let Some(pod) = attr.secondary.get(model::ATTR_POD) {
                ("pod".to_owned(), format!("{ns}/{pod}"))
            } else {
                (
                    attr.secondary
                        .get(model::ATTR_TYPE)
                        .cloned()
                        .unwrap_or_default(),
                    String::new(),
                )
            };
            out.push(Borrowed {
                ip: a.ip,
                borrowing_node: node.clone(),
                block: b.cidr,
                block_owner: owner.clone(),
                allocation_type: ty,
                allocated_to: to,
            });
        }
    }
    Ok(out)
}

/// `calicoctl ipam configure --strictaffinity=<bool>` (and, ours, `--max-blocks-per-host`):
/// the configuration afterwards.
pub async fn configure(
    ipam: &Ipam,
    strict_affinity: Option<bool>,
    max_blocks_per_host: Option<u32>,
) -> Result<IpamConfig, AdminError> {
    Ok(ipam
        .set_config(|c| {
            if let Some(s) = strict_affinity {
                c.strict_affinity = s;
            }
            if let Some(m) = max_blocks_per_host {
                c.max_blocks_per_host = m;
            }
        })
        .await?)
}

// ----- check ----------------------------------------------------------------------------------

/// One allocation in a check report (Calico's report fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    pub in_use: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub borrowed: bool,
    #[serde(default)]
    pub owners: Vec<String>,
}

/// A handle with no addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleInfo {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Revision")]
    pub revision: String,
}

/// An affinity (or a block's affinity) that nothing live stands behind (calico-rs extension of
/// the report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrphanedAffinity {
    pub node: String,
    pub cidr: IpNet,
    pub reason: String,
}

/// The machine-readable report of `ipam check -o report.json` (Calico's fields plus
/// `orphanedAffinities` and `missingHandles`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub version: String,
    #[serde(rename = "clusterGUID")]
    pub cluster_guid: String,
    pub datastore_locked: bool,
    #[serde(rename = "clusterInformationRevision")]
    pub cluster_info_revision: String,
    pub cluster_type: String,
    pub allocations: BTreeMap<String, Vec<Allocation>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaked_handles: Vec<HandleInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphaned_affinities: Vec<OrphanedAffinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_handles: Vec<String>,
}

impl Report {
    /// Addresses allocated but used by no workload or node.
    pub fn leaked_ips(&self) -> Vec<IpAddr> {
        self.allocations
            .values()
            .flatten()
            .filter(|a| !a.in_use)
            .map(|a| a.ip)
            .collect()
    }

    /// Number of problems, as `ipam check` counts them.
    pub fn problems(&self) -> usize {
        self.leaked_ips().len()
            + self.leaked_handles.len()
            + self.orphaned_affinities.len()
            + self.missing_handles.len()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Report, AdminError> {
        serde_json::from_str(text).map_err(|e| AdminError::Report {
            reason: format!("not a valid ipam check report: {e}"),
        })
    }
}

/// The result of `ipam check`: the report and the counts calicoctl prints beside it.
#[derive(Debug, Clone)]
pub struct Check {
    pub report: Report,
    /// Whether any Node resource exists (without one, blocks of deleted nodes are not looked
    /// for: every block would look orphaned).
    pub nodes_known: bool,
    /// IPAM blocks found.
    pub blocks: usize,
    /// Distinct workload and node tunnel addresses in use.
    pub addresses_in_use: usize,
    /// The leaked allocations in the order the blocks list them.
    pub leaked: Vec<Allocation>,
    /// Handles that still have addresses.
    pub handles_with_ips: usize,
}

fn strip_ip(s: &str) -> Option<String> {
    let ip = s.split('/').next()?;
    ip.parse::<IpAddr>().ok().map(|i| i.to_string())
}

/// `calicoctl ipam check`: cross-checks blocks, handles, affinities, nodes and workload
/// endpoints.
pub async fn check(ipam: &Ipam) -> Result<Check, AdminError> {
    let blocks = list_blocks(ipam).await?;
    let ds = ipam.datastore();
    let nodes = ds.list::<Node>(None).await.map_err(res("Node"))?;
    let node_names: BTreeSet<String> = nodes
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    // With no Node resources at all (an installation that does not register nodes), "node no
    // longer exists" would condemn every block: skip that check rather than guess.
    let nodes_known = !node_names.is_empty();
    let mut in_use: HashMap<String, Vec<String>> = HashMap::new();
    for n in &nodes.items {
        let name = n.metadata.name.clone().unwrap_or_default();
        let mut addrs: Vec<&String> = Vec::new();
        addrs.extend(n.spec.ipv4_vxlan_tunnel_addr.iter());
        addrs.extend(n.spec.ipv6_vxlan_tunnel_addr.iter());
        if let Some(b) = &n.spec.bgp {
            addrs.extend(b.ipv4_ipip_tunnel_addr.iter());
        }
        if let Some(w) = &n.spec.wireguard {
            addrs.extend(w.interface_ipv4_address.iter());
            addrs.extend(w.interface_ipv6_address.iter());
        }
        for a in addrs {
            if let Some(ip) = strip_ip(a) {
                in_use.entry(ip).or_default().push(format!("Node({name})"));
            }
        }
    }
    let weps = ds
        .list::<WorkloadEndpoint>(None)
        .await
        .map_err(res("WorkloadEndpoint"))?;
    for w in &weps.items {
        let ns = w.metadata.namespace.clone().unwrap_or_default();
        let name = w.metadata.name.clone().unwrap_or_default();
        for a in &w.spec.ip_networks {
            if let Some(ip) = strip_ip(a) {
                in_use
                    .entry(ip)
                    .or_default()
                    .push(format!("Workload({ns}/{name})"));
            }
        }
    }
    let mut report = Report {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    };
    let mut handles_in_blocks: BTreeSet<String> = BTreeSet::new();
    let mut leaked = Vec::new();
    let mut orphaned = Vec::new();
    for (b, _) in &blocks {
        let owner = b.host().map(str::to_owned);
        if let Some(o) = &owner
            && nodes_known
            && !node_names.contains(o)
        {
            orphaned.push(OrphanedAffinity {
                node: o.clone(),
                cidr: b.cidr,
                reason: "block is affine to a node that no longer exists".into(),
            });
        }
        for a in b.allocated() {
            let attr = a.attribute.cloned().unwrap_or_default();
            if let Some(h) = &attr.handle_id {
                handles_in_blocks.insert(h.clone());
            }
            let node = attr
                .secondary
                .get(model::ATTR_NODE)
                .cloned()
                .or_else(|| owner.clone());
            let ip = a.ip.to_string();
            let owners = in_use.get(&ip).cloned().unwrap_or_default();
            let alloc = Allocation {
                ip: a.ip,
                handle: attr.handle_id.clone(),
                sequence_number: a.sequence_number,
                pod: attr.secondary.get(model::ATTR_POD).cloned(),
                namespace: attr.secondary.get(model::ATTR_NAMESPACE).cloned(),
                borrowed: node != owner,
                node,
                kind: attr.secondary.get(model::ATTR_TYPE).cloned(),
                creation_timestamp: attr.secondary.get(model::ATTR_TIMESTAMP).cloned(),
                in_use: !owners.is_empty(),
                owners,
            };
            if !alloc.in_use {
                leaked.push(alloc.clone());
            }
            report.allocations.entry(ip).or_default().push(alloc);
        }
    }

    // Handles.
    let hlist = ipam
        .kv()
        .list(model::HANDLES_PREFIX)
        .await
        .map_err(etcd("list handles"))?;
    let mut handle_ids = BTreeSet::new();
    for kv in &hlist.kvs {
        let Some(id) = model::parse_handle_key(&kv.key) else {
            continue;
        };
        let _: HandleValue =
            serde_json::from_slice(&kv.value).map_err(|source| AdminError::Decode {
                key: kv.key.clone(),
                source,
            })?;
        handle_ids.insert(id.to_owned());
        if !handles_in_blocks.contains(id) {
            report.leaked_handles.push(HandleInfo {
                id: id.to_owned(),
                revision: kv.mod_revision.to_string(),
            });
        }
    }
    report.missing_handles = handles_in_blocks.difference(&handle_ids).cloned().collect();

    // Affinities.
    let alist = ipam
        .kv()
        .list(model::HOSTS_PREFIX)
        .await
        .map_err(etcd("list affinities"))?;
    let block_owner: HashMap<IpNet, Option<String>> = blocks
        .iter()
        .map(|(b, _)| (b.cidr, b.host().map(str::to_owned)))
        .collect();
    for kv in &alist.kvs {
        let Some((node, cidr)) = model::parse_affinity_key(&kv.key) else {
            continue;
        };
        let v: AffinityValue =
            serde_json::from_slice(&kv.value).map_err(|source| AdminError::Decode {
                key: kv.key.clone(),
                source,
            })?;
        let reason = if nodes_known && !node_names.contains(&node) {
            Some("affinity of a node that no longer exists")
        } else {
            match (block_owner.get(&cidr), v.state) {
                (None, AffinityState::Pending) => Some("pending claim never completed (no block)"),
                (None, _) => Some("affinity without a block"),
                (Some(o), _) if o.as_deref() != Some(node.as_str()) => {
                    Some("block is affine to another node")
                }
                _ => None,
            }
        };
        if let Some(reason) = reason
            && !orphaned.iter().any(|o| o.node == node && o.cidr == cidr)
        {
            orphaned.push(OrphanedAffinity {
                node,
                cidr,
                reason: reason.into(),
            });
        }
    }
    report.orphaned_affinities = orphaned;
    Ok(Check {
        nodes_known,
        blocks: blocks.len(),
        addresses_in_use: in_use.len(),
        leaked,
        handles_with_ips: handle_ids.len() - report.leaked_handles.len(),
        report,
    })
}

/// What `release --from-report` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseSummary {
    pub released_ips: Vec<IpAddr>,
    /// Leaked addresses that changed since the report (released or re-allocated): skipped.
    pub skipped_ips: Vec<IpAddr>,
    pub deleted_handles: Vec<String>,
    pub released_affinities: Vec<(String, IpNet)>,
}

/// `calicoctl ipam release --ip=<IP>`: whether the address was assigned (and is now free).
pub async fn release_ip(ipam: &Ipam, ip: IpAddr) -> Result<bool, AdminError> {
    let not = ipam.release_ips(&[ip]).await?;
    Ok(!not.contains(&ip))
}

/// `calicoctl ipam release --from-report=<FILE>`: releases the report's leaked addresses (only
/// if each still has the sequence number the report saw), deletes its leaked handles (only at
/// the revision the report saw) and releases its orphaned affinities.
pub async fn release_from_report(
    ipam: &Ipam,
    report: &Report,
) -> Result<ReleaseSummary, AdminError> {
    let mut summary = ReleaseSummary::default();
    let leaked: Vec<&Allocation> = report
        .allocations
        .values()
        .flatten()
        .filter(|a| !a.in_use)
        .collect();
    let seq: HashMap<IpAddr, u64> = leaked
        .iter()
        .filter_map(|a| a.sequence_number.map(|s| (a.ip, s)))
        .collect();
    let ips: Vec<IpAddr> = leaked.iter().map(|a| a.ip).collect();
    let skipped = ipam.release_ips_checked(&ips, &seq).await?;
    summary.skipped_ips = skipped.clone();
    summary.released_ips = ips.into_iter().filter(|ip| !skipped.contains(ip)).collect();
    for h in &report.leaked_handles {
        let key = model::handle_key(&h.id);
        let rev: i64 = h.revision.parse().map_err(|_| AdminError::Report {
            reason: format!(
                "leakedHandles: revision {:?} of {} is not a number",
                h.revision, h.id
            ),
        })?;
        match ipam.kv().delete(&key, Some(rev)).await {
            Ok(_) => summary.deleted_handles.push(h.id.clone()),
            Err(KvError::NotFound { .. } | KvError::Conflict { .. }) => {}
            Err(e) => return Err(etcd(format!("delete {key}"))(e)),
        }
    }
    for o in &report.orphaned_affinities {
        ipam.release_affinity(&o.node, o.cidr).await?;
        summary.released_affinities.push((o.node.clone(), o.cidr));
    }
    Ok(summary)
}

/// `calicoctl ipam split <NUMBER> --cidr|--name`: disables the pool, creates `split-<name>-<i>`
/// pools covering it (same settings), and deletes the original. Returns (name, CIDR) of the new
/// pools. Existing blocks and allocations are untouched (block CIDRs stay inside the new pools
/// when the block size is not larger than the new pools).
pub async fn split(
    ipam: &Ipam,
    name: Option<&str>,
    cidr: Option<IpNet>,
    parts: u32,
) -> Result<Vec<(String, IpNet)>, AdminError> {
    let ds = ipam.datastore();
    let pools = ds.list::<IPPool>(None).await.map_err(res("IPPool"))?;
    let old = pools
        .items
        .iter()
        .find(|p| {
            name.is_some_and(|n| p.metadata.name.as_deref() == Some(n))
                || cidr.is_some_and(|c| p.spec.cidr.parse::<IpNet>().ok() == Some(c))
        })
        .cloned()
        .ok_or_else(|| AdminError::Split {
            reason: format!(
                "unable to find IP pool {} covering the specified CIDR {}",
                name.unwrap_or(""),
                cidr.map(|c| c.to_string()).unwrap_or_default()
            ),
        })?;
    let old_name = old.metadata.name.clone().unwrap_or_default();
    let old_cidr: IpNet = old.spec.cidr.parse().map_err(|_| AdminError::Split {
        reason: format!("pool {old_name} has an invalid CIDR {}", old.spec.cidr),
    })?;
    if parts < 2 {
        return Err(AdminError::Split {
            reason: format!("number to split CIDR into is not a valid power of 2: {parts}"),
        });
    }
    let cidrs = split_cidr(&old_cidr, parts).ok_or_else(|| AdminError::Split {
        reason: format!(
            "the CIDR {old_cidr} cannot be split into {parts} parts (power of 2 and large enough)"
        ),
    })?;
    let mut disabled = old.clone();
    disabled.spec.disabled = Some(true);
    let disabled = ds.update(&disabled).await.map_err(res("IPPool"))?;
    let mut created = Vec::new();
    for (i, c) in cidrs.iter().enumerate() {
        let mut p = old.clone();
        p.metadata = Default::default();
        p.metadata.name = Some(format!("split-{old_name}-{i}"));
        p.metadata.labels = old.metadata.labels.clone();
        p.spec.cidr = c.to_string();
        p.spec.disabled = None;
        if let Some(b) = p.spec.block_size
            && b < c.prefix_len() as i64
        {
            p.spec.block_size = Some(c.prefix_len() as i64);
        }
        ds.create(&p).await.map_err(res("IPPool"))?;
        created.push((format!("split-{old_name}-{i}"), *c));
    }
    ds.delete::<IPPool>(
        None,
        &old_name,
        disabled.metadata.resource_version.as_deref(),
    )
    .await
    .map_err(res("IPPool"))?;
    ipam.invalidate_settings();
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_with_calico_field_names() {
        let mut r = Report::default();
        r.allocations.insert(
            "10.0.0.1".into(),
            vec![Allocation {
                ip: "10.0.0.1".parse().unwrap(),
                handle: Some("h".into()),
                sequence_number: Some(3),
                pod: None,
                namespace: None,
                node: Some("n1".into()),
                kind: None,
                creation_timestamp: None,
                in_use: false,
                borrowed: false,
                owners: vec![],
            }],
        );
        r.leaked_handles.push(HandleInfo {
            id: "h2".into(),
            revision: "7".into(),
        });
        let j = r.to_json();
        assert!(j.contains("\"inUse\": false") && j.contains("\"sequenceNumber\": 3"));
        assert!(j.contains("\"leakedHandles\"") && j.contains("\"ID\": \"h2\""));
        assert_eq!(Report::from_json(&j).unwrap(), r);
        assert_eq!(r.leaked_ips(), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
    }
}
