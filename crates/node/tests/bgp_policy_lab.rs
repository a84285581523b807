//! BGP policy through the whole agent: real `calico-node` processes in lab namespaces with a
//! real etcd, configured only through Calico resources.
//!
//! - A route reflector (Node `routeReflectorClusterID`, mesh off) reflects one client's block to
//!   the other, and `calicoctl node peers` shows its sessions as `reflector-client`.
//! - BGPConfiguration `prefixAdvertisements` (a named large community and a literal standard
//!   one) reach a GoBGP peer on the node's block; the BGPPeer's BGPFilter imports with `NotIn`
//!   (a GoBGP route outside the CIDR never reaches the kernel) and exports with `peerType` and
//!   `addCommunity`.
//!
//! Topology: one LAN (192.168.33.0/24, every host's `eth1`), etcd on 192.168.33.2, agents on
//! node1..node3 (192.168.33.11..13), GoBGP on 192.168.33.20. Pool 10.65.0.0/16.
//!
//! Needs root, gobgpd, and the binaries `target/debug/calico-node` and `target/debug/calicoctl`
//! (`cargo build -p calico-rs --bin calico-node --bin calicoctl`).

mod cluster_support;
use cluster_support::gobgp::GoBgp;
use cluster_support::*;

use std::net::IpAddr;
use std::time::Duration;

use calico_datastore::Datastore;
use serde_json::Value;

impl Cluster {
    /// Makes node `name` a route reflector of `cluster_id` with label `route-reflector`.
    fn make_reflector(&self, name: &str, cluster_id: &str) {
        let (name, cluster_id) = (name.to_string(), cluster_id.to_string());
        self.with_datastore(async move |ds: &Datastore, _| {
            let mut n: calico_api::Node = ds
                .get(None, &name)
                .await
                .expect("get node")
                .expect("the agent created its Node");
            n.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("route-reflector".into(), "true".into());
            n.spec
                .bgp
                .as_mut()
                .expect("the agent wrote spec.bgp")
                .route_reflector_cluster_id = Some(cluster_id);
            ds.update(&n).await.expect("update node");
        })
    }

    /// Waits until node `i`'s status table has exactly one row per address in `peers`, each
    /// Established with the given peer type.
    fn wait_sessions(&self, i: usize, peers: &[(IpAddr, &str)]) {
        let ok = wait_for(WAIT, || {
            let status = self.node_status(i);
            let rows: Vec<&str> = status
                .lines()
                .filter(|l| l.starts_with("| ") && !l.contains("PEER ADDRESS"))
                .collect();
            (rows.len() == peers.len()
                && peers.iter().all(|(p, kind)| {
                    rows.iter().any(|l| {
                        l.contains(&format!("| {p} "))
                            && l.contains(kind)
                            && l.contains("Established")
                    })
                }))
            .then_some(())
        });
        assert!(
            ok.is_some(),
            "node{i}: wanted sessions {peers:?}, status:\n{}\nlog:\n{}",
            self.node_status(i),
            self.agent_log(i)
        );
    }
}

const NO_MESH: &str = "apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
";

#[test]
fn route_reflector_reflects_between_clients_and_shows_reflector_client_sessions() {
    let mut c = Cluster::new(3);
    for i in 1..=3 {
        c.start_agent(i);
    }
    c.apply_yaml(&[
        NO_MESH,
        // Every node peers with the reflectors; the reflectors peer with every node.
        "apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: peer-with-rr
spec:
  peerSelector: has(route-reflector)
",
        "apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rr-to-all
spec:
  nodeSelector: has(route-reflector)
  peerSelector: all()
",
    ]);
    c.make_reflector("node1", "244.0.0.1");

    // What the reflector must run, from the datastore alone.
    let peers: Vec<Value> =
        serde_json::from_str(&c.calicoctl(&["node", "peers", "node1", "-o", "json"]))
            .expect("json");
    let mut kinds: Vec<(String, String)> = peers
        .iter()
        .map(|s| {
            (
                s["peerAddress"].as_str().unwrap_or_default().to_string(),
                s["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("192.168.33.12".to_string(), "reflector-client".to_string()),
            ("192.168.33.13".to_string(), "reflector-client".to_string()),
        ],
        "{peers:?}"
    );
    assert!(peers.iter().all(|s| s["routeReflectorClient"] == true));
    // A client sees one ordinary session, to the reflector.
    let client: Vec<Value> =
        serde_json::from_str(&c.calicoctl(&["node", "peers", "node2", "-o", "json"]))
            .expect("json");
    assert_eq!(client.len(), 1, "{client:?}");
    assert_eq!(client[0]["peerAddress"], "192.168.33.11");
    assert_eq!(client[0]["type"], "global");

    // The running sessions: the reflector with both clients, each client with the reflector
    // only (the mesh is gone before any block exists, so every route below was reflected).
    c.wait_sessions(1, &[(c.ip(2), "node specific"), (c.ip(3), "node specific")]);
    c.wait_sessions(2, &[(c.ip(1), "global")]);
    c.wait_sessions(3, &[(c.ip(1), "global")]);

    // Clients learn each other's blocks through the reflector, with the originating client as
    // next hop.
    let block2 = c.allocate("node2").1;
    let block3 = c.allocate("node3").1;
    c.wait_routes(3, &[via(&block2, c.ip(2))], &[]);
    c.wait_routes(2, &[via(&block3, c.ip(3))], &[]);
    c.wait_routes(1, &[via(&block2, c.ip(2)), via(&block3, c.ip(3))], &[]);
}

// ---------------------------------------------------------------- GoBGP as external peer

const GOBGP_AS: u32 = 65003;

impl GoBgp {
    /// GoBGP on 192.168.33.20, peering with node1.
    fn for_node1(c: &Cluster) -> GoBgp {
        let host = c
            .lab
            .add_host("gobgp", "192.168.33.20/24")
            .expect("gobgp host");
        GoBgp::start(host, c.lab.dir(), GOBGP_AS, &[c.ip(1).to_string()])
    }

    fn add(&self, prefix: &str) {
        let ok = wait_for(WAIT, || {
            self.gobgp(&["global", "rib", "add", prefix, "nexthop", "192.168.33.20"]);
            self.gobgp(&["global", "rib"])
                .contains(prefix)
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "gobgp rib add {prefix}:\n{}",
            self.guard.log()
        );
    }

    /// The path attributes GoBGP holds for `prefix` (`gobgp global rib -j`).
    fn attrs(&self, prefix: &str) -> Option<Vec<Value>> {
        let rib: Value = serde_json::from_str(&self.gobgp(&["global", "rib", "-j"])).ok()?;
        rib.get(prefix)?.as_array()?.first()?["attrs"]
            .as_array()
            .cloned()
    }
}

fn attr(attrs: &[Value], type_code: u64) -> Option<&Value> {
    attrs.iter().find(|a| a["type"] == type_code)
}

#[test]
fn prefix_advertisements_and_bgp_filters_with_a_gobgp_peer() {
    let mut c = Cluster::new(1);
    c.start_agent(1);
    let gobgp = GoBgp::for_node1(&c);
    gobgp.add("10.13.0.0/24");
    gobgp.add("10.99.0.0/24");
    c.apply_yaml(&[
        "apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
  communities:
    - name: pool-large
      value: '64512:300:100'
  prefixAdvertisements:
    - cidr: 10.65.0.0/16
      communities: [pool-large, '64512:120']
",
        "apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata:
  name: edge
spec:
  importV4:
    - action: Reject
      matchOperator: NotIn
      cidr: 10.13.0.0/16
  exportV4:
    - action: Reject
      peerType: iBGP
    - action: Accept
      peerType: eBGP
      operations:
        - addCommunity: {value: '65003:7'}
",
        "apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: gobgp
spec:
  peerIP: 192.168.33.20
  asNumber: 65003
  filters: [edge]
",
    ]);
    let block = c.allocate("node1").1;

    // Import: GoBGP's route inside 10.13.0.0/16 is installed, the one outside is not.
    c.wait_routes(
        1,
        &[via("10.13.0.0/24", "192.168.33.20".parse().unwrap())],
        &[],
    );
    let adj_out = gobgp.gobgp(&["neighbor", "192.168.33.11", "adj-out"]);
    assert!(
        adj_out.contains("10.99.0.0/24"),
        "GoBGP sent it:\n{adj_out}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !c.routes(1).iter().any(|r| r.starts_with("10.99.0.0/24")),
        "NotIn 10.13.0.0/16 keeps 10.99.0.0/24 out: {:?}",
        c.routes(1)
    );

    // Export: the node's block reaches GoBGP with the prefix advertisement's communities (the
    // named large one and the literal standard one) and the eBGP rule's added community.
    let attrs = wait_for(WAIT, || gobgp.attrs(&block));
    let attrs = attrs.unwrap_or_else(|| {
        panic!(
            "{block} never reached GoBGP: {}\nagent log:\n{}",
            gobgp.gobgp(&["global", "rib"]),
            c.agent_log(1)
        )
    });
    let shown = format!("{attrs:?}");
    let mut communities: Vec<u64> = attr(&attrs, 8)
        .and_then(|a| a["communities"].as_array())
        .map(|v| v.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    communities.sort();
    assert_eq!(
        communities,
        [(64512u64 << 16) | 120, (65003u64 << 16) | 7],
        "{shown}"
    );
    let large = attr(&attrs, 32).unwrap_or_else(|| panic!("no large community: {shown}"));
    assert_eq!(
        (
            &large["value"][0]["ASN"],
            &large["value"][0]["LocalData1"],
            &large["value"][0]["LocalData2"]
        ),
        (&Value::from(64512), &Value::from(300), &Value::from(100)),
        "{shown}"
    );
}
