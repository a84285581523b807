//! A real Kubernetes cluster in lab namespaces, built from the components of
//! `k8s.io/kubernetes` (scripts/k8s-build.sh puts them in `target/k8s/<version>/bin`).
//!
//! - [`ControlPlane`]: etcd, kube-apiserver (per-run PKI, `Node,RBAC`, NodeRestriction),
//!   kube-controller-manager, kube-scheduler, in one lab host. Usable on its own.
//! - [`KubeNode`]: a Kubernetes node in a lab host: its own containerd (CRI) and kubelet,
//!   sharing a per-node mount namespace (hostPaths such as `/etc/cni/net.d` and
//!   `/var/run/calico` are per node, as on separate machines), pod cgroups under a per-node
//!   cgroup root.
//! - [`DockerHost`]: a Docker host as in the seed lab (dockerd, `calicoctl node run`) on the
//!   same Calico etcd and BGP mesh.
//!
//! Teardown is the lab's: every daemon is a guarded child (or recorded in the run when
//! detached), and the run record lists the per-node cgroup roots and keeps every mount under the
//! run's directory, so that `calico-lab sweep` removes the leftovers of a killed run: pods'
//! processes (by cgroup), daemons (by namespace), mounts, namespaces.

mod control_plane;
mod docker_host;
mod kube_lab;
mod node;
pub mod pki;

pub use control_plane::{
    API_PORT, API_SERVICE_IP, ControlPlane, ControlPlaneOptions, SERVICE_CIDR,
};
pub use docker_host::{
    DOCKER_BUSYBOX_IMAGE, DOCKER_HOST, DOCKER_NODE_IMAGE, DockerHost, DockerHostOptions,
};
pub use kube_lab::{
    BOOTSTRAP_POOL_CIDR, CALICO_ETCD_HOST, CONTROL_PLANE_HOST, KubeLab, KubeLabOptions, NODE_HOSTS,
    POD_CIDR, helm_bin,
};
pub use node::{KubeNode, KubeNodeOptions, NODE_PATHS};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::etcd::EtcdError;
use crate::lab::{Host, LabError};
use crate::process::{ProcessGuard, kill_pid, pid_running};

/// Errors building or using a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no {binary} in {dir} (build the Kubernetes components with scripts/k8s-build.sh, or set K8S_BIN_DIR)"
    )]
    MissingBinary { binary: String, dir: PathBuf },
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error("{name} exited ({status}); end of its log:\n{log}")]
    Exited {
        name: String,
        status: String,
        log: String,
    },
    #[error("timed out waiting for {what}; ends of the daemons' logs:\n{logs}")]
    Timeout { what: String, logs: String },
}

impl ClusterError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ClusterError {
        ClusterError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The Kubernetes version the components are built from (tests/cluster/go.mod).
pub fn k8s_version() -> &'static str {
    const GO_MOD: &str = include_str!("../../../../tests/cluster/go.mod");
    GO_MOD
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let first = w.next()?;
            let first = if first == "require" { w.next()? } else { first };
            (first == "k8s.io/kubernetes").then(|| w.next()).flatten()
        })
        .find(|v| v.starts_with('v'))
        .unwrap_or("unknown")
}

/// Directory of the Kubernetes binaries: `$K8S_BIN_DIR`, else
/// `<workspace>/target/k8s/<version>/bin`.
pub fn k8s_bin_dir() -> PathBuf {
    match std::env::var_os("K8S_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/k8s")
            .join(k8s_version())
            .join("bin"),
    }
}

/// Path of Kubernetes binary `name`, checked to exist.
pub fn k8s_bin(name: &str) -> Result<PathBuf, ClusterError> {
    let dir = k8s_bin_dir();
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ClusterError::MissingBinary {
            binary: name.to_owned(),
            dir,
        })
    }
}

/// `kubectl --kubeconfig KUBECONFIG ARGS` run inside `host`'s network namespace.
pub fn kubectl_command(
    host: &Host,
    kubeconfig: &Path,
    args: &[&str],
) -> Result<Command, ClusterError> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", host.netns_path().display()))
        .arg("--")
        .arg(k8s_bin("kubectl")?)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args);
    Ok(cmd)
}

/// One long-running component (API server, kubelet, containerd...): a guarded child, or a
/// detached process recorded in the lab run.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    pid: u32,
    guard: Option<ProcessGuard>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` in `host`'s network namespace (and in mount namespace `mount_ns` if
    /// given, through `nsenter --mount`, which execs: the PID is the daemon's own).
    pub fn start(
        host: &Host,
        cmd: Command,
        name: &str,
        detached: bool,
        mount_ns: Option<&Path>,
    ) -> Result<Daemon, ClusterError> {
        let cmd = match mount_ns {
            Some(ns) => {
                let mut wrapped = Command::new("nsenter");
                wrapped
                    .arg(format!("--mount={}", ns.display()))
                    .arg("--")
                    .arg(cmd.get_program())
                    .args(cmd.get_args());
                wrapped
            }
            None => cmd,
        };
        let log = host.log_path(name);
        if detached {
            let pid = host.spawn_detached(cmd, name)?;
            Ok(Daemon {
                name: name.to_owned(),
                pid,
                guard: None,
                log,
            })
        } else {
            let guard = host.nsenter_spawn(cmd, name)?;
            Ok(Daemon {
                name: name.to_owned(),
                pid: guard.pid().unwrap_or(0),
                guard: Some(guard),
                log,
            })
        }
    }

    /// The component's name (also its log's name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Path of its log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `max` bytes of its log, prefixed with its name.
    pub fn log_tail(&self, max: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut start = text.len().saturating_sub(max);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        format!(
            "--- {} ({}):\n{}",
            self.name,
            self.log.display(),
            &text[start..]
        )
    }

    /// True while it runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.guard {
            Some(g) => g.is_running(),
            None => pid_running(self.pid),
        }
    }

    /// Fails with the end of its log if it has exited.
    pub fn check_running(&mut self) -> Result<(), ClusterError> {
        if let Some(g) = &mut self.guard {
            if let Some(status) = g.try_wait() {
                return Err(ClusterError::Exited {
                    name: self.name.clone(),
                    status: status.to_string(),
                    log: self.log_tail(3000),
                });
            }
        } else if !pid_running(self.pid) {
            return Err(ClusterError::Exited {
                name: self.name.clone(),
                status: "gone".into(),
                log: self.log_tail(3000),
            });
        }
        Ok(())
    }

    /// SIGKILL (a crash).
    pub fn kill(&mut self) {
        match &mut self.guard {
            Some(g) => g.kill(),
            None => kill_pid(self.pid, Duration::ZERO),
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        match &mut self.guard {
            Some(g) => {
                g.stop(Duration::from_secs(10));
            }
            None => kill_pid(self.pid, Duration::from_secs(10)),
        }
    }
}

/// Polls `check` every 500 ms until it returns true; fails at `deadline` (with the last
/// `tail` bytes of each daemon's log) or as soon as one of the `daemons` of `state` has exited.
/// The one wait loop of the control plane and the nodes.
pub(crate) fn wait_until<S>(
    state: &mut S,
    daemons: fn(&mut S) -> Vec<&mut Daemon>,
    tail: usize,
    deadline: std::time::Instant,
    what: &str,
    mut check: impl FnMut(&S) -> Result<bool, ClusterError>,
) -> Result<(), ClusterError> {
    loop {
        for d in daemons(state) {
            d.check_running()?;
        }
        if check(state)? {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(ClusterError::Timeout {
                what: what.to_owned(),
                logs: daemons(state)
                    .iter()
                    .map(|d| d.log_tail(tail))
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
