//! Host endpoints with real traffic: a lab host `node1` whose `eth1` is a host endpoint, a
//! client `client` on the same LAN, and a workload behind node1 (plumbed as Calico does it).
//! Covers failsafe ports before policy, a doNotTrack allow that leaves no conntrack entry,
//! and an applyOnForward deny on traffic forwarded to the workload.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use calico_dataplane::sysctl::{self, Sysctl};
use calico_dataplane::{CALICO_HOST_MAC, Netlink, RTPROT_BOOT, Route, VethSpec};
use calico_lab::{Host, Lab, TcpServers};
use calico_nftables::PolicyDataplane;
use calico_policy::model::{
    Action, Direction, HostEndpoint, LabelMap, Policy, PolicyModel, Port, Profile, Rule,
    WorkloadEndpoint,
};
use calico_policy::program::{EndpointId, HostProgram};
use calico_policy::verdict::Outcome;
use calico_policy::{Packet, Verdict, compile, evaluate, verdict};

const NODE: &str = "node1";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 11);
const WL_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 167, 2);
const WL_IFACE: &str = "calihep0wl1";
/// node1 DNATs this port to the workload's port 80 (preDNAT case).
const DNAT_PORT: u16 = 8888;
const WAIT: Duration = Duration::from_millis(800);

/// One-byte TCP servers on `ports` of `ns`, stopped on drop.
fn tcp_servers(ns: &Host, ports: &[u16]) -> TcpServers {
    ns.serve_tcp(Ipv4Addr::UNSPECIFIED.into(), ports)
        .expect("tcp servers")
}

/// Whether a TCP connection from `from` to `dst:port` gets the server's byte.
fn tcp_ok(from: &Host, dst: Ipv4Addr, port: u16) -> bool {
    from.tcp_probe(SocketAddr::new(dst.into(), port), WAIT)
        .expect("tcp probe")
}

struct Rig {
    /// The last program applied (for the reference evaluator).
    prog: HostProgram,
    _lab: Lab,
    node: Host,
    client: Host,
    _wl: Host,
    dp: PolicyDataplane,
    _servers: Vec<TcpServers>,
}

async fn rig() -> Rig {
    let lab = Lab::new().expect("lab");
    let node = lab.add_host(NODE, "192.168.33.11/24").expect("node");
    let client = lab.add_host("client", "192.168.33.12/24").expect("client");
    sysctl::apply(Some(&node.netns_path()), &[Sysctl::ipv4_forwarding(true)]).expect("forwarding");
    // A workload behind node1, as Calico plumbs it (IPv4 is enough here).
    let wl = lab.add_namespace("wl1").expect("workload namespace");
    let host_nl = Netlink::connect_in(&node.netns_path()).expect("node netlink");
    host_nl
        .create_veth(&VethSpec {
            host_mac: Some(CALICO_HOST_MAC),
            ..VethSpec::new(WL_IFACE, "cali0", wl.netns_path())
        })
        .await
        .expect("veth");
    let c = Netlink::connect_in(&wl.netns_path()).expect("workload netlink");
    let addr = format!("{WL_IP}/32").parse().expect("cidr");
    c.add_address("cali0", addr).await.expect("address");
    c.replace_route(&Route::device(
        "169.254.1.1/32".parse().expect("cidr"),
        "cali0",
        RTPROT_BOOT,
    ))
    .await
    .expect("gateway route");
    c.replace_route(&Route::gateway(
        "0.0.0.0/0".parse().expect("cidr"),
        "169.254.1.1".parse().expect("ip"),
        Some("cali0"),
        RTPROT_BOOT,
    ))
    .await
    .expect("default route");
    sysctl::apply(
        Some(&node.netns_path()),
        &sysctl::calico_host_veth(WL_IFACE, true, false),
    )
    .expect("sysctls");
    host_nl
        .replace_route(&Route::device(addr, WL_IFACE, RTPROT_BOOT))
        .await
        .expect("workload route");
    // The client reaches the workload through node1 (inside the lab's namespaces only).
    client
        .exec_ok(&[
            "ip",
            "route",
            "replace",
            &format!("{WL_IP}/32"),
            "via",
            "192.168.33.11",
        ])
        .expect("client route");
    let servers = vec![
        tcp_servers(&node, &[22, 7070, 8080, 9090]),
        tcp_servers(&wl, &[80, 443]),
        tcp_servers(&client, &[179, 9090]),
    ];
    let dp = PolicyDataplane::new_in(&node.netns_path()).expect("policy dataplane");
    Rig {
        prog: HostProgram::default(),
        _lab: lab,
        node,
        client,
        _wl: wl,
        dp,
        _servers: servers,
    }
}

/// node1's eth1 as a host endpoint (label `role: edge`) and the workload (profile allowing
/// everything), no policy yet.
fn base_model() -> PolicyModel {
    let mut m = PolicyModel::default();
    m.profiles.push(Profile {
        name: "open".into(),
        labels_to_apply: LabelMap::new(),
        ingress: vec![Rule::new(Action::Allow)],
        egress: vec![Rule::new(Action::Allow)],
    });
    m.workload_endpoints.push(WorkloadEndpoint {
        name: "wl1".into(),
        node: NODE.into(),
        namespace: "default".into(),
        interface_name: WL_IFACE.into(),
        ips: vec![format!("{WL_IP}/32").parse().expect("cidr")],
        profiles: vec!["open".into()],
        ..Default::default()
    });
    m.host_endpoints.push(HostEndpoint {
        name: "node1-eth1".into(),
        node: NODE.into(),
        interface_name: Some("eth1".into()),
        expected_ips: vec![IpAddr::V4(NODE_IP)],
        labels: LabelMap::from([("role".to_string(), "edge".to_string())]),
        ..Default::default()
    });
    m
}

fn tcp_rule(action: Action, dport: Option<u16>, sport: Option<u16>) -> Rule {
    let mut r = Rule::new(action);
    r.protocol = Some("TCP".into());
    if let Some(p) = dport {
        r.destination.ports = vec![Port::number(p)];
    }
    if let Some(p) = sport {
        r.source.ports = vec![Port::number(p)];
    }
    r
}

/// Ingress to the host endpoint: only TCP 8080 (egress open so the host can answer new flows
/// it starts; replies are established anyway).
fn only_8080() -> Policy {
    let mut p = Policy::new("edge-in", "role == 'edge'");
    p.types = vec![Direction::Ingress, Direction::Egress];
    p.ingress = vec![tcp_rule(Action::Allow, Some(8080), None)];
    p.egress = vec![Rule::new(Action::Allow)];
    p
}

impl Rig {
    fn apply(&mut self, m: &PolicyModel) {
        let prog = compile(m, Some(NODE)).expect("compile");
        self.dp.apply(&prog).expect("apply");
        self.prog = prog;
    }

    /// calico-policy's reference evaluator for a new TCP connection from the client to the
    /// host itself, through the host endpoint's chains in packet order: untracked ingress (an
    /// allow there is final), pre-DNAT ingress (a deny is final), normal ingress (failsafe
    /// ports first). `None` when the destination is not the host or node1 has no host
    /// endpoint on eth1.
    fn reference_to_host(&self, dst: Ipv4Addr, port: u16) -> Option<bool> {
        if dst != NODE_IP || port == DNAT_PORT {
            // DNAT_PORT is forwarded to the workload, not delivered to the host.
            return None;
        }
        let ep = self.prog.endpoints.get(&EndpointId::Host {
            name: "node1-eth1".into(),
        })?;
        let client = IpAddr::V4(Ipv4Addr::new(192, 168, 33, 12));
        let p = Packet::tcp(client, 40000, IpAddr::V4(dst), port);
        let h = ep.host.as_ref()?;
        match evaluate(&h.untracked_ingress, &self.prog, &p).outcome {
            Outcome::Allow => return Some(true),
            Outcome::Deny => return Some(false),
            Outcome::Continue => {}
        }
        if evaluate(&h.pre_dnat_ingress, &self.prog, &p).outcome == Outcome::Deny {
            return Some(false);
        }
        Some(verdict(ep, Direction::Ingress, &self.prog, &p) == Verdict::Allow)
    }

    fn table(&self) -> String {
        self.node
            .exec(&["nft", "list", "table", "inet", "calico-rs"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Conntrack entries of node1 for a TCP destination port.
    fn conntrack_entries(&self, dport: u16) -> usize {
        let text = self
            .node
            .exec_ok(&["cat", "/proc/net/nf_conntrack"])
            .expect("read conntrack table");
        let needle = format!("dport={dport} ");
        text.lines().filter(|l| l.contains(&needle)).count()
    }

    fn expect(&self, label: &str, cases: &[(Ipv4Addr, u16, bool)]) {
        let mut failures = Vec::new();
        for &(dst, port, allowed) in cases {
            let real = tcp_ok(&self.client, dst, port);
            let reference = self.reference_to_host(dst, port);
            if real != allowed || reference.is_some_and(|r| r != allowed) {
                failures.push(format!(
                    "{label}: client -> {dst}:{port}: expected allowed={allowed}, got {real}, reference {reference:?}"
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{}\n{}",
            failures.join("\n"),
            self.table()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_endpoint_failsafe_donottrack_and_forward() {
    let mut rig = rig().await;

    // Without a host endpoint policy everything flows (the plumbing works).
    rig.apply(&PolicyModel {
        host_endpoints: Vec::new(),
        ..base_model()
    });
    rig.expect(
        "plumbing",
        &[
            (NODE_IP, 22, true),
            (NODE_IP, 8080, true),
            (NODE_IP, 9090, true),
            (WL_IP, 80, true),
        ],
    );

    // Ingress only 8080: 9090 denied, 22 still allowed as a failsafe port (Calico's default
    // inbound list), checked before any policy.
    let mut m = base_model();
    m.policies.push(only_8080());
    rig.apply(&m);
    rig.expect(
        "only 8080 + failsafe",
        &[
            (NODE_IP, 8080, true),
            (NODE_IP, 22, true),
            (NODE_IP, 9090, false),
            (NODE_IP, 7070, false),
        ],
    );
    // Without the failsafe list, 22 is denied like 9090: the failsafe rule is what let it in.
    let mut no_failsafe = m.clone();
    no_failsafe.failsafe.inbound.clear();
    rig.apply(&no_failsafe);
    rig.expect(
        "no failsafe",
        &[(NODE_IP, 22, false), (NODE_IP, 8080, true)],
    );

    // doNotTrack: allows 7070 (a port no earlier step connected to) both ways before
    // conntrack, although the normal policy above denies it, and leaves no conntrack entry,
    // while tracked 8080 does.
    let mut dnt = Policy::new("edge-untracked", "role == 'edge'");
    dnt.do_not_track = true;
    dnt.apply_on_forward = true;
    dnt.types = vec![Direction::Ingress, Direction::Egress];
    dnt.ingress = vec![tcp_rule(Action::Allow, Some(7070), None)];
    dnt.egress = vec![tcp_rule(Action::Allow, None, Some(7070))];
    let mut m2 = m.clone();
    m2.policies.push(dnt);
    rig.apply(&m2);
    rig.expect(
        "doNotTrack 7070",
        &[
            (NODE_IP, 7070, true),
            (NODE_IP, 8080, true),
            (NODE_IP, 9090, false),
        ],
    );
    assert_eq!(
        rig.conntrack_entries(7070),
        0,
        "untracked flow has a conntrack entry\n{}",
        rig.table()
    );
    assert!(
        rig.conntrack_entries(8080) > 0,
        "the tracked flow should leave a conntrack entry (the check must be able to fail)"
    );

    // applyOnForward: a host endpoint ingress policy denying TCP 80 to the workload applies to
    // traffic forwarded through eth1; 443 to the same workload still flows.
    let mut fwd = Policy::new("edge-forward", "role == 'edge'");
    fwd.apply_on_forward = true;
    fwd.order = Some(10.0);
    fwd.types = vec![Direction::Ingress];
    let mut deny80 = tcp_rule(Action::Deny, Some(80), None);
    deny80.destination.nets = vec![format!("{WL_IP}/32").parse().expect("cidr")];
    fwd.ingress = vec![deny80, Rule::new(Action::Allow)];
    let mut m3 = base_model();
    m3.policies.push(fwd);
    rig.apply(&m3);
    rig.expect(
        "applyOnForward deny 80",
        &[
            (WL_IP, 80, false),
            (WL_IP, 443, true),
            (NODE_IP, 9090, true),
        ],
    );
    // The same policy without applyOnForward does not touch forwarded traffic.
    m3.policies[0].apply_on_forward = false;
    rig.apply(&m3);
    rig.expect("not applyOnForward", &[(WL_IP, 80, true)]);

    // preDNAT: node1 DNATs :8888 to the workload's :80 (a lab-only nat table). A preDNAT
    // policy sees the packet before DNAT, so it matches the original port 8888, and blocks it
    // while the same workload port stays reachable directly.
    rig.node
        .exec_ok(&["nft", "add table ip lab-nat"])
        .expect("nat table");
    rig.node
        .exec_ok(&[
            "nft",
            "add chain ip lab-nat pre { type nat hook prerouting priority -100; }",
        ])
        .expect("nat chain");
    rig.node
        .exec_ok(&[
            "nft",
            &format!("add rule ip lab-nat pre tcp dport 8888 dnat to {WL_IP}:80"),
        ])
        .expect("dnat rule");
    let open = base_model();
    rig.apply(&open);
    rig.expect("DNAT without policy", &[(NODE_IP, 8888, true)]);
    let mut pre = Policy::new("edge-prednat", "role == 'edge'");
    pre.pre_dnat = true;
    pre.apply_on_forward = true;
    pre.types = vec![Direction::Ingress];
    pre.ingress = vec![tcp_rule(Action::Deny, Some(8888), None)];
    let mut m4 = base_model();
    m4.policies.push(pre.clone());
    rig.apply(&m4);
    rig.expect(
        "preDNAT deny 8888",
        &[(NODE_IP, 8888, false), (WL_IP, 80, true)],
    );
    // Matching the post-DNAT port instead would not catch it: a preDNAT deny of 80 to the
    // workload's address never sees that destination on the DNATed flow (Calico's reason for
    // preDNAT), and blocks only the direct path.
    pre.ingress = vec![tcp_rule(Action::Deny, Some(80), None)];
    let mut m5 = base_model();
    m5.policies.push(pre);
    rig.apply(&m5);
    rig.expect(
        "preDNAT deny 80 sees original port",
        &[(NODE_IP, 8888, true), (WL_IP, 80, false)],
    );

    // Egress from the host: a policy with no egress rule drops what node1 sends out of eth1,
    // except Calico's outbound failsafe ports (TCP 179 here).
    let mut egress = Policy::new("edge-out", "role == 'edge'");
    egress.types = vec![Direction::Egress];
    let mut m6 = base_model();
    m6.policies.push(egress);
    rig.apply(&m6);
    let client_ip = Ipv4Addr::new(192, 168, 33, 12);
    let out_9090 = tcp_ok(&rig.node, client_ip, 9090);
    let out_179 = tcp_ok(&rig.node, client_ip, 179);
    assert!(
        !out_9090 && out_179,
        "host egress: 9090 allowed={out_9090} (want false), failsafe 179 allowed={out_179} (want true)\n{}",
        rig.table()
    );
    // A host endpoint with no policy at all is default-deny too (Calico); without the host
    // endpoint the host's traffic is not policed.
    rig.apply(&base_model());
    assert!(
        !tcp_ok(&rig.node, client_ip, 9090),
        "host endpoint without policy"
    );
    rig.apply(&PolicyModel {
        host_endpoints: Vec::new(),
        ..base_model()
    });
    assert!(tcp_ok(&rig.node, client_ip, 9090), "no host endpoint");

    // `interfaceName: "*"`: the host endpoint covers every interface but loopback and
    // workloads; eth1 included.
    let mut all = m.clone();
    all.host_endpoints[0].interface_name = Some("*".into());
    rig.apply(&all);
    rig.expect(
        "interface *",
        &[
            (NODE_IP, 8080, true),
            (NODE_IP, 22, true),
            (NODE_IP, 9090, false),
        ],
    );

    rig.dp.remove().expect("remove");
}
