//! What the agent does for pods beyond routes and policy, with real traffic: pods added by the
//! CNI plugin exactly as a runtime does, real calico-node agents.
//! - NAT outgoing: an "outside" host on the LAN has no route back to any pool (its default
//!   route is removed), so a reply to a pod address can only come back if the node translated
//!   the source;
//! - MTU: the node's LAN interface gets MTU 1400; the agent's detected MTU reaches the veths
//!   and the CNI result, and an explicit netconf `mtu` wins.
//!
//! Topology: LAN 192.168.33.0/24; etcd .10, node1 .11, node2 .12, outside .20. Pools
//! 10.65.0.0/16 (natOutgoing) and 10.66.0.0/16 (not).
//!
//! Needs root and `cargo build -p calico-rs --bin calico-node --bin calico --bin calico-ipam
//! --bin calicoctl`.

mod common;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use calico_datastore::Datastore;
use calico_lab::{Etcd, EtcdOptions, Host, Lab, ProcessGuard, iperf};
use common::*;
use serde_json::json;

const NAT_POOL: &str = "10.65.0.0/16";
const PLAIN_POOL: &str = "10.66.0.0/16";
const OUTSIDE: &str = "192.168.33.20";
const PORT: u16 = 8080;
const WAIT: Duration = Duration::from_secs(30);

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Field order is drop order: agents first, the lab last.
struct Setup {
    agents: Vec<ProcessGuard>,
    nodes: Vec<(Host, String)>,
    outside: Host,
    etcd: Etcd,
    etcd_host: Host,
    lab: Lab,
}

impl Setup {
    /// `n` nodes with agents, the outside host, both pools and an allow-all namespace profile.
    fn new(n: usize) -> Setup {
        Self::build(n, |_| {})
    }

    /// [`Setup::new`], running `prepare` on each node before its agent starts.
    fn build(n: usize, prepare: impl Fn(&Host)) -> Setup {
        assert!(
            bin_dir().join("calico-node").is_file(),
            "build the agent first: cargo build -p calico-rs --bin calico-node"
        );
        let lab = Lab::new().unwrap();
        let etcd_host = lab.add_host("etcd", "192.168.33.10/24").unwrap();
        let outside = lab.add_host("outside", &format!("{OUTSIDE}/24")).unwrap();
        // No route back to the pools: only translated traffic can be answered.
        outside.exec_ok(&["ip", "route", "del", "default"]).unwrap();
        let nodes: Vec<(Host, String)> = (1..=n)
            .map(|i| {
                let name = format!("node{i}");
                let h = lab
                    .add_host(&name, &format!("192.168.33.{}/24", 10 + i))
                    .unwrap();
                (h, name)
            })
            .collect();
        let etcd = Etcd::start(EtcdOptions::in_netns(
            etcd_host.netns_path(),
            etcd_host.ip(),
        ))
        .unwrap();
        let mut s = Setup {
            agents: vec![],
            nodes,
            outside,
            etcd,
            etcd_host,
            lab,
        };
        s.ds(|ds| async move {
            for (name, cidr, nat) in [("nat", NAT_POOL, true), ("plain", PLAIN_POOL, false)] {
                let p: calico_api::IPPool = serde_json::from_value(json!({
                    "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                    "metadata": {"name": name},
                    "spec": {"cidr": cidr, "blockSize": 26, "natOutgoing": nat}
                }))
                .unwrap();
                ds.create(&p).await.unwrap();
            }
            let allow: calico_api::ProfileSpec = serde_json::from_value(json!({
                "ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
            }))
            .unwrap();
            ds.apply(&calico_api::Profile::new("kns.default", allow))
                .await
                .unwrap();
        });
        for (h, _) in &s.nodes {
            prepare(h);
        }
        let ep = s.etcd.endpoint();
        s.agents = s
            .nodes
            .iter()
            .map(|(h, n)| start_agent(h, n, &ep, &s.run_dir(n)))
            .collect();
        s
    }

    fn run_dir(&self, node: &str) -> PathBuf {
        self.lab.dir().join(format!("{node}-run"))
    }

    fn ds<R: Send, F, Fut>(&self, f: F) -> R
    where
        F: FnOnce(Datastore) -> Fut + Send,
        Fut: Future<Output = R>,
    {
        with_datastore(&self.etcd_host, &self.etcd, f)
    }

    fn set_nat(&self, pool: &'static str, nat: bool) {
        self.ds(|ds| async move {
            let mut p: calico_api::IPPool = ds.get(None, pool).await.unwrap().unwrap();
            p.spec.nat_outgoing = Some(nat);
            ds.update(&p).await.unwrap();
        });
    }

    fn set_felix(&self, spec: serde_json::Value) {
        self.ds(|ds| async move {
            let f: calico_api::FelixConfiguration = serde_json::from_value(json!({
                "apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
                "metadata": {"name": "default"}, "spec": spec
            }))
            .unwrap();
            ds.apply(&f).await.unwrap();
        });
    }

    /// A pod on node `i` (1-based) with an address from `pool`; returns it and its address.
    fn pod(&self, i: usize, name: &str, pool: &str) -> (Host, IpAddr) {
        let (ns, r) = self.pod_with(i, name, pool, None);
        let a: ipnet::IpNet = r["ips"][0]["address"].as_str().unwrap().parse().unwrap();
        (ns, a.addr())
    }

    /// A pod, with the netconf's `mtu` when given; returns it and the CNI result.
    fn pod_with(
        &self,
        i: usize,
        name: &str,
        pool: &str,
        mtu: Option<u32>,
    ) -> (Host, serde_json::Value) {
        let (node, node_name) = &self.nodes[i - 1];
        let ns = self.lab.add_namespace(name).unwrap();
        let mut conf = json!({
            "cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "calico",
            "datastore_type": "etcdv3", "etcd_endpoints": self.etcd.endpoint(),
            "nodename": node_name,
            "mtu_file": self.run_dir(node_name).join("lib/mtu"),
            "ipam": {"type": "calico-ipam", "ipv4_pools": [pool]}
        });
        if let Some(m) = mtu {
            conf["mtu"] = json!(m);
        }
        let r = ok(
            invoke(node, &Call::new("ADD", name, name, Some(&ns)), &conf),
            "ADD",
        )
        .unwrap();
        (ns, r)
    }

    fn agent_logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| a.log())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

fn start_agent(host: &Host, name: &str, etcd: &str, run_dir: &Path) -> ProcessGuard {
    let mut cmd = agent_command(host, name, etcd, run_dir);
    cmd.env("FELIX_IPV6SUPPORT", "false");
    host.spawn(cmd, "calico-node").expect("spawn calico-node")
}

/// A TCP connection opened from inside `from` (the socket stays in that namespace), that an
/// echo server answered (so the server has accepted it and recorded its peer).
fn connect(from: &Host, to: SocketAddr) -> Option<TcpStream> {
    let mut s = from
        .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok())
        .unwrap()?;
    round_trip(&mut s, b"hi").then_some(s)
}

fn outside() -> SocketAddr {
    SocketAddr::new(OUTSIDE.parse().unwrap(), PORT)
}

/// Sends `msg` and reads it back.
fn round_trip(s: &mut TcpStream, msg: &[u8]) -> bool {
    use std::io::{Read, Write};
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    if s.write_all(msg).is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).is_ok() && buf == msg
}

/// Handles of the rules of the nat chain on `node` (`nft -a`).
fn nat_rule_handles(node: &Host) -> Vec<String> {
    let out = sh(
        node,
        &[
            "nft",
            "-a",
            "list",
            "chain",
            "inet",
            "calico-rs",
            "nat-outgoing",
        ],
    );
    out.lines()
        .filter_map(|l| l.split("# handle ").nth(1))
        .map(|h| h.trim().to_string())
        .collect()
}

#[test]
fn pods_of_a_nat_pool_reach_the_outside_as_the_node_and_pod_to_pod_keeps_addresses() {
    let s = Setup::new(2);
    let (n1, n2) = (&s.nodes[0].0, &s.nodes[1].0);
    for ((h, n), peer) in s.nodes.iter().zip([n2.ip(), n1.ip()]) {
        let run_dir = s.run_dir(n);
        let up = wait_until(WAIT, || {
            let out = h
                .exec(&[
                    "env",
                    &format!("CALICO_RUN_DIR={}", run_dir.display()),
                    &bin_dir().join("calicoctl").display().to_string(),
                    "node",
                    "status",
                ])
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.contains(&format!("| {peer} ")) && l.contains("Established"))
        });
        assert!(up, "{n}: no session to {peer}\n{}", s.agent_logs());
    }
    let server = s
        .outside
        .serve_tcp_echo(OUTSIDE.parse().unwrap(), PORT)
        .unwrap();
    let (nat1, nat1_ip) = s.pod(1, "nat1", NAT_POOL);
    let (nat2, nat2_ip) = s.pod(2, "nat2", NAT_POOL);
    let (plain1, plain1_ip) = s.pod(1, "plain1", PLAIN_POOL);

    // A pod of the natOutgoing pool reaches the outside host, which sees node1's address.
    let mut long_lived = None;
    let reached = wait_until(WAIT, || {
        long_lived = connect(&nat1, outside());
        long_lived.is_some()
    });
    assert!(
        reached,
        "pod {nat1_ip} never reached the outside host\n{}\n{}",
        sh(n1, &["nft", "list", "table", "inet", "calico-rs"]),
        s.agent_logs()
    );
    let mut long_lived = long_lived.unwrap();
    assert!(round_trip(&mut long_lived, b"before"));
    assert_eq!(
        server.peers().last().unwrap().ip(),
        n1.ip(),
        "source seen outside"
    );

    // natOutgoing off: the same probe from the other pool's pod fails (no route back).
    assert!(
        connect(&plain1, outside()).is_none(),
        "pod {plain1_ip} of a pool without natOutgoing reached the outside host"
    );
    assert!(
        server.peers().iter().all(|p| p.ip() != plain1_ip),
        "no SYN-ACK can go back, so no connection from {plain1_ip} is accepted"
    );

    // Pod to pod across nodes keeps the pod's address (traffic between pools is never NATed).
    let to_pod = nat2
        .serve_tcp_echo(nat2_ip, PORT)
        .expect("echo server in the pod on node2");
    let mut c = None;
    assert!(
        wait_until(WAIT, || {
            c = connect(&nat1, SocketAddr::new(nat2_ip, PORT));
            c.is_some()
        }),
        "{nat1_ip} cannot reach {nat2_ip}"
    );
    assert!(round_trip(c.as_mut().unwrap(), b"pod"));
    assert_eq!(to_pod.peers(), vec![c.unwrap().local_addr().unwrap()]);
    assert_eq!(to_pod.peers()[0].ip(), nat1_ip);
    // ... and so does a pod of the non-NAT pool talking to one of the NAT pool.
    let mut c = connect(&plain1, SocketAddr::new(nat2_ip, PORT)).expect("plain1 -> nat2");
    assert!(round_trip(&mut c, b"pod"));
    assert_eq!(to_pod.peers()[1].ip(), plain1_ip);

    // Turning natOutgoing on for the other pool: only the pool sets change (the chain's rules
    // keep their handles), and the established connection of the first pool is untouched.
    let handles = nat_rule_handles(n1);
    assert!(!handles.is_empty());
    s.set_nat("plain", true);
    assert!(
        wait_until(WAIT, || connect(&plain1, outside()).is_some()),
        "pod {plain1_ip} never reached the outside after natOutgoing was turned on\n{}",
        s.agent_logs()
    );
    assert_eq!(server.peers().last().unwrap().ip(), n1.ip());
    assert_eq!(nat_rule_handles(n1), handles, "the nat chain was rewritten");
    assert!(
        round_trip(&mut long_lived, b"after"),
        "the established connection of the other pool broke"
    );

    // Turning it off for the first pool: new connections fail, the established one keeps
    // its translation (conntrack) and still works.
    s.set_nat("nat", false);
    assert!(
        wait_until(WAIT, || connect(&nat1, outside()).is_none()),
        "pod {nat1_ip} still reaches the outside with natOutgoing off"
    );
    assert!(
        round_trip(&mut long_lived, b"still"),
        "an established connection lost its translation"
    );
}

#[test]
fn nat_outgoing_address_is_the_source_the_outside_sees() {
    let s = Setup::new(1);
    let node = &s.nodes[0].0;
    // The address belongs to the node (a second address on its LAN interface), so the outside
    // host's replies find their way back.
    node.add_address("192.168.33.99/24").unwrap();
    s.set_felix(json!({"natOutgoingAddress": "192.168.33.99"}));
    let server = s
        .outside
        .serve_tcp_echo(OUTSIDE.parse().unwrap(), PORT)
        .unwrap();
    let (pod, pod_ip) = s.pod(1, "pod1", NAT_POOL);
    let mut c = None;
    assert!(
        wait_until(WAIT, || {
            c = connect(&pod, outside());
            c.is_some()
        }),
        "pod {pod_ip} never reached the outside\n{}\n{}",
        sh(node, &["nft", "list", "table", "inet", "calico-rs"]),
        s.agent_logs()
    );
    assert!(round_trip(c.as_mut().unwrap(), b"x"));
    let seen = server.peers().last().unwrap().ip();
    assert_eq!(seen, "192.168.33.99".parse::<IpAddr>().unwrap());
    assert_ne!(seen, node.ip());
}

#[test]
fn nat_port_range_bounds_the_source_ports_the_outside_sees() {
    let s = Setup::new(1);
    let node = &s.nodes[0].0;
    s.set_felix(json!({"natPortRange": "40000:40009"}));
    let server = s
        .outside
        .serve_tcp_echo(OUTSIDE.parse().unwrap(), PORT)
        .unwrap();
    let (pod, pod_ip) = s.pod(1, "pod1", NAT_POOL);
    // Wait until the range is in force (the chain shows it), then open several connections.
    assert!(
        wait_until(WAIT, || {
            // The table appears with the agent's first policy round: absent is "not yet".
            node.exec_ok(&["nft", "list", "chain", "inet", "calico-rs", "nat-outgoing"])
                .is_ok_and(|out| out.contains("40000-40009"))
        }),
        "the port range never reached the nat chain\n{}",
        s.agent_logs()
    );
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut c = connect(&pod, outside()).unwrap_or_else(|| panic!("{pod_ip} -> outside"));
        assert!(round_trip(&mut c, b"p"));
        conns.push(c);
    }
    let peers = server.peers();
    assert_eq!(peers.len(), 5);
    for p in &peers {
        assert_eq!(p.ip(), node.ip());
        assert!((40000..=40009).contains(&p.port()), "source port {p}");
    }
    // The pod's own ports are ephemeral ones (32768+), far from the range: translated.
    assert!(
        conns
            .iter()
            .all(|c| c.local_addr().unwrap().port() >= 32768)
    );
}

#[test]
fn a_pods_veth_gets_the_detected_mtu_unless_the_netconf_sets_one() {
    let s = Setup::build(1, |node| {
        node.exec_ok(&["ip", "link", "set", "eth1", "mtu", "1400"])
            .unwrap();
    });
    let node = &s.nodes[0].0;
    let mtu_file = s.run_dir("node1").join("lib/mtu");
    assert!(
        wait_until(WAIT, || mtu_file.is_file()),
        "no MTU file\n{}",
        s.agent_logs()
    );
    // No encapsulation in the pools: the pod MTU is the smallest MTU of the matching host
    // interfaces (eth1; lo does not match Felix's mtuIfacePattern).
    assert_eq!(std::fs::read_to_string(&mtu_file).unwrap().trim(), "1400");
    let mtu_of = |h: &Host, dev: &str| sh(h, &["cat", &format!("/sys/class/net/{dev}/mtu")]);

    let (pod, r) = s.pod_with(1, "pod1", NAT_POOL, None);
    assert_eq!(mtu_of(&pod, "eth0").trim(), "1400");
    let host_if = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(mtu_of(node, &host_if).trim(), "1400");
    for i in 0..2 {
        assert_eq!(r["interfaces"][i]["mtu"], json!(1400), "CNI result: {r}");
    }

    // An explicit netconf mtu wins over the detected one.
    let (pod, r) = s.pod_with(1, "pod2", NAT_POOL, Some(1300));
    assert_eq!(mtu_of(&pod, "eth0").trim(), "1300");
    assert_eq!(r["interfaces"][1]["mtu"], json!(1300));
    // 0 means "detected", as in Calico's manifests (veth_mtu "0").
    let (pod, r) = s.pod_with(1, "pod3", NAT_POOL, Some(0));
    assert_eq!(mtu_of(&pod, "eth0").trim(), "1400");
    assert_eq!(r["interfaces"][1]["mtu"], json!(1400));
}

/// Benchmark (docs/BENCHMARKS.md, "NAT outgoing"): a NAT'd pod → the outside host against the
/// node itself → that host, and (to split the cost of NAT from that of the pod's extra hop) a
/// pod of the pool without natOutgoing → the outside host given a route back to that pool;
/// interleaved, five runs each; prints `BENCH|nat|...` lines.
#[test]
#[ignore = "benchmark: cargo test -p calico-cni --test agent_dataplane -- --ignored --nocapture"]
fn bench_nat_outgoing_throughput() {
    let s = Setup::new(1);
    let node = &s.nodes[0].0;
    let (pod, pod_ip) = s.pod(1, "pod1", NAT_POOL);
    let server = s
        .outside
        .serve_tcp_echo(OUTSIDE.parse().unwrap(), PORT)
        .unwrap();
    assert!(
        wait_until(WAIT, || connect(&pod, outside()).is_some()),
        "pod {pod_ip} never reached the outside\n{}",
        s.agent_logs()
    );
    assert_eq!(server.peers().last().unwrap().ip(), node.ip());
    drop(server);
    let (plain, plain_ip) = s.pod(1, "plain1", PLAIN_POOL);
    s.outside
        .exec_ok(&[
            "ip",
            "route",
            "add",
            PLAIN_POOL,
            "via",
            &node.ip().to_string(),
        ])
        .unwrap();
    assert!(
        plain.wait_ping(OUTSIDE, WAIT).unwrap(),
        "{plain_ip} -> outside, routed"
    );
    let (mut nat, mut host, mut routed) = (Vec::new(), Vec::new(), Vec::new());
    // A fresh one-shot server per run, each on a port of its own.
    let to_outside = |from: &Host, port| {
        iperf::throughput(&s.outside, from, OUTSIDE.parse().unwrap(), port).expect("iperf3")
    };
    for i in 0..5u16 {
        host.push(to_outside(node, 5201 + 3 * i));
        nat.push(to_outside(&pod, 5202 + 3 * i));
        routed.push(to_outside(&plain, 5203 + 3 * i));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (n, h, r) = (median(&mut nat), median(&mut host), median(&mut routed));
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("BENCH|nat|node to outside host|{h:.2}|{}", fmt(&host));
    println!("BENCH|nat|NAT'd pod to outside host|{n:.2}|{}", fmt(&nat));
    println!(
        "BENCH|nat|pod, no NAT, outside routes the pool back|{r:.2}|{}",
        fmt(&routed)
    );
    println!("BENCH|nat|ratio NAT'd pod / node|{:.3}", n / h);
    println!("BENCH|nat|ratio NAT'd pod / routed pod|{:.3}", n / r);
}
