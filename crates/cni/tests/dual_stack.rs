//! IPv4 + IPv6: a /128 next to the /32, the default IPv6 route via the host veth's link-local
//! address (from ee:ee:ee:ee:ee:ee), proxy NDP on the host side, and ping6 between two pods.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn dual_stack_pods_ping_over_ipv6() {
    let w = World::new("10.75.0.0/24", 26);
    w.ds(|ds| async move {
        let p: calico_api::IPPool = serde_json::from_value(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "pool6"}, "spec": {"cidr": "fd00:75::/112", "blockSize": 122}
        }))
        .unwrap();
        ds.create(&p).await.unwrap();
    });
    sh(
        &w.node,
        &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
    );
    let mut conf = w.netconf();
    conf["ipam"]["assign_ipv6"] = json!("true");
    let (p1, p2) = (w.pod_netns("p1"), w.pod_netns("p2"));
    let r1 = ok(
        invoke(&w.node, &Call::new("ADD", "c1", "web-1", Some(&p1)), &conf),
        "ADD 1",
    )
    .unwrap();
    let r2 = ok(
        invoke(&w.node, &Call::new("ADD", "c2", "web-2", Some(&p2)), &conf),
        "ADD 2",
    )
    .unwrap();
    let v6 = |r: &serde_json::Value| {
        r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap().to_owned())
            .find(|a| a.contains(':'))
            .expect("an IPv6 address")
    };
    let (a1, a2) = (v6(&r1), v6(&r2));
    assert!(a1.starts_with("fd00:75::") && a1.ends_with("/128"), "{a1}");
    assert!(
        r1["routes"]
            .as_array()
            .unwrap()
            .contains(&json!({"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"}))
    );
    let route = sh(&p1, &["ip", "-6", "route", "show", "default"]);
    assert!(
        route.contains("via fe80::ecee:eeff:feee:eeee dev eth0"),
        "{route}"
    );
    let veth = calico_cni::naming::host_veth_name("default", "web-1");
    assert_eq!(
        sh(
            &w.node,
            &["cat", &format!("/proc/sys/net/ipv6/conf/{veth}/proxy_ndp")]
        )
        .trim(),
        "1"
    );
    let target = a2.trim_end_matches("/128").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut reached = false;
    while std::time::Instant::now() < deadline && !reached {
        reached = p1
            .exec(&["ping", "-6", "-c1", "-W1", "-n", &target])
            .unwrap()
            .status
            .success();
    }
    assert!(reached, "pod 1 cannot reach {target} over IPv6 ({a1})");
    for (c, pod, ns) in [("c1", "web-1", &p1), ("c2", "web-2", &p2)] {
        ok(
            invoke(&w.node, &Call::new("DEL", c, pod, Some(ns)), &conf),
            "DEL",
        );
    }
    assert_eq!(allocated(&w), 0);
    assert!(cali_links(&w.node).is_empty());
}
