//! The built `calico` / `calico-ipam` binaries against a real etcd and the real kernel, in a lab
//! node namespace, called as containerd calls them.

mod common;

use common::*;
use serde_json::{Value, json};

fn ip_of(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .expect("result has an address")
        .trim_end_matches("/32")
        .to_owned()
}

#[test]
fn add_check_del_status_gc_and_ping() {
    let w = World::new("10.65.0.0/24", 26);
    let conf = w.netconf();
    let pod1 = w.pod_netns("p1");
    let pod2 = w.pod_netns("p2");

    // VERSION
    let v = ok(
        invoke(
            &w.node,
            &Call::new("VERSION", "", "x", None),
            &json!({"cniVersion":"1.1.0"}),
        ),
        "VERSION",
    )
    .unwrap();
    assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));

    // STATUS against a live etcd.
    let s = invoke(&w.node, &Call::new("STATUS", "", "x", None), &conf);
    assert!(
        s.ok && s.json.is_none(),
        "STATUS: {:?} {}",
        s.json,
        s.stderr
    );

    // ADD pod1.
    let r1 = ok(
        invoke(
            &w.node,
            &Call::new("ADD", "c1", "web-1", Some(&pod1)),
            &conf,
        ),
        "ADD p1",
    )
    .unwrap();
    assert_eq!(r1["cniVersion"], "1.1.0");
    let ip1 = ip_of(&r1);
    assert!(ip1.starts_with("10.65.0."), "{r1}");
    let veth = calico_cni::naming::host_veth_name("default", "web-1");
    assert_eq!(r1["interfaces"][0]["name"], veth.as_str());
    assert_eq!(r1["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(r1["interfaces"][1]["name"], "eth0");
    assert_eq!(
        r1["interfaces"][1]["sandbox"],
        pod1.netns_path().display().to_string().as_str()
    );
    assert_eq!(r1["ips"][0]["interface"], 1);
    assert_eq!(
        r1["routes"][0],
        json!({"dst":"0.0.0.0/0","gw":"169.254.1.1"})
    );

    // The kernel: host veth with Calico's MAC, proxy ARP, the /32 route; the pod's /32 and
    // default route via 169.254.1.1.
    let link = sh(&w.node, &["ip", "-o", "link", "show", &veth]);
    assert!(
        link.contains("ee:ee:ee:ee:ee:ee") && link.contains("mtu 1440"),
        "{link}"
    );
    assert_eq!(
        sh(
            &w.node,
            &["cat", &format!("/proc/sys/net/ipv4/conf/{veth}/proxy_arp")]
        )
        .trim(),
        "1"
    );
    let routes = sh(
        &w.node,
        &["ip", "-4", "route", "show", &format!("{ip1}/32")],
    );
    assert!(
        routes.contains(&format!("dev {veth}")) && routes.contains("scope link"),
        "{routes}"
    );
    let addr = sh(&pod1, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("{ip1}/32")), "{addr}");
    let dflt = sh(&pod1, &["ip", "-4", "route", "show", "default"]);
    assert!(dflt.contains("via 169.254.1.1 dev eth0"), "{dflt}");

    // The WorkloadEndpoint.
    let weps = endpoints(&w);
    assert_eq!(weps.len(), 1);
    let wep = &weps[0];
    assert_eq!(wep.metadata.name.as_deref(), Some("node1-k8s-web--1-eth0"));
    assert_eq!(wep.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(wep.spec.orchestrator.as_deref(), Some("k8s"));
    assert_eq!(wep.spec.node.as_deref(), Some(NODE));
    assert_eq!(wep.spec.pod.as_deref(), Some("web-1"));
    assert_eq!(wep.spec.endpoint.as_deref(), Some("eth0"));
    assert_eq!(wep.spec.container_id.as_deref(), Some("c1"));
    assert_eq!(wep.spec.interface_name.as_deref(), Some(veth.as_str()));
    assert_eq!(wep.spec.ip_networks, vec![format!("{ip1}/32")]);
    assert_eq!(wep.spec.profiles, vec!["kns.default".to_string()]);

    // ADD again: same address, still one endpoint, one allocation.
    let again = ok(
        invoke(
            &w.node,
            &Call::new("ADD", "c1", "web-1", Some(&pod1)),
            &conf,
        ),
        "ADD p1 again",
    )
    .unwrap();
    assert_eq!(ip_of(&again), ip1);
    assert_eq!(allocated(&w), 1);
    assert_eq!(endpoints(&w).len(), 1);

    // CHECK with prevResult passes; after the route is removed it fails.
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = again.clone();
    ok(
        invoke(
            &w.node,
            &Call::new("CHECK", "c1", "web-1", Some(&pod1)),
            &check_conf,
        ),
        "CHECK",
    );

    // A second pod on the same node, then a real ping between them.
    let call2 = Call::new("ADD", "c2", "web-2", Some(&pod2));
    let r2 = ok(invoke(&w.node, &call2, &conf), "ADD p2").unwrap();
    let ip2 = ip_of(&r2);
    assert_ne!(ip1, ip2);
    assert!(
        pod1.wait_ping(&ip2, std::time::Duration::from_secs(10))
            .unwrap()
    );
    assert!(
        pod2.wait_ping(&ip1, std::time::Duration::from_secs(10))
            .unwrap()
    );
    let wep2 = endpoints(&w)
        .into_iter()
        .find(|e| e.spec.pod.as_deref() == Some("web-2"))
        .unwrap();
    // No Kubernetes API configured: Calico's own labels and the namespace profile only
    // (labels and service accounts from the API: tests/annotations.rs, tests/k8s_lookup.rs).
    assert_eq!(wep2.spec.profiles, vec!["kns.default".to_string()]);
    let labels = wep2.metadata.labels.clone().unwrap();
    assert_eq!(labels["projectcalico.org/namespace"], "default");
    assert_eq!(labels["projectcalico.org/orchestrator"], "k8s");
    assert_eq!(labels.len(), 2, "{labels:?}");

    sh(&w.node, &["ip", "route", "del", &format!("{ip1}/32")]);
    let bad = invoke(
        &w.node,
        &Call::new("CHECK", "c1", "web-1", Some(&pod1)),
        &check_conf,
    );
    assert!(!bad.ok);
    let msg = bad.json.unwrap()["msg"].as_str().unwrap().to_owned();
    assert!(msg.contains("no host route"), "{msg}");

    // DEL: everything of pod1 gone, twice is fine, also without the namespace.
    ok(
        invoke(
            &w.node,
            &Call::new("DEL", "c1", "web-1", Some(&pod1)),
            &conf,
        ),
        "DEL",
    );
    assert!(!cali_links(&w.node).contains(&veth));
    assert_eq!(allocated(&w), 1);
    assert_eq!(endpoints(&w).len(), 1);
    ok(
        invoke(
            &w.node,
            &Call::new("DEL", "c1", "web-1", Some(&pod1)),
            &conf,
        ),
        "DEL again",
    );
    ok(
        invoke(&w.node, &Call::new("DEL", "c1", "web-1", None), &conf),
        "DEL without netns",
    );

    // GC: pod2 valid, a third pod not: the third's address, endpoint and veth are collected.
    let pod3 = w.pod_netns("p3");
    ok(
        invoke(
            &w.node,
            &Call::new("ADD", "c3", "web-3", Some(&pod3)),
            &conf,
        ),
        "ADD p3",
    );
    assert_eq!(allocated(&w), 2);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c2", "ifname": "eth0"}]);
    ok(invoke(&w.node, &Call::new("GC", "", "x", None), &gc), "GC");
    assert_eq!(allocated(&w), 1);
    let left = endpoints(&w);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].spec.container_id.as_deref(), Some("c2"));
    assert_eq!(
        cali_links(&w.node),
        vec![calico_cni::naming::host_veth_name("default", "web-2")]
    );

    ok(
        invoke(
            &w.node,
            &Call::new("DEL", "c2", "web-2", Some(&pod2)),
            &conf,
        ),
        "DEL p2",
    );
    assert_eq!(allocated(&w), 0);
    assert!(handles(&w).is_empty());
    assert!(endpoints(&w).is_empty());
    assert!(cali_links(&w.node).is_empty());
    assert!(cali_routes(&w.node).is_empty());
}

#[test]
fn status_reports_unreachable_etcd_with_code_50() {
    let lab = calico_lab::Lab::new().unwrap();
    let node = lab.add_host(NODE, "192.168.33.11/24").unwrap();
    let conf = json!({
        "cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "calico",
        "datastore_type": "etcdv3", "etcd_endpoints": "http://127.0.0.1:2379",
        "nodename": NODE, "ipam": {"type": "calico-ipam"}
    });
    let r = invoke(&node, &Call::new("STATUS", "", "x", None), &conf);
    assert!(!r.ok);
    let e = r.json.expect("error JSON");
    assert_eq!(e["code"], 50, "{e}");
    assert_eq!(e["cniVersion"], "1.1.0");
    assert!(e["msg"].as_str().unwrap().contains("127.0.0.1:2379"), "{e}");
    // ADD with no datastore: "try again later", and nothing created.
    let pod = lab.add_namespace("p1").unwrap();
    let r = invoke(&node, &Call::new("ADD", "c1", "web-1", Some(&pod)), &conf);
    assert!(!r.ok);
    assert_eq!(r.json.unwrap()["code"], 11);
    assert!(cali_links(&node).is_empty());
}

#[test]
fn netconf_errors_are_spec_errors_naming_the_field() {
    let lab = calico_lab::Lab::new().unwrap();
    let node = lab.add_host(NODE, "192.168.33.11/24").unwrap();
    let pod = lab.add_namespace("p1").unwrap();
    let call = Call::new("ADD", "c1", "web-1", Some(&pod));
    let r = invoke(
        &node,
        &call,
        &json!({"cniVersion":"1.0.0","type":"calico","etcd_endpoints":"http://127.0.0.1:1","ipam":{"type":"calico-ipam","ipv4pool":["10.0.0.0/8"]}}),
    );
    let e = r.json.unwrap();
    assert_eq!(e["code"], 2, "{e}");
    assert_eq!(e["cniVersion"], "1.0.0");
    assert!(e["msg"].as_str().unwrap().contains("ipam.ipv4pool"), "{e}");
    let r = invoke(
        &node,
        &call,
        &json!({"cniVersion":"1.0.0","type":"calico","mtu":"big"}),
    );
    let e = r.json.unwrap();
    assert_eq!(e["code"], 6, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("mtu"), "{e}");
    let r = invoke(&node, &call, &json!({"cniVersion":"0.1.0","type":"calico"}));
    assert_eq!(r.json.unwrap()["code"], 1);
    let mut c = Call::new("ADD", "c1", "web-1", Some(&pod));
    c.args = "K8S_POD_NAME=a;FOO=b".into();
    let r = invoke(&node, &c, &json!({"cniVersion":"1.0.0","type":"calico"}));
    assert_eq!(r.json.unwrap()["code"], 4);
}
