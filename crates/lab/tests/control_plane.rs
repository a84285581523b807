//! The control plane on its own (no nodes), against the real components built by
//! scripts/k8s-build.sh: the API server answers over TLS with the run's CA, the admin is a
//! cluster admin, the controller manager works (it created the default ServiceAccount before
//! `start` returned, and it turns a Deployment into a ReplicaSet and a Pod), the scheduler
//! runs, and authorization is `Node,RBAC`: a node's identity may not read Secrets, nor create
//! another node's Node object (NodeRestriction); anonymous requests are refused. Teardown
//! leaves nothing behind.

use std::time::{Duration, Instant};

use calico_lab::Lab;
use calico_lab::cluster::{ControlPlane, ControlPlaneOptions, pki};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn control_plane_serves_authorizes_and_reconciles() {
    let lab = Lab::new().expect("lab");
    let host = lab.add_host("kube", "192.168.33.20/24").expect("host");
    let other = lab.add_host("client", "192.168.33.30/24").expect("host");
    let started = Instant::now();
    let cp = ControlPlane::start(&host, ControlPlaneOptions::default()).expect("control plane");
    eprintln!("control plane ready after {:?}", started.elapsed());
    assert_eq!(cp.server(), "https://192.168.33.20:6443");

    // The admin, from another host of the LAN, over TLS verified against the run's CA.
    let cmd = calico_lab::cluster::kubectl_command(
        &other,
        cp.admin_kubeconfig(),
        &["auth", "can-i", "*", "*", "--all-namespaces"],
    )
    .expect("kubectl");
    let out = calico_lab::lab::output_bounded(cmd, Duration::from_secs(60)).expect("kubectl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "yes",
        "{}",
        text(&out)
    );
    let version = cp.kubectl_ok(&["version", "-o", "json"]).expect("version");
    assert!(version.contains("\"gitVersion\": \"v1.35.4\""), "{version}");

    // The controller manager reconciles: a Deployment gets its ReplicaSet and a (pending) Pod.
    cp.kubectl_ok(&["create", "deployment", "web", "--image=localhost/busybox:1"])
        .expect("create deployment");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pods = cp
            .kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "name"])
            .expect("get pods");
        if pods.lines().count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no pod for deployment web");
        std::thread::sleep(Duration::from_millis(500));
    }
    // No node exists: the scheduler says so on the pod.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = cp
            .kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                "reason=FailedScheduling",
                "-o",
                "name",
            ])
            .expect("events");
        if !events.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler never tried to place the pod"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Node authorization and NodeRestriction with a node's identity.
    let node = cp
        .pki()
        .client("test-node", "system:node:node9", &["system:nodes"])
        .expect("node cert");
    let node_kubeconfig = lab.dir().join("node9.kubeconfig");
    std::fs::write(
        &node_kubeconfig,
        pki::kubeconfig(&cp.server(), &cp.pki().ca.cert, "system:node:node9", &node),
    )
    .expect("write kubeconfig");
    let as_node = |args: &[&str]| {
        let cmd =
            calico_lab::cluster::kubectl_command(&host, &node_kubeconfig, args).expect("kubectl");
        calico_lab::lab::output_bounded(cmd, Duration::from_secs(60)).expect("kubectl")
    };
    let out = as_node(&["get", "secrets", "-A"]);
    assert!(
        !out.status.success(),
        "a node listed secrets: {}",
        text(&out)
    );
    assert!(text(&out).contains("Forbidden"), "{}", text(&out));
    let other_node = lab.dir().join("node-other.yaml");
    std::fs::write(
        &other_node,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node8\n",
    )
    .expect("write");
    let out = as_node(&["create", "-f", &other_node.display().to_string()]);
    assert!(!out.status.success(), "node9 created node8: {}", text(&out));
    assert!(text(&out).contains("Forbidden"), "{}", text(&out));

    // Anonymous requests are refused (no client certificate).
    let anonymous = lab.dir().join("anonymous.kubeconfig");
    std::fs::write(
        &anonymous,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: a\n  user: {{}}\ncontexts:\n- name: a\n  context:\n    cluster: c\n    user: a\ncurrent-context: a\n",
            cp.server(),
            cp.pki().ca.cert.display()
        ),
    )
    .expect("write");
    let cmd = calico_lab::cluster::kubectl_command(&host, &anonymous, &["get", "namespaces"])
        .expect("kubectl");
    let out = calico_lab::lab::output_bounded(cmd, Duration::from_secs(60)).expect("kubectl");
    assert!(
        !out.status.success(),
        "anonymous listed namespaces: {}",
        text(&out)
    );

    // Teardown: no process of the run survives, no namespace, no directory.
    let mut cp = cp;
    let pids: Vec<u32> = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ]
    .iter()
    .map(|name| cp.daemon(name).expect(name).pid())
    .collect();
    let dir = lab.dir().to_owned();
    let netns = host.netns().to_owned();
    drop(cp);
    drop(lab);
    assert!(!std::path::Path::new("/run/netns").join(&netns).exists());
    assert!(!dir.exists(), "{} left behind", dir.display());
    for pid in pids {
        assert!(
            !calico_lab::process::pid_running(pid),
            "pid {pid} survived the teardown"
        );
    }
}
