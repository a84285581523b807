//! The agent's incremental model against today's full recompute (the oracle).
//!
//! Random sequences of datastore changes (policies added, edited, deleted, in tiers, staged,
//! broken; endpoints moving between labels, addresses and nodes; network sets; profiles;
//! tiers; block affinities; nodes; pools; and a compaction's re-list) are fed as etcd watch
//! events to the model ([`Store`] + [`PolicyModel`], exactly as the agent feeds them). After
//! every change the model's desired dataplane (policy program and issues, routing snapshot,
//! routes, announced prefixes) must equal a fresh full computation from the same objects:
//! `compile_isolated` of every resource and `Snapshot::compute` of every routing resource.

use std::collections::{BTreeMap, BTreeSet};

use calico_api as api;
use calico_api::CalicoResource;
use calico_datastore::resource::meta::{resource_key, resource_prefix};
use calico_datastore::{KeyValue, KindRef, Listing, ObjectId, WatchEvent};
use calico_node::model::{PolicyModel, Store, full_policy};
use calico_node::routes::{RouteInputs, announced_prefixes, desired_routes};
use calico_node::snapshot::{RoutingResources, Snapshot};
use calico_policy::felix::FelixPolicySettings;
use calico_policy::from_api::ApiResources;
use ipnet::IpNet;
use proptest::prelude::*;
use serde_json::{Value, json};

const NODE: &str = "node-0";

#[derive(Debug, Clone)]
enum Op {
    Wep {
        i: u8,
        node: u8,
        app: u8,
        ip: u8,
        port: bool,
    },
    DelWep(u8),
    Policy {
        kind: u8,
        i: u8,
        sel: u8,
        src: u8,
        port: u8,
        tier: u8,
        order: Option<u8>,
        egress: bool,
    },
    DelPolicy {
        kind: u8,
        i: u8,
    },
    NetSet {
        i: u8,
        app: u8,
        net: u8,
    },
    DelNetSet(u8),
    Profile {
        role: u8,
        bad: bool,
    },
    DelProfile,
    Tier(bool),
    Affinity {
        node: u8,
        block: u8,
        confirmed: bool,
    },
    DelAffinity {
        node: u8,
        block: u8,
    },
    Node {
        i: u8,
        addr: u8,
    },
    DelNode(u8),
    Pool {
        no_export: bool,
    },
    /// History compacted: the watch re-lists and sends a snapshot.
    Relist,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..10u8, 0..3u8, 0..3u8, 0..4u8, any::<bool>())
            .prop_map(|(i, node, app, ip, port)| Op::Wep { i, node, app, ip, port }),
        2 => (0..10u8).prop_map(Op::DelWep),
        6 => (0..4u8, 0..5u8, 0..5u8, 0..5u8, 0..3u8, 0..3u8, proptest::option::of(0..3u8), any::<bool>())
            .prop_map(|(kind, i, sel, src, port, tier, order, egress)| Op::Policy {
                kind, i, sel, src, port, tier, order, egress
            }),
        2 => (0..4u8, 0..5u8).prop_map(|(kind, i)| Op::DelPolicy { kind, i }),
        2 => (0..3u8, 0..3u8, 0..3u8).prop_map(|(i, app, net)| Op::NetSet { i, app, net }),
        1 => (0..3u8).prop_map(Op::DelNetSet),
        1 => (0..2u8, prop::bool::weighted(0.2)).prop_map(|(role, bad)| Op::Profile { role, bad }),
        1 => Just(Op::DelProfile),
        1 => any::<bool>().prop_map(Op::Tier),
        2 => (0..3u8, 0..4u8, any::<bool>())
            .prop_map(|(node, block, confirmed)| Op::Affinity { node, block, confirmed }),
        1 => (0..3u8, 0..4u8).prop_map(|(node, block)| Op::DelAffinity { node, block }),
        1 => (0..3u8, 0..3u8).prop_map(|(i, addr)| Op::Node { i, addr }),
        1 => (0..3u8).prop_map(Op::DelNode),
        1 => any::<bool>().prop_map(|no_export| Op::Pool { no_export }),
        1 => Just(Op::Relist),
    ]
}

fn key_of<T: CalicoResource>(ns: Option<&str>, name: &str) -> String {
    let id = match ns {
        Some(ns) => ObjectId::namespaced(ns, name),
        None => ObjectId::global(name),
    };
    resource_key(&KindRef::of::<T>(), &id)
}

const SELECTORS: [&str; 5] = ["app == 'a'", "app == 'b'", "all()", "has(app)", "has("];
const SOURCES: [Option<&str>; 5] = [
    None,
    Some("app == 'a'"),
    Some("app in {'b', 'c'}"),
    Some("role == 'db'"),
    Some("has("),
];
const APPS: [&str; 3] = ["a", "b", "c"];
const ROLES: [&str; 2] = ["db", "web"];

fn block(i: u8) -> IpNet {
    format!("10.{}.0.0/26", 100 + i).parse().unwrap()
}

/// One change as the key it writes (`Some(document)`) or deletes (`None`).
fn change(op: &Op) -> Option<(String, Option<Value>)> {
    Some(match op {
        Op::Wep {
            i,
            node,
            app,
            ip,
            port,
        } => {
            let name = format!("wep{i}");
            let mut spec = json!({
                "orchestrator": "k8s",
                "node": format!("node-{node}"),
                "interfaceName": format!("cali{i}"),
                "ipNetworks": [format!("10.{}.0.{}/32", 100 + ip, 10 + i)],
                "profiles": ["kns.ns1", "prof"],
            });
            if *port {
                spec["ports"] = json!([{"name": "http", "protocol": "TCP", "port": 8080}]);
            }
            let doc = json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "WorkloadEndpoint",
                "metadata": {"name": name, "namespace": "ns1", "labels": {"app": APPS[*app as usize]}},
                "spec": spec,
            });
            (
                key_of::<api::WorkloadEndpoint>(Some("ns1"), &name),
                Some(doc),
            )
        }
        Op::DelWep(i) => (
            key_of::<api::WorkloadEndpoint>(Some("ns1"), &format!("wep{i}")),
            None,
        ),
        Op::Policy {
            kind,
            i,
            sel,
            src,
            port,
            tier,
            order,
            egress,
        } => {
            let tier = ["", "t1", "missing"][*tier as usize];
            let name = if tier.is_empty() {
                format!("p{i}")
            } else {
                format!("{tier}.p{i}")
            };
            let (k, ns) = policy_kind(*kind);
            let mut rule = json!({"action": "Allow"});
            if let Some(s) = SOURCES[*src as usize] {
                rule["source"] = json!({ "selector": s });
            }
            match port {
                1 => {
                    rule["protocol"] = json!("TCP");
                    rule["destination"] = json!({"ports": [80]});
                }
                2 => {
                    rule["protocol"] = json!("TCP");
                    rule["destination"] = json!({"ports": ["http"]});
                }
                _ => {}
            }
            let mut spec = json!({
                "selector": SELECTORS[*sel as usize],
                "ingress": [rule.clone()],
            });
            if !tier.is_empty() {
                spec["tier"] = json!(tier);
            }
            if let Some(o) = order {
                spec["order"] = json!(*o as f64 * 10.0);
            }
            if *egress {
                spec["egress"] =
                    json!([{"action": "Deny", "destination": {"selector": "app == 'c'"}}]);
            }
            let mut meta = json!({ "name": name });
            if let Some(ns) = ns {
                meta["namespace"] = json!(ns);
            }
            let doc = json!({"apiVersion": "projectcalico.org/v3", "kind": k, "metadata": meta, "spec": spec});
            (policy_key(*kind, &name), Some(doc))
        }
        Op::DelPolicy { kind, i } => (policy_key(*kind, &format!("p{i}")), None),
        Op::NetSet { i, app, net } => {
            let name = format!("set{i}");
            let doc = json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "GlobalNetworkSet",
                "metadata": {"name": name, "labels": {"app": APPS[*app as usize]}},
                "spec": {"nets": [format!("192.0.{net}.0/24")]},
            });
            (key_of::<api::GlobalNetworkSet>(None, &name), Some(doc))
        }
        Op::DelNetSet(i) => (
            key_of::<api::GlobalNetworkSet>(None, &format!("set{i}")),
            None,
        ),
        Op::Profile { role, bad } => {
            let sel = if *bad { "has(" } else { "role == 'db'" };
            let doc = json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "Profile",
                "metadata": {"name": "prof"},
                "spec": {
                    "labelsToApply": {"role": ROLES[*role as usize]},
                    "ingress": [{"action": "Allow", "source": {"selector": sel}}],
                    "egress": [{"action": "Allow"}],
                },
            });
            (key_of::<api::Profile>(None, "prof"), Some(doc))
        }
        Op::DelProfile => (key_of::<api::Profile>(None, "prof"), None),
        Op::Tier(present) => {
            let doc = json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "Tier",
                "metadata": {"name": "t1"},
                "spec": {"order": 100.0},
            });
            (key_of::<api::Tier>(None, "t1"), present.then_some(doc))
        }
        Op::Affinity {
            node,
            block: b,
            confirmed,
        } => (
            calico_ipam::model::affinity_key(&format!("node-{node}"), &block(*b)),
            Some(json!({"state": if *confirmed { "confirmed" } else { "pending" }})),
        ),
        Op::DelAffinity { node, block: b } => (
            calico_ipam::model::affinity_key(&format!("node-{node}"), &block(*b)),
            None,
        ),
        Op::Node { i, addr } => {
            let name = format!("node-{i}");
            let doc = json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "Node",
                "metadata": {"name": name},
                "spec": {"bgp": {"ipv4Address": format!("172.16.{addr}.{}/24", 10 + i)}},
            });
            (key_of::<api::Node>(None, &name), Some(doc))
        }
        Op::DelNode(i) => (key_of::<api::Node>(None, &format!("node-{i}")), None),
        Op::Pool { no_export } => {
            let doc = json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPool",
                "metadata": {"name": "pool"},
                "spec": {"cidr": "10.100.0.0/14", "disableBGPExport": no_export},
            });
            (key_of::<api::IPPool>(None, "pool"), Some(doc))
        }
        Op::Relist => return None,
    })
}

fn policy_kind(kind: u8) -> (&'static str, Option<&'static str>) {
    match kind {
        0 => ("GlobalNetworkPolicy", None),
        1 => ("NetworkPolicy", Some("ns1")),
        2 => ("StagedGlobalNetworkPolicy", None),
        _ => ("StagedNetworkPolicy", Some("ns1")),
    }
}

fn policy_key(kind: u8, name: &str) -> String {
    match kind {
        0 => key_of::<api::GlobalNetworkPolicy>(None, name),
        1 => key_of::<api::NetworkPolicy>(Some("ns1"), name),
        2 => key_of::<api::StagedGlobalNetworkPolicy>(None, name),
        _ => key_of::<api::StagedNetworkPolicy>(Some("ns1"), name),
    }
}

/// The stored objects of kind `T`, decoded straight from the "etcd" contents (as a list).
fn all<T: CalicoResource>(etcd: &BTreeMap<String, KeyValue>) -> Vec<T> {
    let prefix = resource_prefix(&KindRef::of::<T>(), None);
    etcd.range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(_, kv)| serde_json::from_slice(&kv.value).unwrap())
        .collect()
}

fn oracle_resources(etcd: &BTreeMap<String, KeyValue>) -> ApiResources {
    ApiResources {
        tiers: all(etcd),
        network_policies: all(etcd),
        global_network_policies: all(etcd),
        staged_network_policies: all(etcd),
        staged_global_network_policies: all(etcd),
        profiles: all(etcd),
        workload_endpoints: all(etcd),
        host_endpoints: all(etcd),
        network_sets: all(etcd),
        global_network_sets: all(etcd),
    }
}

fn oracle_snapshot(etcd: &BTreeMap<String, KeyValue>) -> Snapshot {
    let configs: Vec<api::BGPConfiguration> = all(etcd);
    let nodes: Vec<api::Node> = all(etcd);
    let peers: Vec<api::BGPPeer> = all(etcd);
    let filters: Vec<api::BGPFilter> = all(etcd);
    let pools: Vec<api::IPPool> = all(etcd);
    let weps: Vec<api::WorkloadEndpoint> = all(etcd);
    let own_blocks: BTreeSet<IpNet> = etcd
        .iter()
        .filter_map(|(k, kv)| {
            let (host, cidr) = calico_ipam::model::parse_affinity_key(k)?;
            let v: Value = serde_json::from_slice(&kv.value).unwrap();
            (host == NODE && v["state"] == "confirmed").then_some(cidr)
        })
        .collect();
    let local: Vec<&api::WorkloadEndpoint> = weps
        .iter()
        .filter(|w| w.spec.node.as_deref() == Some(NODE))
        .collect();
    Snapshot::compute(
        &RoutingResources {
            bgp_configs: &configs.iter().collect::<Vec<_>>(),
            nodes: &nodes.iter().collect::<Vec<_>>(),
            peers: &peers.iter().collect::<Vec<_>>(),
            bgp_filters: &filters.iter().collect::<Vec<_>>(),
            ip_pools: &pools.iter().collect::<Vec<_>>(),
            own_blocks: &own_blocks,
            local_workloads: &local,
        },
        NODE,
    )
}

fn inputs(s: &Snapshot) -> RouteInputs {
    RouteInputs {
        own_blocks: s.own_blocks.clone(),
        learned: BTreeMap::new(),
        workloads: s.workloads.clone(),
        no_export: s.no_export.clone(),
    }
}

/// The most the checked states held, so a test can show it checked something non-trivial.
#[derive(Debug, Default)]
struct Seen {
    endpoints: usize,
    sets: usize,
    set_members: usize,
    issues: usize,
    routes: usize,
}

/// Applies `ops` to the model as watch events and checks it against the oracle after each.
fn check(ops: &[Op]) -> Result<Seen, TestCaseError> {
    let mut seen = Seen::default();
    let felix = FelixPolicySettings::default();
    let mut etcd: BTreeMap<String, KeyValue> = BTreeMap::new();
    let mut store = Store::new(NODE);
    let mut rev = 1;
    store.apply(WatchEvent::Snapshot(Listing {
        kvs: vec![],
        revision: rev,
    }));
    let mut model = PolicyModel::new(&store, &felix);
    for (step, op) in ops.iter().enumerate() {
        rev += 1;
        let ev = match change(op) {
            None => WatchEvent::Snapshot(Listing {
                kvs: etcd.values().cloned().collect(),
                revision: rev,
            }),
            Some((key, Some(doc))) => {
                let kv = KeyValue {
                    key: key.clone(),
                    value: serde_json::to_vec(&doc).unwrap(),
                    create_revision: etcd.get(&key).map_or(rev, |kv| kv.create_revision),
                    mod_revision: rev,
                };
                etcd.insert(key, kv.clone());
                WatchEvent::Put(kv)
            }
            Some((key, None)) => {
                let prev = etcd.remove(&key);
                WatchEvent::Delete {
                    key,
                    revision: rev,
                    prev,
                }
            }
        };
        let ch = store.apply(ev);
        if ch.snapshot {
            model = PolicyModel::new(&store, &felix);
        } else {
            model.apply(&store, &ch.policy_keys, &felix);
        }

        let want = full_policy(&oracle_resources(&etcd), &felix, NODE);
        match (model.program(), &want) {
            (Ok((p, issues)), Ok((wp, wissues))) => {
                seen.endpoints = seen.endpoints.max(p.endpoints.len());
                seen.sets = seen.sets.max(p.sets.len());
                let members = p.sets.values().map(|s| s.members.len()).sum();
                seen.set_members = seen.set_members.max(members);
                seen.issues = seen.issues.max(issues.len());
                prop_assert_eq!(p, wp, "program after step {} {:?}", step, op);
                prop_assert_eq!(issues, wissues.as_slice(), "issues after step {}", step);
            }
            (Err(_), Err(_)) => {}
            (got, want) => prop_assert!(
                false,
                "after step {step} {op:?}: model {:?} but full compile {:?}",
                got.map(|_| "a program"),
                want.as_ref().map(|_| "a program")
            ),
        }
        let snap = store.snapshot();
        let wsnap = oracle_snapshot(&etcd);
        prop_assert_eq!(
            format!("{snap:?}"),
            format!("{wsnap:?}"),
            "snapshot after step {}",
            step
        );
        let routes = desired_routes(&inputs(&snap));
        seen.routes = seen.routes.max(routes.len());
        prop_assert_eq!(routes, desired_routes(&inputs(&wsnap)));
        prop_assert_eq!(
            announced_prefixes(&inputs(&snap)),
            announced_prefixes(&inputs(&wsnap))
        );
    }
    Ok(seen)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn incremental_model_equals_full_recompute(ops in proptest::collection::vec(op(), 1..40)) {
        check(&ops)?;
    }
}

/// A fixed sequence covering every change kind once, so a regression shows without shrinking.
#[test]
fn every_change_kind_once() {
    let ops = vec![
        Op::Tier(true),
        Op::Profile {
            role: 0,
            bad: false,
        },
        Op::Node { i: 0, addr: 1 },
        Op::Node { i: 1, addr: 1 },
        Op::Pool { no_export: false },
        Op::Affinity {
            node: 0,
            block: 0,
            confirmed: true,
        },
        Op::Wep {
            i: 0,
            node: 0,
            app: 0,
            ip: 0,
            port: true,
        },
        Op::Wep {
            i: 1,
            node: 1,
            app: 1,
            ip: 1,
            port: false,
        },
        Op::Policy {
            kind: 0,
            i: 0,
            sel: 0,
            src: 2,
            port: 2,
            tier: 1,
            order: Some(1),
            egress: true,
        },
        Op::Policy {
            kind: 1,
            i: 1,
            sel: 2,
            src: 1,
            port: 1,
            tier: 0,
            order: None,
            egress: false,
        },
        Op::NetSet {
            i: 0,
            app: 1,
            net: 0,
        },
        // A remote endpoint moves between sets.
        Op::Wep {
            i: 1,
            node: 1,
            app: 2,
            ip: 1,
            port: false,
        },
        // A broken policy is isolated; then fixed.
        Op::Policy {
            kind: 0,
            i: 0,
            sel: 0,
            src: 4,
            port: 0,
            tier: 1,
            order: Some(1),
            egress: false,
        },
        Op::Policy {
            kind: 2,
            i: 2,
            sel: 4,
            src: 0,
            port: 0,
            tier: 2,
            order: None,
            egress: false,
        },
        Op::Relist,
        Op::DelAffinity { node: 0, block: 0 },
        Op::DelPolicy { kind: 0, i: 0 },
        Op::DelWep(0),
        Op::DelNetSet(0),
        Op::Profile { role: 1, bad: true },
        Op::Tier(false),
        Op::DelNode(1),
        Op::DelProfile,
    ];
    let seen = check(&ops).unwrap();
    // What was compared was not empty: endpoints with chains, sets with members, isolated
    // policies, routes.
    assert!(seen.endpoints >= 1, "{seen:?}");
    assert!(seen.sets >= 2 && seen.set_members >= 2, "{seen:?}");
    assert!(seen.issues >= 1, "{seen:?}");
    assert!(seen.routes >= 2, "{seen:?}");
}
