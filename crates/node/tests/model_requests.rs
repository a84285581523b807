//! A real agent against a real etcd: after start-up, no change makes it read the datastore.
//!
//! etcd counts every range (get or list) it serves (`etcd_debugging_mvcc_range_total`, and
//! gRPC's `grpc_server_handled_total{grpc_method="Range"}`); the test reads both from etcd's
//! own `/metrics` before and after each change, and asserts zero new range requests for every
//! change kind once the agent has started: a policy edit, a remote endpoint's label change
//! (moves its address between sets), a network set, a local endpoint, a block affinity of this
//! node (a route), a new node (the speaker's peers), FelixConfiguration. With a VXLAN pool
//! (the overlay is synchronised from the model too): a policy edit, another node's Node with
//! its VTEP (FDB entry), that node's new block (its tunnel route, installed alone), a block of
//! this node, FelixConfiguration's `vxlanMTU` (the device). Each change is written with plain
//! puts (no ranges of the test's own) and its effect is waited for before counting. A control
//! read of ours shows the counters do move.
//!
//! Needs root and `target/debug/calico-node` (`cargo build -p calico-rs --bin calico-node`).

mod cluster_support;
use cluster_support::*;

use std::time::Duration;

use calico_datastore::EtcdClient;
use calico_lab::metrics::etcd_ranges;
use serde_json::{Value, json};

const RES: &str = "/calico/resources/v3/projectcalico.org/";

/// (etcd_debugging_mvcc_range_total, grpc Range requests handled) from etcd's `/metrics`.
fn range_counts(c: &Cluster) -> (u64, u64) {
    let endpoint = c.etcd.endpoint();
    c.etcd_host
        .run(move || etcd_ranges(&endpoint))
        .expect("scrape in the etcd namespace")
}

/// Puts documents with plain puts (no read of ours).
fn put(c: &Cluster, docs: Vec<(String, Value)>) {
    c.with_etcd(async move |kv: &EtcdClient| {
        for (key, doc) in docs {
            kv.put(&key, serde_json::to_vec(&doc).unwrap())
                .await
                .expect("put");
        }
    });
}

fn wep(node: &str, name: &str, ip: &str, app: &str) -> (String, Value) {
    (
        format!("{RES}workloadendpoints/ns1/{name}"),
        json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "metadata": {"name": name, "namespace": "ns1", "labels": {"app": app}},
            "spec": {
                "orchestrator": "k8s", "node": node, "interfaceName": format!("cali{name}"),
                "ipNetworks": [format!("{ip}/32")], "profiles": [],
            },
        }),
    )
}

fn gnp(name: &str, port: u16) -> (String, Value) {
    (
        format!("{RES}globalnetworkpolicies/{name}"),
        json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name},
            "spec": {
                "selector": "app == 'a'",
                "ingress": [
                    {"action": "Allow", "protocol": "TCP",
                     "source": {"selector": "app == 'b'"}, "destination": {"ports": [port]}},
                ],
            },
        }),
    )
}

fn policy_applied(c: &Cluster) -> usize {
    c.agent_log(1).matches("policy applied").count()
}

/// The agent on node1 started (with `env`), its first block and a policy programmed; the
/// range counters once start-up has settled.
fn started(c: &mut Cluster, env: &[(&str, &str)]) -> Requests {
    let before_start = range_counts(c);
    c.start_agent_with(1, env);
    // Start-up is done once the agent has programmed its first block and its policy.
    let (_, block) = c.allocate("node1");
    c.wait_routes(1, &[format!("blackhole {block} proto bird")], &[]);
    put(
        c,
        vec![
            wep("node1", "local1", "10.65.250.1", "a"),
            wep("node2", "remote1", "10.65.251.1", "c"),
            gnp("allow-b", 80),
        ],
    );
    let applied = wait_for(WAIT, || {
        c.agent_log(1)
            .lines()
            .any(|l| l.contains("policy applied") && l.contains("endpoints=1"))
            .then_some(())
    });
    assert!(applied.is_some(), "no policy applied:\n{}", c.agent_log(1));
    // Let the start-up settle (status reports, the first resync of node status).
    std::thread::sleep(Duration::from_secs(2));
    let last = range_counts(c);
    assert!(
        last.0 > before_start.0,
        "the agent's start-up list must show in the counter: {before_start:?} → {last:?}"
    );
    Requests { last }
}

/// The range counters since the last check.
struct Requests {
    last: (u64, u64),
}

impl Requests {
    /// Writes `change`, waits for its effect, and asserts it cost no range request.
    fn check(
        &mut self,
        c: &Cluster,
        what: &str,
        change: Vec<(String, Value)>,
        wait: impl Fn(&Cluster) -> bool,
    ) {
        put(c, change);
        assert!(
            wait_for(WAIT, || wait(c).then_some(())).is_some(),
            "{what}: the effect never showed:\n{}",
            c.agent_log(1)
        );
        // Anything the agent would read because of this change happens in the same round.
        std::thread::sleep(Duration::from_millis(500));
        let now = range_counts(c);
        assert_eq!(
            (now.0 - self.last.0, now.1 - self.last.1),
            (0, 0),
            "{what}: range requests (mvcc, grpc) after start-up\n{}",
            c.agent_log(1)
        );
        eprintln!("{what}: 0 range requests");
        self.last = now;
    }

    /// Control: a read of ours moves the counters, so zero above means zero.
    fn control(&self, c: &Cluster) {
        c.with_etcd(async |kv: &EtcdClient| {
            kv.list(RES).await.expect("list");
        });
        let after = range_counts(c);
        assert!(
            after.0 > self.last.0 && after.1 > self.last.1,
            "a list of ours must count: {:?} → {after:?}",
            self.last
        );
    }
}

fn affinity(node: &str, block: &str) -> (String, Value) {
    (
        format!(
            "/calico/ipam/v2/host/{node}/ipv4/block/{}",
            block.replace('/', "-")
        ),
        json!({"state": "confirmed", "deleted": false}),
    )
}

/// A new block of node1: its blackhole route.
fn own_block(req: &mut Requests, c: &Cluster, what: &str) {
    let block = "10.65.200.0/26";
    req.check(c, what, vec![affinity("node1", block)], |c| {
        c.routes(1)
            .contains(&format!("blackhole {block} proto bird"))
    });
}

fn felix(spec: Value) -> (String, Value) {
    (
        format!("{RES}felixconfigurations/default"),
        json!({
            "apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": spec,
        }),
    )
}

fn node_doc(name: &str, spec: Value) -> (String, Value) {
    (
        format!("{RES}nodes/{name}"),
        json!({
            "apiVersion": "projectcalico.org/v3", "kind": "Node",
            "metadata": {"name": name},
            "spec": spec,
        }),
    )
}

#[test]
fn no_datastore_reads_per_change_after_start() {
    let mut c = Cluster::new(1);
    let mut req = started(&mut c, &[]);

    let n = policy_applied(&c);
    req.check(&c, "policy edit", vec![gnp("allow-b", 8080)], |c| {
        policy_applied(c) > n
    });
    let n = policy_applied(&c);
    req.check(
        &c,
        "remote endpoint label change",
        vec![wep("node2", "remote1", "10.65.251.1", "b")],
        |c| policy_applied(c) > n,
    );
    let n = policy_applied(&c);
    req.check(
        &c,
        "new local endpoint",
        vec![wep("node1", "local2", "10.65.250.2", "a")],
        |c| policy_applied(c) > n,
    );
    let n = policy_applied(&c);
    req.check(
        &c,
        "network set",
        vec![(
            format!("{RES}globalnetworksets/set1"),
            json!({
                "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
                "metadata": {"name": "set1", "labels": {"app": "b"}},
                "spec": {"nets": ["198.51.100.0/24"]},
            }),
        )],
        |c| policy_applied(c) > n,
    );
    own_block(&mut req, &c, "block affinity (route)");
    req.check(
        &c,
        "new node (speaker peers)",
        vec![node_doc(
            "node9",
            json!({"bgp": {"ipv4Address": "192.168.33.99/24"}}),
        )],
        |c| c.node_status(1).contains("192.168.33.99"),
    );
    let n = c.agent_log(1).matches("serving").count();
    req.check(
        &c,
        "FelixConfiguration",
        vec![felix(json!({"healthEnabled": true, "healthPort": 19099}))],
        |c| c.agent_log(1).matches("serving").count() > n,
    );
    req.control(&c);
}

/// The same with the default pool in VXLAN Always: the tunnel state comes from the model,
/// and another node's new block costs its route alone.
#[test]
fn no_datastore_reads_per_change_with_a_vxlan_pool() {
    let mut c = Cluster::new(1);
    let mut req = started(&mut c, &[("CALICO_IPV4POOL_VXLAN", "Always")]);
    let n1 = c.node(1).host.clone();
    let sh = |argv: &[&str]| {
        String::from_utf8_lossy(&n1.exec(argv).expect("command on node1").stdout).into_owned()
    };
    assert!(
        sh(&["ip", "-d", "link", "show", "vxlan.calico"]).contains("vxlan id 4096"),
        "node1 has no vxlan.calico:\n{}",
        c.agent_log(1)
    );

    let n = policy_applied(&c);
    req.check(
        &c,
        "policy edit (VXLAN pool)",
        vec![gnp("allow-b", 8080)],
        |c| policy_applied(c) > n,
    );
    let mac2 = "66:00:00:00:00:02";
    req.check(
        &c,
        "another node's VTEP (FDB entry)",
        vec![node_doc(
            "node2",
            json!({
                "bgp": {"ipv4Address": "192.168.33.12/24"},
                "ipv4VXLANTunnelAddr": "10.65.201.0",
                "vxlanTunnelMACAddr": mac2,
            }),
        )],
        |_| {
            sh(&["bridge", "fdb", "show", "dev", "vxlan.calico"])
                .contains(&format!("{mac2} dst 192.168.33.12 self permanent"))
        },
    );
    let remote = "10.65.201.0/26";
    let tunnel_route = format!("{remote} via 10.65.201.0 dev vxlan.calico proto bird onlink");
    req.check(
        &c,
        "another node's block (tunnel route)",
        vec![affinity("node2", remote)],
        |c| c.routes(1).contains(&tunnel_route),
    );
    own_block(&mut req, &c, "block affinity of this node (VXLAN pool)");
    req.check(
        &c,
        "FelixConfiguration vxlanMTU (device)",
        vec![felix(json!({"vxlanMTU": 1400}))],
        |_| sh(&["ip", "-d", "link", "show", "vxlan.calico"]).contains("mtu 1400"),
    );
    // Installed by the targeted path (that block's route alone), not by a full route round.
    let log = c.agent_log(1);
    assert!(
        log.lines()
            .any(|l| l.contains("installing tunnel route") && l.contains(remote)),
        "node2's block was not routed on its own:\n{log}"
    );
    req.control(&c);
}
