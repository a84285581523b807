//! `calicoctl node peers NAME` against a real etcd: the node-to-node mesh, a global BGPPeer and
//! a node-specific BGPPeer, as yaml and json, and the errors an operator can meet.

mod common;

use common::{Ctl, Etcd};

const RESOURCES: &str = "apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node1
spec:
  bgp:
    ipv4Address: 192.168.33.11/24
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node2
spec:
  bgp:
    ipv4Address: 192.168.33.12/24
    asNumber: 64513
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node3
spec:
  bgp:
    ipv4Address: 192.168.33.13/24
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: tor
spec:
  peerIP: 192.168.33.1
  asNumber: 65000
  keepaliveTime: 10s
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: node1-rr
spec:
  node: node1
  peerIP: 192.168.33.50:1179
  asNumber: 64512
  maxRestartTime: 2m
  password:
    secretKeyRef:
      name: bgp-secrets
      key: rr
";

fn session_with<'a>(list: &'a [serde_json::Value], addr: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|s| s["peerAddress"] == addr)
        .unwrap_or_else(|| panic!("no session to {addr} in {list:?}"))
}

#[tokio::test]
async fn node_peers_prints_mesh_global_and_node_specific_sessions() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    ctl.run_stdin(&["create", "-f", "-"], RESOURCES).await.ok();

    let out = ctl.run(&["node", "peers", "node1", "-o", "json"]).await;
    out.ok();
    let list: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("json list");
    assert_eq!(list.len(), 4, "two mesh peers, tor, node1-rr: {list:?}");

    let n2 = session_with(&list, "192.168.33.12");
    assert_eq!(n2["type"], "mesh");
    assert_eq!(n2["peerAs"], 64513, "node2's own AS");
    assert_eq!(n2["localAs"], 64512);
    assert_eq!(n2["peerPort"], 179);
    assert_eq!(n2["peerNode"], "node2");
    assert_eq!(session_with(&list, "192.168.33.13")["type"], "mesh");

    let tor = session_with(&list, "192.168.33.1");
    assert_eq!(tor["type"], "global");
    assert_eq!(tor["bgpPeer"], "tor");
    assert_eq!(tor["peerAs"], 65000);
    assert_eq!(tor["keepaliveSecs"], 10);

    let rr = session_with(&list, "192.168.33.50");
    assert_eq!(rr["type"], "node");
    assert_eq!(rr["bgpPeer"], "node1-rr");
    assert_eq!(rr["peerPort"], 1179);
    assert_eq!(rr["gracefulRestartSecs"], 120);
    assert_eq!(rr["password"]["name"], "bgp-secrets");

    // node2 gets the mesh and the global peer, not node1's own peer; default output is yaml.
    let out = ctl.run(&["node", "peers", "node2"]).await;
    out.ok();
    let list: Vec<serde_json::Value> = serde_yaml_ng::from_str(&out.stdout).expect("yaml list");
    let mut addrs: Vec<&str> = list
        .iter()
        .map(|s| s["peerAddress"].as_str().expect("address"))
        .collect();
    addrs.sort();
    assert_eq!(addrs, ["192.168.33.1", "192.168.33.11", "192.168.33.13"]);
    assert_eq!(session_with(&list, "192.168.33.11")["localAs"], 64513);

    // Turning the mesh off leaves only the explicit peers.
    ctl.run_stdin(
        &["create", "-f", "-"],
        "apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
",
    )
    .await
    .ok();
    let out = ctl.run(&["node", "peers", "node1", "-o", "json"]).await;
    out.ok();
    let list: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("json list");
    let mut kinds: Vec<&str> = list.iter().map(|s| s["type"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["global", "node"]);

    let out = ctl.run(&["node", "peers", "nosuchnode"]).await;
    out.failed();
    assert!(out.stderr.contains("nosuchnode"), "{}", out.stderr);
    let out = ctl.run(&["node", "peers", "node1", "-o", "wide"]).await;
    out.failed();
    assert!(out.stderr.contains("wide"), "{}", out.stderr);
}
