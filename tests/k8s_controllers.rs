//! calico-kube-controllers on the real cluster (crates/lab/src/cluster), one cluster, in order:
//!
//! 1. Two replicas (`helm upgrade --set controllers.replicas=2`), one on each node (host
//!    network, one metrics port per node), elect one leader on the chart's Lease
//!    (kube-system/calico-kube-controllers): the Lease names one of the two pods, that pod's
//!    /metrics says `calico_controllers_leader 1` and the other's `0`, and only the holder's log
//!    says it started the controllers.
//! 2. Failure cases. (a) The leader's process is SIGKILLed: the kubelet restarts it in the same
//!    pod (same identity), one replica leads afterwards and an IPPool applied with kubectl
//!    reaches the Calico etcd. (b) The leading pod is deleted (SIGTERM: it stops and gives the
//!    Lease up): another replica (the standing-by one, or the Deployment's replacement if it
//!    starts first) takes the Lease within the lease duration (15 s) plus one retry period
//!    (5 s), an IPPool applied after it reaches etcd, and with two replicas again one leads and
//!    the other stands by.
//! 3. Deleting a Node frees its IPAM through the controllers: node2 dies (kubelet and
//!    calico-node killed) with a pod on it, its Node is deleted; the pod's address stays
//!    allocated while the Pod object exists (Calico never frees an address a pod may use), the
//!    pod garbage collector of kube-controller-manager deletes the orphaned Pod, then the
//!    controllers release the address, node2's block affinities and its Calico Node.

mod k8s_common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use calico_lab::cluster::KubeLab;
use k8s_common::*;

const NS: &str = "kube-system";
/// The binary's lease duration (src/bin/calico-kube-controllers.rs) and its retry period
/// (a third of it, crates/controllers/src/leader.rs).
const LEASE: Duration = Duration::from_secs(15);
const RETRY: Duration = Duration::from_secs(5);

/// (pod, node, node IP) of each controllers replica that is Ready.
fn replicas(kube: &KubeLab) -> Vec<(String, String, String)> {
    let out = kube
        .kubectl_ok(&[
            "get", "pods", "-n", NS, "-l", "app.kubernetes.io/name=calico-kube-controllers",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.hostIP} {.status.conditions[?(@.type==\"Ready\")].status} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
        .expect("controllers pods");
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 4 && w[3] == "True")
                .then(|| (w[0].to_owned(), w[1].to_owned(), w[2].to_owned()))
        })
        .collect()
}

fn holder(kube: &KubeLab) -> String {
    kube.kubectl_ok(&[
        "get",
        "lease",
        "calico-kube-controllers",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .expect("lease")
    .trim()
    .to_owned()
}

/// `calico_controllers_leader` from the replica's /metrics on its node (host network), read
/// from the control plane's host across the LAN.
fn leader_gauge(kube: &KubeLab, node_ip: &str) -> Option<u8> {
    let out = kube
        .control_plane()
        .host()
        .exec(&[
            "curl",
            "-s",
            "-m",
            "5",
            &format!("http://{node_ip}:9094/metrics"),
        ])
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        l.strip_prefix("calico_controllers_leader ")?
            .trim()
            .parse()
            .ok()
    })
}

/// PIDs of processes whose executable is `exe` running in `netns` (a node's network
/// namespace; host-network pods share it) and, if given, whose environment has `env`.
fn pids_in(netns: &std::path::Path, exe: &str, env: Option<&str>) -> Vec<i32> {
    let want = std::fs::metadata(netns).expect("netns").ino();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let dir = entry.path();
        let same_ns = std::fs::metadata(dir.join("ns/net")).is_ok_and(|m| m.ino() == want);
        let is_exe = std::fs::read_link(dir.join("exe"))
            .is_ok_and(|p| p.file_name().is_some_and(|n| n == exe));
        let has_env = env.is_none_or(|e| {
            std::fs::read(dir.join("environ"))
                .is_ok_and(|b| b.split(|c| *c == 0).any(|v| v == e.as_bytes()))
        });
        if same_ns && is_exe && has_env {
            pids.push(pid);
        }
    }
    pids
}

/// SIGKILL (a crash) of a PID this test found inside a lab node's network namespace.
fn sigkill(pid: i32) {
    let out = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .output()
        .expect("kill");
    assert!(out.status.success(), "kill -KILL {pid}: {}", text(&out));
}

/// `kubectl apply` of a disabled IPPool, then waits until the controllers mirrored it into
/// the Calico etcd.
fn ippool_reaches_etcd(kube: &KubeLab, name: &str, cidr: &str) {
    apply(
        kube,
        name,
        &format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n  blockSize: 30\n  disabled: true\n"
        ),
    );
    wait_for(
        &format!("IPPool {name} in the Calico etcd"),
        Duration::from_secs(60),
        || {
            let out = kube
                .calicoctl(&calicoctl(), &["get", "ippool", name, "-o", "yaml"])
                .ok()?;
            (out.status.success() && text(&out).contains(cidr)).then_some(())
        },
    );
}

fn etcd_get(kube: &KubeLab, args: &[&str]) -> String {
    let mut argv = vec!["etcdctl", "--dial-timeout=2s", "--command-timeout=5s"];
    let ep = format!("--endpoints={}", kube.calico_etcd_endpoint());
    argv.push(&ep);
    argv.extend_from_slice(args);
    kube.etcd_host().exec_ok(&argv).expect("etcdctl")
}

#[test]
fn controllers_elect_one_leader_hand_over_and_free_a_deleted_nodes_ipam() {
    let started = Instant::now();
    let (mut kube, _images) = cluster_with_calico(started, &[]);

    // 1. Two replicas, one leader.
    let out = kube
        .helm(
            &[
                "upgrade",
                "calico-rs",
                &chart().display().to_string(),
                "-n",
                NS,
                "--reuse-values",
                "--set",
                "controllers.replicas=2",
            ],
            Duration::from_secs(180),
        )
        .expect("helm");
    assert!(out.status.success(), "helm upgrade: {}", text(&out));
    let pods = wait_for(
        "two Ready controllers replicas",
        Duration::from_secs(300),
        || {
            let r = replicas(&kube);
            (r.len() == 2).then_some(r)
        },
    );
    assert_ne!(pods[0].1, pods[1].1, "both replicas on one node: {pods:?}");
    let leader = wait_for(
        "the Lease to name a replica",
        Duration::from_secs(60),
        || {
            let h = holder(&kube);
            pods.iter().find(|p| p.0 == h).cloned()
        },
    );
    let follower = pods
        .iter()
        .find(|p| p.0 != leader.0)
        .cloned()
        .expect("follower");
    say(
        started,
        &format!(
            "leader {} on {}, follower {} on {}",
            leader.0, leader.1, follower.0, follower.1
        ),
    );
    wait_for("the leader gauges", Duration::from_secs(60), || {
        (leader_gauge(&kube, &leader.2) == Some(1) && leader_gauge(&kube, &follower.2) == Some(0))
            .then_some(())
    });
    let log = |pod: &str| {
        kube.kubectl_ok(&["logs", "-n", NS, pod])
            .unwrap_or_default()
    };
    assert!(
        log(&leader.0).contains("acquired the Lease"),
        "{}",
        log(&leader.0)
    );
    assert!(
        !log(&follower.0).contains("acquired the Lease"),
        "the follower started controllers: {}",
        log(&follower.0)
    );

    // 2a. Kill the leader's process. The kubelet restarts the container in the same pod: the
    // same identity, which resumes the Lease it still holds (as with client-go's election
    // keyed on the pod name), unless the restart took longer than the lease and the follower
    // took it over. Either way exactly one replica leads and reconciliation goes on.
    let node_ns = kube
        .nodes()
        .iter()
        .find(|n| n.name() == leader.1)
        .expect("leader's node")
        .host()
        .netns_path();
    let pids = pids_in(
        &node_ns,
        "calico-kube-controllers",
        Some(&format!("POD_NAME={}", leader.0)),
    );
    assert_eq!(pids.len(), 1, "the leader's process: {pids:?}");
    sigkill(pids[0]);
    wait_for(
        "the killed leader's container to restart",
        Duration::from_secs(180),
        || {
            let restarts = kube
                .kubectl_ok(&[
                    "get",
                    "pod",
                    &leader.0,
                    "-n",
                    NS,
                    "-o",
                    "jsonpath={.status.containerStatuses[0].restartCount}",
                ])
                .ok()?;
            (restarts.trim().parse::<u32>().ok()? >= 1 && replicas(&kube).len() == 2).then_some(())
        },
    );
    let after_kill = wait_for("one leader after the kill", Duration::from_secs(60), || {
        let h = holder(&kube);
        let (l, f) = (
            leader_gauge(&kube, &leader.2)?,
            leader_gauge(&kube, &follower.2)?,
        );
        match (h == leader.0, h == follower.0, l, f) {
            (true, false, 1, 0) | (false, true, 0, 1) => Some(h),
            _ => None,
        }
    });
    say(
        started,
        &format!("after the kill the Lease is held by {after_kill}"),
    );
    ippool_reaches_etcd(&kube, "after-kill", "10.246.0.0/28");

    // 2b. Delete the leading pod: on SIGTERM it stops and gives the Lease up; another
    // replica (the standing-by one, or the Deployment's replacement pod if it starts first)
    // takes it within the lease plus one retry, and reconciliation continues.
    let old = if after_kill == leader.0 {
        &leader
    } else {
        &follower
    };
    let deleted = Instant::now();
    kube.kubectl_ok(&["delete", "pod", &old.0, "-n", NS, "--wait=false"])
        .expect("delete the leading pod");
    let limit = deleted + LEASE + RETRY + Duration::from_secs(20);
    let new_holder = loop {
        let h = holder(&kube);
        if !h.is_empty() && h != old.0 {
            break h;
        }
        if Instant::now() > limit {
            let dump = |args: &[&str]| kube.kubectl(args).map(|o| text(&o)).unwrap_or_default();
            panic!(
                "no other replica took the Lease:\n{}\n{}",
                dump(&[
                    "get",
                    "lease",
                    "calico-kube-controllers",
                    "-n",
                    NS,
                    "-o",
                    "yaml"
                ]),
                dump(&["get", "pods", "-n", NS, "-o", "wide"]),
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let handover = deleted.elapsed();
    say(
        started,
        &format!("Lease taken by {new_holder} {handover:.1?} after the leading pod was deleted"),
    );
    assert!(
        handover <= LEASE + RETRY + Duration::from_secs(3),
        "hand-over took {handover:?}, more than the lease ({LEASE:?}) plus a retry ({RETRY:?})"
    );
    ippool_reaches_etcd(&kube, "after-failover", "10.246.0.16/28");
    // Two replicas again (the Deployment replaced the deleted pod): the holder leads, the
    // other stands by.
    wait_for(
        "two replicas, the holder leading and the other standing by",
        Duration::from_secs(180),
        || {
            let r = replicas(&kube);
            let lead = r.iter().find(|p| p.0 == new_holder)?;
            let other = r.iter().find(|p| p.0 != new_holder && p.0 != old.0)?;
            (r.len() == 2
                && leader_gauge(&kube, &lead.2) == Some(1)
                && leader_gauge(&kube, &other.2) == Some(0))
            .then_some(())
        },
    );
    assert_eq!(holder(&kube), new_holder, "the Lease moved again");

    // 3. Node deletion frees the node's IPAM.
    start_pods(&kube, &[("bbox2", "node2")]);
    let ip = pod_ip(&kube, "bbox2");
    let affinities = etcd_get(
        &kube,
        &[
            "get",
            "--prefix",
            "--keys-only",
            "/calico/ipam/v2/host/node2/",
        ],
    );
    assert!(
        affinities.contains("/block/"),
        "node2 has no block affinity: {affinities}"
    );
    let node2 = kube.node_mut("node2").expect("node2");
    node2.kill_kubelet();
    let node2_ns = node2.host().netns_path();
    for pid in pids_in(&node2_ns, "calico-node", None) {
        sigkill(pid);
    }
    kube.kubectl_ok(&["delete", "node", "node2", "--wait=true", "--timeout=60s"])
        .expect("delete node2");
    say(started, "node2 deleted");
    // The pod still exists (until the pod GC removes it): its address is kept.
    let show = kube
        .calicoctl(&calicoctl(), &["ipam", "show", &format!("--ip={ip}")])
        .expect("calicoctl");
    if kube
        .kubectl(&["get", "pod", "bbox2"])
        .expect("kubectl")
        .status
        .success()
    {
        assert!(
            text(&show).contains("is in use"),
            "{ip} released while its pod exists: {}",
            text(&show)
        );
    }
    wait_for("node2's IPAM to be freed", Duration::from_secs(240), || {
        let show = kube
            .calicoctl(&calicoctl(), &["ipam", "show", &format!("--ip={ip}")])
            .ok()?;
        let affinities = etcd_get(
            &kube,
            &[
                "get",
                "--prefix",
                "--keys-only",
                "/calico/ipam/v2/host/node2/",
            ],
        );
        let node = kube
            .calicoctl(&calicoctl(), &["get", "node", "node2"])
            .ok()?;
        (text(&show).contains("is not assigned")
            && affinities.trim().is_empty()
            && !node.status.success())
        .then_some(())
    });
    let blocks = etcd_get(&kube, &["get", "--prefix", "/calico/ipam/v2/assignment/"]);
    assert!(
        !blocks.contains("host:node2"),
        "a block is still affine to node2: {blocks}"
    );
    say(
        started,
        "node2's address, block affinities and Calico Node are gone",
    );
}
