//! ADD is all or nothing: a failure after any step, a bad namespace, a name clash in the pod
//! or an exhausted pool leaves no veth, route, address, allocation or endpoint. And 50
//! concurrent ADDs then DELs give distinct addresses and leave nothing behind.

mod common;

use common::*;

/// Nothing of any pod remains on the node or in etcd.
fn assert_clean(w: &World, what: &str) {
    assert!(
        cali_links(&w.node).is_empty(),
        "{what}: links {:?}",
        cali_links(&w.node)
    );
    assert!(
        cali_routes(&w.node).is_empty(),
        "{what}: routes {:?}",
        cali_routes(&w.node)
    );
    assert_eq!(allocated(w), 0, "{what}: addresses still allocated");
    assert!(handles(w).is_empty(), "{what}: handles {:?}", handles(w));
    assert!(endpoints(w).is_empty(), "{what}: endpoints left");
}

#[test]
fn a_failure_after_every_step_leaves_nothing() {
    let w = World::new("10.66.0.0/24", 26);
    let conf = w.netconf();
    let pod = w.pod_netns("p1");
    for step in calico_cni::plugin::ADD_STEPS {
        let mut call = Call::new("ADD", "c1", "web-1", Some(&pod));
        call.extra_env
            .push(("CALICO_CNI_FAULT".into(), step.to_string()));
        let r = invoke(&w.node, &call, &conf);
        assert!(!r.ok, "fault at {step} must fail ADD");
        let e = r.json.expect("error JSON");
        assert_eq!(e["code"], 100, "{e}");
        assert!(e["msg"].as_str().unwrap().contains(step), "{e}");
        assert_clean(&w, step);
        let inside = sh(&pod, &["ip", "-o", "link", "show"]);
        assert!(
            !inside.contains("eth0"),
            "{step}: pod still has eth0: {inside}"
        );
    }
    // And without a fault the same call succeeds: the failures left no obstacle.
    ok(
        invoke(&w.node, &Call::new("ADD", "c1", "web-1", Some(&pod)), &conf),
        "ADD after faults",
    );
    ok(
        invoke(&w.node, &Call::new("DEL", "c1", "web-1", Some(&pod)), &conf),
        "DEL",
    );
    assert_clean(&w, "after DEL");
}

#[test]
fn real_failures_leave_nothing() {
    let w = World::new("10.67.0.0/30", 30);
    let conf = w.netconf();

    // A namespace path that does not exist.
    let mut call = Call::new("ADD", "c1", "web-1", None);
    call.netns = Some("/run/netns/does-not-exist-cni".into());
    let r = invoke(&w.node, &call, &conf);
    assert!(!r.ok);
    let msg = r.json.unwrap()["msg"].as_str().unwrap().to_owned();
    assert!(msg.contains("step veth"), "{msg}");
    assert_clean(&w, "bad netns");

    // The pod already has an eth0 (name clash in the pod).
    let pod = w.pod_netns("p1");
    sh(
        &pod,
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ],
    );
    let r = invoke(&w.node, &Call::new("ADD", "c1", "web-1", Some(&pod)), &conf);
    assert!(!r.ok);
    let msg = r.json.unwrap()["msg"].as_str().unwrap().to_owned();
    assert!(msg.contains("step veth") && msg.contains("eth0"), "{msg}");
    assert_clean(&w, "eth0 clash");
    sh(&pod, &["ip", "link", "del", "eth0"]);

    // Exhaust the /30 (4 addresses), then one more ADD must fail cleanly.
    let pods: Vec<_> = (0..4).map(|i| w.pod_netns(&format!("q{i}"))).collect();
    for (i, p) in pods.iter().enumerate() {
        let cid = format!("q{i}");
        let name = format!("q-{i}");
        ok(
            invoke(&w.node, &Call::new("ADD", &cid, &name, Some(p)), &conf),
            "ADD to fill the pool",
        );
    }
    let r = invoke(&w.node, &Call::new("ADD", "c9", "web-9", Some(&pod)), &conf);
    assert!(!r.ok);
    let msg = r.json.unwrap()["msg"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("step ipam") && msg.contains("no free"),
        "{msg}"
    );
    assert_eq!(allocated(&w), 4);
    assert_eq!(endpoints(&w).len(), 4);
    assert_eq!(cali_links(&w.node).len(), 4);
    assert!(!sh(&pod, &["ip", "-o", "link", "show"]).contains("eth0"));
    for (i, p) in pods.iter().enumerate() {
        let cid = format!("q{i}");
        let name = format!("q-{i}");
        ok(
            invoke(&w.node, &Call::new("DEL", &cid, &name, Some(p)), &conf),
            "DEL",
        );
    }
    assert_clean(&w, "after draining the pool");
}

#[test]
fn fifty_parallel_adds_and_dels() {
    const N: usize = 50;
    let w = World::new("10.68.0.0/22", 26);
    let conf = w.netconf();
    let pods: Vec<_> = (0..N).map(|i| w.pod_netns(&format!("p{i}"))).collect();
    let run = |command: &'static str| -> Vec<Option<serde_json::Value>> {
        std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let (node, conf) = (&w.node, &conf);
                    s.spawn(move || {
                        let cid = format!("ctr{i}");
                        let pod = format!("pod-{i}");
                        let r = invoke(node, &Call::new(command, &cid, &pod, Some(p)), conf);
                        ok(r, command)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let results = run("ADD");
    let mut ips: Vec<String> = results
        .iter()
        .map(|r| {
            r.as_ref().unwrap()["ips"][0]["address"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), N, "duplicate addresses handed out");
    assert_eq!(allocated(&w), N);
    assert_eq!(endpoints(&w).len(), N);
    assert_eq!(cali_links(&w.node).len(), N);
    assert_eq!(cali_routes(&w.node).len(), N);
    run("DEL");
    assert_clean(&w, "after 50 DELs");
}
