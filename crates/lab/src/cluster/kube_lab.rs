//! The whole Kubernetes lab: the seed's LAN with a Calico etcd, a control plane and
//! Kubernetes nodes, ready for calico-rs to be installed with Helm.
//!
//! | host    | address (eth1)   | runs |
//! |---------|------------------|------|
//! | `etcd`  | 192.168.33.10/24 | the Calico datastore (etcd), shared with Docker hosts |
//! | `kube`  | 192.168.33.20/24 | [`ControlPlane`]: etcd, kube-apiserver :6443, controller manager, scheduler |
//! | `node1` | 192.168.33.11/24 | [`KubeNode`]: containerd, kubelet, kube-proxy |
//! | `node2` | 192.168.33.12/24 | [`KubeNode`] |
//! | `docker1` | 192.168.33.13/24 | [`DockerHost`]: dockerd, calico-node (`calicoctl node run`); added by [`KubeLab::start_docker_host`] |

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::docker_host::{DOCKER_HOST, DockerHost, DockerHostOptions};
use super::{ClusterError, ControlPlane, ControlPlaneOptions, KubeNode, KubeNodeOptions};
use crate::etcd::{Etcd, EtcdOptions};
use crate::lab::{Host, Lab, output_bounded};

/// The Calico datastore's host.
pub const CALICO_ETCD_HOST: (&str, &str) = ("etcd", "192.168.33.10/24");
/// The control plane's host.
pub const CONTROL_PLANE_HOST: (&str, &str) = ("kube", "192.168.33.20/24");
/// The Kubernetes nodes' hosts.
pub const NODE_HOSTS: [(&str, &str); 2] =
    [("node1", "192.168.33.11/24"), ("node2", "192.168.33.12/24")];
/// The pod network: manifests/ippool.yaml's pool, applied with kubectl once calico-rs runs.
pub const POD_CIDR: &str = "10.244.0.0/16";
/// The chart's default pool in the lab (calico-node creates it at start, as Calico's does):
/// it must overlap neither the LAN (the chart's default 192.168.0.0/16 would) nor the example
/// pool, and is disabled once the example pool is in (Calico's pool migration).
pub const BOOTSTRAP_POOL_CIDR: &str = "10.245.0.0/24";

/// How to build the lab.
#[derive(Debug, Clone)]
pub struct KubeLabOptions {
    /// A fixed run id (namespaces `<id>-kube`, ...); `None` is a fresh per-run id.
    pub id: Option<String>,
    /// Daemons outlive the caller (`calico-lab k8s up`); [`KubeLab::detach`] then keeps it.
    pub detached: bool,
    /// Image tarballs imported on every node (images/containerd/build.sh).
    pub images_dir: Option<PathBuf>,
    /// How many of [`NODE_HOSTS`] to start (0: control plane only).
    pub nodes: usize,
}

impl Default for KubeLabOptions {
    fn default() -> Self {
        KubeLabOptions {
            id: None,
            detached: false,
            images_dir: None,
            nodes: NODE_HOSTS.len(),
        }
    }
}

/// A running Kubernetes lab. Dropping it stops every daemon and removes every namespace,
/// mount and cgroup (unless detached).
#[derive(Debug)]
pub struct KubeLab {
    // Dropped in this order: Docker host, nodes, control plane, Calico etcd, then the lab.
    docker_host: Option<DockerHost>,
    nodes: Vec<KubeNode>,
    control_plane: ControlPlane,
    calico_etcd: Option<Etcd>,
    calico_etcd_endpoint: String,
    etcd_host: Host,
    lab: Lab,
}

impl KubeLab {
    /// Builds the LAN, starts the Calico etcd, the control plane and the nodes; `say` gets a
    /// line per step.
    pub fn start(opts: KubeLabOptions, say: &mut dyn FnMut(&str)) -> Result<KubeLab, ClusterError> {
        let started = Instant::now();
        let lab = match &opts.id {
            Some(id) => Lab::with_id(id)?,
            None => Lab::new()?,
        };
        say(&format!("LAN: bridge br0 in namespace {}", lab.lan_netns()));
        let etcd_host = lab.add_host(CALICO_ETCD_HOST.0, CALICO_ETCD_HOST.1)?;
        let kube_host = lab.add_host(CONTROL_PLANE_HOST.0, CONTROL_PLANE_HOST.1)?;
        let node_hosts = NODE_HOSTS
            .iter()
            .take(opts.nodes)
            .map(|(name, addr)| lab.add_host(name, addr))
            .collect::<Result<Vec<_>, _>>()?;

        let etcd = Etcd::start(EtcdOptions {
            name: Some("calico-etcd".into()),
            state_dir: Some(lab.dir().join("calico-etcd")),
            detached: opts.detached,
            ..EtcdOptions::in_netns(etcd_host.netns_path(), etcd_host.ip())
        })?;
        let calico_etcd_endpoint = etcd.endpoint();
        let calico_etcd = if opts.detached {
            lab.record_pid(etcd.detach().unwrap_or(0))?;
            None
        } else {
            Some(etcd)
        };
        say(&format!(
            "Calico etcd: {calico_etcd_endpoint} in {}",
            etcd_host.netns()
        ));

        say(&format!(
            "control plane on {} ({}): etcd, kube-apiserver, kube-controller-manager, kube-scheduler (starting...)",
            kube_host.name(),
            kube_host.ip()
        ));
        let control_plane = ControlPlane::start(
            &kube_host,
            ControlPlaneOptions {
                detached: opts.detached,
                ..Default::default()
            },
        )?;
        say(&format!(
            "control plane ready: {} after {:.0?} (admin kubeconfig {})",
            control_plane.server(),
            started.elapsed(),
            control_plane.admin_kubeconfig().display()
        ));
        let mut nodes = Vec::new();
        for host in &node_hosts {
            say(&format!(
                "node {} ({}): containerd, kubelet, kube-proxy (starting...)",
                host.name(),
                host.ip()
            ));
            nodes.push(KubeNode::start(
                host,
                &control_plane,
                KubeNodeOptions {
                    images_dir: opts.images_dir.clone(),
                    detached: opts.detached,
                    ..Default::default()
                },
            )?);
            say(&format!(
                "node {} registered after {:.0?}",
                host.name(),
                started.elapsed()
            ));
        }
        Ok(KubeLab {
            docker_host: None,
            nodes,
            control_plane,
            calico_etcd,
            calico_etcd_endpoint,
            etcd_host,
            lab,
        })
    }

    /// The lab (namespaces, run directory).
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The control plane.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// The control plane, mutable (to kill or wait on its daemons).
    pub fn control_plane_mut(&mut self) -> &mut ControlPlane {
        &mut self.control_plane
    }

    /// The nodes.
    pub fn nodes(&self) -> &[KubeNode] {
        &self.nodes
    }

    /// Node `name`, mutable (e.g. to kill its kubelet).
    pub fn node_mut(&mut self, name: &str) -> Option<&mut KubeNode> {
        self.nodes.iter_mut().find(|n| n.name() == name)
    }

    /// The Calico etcd's client URL (`http://192.168.33.10:2379`).
    pub fn calico_etcd_endpoint(&self) -> &str {
        &self.calico_etcd_endpoint
    }

    /// The Calico etcd's host.
    pub fn etcd_host(&self) -> &Host {
        &self.etcd_host
    }

    /// `kubectl ARGS` as the admin (inside the control plane's namespace).
    pub fn kubectl(&self, args: &[&str]) -> Result<Output, ClusterError> {
        self.control_plane.kubectl(args)
    }

    /// `kubectl ARGS`, failing unless it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String, ClusterError> {
        self.control_plane.kubectl_ok(args)
    }

    /// `helm ARGS` as the admin, inside the control plane's namespace, bounded by `timeout`.
    pub fn helm(&self, args: &[&str], timeout: Duration) -> Result<Output, ClusterError> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!(
            "--net={}",
            self.control_plane.host().netns_path().display()
        ))
        .arg("--")
        .arg(helm_bin())
        .arg(format!(
            "--kubeconfig={}",
            self.control_plane.admin_kubeconfig().display()
        ))
        .args(args)
        // helm's cache and config stay in the run's directory.
        .env("HELM_CACHE_HOME", self.lab.dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", self.lab.dir().join("helm/config"))
        .env("HELM_DATA_HOME", self.lab.dir().join("helm/data"));
        Ok(output_bounded(cmd, timeout)?)
    }

    /// The `--set` values that point charts/calico-rs at this lab: the Calico etcd, the
    /// imported images (never pulled), the pod CIDR, autodetection on eth1.
    pub fn calico_values(&self) -> Vec<String> {
        let mut sets = vec![
            format!("etcd.endpoints[0]={}", self.calico_etcd_endpoint),
            format!("pools.ipv4.cidr={BOOTSTRAP_POOL_CIDR}"),
            "ipAutodetectionMethod=interface=eth1".into(),
        ];
        for (key, repo) in [
            ("node", "localhost/calico-rs/node"),
            ("cni", "localhost/calico-rs/cni"),
            ("controllers", "localhost/calico-rs/kube-controllers"),
        ] {
            sets.push(format!("images.{key}.repository={repo}"));
            sets.push(format!("images.{key}.pullPolicy=Never"));
        }
        sets.push("images.test.repository=localhost/busybox".into());
        sets.push("images.test.tag=1".into());
        sets.push("images.test.pullPolicy=Never".into());
        sets
    }

    /// `helm install calico-rs CHART -n kube-system` with [`KubeLab::calico_values`] and
    /// `extra` `--set-string`s (every value is a string), then waits (bounded by `timeout`) until the calico-node DaemonSet has
    /// a ready pod on every node, the controllers Deployment is available and every node is
    /// Ready.
    pub fn install_calico(
        &mut self,
        chart: &Path,
        extra: &[&str],
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        let mut args: Vec<String> = vec![
            "install".into(),
            "calico-rs".into(),
            chart.display().to_string(),
            "-n".into(),
            "kube-system".into(),
        ];
        for s in self
            .calico_values()
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
        {
            args.push("--set-string".into());
            args.push(s.to_owned());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.helm(&argv, Duration::from_secs(180))?;
        if !out.status.success() {
            return Err(ClusterError::Failed {
                what: "helm install calico-rs".into(),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        self.wait_calico_ready(deadline)
    }

    /// Waits until calico-node is ready on every node, the controllers are available and
    /// every node is Ready.
    pub fn wait_calico_ready(&mut self, deadline: Instant) -> Result<(), ClusterError> {
        let want = self.nodes.len().to_string();
        self.control_plane.wait_until(
            deadline,
            "calico-node ready on every node, calico-kube-controllers available, nodes Ready",
            |cp| {
                let ds = cp.kubectl(&[
                    "get",
                    "daemonset",
                    "calico-node",
                    "-n",
                    "kube-system",
                    "-o",
                    "jsonpath={.status.numberReady}",
                ])?;
                let dep = cp.kubectl(&[
                    "get",
                    "deployment",
                    "calico-kube-controllers",
                    "-n",
                    "kube-system",
                    "-o",
                    "jsonpath={.status.availableReplicas}",
                ])?;
                let ready = cp.kubectl(&[
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
                ])?;
                let ready_nodes = String::from_utf8_lossy(&ready.stdout)
                    .lines()
                    .filter(|l| l.trim() == "True")
                    .count();
                Ok(String::from_utf8_lossy(&ds.stdout).trim() == want
                    && String::from_utf8_lossy(&dep.stdout).trim().parse::<u32>().unwrap_or(0) >= 1
                    && ready_nodes.to_string() == want)
            },
        )
    }

    /// Keeps everything running after `self` is dropped (started with `detached: true`);
    /// returns the run id. `calico-lab k8s down` removes it.
    pub fn detach(self) -> Result<String, ClusterError> {
        let KubeLab {
            docker_host,
            nodes,
            control_plane,
            calico_etcd,
            lab,
            ..
        } = self;
        // Detached components do nothing on drop.
        if let Some(d) = docker_host {
            d.detach();
        }
        drop(nodes);
        drop(control_plane);
        drop(calico_etcd);
        Ok(lab.detach()?)
    }

    /// The IP address of a host of the lab by name.
    pub fn host_ip(&self, name: &str) -> Option<IpAddr> {
        self.lab.host(name).map(|h| h.ip())
    }
}

impl KubeLab {
    /// Adds the Docker host ([`DOCKER_HOST`]) on the LAN: dockerd and calico-node (`calicoctl
    /// node run`) on the Calico etcd, in the nodes' BGP mesh. Call it once calico-rs is
    /// installed (the pools exist). [`KubeLab::detach`] detaches it with the rest.
    pub fn start_docker_host(
        &mut self,
        calicoctl: &Path,
        calico_node: &Path,
    ) -> Result<&DockerHost, ClusterError> {
        let host = self.lab.add_host(DOCKER_HOST.0, DOCKER_HOST.1)?;
        let docker_host = DockerHost::start(
            &host,
            DockerHostOptions {
                etcd_endpoint: self.calico_etcd_endpoint.clone(),
                calicoctl: calicoctl.to_owned(),
                calico_node: calico_node.to_owned(),
            },
        )?;
        Ok(self.docker_host.insert(docker_host))
    }

    /// The Docker host, once started.
    pub fn docker_host(&self) -> Option<&DockerHost> {
        self.docker_host.as_ref()
    }

    /// `calicoctl ARGS` against the Calico etcd (run inside its host), bounded (60 s).
    pub fn calicoctl(&self, calicoctl: &Path, args: &[&str]) -> Result<Output, ClusterError> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.etcd_host.netns_path().display()))
            .arg("--")
            .arg(calicoctl)
            .args(args)
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", &self.calico_etcd_endpoint);
        Ok(output_bounded(cmd, Duration::from_secs(60))?)
    }

    /// `kubectl apply -f POOL_YAML` (manifests/ippool.yaml), waits until pool `name` is in the
    /// Calico etcd (mirrored by the controllers), then disables the chart's bootstrap pool so
    /// that new pods take addresses from it.
    pub fn apply_pool(
        &mut self,
        calicoctl: &Path,
        pool_yaml: &Path,
        name: &str,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        self.kubectl_ok(&["apply", "-f", &pool_yaml.display().to_string()])?;
        loop {
            if self
                .calicoctl(calicoctl, &["get", "ippool", name])?
                .status
                .success()
            {
                break;
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout {
                    what: format!("IPPool {name} to reach the Calico etcd"),
                    logs: self
                        .kubectl(&["get", "ippool", name, "-o", "yaml"])
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let out = self.calicoctl(
            calicoctl,
            &[
                "patch",
                "ippool",
                "default-ipv4-ippool",
                "--patch",
                r#"{"spec":{"disabled":true}}"#,
            ],
        )?;
        if !out.status.success() {
            return Err(ClusterError::Failed {
                what: "disabling the bootstrap pool default-ipv4-ippool".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }
}

/// helm: `$HELM`, else `target/k8s/bin/helm` beside the Kubernetes binaries, else on PATH.
pub fn helm_bin() -> PathBuf {
    if let Some(h) = std::env::var_os("HELM") {
        return PathBuf::from(h);
    }
    let beside = super::k8s_bin_dir().join("../../bin/helm");
    if beside.is_file() {
        return beside;
    }
    PathBuf::from("helm")
}
