//! What the tests on the real cluster (k8s_cluster, k8s_cni, k8s_helm, k8s_controllers, k8s_bench) share: the images, a cluster with
//! calico-rs installed by Helm, pods pinned to a node, bounded waits.

#![allow(dead_code)] // each test binary uses its own part

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use calico_lab::cluster::{KubeLab, KubeLabOptions};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart() -> PathBuf {
    root().join("charts/calico-rs")
}

pub fn calicoctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calicoctl"))
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A line on stderr with the time since `started`.
pub fn say(started: Instant, line: &str) {
    eprintln!("[{:>4.0?}] {line}", started.elapsed());
}

/// images/containerd/build.sh into `out`, from this build's binaries.
pub fn build_images(out: &Path) {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_calico-node"))
        .parent()
        .expect("bin dir");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg(root().join("images/containerd/build.sh"))
        .arg(out)
        .env("BIN_DIR", bin_dir);
    let built = calico_lab::lab::output_bounded(cmd, Duration::from_secs(300)).expect("build.sh");
    assert!(
        built.status.success(),
        "images/containerd/build.sh: {}",
        text(&built)
    );
}

/// The two-node lab with calico-rs installed by `helm install` (`extra` values) and ready.
/// The image directory must live as long as the lab.
pub fn cluster_with_calico(started: Instant, extra: &[&str]) -> (KubeLab, tempfile::TempDir) {
    let images = tempfile::tempdir().expect("tempdir");
    build_images(images.path());
    let mut kube = KubeLab::start(
        KubeLabOptions {
            images_dir: Some(images.path().to_owned()),
            ..Default::default()
        },
        &mut |line| say(started, line),
    )
    .expect("cluster");
    kube.install_calico(&chart(), extra, Duration::from_secs(600))
        .expect("helm install calico-rs");
    say(started, "calico-rs installed and ready");
    (kube, images)
}

pub fn pod_yaml(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: bbox\n    pod: {name}\nspec:\n  nodeSelector:\n    kubernetes.io/hostname: {node}\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: bbox\n    image: localhost/busybox:1\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", \"echo {name} up; exec sleep 100000\"]\n"
    )
}

pub fn apply(kube: &KubeLab, name: &str, yaml: &str) {
    let file = kube.lab().dir().join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("write manifest");
    kube.kubectl_ok(&["apply", "-f", &file.display().to_string()])
        .unwrap_or_else(|e| panic!("kubectl apply {name}: {e}"));
}

/// Starts busybox pods `name` on `node` for each pair and waits until they are Ready.
pub fn start_pods(kube: &KubeLab, pods: &[(&str, &str)]) {
    let mut args = vec!["wait", "--for=condition=Ready", "--timeout=180s"];
    let names: Vec<String> = pods.iter().map(|(p, _)| format!("pod/{p}")).collect();
    for (pod, node) in pods {
        apply(kube, pod, &pod_yaml(pod, node));
    }
    args.extend(names.iter().map(String::as_str));
    kube.kubectl_ok(&args).expect("pods Ready");
}

/// A busybox pod on `node` in `namespace` with `labels` and `annotations` (YAML flow maps).
pub fn pod_yaml_in(
    name: &str,
    namespace: &str,
    node: &str,
    labels: &str,
    annotations: &str,
) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {labels}\n  annotations: {annotations}\nspec:\n  nodeSelector:\n    kubernetes.io/hostname: {node}\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: bbox\n    image: localhost/busybox:1\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", \"exec sleep 100000\"]\n"
    )
}

/// The address of pod `pod` in namespace `default`.
pub fn pod_ip(kube: &KubeLab, pod: &str) -> String {
    pod_ip_in(kube, pod, "default")
}

/// The address of pod `pod` in `namespace` (empty while it has none).
pub fn pod_ip_in(kube: &KubeLab, pod: &str, namespace: &str) -> String {
    kube.kubectl_ok(&[
        "get",
        "pod",
        pod,
        "-n",
        namespace,
        "-o",
        "jsonpath={.status.podIP}",
    ])
    .expect("pod IP")
    .trim()
    .to_owned()
}

/// `kubectl exec FROM -- ping -c1 -W1 IP`, retried until it succeeds or `timeout` passes.
pub fn ping_within(kube: &KubeLab, from: &str, ip: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let out = kube
            .kubectl(&["exec", from, "--", "ping", "-c1", "-W1", ip])
            .expect("kubectl exec");
        if out.status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}

/// Polls `check` every half second until it returns `Some`, or panics naming `what` after
/// `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out ({timeout:?}) waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether IPv4 address `ip` lies in `cidr`.
pub fn in_cidr(ip: &str, cidr: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().expect("an IPv4 address");
    let (net, len) = cidr.split_once('/').expect("cidr");
    let net: Ipv4Addr = net.parse().expect("net");
    let mask = u32::MAX << (32 - len.parse::<u32>().expect("len"));
    u32::from(ip) & mask == u32::from(net) & mask
}
