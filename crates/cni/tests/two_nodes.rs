//! Two pods on two nodes sharing one etcd. The node agent (BGP) is not started here: the
//! routes between the nodes' blocks are added statically, as BIRD would install them, so
//! this checks what the plugin owns (per-node blocks, host routes, endpoints) end to end.

mod common;

use std::time::Duration;

use calico_lab::{Etcd, EtcdOptions, Lab};
use common::*;
use serde_json::json;

#[test]
fn pods_on_two_nodes_reach_each_other() {
    let lab = Lab::new().unwrap();
    let n1 = lab.add_host("node1", "192.168.33.11/24").unwrap();
    let n2 = lab.add_host("node2", "192.168.33.12/24").unwrap();
    let etcd = Etcd::start(EtcdOptions::in_netns(
        n1.netns_path(),
        "192.168.33.11".parse().unwrap(),
    ))
    .unwrap();
    let ep = etcd.endpoint();
    n1.run_async(|| {
        let ep = ep.clone();
        async move {
            let kv =
                calico_datastore::EtcdClient::connect(&calico_datastore::EtcdConfig::new([ep]))
                    .await
                    .unwrap();
            let p: calico_api::IPPool = serde_json::from_value(json!({
                "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                "metadata": {"name": "pool1"}, "spec": {"cidr": "192.168.0.0/16", "blockSize": 26}
            }))
            .unwrap();
            calico_datastore::Datastore::from_etcd(kv)
                .create(&p)
                .await
                .unwrap();
        }
    })
    .unwrap();
    for n in [&n1, &n2] {
        sh(n, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
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
    // Each node has its own block.
    let block = |a: std::net::Ipv4Addr| ipnet::Ipv4Net::new(a, 26).unwrap().trunc();
    assert_ne!(block(a1), block(a2), "nodes must get different blocks");
    sh(
        &n1,
        &[
            "ip",
            "route",
            "add",
            &block(a2).to_string(),
            "via",
            "192.168.33.12",
        ],
    );
    sh(
        &n2,
        &[
            "ip",
            "route",
            "add",
            &block(a1).to_string(),
            "via",
            "192.168.33.11",
        ],
    );
    assert!(
        bbox1
            .wait_ping(&a2.to_string(), Duration::from_secs(10))
            .unwrap()
    );
    let out = sh(&bbox1, &["ping", "-c1", "-W2", "-n", &a2.to_string()]);
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
