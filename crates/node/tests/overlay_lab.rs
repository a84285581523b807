//! VXLAN overlays with real calico-node agents: nodes on DIFFERENT subnets (192.168.33.0/24
//! and 192.168.34.0/24) joined by a router (the lab's LAN namespace, which routes between the
//! subnets and has no route to any pod), workloads pinging and opening TCP across it; the
//! kernel state each agent programs (`vxlan.calico`, FDB, neighbours, routes); CrossSubnet
//! with a third node reached natively; the VXLAN backend without BGP; a restart that touches
//! nothing; a removed node whose routes and entries are withdrawn.
//!
//! Needs root and `target/debug/calico-node` + `calicoctl`
//! (`cargo build -p calico-rs --bin calico-node --bin calicoctl`).

mod cluster_support;
use cluster_support::*;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use calico_api::{Node, ObjectMeta, Profile, ProfileSpec, WorkloadEndpoint, WorkloadEndpointSpec};
use calico_datastore::Datastore;
use calico_ipam::Ipam;
use calico_lab::{Host, iperf};

const ALLOW_ALL: &str = "overlay-allow-all";

/// node1 on 192.168.33.0/24, node2 behind the router on 192.168.34.0/24.
const ACROSS_ROUTER: [&str; 2] = ["192.168.33.11/24", "192.168.34.12/24"];

/// The two nodes' (address, block) of [`Cluster::with_agents`].
fn two(wl: Vec<(IpAddr, String)>) -> [(IpAddr, String); 2] {
    wl.try_into().expect("two nodes")
}

/// A workload behind a veth on node `node` with `ip` (Calico's CNI recipe, from the lab),
/// and its WorkloadEndpoint with an allow-all profile.
fn workload(c: &Cluster, name: &str, node: usize, ip: IpAddr) -> Host {
    let IpAddr::V4(ip4) = ip else {
        panic!("IPv4 workloads here")
    };
    let wl = c
        .lab
        .add_workload(&c.node(node).host, name, ip4)
        .expect("workload plumbing");
    register(c, name, node, format!("{ip}/32"));
    wl
}

/// The WorkloadEndpoint of workload `name` on node `node` (interface `cali<name>`, address
/// `ip_net`), with an allow-all profile.
fn register(c: &Cluster, name: &str, node: usize, ip_net: String) {
    let iface = format!("cali{name}");
    let node_name = c.node(node).name.clone();
    let wep_name = format!("{node_name}-libnetwork-libnetwork-{name}");
    let name = name.to_string();
    c.with_datastore(async move |ds: &Datastore, _| {
        let allow: ProfileSpec = serde_json::from_value(serde_json::json!({
            "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}],
        }))
        .expect("profile");
        ds.apply(&Profile::new(ALLOW_ALL, allow))
            .await
            .expect("apply Profile");
        let mut wep = WorkloadEndpoint::new(
            &wep_name,
            WorkloadEndpointSpec {
                orchestrator: Some("libnetwork".into()),
                workload: Some("libnetwork".into()),
                node: Some(node_name),
                endpoint: Some(name),
                interface_name: Some(iface),
                ip_networks: vec![ip_net],
                profiles: vec![ALLOW_ALL.into()],
                ..Default::default()
            },
        );
        wep.metadata = ObjectMeta {
            name: Some(wep_name.clone()),
            namespace: Some("default".into()),
            ..Default::default()
        };
        ds.create(&wep).await.expect("create WorkloadEndpoint");
    });
}

/// The VXLAN tunnel address and VTEP MAC recorded on node `name`'s Node (waits for them).
fn vtep(c: &Cluster, name: &str) -> (IpAddr, String) {
    wait_for(WAIT, || {
        let name = name.to_string();
        c.with_datastore(async move |ds: &Datastore, _| {
            let n: Node = ds.get(None, &name).await.ok()??;
            Some((
                n.spec.ipv4_vxlan_tunnel_addr?.parse().ok()?,
                n.spec.vxlan_tunnel_mac_addr?,
            ))
        })
    })
    .unwrap_or_else(|| panic!("{name} never got a VXLAN tunnel address and MAC"))
}

fn sh(host: &Host, argv: &[&str]) -> String {
    host.exec_ok(argv)
        .unwrap_or_else(|e| panic!("{argv:?} on {}: {e}", host.name()))
}

fn through_tunnel(block: &str, tunnel: IpAddr) -> String {
    format!("{block} via {tunnel} dev vxlan.calico proto bird onlink")
}

fn native(block: &str, host: IpAddr) -> String {
    format!("{block} via {host} dev eth1 proto bird")
}

fn ping(from: &Host, to: IpAddr) {
    assert!(
        from.wait_ping(&to.to_string(), Duration::from_secs(10))
            .expect("ping"),
        "{} cannot ping {to}",
        from.name()
    );
}

fn tcp(from: &Host, to_host: &Host, to: IpAddr) {
    let _server = to_host.serve_tcp(to, &[8080]).expect("serve");
    assert!(
        from.tcp_probe(SocketAddr::new(to, 8080), Duration::from_secs(5))
            .expect("probe"),
        "{} cannot open TCP to {to}:8080",
        from.name()
    );
}

/// The router (LAN namespace) has no route to `ip`: whatever crossed it was encapsulated.
fn router_has_no_route(c: &Cluster, ip: IpAddr) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", c.lab.lan_netns(), "ip", "route", "get"])
        .arg(ip.to_string())
        .output()
        .expect("ip route get");
    assert!(
        !out.status.success(),
        "the router knows a route to the pod address {ip}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// What a restart must leave exactly as it was on node `i`.
fn kernel_state(c: &Cluster, i: usize) -> Vec<String> {
    let h = &c.node(i).host;
    vec![
        sh(h, &["ip", "-d", "link", "show", "vxlan.calico"]),
        sh(h, &["ip", "-4", "addr", "show", "vxlan.calico"]),
        sh(h, &["bridge", "fdb", "show", "dev", "vxlan.calico"]),
        sh(h, &["ip", "neigh", "show", "dev", "vxlan.calico"]),
        sh(h, &["ip", "-4", "route", "show"]),
    ]
}

#[test]
fn vxlan_always_carries_pods_across_a_router_and_a_restart_touches_nothing() {
    let env = [("CALICO_IPV4POOL_VXLAN", "Always")];
    let (mut c, wl) = Cluster::with_agents(&ACROSS_ROUTER, &env);
    let [(ip1, block1), (ip2, block2)] = two(wl);
    let (t1, mac1) = vtep(&c, "node1");
    let (t2, mac2) = vtep(&c, "node2");
    // The tunnel address comes from the node's own block, as calico-ipam allocates it.
    assert!(block1.parse::<ipnet::IpNet>().unwrap().contains(&t1));
    assert!(block2.parse::<ipnet::IpNet>().unwrap().contains(&t2));
    c.wait_routes(
        1,
        &[through_tunnel(&block2, t2)],
        &[native(&block2, c.ip(2))],
    );
    c.wait_routes(2, &[through_tunnel(&block1, t1)], &[]);
    let wl1 = workload(&c, "wl1", 1, ip1);
    let wl2 = workload(&c, "wl2", 2, ip2);
    ping(&wl1, ip2);
    ping(&wl2, ip1);
    tcp(&wl1, &wl2, ip2);
    router_has_no_route(&c, ip2);

    let n1 = &c.node(1).host.clone();
    let link = sh(n1, &["ip", "-d", "link", "show", "vxlan.calico"]);
    for want in [
        "vxlan id 4096",
        "local 192.168.33.11",
        "dstport 4789",
        "nolearning",
        "mtu 1450",
        &format!("link/ether {mac1}"),
    ] {
        assert!(link.contains(want), "vxlan.calico lacks {want:?}:\n{link}");
    }
    let addr = sh(n1, &["ip", "-4", "addr", "show", "vxlan.calico"]);
    assert!(addr.contains(&format!("inet {t1}/32")), "{addr}");
    let fdb = sh(n1, &["bridge", "fdb", "show", "dev", "vxlan.calico"]);
    assert!(
        fdb.contains(&format!("{mac2} dst {} self permanent", c.ip(2))),
        "{fdb}"
    );
    let neigh = sh(n1, &["ip", "neigh", "show", "dev", "vxlan.calico"]);
    assert!(
        neigh.contains(&format!("{t2} lladdr {mac2} PERMANENT")),
        "{neigh}"
    );

    // A restart finds everything right and writes nothing.
    let before = kernel_state(&c, 1);
    if let Some(mut a) = c.nodes[0].agent.take() {
        a.kill();
    }
    c.start_agent_with(1, &env);
    // Several rounds: the node reports ready once a round has synced.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(kernel_state(&c, 1), before);
    let log = c.agent_log(1);
    for line in [
        "installing route",
        "removing route",
        "VXLAN device programmed",
        "adding FDB entry",
        "adding neighbour entry",
        "tunnel address allocated",
        "Node tunnel fields updated",
    ] {
        assert!(
            !log.contains(line),
            "the restarted agent wrote ({line}):\n{log}"
        );
    }
    ping(&wl1, ip2);

    // node2 removed: its route, FDB and neighbour entries go.
    if let Some(mut a) = c.nodes[1].agent.take() {
        a.kill();
    }
    c.calicoctl(&["delete", "node", "node2"]);
    c.with_datastore(async |_, ipam: &Ipam| {
        let _ = ipam.release_by_handle("wl-node2").await;
        let _ = ipam.release_by_handle("vxlan-tunnel-addr-node2").await;
        ipam.release_host_affinities("node2")
            .await
            .expect("release node2's affinities");
    });
    c.wait_routes(1, &[], &[through_tunnel(&block2, t2)]);
    let gone = wait_for(WAIT, || {
        let fdb = sh(n1, &["bridge", "fdb", "show", "dev", "vxlan.calico"]);
        let neigh = sh(n1, &["ip", "neigh", "show", "dev", "vxlan.calico"]);
        (!fdb.contains(&mac2) && !neigh.contains(&mac2)).then_some(())
    });
    assert!(
        gone.is_some(),
        "node2's VTEP entries stayed:\n{}",
        c.agent_log(1)
    );
}

/// Three nodes: node1 and node3 share 192.168.33.0/24, node2 is behind the router.
fn cross_subnet(backend: &str) {
    let env = [
        ("CALICO_IPV4POOL_VXLAN", "CrossSubnet"),
        ("CALICO_NETWORKING_BACKEND", backend),
    ];
    let (c, wl) = Cluster::with_agents(
        &["192.168.33.11/24", "192.168.34.12/24", "192.168.33.13/24"],
        &env,
    );
    let [(ip1, _), (ip2, block2), (ip3, block3)]: [(IpAddr, String); 3] =
        wl.try_into().expect("three nodes");
    let (t2, _) = vtep(&c, "node2");
    c.wait_routes(
        1,
        &[through_tunnel(&block2, t2), native(&block3, c.ip(3))],
        &[],
    );
    let routes = c.routes(1);
    assert!(
        routes
            .iter()
            .filter(|r| r.starts_with(&format!("{block3} ")))
            .all(|r| !r.contains("vxlan")),
        "node3 (same subnet) must be routed natively: {routes:?}"
    );
    let wl1 = workload(&c, "wl1", 1, ip1);
    let wl2 = workload(&c, "wl2", 2, ip2);
    let wl3 = workload(&c, "wl3", 3, ip3);
    ping(&wl1, ip2);
    ping(&wl1, ip3);
    ping(&wl2, ip3);
    tcp(&wl1, &wl2, ip2);
    tcp(&wl1, &wl3, ip3);
    router_has_no_route(&c, ip2);
    if backend == "vxlan" {
        // No BGP at all: nothing listens on 179.
        for i in 1..=3 {
            let ss = sh(&c.node(i).host, &["ss", "-Hltn"]);
            assert!(!ss.contains(":179 "), "node{i} listens for BGP:\n{ss}");
        }
    }
}

#[test]
fn vxlan_cross_subnet_encapsulates_only_across_the_router() {
    cross_subnet("bird");
}

#[test]
fn the_vxlan_backend_routes_from_block_affinities_without_bgp() {
    cross_subnet("vxlan");
}

/// Whether this kernel can make IPIP devices (`tunl0` appears with the ipip module).
fn kernel_has_ipip(host: &Host) -> bool {
    let _ = std::process::Command::new("modprobe").arg("ipip").output();
    host.exec(&["ip", "link", "show", "tunl0"])
        .is_ok_and(|o| o.status.success())
}

/// IPIP Always across the router. Where the kernel has no ipip module the node must say so
/// (an error line, not ready with the reason in `calicoctl node status`) and route nothing
/// natively instead; where it has one, pods ping through `tunl0`.
#[test]
fn ipip_without_the_kernel_module_is_not_ready_and_never_routes_natively() {
    let (c, wl) = Cluster::with_agents(&ACROSS_ROUTER, &[("CALICO_IPV4POOL_IPIP", "Always")]);
    let [(ip1, _), (ip2, block2)] = two(wl);
    if kernel_has_ipip(&c.node(1).host) {
        c.wait_routes(
            1,
            &[format!(
                "{block2} via {} dev tunl0 proto bird onlink",
                c.ip(2)
            )],
            &[],
        );
        let wl1 = workload(&c, "wl1", 1, ip1);
        let _wl2 = workload(&c, "wl2", 2, ip2);
        ping(&wl1, ip2);
        return;
    }
    eprintln!("skipped: no ipip in this kernel (the traffic part); checking the refusal");
    let status = wait_for(WAIT, || {
        let s = c.node_status(1);
        (s.contains("Readiness: not ready") && s.contains("no ipip module")).then_some(s)
    });
    assert!(
        status.is_some(),
        "node1 does not say it cannot do IPIP:\n{}\n{}",
        c.node_status(1),
        c.agent_log(1)
    );
    let log = c.agent_log(1);
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("no ipip module")),
        "no error line:\n{log}"
    );
    // BGP learned node2's block, but it is not installed unencapsulated.
    let routes = c.routes(1);
    assert!(
        !routes.iter().any(|r| r.starts_with(&format!("{block2} "))),
        "a route to node2's IPIP block was installed without IPIP: {routes:?}"
    );
}

/// An IPv6 workload on node `node`: Calico's recipe for IPv6 (host side `cali<name>` with
/// MAC ee:ee:ee:ee:ee:ee, the workload's default route via that side's link-local
/// fe80::ecee:eeff:feee:eeee), and its WorkloadEndpoint; the agent adds the /128 route.
fn workload_v6(c: &Cluster, name: &str, node: usize, ip: IpAddr) -> Host {
    let wl = c.lab.add_namespace(name).expect("workload namespace");
    let host = &c.node(node).host;
    let iface = format!("cali{name}");
    sh(
        host,
        &[
            "ip",
            "link",
            "add",
            &iface,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            wl.netns(),
        ],
    );
    sh(
        host,
        &["ip", "link", "set", &iface, "address", "ee:ee:ee:ee:ee:ee"],
    );
    sh(
        host,
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{iface}.accept_dad=0"),
        ],
    );
    sh(host, &["ip", "link", "set", &iface, "up"]);
    sh(&wl, &["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"]);
    sh(
        &wl,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{ip}/128"),
            "dev",
            "eth0",
            "nodad",
        ],
    );
    sh(&wl, &["ip", "link", "set", "eth0", "up"]);
    sh(
        &wl,
        &[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fe80::ecee:eeff:feee:eeee",
            "dev",
            "eth0",
        ],
    );
    register(c, name, node, format!("{ip}/128"));
    wl
}

/// IPv6 VXLAN Always across the router, with the VXLAN backend: `vxlan-v6.calico` over the
/// nodes' IPv6 addresses (fd33::/64 and fd34::/64, routed by the LAN namespace).
#[test]
fn ipv6_vxlan_carries_pods_across_a_router() {
    let mut c = Cluster::with_hosts(&ACROSS_ROUTER);
    let lan = c.lab.lan_netns().to_string();
    let in_lan = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lan])
            .args(args)
            .output()
            .expect("command in the LAN namespace");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    in_lan(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    for (i, (host6, gw6)) in [("fd33::11/64", "fd33::1"), ("fd34::12/64", "fd34::1")]
        .into_iter()
        .enumerate()
    {
        in_lan(&[
            "ip",
            "addr",
            "add",
            &format!("{gw6}/64"),
            "dev",
            "br0",
            "nodad",
        ]);
        let h = &c.node(i + 1).host;
        sh(h, &["ip", "addr", "add", host6, "dev", "eth1", "nodad"]);
        sh(
            h,
            &[
                "ip", "-6", "route", "add", "default", "via", gw6, "dev", "eth1",
            ],
        );
    }
    let env = |ip6: &'static str| {
        [
            ("IP6", ip6),
            ("FELIX_IPV6SUPPORT", "true"),
            ("CALICO_IPV6POOL_CIDR", "fd65::/48"),
            ("CALICO_IPV6POOL_VXLAN", "Always"),
            ("CALICO_NETWORKING_BACKEND", "vxlan"),
        ]
    };
    c.start_agent_with(1, &env("fd33::11/64"));
    c.start_agent_with(2, &env("fd34::12/64"));
    let alloc6 = |node: &str| {
        let node = node.to_string();
        c.with_datastore(async move |_, ipam: &Ipam| {
            let got = ipam
                .auto_assign(calico_ipam::AutoAssignArgs {
                    num_v6: 1,
                    handle_id: Some(format!("wl6-{node}")),
                    hostname: node.clone(),
                    ..Default::default()
                })
                .await
                .expect("auto_assign v6");
            let ip = got.v6[0];
            let block = ipam
                .host_affinities(&node)
                .await
                .expect("affinities")
                .into_iter()
                .map(|(b, _)| b)
                .find(|b| b.contains(&ip))
                .expect("block");
            (ip, block.to_string())
        })
    };
    let (ip1, _) = alloc6("node1");
    let (ip2, block2) = alloc6("node2");
    let (t2, mac2) = wait_for(WAIT, || {
        c.with_datastore(async |ds: &Datastore, _| {
            let n: Node = ds.get(None, "node2").await.ok()??;
            Some((
                n.spec.ipv6_vxlan_tunnel_addr?.parse::<IpAddr>().ok()?,
                n.spec.vxlan_tunnel_mac_addr_v6?,
            ))
        })
    })
    .unwrap_or_else(|| panic!("node2 has no IPv6 VTEP:\n{}", c.agent_log(2)));
    // `ip -6 route` prints the metric between: `... proto bird metric 1024 onlink pref medium`.
    let want = format!("{block2} via {t2} dev vxlan-v6.calico proto bird ");
    let n1 = c.node(1).host.clone();
    let routed = wait_for(WAIT, || {
        sh(&n1, &["ip", "-6", "route", "show"])
            .lines()
            .any(|l| l.starts_with(&want) && l.contains(" onlink"))
            .then_some(())
    });
    assert!(
        routed.is_some(),
        "node1 lacks {want}:\n{}\n{}",
        sh(&n1, &["ip", "-6", "route", "show"]),
        c.agent_log(1)
    );
    let link = sh(&n1, &["ip", "-d", "link", "show", "vxlan-v6.calico"]);
    for w in [
        "vxlan id 4096",
        "local fd33::11",
        "dstport 4789",
        "mtu 1430",
    ] {
        assert!(link.contains(w), "vxlan-v6.calico lacks {w:?}:\n{link}");
    }
    let fdb = sh(&n1, &["bridge", "fdb", "show", "dev", "vxlan-v6.calico"]);
    assert!(
        fdb.contains(&format!("{mac2} dst fd34::12 self permanent")),
        "{fdb}"
    );
    let neigh = sh(
        &n1,
        &["ip", "-6", "neigh", "show", "dev", "vxlan-v6.calico"],
    );
    assert!(
        neigh.contains(&format!("{t2} lladdr {mac2} PERMANENT")),
        "{neigh}"
    );

    let wl1 = workload_v6(&c, "wl1", 1, ip1);
    let wl2 = workload_v6(&c, "wl2", 2, ip2);
    ping(&wl1, ip2);
    tcp(&wl1, &wl2, ip2);
    router_has_no_route(&c, ip2);
    // Rounds after the first find the IPv6 tunnel route as it should be: installed once
    // (by a full route round or, when node2's VTEP was known first, by the block's own).
    let log = c.agent_log(1);
    let installs = log
        .lines()
        .filter(|l| {
            (l.contains("installing route") || l.contains("installing tunnel route"))
                && l.contains(&block2)
        })
        .count();
    assert_eq!(installs, 1, "{log}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Benchmark (ignored; `scripts/bench-overlay.sh`): iperf3 TCP pod → pod across the router
/// over calico's `vxlan.calico`, against host → host over a plain kernel VXLAN device set up
/// by hand on the same two hosts (same MTU 1450, static FDB and neighbour entries, another VNI
/// and port), alternating, ROUNDS rounds of 5 s each. Prints `BENCH|` lines.
#[test]
#[ignore = "benchmark: scripts/bench-overlay.sh"]
fn bench_vxlan_throughput() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let (c, wl) = Cluster::with_agents(&ACROSS_ROUTER, &[("CALICO_IPV4POOL_VXLAN", "Always")]);
    let [(ip1, _), (ip2, block2)] = two(wl);
    let (t2, _) = vtep(&c, "node2");
    c.wait_routes(1, &[through_tunnel(&block2, t2)], &[]);
    let wl1 = workload(&c, "wl1", 1, ip1);
    let wl2 = workload(&c, "wl2", 2, ip2);
    // The workloads' MTU leaves room for the encapsulation, as it must on a VXLAN pool.
    for (node, wl, name) in [(1, &wl1, "wl1"), (2, &wl2, "wl2")] {
        sh(
            &c.node(node).host,
            &["ip", "link", "set", &format!("cali{name}"), "mtu", "1450"],
        );
        sh(wl, &["ip", "link", "set", "eth0", "mtu", "1450"]);
    }
    ping(&wl1, ip2);

    // The hand-made tunnel: VNI 42, port 4790, 172.31.255.1/.2.
    let hand = [
        (1, "192.168.33.11", "172.31.255.1", "02:00:00:00:2a:01"),
        (2, "192.168.34.12", "172.31.255.2", "02:00:00:00:2a:02"),
    ];
    for (i, (node, local, addr, mac)) in hand.iter().enumerate() {
        let (_, peer_local, peer_addr, peer_mac) = hand[1 - i];
        let h = &c.node(*node).host;
        sh(
            h,
            &[
                "ip",
                "link",
                "add",
                "vxbench",
                "type",
                "vxlan",
                "id",
                "42",
                "local",
                local,
                "dstport",
                "4790",
                "nolearning",
            ],
        );
        sh(
            h,
            &[
                "ip", "link", "set", "vxbench", "address", mac, "mtu", "1450", "up",
            ],
        );
        sh(
            h,
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", "vxbench"],
        );
        sh(
            h,
            &[
                "bridge",
                "fdb",
                "append",
                peer_mac,
                "dev",
                "vxbench",
                "dst",
                peer_local,
                "self",
                "permanent",
            ],
        );
        sh(
            h,
            &[
                "ip",
                "neigh",
                "replace",
                peer_addr,
                "lladdr",
                peer_mac,
                "dev",
                "vxbench",
                "nud",
                "permanent",
            ],
        );
    }
    let (n1, n2) = (c.node(1).host.clone(), c.node(2).host.clone());
    let hand_dst: IpAddr = "172.31.255.2".parse().unwrap();
    assert!(
        n1.wait_ping("172.31.255.2", Duration::from_secs(5))
            .unwrap()
    );
    let (mut pod, mut host) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        pod.push(iperf::throughput(&wl2, &wl1, ip2, 5201).expect("iperf3 pod to pod"));
        host.push(iperf::throughput(&n2, &n1, hand_dst, 5201).expect("iperf3 host to host"));
    }
    let (p, h) = (median(pod.clone()), median(host.clone()));
    println!("BENCH|overlay|pod to pod over vxlan.calico|{p:.2}|{pod:.2?}");
    println!("BENCH|overlay|host to host over a hand-made kernel VXLAN|{h:.2}|{host:.2?}");
    println!("BENCH|ratio|{:.3}", p / h);
}
