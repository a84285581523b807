//! Calico's pod annotations against the real etcd and kernel, in a lab node namespace. The pod's
//! labels and annotations enter through `Plugin::add_with_pod_info`, the same `PodInfo` the
//! Kubernetes look-up produces (tests/k8s_lookup.rs proves that look-up with kube's client);
//! there is no API server on this machine. DEL and the checks go through the real binary.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_cni::env::CniEnv;
use calico_cni::netconf::NetConf;
use calico_cni::plugin::{Plugin, PluginError};
use calico_cni::pod::{
    ANN_FLOATING_IPS, ANN_IP_ADDRS, ANN_IP_ADDRS_NO_IPAM, ANN_IPV4_POOLS, PodInfo,
};
use calico_cni::spec::CniResult;
use calico_lab::Host;
use common::*;
use serde_json::{Value, json};

/// ADD in-process, in the node namespace, with `info` as the API would have given it.
fn add_with(
    w: &World,
    conf: &Value,
    cid: &str,
    pod: &str,
    netns: &Host,
    info: PodInfo,
) -> Result<CniResult, PluginError> {
    let vars = BTreeMap::from([
        ("CNI_COMMAND", "ADD".to_owned()),
        ("CNI_CONTAINERID", cid.to_owned()),
        ("CNI_NETNS", netns.netns_path().display().to_string()),
        ("CNI_IFNAME", "eth0".to_owned()),
        (
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
        ),
        ("CNI_PATH", cni_path()),
    ]);
    let env = CniEnv::from_lookup(|k| vars.get(k).cloned()).expect("env");
    let stdin = conf.to_string().into_bytes();
    let plugin = Plugin::new(NetConf::parse(&stdin).expect("netconf"), env, stdin);
    w.node
        .run_async(|| async move { plugin.add_with_pod_info(info).await })
        .expect("run in node")
}

fn annotated(pairs: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
        annotations: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        service_account: Some("builder".into()),
        ..Default::default()
    }
}

fn wep_of(w: &World, pod: &str) -> Option<calico_api::WorkloadEndpoint> {
    endpoints(w)
        .into_iter()
        .find(|e| e.spec.pod.as_deref() == Some(pod))
}

#[test]
fn ip_addrs_no_ipam_and_floating_ips() {
    let w = World::new("10.75.0.0/24", 26);
    let mut conf = w.netconf();
    conf["feature_control"] = json!({"ip_addrs_no_ipam": true, "floating_ips": true});
    let p1 = w.pod_netns("p1");
    let info = annotated(&[
        (ANN_IP_ADDRS_NO_IPAM, r#"["10.99.0.9"]"#),
        (ANN_FLOATING_IPS, r#"["203.0.113.7"]"#),
    ]);
    let r = add_with(&w, &conf, "c1", "web-1", &p1, info).expect("ADD");
    assert_eq!(r.ips[0].address.to_string(), "10.99.0.9/32");
    // IPAM was not asked: nothing allocated, no handle.
    assert_eq!(allocated(&w), 0);
    assert!(handles(&w).is_empty());
    let addr = sh(&p1, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("10.99.0.9/32"), "{addr}");
    let veth = calico_cni::naming::host_veth_name("default", "web-1");
    let route = sh(&w.node, &["ip", "-4", "route", "show", "10.99.0.9/32"]);
    assert!(route.contains(&format!("dev {veth}")), "{route}");
    let wep = wep_of(&w, "web-1").expect("endpoint");
    assert_eq!(wep.spec.ip_networks, ["10.99.0.9/32"]);
    assert_eq!(wep.spec.ip_nats.len(), 1);
    assert_eq!(wep.spec.ip_nats[0].internal_ip, "10.99.0.9");
    assert_eq!(wep.spec.ip_nats[0].external_ip, "203.0.113.7");
    // Labels and profiles from the pod.
    let labels = wep.metadata.labels.clone().unwrap();
    assert_eq!(labels["app"], "web");
    assert_eq!(labels["projectcalico.org/serviceaccount"], "builder");
    assert_eq!(wep.spec.profiles, ["kns.default", "ksa.default.builder"]);
    assert_eq!(wep.spec.service_account_name.as_deref(), Some("builder"));

    // Flags off: an error naming the flag, and nothing created.
    let p2 = w.pod_netns("p2");
    let mut off = w.netconf();
    off["feature_control"] = json!({"ip_addrs_no_ipam": false, "floating_ips": false});
    for (ann, value, flag) in [
        (
            ANN_IP_ADDRS_NO_IPAM,
            r#"["10.99.0.10"]"#,
            "ip_addrs_no_ipam",
        ),
        (ANN_FLOATING_IPS, r#"["203.0.113.8"]"#, "floating_ips"),
    ] {
        let e = add_with(&w, &off, "c2", "web-2", &p2, annotated(&[(ann, value)]))
            .expect_err("feature off must fail ADD");
        assert!(e.to_string().contains(flag), "{e}");
        assert!(wep_of(&w, "web-2").is_none(), "{flag}: endpoint left");
        assert_eq!(cali_links(&w.node), vec![veth.clone()], "{flag}: veth left");
        assert_eq!(allocated(&w), 0, "{flag}: address left");
        assert!(!sh(&p2, &["ip", "-o", "link", "show"]).contains("eth0"));
    }

    // DEL through the binary: the endpoint, veth and route go; IPAM has nothing to release.
    ok(
        invoke(&w.node, &Call::new("DEL", "c1", "web-1", Some(&p1)), &conf),
        "DEL",
    );
    assert!(endpoints(&w).is_empty());
    assert!(cali_links(&w.node).is_empty());
    assert!(cali_routes(&w.node).is_empty());
}

#[test]
fn pool_and_address_annotations() {
    let w = World::new("10.76.0.0/24", 26);
    w.ds(|ds| async move {
        let p: calico_api::IPPool = serde_json::from_value(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "pool2"}, "spec": {"cidr": "10.77.0.0/24", "blockSize": 26}
        }))
        .unwrap();
        ds.create(&p).await.unwrap();
    });
    let conf = w.netconf();
    let in_pool = |r: &CniResult, prefix: &str| {
        let a = r.ips[0].address.addr().to_string();
        assert!(a.starts_with(prefix), "{a} not in {prefix}*");
    };
    // Namespace annotation by pool NAME: the pod gets pool2.
    let p1 = w.pod_netns("p1");
    let ns_only = PodInfo {
        namespace_annotations: BTreeMap::from([(ANN_IPV4_POOLS.into(), r#"["pool2"]"#.into())]),
        ..Default::default()
    };
    let r = add_with(&w, &conf, "c1", "web-1", &p1, ns_only.clone()).expect("ADD ns pool");
    in_pool(&r, "10.77.0.");
    // The pod's annotation (a CIDR) wins over the namespace's.
    let p2 = w.pod_netns("p2");
    let mut both = ns_only;
    both.annotations
        .insert(ANN_IPV4_POOLS.into(), r#"["10.76.0.0/24"]"#.into());
    let r = add_with(&w, &conf, "c2", "web-2", &p2, both).expect("ADD pod pool");
    in_pool(&r, "10.76.0.");
    // ipAddrs: exactly that address, through IPAM (allocated, under the container's handle).
    let p3 = w.pod_netns("p3");
    let r = add_with(
        &w,
        &conf,
        "c3",
        "web-3",
        &p3,
        annotated(&[(ANN_IP_ADDRS, r#"["10.76.0.50"]"#)]),
    )
    .expect("ADD ipAddrs");
    assert_eq!(
        r.ips[0].address.addr(),
        "10.76.0.50".parse::<IpAddr>().unwrap()
    );
    assert_eq!(allocated(&w), 3);
    assert!(handles(&w).contains(&"/calico/ipam/v2/handle/k8s-pod-network.c3".to_owned()));
    // A new sandbox of the same pod with the same ipAddrs, before the old one's DEL: the old
    // endpoint's address is released and re-assigned to the new container (Calico's order).
    let p3b = w.pod_netns("p3b");
    let r = add_with(
        &w,
        &conf,
        "c3b",
        "web-3",
        &p3b,
        annotated(&[(ANN_IP_ADDRS, r#"["10.76.0.50"]"#)]),
    )
    .expect("ADD ipAddrs, new sandbox");
    assert_eq!(
        r.ips[0].address.addr(),
        "10.76.0.50".parse::<IpAddr>().unwrap()
    );
    assert_eq!(allocated(&w), 3);
    assert_eq!(
        wep_of(&w, "web-3").unwrap().spec.container_id.as_deref(),
        Some("c3b")
    );
    // The old sandbox's DEL leaves the new one's address, endpoint and veth alone.
    ok(
        invoke(&w.node, &Call::new("DEL", "c3", "web-3", Some(&p3)), &conf),
        "DEL old sandbox",
    );
    assert_eq!(allocated(&w), 3);
    assert!(wep_of(&w, "web-3").is_some());
    assert_eq!(cali_links(&w.node).len(), 3);
    // An unknown pool name fails ADD naming it, leaving nothing.
    let p4 = w.pod_netns("p4");
    let e = add_with(
        &w,
        &conf,
        "c4",
        "web-4",
        &p4,
        annotated(&[(ANN_IPV4_POOLS, r#"["no-such-pool"]"#)]),
    )
    .expect_err("unknown pool");
    assert!(e.to_string().contains("no-such-pool"), "{e}");
    assert_eq!(allocated(&w), 3);
    assert_eq!(cali_links(&w.node).len(), 3);
    for (cid, pod, ns) in [
        ("c1", "web-1", &p1),
        ("c2", "web-2", &p2),
        ("c3b", "web-3", &p3b),
    ] {
        ok(
            invoke(&w.node, &Call::new("DEL", cid, pod, Some(ns)), &conf),
            "DEL",
        );
    }
    assert_eq!(allocated(&w), 0);
    assert!(endpoints(&w).is_empty());
    assert!(cali_links(&w.node).is_empty());
}

/// The binary with a kubeconfig whose API server does not answer (a closed loopback port in
/// the node namespace): ADD fails at the pod step, before anything is created.
#[test]
fn unreachable_api_server_fails_add_cleanly() {
    let w = World::new("10.78.0.0/24", 26);
    let kubeconfig = w.lab.dir().join("calico-kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: http://127.0.0.1:1\nusers:\n- name: cni\n  user: {}\ncontexts:\n- name: c\n  context:\n    cluster: local\n    user: cni\ncurrent-context: c\n",
    )
    .unwrap();
    let mut conf = w.netconf();
    conf["kubernetes"] = json!({"kubeconfig": kubeconfig});
    let p1 = w.pod_netns("p1");
    let r = invoke(&w.node, &Call::new("ADD", "c1", "web-1", Some(&p1)), &conf);
    assert!(!r.ok);
    let e = r.json.expect("error JSON");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("step pod") && msg.contains("from the Kubernetes API"),
        "{e}"
    );
    assert_eq!(allocated(&w), 0);
    assert!(endpoints(&w).is_empty());
    assert!(cali_links(&w.node).is_empty());
}
