//! Two pods on two nodes sharing one etcd, with a real calico-node agent on each node: the
//! agents mesh over BGP and install each other's block routes (`proto bird`), and the pods
//! ping each other across two routed hops. This checks the plugin (per-node blocks, host
//! routes, WorkloadEndpoints) together with the agent that routes and polices them.
//!
//! Topology: one LAN (192.168.33.0/24), etcd on its own lab host (192.168.33.10), nodes at
//! .11 and .12. The pool is 10.65.0.0/16 so no block can overlap the LAN. The test process
//! talks to etcd only from inside the etcd host's namespace.
//!
//! Needs root and `cargo build -p calico-rs --bin calico-node --bin calico --bin calico-ipam
//! --bin calicoctl`.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use calico_lab::{Etcd, EtcdOptions, Host, Lab, ProcessGuard};
use common::*;
use serde_json::json;

const POOL: &str = "10.65.0.0/16";
/// Bound on each wait (sessions up, routes in place).
const WAIT: Duration = Duration::from_secs(30);

/// Polls `f` every 100 ms until it returns true or `timeout` passes.
fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts calico-node in `host`'s namespace; it is killed when the guard drops.
fn start_agent(host: &Host, name: &str, etcd: &str, run_dir: &Path) -> ProcessGuard {
    host.spawn(agent_command(host, name, etcd, run_dir), "calico-node")
        .expect("spawn calico-node")
}

/// `calicoctl node status` run in the node's namespace with its run directory.
fn node_status(host: &Host, run_dir: &Path) -> String {
    let run_dir = format!("CALICO_RUN_DIR={}", run_dir.display());
    let ctl = bin_dir().join("calicoctl").display().to_string();
    let out = host
        .exec(&["env", &run_dir, &ctl, "node", "status"])
        .expect("calicoctl node status");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pods_on_two_nodes_reach_each_other() {
    assert!(
        bin_dir().join("calico-node").is_file() && bin_dir().join("calicoctl").is_file(),
        "build the agent first: cargo build -p calico-rs --bin calico-node --bin calicoctl"
    );
    let lab = Lab::new().unwrap();
    let etcd_host = lab.add_host("etcd", "192.168.33.10/24").unwrap();
    let n1 = lab.add_host("node1", "192.168.33.11/24").unwrap();
    let n2 = lab.add_host("node2", "192.168.33.12/24").unwrap();
    let etcd = Etcd::start(EtcdOptions::in_netns(
        etcd_host.netns_path(),
        etcd_host.ip(),
    ))
    .unwrap();
    let ep = etcd.endpoint();
    with_datastore(&etcd_host, &etcd, |ds| async move {
        let p: calico_api::IPPool = serde_json::from_value(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "pool1"}, "spec": {"cidr": POOL, "blockSize": 26}
        }))
        .unwrap();
        ds.create(&p).await.unwrap();
        // The agent enforces policy and the plugin gives each pod the profiles
        // `kns.<namespace>` and `ksa.<namespace>.<serviceaccount>`. With no such
        // Profile, Calico drops the pod's traffic; the Kubernetes controllers create
        // `kns.<namespace>` allowing all ingress and egress, so we write it as they would.
        let allow: calico_api::ProfileSpec = serde_json::from_value(json!({
            "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}],
        }))
        .unwrap();
        ds.apply(&calico_api::Profile::new("kns.default", allow))
            .await
            .unwrap();
    });

    // Agents: declared after the lab and etcd, so they are dropped (killed) first.
    let run_dir = |n: &str| -> PathBuf { lab.dir().join(format!("{n}-run")) };
    let nodes = [(&n1, "node1"), (&n2, "node2")];
    let agents: Vec<ProcessGuard> = nodes
        .iter()
        .map(|(h, n)| start_agent(h, n, &ep, &run_dir(n)))
        .collect();
    for ((h, n), peer) in nodes.iter().zip([n2.ip(), n1.ip()]) {
        let up = wait_until(WAIT, || {
            node_status(h, &run_dir(n))
                .lines()
                .any(|l| l.contains(&format!("| {peer} ")) && l.contains("Established"))
        });
        let log = agents.iter().map(|a| a.log()).collect::<Vec<_>>();
        assert!(
            up,
            "{n} has no Established session to {peer}:\n{}\nagent logs:\n{log:#?}",
            node_status(h, &run_dir(n))
        );
    }

    let conf = |node: &str| {
        json!({
            "cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "calico",
            "datastore_type": "etcdv3", "etcd_endpoints": ep, "nodename": node,
            "ipam": {"type": "calico-ipam"}
        })
    };
    let bbox1 = lab.add_namespace("bbox1").unwrap();
    let bbox2 = lab.add_namespace("bbox2").unwrap();
    let r1 = ok(
        invoke(
            &n1,
            &Call::new("ADD", "c1", "bbox1", Some(&bbox1)),
            &conf("node1"),
        ),
        "ADD on node1",
    )
    .unwrap();
    let r2 = ok(
        invoke(
            &n2,
            &Call::new("ADD", "c2", "bbox2", Some(&bbox2)),
            &conf("node2"),
        ),
        "ADD on node2",
    )
    .unwrap();
    let net = |r: &serde_json::Value| -> ipnet::Ipv4Net {
        r["ips"][0]["address"].as_str().unwrap().parse().unwrap()
    };
    let (a1, a2) = (net(&r1).addr(), net(&r2).addr());
    // Each node has its own block, and learns the other's from its peer over BGP.
    let block = |a: Ipv4Addr| ipnet::Ipv4Net::new(a, 26).unwrap().trunc();
    assert_ne!(block(a1), block(a2), "nodes must get different blocks");
    for (h, n, want) in [
        (
            &n1,
            "node1",
            format!("{} via {} dev eth1 proto bird", block(a2), n2.ip()),
        ),
        (
            &n2,
            "node2",
            format!("{} via {} dev eth1 proto bird", block(a1), n1.ip()),
        ),
    ] {
        let routes = || sh(h, &["ip", "-4", "route", "show"]);
        let learned = wait_until(WAIT, || routes().lines().any(|l| l.trim() == want));
        assert!(learned, "{n}: no route `{want}`:\n{}", routes());
    }

    assert!(
        bbox1
            .wait_ping(&a2.to_string(), Duration::from_secs(10))
            .unwrap(),
        "pod on node1 cannot reach {a2}"
    );
    let out = sh(&bbox1, &["ping", "-c1", "-W2", "-n", &a2.to_string()]);
    assert!(out.contains("ttl=62"), "two routed hops expected: {out}");
    let out = sh(&bbox2, &["ping", "-c1", "-W2", "-n", &a1.to_string()]);
    assert!(out.contains("ttl=62"), "two routed hops expected: {out}");
    for (n, c, pod, ns, node) in [
        (&n1, "c1", "bbox1", &bbox1, "node1"),
        (&n2, "c2", "bbox2", &bbox2, "node2"),
    ] {
        ok(
            invoke(n, &Call::new("DEL", c, pod, Some(ns)), &conf(node)),
            "DEL",
        );
        assert!(cali_links(n).is_empty());
    }
}
