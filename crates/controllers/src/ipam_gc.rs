//! IPAM garbage collection, as Calico's kube-controllers does it in etcd mode.
//!
//! Every allocation in the IPAM blocks is judged ([`verdict`], pure):
//! - it belongs to a node: its `node` attribute, else its block's affinity;
//! - a node that is not Kubernetes' (a Calico Node without a `k8s` orchRef: a Docker host),
//!   or that nothing identifies as Kubernetes', is never touched ([`Verdict::NotKubernetes`]);
//! - on a Kubernetes node that was deleted, the allocation is released at once
//!   ([`Verdict::NodeGone`]), unless its pod still exists with that address;
//! - an allocation of a pod (attributes `namespace` and `pod`, set by the CNI plugin with the
//!   handle `k8s-pod-network.<containerID>`) whose pod no longer exists, or exists with other
//!   addresses, is a leak candidate ([`Verdict::Leaked`]); it is released only once it has
//!   been a candidate for the whole grace period (Calico's `leakGracePeriod`, default 15 min;
//!   0 turns leak collection off), so a pod still being set up or torn down never loses its
//!   address;
//! - everything else (a live pod's address, a node's tunnel address) is in use.
//!
//! Releases compare the allocation's sequence number, so an address released and handed out
//! again since it was read is never released by mistake.
//!
//! The candidates' first-seen times live in memory ([`LeakTracker`]), as in Calico: a restarted
//! (or newly elected) controller starts the grace period again, which errs on keeping.

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
}

impl Allocation {
    fn is_pod(&self) -> bool {
        self.namespace.is_some() && self.pod.is_some()
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
    /// (namespace, name) → the pod's addresses (empty while it has none yet).
    pods: HashMap<(String, String), Vec<IpAddr>>,
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
                Some((
                    (p.metadata.namespace.clone()?, p.metadata.name.clone()?),
                    pod_ips(p),
                ))
            })
            .collect();
        v
    }

    /// Whether a live pod holds this allocation: the pod exists and has this address or no
    /// address reported yet (still being set up).
    fn pod_holds(&self, a: &Allocation) -> bool {
        let (Some(ns), Some(pod)) = (&a.namespace, &a.pod) else {
            return false;
        };
        self.pods
            .get(&(ns.clone(), pod.clone()))
            .is_some_and(|ips| ips.is_empty() || ips.contains(&a.ip))
    }
}

/// What the collector makes of one allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not on a Kubernetes node: never touched.
    NotKubernetes,
    /// Held by a live pod, or not a pod's (a node's tunnel address) on a live node.
    InUse,
    /// A pod's address whose pod is gone: released after the grace period.
    Leaked,
    /// On a Kubernetes node that was deleted: released now.
    NodeGone,
}

/// The verdict on one allocation (pure).
pub fn verdict(a: &Allocation, view: &ClusterView) -> Verdict {
    let Some(node) = &a.node else {
        return Verdict::NotKubernetes;
    };
    let kube_name = match view.kubernetes_nodes.get(node) {
        Some(k) => k.as_str(),
        None if view.other_nodes.contains(node) => return Verdict::NotKubernetes,
        // No Calico Node yet, but a Kubernetes Node of that name: Kubernetes'.
        None if view.live_kube_nodes.contains(node) => node.as_str(),
        // Neither: a host nobody knows (e.g. a removed Docker host); not ours to judge.
        None => return Verdict::NotKubernetes,
    };
    if view.pod_holds(a) {
        return Verdict::InUse;
    }
    // An empty Kubernetes node list is treated as "unknown", never as "all deleted".
    if !view.live_kube_nodes.is_empty() && !view.live_kube_nodes.contains(kube_name) {
        return Verdict::NodeGone;
    }
    if a.is_pod() {
        Verdict::Leaked
    } else {
        Verdict::InUse
    }
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
/// `0`).
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, GcError> {
    let bad = || GcError::Duration {
        field: field.into(),
        value: text.into(),
    };
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(value * secs).map_err(|_| bad())?;
    }
    Ok(total)
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
    for a in &allocs {
        match verdict(a, &view) {
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

/// Releases every allocation of Calico node `node` (a deleted Kubernetes node) that no live
/// pod holds.
pub async fn release_node(ipam: &Ipam, node: &str, pods: &[Pod]) -> Result<NodeRelease, GcError> {
    let view = ClusterView::new(&[], &[], pods);
    let (_, allocs) = read_allocations(ipam).await?;
    let (in_use, free): (Vec<&Allocation>, Vec<&Allocation>) = allocs
        .iter()
        .filter(|a| a.node.as_deref() == Some(node))
        .partition(|a| view.pod_holds(a));
    Ok(NodeRelease {
        released: release(ipam, &free).await?,
        in_use: in_use.iter().map(|a| a.ip).collect(),
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
        assert_eq!(
            v(alloc("10.0.0.1", "k1", Some(("a", "live")))),
            Verdict::InUse
        );
        assert_eq!(
            v(alloc("10.0.0.2", "k1", Some(("a", "new")))),
            Verdict::InUse
        );
        assert_eq!(
            v(alloc("10.0.0.3", "k1", Some(("a", "moved")))),
            Verdict::Leaked
        );
        assert_eq!(
            v(alloc("10.0.0.4", "k1", Some(("a", "dead")))),
            Verdict::Leaked
        );
        assert_eq!(v(alloc("10.0.0.5", "k1", None)), Verdict::InUse);
        assert_eq!(v(alloc("10.0.0.6", "gone", None)), Verdict::NodeGone);
        assert_eq!(
            v(alloc("10.0.0.7", "gone", Some(("a", "dead")))),
            Verdict::NodeGone
        );
        assert_eq!(
            v(alloc("10.0.0.8", "docker", Some(("a", "dead")))),
            Verdict::NotKubernetes
        );
        assert_eq!(
            v(alloc("10.0.0.9", "stranger", Some(("a", "dead")))),
            Verdict::NotKubernetes
        );
        // A live pod on a deleted node keeps its address.
        assert_eq!(
            v(alloc("10.0.0.1", "gone", Some(("a", "live")))),
            Verdict::InUse
        );
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
