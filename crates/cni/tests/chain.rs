//! A conflist chaining `calico` with Debian's reference `tuning`, `portmap` and `bandwidth`,
//! run as libcni runs a list: ADD in order, each plugin's result as the next one's
//! `prevResult`; CHECK with the final result; DEL in reverse order.

mod common;

use common::*;
use serde_json::{Value, json};

fn plugins(w: &World) -> Vec<Value> {
    let mut calico = w.netconf();
    if let Some(o) = calico.as_object_mut() {
        o.remove("cniVersion");
        o.remove("name");
    }
    vec![
        calico,
        json!({"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}}),
        json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
    ]
}

/// The conf libcni hands one plugin of the list.
fn conf_for(plugin: &Value, prev: Option<&Value>) -> Value {
    let mut c = plugin.clone();
    c["cniVersion"] = json!("1.0.0");
    c["name"] = json!("k8s-pod-network");
    let caps = plugin.get("capabilities").cloned().unwrap_or(json!({}));
    let mut rc = serde_json::Map::new();
    if caps.get("portMappings").is_some() {
        rc.insert(
            "portMappings".into(),
            json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
        );
    }
    if caps.get("bandwidth").is_some() {
        rc.insert(
            "bandwidth".into(),
            json!({"ingressRate": 8_000_000, "ingressBurst": 1_000_000}),
        );
    }
    if !rc.is_empty() {
        c["runtimeConfig"] = Value::Object(rc);
    }
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

fn call<'a>(plugin: &'a Value, command: &'a str, pod: &Host) -> Call<'a> {
    let mut c = Call::new(command, "c1", "web-1", Some(pod));
    let name = plugin["type"].as_str().unwrap();
    c.plugin = if name == "calico" {
        "calico"
    } else {
        match name {
            "tuning" => "/usr/lib/cni/tuning",
            "portmap" => "/usr/lib/cni/portmap",
            _ => "/usr/lib/cni/bandwidth",
        }
    };
    c
}

use calico_lab::Host;

#[test]
fn calico_tuning_portmap_bandwidth_chain() {
    let w = World::new("10.69.0.0/24", 26);
    let pod = w.pod_netns("p1");
    let list = plugins(&w);

    let mut prev: Option<Value> = None;
    for p in &list {
        let r = invoke(&w.node, &call(p, "ADD", &pod), &conf_for(p, prev.as_ref()));
        let out = ok(r, &format!("ADD {}", p["type"]));
        prev = Some(out.expect("every plugin prints a result"));
    }
    let result = prev.unwrap();
    assert_eq!(result["cniVersion"], "1.0.0");
    let ip = result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .to_owned();
    let veth = calico_cni::naming::host_veth_name("default", "web-1");

    // tuning set the pod's sysctl, bandwidth shaped the host veth, portmap added its DNAT.
    assert_eq!(
        sh(&pod, &["cat", "/proc/sys/net/core/somaxconn"]).trim(),
        "512"
    );
    let qdisc = sh(&w.node, &["tc", "qdisc", "show", "dev", &veth]);
    assert!(qdisc.contains("tbf"), "{qdisc}");
    let nat = sh(&w.node, &["iptables-save", "-t", "nat"]);
    assert!(nat.contains(&format!("{ip}:80")), "{nat}");

    // CHECK every plugin with the final result.
    for p in &list {
        let r = invoke(
            &w.node,
            &call(p, "CHECK", &pod),
            &conf_for(p, Some(&result)),
        );
        // Debian's portmap CHECK looks for IPv6 rules an IPv4-only ADD never made
        // (containernetworking/plugins#819): that one known failure is tolerated.
        let known_portmap_bug = p["type"] == "portmap"
            && !r.ok
            && r.json
                .as_ref()
                .and_then(|j| j["msg"].as_str())
                .is_some_and(|m| m.contains("could not check ipv6 dnat"));
        if !known_portmap_bug {
            ok(r, &format!("CHECK {}", p["type"]));
        }
    }

    // DEL in reverse order.
    for p in list.iter().rev() {
        let r = invoke(&w.node, &call(p, "DEL", &pod), &conf_for(p, Some(&result)));
        ok(r, &format!("DEL {}", p["type"]));
    }
    assert!(cali_links(&w.node).is_empty());
    assert_eq!(allocated(&w), 0);
    assert!(endpoints(&w).is_empty());
    let nat = sh(&w.node, &["iptables-save", "-t", "nat"]);
    assert!(!nat.contains(&format!("{ip}:80")), "{nat}");
}
