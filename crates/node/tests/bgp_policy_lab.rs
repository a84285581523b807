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

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use calico_datastore::{Datastore, EtcdClient, EtcdConfig};
use calico_ipam::{AutoAssignArgs, Ipam};
use calico_lab::etcd::{Etcd, EtcdOptions};
use calico_lab::{Host, Lab, ProcessGuard};
use serde_json::Value;

const POOL: &str = "10.65.0.0/16";
const WAIT: Duration = Duration::from_secs(30);

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn binary(name: &str) -> PathBuf {
    let bin = target_dir().join("debug").join(name);
    assert!(
        bin.is_file(),
        "{} is not built: cargo build -p calico-rs --bin calico-node --bin calicoctl",
        bin.display()
    );
    bin
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Node {
    // Declared first: the agent is killed before anything else of the node is dropped.
    agent: Option<ProcessGuard>,
    host: Host,
    name: String,
    run_dir: PathBuf,
}

/// The lab, etcd and the nodes. Field order is drop order: agents, then etcd, then the lab.
struct Cluster {
    nodes: Vec<Node>,
    etcd: Etcd,
    etcd_host: Host,
    lab: Lab,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let lab = Lab::new().expect("lab");
        let etcd_host = lab.add_host("etcd", "192.168.33.2/24").expect("etcd host");
        let etcd = Etcd::start(EtcdOptions::in_netns(
            etcd_host.netns_path(),
            etcd_host.ip(),
        ))
        .expect("etcd");
        let nodes = (1..=n)
            .map(|i| {
                let name = format!("node{i}");
                let host = lab
                    .add_host(&name, &format!("192.168.33.{}/24", 10 + i))
                    .expect("host");
                let run_dir = lab.dir().join(format!("{name}-run"));
                Node {
                    agent: None,
                    host,
                    name,
                    run_dir,
                }
            })
            .collect();
        Cluster {
            nodes,
            etcd,
            etcd_host,
            lab,
        }
    }

    fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    fn ip(&self, i: usize) -> IpAddr {
        self.node(i).host.ip()
    }

    /// Starts node `i`'s agent and waits for its start-up line.
    fn start_agent(&mut self, i: usize) {
        let endpoint = self.etcd.endpoint();
        let node = &mut self.nodes[i - 1];
        let mut cmd = Command::new(binary("calico-node"));
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NODENAME", &node.name)
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", &endpoint)
            .env("IP", format!("{}/24", node.host.ip()))
            .env("IP6", "none")
            .env("CALICO_NETWORKING_BACKEND", "bird")
            .env("CALICO_IPV4POOL_CIDR", POOL)
            .env("FELIX_IPV6SUPPORT", "false")
            .env("CALICO_RUN_DIR", &node.run_dir)
            .env("CALICO_STATE_DIR", node.run_dir.join("lib"))
            .env("CALICO_LOG_LEVEL", "info");
        let guard = node
            .host
            .spawn(cmd, "calico-node")
            .expect("spawn calico-node");
        let log_path = node.host.log_path("calico-node");
        node.agent = Some(guard);
        let started = wait_for(WAIT, || {
            std::fs::read_to_string(&log_path)
                .ok()
                .filter(|l| l.contains("Calico node started successfully"))
        });
        assert!(
            started.is_some(),
            "{} did not start:\n{}",
            node.name,
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    fn agent_log(&self, i: usize) -> String {
        self.node(i)
            .agent
            .as_ref()
            .map(|a| a.log())
            .unwrap_or_default()
    }

    /// Runs `f` with a datastore and IPAM client, inside the etcd host's namespace.
    fn with_datastore<R: Send>(&self, f: impl AsyncFnOnce(&Datastore, &Ipam) -> R + Send) -> R {
        let endpoint = self.etcd.endpoint();
        self.etcd_host
            .run_async(move || async move {
                let kv = EtcdClient::connect(&EtcdConfig::new([endpoint]))
                    .await
                    .expect("etcd client");
                let ds = Datastore::from_etcd(kv.clone());
                let ipam = Ipam::new(kv);
                f(&ds, &ipam).await
            })
            .expect("run in the etcd namespace")
    }

    /// Allocates one address on `node` so that it claims a block; returns the block.
    fn allocate(&self, node: &str) -> String {
        let node = node.to_string();
        self.with_datastore(async move |_, ipam: &Ipam| {
            let got = ipam
                .auto_assign(AutoAssignArgs {
                    num_v4: 1,
                    handle_id: Some(format!("wl-{node}")),
                    hostname: node.clone(),
                    ..Default::default()
                })
                .await
                .expect("auto_assign");
            let ip = got.v4[0];
            let blocks = ipam.host_affinities(&node).await.expect("affinities");
            blocks
                .iter()
                .map(|(b, _)| *b)
                .find(|b| b.contains(&ip))
                .expect("the address is in a block affine to the node")
                .to_string()
        })
    }

    /// Applies Calico YAML documents (BGPConfiguration, BGPPeer, BGPFilter).
    fn apply_yaml(&self, docs: &[&str]) {
        let docs: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        self.with_datastore(async move |ds: &Datastore, _| {
            for doc in docs {
                let value: Value = serde_yaml_ng::from_str(&doc).expect("yaml");
                match value["kind"].as_str() {
                    Some("BGPConfiguration") => ds
                        .apply(
                            &serde_json::from_value::<calico_api::BGPConfiguration>(value).unwrap(),
                        )
                        .await
                        .map(|_| ()),
                    Some("BGPPeer") => ds
                        .apply(&serde_json::from_value::<calico_api::BGPPeer>(value).unwrap())
                        .await
                        .map(|_| ()),
                    Some("BGPFilter") => ds
                        .apply(&serde_json::from_value::<calico_api::BGPFilter>(value).unwrap())
                        .await
                        .map(|_| ()),
                    other => panic!("unexpected kind {other:?}"),
                }
                .expect("apply");
            }
        })
    }

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

    /// `calicoctl ARGS` against the cluster's etcd, from inside the etcd host's namespace.
    fn calicoctl(&self, args: &[&str]) -> String {
        let endpoints = format!("ETCD_ENDPOINTS={}", self.etcd.endpoint());
        let ctl = binary("calicoctl").display().to_string();
        let mut argv = vec!["env", "DATASTORE_TYPE=etcdv3", &endpoints, &ctl];
        argv.extend_from_slice(args);
        let out = self.etcd_host.exec(&argv).expect("calicoctl");
        assert!(
            out.status.success(),
            "calicoctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `calicoctl node status` on node `i` (through its run directory).
    fn node_status(&self, i: usize) -> String {
        let node = self.node(i);
        let run_dir = format!("CALICO_RUN_DIR={}", node.run_dir.display());
        let ctl = binary("calicoctl").display().to_string();
        let out = node
            .host
            .exec(&["env", &run_dir, &ctl, "node", "status"])
            .expect("calicoctl node status");
        String::from_utf8_lossy(&out.stdout).into_owned()
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

    fn routes(&self, i: usize) -> BTreeSet<String> {
        routes_of(&self.node(i).host)
    }

    /// Waits until node `i`'s `ip -4 route` holds every line of `want` and none of `gone`.
    fn wait_routes(&self, i: usize, want: &[String], gone: &[String]) {
        let ok = wait_for(WAIT, || {
            let r = self.routes(i);
            (want.iter().all(|w| r.contains(w)) && gone.iter().all(|g| !r.contains(g)))
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "node{i}: wanted {want:?} and not {gone:?}, have {:?}\nlog:\n{}",
            self.routes(i),
            self.agent_log(i)
        );
    }
}

fn routes_of(host: &Host) -> BTreeSet<String> {
    let out = host.exec(&["ip", "-4", "route", "show"]).expect("ip route");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn via(block: &str, peer: IpAddr) -> String {
    format!("{block} via {peer} dev eth1 proto bird")
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
    let block2 = c.allocate("node2");
    let block3 = c.allocate("node3");
    c.wait_routes(3, &[via(&block2, c.ip(2))], &[]);
    c.wait_routes(2, &[via(&block3, c.ip(3))], &[]);
    c.wait_routes(1, &[via(&block2, c.ip(2)), via(&block3, c.ip(3))], &[]);
}

// ---------------------------------------------------------------- GoBGP as external peer

const GOBGP_AS: u32 = 65003;

struct GoBgp {
    // Declared first: killed before the host goes.
    guard: ProcessGuard,
    host: Host,
}

impl GoBgp {
    fn start(c: &Cluster) -> GoBgp {
        let host = c
            .lab
            .add_host("gobgp", "192.168.33.20/24")
            .expect("gobgp host");
        let conf = c.lab.dir().join("gobgpd.toml");
        let text = format!(
            r#"[global.config]
  as = {GOBGP_AS}
  router-id = "192.168.33.20"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{node1}"
    peer-as = 64512
  [neighbors.timers.config]
    hold-time = 9
    keepalive-interval = 3
    connect-retry = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"#,
            node1 = c.ip(1)
        );
        std::fs::write(&conf, text).expect("gobgpd config");
        let mut cmd = Command::new("gobgpd");
        cmd.arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg("--api-hosts=127.0.0.1:50051");
        let guard = host.spawn(cmd, "gobgpd").expect("spawn gobgpd");
        GoBgp { guard, host }
    }

    fn gobgp(&self, args: &[&str]) -> String {
        let mut argv = vec!["gobgp", "-u", "127.0.0.1", "-p", "50051"];
        argv.extend_from_slice(args);
        self.host
            .exec(&argv)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
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
    let gobgp = GoBgp::start(&c);
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
    let block = c.allocate("node1");

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
