//! A Kubernetes node in a lab host: containerd 1.6 (CRI) and a kubelet.
//!
//! Both run in the host's network namespace (`nsenter --net`) and in one mount namespace of
//! the node's own (`nsenter --mount`), so that runc (started by containerd's shims) sees the
//! kubelet's volume mounts. That mount namespace is a slave copy of the machine's with
//! per-node directories bound over the paths in [`NODE_PATHS`]: a DaemonSet's hostPaths
//! (`/etc/cni/net.d`, `/opt/cni/bin`, `/var/run/calico`, ...) are then per node, as on
//! separate machines, and mounts made inside never reach the machine.
//!
//! - containerd: own root, state, socket, `sandbox_image` = `localhost/pause:1`, runc with
//!   cgroupfs, CNI `bin_dir` `/opt/cni/bin` (Debian's `loopback` is copied there; the CNI
//!   DaemonSet installs the rest) and `conf_dir` `/etc/cni/net.d` (first file wins), pod
//!   network namespaces under its state directory.
//! - kubelet: cgroupfs driver with `failCgroupV1: false`, a per-node cgroup root (recorded in
//!   the run: teardown kills what is left in it), its own root, log and certificate
//!   directories, a client certificate `system:node:<name>` and a serving certificate from the
//!   run's CA, `imageGCHighThresholdPercent: 100` (imported images must stay).
//! - kube-proxy (nftables mode) with its own client certificate (`system:kube-proxy`).
//! - Images: every `*.tar` in `images_dir` is imported with `ctr -n k8s.io images import`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::pki;
use super::{ClusterError, ControlPlane, Daemon, k8s_bin};
use crate::lab::{Host, output_bounded};

/// Paths bound per node inside the node's mount namespace.
pub const NODE_PATHS: [&str; 8] = [
    "/etc/cni/net.d",
    "/opt/cni/bin",
    "/var/run/calico",
    "/var/lib/calico",
    "/var/log/calico",
    "/var/lib/cni",
    "/var/log/containers",
    // calico-node mounts it (kernel modules); this machine has none, so it must exist.
    "/lib/modules",
];

/// How to start a node.
#[derive(Debug, Clone)]
pub struct KubeNodeOptions {
    /// Directory of image tarballs to import (images/containerd/build.sh); `None` imports none.
    pub images_dir: Option<PathBuf>,
    /// Daemons outlive the caller (for `calico-lab k8s up`).
    pub detached: bool,
    /// Bound on containerd's start, the image imports and the node's registration.
    pub startup_timeout: Duration,
}

impl Default for KubeNodeOptions {
    fn default() -> Self {
        KubeNodeOptions {
            images_dir: None,
            detached: false,
            startup_timeout: Duration::from_secs(180),
        }
    }
}

/// A running node. Its kubelet and containerd are stopped on drop (unless detached).
#[derive(Debug)]
pub struct KubeNode {
    name: String,
    host: Host,
    dir: PathBuf,
    mount_ns: PathBuf,
    socket: PathBuf,
    cgroup_root: String,
    detached: bool,
    kubelet_cmd: Vec<String>,
    kubelet: Option<Daemon>,
    kube_proxy: Option<Daemon>,
    containerd: Option<Daemon>,
}

impl KubeNode {
    /// Starts containerd and the kubelet on `host`; the node is named after the host and
    /// registers with `cp`. Returns once the Node object exists (it is NotReady until a CNI
    /// configuration is installed).
    pub fn start(
        host: &Host,
        cp: &ControlPlane,
        opts: KubeNodeOptions,
    ) -> Result<KubeNode, ClusterError> {
        let started = Instant::now();
        let deadline = started + opts.startup_timeout;
        let name = host.name().to_owned();
        let dir = host.lab_dir().join(&name);
        let mkdir = |p: &Path| std::fs::create_dir_all(p).map_err(|e| ClusterError::io(p, e));
        for sub in [
            "containerd/root",
            "containerd/state",
            "kubelet/root",
            "kubelet/pods-logs",
            "kubelet/pki",
            "paths",
        ] {
            mkdir(&dir.join(sub))?;
        }
        let mount_ns = node_mount_ns(host, &dir)?;
        let cgroup_root = format!("/calico-lab-{}", host.netns());
        create_cgroup_root(host, &cgroup_root)?;

        // CNI: loopback is the runtime's own business; the rest comes from the CNI DaemonSet.
        let cni_bin = dir.join("paths/opt/cni/bin");
        std::fs::copy("/usr/lib/cni/loopback", cni_bin.join("loopback")).map_err(|e| {
            ClusterError::io(
                Path::new("/usr/lib/cni/loopback (containernetworking-plugins)"),
                e,
            )
        })?;

        let socket = dir.join("containerd/containerd.sock");
        let config = dir.join("containerd/config.toml");
        std::fs::write(&config, containerd_config(&dir, &socket))
            .map_err(|e| ClusterError::io(&config, e))?;
        let mut cmd = Command::new("containerd");
        cmd.arg(format!("--config={}", config.display()));
        let containerd = Daemon::start(host, cmd, "containerd", opts.detached, Some(&mount_ns))?;
        let mut node = KubeNode {
            name: name.clone(),
            host: host.clone(),
            dir: dir.clone(),
            mount_ns,
            socket,
            cgroup_root,
            detached: opts.detached,
            kubelet_cmd: Vec::new(),
            kubelet: None,
            kube_proxy: None,
            containerd: Some(containerd),
        };
        node.wait_until(deadline, "containerd to answer", |n| {
            Ok(n.ctr(&["version"])?.status.success())
        })?;
        if let Some(images) = &opts.images_dir {
            node.import_images(images)?;
        }

        // kubelet identity and configuration.
        let pki = cp.pki();
        let ip = host.ip();
        let client = pki.client(
            &format!("kubelet-{name}"),
            &format!("system:node:{name}"),
            &["system:nodes"],
        )?;
        let serving = pki.server(&format!("kubelet-{name}-serving"), &name, &[ip], &[&name])?;
        let kubeconfig = dir.join("kubelet/kubelet.kubeconfig");
        std::fs::write(
            &kubeconfig,
            pki::kubeconfig(
                &cp.server(),
                &pki.ca.cert,
                &format!("system:node:{name}"),
                &client,
            ),
        )
        .map_err(|e| ClusterError::io(&kubeconfig, e))?;
        let kubelet_config = dir.join("kubelet/config.yaml");
        std::fs::write(
            &kubelet_config,
            kubelet_config_text(
                &dir,
                &node.socket,
                &node.cgroup_root,
                &ip.to_string(),
                &pki.ca.cert,
                &serving,
            ),
        )
        .map_err(|e| ClusterError::io(&kubelet_config, e))?;
        node.kubelet_cmd = vec![
            k8s_bin("kubelet")?.display().to_string(),
            format!("--config={}", kubelet_config.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-dir={}", dir.join("kubelet/root").display()),
            format!("--cert-dir={}", dir.join("kubelet/pki").display()),
            format!("--hostname-override={name}"),
            format!("--node-ip={ip}"),
            format!("--v={}", kubelet_verbosity()),
        ];
        node.start_kubelet()?;

        // kube-proxy (nftables): Services, the API server's `kubernetes` one above all, for
        // pods and for the node itself.
        let proxy_client = pki.client(&format!("kube-proxy-{name}"), "system:kube-proxy", &[])?;
        let proxy_kubeconfig = dir.join("kube-proxy.kubeconfig");
        std::fs::write(
            &proxy_kubeconfig,
            pki::kubeconfig(
                &cp.server(),
                &pki.ca.cert,
                "system:kube-proxy",
                &proxy_client,
            ),
        )
        .map_err(|e| ClusterError::io(&proxy_kubeconfig, e))?;
        let proxy_config = dir.join("kube-proxy.yaml");
        std::fs::write(
            &proxy_config,
            kube_proxy_config_text(&name, &proxy_kubeconfig),
        )
        .map_err(|e| ClusterError::io(&proxy_config, e))?;
        let mut cmd = Command::new(k8s_bin("kube-proxy")?);
        cmd.arg(format!("--config={}", proxy_config.display()))
            .arg("--v=1");
        node.kube_proxy = Some(Daemon::start(
            host,
            cmd,
            "kube-proxy",
            opts.detached,
            Some(&node.mount_ns),
        )?);
        node.wait_until(deadline, &format!("Node {name} to register"), |n| {
            Ok(cp.kubectl(&["get", "node", &n.name])?.status.success())
        })?;
        tracing::info!(node = name, elapsed = ?started.elapsed(), "node registered");
        Ok(node)
    }

    /// The node's name (its host's name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab host it runs on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The node's directory (containerd and kubelet state, per-node paths under `paths/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a path of [`NODE_PATHS`] (e.g. `/etc/cni/net.d`) of this node is on the machine.
    pub fn node_path(&self, path: &str) -> PathBuf {
        self.dir.join("paths").join(path.trim_start_matches('/'))
    }

    /// The node's mount namespace (a file under the run's directory), for `nsenter --mount`.
    pub fn mount_ns(&self) -> &Path {
        &self.mount_ns
    }

    /// containerd's socket.
    pub fn containerd_socket(&self) -> &Path {
        &self.socket
    }

    /// The kubelet's daemon (None after [`KubeNode::kill_kubelet`]).
    pub fn kubelet(&mut self) -> Option<&mut Daemon> {
        self.kubelet.as_mut()
    }

    /// `ctr --address SOCKET -n k8s.io ARGS`, bounded (60 s).
    pub fn ctr(&self, args: &[&str]) -> Result<std::process::Output, ClusterError> {
        let mut cmd = Command::new("ctr");
        cmd.arg(format!("--address={}", self.socket.display()))
            .args(["-n", "k8s.io"])
            .args(args);
        Ok(output_bounded(cmd, Duration::from_secs(60))?)
    }

    /// Imports every `*.tar` of `dir` into containerd's `k8s.io` namespace.
    pub fn import_images(&self, dir: &Path) -> Result<Vec<String>, ClusterError> {
        let mut tars: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| ClusterError::io(dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "tar"))
            .collect();
        tars.sort();
        let mut imported = Vec::new();
        for tar in tars {
            let path = tar.display().to_string();
            let out = self.ctr(&["images", "import", &path])?;
            if !out.status.success() {
                return Err(ClusterError::Failed {
                    what: format!("ctr images import {path} on {}", self.name),
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
            imported.push(path);
        }
        Ok(imported)
    }

    fn start_kubelet(&mut self) -> Result<(), ClusterError> {
        let mut cmd = Command::new(&self.kubelet_cmd[0]);
        cmd.args(&self.kubelet_cmd[1..]);
        self.kubelet = Some(Daemon::start(
            &self.host,
            cmd,
            "kubelet",
            self.detached,
            Some(&self.mount_ns),
        )?);
        Ok(())
    }

    /// SIGKILLs the kubelet (a node failure; pods keep running under containerd).
    pub fn kill_kubelet(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            k.kill();
        }
    }

    /// Starts the kubelet again with the same configuration.
    pub fn restart_kubelet(&mut self) -> Result<(), ClusterError> {
        self.kill_kubelet();
        self.start_kubelet()
    }

    fn wait_until(
        &mut self,
        deadline: Instant,
        what: &str,
        check: impl FnMut(&Self) -> Result<bool, ClusterError>,
    ) -> Result<(), ClusterError> {
        let daemons: fn(&mut Self) -> Vec<&mut Daemon> = |n| {
            n.containerd
                .iter_mut()
                .chain(n.kubelet.iter_mut())
                .chain(n.kube_proxy.iter_mut())
                .collect()
        };
        super::wait_until(self, daemons, 2000, deadline, what, check)
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        // The kubelet first (it would restart containers), then containerd; shims, pods'
        // processes (cgroup root), mounts and namespaces go with the lab.
        if let Some(mut k) = self.kubelet.take() {
            k.stop();
        }
        if let Some(mut p) = self.kube_proxy.take() {
            p.stop();
        }
        if let Some(mut c) = self.containerd.take() {
            c.stop();
        }
    }
}

/// Creates the node's mount namespace: a slave copy of the machine's with a per-node
/// directory bound over each of [`NODE_PATHS`]. Kept in a file under `<lab dir>/mnt/`, a
/// private bind mount (a mount namespace can only be kept on a mount that does not
/// propagate); teardown unmounts both.
fn node_mount_ns(host: &Host, node_dir: &Path) -> Result<PathBuf, ClusterError> {
    let holder = host.lab_dir().join("mnt");
    std::fs::create_dir_all(&holder).map_err(|e| ClusterError::io(&holder, e))?;
    if !is_mount_point(&holder) {
        run(
            Command::new("mount")
                .arg("--bind")
                .arg(&holder)
                .arg(&holder),
            "bind the mount-namespace holder",
        )?;
        run(
            Command::new("mount").arg("--make-private").arg(&holder),
            "make the holder private",
        )?;
    }
    let file = holder.join(host.name());
    std::fs::write(&file, b"").map_err(|e| ClusterError::io(&file, e))?;
    let mut script = String::from("set -e\n");
    for path in NODE_PATHS {
        let own = node_dir.join("paths").join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&own).map_err(|e| ClusterError::io(&own, e))?;
        // The mount point must exist on the machine (an empty directory; nothing is mounted
        // on it outside the node's namespace).
        std::fs::create_dir_all(path).map_err(|e| ClusterError::io(Path::new(path), e))?;
        script.push_str(&format!("mount --bind '{}' '{path}'\n", own.display()));
    }
    run(
        Command::new("unshare")
            .arg(format!("--mount={}", file.display()))
            .args(["--propagation", "slave", "--", "sh", "-c", &script]),
        "create the node's mount namespace",
    )?;
    Ok(file)
}

/// Creates cgroup `root` in every v1 hierarchy (and the v2 one if mounted alone) and records
/// it in the run; cpuset gets its parent's CPUs and memory nodes (an empty cpuset cannot hold
/// tasks).
fn create_cgroup_root(host: &Host, root: &str) -> Result<(), ClusterError> {
    host.record_cgroup(root)?;
    for hierarchy in crate::state::cgroup_hierarchies() {
        let dir = hierarchy.join(root.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).map_err(|e| ClusterError::io(&dir, e))?;
        if hierarchy.ends_with("cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let parent = std::fs::read_to_string(hierarchy.join(f)).unwrap_or_default();
                std::fs::write(dir.join(f), parent.trim())
                    .map_err(|e| ClusterError::io(&dir.join(f), e))?;
            }
        }
    }
    Ok(())
}

fn is_mount_point(path: &Path) -> bool {
    crate::state::mounts_under(path).iter().any(|m| m == path)
}

fn run(cmd: &mut Command, what: &str) -> Result<(), ClusterError> {
    let program = std::mem::replace(cmd, Command::new("true"));
    let out = output_bounded(program, Duration::from_secs(30))?;
    if !out.status.success() {
        return Err(ClusterError::Failed {
            what: what.to_owned(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// The kubelet's log verbosity: `CALICO_LAB_KUBELET_V` (a number), else 1. The pod-start
/// benchmark (tests/k8s_bench.rs) sets 2 for the kubelet's `SyncLoop` and PLEG events; it applies
/// to every node and every CNI plugin alike.
fn kubelet_verbosity() -> u8 {
    std::env::var("CALICO_LAB_KUBELET_V")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn containerd_config(dir: &Path, socket: &Path) -> String {
    let d = |p: &str| dir.join(p).display().to_string();
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
# Snapshotters and plugins that would touch machine-wide paths or are not used.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:1"
  netns_mounts_under_state_dir = true
  # This machine gives root no CAP_SYS_RESOURCE: a negative oom_score_adj (the kubelet asks
  # for -998 on sandboxes) cannot be set, and runc fails the whole start. Cap it at ours.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
"#,
        root = d("containerd/root"),
        state = d("containerd/state"),
        socket = socket.display(),
        opt = d("containerd/opt"),
        runc = d("containerd/runc"),
    )
}

fn kubelet_config_text(
    dir: &Path,
    socket: &Path,
    cgroup_root: &str,
    ip: &str,
    ca: &Path,
    serving: &pki::CertPair,
) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://{socket}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: true
cgroupRoot: {cgroup_root}
podLogsDir: {logs}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
clusterDomain: cluster.local
nodeStatusUpdateFrequency: 10s
maxPods: 50
"#,
        cert = serving.cert.display(),
        key = serving.key.display(),
        ca = ca.display(),
        socket = socket.display(),
        logs = dir.join("kubelet/pods-logs").display(),
    )
}

/// kube-proxy in nftables mode. `masqueradeAll`: the control plane's host is not on the pod
/// network (it runs no calico-node), so a pod's traffic to the API server's Service must carry
/// the node's address to find its way back. Conntrack limits are machine-wide: left alone.
fn kube_proxy_config_text(name: &str, kubeconfig: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {name}
mode: nftables
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nftables:
  masqueradeAll: true
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
        kubeconfig = kubeconfig.display()
    )
}
