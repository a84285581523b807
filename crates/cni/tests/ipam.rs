//! IPAM paths: a requested address (CNI_ARGS `IP`), the
//! standalone `calico-ipam` binary, and delegation to another IPAM plugin through CNI_PATH.

mod common;

use common::*;
use serde_json::json;

#[test]
fn requested_address() {
    let w = World::new("10.70.0.0/24", 26);
    let conf = w.netconf();
    let p1 = w.pod_netns("p1");
    let mut c = Call::new("ADD", "c1", "web-1", Some(&p1));
    c.args.push_str(";IP=10.70.0.77");
    let r = ok(invoke(&w.node, &c, &conf), "ADD with IP").unwrap();
    assert_eq!(r["ips"][0]["address"], "10.70.0.77/32");
    // A taken address fails cleanly.
    let p3 = w.pod_netns("p3");
    let mut c = Call::new("ADD", "c3", "web-3", Some(&p3));
    c.args.push_str(";IP=10.70.0.77");
    let r = invoke(&w.node, &c, &conf);
    assert!(!r.ok);
    assert!(
        r.json.unwrap()["msg"]
            .as_str()
            .unwrap()
            .contains("already allocated")
    );
    assert_eq!(allocated(&w), 1);
    assert_eq!(cali_links(&w.node).len(), 1);
}

#[test]
fn calico_ipam_binary_alone() {
    let w = World::new("10.72.0.0/24", 26);
    let mut conf = w.netconf();
    conf["cniVersion"] = json!("0.4.0");
    let pod = w.pod_netns("p1");
    let mut c = Call::new("ADD", "c1", "web-1", Some(&pod));
    c.plugin = "calico-ipam";
    let r = ok(invoke(&w.node, &c, &conf), "calico-ipam ADD").unwrap();
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(r["ips"][0]["version"], "4");
    assert!(
        r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.72.0.")
    );
    assert_eq!(allocated(&w), 1);
    assert_eq!(
        handles(&w),
        vec!["/calico/ipam/v2/handle/k8s-pod-network.c1"]
    );
    // Same container again: same address.
    let again = ok(invoke(&w.node, &c, &conf), "calico-ipam ADD again").unwrap();
    assert_eq!(again["ips"], r["ips"]);
    c.command = "CHECK";
    ok(invoke(&w.node, &c, &conf), "calico-ipam CHECK");
    c.command = "DEL";
    ok(invoke(&w.node, &c, &conf), "calico-ipam DEL");
    assert_eq!(allocated(&w), 0);
    c.command = "CHECK";
    assert!(!invoke(&w.node, &c, &conf).ok);
}

#[test]
fn delegates_to_host_local_through_cni_path() {
    let w = World::new("10.73.0.0/24", 26);
    let mut conf = w.netconf();
    // Debian's host-local speaks up to 1.0.0.
    conf["cniVersion"] = json!("1.0.0");
    let data = w.lab.dir().join("host-local");
    conf["ipam"] = json!({
        "type": "host-local",
        "ranges": [[{"subnet": "10.74.0.0/24"}]],
        "dataDir": data
    });
    let pod = w.pod_netns("p1");
    let r = ok(
        invoke(&w.node, &Call::new("ADD", "c1", "web-1", Some(&pod)), &conf),
        "ADD via host-local",
    )
    .unwrap();
    let ip = r["ips"][0]["address"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("10.74.0."), "{r}");
    assert_eq!(allocated(&w), 0, "calico-ipam must not be used");
    let addr = sh(&pod, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        addr.contains(&format!("{}/32", ip.split('/').next().unwrap())),
        "{addr}"
    );
    let files = std::fs::read_dir(data.join("k8s-pod-network"))
        .unwrap()
        .count();
    assert!(files >= 1);
    ok(
        invoke(&w.node, &Call::new("DEL", "c1", "web-1", Some(&pod)), &conf),
        "DEL via host-local",
    );
    let leases: Vec<_> = std::fs::read_dir(data.join("k8s-pod-network"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("10.74."))
        .collect();
    assert!(leases.is_empty(), "host-local lease not released");
    // STATUS (spec 1.1.0) is passed on to the delegated IPAM plugin. Debian's host-local
    // speaks up to 1.0.0 and has no STATUS: with a 1.1.0 netconf it fails, so we report 50
    // naming it (its ADD would fail too). Below 1.1.0 there is no STATUS to delegate.
    ok(
        invoke(&w.node, &Call::new("STATUS", "", "x", None), &conf),
        "STATUS 1.0.0",
    );
    let mut v11 = conf.clone();
    v11["cniVersion"] = json!("1.1.0");
    let r = invoke(&w.node, &Call::new("STATUS", "", "x", None), &v11);
    assert!(!r.ok);
    let e = r.json.expect("error JSON");
    assert_eq!(e["code"], 50, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("host-local"), "{e}");
    assert!(cali_links(&w.node).is_empty());
    assert!(endpoints(&w).is_empty());
}
