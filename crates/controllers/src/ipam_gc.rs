//! IPAM garbage collection, as Calico's kube-controllers does it in etcd mode.
//!
//! Allocations are judged node by node (the allocation's `node` attribute, else its block's
//! affinity), pure in [`judge`]:
//! - a node that is not Kubernetes' (a Calico Node without a `k8s` orchRef: a Docker host), or
//!   that nothing identifies as Kubernetes' (no Calico Node and no Kubernetes Node of that
//!   name), is never touched;
//! - on a live Kubernetes node, a pod's allocation (attributes `namespace` and `pod`, set by the
//!   CNI plugin with the handle `k8s-pod-network.<containerID>`) whose pod no longer exists, was
//!   rescheduled to another node, or reports other addresses is a leak candidate; it is
//!   released only once it has been a candidate for the whole grace period (Calico's
//!   `leakGracePeriod`, default 15 min; 0 turns leak collection off), so a pod being set up or
//!   torn down never loses its address. A pod without an address reported yet holds it;
//! - on a Kubernetes node that was deleted, a pod's allocation whose pod is gone is released
//!   at once; the node's tunnel addresses (`type` attribute) go too, but only when nothing else
//!   on the node is still in use. An allocation of unknown origin (neither a pod's nor a
//!   tunnel's) is never released and keeps the node from being cleaned up, as in Calico;
//! - everything else (a live pod's address, a live node's tunnel address, allocations of
//!   unknown origin) is in use.
//!
//! A leaked address is released only together with every other address of its handle (a
//! dual-stack pod's IPv4 and IPv6 go together, never one of them while the other is in use).
//! Releases compare the allocation's sequence number, so an address released and handed out
//! again since it was read is never released by mistake.
//!
//! The candidates' first-seen times live in memory ([`LeakTracker`]), as in Calico: a restarted
//! (or newly elected) controller starts the grace period again, which errs on keeping.
//!
//! Unlike Calico, allocations whose node has no Calico Node and no Kubernetes Node are left
//! alone (Calico collects their pods' addresses): a Docker host removed with calicoctl must
//! never lose addresses here; `calicoctl ipam check` reports them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use calico_api::{KubeControllersConfiguration, Node};
use calico_datastore::ResourceError;
use calico_ipam::model::{self, AllocationBlock};
use calico_ipam::{Ipam, IpamError};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node as KubeNode, Pod};

use crate::nodes::kubernetes_name;

/// Calico's default `leakGracePeriod`.
pub const DEFAULT_LEAK_GRACE: Duration = Duration::from_secs(15 * 60);
/// Environment variable for the grace period when no KubeControllersConfiguration sets it.
pub const LEAK_GRACE_ENV: &str = "IPAM_LEAK_GRACE_PERIOD";
/// Handle prefix the CNI plugin uses for pods.
pub const POD_HANDLE_PREFIX: &str = "k8s-pod-network.";

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("listing IPAM blocks: {0}")]
    ListBlocks(#[source] calico_datastore::KvError),
    #[error("IPAM block {key}: {source}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("listing Calico Nodes: {0}")]
    ListNodes(#[source] ResourceError),
    #[error("listing IPPools: {0}")]
    ListPools(#[source] ResourceError),
    #[error("reading KubeControllersConfiguration default: {0}")]
    Config(#[source] ResourceError),
    #[error("{field}: {value:?} is not a duration (e.g. 15m, 90s, 1h30m)")]
    Duration { field: String, value: String },
    #[error("releasing {ips:?}: {source}")]
    Release {
        ips: Vec<IpAddr>,
        #[source]
        source: IpamError,
    },
}

/// One allocated address as read from its block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    pub block: IpNet,
    pub sequence_number: Option<u64>,
    pub handle: Option<String>,
    /// The `node` attribute, else the block's affinity host.
    pub node: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    /// The `type` attribute (tunnel addresses: `ipipTunnelAddress`, `vxlanTunnelAddress`, ...).
    pub kind: Option<String>,
}

/// Calico's `type` attribute values of node tunnel addresses.
pub const TUNNEL_TYPES: &[&str] = &[
    "ipipTunnelAddress",
    "vxlanTunnelAddress",
    "vxlanV6TunnelAddress",
    "wireguardTunnelAddress",
    "wireguardV6TunnelAddress",
];

impl Allocation {
    fn is_pod(&self) -> bool {
        self.namespace.is_some() && self.pod.is_some()
    }

    fn is_tunnel(&self) -> bool {
        self.kind
            .as_deref()
            .is_some_and(|k| TUNNEL_TYPES.contains(&k))
    }
}

/// Every allocation in etcd's IPAM blocks, with the blocks themselves (for usage counts).
pub async fn read_allocations(
    ipam: &Ipam,
) -> Result<(Vec<AllocationBlock>, Vec<Allocation>), GcError> {
    let listing = ipam
        .kv()
        .list(model::BLOCKS_PREFIX)
        .await
        .map_err(GcError::ListBlocks)?;
    let mut blocks = Vec::new();
    let mut out = Vec::new();
    for kv in &listing.kvs {
        if model::parse_block_key(&kv.key).is_none() {
            continue;
        }
        let b: AllocationBlock =
            serde_json::from_slice(&kv.value).map_err(|source| GcError::Decode {
                key: kv.key.clone(),
                source,
            })?;
        let host = b.host().map(str::to_owned);
        for a in b.allocated() {
            let attr = a.attribute.cloned().unwrap_or_default();
            out.push(Allocation {
                ip: a.ip,
                block: b.cidr,
                sequence_number: a.sequence_number,
                handle: attr.handle_id.clone(),
                node: attr
                    .secondary
                    .get(model::ATTR_NODE)
                    .cloned()
                    .or_else(|| host.clone()),
                namespace: attr.secondary.get(model::ATTR_NAMESPACE).cloned(),
                pod: attr.secondary.get(model::ATTR_POD).cloned(),
                kind: attr.secondary.get(model::ATTR_TYPE).cloned(),
            });
        }
        blocks.push(b);
    }
    Ok((blocks, out))
}

/// What the cluster looks like to the collector.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// Calico node name → Kubernetes node name, for Calico Nodes with a `k8s` orchRef.
    kubernetes_nodes: BTreeMap<String, String>,
    /// Calico Nodes without a `k8s` orchRef (Docker hosts).
    other_nodes: BTreeSet<String>,
    /// Kubernetes Nodes that exist.
    live_kube_nodes: BTreeSet<String>,
    /// Kubernetes nodes known to be deleted, whatever the node list says.
    deleted: BTreeSet<String>,
    /// (namespace, name) → the pod's node and addresses (empty while it has none yet).
    pods: HashMap<(String, String), (Option<String>, Vec<IpAddr>)>,
}

fn pod_ips(p: &Pod) -> Vec<IpAddr> {
    let status = p.status.as_ref();
    status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|i| i.ip.as_str())
        .chain(status.and_then(|s| s.pod_ip.as_deref()))
        .filter_map(|s| s.parse().ok())
        .collect()
}

impl ClusterView {
    pub fn new(calico_nodes: &[Node], kube_nodes: &[KubeNode], pods: &[Pod]) -> Self {
        let mut v = ClusterView::default();
        for n in calico_nodes {
            let Some(name) = n.metadata.name.clone() else {
                continue;
            };
            match kubernetes_name(n) {
                Some(k) => {
                    v.kubernetes_nodes.insert(name, k.to_string());
                }
                None => {
                    v.other_nodes.insert(name);
                }
            }
        }
        v.live_kube_nodes = kube_nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        v.pods = pods
            .iter()
            .filter_map(|p| {
                let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
                Some((
                    (p.metadata.namespace.clone()?, p.metadata.name.clone()?),
                    (node, pod_ips(p)),
                ))
            })
            .collect();
        v
    }

    /// Whether a live pod holds this allocation made on Kubernetes node `kube_node`: the pod
    /// exists, was not rescheduled to another node, and has this address or no address
    /// reported yet (still being set up).
    fn pod_holds(&self, a: &Allocation, kube_node: Option<&str>) -> bool {
        let (Some(ns), Some(pod)) = (&a.namespace, &a.pod) else {
            return false;
        };
        let Some((node, ips)) = self.pods.get(&(ns.clone(), pod.clone())) else {
            return false;
        };
        if let (Some(now), Some(then)) = (node.as_deref(), kube_node)
            && now != then
        {
            return false;
        }
        ips.is_empty() || ips.contains(&a.ip)
    }

    /// The Kubernetes node behind Calico node `node`, and whether it still exists; None when
    /// the node is not Kubernetes'.
    fn kubernetes_node<'a>(&'a self, node: &'a str) -> Option<(&'a str, bool)> {
        let kube_name = match self.kubernetes_nodes.get(node) {
            Some(k) => k.as_str(),
            None if self.other_nodes.contains(node) => return None,
            // No Calico Node yet, but a Kubernetes Node of that name: Kubernetes'.
            None if self.live_kube_nodes.contains(node) => node,
            // Neither: a host nobody knows (e.g. a removed Docker host); not ours to judge.
            None => return None,
        };
        // An empty Kubernetes node list is treated as "unknown", never as "all deleted".
        let live = !self.deleted.contains(kube_name)
            && (self.live_kube_nodes.is_empty() || self.live_kube_nodes.contains(kube_name));
        Some((kube_name, live))
    }
}

/// What the collector makes of one allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not on a Kubernetes node: never touched.
    NotKubernetes,
    /// In use: a live pod's, a live node's tunnel address, or of unknown origin.
    InUse,
    /// A pod's address on a live node whose pod is gone: released after the grace period.
    Leaked,
    /// On a Kubernetes node that was deleted and not in use: released now.
    NodeGone,
}

/// The verdict on every allocation, in the order given (pure). Judged per node, because a
/// deleted node's tunnel addresses go only when nothing else on it is in use.
pub fn judge(allocs: &[Allocation], view: &ClusterView) -> Vec<Verdict> {
    let mut out = vec![Verdict::NotKubernetes; allocs.len()];
    let mut by_node: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, a) in allocs.iter().enumerate() {
        if let Some(n) = a.node.as_deref() {
            by_node.entry(n).or_default().push(i);
        }
    }
    for (node, idx) in by_node {
        let Some((kube_name, live)) = view.kubernetes_node(node) else {
            continue;
        };
        let mut tunnels = Vec::new();
        let mut node_in_use = false;
        for i in idx {
            let a = &allocs[i];
            out[i] = if a.is_tunnel() {
                tunnels.push(i);
                Verdict::InUse
            } else if !a.is_pod() || view.pod_holds(a, Some(kube_name)) {
                node_in_use = true;
                Verdict::InUse
            } else if live {
                Verdict::Leaked
            } else {
                Verdict::NodeGone
            };
        }
        if !live && !node_in_use {
            for i in tunnels {
                out[i] = Verdict::NodeGone;
            }
        }
    }
    out
}

/// The verdict on one allocation judged alone (see [`judge`]).
pub fn verdict(a: &Allocation, view: &ClusterView) -> Verdict {
    judge(std::slice::from_ref(a), view)[0]
}

/// `due` without the allocations whose handle also has an allocation that is not due (pure).
fn whole_handles<'a>(due: Vec<&'a Allocation>, all: &[Allocation]) -> Vec<&'a Allocation> {
    let due_keys: BTreeSet<(IpAddr, Option<u64>)> =
        due.iter().map(|a| (a.ip, a.sequence_number)).collect();
    let partial: BTreeSet<&str> = all
        .iter()
        .filter(|a| !due_keys.contains(&(a.ip, a.sequence_number)))
        .filter_map(|a| a.handle.as_deref())
        .collect();
    due.into_iter()
        .filter(|a| a.handle.as_deref().is_none_or(|h| !partial.contains(h)))
        .collect()
}

/// When each leak candidate was first seen; an allocation is identified by address, handle and
/// sequence number, so a re-allocation starts a new clock.
#[derive(Debug, Default)]
pub struct LeakTracker {
    first_seen: HashMap<(IpAddr, Option<String>, Option<u64>), Instant>,
}

impl LeakTracker {
    /// Records this round's candidates (forgetting those that are no longer candidates) and
    /// returns the ones that have been candidates for at least `grace` at `now`.
    pub fn observe<'a>(
        &mut self,
        candidates: impl IntoIterator<Item = &'a Allocation>,
        now: Instant,
        grace: Duration,
    ) -> Vec<&'a Allocation> {
        let mut seen = HashMap::new();
        let mut due = Vec::new();
        for a in candidates {
            let key = (a.ip, a.handle.clone(), a.sequence_number);
            let since = self.first_seen.get(&key).copied().unwrap_or(now);
            if now.saturating_duration_since(since) >= grace {
                due.push(a);
            }
            seen.insert(key, since);
        }
        self.first_seen = seen;
        due
    }

    /// Number of allocations currently waiting out the grace period.
    pub fn pending(&self) -> usize {
        self.first_seen.len()
    }
}

/// Parses a Go-style duration as Calico's configuration uses (`15m`, `1h30m`, `90s`, `500ms`,
/// `0`), naming `field` when it is not one.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, GcError> {
    calico_api::parse_go_duration(text).ok_or_else(|| GcError::Duration {
        field: field.into(),
        value: text.into(),
    })
}

/// The leak grace period: `spec.controllers.node.leakGracePeriod` of the
/// KubeControllersConfiguration `default` in etcd, else [`LEAK_GRACE_ENV`], else 15 min.
/// `None` when it is 0 (leak collection off).
pub async fn leak_grace(
    ds: &calico_datastore::Datastore,
    env: Option<&str>,
) -> Result<Option<Duration>, GcError> {
    let kcc: Option<KubeControllersConfiguration> =
        ds.get(None, "default").await.map_err(GcError::Config)?;
    let configured = kcc
        .as_ref()
        .and_then(|k| k.spec.controllers.node.as_ref())
        .and_then(|n| n.leak_grace_period.clone());
    let grace = match (configured, env) {
        (Some(v), _) => parse_duration("spec.controllers.node.leakGracePeriod", &v)?,
        (None, Some(v)) => parse_duration(LEAK_GRACE_ENV, v)?,
        (None, None) => DEFAULT_LEAK_GRACE,
    };
    Ok((!grace.is_zero()).then_some(grace))
}

/// What a collection round found and did.
#[derive(Debug, Default, PartialEq)]
pub struct GcReport {
    /// Leaked pod addresses released after the grace period.
    pub released_leaked: Vec<IpAddr>,
    /// Addresses on deleted Kubernetes nodes released.
    pub released_node_gone: Vec<IpAddr>,
    pub in_use: usize,
    pub not_kubernetes: usize,
    /// Leak candidates still inside the grace period.
    pub waiting: usize,
}

async fn release(ipam: &Ipam, allocs: &[&Allocation]) -> Result<Vec<IpAddr>, GcError> {
    if allocs.is_empty() {
        return Ok(Vec::new());
    }
    let ips: Vec<IpAddr> = allocs.iter().map(|a| a.ip).collect();
    let sequence: HashMap<IpAddr, u64> = allocs
        .iter()
        .filter_map(|a| Some((a.ip, a.sequence_number?)))
        .collect();
    let skipped = ipam
        .release_ips_checked(&ips, &sequence)
        .await
        .map_err(|source| GcError::Release {
            ips: ips.clone(),
            source,
        })?;
    Ok(ips.into_iter().filter(|ip| !skipped.contains(ip)).collect())
}

/// One collection round. `grace` None: leak candidates are only counted, never released
/// (allocations of deleted nodes still are).
pub async fn collect(
    ipam: &Ipam,
    tracker: &mut LeakTracker,
    kube_nodes: &[KubeNode],
    pods: &[Pod],
    now: Instant,
    grace: Option<Duration>,
) -> Result<GcReport, GcError> {
    let calico_nodes = ipam
        .datastore()
        .list::<Node>(None)
        .await
        .map_err(GcError::ListNodes)?
        .items;
    let view = ClusterView::new(&calico_nodes, kube_nodes, pods);
    let (_, allocs) = read_allocations(ipam).await?;
    let mut report = GcReport::default();
    let mut leaked = Vec::new();
    let mut node_gone = Vec::new();
    for (a, v) in allocs.iter().zip(judge(&allocs, &view)) {
        match v {
            Verdict::NotKubernetes => report.not_kubernetes += 1,
            Verdict::InUse => report.in_use += 1,
            Verdict::Leaked => leaked.push(a),
            Verdict::NodeGone => node_gone.push(a),
        }
    }
    let due = match grace {
        Some(g) => tracker.observe(leaked.iter().copied(), now, g),
        None => {
            tracker.observe(leaked.iter().copied(), now, Duration::MAX);
            Vec::new()
        }
    };
    let mut ready: Vec<&Allocation> = due.iter().chain(node_gone.iter()).copied().collect();
    ready = whole_handles(ready, &allocs);
    let due: Vec<&Allocation> = due.into_iter().filter(|a| ready.contains(a)).collect();
    let node_gone: Vec<&Allocation> = node_gone
        .into_iter()
        .filter(|a| ready.contains(a))
        .collect();
    report.waiting = leaked.len() - due.len();
    for a in &due {
        tracing::info!(ip = %a.ip, handle = ?a.handle, namespace = ?a.namespace, pod = ?a.pod,
            "releasing leaked address: its pod is gone and the grace period passed");
    }
    report.released_leaked = release(ipam, &due).await?;
    for a in &node_gone {
        tracing::info!(ip = %a.ip, node = ?a.node, "releasing address of a deleted Kubernetes node");
    }
    report.released_node_gone = release(ipam, &node_gone).await?;
    Ok(report)
}

/// What [`release_node`] did.
#[derive(Debug, Default, PartialEq)]
pub struct NodeRelease {
    pub released: Vec<IpAddr>,
    /// Addresses of that node still held by live pods (kept).
    pub in_use: Vec<IpAddr>,
}

/// Releases the allocations of Calico node `node`, a deleted Kubernetes node, as [`judge`]
/// does for a deleted node: pods' addresses no live pod holds, then its tunnel addresses if
/// nothing else on it is in use. Everything left is reported as in use.
pub async fn release_node(ipam: &Ipam, node: &str, pods: &[Pod]) -> Result<NodeRelease, GcError> {
    let mut view = ClusterView::new(&[], &[], pods);
    view.kubernetes_nodes
        .insert(node.to_string(), node.to_string());
    view.deleted.insert(node.to_string());
    let (_, allocs) = read_allocations(ipam).await?;
    let mine: Vec<Allocation> = allocs
        .into_iter()
        .filter(|a| a.node.as_deref() == Some(node))
        .collect();
    let verdicts = judge(&mine, &view);
    let free: Vec<&Allocation> = mine
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| **v == Verdict::NodeGone)
        .map(|(a, _)| a)
        .collect();
    let released = release(ipam, &free).await?;
    Ok(NodeRelease {
        in_use: mine
            .iter()
            .map(|a| a.ip)
            .filter(|ip| !released.contains(ip))
            .collect(),
        released,
    })
}

/// Allocated and free addresses of one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    pub cidr: String,
    pub total: u128,
    pub allocated: u128,
}

impl PoolUsage {
    pub fn free(&self) -> u128 {
        self.total.saturating_sub(self.allocated)
    }
}

/// Usage of every IPPool in etcd, by pool name (from the IPAM blocks).
pub async fn pool_usage(ipam: &Ipam) -> Result<BTreeMap<String, PoolUsage>, GcError> {
    let pools = ipam
        .datastore()
        .list::<calico_api::IPPool>(None)
        .await
        .map_err(GcError::ListPools)?
        .items;
    let (blocks, _) = read_allocations(ipam).await?;
    Ok(pool_usage_of(&pools, &blocks))
}

/// [`pool_usage`] over already read pools and blocks (pure).
pub fn pool_usage_of(
    pools: &[calico_api::IPPool],
    blocks: &[AllocationBlock],
) -> BTreeMap<String, PoolUsage> {
    let mut out = BTreeMap::new();
    for p in pools {
        let (Some(name), Ok(cidr)) = (p.metadata.name.clone(), p.spec.cidr.parse::<IpNet>()) else {
            continue;
        };
        let cidr = cidr.trunc();
        let allocated = blocks
            .iter()
            .filter(|b| cidr.contains(&b.cidr.network()))
            .map(|b| b.in_use() as u128)
            .sum();
        out.insert(
            name,
            PoolUsage {
                cidr: cidr.to_string(),
                total: calico_ipam::cidr::net_len(&cidr),
                allocated,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_api::{NodeSpec, OrchRef};
    use serde_json::json;

    fn alloc(ip: &str, node: &str, pod: Option<(&str, &str)>) -> Allocation {
        Allocation {
            ip: ip.parse().unwrap(),
            block: "10.0.0.0/26".parse().unwrap(),
            sequence_number: Some(1),
            handle: pod.map(|(_, p)| format!("{POD_HANDLE_PREFIX}{p}")),
            node: Some(node.into()),
            namespace: pod.map(|(n, _)| n.into()),
            pod: pod.map(|(_, p)| p.into()),
            kind: None,
        }
    }

    fn tunnel(ip: &str, node: &str) -> Allocation {
        Allocation {
            kind: Some("ipipTunnelAddress".into()),
            ..alloc(ip, node, None)
        }
    }

    fn calico(name: &str, k8s: bool) -> Node {
        let mut n = Node::new(name, NodeSpec::default());
        if k8s {
            n.spec.orch_refs.push(OrchRef {
                node_name: Some(name.into()),
                orchestrator: "k8s".into(),
            });
        }
        n
    }

    fn kube(name: &str) -> KubeNode {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    }

    fn pod(ns: &str, name: &str, ips: &[&str]) -> Pod {
        let ips: Vec<_> = ips.iter().map(|i| json!({"ip": i})).collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [], "nodeName": "k1"},
            "status": {"podIPs": ips}
        }))
        .unwrap()
    }

    #[test]
    fn verdicts() {
        let view = ClusterView::new(
            &[
                calico("k1", true),
                calico("gone", true),
                calico("docker", false),
            ],
            &[kube("k1")],
            &[
                pod("a", "live", &["10.0.0.1"]),
                pod("a", "new", &[]),
                pod("a", "moved", &["10.0.0.9"]),
            ],
        );
        let v = |a: Allocation| verdict(&a, &view);
        let pod_on = |ip, node, name| alloc(ip, node, Some(("a", name)));
        assert_eq!(v(pod_on("10.0.0.1", "k1", "live")), Verdict::InUse);
        assert_eq!(v(pod_on("10.0.0.2", "k1", "new")), Verdict::InUse);
        assert_eq!(v(pod_on("10.0.0.3", "k1", "moved")), Verdict::Leaked);
        assert_eq!(v(pod_on("10.0.0.4", "k1", "dead")), Verdict::Leaked);
        // Unknown origin (no pod, not a tunnel): in use, wherever it is.
        assert_eq!(v(alloc("10.0.0.5", "k1", None)), Verdict::InUse);
        assert_eq!(v(alloc("10.0.0.6", "gone", None)), Verdict::InUse);
        assert_eq!(v(tunnel("10.0.0.6", "k1")), Verdict::InUse);
        assert_eq!(v(tunnel("10.0.0.6", "gone")), Verdict::NodeGone);
        assert_eq!(v(pod_on("10.0.0.7", "gone", "dead")), Verdict::NodeGone);
        assert_eq!(
            v(pod_on("10.0.0.8", "docker", "dead")),
            Verdict::NotKubernetes
        );
        assert_eq!(
            v(pod_on("10.0.0.9", "stranger", "dead")),
            Verdict::NotKubernetes
        );
        // A live pod's address on a deleted node stays (the pod still says it runs there).
        let mut there = pod("a", "still", &["10.0.0.1"]);
        there.spec.as_mut().unwrap().node_name = Some("gone".into());
        let view2 = ClusterView::new(&[calico("gone", true)], &[kube("k1")], &[there]);
        assert_eq!(
            verdict(&pod_on("10.0.0.1", "gone", "still"), &view2),
            Verdict::InUse
        );
    }

    #[test]
    fn a_deleted_nodes_tunnel_goes_only_when_nothing_else_is_in_use() {
        let view = ClusterView::new(
            &[calico("gone", true)],
            &[kube("k1")],
            &[pod("a", "still", &[])],
        );
        let mut still = alloc("10.0.0.2", "gone", Some(("a", "still")));
        still.node = Some("gone".into());
        let blocked = judge(&[tunnel("10.0.0.1", "gone"), still.clone()], &view);
        // "still" runs on k1 (rescheduled): its old address on "gone" is not held.
        assert_eq!(blocked, [Verdict::NodeGone, Verdict::NodeGone]);
        let unknown = alloc("10.0.0.3", "gone", None);
        let blocked = judge(&[tunnel("10.0.0.1", "gone"), unknown], &view);
        assert_eq!(blocked, [Verdict::InUse, Verdict::InUse]);
    }

    #[test]
    fn a_handle_is_released_whole_or_not_at_all() {
        let v4 = alloc("10.0.0.1", "k1", Some(("a", "dead")));
        let mut v6 = alloc("fd00::1", "k1", Some(("a", "dead")));
        v6.sequence_number = Some(7);
        let all = vec![v4.clone(), v6.clone()];
        assert_eq!(
            whole_handles(vec![&all[0]], &all),
            Vec::<&Allocation>::new()
        );
        assert_eq!(whole_handles(vec![&all[0], &all[1]], &all).len(), 2);
    }

    #[test]
    fn no_kubernetes_nodes_listed_means_no_node_is_gone() {
        let view = ClusterView::new(&[calico("k1", true)], &[], &[]);
        assert_eq!(
            verdict(&alloc("10.0.0.5", "k1", None), &view),
            Verdict::InUse
        );
    }

    #[test]
    fn tracker_waits_the_grace_period_and_restarts_for_a_new_allocation() {
        let mut t = LeakTracker::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(900);
        let a = alloc("10.0.0.4", "k1", Some(("a", "dead")));
        assert!(t.observe([&a], t0, grace).is_empty());
        assert!(
            t.observe([&a], t0 + Duration::from_secs(899), grace)
                .is_empty()
        );
        assert_eq!(t.observe([&a], t0 + grace, grace).len(), 1);
        // Re-allocated (new sequence number): a new clock.
        let mut b = a.clone();
        b.sequence_number = Some(2);
        assert!(t.observe([&b], t0 + grace, grace).is_empty());
        // No longer a candidate: forgotten.
        t.observe([], t0 + grace, grace);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn durations_as_calico_writes_them() {
        let d = |s| parse_duration("f", s).unwrap();
        assert_eq!(d("15m"), Duration::from_secs(900));
        assert_eq!(d("15m0s"), Duration::from_secs(900));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("0"), Duration::ZERO);
        for bad in ["", "15", "m", "5d", "-1s"] {
            let e = parse_duration("spec.x", bad).unwrap_err().to_string();
            assert!(e.contains("spec.x"), "{e}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// No allocation is ever released before it has been a candidate for the whole
            /// grace period, whatever the order and spacing of the rounds.
            #[test]
            fn never_released_before_the_grace_period(
                rounds in proptest::collection::vec((0u64..400, proptest::collection::vec(0u8..4, 0..4)), 1..12)
            ) {
                let grace = Duration::from_secs(600);
                let allocs: Vec<Allocation> = (0..4)
                    .map(|i| alloc(&format!("10.0.0.{i}"), "k1", Some(("a", "dead"))))
                    .collect();
                let t0 = Instant::now();
                let mut t = LeakTracker::default();
                let mut now = t0;
                // When each allocation became a candidate without interruption.
                let mut since: HashMap<IpAddr, Instant> = HashMap::new();
                for (step, present) in rounds {
                    now += Duration::from_secs(step);
                    let cands: Vec<&Allocation> = allocs
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| present.contains(&(*i as u8)))
                        .map(|(_, a)| a)
                        .collect();
                    since.retain(|ip, _| cands.iter().any(|a| a.ip == *ip));
                    for a in &cands {
                        since.entry(a.ip).or_insert(now);
                    }
                    for a in t.observe(cands.iter().copied(), now, grace) {
                        prop_assert!(now.duration_since(since[&a.ip]) >= grace);
                    }
                }
            }

            #[test]
            fn durations_round_trip(h in 0u64..48, m in 0u64..60, s in 0u64..60) {
                let text = format!("{h}h{m}m{s}s");
                prop_assert_eq!(
                    parse_duration("f", &text).unwrap(),
                    Duration::from_secs(h * 3600 + m * 60 + s)
                );
            }
        }
    }
}
