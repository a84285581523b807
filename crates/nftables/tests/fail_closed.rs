//! Fail closed, with real traffic in lab namespaces:
//! - a workload-prefixed interface without an endpoint can neither send to nor receive from a
//!   policed workload, nor reach the host, and the "Unknown interface" counter moves by exactly
//!   the packets it dropped; `interfacePrefix` decides which interfaces that is;
//! - a workload wired while a peer floods it with connection attempts is never reached before
//!   its policy (a deny) is live;
//! - a policy with an `http` match is isolated: a later deny in another policy takes effect;
//! - `DefaultEndpointToHostAction: Return`: after the workload's egress policy, the host's own
//!   rules (another table) decide.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use calico_api::kinds as api;
use calico_dataplane::sysctl::{self, Sysctl};
use calico_lab::{Host, Lab};
use calico_nftables::{EndpointToHost, PolicyDataplane};
use calico_policy::compile;
use calico_policy::from_api::ApiResources;
use calico_policy::isolate::{Outcome, compile_isolated};
use calico_policy::model::{
    Action, Failsafe, LabelMap, Policy, PolicyModel, Port, Profile, Rule, WorkloadEndpoint,
};
use calico_policy::program::HostProgram;

const NODE: &str = "node1";
const PORT: u16 = 8080;
const WAIT: Duration = Duration::from_millis(500);

struct Node {
    lab: Lab,
    host: Host,
    dp: PolicyDataplane,
}

fn node() -> Node {
    let lab = Lab::new().expect("lab");
    let host = lab.add_host(NODE, "192.168.34.11/24").expect("node");
    sysctl::apply(Some(&host.netns_path()), &[Sysctl::ipv4_forwarding(true)]).expect("forwarding");
    let dp = PolicyDataplane::new_in(&host.netns_path()).expect("policy dataplane");
    Node { lab, host, dp }
}

impl Node {
    /// A workload `name` (host side `cali<name>`) at `ip`, routed by the node.
    fn workload(&self, name: &str, ip: Ipv4Addr) -> Host {
        let wl = self
            .lab
            .add_workload(&self.host, name, ip)
            .expect("workload");
        self.host
            .exec_ok(&[
                "ip",
                "route",
                "replace",
                &format!("{ip}/32"),
                "dev",
                &format!("cali{name}"),
            ])
            .expect("workload route");
        wl
    }

    fn apply(&mut self, m: &PolicyModel) -> HostProgram {
        let p = compile(m, Some(NODE)).expect("compile");
        self.dp.apply_changes(&p).expect("apply");
        p
    }

    fn table(&self) -> String {
        self.host
            .exec(&["nft", "list", "table", "inet", "calico-rs"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// A workload endpoint with profile `open` (allows everything both ways), so only the
/// unknown-interface drop or an explicit policy can stop its traffic.
fn endpoint(name: &str, ip: Ipv4Addr, role: &str) -> WorkloadEndpoint {
    WorkloadEndpoint {
        name: name.into(),
        node: NODE.into(),
        namespace: "default".into(),
        interface_name: format!("cali{name}"),
        labels: LabelMap::from([("role".to_string(), role.to_string())]),
        orchestrator: Some("k8s".into()),
        ips: vec![format!("{ip}/32").parse().unwrap()],
        profiles: vec!["open".into()],
        ..Default::default()
    }
}

fn open_model(endpoints: Vec<WorkloadEndpoint>) -> PolicyModel {
    PolicyModel {
        profiles: vec![Profile {
            name: "open".into(),
            labels_to_apply: LabelMap::new(),
            ingress: vec![Rule::new(Action::Allow)],
            egress: vec![Rule::new(Action::Allow)],
        }],
        workload_endpoints: endpoints,
        ..Default::default()
    }
}

fn tcp(from: &Host, to: Ipv4Addr, port: u16) -> bool {
    from.tcp_probe(SocketAddr::new(to.into(), port), WAIT)
        .expect("tcp probe")
}

/// `f` holds within 10 s (neighbour resolution on fresh veths takes a moment).
fn eventually(f: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Sends `n` pings (0.1 s apart), returns how many were answered.
fn pings(from: &Host, to: Ipv4Addr, n: usize) -> usize {
    let out = from
        .exec_timeout(
            &[
                "ping",
                "-n",
                "-c",
                &n.to_string(),
                "-i",
                "0.1",
                "-W",
                "1",
                &to.to_string(),
            ],
            Duration::from_secs(20),
        )
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(',')
        .find_map(|part| part.trim().strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ping summary in {text}"))
}

#[test]
fn unknown_workload_interface_is_dropped_both_ways_and_counted() {
    let mut n = node();
    let (ip_w, ip_r) = (Ipv4Addr::new(10, 65, 0, 1), Ipv4Addr::new(10, 65, 0, 2));
    let w1 = n.workload("w1", ip_w);
    // Hand-made: a `cali` veth with an address and a route, but no endpoint anywhere.
    let rogue = n.workload("rogue", ip_r);
    let _s1 = w1
        .serve_tcp(Ipv4Addr::UNSPECIFIED.into(), &[PORT])
        .expect("serve");
    let _s2 = rogue
        .serve_tcp(Ipv4Addr::UNSPECIFIED.into(), &[PORT])
        .expect("serve");
    let node_ip = match n.host.ip() {
        std::net::IpAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    let _s3 = n.host.serve_tcp(node_ip.into(), &[PORT]).expect("serve");
    // Without the table the plumbing works both ways (so what follows is the table's doing);
    // the first attempts wait for (proxy) ARP.
    assert!(
        eventually(|| tcp(&rogue, ip_w, PORT)),
        "plumbing rogue -> w1"
    );
    assert!(eventually(|| tcp(&w1, ip_r, PORT)), "plumbing w1 -> rogue");
    assert!(
        eventually(|| tcp(&rogue, node_ip, PORT)),
        "plumbing rogue -> node"
    );

    let model = open_model(vec![endpoint("w1", ip_w, "web")]);
    n.apply(&model);
    assert_eq!(n.dp.unknown_interface_drops().expect("read").packets, 0);

    // Counted exactly: each ping from rogue is one packet dropped in `from-wl`, each ping to
    // rogue one in `to-wl` (w1's egress lets it out first).
    assert_eq!(pings(&rogue, ip_w, 5), 0, "rogue reached w1\n{}", n.table());
    let c = n.dp.unknown_interface_drops().expect("read");
    assert_eq!(c.packets, 5, "{c:?}\n{}", n.table());
    assert_eq!(pings(&w1, ip_r, 4), 0, "w1 reached rogue");
    let c = n.dp.unknown_interface_drops().expect("read");
    assert_eq!(c.packets, 9, "{c:?}");
    assert!(c.bytes >= 9 * 84, "{c:?}");
    assert!(!tcp(&rogue, ip_w, PORT), "rogue -> w1 TCP");
    assert!(!tcp(&w1, ip_r, PORT), "w1 -> rogue TCP");
    // The policed workload itself is untouched.
    assert!(!tcp(&w1, node_ip, PORT), "Drop: workload to host dropped");

    // To the host: with Return the workload's egress policy decides for w1 (allowed), and
    // rogue, having no endpoint, is dropped as unknown (and counted).
    n.dp.set_endpoint_to_host(EndpointToHost::Return);
    n.apply(&model);
    assert!(
        tcp(&w1, node_ip, PORT),
        "Return: w1's egress allows the host"
    );
    let before = n.dp.unknown_interface_drops().expect("read").packets;
    assert_eq!(pings(&rogue, node_ip, 3), 0, "rogue reached the host");
    let after = n.dp.unknown_interface_drops().expect("read").packets;
    assert_eq!(after - before, 3, "to-host drops counted");
    assert!(!tcp(&rogue, node_ip, PORT), "rogue -> node TCP");

    // interfacePrefix decides what a workload interface is: with `tap` only, `calirogue` is
    // not a workload's and not ours to judge (w1's chains still police w1: it allows all).
    n.dp.set_interface_prefixes(vec!["tap".into()]);
    n.apply(&model);
    assert!(
        tcp(&rogue, ip_w, PORT),
        "prefix tap: rogue is not a workload interface"
    );
    n.dp.set_interface_prefixes(vec!["tap".into(), "cali".into()]);
    n.apply(&model);
    assert!(
        !tcp(&rogue, ip_w, PORT),
        "prefixes tap,cali: rogue dropped again"
    );
    assert!(tcp(&w1, node_ip, PORT), "w1 still allowed");
}

/// A new workload is wired (veth, address, route, a server listening) while a peer workload
/// tries to connect to it every few milliseconds; its endpoint then arrives with a policy
/// denying that peer. Not one attempt may connect: before its endpoint the interface is
/// unknown (dropped), after it the deny is live, and both arrive in one transaction.
#[test]
fn new_workload_under_a_connection_flood_is_never_reached_before_its_policy() {
    let mut n = node();
    let (ip1, ip2) = (Ipv4Addr::new(10, 65, 1, 1), Ipv4Addr::new(10, 65, 1, 2));
    let peer = n.workload("peer", ip1);
    let mut model = open_model(vec![endpoint("peer", ip1, "client")]);
    n.apply(&model);

    let stop = Arc::new(AtomicBool::new(false));
    let (attempts, connected) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let flood = {
        let (peer, stop, attempts, connected) = (
            peer.clone(),
            stop.clone(),
            attempts.clone(),
            connected.clone(),
        );
        std::thread::spawn(move || {
            peer.run(move || {
                let dst = SocketAddr::new(ip2.into(), PORT);
                let t0 = Instant::now();
                while !stop.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(60) {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    if TcpStream::connect_timeout(&dst, Duration::from_millis(20)).is_ok() {
                        connected.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(3));
                }
            })
            .expect("flood")
        })
    };
    std::thread::sleep(Duration::from_millis(200));

    // Wire the workload as the CNI plugin does, with its server up, and leave it unpoliced
    // for a while: only the unknown-interface drop stands between the flood and it.
    let w2 = n.workload("new", ip2);
    let _srv = w2
        .serve_tcp(Ipv4Addr::UNSPECIFIED.into(), &[PORT])
        .expect("serve");
    // The node reaches it (host to workload is not policed): the veth, the route and both
    // sides' neighbour entries (incl. the proxy-ARP gateway) are ready, so in the window
    // below only the table can keep the flood out.
    assert!(
        eventually(|| n
            .host
            .exec(&["ping", "-c1", "-W1", &ip2.to_string()])
            .is_ok_and(|o| o.status.success())),
        "plumbing of the new workload"
    );
    let wired = attempts.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1000));
    let during_window = attempts.load(Ordering::SeqCst) - wired;

    // Its endpoint and a policy denying the peer arrive together (the agent's path).
    model
        .workload_endpoints
        .push(endpoint("new", ip2, "server"));
    let mut deny = Policy::new("deny-client", "role == 'server'");
    let mut r = Rule::new(Action::Deny);
    r.source.selector = "role == 'client'".into();
    deny.ingress = vec![r, Rule::new(Action::Allow)];
    model.policies.push(deny);
    let p = compile(&model, Some(NODE)).expect("compile");
    let report = n.dp.apply_changes(&p).expect("apply");
    assert!(!report.full, "an incremental change");
    assert!(report.sets.contains("to-wl") && report.chains.contains("tw-calinew"));
    let applied = attempts.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    flood.join().expect("flood thread");
    let total = attempts.load(Ordering::SeqCst);
    assert!(
        during_window >= 20 && total - applied >= 20,
        "the flood must hit both phases: {during_window} unpoliced, {} policed",
        total - applied
    );
    assert_eq!(
        connected.load(Ordering::SeqCst),
        0,
        "{total} attempts, some connected\n{}",
        n.table()
    );

    // The same flood path connects once the policy allows it: the zero above is the policy's.
    model.policies.clear();
    n.apply(&model);
    assert!(tcp(&peer, ip2, PORT), "allowed now");
}

fn gnp(v: serde_json::Value) -> api::GlobalNetworkPolicy {
    serde_json::from_value(v).expect("GlobalNetworkPolicy")
}

/// A policy with an `http` match (which calico-rs cannot enforce) is isolated: its rule is
/// skipped and reported, and a deny added later in another policy takes effect.
#[test]
fn a_policy_with_an_http_match_does_not_stop_a_later_deny() {
    let mut n = node();
    let (ip1, ip2) = (Ipv4Addr::new(10, 65, 2, 1), Ipv4Addr::new(10, 65, 2, 2));
    let client = n.workload("client", ip1);
    let server = n.workload("server", ip2);
    let _s1 = client
        .serve_tcp(Ipv4Addr::UNSPECIFIED.into(), &[PORT])
        .expect("serve");
    let _s2 = server
        .serve_tcp(Ipv4Addr::UNSPECIFIED.into(), &[PORT])
        .expect("serve");
    let wep = |name: &str, ip: Ipv4Addr, role: &str| -> api::WorkloadEndpoint {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": name, "namespace": "default", "labels": {"role": role}},
            "spec": {"orchestrator": "k8s", "node": NODE, "interfaceName": format!("cali{name}"),
                     "ipNetworks": [format!("{ip}/32")], "profiles": ["open"]}
        }))
        .expect("WorkloadEndpoint")
    };
    let mut res = ApiResources {
        profiles: vec![
            serde_json::from_value(serde_json::json!({
                "apiVersion": "projectcalico.org/v3", "kind": "Profile",
                "metadata": {"name": "open"},
                "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}
            }))
            .expect("Profile"),
        ],
        workload_endpoints: vec![wep("client", ip1, "client"), wep("server", ip2, "server")],
        ..Default::default()
    };
    let apply = |n: &mut Node, res: &ApiResources| {
        let (p, issues) = compile_isolated(res, &Failsafe::default(), Some(NODE)).expect("compile");
        n.dp.apply_changes(&p).expect("apply");
        issues
    };
    assert!(apply(&mut n, &res).is_empty());
    assert!(eventually(|| tcp(&client, ip2, PORT)), "client -> server");
    assert!(eventually(|| tcp(&server, ip1, PORT)), "server -> client");

    res.global_network_policies.push(gnp(serde_json::json!({
        "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "alp"},
        "spec": {"selector": "role == 'server'", "ingress": [
            {"action": "Allow", "protocol": "TCP", "destination": {"ports": [PORT]},
             "http": {"methods": ["GET"]}}]}
    })));
    let issues = apply(&mut n, &res);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].owner, "GlobalNetworkPolicy \"alp\"");
    assert_eq!(issues[0].field, "spec.ingress[0].http");
    assert_eq!(issues[0].outcome, Outcome::RuleSkipped);
    // Skipped, not widened: the server's ingress has no allow left in its tier.
    assert!(
        !tcp(&client, ip2, PORT),
        "the http rule must not allow all of TCP {PORT}"
    );
    assert!(tcp(&server, ip1, PORT), "the client is not selected by it");

    // A deny in another policy: enforced although `alp` is still there.
    res.global_network_policies.push(gnp(serde_json::json!({
        "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "client-deny"},
        "spec": {"selector": "role == 'client'", "ingress": [
            {"action": "Deny", "protocol": "TCP", "destination": {"ports": [PORT]}},
            {"action": "Allow"}]}
    })));
    let issues = apply(&mut n, &res);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(
        !tcp(&server, ip1, PORT),
        "the later deny took effect\n{}",
        n.table()
    );
}

/// Felix's `Return`: the workload's egress policy decides first, then the host's own rules (a
/// table of the host's) decide; `Drop` drops everything to the host.
#[test]
fn endpoint_to_host_return_leaves_the_decision_to_the_hosts_rules() {
    let mut n = node();
    let ip = Ipv4Addr::new(10, 65, 3, 1);
    let w = n.workload("w", ip);
    let node_ip = match n.host.ip() {
        std::net::IpAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    let ports = [7000, 7001, 7002];
    let _srv = n.host.serve_tcp(node_ip.into(), &ports).expect("serve");
    let mut m = open_model(vec![endpoint("w", ip, "web")]);
    let mut p = Policy::new("no-7002", "role == 'web'");
    let mut r = Rule::new(Action::Deny);
    r.protocol = Some("TCP".into());
    r.destination.ports = vec![Port::number(7002)];
    p.egress = vec![r, Rule::new(Action::Allow)];
    m.policies.push(p);
    let reach = |w: &Host| ports.map(|port| tcp(w, node_ip, port));

    assert!(
        eventually(|| tcp(&w, node_ip, 7000)),
        "plumbing: no table, 7000 reachable"
    );
    n.apply(&m);
    assert_eq!(reach(&w), [false; 3], "Drop");
    n.dp.set_endpoint_to_host(EndpointToHost::Return);
    n.apply(&m);
    assert_eq!(
        reach(&w),
        [true, true, false],
        "Return: the egress policy decides"
    );
    // The host's own rule, in its own table, drops 7001 from workloads: it has the last word.
    n.host
        .exec_ok(&[
            "nft",
            "add table inet hostfw; add chain inet hostfw input { type filter hook input priority 10; policy accept; }; add rule inet hostfw input iifname \"cali*\" tcp dport 7001 drop",
        ])
        .expect("host rule");
    assert_eq!(
        reach(&w),
        [true, false, false],
        "Return: then the host's rules decide"
    );
}
