//! The synthetic cluster of the scale benchmarks and tests (issue 15), written into a real
//! etcd: per node a Node (with a VXLAN tunnel address and MAC, as calico-node records them),
//! one confirmed block affinity and workload endpoints; GlobalNetworkPolicies with label
//! selectors and a named port; GlobalNetworkSets; one IPPool (10.64.0.0/10, VXLAN Always) and
//! the default BGPConfiguration with the node-to-node mesh disabled (large Calico clusters use
//! route reflectors: no agent dials every other node). The shape is given by [`Shape`], the
//! same builders serve the changes a benchmark writes. Also: etcd's own metrics (range
//! requests) read from its `/metrics`, and ([`lab`]) the lab that runs the real agent and
//! model-only agents against it.
#![allow(dead_code)]

pub mod cpu;
pub mod lab;

use calico_datastore::{EtcdClient, TxnOutcome, Write};
use serde_json::{Value, json};

pub use calico_lab::metrics::{etcd_ranges, gauge, scrape};

pub const RES: &str = "/calico/resources/v3/projectcalico.org/";
/// The pool every block, workload address and tunnel address lies in.
pub const POOL: &str = "10.64.0.0/10";
pub const REMOTE_WEPS_PER_NODE: usize = 50;
pub const LOCAL_WEPS: usize = 100;
pub const POLICIES: usize = 1_000;
pub const RULES_PER_POLICY: usize = 10;
pub const SETS: usize = 1_000;
pub const APPS: usize = 50;

/// How big the synthetic cluster is. node-0 is "this" node (the agent under test); the
/// others exist only in the datastore.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub nodes: usize,
    pub local_weps: usize,
    pub remote_weps_per_node: usize,
    pub policies: usize,
    pub rules_per_policy: usize,
    pub sets: usize,
    /// The pool's `vxlanMode`: `Always` (remote blocks routed through `vxlan.calico`) or
    /// `Never` (no overlay: nothing of the overlay's own reads in the agent's rounds).
    pub vxlan: bool,
}

impl Shape {
    /// The issue's cluster at `nodes` nodes: 50 endpoints per remote node, 100 on node-0,
    /// 10,000 rules in 1,000 policies, 1,000 network sets.
    pub fn issue(nodes: usize) -> Shape {
        Shape {
            nodes,
            local_weps: LOCAL_WEPS,
            remote_weps_per_node: REMOTE_WEPS_PER_NODE,
            policies: POLICIES,
            rules_per_policy: RULES_PER_POLICY,
            sets: SETS,
            vxlan: true,
        }
    }
}

/// The host address of synthetic node `i` (never used for traffic: no packet is sent to it).
pub fn node_ip(i: usize) -> String {
    format!("172.16.{}.{}", i / 250, i % 250 + 1)
}

/// Node `i`'s VXLAN tunnel address (in the pool, outside every block of [`block`]).
pub fn vtep_ip(i: usize) -> String {
    format!("10.126.{}.{}", i / 250, i % 250 + 1)
}

pub fn node(i: usize) -> (String, Value) {
    let name = format!("node-{i}");
    (
        format!("{RES}nodes/{name}"),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name},
               "spec": {"bgp": {"ipv4Address": format!("{}/16", node_ip(i))},
                        "ipv4VXLANTunnelAddr": vtep_ip(i),
                        "vxlanTunnelMACAddr": format!("66:00:00:00:{:02x}:{:02x}", i / 256, i % 256)}}),
    )
}

/// Block `b` (0..8) of node `i`: /26 blocks packed from 10.64.0.0, eight per node.
pub fn block(i: usize, b: usize) -> String {
    assert!(b < 8, "eight blocks per node");
    let n = (i * 8 + b) * 64;
    format!("10.{}.{}.{}/26", 64 + n / 65_536, (n / 256) % 256, n % 256)
}

pub fn affinity(i: usize, b: usize) -> (String, Value) {
    (
        format!(
            "/calico/ipam/v2/host/node-{i}/ipv4/block/{}",
            block(i, b).replace('/', "-")
        ),
        json!({"state": "confirmed", "deleted": false}),
    )
}

/// Node-0's local endpoint `j` has interface `cali` + [`local_iface_suffix`]`(j)`.
pub fn local_iface_suffix(j: usize) -> String {
    format!("0000x{j:03}")
}

/// The address of endpoint `j` of node `n`.
pub fn wep_ip(n: usize, j: usize) -> String {
    format!("10.{}.{}.{}", 100 + n / 250, n % 250, j + 1)
}

pub fn wep(n: usize, j: usize, app: usize) -> (String, Value) {
    let name = format!("node-{n}-k8s-pod{j}-eth0");
    (
        format!("{RES}workloadendpoints/ns{}/{name}", j % 10),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
               "metadata": {"name": name, "namespace": format!("ns{}", j % 10),
                            "labels": {"app": format!("app{app}"), "tier": format!("t{}", j % 5)}},
               "spec": {"orchestrator": "k8s", "node": format!("node-{n}"),
                        "interfaceName": format!("cali{n:04}x{j:03}"),
                        "ipNetworks": [format!("{}/32", wep_ip(n, j))],
                        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
                        "profiles": []}}),
    )
}

/// The app label endpoint `j` of node `n` starts with.
pub fn app_of(n: usize, j: usize) -> usize {
    (n + j) % APPS
}

/// Policy `i` with `rules` rules; `version` moves the ports of rules 1.. (rule 0 is the
/// named port `http`).
pub fn policy_with(i: usize, version: usize, rules: usize) -> (String, Value) {
    let name = format!("pol{i}");
    let rules: Vec<Value> = (0..rules)
        .map(|r| {
            let port: Value = if r == 0 {
                json!("http")
            } else {
                json!(1000 + r + version)
            };
            json!({"action": "Allow", "protocol": "TCP",
                   "source": {"selector": format!("app == 'app{}'", (i + r) % APPS)},
                   "destination": {"ports": [port]}})
        })
        .collect();
    (
        format!("{RES}globalnetworkpolicies/{name}"),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
               "metadata": {"name": name},
               "spec": {"order": i as f64, "selector": format!("app == 'app{}'", i % APPS),
                        "ingress": rules}}),
    )
}

pub fn policy(i: usize, version: usize) -> (String, Value) {
    policy_with(i, version, RULES_PER_POLICY)
}

pub fn netset(i: usize) -> (String, Value) {
    let name = format!("set{i}");
    (
        format!("{RES}globalnetworksets/{name}"),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
               "metadata": {"name": name, "labels": {"app": format!("app{}", i % APPS)}},
               "spec": {"nets": [format!("198.{}.{}.0/24", 18 + i / 256, i % 256)]}}),
    )
}

pub fn pool(vxlan: bool) -> (String, Value) {
    (
        format!("{RES}ippools/scale-pool"),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
               "metadata": {"name": "scale-pool"},
               "spec": {"cidr": POOL, "blockSize": 26,
                        "vxlanMode": if vxlan { "Always" } else { "Never" },
                        "ipipMode": "Never", "natOutgoing": false}}),
    )
}

pub fn bgp_configuration() -> (String, Value) {
    (
        format!("{RES}bgpconfigurations/default"),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
               "metadata": {"name": "default"},
               "spec": {"nodeToNodeMeshEnabled": false, "asNumber": 64512}}),
    )
}

/// Every document of the cluster.
pub fn cluster(shape: Shape) -> Vec<(String, Value)> {
    let mut docs = vec![pool(shape.vxlan), bgp_configuration()];
    for i in 0..shape.nodes {
        let (key, mut doc) = node(i);
        if i == 0 {
            // This node's tunnel address is the agent's to allocate (IPAM), not ours.
            let spec = doc["spec"].as_object_mut().expect("spec");
            spec.remove("ipv4VXLANTunnelAddr");
            spec.remove("vxlanTunnelMACAddr");
        }
        docs.push((key, doc));
        docs.push(affinity(i, 0));
        let weps = if i == 0 {
            shape.local_weps
        } else {
            shape.remote_weps_per_node
        };
        for j in 0..weps {
            docs.push(wep(i, j, app_of(i, j)));
        }
    }
    for i in 0..shape.policies {
        docs.push(policy_with(i, 0, shape.rules_per_policy));
    }
    for i in 0..shape.sets {
        docs.push(netset(i));
    }
    docs
}

/// Writes in transactions of 100 puts (etcd allows 128 operations per transaction); plain
/// puts, no read. Returns the last revision.
pub async fn put_all(kv: &EtcdClient, docs: Vec<(String, Value)>) -> i64 {
    let mut rev = 0;
    for chunk in docs.chunks(100) {
        let writes = chunk
            .iter()
            .map(|(k, v)| Write::Put {
                key: k.clone(),
                value: serde_json::to_vec(v).unwrap(),
            })
            .collect();
        match kv.txn(vec![], writes).await.expect("txn") {
            TxnOutcome::Committed { revision } => rev = revision,
            other => panic!("{other:?}"),
        }
    }
    rev
}
