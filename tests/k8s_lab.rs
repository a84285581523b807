//! The Kubernetes lab command, end to end, exactly as a user runs it: `scripts/k8s-lab.sh`
//! builds the cluster (control plane and two nodes in lab namespaces), installs calico-rs with
//! `helm install`, adds the Docker host (dockerd, `calicoctl node run`), applies
//! manifests/ippool.yaml with kubectl, starts a pod on each node and a container on the Docker
//! host, and shows it working; the results are asserted one by one from its output: BGP
//! Established on all three, pod to pod across nodes, pod to the Docker container refused
//! until a Calico policy applied with kubectl admits the pod's namespace into its network. `down` then removes
//! every namespace and the admin kubeconfig, also when an assertion fails (guard).

use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn script(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("1200")
        .arg("bash")
        .arg(format!("{ROOT}/scripts/k8s-lab.sh"))
        .args(args)
        .current_dir(ROOT)
        // CI built everything before the tests; the script must not rebuild inside a test.
        .env("SETUP_SKIP_BUILD", "1")
        .output()
        .expect("run scripts/k8s-lab.sh")
}

/// Tears the lab down when the test ends, whatever happened.
struct LabGuard;

impl Drop for LabGuard {
    fn drop(&mut self) {
        let out = script(&["down"]);
        if !out.status.success() {
            eprintln!("k8s-lab.sh down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// The lines of `out` after the section header containing `title`, up to the next header.
fn section<'a>(out: &'a str, title: &str) -> Vec<&'a str> {
    out.lines()
        .skip_while(|l| !(l.contains("== ") && l.contains(title)))
        .skip(1)
        .take_while(|l| !l.contains("== "))
        .collect()
}

#[test]
fn k8s_lab_command_brings_up_calico_on_kubernetes() {
    let guard = LabGuard;
    let out = script(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "k8s-lab.sh failed:\n{stdout}\n{stderr}"
    );

    // Both nodes Ready, with their LAN addresses and the version we built.
    let nodes = section(&stdout, "kubectl get nodes -o wide");
    for (node, ip) in [("node1", "192.168.33.11"), ("node2", "192.168.33.12")] {
        let line = nodes
            .iter()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("no {node} in {nodes:?}"));
        assert!(
            line.contains(" Ready ") && line.contains(ip) && line.contains("v1.35.4"),
            "{line}"
        );
    }
    // calico-node Running on both nodes, the controllers Running.
    let system = section(&stdout, "kubectl get pods -n kube-system -o wide");
    for node in ["node1", "node2"] {
        assert!(
            system.iter().any(|l| l.starts_with("calico-node-")
                && l.contains("Running")
                && l.contains(node)),
            "{system:?}"
        );
    }
    assert!(
        system
            .iter()
            .any(|l| l.starts_with("calico-kube-controllers-") && l.contains("Running")),
        "{system:?}"
    );
    // The example pool reached etcd; the chart's pool was disabled.
    let pools = section(&stdout, "calicoctl get ippool");
    assert!(
        pools.iter().any(|l| l.starts_with("pool-10-244")
            && l.contains("10.244.0.0/16")
            && l.contains("false")),
        "{pools:?}"
    );
    // One pod per node, addresses from the pool.
    let pods = section(&stdout, "kubectl get pods -o wide");
    for (pod, node) in [("bbox1", "node1"), ("bbox2", "node2")] {
        let line = pods
            .iter()
            .find(|l| l.starts_with(pod))
            .unwrap_or_else(|| panic!("{pods:?}"));
        assert!(
            line.contains("Running") && line.contains(" 10.244.") && line.contains(node),
            "{line}"
        );
    }
    // BGP: a full mesh of three, every node (the Docker host included) Established with the
    // two others.
    let status = section(&stdout, "calicoctl node status");
    for node in ["node1", "node2", "docker1"] {
        let own: Vec<&&str> = status
            .iter()
            .skip_while(|l| !l.starts_with(&format!("# {node}")))
            .skip(1)
            .take_while(|l| !l.starts_with("# "))
            .collect();
        assert_eq!(
            own.iter().filter(|l| l.contains("Established")).count(),
            2,
            "{node}: {status:?}"
        );
    }
    // The Docker host's container has an address from the same pool.
    let dbox = stdout
        .lines()
        .find_map(|l| l.strip_prefix("dbox: "))
        .unwrap_or_else(|| panic!("no dbox address in:\n{stdout}"));
    assert!(dbox.starts_with("10.244."), "{dbox}");
    // Before the policy the pod is not a member of docknet: no answer. After the Calico
    // policy applied with kubectl: answers, through node1 and docker1 (ttl 62).
    let before = section(&stdout, "before the policy");
    assert!(
        before.iter().any(|l| l.contains("0 packets received")),
        "{before:?}"
    );
    assert!(
        before
            .iter()
            .any(|l| l.contains("refused: bbox1 is not a member of docknet")),
        "{before:?}"
    );
    let after = section(&stdout, "after the policy");
    assert!(
        after.iter().any(|l| l.contains("4 packets received")),
        "{after:?}"
    );
    assert!(after.iter().any(|l| l.contains("ttl=62")), "{after:?}");
    // Cross-node ping through kubectl exec, two routers on the way; kubectl logs.
    let ping = section(&stdout, "(bbox2 on node2)");
    assert!(
        ping.iter().any(|l| l.contains("4 packets received")),
        "{ping:?}"
    );
    assert!(ping.iter().any(|l| l.contains("ttl=62")), "{ping:?}");
    assert!(
        section(&stdout, "kubectl logs bbox2")
            .iter()
            .any(|l| l.contains("bbox2 up"))
    );
    assert!(std::path::Path::new("/run/calico-rs-k8s/admin.kubeconfig").exists());
    assert!(
        std::path::Path::new(ROOT)
            .join("target/k8s/bin/kubectl")
            .exists()
    );

    drop(guard);
    for ns in ["k8s-kube", "k8s-docker1"] {
        assert!(
            !std::path::Path::new("/run/netns").join(ns).exists(),
            "namespace {ns} left behind"
        );
    }
    let dockerds = Command::new("pgrep")
        .args(["-f", "/run/calico-lab/k8s/docker1/docker"])
        .output()
        .expect("pgrep");
    assert!(
        dockerds.stdout.is_empty(),
        "the Docker host's daemons are left behind: {}",
        String::from_utf8_lossy(&dockerds.stdout)
    );
    assert!(
        !std::path::Path::new("/run/calico-rs-k8s").exists(),
        "kubeconfig left behind"
    );
}
