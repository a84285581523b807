//! Two Kubernetes nodes (containerd 1.6 + kubelet + kube-proxy each) joined to a real control
//! plane, without any CNI: the nodes register with their LAN addresses and report NotReady
//! because no network plugin is configured (as on a fresh cluster); a host-network pod pinned
//! to node1 runs through the CRI (our pause image as the sandbox, `localhost/busybox:1`
//! imported with ctr), and the API server reaches the kubelet for `kubectl logs` and
//! `kubectl exec`. Each node's CNI configuration directory is its own. Teardown leaves no
//! process, mount or cgroup behind.

use std::path::Path;
use std::time::{Duration, Instant};

use calico_lab::cluster::{KubeLab, KubeLabOptions};

#[test]
fn nodes_join_and_run_a_host_network_pod() {
    let started = Instant::now();
    let images = tempfile::tempdir().expect("tempdir");
    let build = std::process::Command::new("sh")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/containerd/build.sh"))
        .arg(images.path())
        .arg("base")
        .output()
        .expect("build.sh");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let kube = KubeLab::start(
        KubeLabOptions {
            images_dir: Some(images.path().to_owned()),
            ..Default::default()
        },
        &mut |line| eprintln!("[{:>4.0?}] {line}", started.elapsed()),
    )
    .expect("cluster");

    let wide = kube
        .kubectl_ok(&["get", "nodes", "-o", "wide"])
        .expect("nodes");
    eprintln!("{wide}");
    for (node, ip) in [("node1", "192.168.33.11"), ("node2", "192.168.33.12")] {
        let line = wide
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("no {node}: {wide}"));
        assert!(line.contains(ip), "{line}");
        assert!(line.contains("v1.35.4"), "{line}");
        assert!(line.contains("containerd://1.6"), "{line}");
    }
    // No CNI configuration yet: NotReady, and the kubelet says why.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let msg = kube
            .kubectl_ok(&[
                "get",
                "node",
                "node1",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].message}",
            ])
            .expect("node1");
        if msg.starts_with("False") && msg.contains("network") {
            break;
        }
        assert!(Instant::now() < deadline, "node1 condition: {msg}");
        std::thread::sleep(Duration::from_millis(500));
    }

    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hostpod\nspec:\n  nodeName: node1\n  hostNetwork: true\n  terminationGracePeriodSeconds: 0\n  tolerations:\n  - operator: Exists\n  containers:\n  - name: c\n    image: localhost/busybox:1\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", \"echo hello from $(hostname); exec sleep 100000\"]\n";
    let file = kube.lab().dir().join("hostpod.yaml");
    std::fs::write(&file, pod).expect("write");
    kube.kubectl_ok(&["apply", "-f", &file.display().to_string()])
        .expect("apply");
    kube.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/hostpod",
        "--timeout=120s",
    ])
    .unwrap_or_else(|e| {
        let d = kube
            .kubectl(&["describe", "pod", "hostpod"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("{e}\n{d}")
    });
    let logs = kube.kubectl_ok(&["logs", "hostpod"]).expect("logs");
    assert!(logs.contains("hello from"), "{logs}");
    // exec: the pod shares node1's network namespace (its LAN address is there).
    let addrs = kube
        .kubectl_ok(&["exec", "hostpod", "--", "ip", "-4", "-o", "addr"])
        .expect("exec");
    assert!(addrs.contains("192.168.33.11/24"), "{addrs}");

    // Per-node CNI directories: what node1 sees at /etc/cni/net.d is node1's own.
    let node1 = &kube.nodes()[0];
    std::fs::write(node1.node_path("/etc/cni/net.d").join("marker"), "node1").expect("marker");
    let in_ns = std::process::Command::new("nsenter")
        .arg(format!("--mount={}", node1.mount_ns().display()))
        .args(["--", "ls", "/etc/cni/net.d"])
        .output()
        .expect("nsenter");
    assert!(String::from_utf8_lossy(&in_ns.stdout).contains("marker"));
    assert!(
        !Path::new("/etc/cni/net.d/marker").exists(),
        "leaked to the machine"
    );

    let dir = kube.lab().dir().to_owned();
    let cgroup =
        Path::new("/sys/fs/cgroup/pids").join(format!("calico-lab-{}-node1", kube.lab().id()));
    assert!(cgroup.exists(), "{}", cgroup.display());
    drop(kube);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "mounts left behind"
    );
}
