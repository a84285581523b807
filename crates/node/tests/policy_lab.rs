//! The seed's default policy end to end: what the Docker driver writes into etcd (one Profile
//! per network, one WorkloadEndpoint per container) is read back by `PolicySync`, compiled and
//! enforced by nftables in a lab host namespace, and real pings between workloads obey it.
//!
//! Topology: one lab host `node1` (192.168.33.11, etcd listening there, inside its namespace),
//! three workload namespaces plumbed as Calico does (host-side `cali…` veth with MAC
//! ee:ee:ee:ee:ee:ee, proxy ARP, /32 routes; workload side /32 and a default route via
//! 169.254.1.1): w1 and w2 on `net1`, w3 on `net2`. Needs root.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use calico_api::{
    GlobalNetworkPolicy, GlobalNetworkPolicySpec, ObjectMeta, WorkloadEndpoint,
    WorkloadEndpointSpec,
};
use calico_dataplane::sysctl::{self, Sysctl};
use calico_datastore::{Datastore, EtcdConfig};
use calico_docker::driver::network_profile;
use calico_docker::naming;
use calico_lab::etcd::{Etcd, EtcdOptions};
use calico_lab::{Host, Lab};
use calico_node::policy::PolicySync;

const NODE: &str = "node1";
const NODE_IP: &str = "192.168.33.11";

struct Workload {
    name: &'static str,
    ns: Host,
    ip: Ipv4Addr,
    iface: String,
    endpoint_id: String,
    network: &'static str,
}

/// The container side and the host side of one workload, as the Docker driver plumbs it.
async fn plumb(
    lab: &Lab,
    host: &Host,
    name: &'static str,
    ip: Ipv4Addr,
    network: &'static str,
) -> Workload {
    let endpoint_id = uuid::Uuid::new_v4().simple().to_string();
    let iface = naming::host_veth_name(&endpoint_id).expect("veth name");
    let ns = lab.add_namespace(name).expect("workload namespace");
    common::plumb_workload(host, &ns, &iface, ip).await;
    Workload {
        name,
        ns,
        ip,
        iface,
        endpoint_id,
        network,
    }
}

/// The WorkloadEndpoint the Docker driver writes for a container.
fn endpoint(w: &Workload) -> WorkloadEndpoint {
    let name = naming::workload_endpoint_name(NODE, &w.endpoint_id).expect("wep name");
    let mut wep = WorkloadEndpoint::new(
        &name,
        WorkloadEndpointSpec {
            orchestrator: Some(naming::ORCHESTRATOR.into()),
            workload: Some(naming::WORKLOAD.into()),
            node: Some(NODE.into()),
            endpoint: Some(w.endpoint_id.clone()),
            ip_networks: vec![format!("{}/32", w.ip)],
            profiles: vec![w.network.into()],
            interface_name: Some(w.iface.clone()),
            mac: Some(naming::CONTAINER_MAC.into()),
            ..Default::default()
        },
    );
    wep.metadata = ObjectMeta {
        name: Some(name),
        namespace: Some(naming::WEP_NAMESPACE.into()),
        labels: Some(
            [
                ("projectcalico.org/namespace", naming::WEP_NAMESPACE),
                ("projectcalico.org/orchestrator", naming::ORCHESTRATOR),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        ..Default::default()
    };
    wep
}

/// net2 may ping net1; everything else in the default tier passes on to the profiles.
fn net2_pings_net1() -> GlobalNetworkPolicy {
    let spec: GlobalNetworkPolicySpec = serde_json::from_value(serde_json::json!({
        "selector": "has(net1)",
        "types": ["Ingress"],
        "ingress": [
            {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8},
             "source": {"selector": "has(net2)"}},
            {"action": "Pass"}
        ]
    }))
    .expect("policy spec");
    let mut p = GlobalNetworkPolicy::new("allow-net2-ping-net1", spec);
    p.metadata.name = Some("allow-net2-ping-net1".into());
    p
}

fn pings(from: &Workload, to: &Workload) -> bool {
    from.ns
        .exec(&["ping", "-c1", "-W1", &to.ip.to_string()])
        .expect("ping")
        .status
        .success()
}

/// Pings until one reply, bounded (the first ping after plumbing may wait for ARP).
fn eventually_pings(from: &Workload, to: &Workload) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if pings(from, to) {
            return true;
        }
    }
    false
}

async fn connect(endpoint: String) -> Datastore {
    Datastore::connect(&EtcdConfig::new([endpoint]))
        .await
        .expect("connect etcd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_default_profiles_enforced_then_opened_by_global_policy() {
    let lab = Lab::new().expect("lab");
    let node = lab
        .add_host(NODE, &format!("{NODE_IP}/24"))
        .expect("node host");
    sysctl::apply(Some(&node.netns_path()), &[Sysctl::ipv4_forwarding(true)]).expect("forwarding");
    let w1 = plumb(&lab, &node, "w1", Ipv4Addr::new(10, 65, 0, 1), "net1").await;
    let w2 = plumb(&lab, &node, "w2", Ipv4Addr::new(10, 65, 0, 2), "net1").await;
    let w3 = plumb(&lab, &node, "w3", Ipv4Addr::new(10, 65, 0, 3), "net2").await;

    // Without a table everything flows: the plumbing works, so a drop below is policy.
    for (a, b) in [(&w1, &w2), (&w2, &w1), (&w3, &w1), (&w1, &w3)] {
        assert!(eventually_pings(a, b), "plumbing {} -> {}", a.name, b.name);
    }

    let node_path = node.netns_path();
    let etcd = tokio::task::spawn_blocking(move || {
        Etcd::start(EtcdOptions::in_netns(
            node_path,
            NODE_IP.parse().expect("node ip"),
        ))
    })
    .await
    .expect("join")
    .expect("start etcd");
    let ep = etcd.endpoint();

    // What the Docker driver writes, then the agent's sync, inside the node's namespace.
    let weps: Vec<WorkloadEndpoint> = [&w1, &w2, &w3].into_iter().map(endpoint).collect();
    let (ep, weps) = (&ep, &weps);
    let (mut sync, first, second) = node
        .run_async(move || async move {
            let ds = connect(ep.clone()).await;
            for net in ["net1", "net2"] {
                ds.create(&network_profile(net)).await.expect("profile");
            }
            for wep in weps {
                ds.create(wep).await.expect("workload endpoint");
            }
            let mut sync = PolicySync::new().expect("policy dataplane");
            let first = sync.sync(&ds, NODE).await.expect("first sync");
            let second = sync.sync(&ds, NODE).await.expect("second sync");
            (sync, first, second)
        })
        .expect("run in node");
    assert!(first, "the first sync applies the table");
    assert!(!second, "nothing changed: the table is not rewritten");
    let program = sync.applied().expect("applied program");
    assert_eq!(program.endpoints.len(), 3);

    // Same network: allowed both ways. Different networks: dropped both ways.
    assert!(eventually_pings(&w1, &w2), "w1 -> w2 (net1)");
    assert!(eventually_pings(&w2, &w1), "w2 -> w1 (net1)");
    assert!(!pings(&w3, &w1), "w3 (net2) -> w1 (net1) must be dropped");
    assert!(!pings(&w1, &w3), "w1 (net1) -> w3 (net2) must be dropped");
    let listing = node
        .exec_ok(&["nft", "list", "table", "inet", "calico-rs"])
        .expect("nft list");
    assert!(
        listing.contains(&w1.iface),
        "the table dispatches w1's interface"
    );

    // A GlobalNetworkPolicy letting net2 ping net1; the rest passes on to the profiles.
    let s = &mut sync;
    let changed = node
        .run_async(move || async move {
            let ds = connect(ep.clone()).await;
            ds.create(&net2_pings_net1()).await.expect("create policy");
            s.sync(&ds, NODE).await.expect("sync after policy")
        })
        .expect("run in node");
    assert!(changed, "a new policy changes the program");
    assert!(
        eventually_pings(&w3, &w1),
        "w3 (net2) -> w1 (net1) allowed by the policy"
    );
    assert!(
        eventually_pings(&w3, &w2),
        "w3 (net2) -> w2 (net1) allowed by the policy"
    );
    assert!(
        eventually_pings(&w1, &w2),
        "w1 -> w2 still allowed (Pass to the profile)"
    );
    assert!(
        eventually_pings(&w2, &w1),
        "w2 -> w1 still allowed (Pass to the profile)"
    );
    assert!(
        !pings(&w1, &w3),
        "w1 (net1) -> w3 (net2) still dropped (net2's profile)"
    );

    // A restarted agent (a new PolicySync, nothing applied yet) replaces the table in one
    // apply and enforces the same; then deleting the policy closes net2 -> net1 again.
    drop(sync);
    let (restarted, removed) = node
        .run_async(move || async move {
            let ds = connect(ep.clone()).await;
            let mut sync = PolicySync::new().expect("policy dataplane");
            let restarted = sync.sync(&ds, NODE).await.expect("sync after restart");
            ds.delete::<GlobalNetworkPolicy>(None, "allow-net2-ping-net1", None)
                .await
                .expect("delete policy");
            let removed = sync.sync(&ds, NODE).await.expect("sync after delete");
            (restarted, removed)
        })
        .expect("run in node");
    assert!(restarted && removed, "both syncs apply");
    assert!(
        !pings(&w3, &w1),
        "policy deleted: w3 (net2) -> w1 (net1) dropped again"
    );
    assert!(
        eventually_pings(&w1, &w2),
        "w1 -> w2 (net1) after the delete"
    );
    drop(etcd);
}
