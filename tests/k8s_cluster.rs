//! calico-rs on a real Kubernetes cluster (crates/lab/src/cluster): kube-apiserver,
//! controller manager and scheduler from k8s.io/kubernetes v1.35.4, two nodes with containerd
//! 1.6 and a kubelet each, all in lab namespaces on the seed's LAN. One cluster for the whole
//! binary (bringing it up takes minutes on two cores), one scenario per step, in order:
//!
//! 1. `helm install` of charts/calico-rs: calico-node Ready on both nodes (through the
//!    kubelet), the controllers Deployment available, both nodes Ready.
//! 2. `kubectl apply -f manifests/ippool.yaml` reaches the Calico etcd (read with calicoctl).
//! 3. The kubelet's CNI ADD gives a pod on each node an address from that pool; the pods ping
//!    each other across nodes (`kubectl exec`), `kubectl logs` works.
//! 4. Deleting a pod runs CNI DEL through containerd: its address is free again in IPAM.
//! 5. A Kubernetes NetworkPolicy applied with kubectl cuts the pods apart; a Calico
//!    NetworkPolicy (projectcalico.org/v3, lower order) applied with kubectl lets ICMP through
//!    again.
//! 6. Failure case: a node whose kubelet is killed goes NotReady.

mod k8s_common;

use std::time::{Duration, Instant};

use calico_lab::cluster::{KubeLab, KubeLabOptions, POD_CIDR};
use k8s_common::*;

fn in_pool(ip: &str) -> bool {
    in_cidr(ip, POD_CIDR)
}

/// True if no ping from `from` to `ip` gets through during `window` (after the policy had
/// `settle` to take effect).
fn blocked_for(kube: &KubeLab, from: &str, ip: &str, settle: Duration, window: Duration) -> bool {
    let deadline = Instant::now() + settle;
    // Wait until a ping fails (the policy is in), bounded by settle.
    loop {
        let out = kube
            .kubectl(&["exec", from, "--", "ping", "-c1", "-W1", ip])
            .expect("kubectl exec");
        if !out.status.success() {
            break;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = kube
        .kubectl(&[
            "exec",
            from,
            "--",
            "ping",
            "-c",
            &window.as_secs().max(1).to_string(),
            "-i",
            "1",
            "-W",
            "1",
            ip,
        ])
        .expect("kubectl exec");
    !String::from_utf8_lossy(&out.stdout).contains("bytes from")
}

#[test]
fn calico_rs_on_a_real_cluster() {
    let started = Instant::now();
    let images = tempfile::tempdir().expect("tempdir");
    build_images(images.path());
    let mut kube = KubeLab::start(
        KubeLabOptions {
            images_dir: Some(images.path().to_owned()),
            ..Default::default()
        },
        &mut |line| eprintln!("[{:>4.0?}] {line}", started.elapsed()),
    )
    .expect("cluster");

    // 1. helm install; everything Ready.
    kube.install_calico(
        &root().join("charts/calico-rs"),
        &[],
        Duration::from_secs(600),
    )
    .expect("helm install calico-rs");
    eprintln!(
        "[{:>4.0?}] calico-rs installed and ready",
        started.elapsed()
    );
    let pods = kube
        .kubectl_ok(&["get", "pods", "-n", "kube-system", "-o", "wide"])
        .expect("pods");
    for node in ["node1", "node2"] {
        assert!(
            pods.lines().any(|l| l.starts_with("calico-node-")
                && l.contains("Running")
                && l.contains(node)),
            "no Running calico-node on {node}:\n{pods}"
        );
    }

    // 2. kubectl apply of the example pool reaches etcd.
    kube.apply_pool(
        &calicoctl(),
        &root().join("manifests/ippool.yaml"),
        "pool-10-244",
        Duration::from_secs(120),
    )
    .expect("apply manifests/ippool.yaml");
    let pool = kube
        .calicoctl(
            &calicoctl(),
            &["get", "ippool", "pool-10-244", "-o", "yaml"],
        )
        .expect("calicoctl");
    assert!(
        text(&pool).contains("cidr: 10.244.0.0/16"),
        "{}",
        text(&pool)
    );

    // 3. A pod per node, addresses from the pool, cross-node ping, exec and logs.
    apply(&kube, "bbox1", &pod_yaml("bbox1", "node1"));
    apply(&kube, "bbox2", &pod_yaml("bbox2", "node2"));
    kube.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/bbox1",
        "pod/bbox2",
        "--timeout=180s",
    ])
    .expect("pods Ready");
    let ip1 = pod_ip(&kube, "bbox1");
    let ip2 = pod_ip(&kube, "bbox2");
    eprintln!(
        "[{:>4.0?}] bbox1 {ip1} (node1), bbox2 {ip2} (node2)",
        started.elapsed()
    );
    assert!(
        in_pool(&ip1) && in_pool(&ip2),
        "{ip1} / {ip2} not in {POD_CIDR}"
    );
    assert!(
        ping_within(&kube, "bbox1", &ip2, Duration::from_secs(60)),
        "bbox1 cannot ping bbox2 across nodes"
    );
    let logs = kube.kubectl_ok(&["logs", "bbox2"]).expect("kubectl logs");
    assert!(logs.contains("bbox2 up"), "{logs}");
    let show = kube
        .calicoctl(&calicoctl(), &["ipam", "show", &format!("--ip={ip2}")])
        .expect("calicoctl ipam show");
    assert!(text(&show).contains("is in use"), "{}", text(&show));

    // 4. Deleting the pod runs CNI DEL: the address is released.
    kube.kubectl_ok(&["delete", "pod", "bbox2", "--wait=true", "--timeout=120s"])
        .expect("delete bbox2");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let show = kube
            .calicoctl(&calicoctl(), &["ipam", "show", &format!("--ip={ip2}")])
            .expect("calicoctl ipam show");
        if text(&show).contains("is not assigned") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ip2} still assigned after its pod was deleted: {}",
            text(&show)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // 5. Policies applied with kubectl, enforced between real pods.
    apply(&kube, "bbox3", &pod_yaml("bbox3", "node2"));
    kube.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/bbox3",
        "--timeout=180s",
    ])
    .expect("bbox3 Ready");
    let ip3 = pod_ip(&kube, "bbox3");
    assert!(ping_within(&kube, "bbox1", &ip3, Duration::from_secs(60)));
    apply(
        &kube,
        "deny-to-bbox3",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny-to-bbox3\nspec:\n  podSelector:\n    matchLabels:\n      pod: bbox3\n  policyTypes: [Ingress]\n",
    );
    assert!(
        blocked_for(
            &kube,
            "bbox1",
            &ip3,
            Duration::from_secs(60),
            Duration::from_secs(3)
        ),
        "the Kubernetes NetworkPolicy did not cut bbox1 from bbox3"
    );
    apply(
        &kube,
        "allow-icmp",
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: allow-icmp-from-bbox\n  namespace: default\nspec:\n  order: 10\n  selector: pod == 'bbox3'\n  types: [Ingress]\n  ingress:\n  - action: Allow\n    protocol: ICMP\n    source:\n      selector: app == 'bbox'\n",
    );
    assert!(
        ping_within(&kube, "bbox1", &ip3, Duration::from_secs(60)),
        "the Calico NetworkPolicy did not let ICMP through"
    );

    // 6. Failure: kill node2's kubelet; the node goes NotReady.
    kube.node_mut("node2").expect("node2").kill_kubelet();
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let status = kube
            .kubectl_ok(&[
                "get",
                "node",
                "node2",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .expect("node status");
        if status.trim() == "Unknown" || status.trim() == "False" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node2 still Ready without a kubelet"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let node1 = kube
        .kubectl_ok(&[
            "get",
            "node",
            "node1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .expect("node status");
    assert_eq!(node1.trim(), "True", "node1 must stay Ready");
    eprintln!("[{:>4.0?}] done", started.elapsed());
}
