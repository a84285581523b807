//! The small version of the scale harness, in CI: a synthetic cluster in a real etcd (50
//! nodes each with a block, 2,000 workload endpoints, 20 policies of 5 rules, 10 network
//! sets), five model-only agents ([`Follower`]: the agent's watch and model, no dataplane)
//! following it, and a random sequence of changes of every kind. Asserts that:
//! - after start-up no follower makes a single range (get or list) request, however many
//!   changes (etcd's own `etcd_debugging_mvcc_range_total` and gRPC Range counters);
//! - each follower's desired state (policy program and issues, routing snapshot) equals a fresh
//!   full computation listed from etcd afterwards (the oracle: `read_resources`,
//!   `read_snapshot`, `compile_isolated`).
//!
//! Needs root (etcd runs in a lab namespace; nothing leaves it).

use std::time::{Duration, Instant};

use calico_datastore::{Datastore, EtcdClient, EtcdConfig, TxnOutcome, Write};
use calico_ipam::Ipam;
use calico_lab::Lab;
use calico_lab::etcd::{Etcd, EtcdOptions};
use calico_lab::metrics::etcd_ranges;
use calico_node::model::follow::Follower;
use calico_node::policy::{compile_isolated_for, read_felix_settings, read_resources};
use calico_node::snapshot::read_snapshot;
use serde_json::{Value, json};

const RES: &str = "/calico/resources/v3/projectcalico.org/";
const NODES: usize = 50;
const WEPS_PER_NODE: usize = 40;
const POLICIES: usize = 20;
const SETS: usize = 10;
const CHANGES: usize = 80;
const FOLLOWERS: usize = 5;
const APPS: [&str; 5] = ["a", "b", "c", "d", "e"];

/// A small deterministic generator (xorshift64*): the run is the same every time; the seed is
/// printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn node(i: usize) -> (String, Value) {
    let name = format!("node-{i}");
    (
        format!("{RES}nodes/{name}"),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name},
               "spec": {"bgp": {"ipv4Address": format!("172.16.{}.{}/16", i / 200, i % 200 + 1)}}}),
    )
}

fn affinity(i: usize, b: usize, confirmed: bool) -> (String, Value) {
    (
        format!(
            "/calico/ipam/v2/host/node-{i}/ipv4/block/10.{}.{b}.0-26",
            64 + i / 200
        ),
        json!({"state": if confirmed { "confirmed" } else { "pending" }, "deleted": false}),
    )
}

fn wep(n: usize, j: usize, app: &str, ip_gen: usize) -> (String, Value) {
    let name = format!("node-{n}-k8s-pod{j}-eth0");
    (
        format!("{RES}workloadendpoints/ns{}/{name}", j % 4),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
               "metadata": {"name": name, "namespace": format!("ns{}", j % 4),
                            "labels": {"app": app, "role": if j.is_multiple_of(2) { "db" } else { "web" }}},
               "spec": {"orchestrator": "k8s", "node": format!("node-{n}"),
                        "interfaceName": format!("cali{n:03}x{j:03}"),
                        "ipNetworks": [format!("10.{}.{}.{}/32", 80 + ip_gen, n, j + 1)],
                        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
                        "profiles": []}}),
    )
}

fn policy(i: usize, version: usize) -> (String, Value) {
    let name = format!("pol{i}");
    let rules: Vec<Value> = (0..5)
        .map(|r| {
            let src = APPS[(i + r + version) % APPS.len()];
            let port: Value = if r == 4 {
                json!("http")
            } else {
                json!(1000 + r + version)
            };
            json!({"action": if r == 3 { "Deny" } else { "Allow" }, "protocol": "TCP",
                   "source": {"selector": format!("app == '{src}'")},
                   "destination": {"ports": [port]}})
        })
        .collect();
    (
        format!("{RES}globalnetworkpolicies/{name}"),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
               "metadata": {"name": name},
               "spec": {"order": i as f64, "selector": format!("app == '{}'", APPS[i % APPS.len()]),
                        "ingress": rules}}),
    )
}

fn netset(i: usize, app: &str, v: usize) -> (String, Value) {
    let name = format!("set{i}");
    (
        format!("{RES}globalnetworksets/{name}"),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
               "metadata": {"name": name, "labels": {"app": app}},
               "spec": {"nets": [format!("198.{}.{i}.0/24", 18 + v % 2)]}}),
    )
}

async fn put(kv: &EtcdClient, (key, doc): (String, Value)) -> i64 {
    kv.put(&key, serde_json::to_vec(&doc).unwrap())
        .await
        .expect("put")
}

async fn wait_revision(followers: &[Follower], rev: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while followers.iter().any(|f| f.revision() < rev) {
        assert!(
            Instant::now() < deadline,
            "followers never reached revision {rev}: {:?}",
            followers.iter().map(Follower::revision).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn fifty_nodes_two_thousand_endpoints_no_reads_and_equal_to_full_recompute() {
    let lab = Lab::new().expect("lab");
    let host = lab.add_host("etcd", "192.168.33.2/24").expect("etcd host");
    let etcd = Etcd::start(EtcdOptions::in_netns(host.netns_path(), host.ip())).expect("etcd");
    let endpoint = etcd.endpoint();
    let addr = endpoint.clone();
    let seed = 0x5eed_c0de_u64;
    eprintln!("seed {seed:#x}");
    host.run_async(move || async move {
        let kv = EtcdClient::connect(&EtcdConfig::new([endpoint]))
            .await
            .expect("etcd client");
        let mut rng = Rng(seed);
        let mut apps = vec![vec![0usize; WEPS_PER_NODE]; NODES];
        for (i, node_apps) in apps.iter_mut().enumerate() {
            put(&kv, node(i)).await;
            put(&kv, affinity(i, i % 256, true)).await;
            for (j, app) in node_apps.iter_mut().enumerate() {
                *app = rng.below(APPS.len());
                put(&kv, wep(i, j, APPS[*app], 0)).await;
            }
        }
        for i in 0..POLICIES {
            put(&kv, policy(i, 0)).await;
        }
        for i in 0..SETS {
            put(&kv, netset(i, APPS[i % APPS.len()], 0)).await;
        }
        let written = put(&kv, node(0)).await;

        // Node 0 is "this" node; the others are simulated agents of other nodes.
        let followers: Vec<Follower> = (0..FOLLOWERS)
            .map(|i| Follower::start(kv.clone(), &format!("node-{i}")))
            .collect();
        wait_revision(&followers, written).await;
        let started = etcd_ranges(&addr);

        let mut last = written;
        let mut kinds = [0usize; 7];
        for _ in 0..CHANGES {
            let k = rng.below(7);
            kinds[k] += 1;
            let (n, j) = (rng.below(NODES), rng.below(WEPS_PER_NODE));
            last = match k {
                // A policy edit.
                0 => put(&kv, policy(rng.below(POLICIES), 1 + rng.below(3))).await,
                // A remote (or local) endpoint's label change: moves it between sets.
                1 => {
                    apps[n][j] = rng.below(APPS.len());
                    put(&kv, wep(n, j, APPS[apps[n][j]], 0)).await
                }
                // An endpoint's address change.
                2 => put(&kv, wep(n, j, APPS[apps[n][j]], 1 + rng.below(2))).await,
                // A network set change.
                3 => {
                    let i = rng.below(SETS);
                    put(&kv, netset(i, APPS[rng.below(APPS.len())], rng.below(2))).await
                }
                // A block affinity (new block, or one going pending).
                4 => put(&kv, affinity(n, 100 + rng.below(50), rng.below(3) > 0)).await,
                // A node's address (the speaker's peers).
                5 => put(&kv, node(n)).await,
                // An endpoint deleted (a plain delete: no read of the test's own), and
                // written again later by a label or address change.
                _ => {
                    let (key, _) = wep(n, j, "", 0);
                    match kv.txn(vec![], vec![Write::Delete { key }]).await {
                        Ok(TxnOutcome::Committed { revision }) => revision,
                        other => panic!("delete: {other:?}"),
                    }
                }
            };
        }
        wait_revision(&followers, last).await;
        let after = etcd_ranges(&addr);
        eprintln!(
            "changes per kind {kinds:?}; ranges at start-up {started:?}, after {CHANGES} changes \
             {after:?}"
        );
        assert_eq!(
            (after.0 - started.0, after.1 - started.1),
            (0, 0),
            "range requests (mvcc, grpc) by {FOLLOWERS} model-only agents over {CHANGES} changes"
        );

        // The oracle: list everything afresh and compute from scratch.
        let ds = Datastore::from_etcd(kv.clone());
        let ipam = Ipam::new(kv.clone());
        let resources = read_resources(&ds).await.expect("list");
        assert!(resources.workload_endpoints.len() <= NODES * WEPS_PER_NODE);
        for (i, f) in followers.iter().enumerate() {
            let name = format!("node-{i}");
            let state = f.state();
            let felix = read_felix_settings(&ds, &name).await.expect("felix");
            let (want, want_issues) =
                compile_isolated_for(&resources, &felix, &name).expect("full compile");
            let model = state.policy.as_ref().expect("policy model built");
            let (got, issues) = model.program().expect("model compiles");
            assert!(
                !want.endpoints.is_empty() && !want.sets.is_empty(),
                "{name}: the compared program is not trivial"
            );
            assert_eq!(got, &want, "{name}: policy program");
            assert_eq!(issues, want_issues.as_slice(), "{name}: issues");
            let snap = read_snapshot(&ds, &ipam, &name).await.expect("snapshot");
            assert_eq!(
                format!("{:?}", state.store.snapshot()),
                format!("{snap:?}"),
                "{name}: routing snapshot"
            );
            eprintln!(
                "{name}: {} events in {} rounds; {} endpoints, {} rule lists, {} sets",
                state.events,
                state.rounds,
                got.endpoints.len(),
                got.rule_lists.len(),
                got.sets.len()
            );
        }
    })
    .expect("run in the etcd namespace");
    drop(etcd);
}
