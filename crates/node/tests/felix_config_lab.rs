//! FelixConfiguration's policy fields, end to end: stored in etcd, read by `PolicySync`,
//! enforced by nftables in a lab host, checked with real TCP from another lab host.
//!
//! node1 (192.168.33.11) has a host endpoint on its LAN interface with no policy, so only
//! failsafe ports reach it; client (192.168.33.12) connects to TCP servers on node1.
//! - no FelixConfiguration: Calico's defaults (22 reachable, 7070 not), workload-to-host Drop;
//! - `default` with `failsafeInboundHostPorts: [{port: 7070}]` and
//!   `defaultEndpointToHostAction: Accept`: 7070 reachable, 22 not (the list replaces the
//!   defaults), the workload-to-host chain hands over to the workload's egress policy;
//! - `node.node1` with `failsafeInboundHostPorts: []`: nothing reachable (the node's own
//!   resource wins, and an empty list disables failsafe), Accept still from `default`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use calico_api::{FelixConfiguration, HostEndpoint, HostEndpointSpec};
use calico_datastore::{Datastore, EtcdConfig, KindRef};
use calico_lab::etcd::{Etcd, EtcdOptions};
use calico_lab::{Host, Lab};
use calico_node::policy::PolicySync;
use serde_json::json;

const NODE: &str = "node1";
const NODE_IP: &str = "192.168.33.11";
const WAIT: Duration = Duration::from_millis(800);

fn reachable(client: &Host) -> (bool, bool) {
    let node: IpAddr = NODE_IP.parse().expect("ip");
    let ok = |port| {
        client
            .tcp_probe(SocketAddr::new(node, port), WAIT)
            .expect("tcp probe")
    };
    (ok(22), ok(7070))
}

fn ruleset(node: &Host) -> String {
    node.exec_ok(&["nft", "list", "table", "inet", "calico-rs"])
        .expect("nft list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn felix_configuration_replaces_failsafe_ports_and_endpoint_to_host_action() {
    let lab = Lab::new().expect("lab");
    let node = lab
        .add_host(NODE, &format!("{NODE_IP}/24"))
        .expect("node host");
    let client = lab.add_host("client", "192.168.33.12/24").expect("client");
    let _servers = node
        .serve_tcp(Ipv4Addr::UNSPECIFIED.into(), &[22, 7070])
        .expect("tcp servers");
    assert_eq!(reachable(&client), (true, true), "plumbing, before policy");

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
    let ep = &ep;

    let mut hep = HostEndpoint::new(
        "node1-eth1",
        HostEndpointSpec {
            node: Some(NODE.into()),
            interface_name: Some("eth1".into()),
            expected_ips: vec![NODE_IP.into()],
            ..Default::default()
        },
    );
    hep.metadata.name = Some("node1-eth1".into());
    let hep = &hep;
    let mut sync = node
        .run_async(move || async move {
            let ds = connect(ep.clone()).await;
            ds.create(hep).await.expect("host endpoint");
            let mut sync = PolicySync::new().expect("policy dataplane");
            assert!(sync.sync(&ds, NODE).await.expect("sync"));
            sync
        })
        .expect("run in node");
    // etcd itself (2379) is a default failsafe port, so the datastore stays reachable.
    assert_eq!(
        reachable(&client),
        (true, false),
        "Calico's default failsafe"
    );
    assert!(ruleset(&node).contains("DefaultEndpointToHostAction Drop"));

    let s = &mut sync;
    node.run_async(move || async move {
        let ds = connect(ep.clone()).await;
        write_felix(
            &ds,
            json!({"metadata": {"name": "default"}, "spec": {
                "failsafeInboundHostPorts": [{"protocol": "TCP", "port": 7070}, {"port": 2379}],
                "defaultEndpointToHostAction": "Accept"
            }}),
        )
        .await;
        assert!(s.sync(&ds, NODE).await.expect("sync"));
    })
    .expect("run in node");
    assert_eq!(
        reachable(&client),
        (false, true),
        "default's list replaces Calico's"
    );
    let rules = ruleset(&node);
    assert!(rules.contains("workload egress policy decides"), "{rules}");
    assert!(
        !rules.contains("DefaultEndpointToHostAction Drop"),
        "{rules}"
    );

    let s = &mut sync;
    node.run_async(move || async move {
        let ds = connect(ep.clone()).await;
        write_felix(
            &ds,
            json!({"metadata": {"name": "node.node1"}, "spec": {
                "failsafeInboundHostPorts": []
            }}),
        )
        .await;
        assert!(s.sync(&ds, NODE).await.expect("sync"));
    })
    .expect("run in node");
    assert_eq!(
        reachable(&client),
        (false, false),
        "node.node1's empty list disables failsafe"
    );
    assert!(ruleset(&node).contains("workload egress policy decides"));
    drop(etcd);
}

async fn connect(endpoint: String) -> Datastore {
    Datastore::connect(&EtcdConfig::new([endpoint]))
        .await
        .expect("connect etcd")
}

/// Stored as a raw document: the typed resource cannot hold an explicit empty list.
async fn write_felix(ds: &Datastore, mut doc: serde_json::Value) {
    doc["apiVersion"] = json!("projectcalico.org/v3");
    doc["kind"] = json!("FelixConfiguration");
    ds.dynamic()
        .apply(&KindRef::of::<FelixConfiguration>(), doc)
        .await
        .expect("apply FelixConfiguration");
}
