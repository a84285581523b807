//! calico-node agents as real processes in lab namespaces, with a real etcd: the node-to-node
//! mesh, routes for IPAM blocks learned over BGP, node removal, and a SIGKILLed or SIGTERMed
//! agent that restarts while traffic flows.
//!
//! Topology: one LAN (192.168.33.0/24, every host's `eth1`), etcd on its own host
//! (192.168.33.2), agents on node1..node3 (192.168.33.11..13). The pool is 10.65.0.0/16 so no
//! block can overlap the LAN. The test process itself talks to etcd only from inside the etcd
//! host's namespace (never from the host namespace).
//!
//! Needs root and the binaries `target/debug/calico-node` and `target/debug/calicoctl`
//! (`cargo build -p calico-rs --bin calico-node --bin calicoctl`); without them a test says so
//! and fails.

mod cluster_support;
use cluster_support::*;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use calico_api::{ObjectMeta, Profile, ProfileSpec, WorkloadEndpoint, WorkloadEndpointSpec};
use calico_datastore::Datastore;
use calico_ipam::Ipam;
use calico_lab::Host;

impl Cluster {
    /// Waits until node `i`'s status shows an Established mesh session to every address.
    fn wait_established(&self, i: usize, peers: &[IpAddr]) {
        let ok = wait_for(WAIT, || {
            let status = self.node_status(i);
            peers
                .iter()
                .all(|p| {
                    status.lines().any(|l| {
                        l.contains(&format!("| {p} "))
                            && l.contains("node-to-node mesh")
                            && l.contains("| up ")
                            && l.contains("Established")
                    })
                })
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "node{i} never had Established sessions to {peers:?}:\n{}\nlog:\n{}",
            self.node_status(i),
            self.agent_log(i)
        );
    }
}

fn blackhole(block: &str) -> String {
    format!("blackhole {block} proto bird")
}

#[test]
fn two_agents_mesh_and_route_each_others_blocks() {
    let mut c = Cluster::new(2);
    c.start_agent(1);
    c.start_agent(2);
    let (ip1, ip2) = (c.node(1).host.ip(), c.node(2).host.ip());
    c.wait_established(1, &[ip2]);
    c.wait_established(2, &[ip1]);
    let status = c.node_status(1);
    assert!(
        status.starts_with("Calico process is running.\n\nIPv4 BGP status\n"),
        "{status}"
    );

    let (_, block1) = c.allocate("node1");
    let (_, block2) = c.allocate("node2");
    assert_ne!(block1, block2);
    c.wait_routes(1, &[blackhole(&block1), via(&block2, ip2)], &[]);
    c.wait_routes(2, &[blackhole(&block2), via(&block1, ip1)], &[]);
}

#[test]
fn a_bgp_filter_on_an_explicit_peer_stops_the_export_until_it_is_removed() {
    let mut c = Cluster::new(2);
    let (ip1, ip2) = (c.node(1).host.ip(), c.node(2).host.ip());
    // No mesh: two node-specific peers, node1's with an export filter rejecting all IPv4.
    let peer1 = |filters: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: node1-to-node2\n\
             spec:\n  node: node1\n  peerIP: {ip2}\n  asNumber: 64512\n  filters: {filters}\n"
        )
    };
    let peer2 = format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: node2-to-node1\n\
         spec:\n  node: node2\n  peerIP: {ip1}\n  asNumber: 64512\n"
    );
    c.apply_yaml(&[
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
             spec:\n  nodeToNodeMeshEnabled: false\n",
        "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: export-nothing\n\
             spec:\n  exportV4:\n    - action: Reject\n",
        &peer1("[export-nothing]"),
        &peer2,
    ]);
    c.start_agent(1);
    c.start_agent(2);
    let established = |i: usize, peer: IpAddr| {
        wait_for(WAIT, || {
            let st = c.node_status(i);
            st.lines()
                .any(|l| {
                    l.contains(&format!("| {peer} "))
                        && l.contains("node specific")
                        && l.contains("Established")
                })
                .then_some(())
        })
        .unwrap_or_else(|| panic!("node{i}: no session to {peer}:\n{}", c.agent_log(i)))
    };
    established(1, ip2);
    established(2, ip1);

    let (_, block1) = c.allocate("node1");
    let (_, block2) = c.allocate("node2");
    // node2 exports to node1 (no filter on that side) ...
    c.wait_routes(1, &[blackhole(&block1), via(&block2, ip2)], &[]);
    c.wait_routes(2, &[blackhole(&block2)], &[]);
    // ... while node1's filter keeps its block from node2, well after routes have flowed.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !c.routes(2).contains(&via(&block1, ip1)),
        "node1 exported its block through a Reject-all filter: {:?}\nnode1 log:\n{}",
        c.routes(2),
        c.agent_log(1)
    );
    // Removing the filter lets the block through: the filter was what held it back.
    c.apply_yaml(&[&peer1("[]")]);
    c.wait_routes(2, &[via(&block1, ip1)], &[]);
}

#[test]
fn three_agents_full_mesh_and_a_deleted_node_is_withdrawn() {
    let mut c = Cluster::new(3);
    for i in 1..=3 {
        c.start_agent(i);
    }
    let ips: Vec<IpAddr> = (1..=3).map(|i| c.node(i).host.ip()).collect();
    for i in 1..=3 {
        let others: Vec<IpAddr> = ips
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i - 1)
            .map(|(_, a)| *a)
            .collect();
        c.wait_established(i, &others);
    }
    let blocks: Vec<String> = (1..=3).map(|i| c.allocate(&format!("node{i}")).1).collect();
    for i in 1..=3 {
        let mut want = vec![blackhole(&blocks[i - 1])];
        for j in 1..=3 {
            if j != i {
                want.push(via(&blocks[j - 1], ips[j - 1]));
            }
        }
        c.wait_routes(i, &want, &[]);
    }

    // Remove node3 as an operator would: stop its agent, delete the Node, release its blocks.
    if let Some(mut agent) = c.nodes[2].agent.take() {
        agent.kill();
    }
    let ctl = binary("calicoctl");
    let endpoint = format!("ETCD_ENDPOINTS={}", c.etcd.endpoint());
    let out = c
        .etcd_host
        .exec(&[
            "env",
            "DATASTORE_TYPE=etcdv3",
            &endpoint,
            &ctl.display().to_string(),
            "delete",
            "node",
            "node3",
        ])
        .expect("calicoctl delete node");
    assert!(
        out.status.success(),
        "calicoctl delete node node3: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    c.with_datastore(async |_, ipam: &Ipam| {
        ipam.release_by_handle("wl-node3")
            .await
            .expect("release node3's address");
        let n = ipam
            .release_host_affinities("node3")
            .await
            .expect("release node3's affinities");
        assert_eq!(n, 1, "node3 had one block");
    });
    let gone = via(&blocks[2], ips[2]);
    for i in 1..=2 {
        c.wait_routes(i, &[blackhole(&blocks[i - 1])], std::slice::from_ref(&gone));
        let status = c.node_status(i);
        assert!(
            !status.contains(&format!("| {} ", ips[2])),
            "node{i} still has a session to node3:\n{status}"
        );
    }
}

/// The profile every test workload uses: allow all traffic in and out.
const ALLOW_ALL: &str = "lab-allow-all";

/// A workload namespace behind a veth on `node`, with address `ip`, plumbed as Calico's CNI
/// plugin does (host side `cali…` with proxy ARP, workload default route via 169.254.1.1),
/// and its WorkloadEndpoint in the datastore with an allow-all profile.
fn add_workload(c: &Cluster, lab_name: &str, node: usize, ip: IpAddr) -> Host {
    let IpAddr::V4(ip4) = ip else {
        panic!("workloads here are IPv4")
    };
    let wl = c
        .lab
        .add_workload(&c.node(node).host, lab_name, ip4)
        .expect("workload plumbing");
    let iface = format!("cali{lab_name}");
    let node_name = c.node(node).name.clone();
    let wep_name = format!("{node_name}-libnetwork-libnetwork-{lab_name}");
    c.with_datastore(async move |ds: &Datastore, _| {
        let spec = WorkloadEndpointSpec {
            orchestrator: Some("libnetwork".into()),
            workload: Some("libnetwork".into()),
            node: Some(node_name),
            endpoint: Some(lab_name.to_string()),
            interface_name: Some(iface),
            ip_networks: vec![format!("{ip}/32")],
            profiles: vec![ALLOW_ALL.into()],
            ..Default::default()
        };
        // The agent enforces policy: without a profile allowing it, workload traffic drops.
        let allow: ProfileSpec = serde_json::from_value(serde_json::json!({
            "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}],
        }))
        .expect("profile spec");
        ds.apply(&Profile::new(ALLOW_ALL, allow))
            .await
            .expect("apply Profile");
        let mut wep = WorkloadEndpoint::new(&wep_name, spec);
        wep.metadata = ObjectMeta {
            name: Some(wep_name.clone()),
            namespace: Some("default".into()),
            ..Default::default()
        };
        ds.create(&wep).await.expect("create WorkloadEndpoint");
    });
    wl
}

/// Samples `ip -4 route` on every host every 20 ms while running; records each baseline line
/// found missing.
fn route_sampler(
    hosts: Vec<(Host, BTreeSet<String>)>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let mut samples = 0;
        let mut missing = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(50);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            for (h, baseline) in &hosts {
                let now = routes_of(h);
                for line in baseline.difference(&now) {
                    missing.push(format!("{}: {line}", h.name()));
                }
            }
            samples += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        (samples, missing)
    })
}

#[test]
fn sigkilled_agent_restarts_without_losing_a_route_or_a_packet() {
    restart_keeps_routes_and_packets(libc::SIGKILL);
}

/// SIGTERM (what the kubelet sends on a rolling update) stops the agent at once with exit code
/// 0, leaving its routes in the kernel and closing its BGP session without a NOTIFICATION, so
/// the peer keeps node1's routes as stale until the agent is back: no packet is lost.
#[test]
fn sigtermed_agent_exits_0_and_its_peer_keeps_its_routes_until_it_returns() {
    restart_keeps_routes_and_packets(libc::SIGTERM);
}

/// Stops node1's agent with `signal` while wl1 pings wl2 every 10 ms and routes are sampled
/// every 20 ms on both nodes, restarts it, and asserts that no route went missing, no route
/// changed and no packet was lost.
fn restart_keeps_routes_and_packets(signal: i32) {
    let mut c = Cluster::new(2);
    c.start_agent(1);
    c.start_agent(2);
    let (ip1, ip2) = (c.node(1).host.ip(), c.node(2).host.ip());
    c.wait_established(1, &[ip2]);
    c.wait_established(2, &[ip1]);
    let (wl1_ip, block1) = c.allocate("node1");
    let (wl2_ip, block2) = c.allocate("node2");
    let wl1 = add_workload(&c, "wl1", 1, wl1_ip);
    let _wl2 = add_workload(&c, "wl2", 2, wl2_ip);
    let local1 = format!("{wl1_ip} dev caliwl1 scope link");
    let local2 = format!("{wl2_ip} dev caliwl2 scope link");
    c.wait_routes(1, &[blackhole(&block1), via(&block2, ip2), local1], &[]);
    c.wait_routes(2, &[blackhole(&block2), via(&block1, ip1), local2], &[]);
    assert!(
        wl1.wait_ping(&wl2_ip.to_string(), Duration::from_secs(10))
            .expect("ping"),
        "wl1 cannot reach wl2 before the restart"
    );

    let before = [c.routes(1), c.routes(2)];
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = route_sampler(
        vec![
            (c.node(1).host.clone(), before[0].clone()),
            (c.node(2).host.clone(), before[1].clone()),
        ],
        stop.clone(),
    );
    // 1500 echo requests, one every 10 ms: about 15 s of traffic around the restart.
    let mut ping = Command::new("ip");
    ping.args([
        "netns",
        "exec",
        wl1.netns(),
        "ping",
        "-n",
        "-q",
        "-i",
        "0.01",
        "-c",
        "1500",
        "-W",
        "1",
        &wl2_ip.to_string(),
    ]);
    let ping = std::thread::spawn(move || ping.output());

    std::thread::sleep(Duration::from_secs(2));
    let pid = c.node(1).agent.as_ref().and_then(|a| a.pid()).expect("pid");
    // SAFETY: kill(2) on the agent this test started; no memory is touched.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
    let killed_at = Instant::now();
    if let Some(mut old) = c.nodes[0].agent.take() {
        if signal == libc::SIGTERM {
            let status = wait_for(Duration::from_secs(10), || old.try_wait());
            let log = old.log();
            let status =
                status.unwrap_or_else(|| panic!("SIGTERM did not stop the agent in 10 s:\n{log}"));
            assert_eq!(
                status.code(),
                Some(0),
                "exit status on SIGTERM: {status:?}\n{log}"
            );
            assert!(
                log.contains("stopping; the dataplane stays in place"),
                "the agent did not say how it stopped:\n{log}"
            );
            eprintln!(
                "node1 agent exited 0 {:?} after SIGTERM",
                killed_at.elapsed()
            );
        }
        // Reaps the stopped agent (kill is idempotent on an exited process).
        old.kill();
    }
    c.start_agent(1);
    c.wait_established(1, &[ip2]);
    c.wait_established(2, &[ip1]);
    eprintln!(
        "node1 agent back and Established {:?} after signal {signal}",
        killed_at.elapsed()
    );

    let out = ping.join().expect("ping thread").expect("ping ran");
    stop.store(true, Ordering::SeqCst);
    let (samples, missing) = sampler.join().expect("sampler");
    let after = [c.routes(1), c.routes(2)];
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let restart_log = c.agent_log(1);

    eprintln!("ping during the restart: {}", summary.trim());
    let peer_log = c.agent_log(2);
    for line in peer_log
        .lines()
        .filter(|l| l.contains("restart") || l.contains("stale") || l.contains("End-of-RIB"))
    {
        eprintln!("node2: {line}");
    }

    assert!(
        restart_log.contains("restarting gracefully"),
        "the restarted agent did not see its own routes in the kernel:\n{restart_log}"
    );
    assert!(
        peer_log.contains("peer restarting, keeping its routes as stale"),
        "node2 did not hold node1's routes through graceful restart:\n{peer_log}"
    );
    assert!(samples > 10, "route sampler took only {samples} samples");
    assert!(
        missing.is_empty(),
        "routes missing during the restart ({samples} samples): {missing:?}\nnode1 log:\n{restart_log}"
    );
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(b, a, "node{}'s routes changed across the restart", i + 1);
    }
    assert!(
        summary.contains("1500 packets transmitted, 1500 received"),
        "packets lost while node1's agent restarted:\n{summary}\nnode1 log after restart:\n{restart_log}"
    );
}

/// Felix's environment variables reach the real agent's policy dataplane, over the datastore:
/// with FelixConfiguration `default` saying `defaultEndpointToHostAction: Drop`, a workload
/// cannot ping its own host; the same agent restarted with
/// `FELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT` (as Calico's manifests set it) lets it. A value
/// that does not parse stops the agent at start, naming the variable.
#[test]
fn felix_environment_variable_overrides_the_datastore_in_the_enforced_policy() {
    let mut c = Cluster::new(1);
    c.with_datastore(async |ds: &Datastore, _| {
        let doc = serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"defaultEndpointToHostAction": "Drop"},
        });
        ds.dynamic()
            .apply(
                &calico_datastore::KindRef::of::<calico_api::FelixConfiguration>(),
                doc,
            )
            .await
            .expect("apply FelixConfiguration");
    });
    c.start_agent(1);
    let (wl_ip, block) = c.allocate("node1");
    let wl = add_workload(&c, "wl1", 1, wl_ip);
    c.wait_routes(
        1,
        &[blackhole(&block), format!("{wl_ip} dev caliwl1 scope link")],
        &[],
    );
    let host_ip = c.node(1).host.ip().to_string();
    let ruleset = |c: &Cluster| {
        c.node(1)
            .host
            .exec_ok(&["nft", "list", "table", "inet", "calico-rs"])
            .unwrap_or_default()
    };
    let enforced = wait_for(WAIT, || {
        let r = ruleset(&c);
        (r.contains("caliwl1") && r.contains("DefaultEndpointToHostAction Drop")).then_some(())
    });
    assert!(
        enforced.is_some(),
        "the Drop program never reached nftables:\n{}",
        ruleset(&c)
    );
    assert!(
        !wl.wait_ping(&host_ip, Duration::from_secs(3))
            .expect("ping"),
        "the workload reached its host although defaultEndpointToHostAction is Drop"
    );

    if let Some(mut old) = c.nodes[0].agent.take() {
        old.stop(Duration::from_secs(10));
    }
    c.start_agent_with(1, &[("FELIX_DEFAULTENDPOINTTOHOSTACTION", "ACCEPT")]);
    let accepted = wait_for(WAIT, || {
        let r = ruleset(&c);
        (r.contains("workload egress policy decides")
            && !r.contains("DefaultEndpointToHostAction Drop"))
        .then_some(())
    });
    assert!(
        accepted.is_some(),
        "FELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT did not reach nftables:\n{}\nlog:\n{}",
        ruleset(&c),
        c.agent_log(1)
    );
    assert!(
        wl.wait_ping(&host_ip, Duration::from_secs(10))
            .expect("ping"),
        "the workload cannot reach its host with FELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT"
    );

    // A bad value: the agent exits non-zero at start, naming the variable.
    if let Some(mut old) = c.nodes[0].agent.take() {
        old.stop(Duration::from_secs(10));
    }
    // The check comes before any datastore connection: no endpoint is needed.
    let bin = binary("calico-node");
    let out = c
        .node(1)
        .host
        .exec_timeout(
            &[
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "NODENAME=node1",
                "FELIX_DEFAULTENDPOINTTOHOSTACTION=allow",
                bin.to_str().expect("utf-8 path"),
            ],
            Duration::from_secs(20),
        )
        .expect("run calico-node");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a bad FELIX_ value was accepted: {err}"
    );
    assert!(
        err.contains("environment variable FELIX_DEFAULTENDPOINTTOHOSTACTION")
            && err.contains("\"allow\" is not Drop, Return or Accept"),
        "the refusal does not name the variable: {err}"
    );
}
