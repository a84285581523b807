//! Policy benchmarks (ignored by default; `scripts/bench-policy.sh` runs them in release mode
//! and collects the `BENCH|` lines into docs/BENCHMARKS.md). Everything runs inside lab
//! namespaces: etcd listens in the node's namespace, the table is the node's.
//!
//! `policy_scale` (per scale: endpoints × rules), side by side:
//! - write → enforced: a GlobalNetworkPolicy gets one more rule in etcd; the agent's policy
//!   path (an etcd watch on `/calico/` triggering `PolicySync::sync`: list, convert, compile,
//!   diff, one nf_tables transaction) runs in this process; the clock stops when the new
//!   rule's comment is visible in the kernel (the policy's chain polled over netlink with a
//!   dump the kernel filters to that chain). The real agent adds its 20 ms trigger coalescing.
//! - one-rule change: `PolicyDataplane::apply_changes` between the program with and without
//!   one rule (render, diff, kernel transaction), against a full `apply` of the same program;
//! - the floor: `nft -f` of the same ruleset (`nft list table` output, prefixed with *delete
//!   table* so it replaces the table in one transaction), and our own full apply over netlink
//!   into an empty table (the table removed first, untimed); next to it, the same apply onto
//!   the identical table already there (adopted and rewritten in place, as after a restart).
//!
//! `policy_throughput`: iperf3 between two workloads on two lab hosts (routed over the lab
//! LAN), with no table, with 1,000 rules in force on both hosts, and host to host.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use calico_api::{
    GlobalNetworkPolicy, GlobalNetworkPolicySpec, ObjectMeta, WorkloadEndpoint,
    WorkloadEndpointSpec,
};
use calico_dataplane::sysctl::{self, Sysctl};
use calico_dataplane::{Netlink, RTPROT_BOOT, Route};
use calico_datastore::{Datastore, EtcdClient, EtcdConfig};
use calico_docker::naming;
use calico_lab::etcd::{Etcd, EtcdOptions};
use calico_lab::{Host, Lab, iperf};
use calico_nftables::render::render_spec_from;
use calico_nftables::render::rule_list_chain;
use calico_nftables::table::{diff, to_batch};
use calico_nftables::{
    Applied, NftSocket, PolicyDataplane, RenderSettings, TABLE_NAME, render_spec,
};
use calico_node::policy::{PolicySync, compile_with, read_resources};
use calico_policy::felix::FelixPolicySettings;
use calico_policy::model::{self as m, Direction};
use calico_policy::program::{HostProgram, RuleListId};
use futures::StreamExt;

const NODE: &str = "node1";
const NODE_IP: &str = "192.168.33.11";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn wep(i: usize) -> WorkloadEndpoint {
    let id = format!("{i:032x}");
    let name = naming::workload_endpoint_name(NODE, &id).expect("wep name");
    let mut w = WorkloadEndpoint::new(
        &name,
        WorkloadEndpointSpec {
            orchestrator: Some(naming::ORCHESTRATOR.into()),
            workload: Some(naming::WORKLOAD.into()),
            node: Some(NODE.into()),
            endpoint: Some(id.clone()),
            ip_networks: vec![format!(
                "10.{}.{}.{}/32",
                64 + i / 65536,
                (i / 256) % 256,
                i % 256
            )],
            interface_name: Some(naming::host_veth_name(&id).expect("veth name")),
            ..Default::default()
        },
    );
    w.metadata = ObjectMeta {
        name: Some(name),
        namespace: Some(naming::WEP_NAMESPACE.into()),
        labels: Some(
            [
                (
                    "projectcalico.org/namespace",
                    naming::WEP_NAMESPACE.to_string(),
                ),
                (
                    "projectcalico.org/orchestrator",
                    naming::ORCHESTRATOR.to_string(),
                ),
                ("group", format!("g{}", i % 10)),
                ("role", format!("r{}", i % 20)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ),
        ..Default::default()
    };
    w
}

fn rule_json(j: usize) -> serde_json::Value {
    serde_json::json!({"action": "Allow", "protocol": "TCP",
        "source": {"selector": format!("role == 'r{}'", j % 20)},
        "destination": {"ports": [1000 + (j % 60000)]}})
}

/// `rules` rules in policies of at most 100 rules; with 10 policies or more each selects a
/// tenth of the endpoints (`group`), otherwise all of them.
fn policies(rules: usize) -> Vec<GlobalNetworkPolicy> {
    let n = rules.div_ceil(100).max(1);
    let per = rules / n;
    (0..n)
        .map(|i| {
            let selector = if n < 10 {
                "all()".to_string()
            } else {
                format!("group == 'g{}'", i % 10)
            };
            let spec: GlobalNetworkPolicySpec = serde_json::from_value(serde_json::json!({
                "order": i, "selector": selector, "types": ["Ingress"],
                "ingress": (0..per).map(|j| rule_json(i * per + j)).collect::<Vec<_>>(),
            }))
            .expect("policy spec");
            let name = format!("bench-{i}");
            let mut p = GlobalNetworkPolicy::new(&name, spec);
            p.metadata.name = Some(name);
            p
        })
        .collect()
}

fn chain_of(program: &HostProgram, policy: &str) -> String {
    let id = program
        .rule_lists
        .keys()
        .find(|id| {
            matches!(id, RuleListId::Policy { name, direction: Direction::Ingress, .. } if name.ends_with(policy))
        })
        .expect("policy chain");
    rule_list_chain(id)
}

/// Polls the chain over netlink until a rule comment ends with `rule <index>`.
fn wait_for_rule(ns: &std::path::Path, chain: &str, index: usize, t0: Instant) -> Duration {
    let mut s = NftSocket::open_in(ns).expect("socket");
    let want = format!(" rule {index}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let comments = s.rule_comments(TABLE_NAME, chain).expect("dump chain");
        if comments.iter().any(|c| c.ends_with(&want)) {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    panic!("rule {index} of {chain} never appeared");
}

async fn connect(ep: &str) -> Datastore {
    Datastore::connect(&EtcdConfig::new([ep.to_string()]))
        .await
        .expect("connect etcd")
}

fn scale(endpoints: usize, rules: usize) {
    let lab = Lab::new().expect("lab");
    let node = lab.add_host(NODE, &format!("{NODE_IP}/24")).expect("node");
    let etcd = Etcd::start(EtcdOptions::in_netns(
        node.netns_path(),
        NODE_IP.parse().expect("ip"),
    ))
    .expect("etcd");
    let ep = etcd.endpoint();
    let ep = &ep;
    let node_path = node.netns_path();
    let node_path = &node_path;

    // Load, first sync, then the write → enforced loop with a watch-triggered sync.
    let (first_sync, program_a, program_b, write_to_enforced) = node
        .run_async(move || async move {
            let ds = connect(ep).await;
            for i in 0..endpoints {
                ds.create(&wep(i)).await.expect("wep");
            }
            let pols = policies(rules);
            for p in &pols {
                ds.create(p).await.expect("policy");
            }
            let mut sync = PolicySync::new().expect("dataplane");
            let t = Instant::now();
            assert!(sync.sync(&ds, NODE).await.expect("first sync"));
            let first_sync = t.elapsed();
            let program_a = sync.applied().expect("applied").clone();

            // The same resources with one more rule in bench-0: program B.
            let mut res = read_resources(&ds).await.expect("resources");
            let p0 = res
                .global_network_policies
                .iter_mut()
                .find(|p| p.metadata.name.as_deref() == Some("bench-0"))
                .expect("bench-0");
            p0.spec
                .ingress
                .push(serde_json::from_value(rule_json(59_999)).expect("rule"));
            let program_b =
                compile_with(&res, &FelixPolicySettings::default(), NODE).expect("compile");

            // The agent's loop: any change under /calico/ triggers a sync.
            let kv = EtcdClient::connect(&EtcdConfig::new([ep.to_string()]))
                .await
                .expect("kv");
            let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(64);
            let watcher = tokio::spawn(async move {
                let mut events = kv.watch("/calico/", 0);
                while events.next().await.is_some() {
                    if tx.send(()).await.is_err() {
                        return;
                    }
                }
            });
            let ds2 = connect(ep).await;
            let syncer = tokio::spawn(async move {
                while rx.recv().await.is_some() {
                    while rx.try_recv().is_ok() {}
                    sync.sync(&ds2, NODE).await.expect("sync");
                }
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
            let chain = chain_of(&program_a, "bench-0");
            let mut samples = Vec::new();
            for k in 0..5 {
                let mut p0 = ds
                    .get::<GlobalNetworkPolicy>(None, "bench-0")
                    .await
                    .expect("get")
                    .expect("bench-0");
                p0.spec
                    .ingress
                    .push(serde_json::from_value(rule_json(50_000 + k)).expect("rule"));
                let index = p0.spec.ingress.len() - 1;
                let t0 = Instant::now();
                ds.update(&p0).await.expect("update");
                let (chain, path) = (chain.clone(), node_path.clone());
                let d =
                    tokio::task::spawn_blocking(move || wait_for_rule(&path, &chain, index, t0))
                        .await
                        .expect("poll");
                samples.push(d);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            watcher.abort();
            syncer.abort();
            (first_sync, program_a, program_b, median(samples))
        })
        .expect("run in node");

    let kernel_rules = render_spec(&program_a, &RenderSettings::default())
        .expect("render")
        .rule_count();

    // Floor: nft -f of the same table, replacing it in one transaction.
    let listing = node
        .exec_ok(&["nft", "list", "table", "inet", TABLE_NAME])
        .expect("nft list");
    // nft's parser takes no ':' in chain names (quoted or not), which ours have (`pol:i:…`):
    // the file renames them ('_'), same table otherwise.
    let names = regex::Regex::new(r"\b(chain|jump|goto) ([^\s{]*:[^\s{]*)").expect("regex");
    let listing = names.replace_all(&listing, |c: &regex::Captures| {
        format!("{} {}", &c[1], c[2].replace(':', "_"))
    });
    let file = lab.dir().join("ruleset.nft");
    std::fs::write(
        &file,
        format!("table inet {TABLE_NAME}\ndelete table inet {TABLE_NAME}\n{listing}"),
    )
    .expect("write ruleset");
    let file = file.to_string_lossy().into_owned();
    let nft_f = median(
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let out = node.exec(&["nft", "-f", &file]).expect("nft -f");
                assert!(
                    out.status.success(),
                    "nft -f: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                t.elapsed()
            })
            .collect(),
    );

    // Our full apply over netlink into an EMPTY table (the table removed first, untimed): a
    // fresh agent on a node without our table. Then the same apply onto the identical table
    // a previous run left (a fresh dataplane adopts it and rewrites it in place: the restart
    // path), as its own column. The same `PolicyDataplane` would make a second apply of the
    // same program a no-op, so each sample uses a new one.
    let full_empty = median(
        (0..3)
            .map(|_| {
                let mut dp = PolicyDataplane::new_in(&node.netns_path()).expect("dataplane");
                dp.remove().expect("remove table");
                let t = Instant::now();
                let messages = dp.apply(&program_a).expect("apply");
                let d = t.elapsed();
                assert!(
                    messages > kernel_rules,
                    "a whole table: {messages} messages"
                );
                d
            })
            .collect(),
    );
    let in_place = median(
        (0..3)
            .map(|_| {
                let mut dp = PolicyDataplane::new_in(&node.netns_path()).expect("dataplane");
                let t = Instant::now();
                dp.apply(&program_a).expect("apply");
                t.elapsed()
            })
            .collect(),
    );
    let mut dp = PolicyDataplane::new_in(&node.netns_path()).expect("dataplane");
    dp.apply(&program_a).expect("apply");
    let mut one = Vec::new();
    let mut messages = 0;
    for _ in 0..5 {
        for p in [&program_b, &program_a] {
            let t = Instant::now();
            let r = dp.apply_changes(p).expect("apply_changes");
            one.push(t.elapsed());
            assert!(!r.full && r.chains.len() == 1, "one chain: {:?}", r.chains);
            messages = r.messages;
        }
    }
    let one = median(one);
    // Where the one-rule change's time goes: rendering the program and diffing it against
    // the last table (our CPU, grows with the table), and the kernel transaction alone.
    let mut cpu = Vec::new();
    let mut batches = Vec::new();
    for (from, to) in [(&program_a, &program_b), (&program_b, &program_a)]
        .into_iter()
        .cycle()
        .take(10)
    {
        let from_spec = render_spec(from, &RenderSettings::default()).expect("render");
        // What apply_changes does: render reusing the last table, diff, encode.
        let t = Instant::now();
        let to_spec = render_spec_from(to, &RenderSettings::default(), Some((from, &from_spec)))
            .expect("render");
        let ops = diff(&Applied::Exactly(from_spec.clone()), &to_spec);
        let batch = to_batch(TABLE_NAME, &ops);
        cpu.push(t.elapsed());
        batches.push(batch);
    }
    let mut kernel = Vec::new();
    let mut socket = NftSocket::open_in(&node.netns_path()).expect("socket");
    // batches alternate A→B and B→A, starting from the table at A.
    for b in &batches {
        let t = Instant::now();
        socket.send(b).expect("send");
        kernel.push(t.elapsed());
    }
    let (cpu, kernel) = (median(cpu), median(kernel));
    println!(
        "BENCH|scale|{endpoints}|{rules}|{kernel_rules}|{}|{}|{}|{}|{}|{}|{}|{}|{messages}",
        ms(write_to_enforced),
        ms(first_sync),
        ms(full_empty),
        ms(in_place),
        ms(nft_f),
        ms(one),
        ms(cpu),
        ms(kernel)
    );
    drop(etcd);
}

#[test]
#[ignore = "benchmark: scripts/bench-policy.sh"]
fn policy_scale() {
    println!(
        "BENCH|header|endpoints|policy rules|kernel rules|write → enforced (ms)|first sync (ms)|full apply into an empty table, netlink (ms)|apply onto the identical table, in place (ms)|nft -f floor (ms)|one-rule change (ms)|of which render + diff (ms)|of which kernel (ms)|messages"
    );
    // BENCH_QUICK=1: the smallest scale only (a smoke test of the benchmark itself).
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    for endpoints in [100, 1000] {
        for rules in [10, 1000, 10_000] {
            if !quick || (endpoints, rules) == (100, 10) {
                scale(endpoints, rules);
            }
        }
    }
}

struct Workload {
    ns: Host,
    ip: Ipv4Addr,
    iface: String,
}

async fn plumb(lab: &Lab, host: &Host, name: &str, ip: Ipv4Addr) -> Workload {
    let id = format!("{:032x}", u32::from(ip));
    let iface = naming::host_veth_name(&id).expect("veth name");
    let ns = lab.add_namespace(name).expect("workload namespace");
    common::plumb_workload(host, &ns, &iface, ip).await;
    Workload { ns, ip, iface }
}

/// 1,000 ingress rules on every endpoint: 999 that do not match the iperf3 flow, then one
/// that allows it; egress falls to a profile that allows all.
fn thousand_rules(w1: &Workload, w2: &Workload) -> m::PolicyModel {
    let mut model = m::PolicyModel::default();
    for (i, (w, node)) in [(w1, "node1"), (w2, "node2")].into_iter().enumerate() {
        model.workload_endpoints.push(m::WorkloadEndpoint {
            name: format!("w{i}"),
            node: node.into(),
            namespace: "default".into(),
            interface_name: w.iface.clone(),
            labels: m::LabelMap::from([("role".to_string(), "bench".to_string())]),
            ips: vec![format!("{}/32", w.ip).parse().expect("ip")],
            profiles: vec!["allow-all".into()],
            ..Default::default()
        });
    }
    let allow_all = m::Profile {
        name: "allow-all".into(),
        labels_to_apply: m::LabelMap::new(),
        ingress: Vec::new(),
        egress: vec![m::Rule::new(m::Action::Allow)],
    };
    model.profiles.push(allow_all);
    let mut p = m::Policy::new("bench", "all()");
    for j in 0..999 {
        let mut r = m::Rule::new(m::Action::Allow);
        r.protocol = Some("TCP".into());
        r.source.selector = format!("role == 'r{}'", j % 20);
        r.destination.ports = vec![m::Port::number(10_000 + j as u16)];
        p.ingress.push(r);
    }
    let mut r = m::Rule::new(m::Action::Allow);
    r.protocol = Some("TCP".into());
    r.destination.ports = vec![m::Port::number(5201)];
    p.ingress.push(r);
    model.policies.push(p);
    model
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-policy.sh"]
async fn policy_throughput() {
    let lab = Lab::new().expect("lab");
    let n1 = lab.add_host("node1", "192.168.33.11/24").expect("node1");
    let n2 = lab.add_host("node2", "192.168.33.12/24").expect("node2");
    for n in [&n1, &n2] {
        sysctl::apply(Some(&n.netns_path()), &[Sysctl::ipv4_forwarding(true)]).expect("forwarding");
    }
    let w1 = plumb(&lab, &n1, "w1", Ipv4Addr::new(10, 65, 1, 1)).await;
    let w2 = plumb(&lab, &n2, "w2", Ipv4Addr::new(10, 65, 2, 1)).await;
    for (n, dst, via) in [(&n1, w2.ip, "192.168.33.12"), (&n2, w1.ip, "192.168.33.11")] {
        Netlink::connect_in(&n.netns_path())
            .expect("netlink")
            .replace_route(&Route::gateway(
                format!("{dst}/32").parse().expect("dst"),
                via.parse().expect("via"),
                None,
                RTPROT_BOOT,
            ))
            .await
            .expect("route to the remote workload");
    }
    assert!(
        w1.ns
            .wait_ping(&w2.ip.to_string(), Duration::from_secs(10))
            .expect("ping")
    );

    let _other_server = w2
        .ns
        .serve_tcp("0.0.0.0".parse().expect("any"), &[5202])
        .expect("tcp server");
    let (other_port, probe_wait) = (
        std::net::SocketAddr::new(w2.ip.into(), 5202),
        Duration::from_secs(1),
    );
    assert!(
        w1.ns.tcp_probe(other_port, probe_wait).expect("tcp probe"),
        "port 5202 is reachable before the policy"
    );
    let host = iperf::throughput(&n2, &n1, n2.ip(), 5201).expect("iperf3 host to host");
    let none = iperf::throughput(&w2.ns, &w1.ns, w2.ip.into(), 5201).expect("iperf3, no policy");
    let model = thousand_rules(&w1, &w2);
    let mut dps = Vec::new();
    let mut kernel_rules = 0;
    for (n, name) in [(&n1, "node1"), (&n2, "node2")] {
        let program = calico_policy::compile(&model, Some(name)).expect("compile");
        kernel_rules = render_spec(&program, &RenderSettings::default())
            .expect("render")
            .rule_count();
        let mut dp = PolicyDataplane::new_in(&n.netns_path()).expect("dataplane");
        dp.apply(&program).expect("apply");
        dps.push(dp);
    }
    let with_policy =
        iperf::throughput(&w2.ns, &w1.ns, w2.ip.into(), 5201).expect("iperf3, 1,000 rules");
    // The policy is really in force: a port it does not allow (served, reached before) is
    // dropped.
    assert!(
        !w1.ns.tcp_probe(other_port, probe_wait).expect("tcp probe"),
        "port 5202 must be dropped by the policy"
    );
    println!("BENCH|throughput|host to host|{host:.2}");
    println!("BENCH|throughput|workload to workload, no policy|{none:.2}");
    println!(
        "BENCH|throughput|workload to workload, 1,000 policy rules ({kernel_rules} kernel rules per host)|{with_policy:.2}"
    );
    for mut dp in dps {
        dp.remove().expect("remove");
    }
}
