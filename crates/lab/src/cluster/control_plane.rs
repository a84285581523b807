//! The Kubernetes control plane of a lab: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler, all inside one lab host's network namespace.
//!
//! - etcd (Debian's) listens on 127.0.0.1:2379 of that namespace only: nothing else needs it.
//! - kube-apiserver serves `https://<host ip>:6443` (and 127.0.0.1:6443 in the namespace) with
//!   a per-run PKI, `Node,RBAC` authorization, the NodeRestriction admission plugin,
//!   service-account tokens signed by a per-run key, and a client certificate of its own for
//!   the kubelets (exec, logs, port-forward).
//! - kube-controller-manager and kube-scheduler each use their own client certificate
//!   (`system:kube-controller-manager`, `system:kube-scheduler`), no leader election.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use calico_lab::cluster::{ControlPlane, ControlPlaneOptions};
//! let lab = calico_lab::Lab::new()?;
//! let host = lab.add_host("kube", "192.168.33.20/24")?;
//! let cp = ControlPlane::start(&host, ControlPlaneOptions::default())?;
//! let out = cp.kubectl(&["get", "namespaces"])?; // runs inside the host's namespace
//! // kube-rs: Config from cp.admin_kubeconfig(), used inside a lab host (host.run_async).
//! # Ok(()) }
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::pki::{self, CertPair, Pki};
use super::{ClusterError, Daemon, k8s_bin, kubectl_command};
use crate::etcd::{Etcd, EtcdOptions};
use crate::lab::{Host, output_bounded};

/// The API server's secure port.
pub const API_PORT: u16 = 6443;
/// Service IP range; its first address is the `kubernetes` Service's.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's cluster IP (first address of [`SERVICE_CIDR`]).
pub const API_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Where the PKI, kubeconfigs, etcd data and logs go; `None` is `<lab dir>/kube`.
    pub dir: Option<PathBuf>,
    /// Daemons outlive the caller (for `calico-lab k8s up`): recorded in the run for teardown.
    pub detached: bool,
    /// Bound on the whole start-up (API server ready, controllers working).
    pub startup_timeout: Duration,
    /// Node monitor grace period of the node lifecycle controller: how long a silent kubelet
    /// takes to make its node NotReady.
    pub node_monitor_grace: Duration,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        ControlPlaneOptions {
            dir: None,
            detached: false,
            // Cold start of the API server on two busy cores takes 20-60 s.
            startup_timeout: Duration::from_secs(240),
            node_monitor_grace: Duration::from_secs(20),
        }
    }
}

/// A running control plane. Its daemons are stopped on drop (unless detached); the lab removes
/// the rest.
#[derive(Debug)]
pub struct ControlPlane {
    host: Host,
    dir: PathBuf,
    pki: Pki,
    admin_kubeconfig: PathBuf,
    kubelet_client: CertPair,
    // Stopped in reverse order of start: scheduler, controller-manager, API server, etcd.
    daemons: Vec<Daemon>,
    etcd: Option<Etcd>,
    detached: bool,
}

impl ControlPlane {
    /// Starts etcd, the API server, the controller manager and the scheduler on `host`, and
    /// waits until the API server is ready and the controller manager has created the
    /// `default` ServiceAccount (bounded by `opts.startup_timeout`).
    pub fn start(host: &Host, opts: ControlPlaneOptions) -> Result<ControlPlane, ClusterError> {
        let started = Instant::now();
        let dir = opts
            .dir
            .clone()
            .unwrap_or_else(|| host.lab_dir().join(host.name()));
        std::fs::create_dir_all(&dir).map_err(|e| ClusterError::io(&dir, e))?;
        let ip = host.ip();
        let pki = Pki::create(&dir.join("pki"))?;
        let serving = pki.server(
            "apiserver",
            "kube-apiserver",
            &[
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                ip,
                IpAddr::V4(API_SERVICE_IP),
            ],
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )?;
        let sa = pki.service_account_keys()?;
        let admin = pki.client("admin", "kubernetes-admin", &["system:masters"])?;
        let kubelet_client = pki.client(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        )?;
        let kcm = pki.client("controller-manager", "system:kube-controller-manager", &[])?;
        let sched = pki.client("scheduler", "system:kube-scheduler", &[])?;

        let server = format!("https://{ip}:{API_PORT}");
        let local = format!("https://127.0.0.1:{API_PORT}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write(
            &admin_kubeconfig,
            &pki::kubeconfig(&server, &pki.ca.cert, "kubernetes-admin", &admin),
        )?;
        let kcm_kubeconfig = dir.join("controller-manager.kubeconfig");
        write(
            &kcm_kubeconfig,
            &pki::kubeconfig(&local, &pki.ca.cert, "system:kube-controller-manager", &kcm),
        )?;
        let sched_kubeconfig = dir.join("scheduler.kubeconfig");
        write(
            &sched_kubeconfig,
            &pki::kubeconfig(&local, &pki.ca.cert, "system:kube-scheduler", &sched),
        )?;

        let etcd = Etcd::start(EtcdOptions {
            name: Some("kube-etcd".into()),
            state_dir: Some(dir.join("etcd")),
            detached: opts.detached,
            startup_timeout: Duration::from_secs(60),
            ..EtcdOptions::in_netns(host.netns_path(), IpAddr::V4(Ipv4Addr::LOCALHOST))
        })?;
        let mut cp = ControlPlane {
            host: host.clone(),
            dir: dir.clone(),
            pki: pki.clone(),
            admin_kubeconfig,
            kubelet_client: kubelet_client.clone(),
            daemons: Vec::new(),
            etcd: None,
            detached: opts.detached,
        };
        if opts.detached {
            let pid = etcd.detach().unwrap_or(0);
            host.record_pid(pid)?;
        } else {
            cp.etcd = Some(etcd);
        }

        let p = |path: &Path| path.display().to_string();
        let mut api = Command::new(k8s_bin("kube-apiserver")?);
        api.arg("--etcd-servers=http://127.0.0.1:2379")
            .arg("--bind-address=0.0.0.0")
            .arg(format!("--advertise-address={ip}"))
            .arg(format!("--secure-port={API_PORT}"))
            .arg(format!("--tls-cert-file={}", p(&serving.cert)))
            .arg(format!("--tls-private-key-file={}", p(&serving.key)))
            .arg(format!("--client-ca-file={}", p(&pki.ca.cert)))
            .arg(format!("--service-account-key-file={}", p(&sa.cert)))
            .arg(format!("--service-account-signing-key-file={}", p(&sa.key)))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .arg("--authorization-mode=Node,RBAC")
            .arg("--enable-admission-plugins=NodeRestriction")
            .arg("--allow-privileged=true")
            .arg(format!(
                "--kubelet-client-certificate={}",
                p(&kubelet_client.cert)
            ))
            .arg(format!("--kubelet-client-key={}", p(&kubelet_client.key)))
            .arg(format!(
                "--kubelet-certificate-authority={}",
                p(&pki.ca.cert)
            ))
            .arg("--kubelet-preferred-address-types=InternalIP")
            .arg("--profiling=false")
            .arg("--v=1");
        cp.daemons.push(Daemon::start(
            host,
            api,
            "kube-apiserver",
            opts.detached,
            None,
        )?);
        cp.wait_api_ready(opts.startup_timeout.saturating_sub(started.elapsed()))?;

        let mut kcm_cmd = Command::new(k8s_bin("kube-controller-manager")?);
        kcm_cmd
            .arg(format!("--kubeconfig={}", p(&kcm_kubeconfig)))
            .arg(format!(
                "--authentication-kubeconfig={}",
                p(&kcm_kubeconfig)
            ))
            .arg(format!("--authorization-kubeconfig={}", p(&kcm_kubeconfig)))
            .arg("--bind-address=127.0.0.1")
            .arg("--leader-elect=false")
            .arg(format!("--root-ca-file={}", p(&pki.ca.cert)))
            .arg(format!("--service-account-private-key-file={}", p(&sa.key)))
            .arg("--use-service-account-credentials=true")
            .arg(format!("--cluster-signing-cert-file={}", p(&pki.ca.cert)))
            .arg(format!("--cluster-signing-key-file={}", p(&pki.ca.key)))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .arg(format!(
                "--node-monitor-grace-period={}s",
                opts.node_monitor_grace.as_secs().max(1)
            ))
            .arg("--v=1");
        cp.daemons.push(Daemon::start(
            host,
            kcm_cmd,
            "kube-controller-manager",
            opts.detached,
            None,
        )?);
        let mut sched_cmd = Command::new(k8s_bin("kube-scheduler")?);
        sched_cmd
            .arg(format!("--kubeconfig={}", p(&sched_kubeconfig)))
            .arg(format!(
                "--authentication-kubeconfig={}",
                p(&sched_kubeconfig)
            ))
            .arg(format!(
                "--authorization-kubeconfig={}",
                p(&sched_kubeconfig)
            ))
            .arg("--bind-address=127.0.0.1")
            .arg("--leader-elect=false")
            .arg("--v=1");
        cp.daemons.push(Daemon::start(
            host,
            sched_cmd,
            "kube-scheduler",
            opts.detached,
            None,
        )?);
        // The controller manager works once it has given the default namespace its
        // ServiceAccount and published the cluster CA (pods need both).
        let deadline = started + opts.startup_timeout;
        cp.wait_until(deadline, "the controller manager to create ServiceAccount default/default and ConfigMap kube-root-ca.crt", |cp| {
            Ok(cp.kubectl(&["get", "serviceaccount", "default", "-n", "default"])?.status.success()
                && cp.kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", "default"])?.status.success())
        })?;
        tracing::info!(elapsed = ?started.elapsed(), server, "control plane ready");
        Ok(cp)
    }

    /// `https://<host ip>:6443`: reachable from every host of the lab.
    pub fn server(&self) -> String {
        format!("https://{}:{API_PORT}", self.host.ip())
    }

    /// The lab host the control plane runs on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The control plane's directory (PKI, kubeconfigs, etcd data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The per-run PKI (its CA signs node certificates too).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Kubeconfig of a cluster admin (`system:masters`) for [`ControlPlane::server`]. Use it
    /// from inside a lab host's namespace: the host namespace has no route to the lab.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The API server's client certificate towards kubelets.
    pub fn kubelet_client_cert(&self) -> &CertPair {
        &self.kubelet_client
    }

    /// Runs `kubectl ARGS` as the admin inside the control plane's namespace (bounded: 120 s).
    pub fn kubectl(&self, args: &[&str]) -> Result<Output, ClusterError> {
        self.kubectl_timeout(args, Duration::from_secs(120))
    }

    /// [`ControlPlane::kubectl`] with an explicit bound.
    pub fn kubectl_timeout(
        &self,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output, ClusterError> {
        let cmd = kubectl_command(&self.host, &self.admin_kubeconfig, args)?;
        Ok(output_bounded(cmd, timeout)?)
    }

    /// Like [`ControlPlane::kubectl`], failing unless kubectl succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String, ClusterError> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            return Err(ClusterError::Failed {
                what: format!("kubectl {}", args.join(" ")),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Polls `check` every 500 ms until it returns true; fails at `deadline` or when a
    /// control-plane daemon has exited (with the end of its log).
    pub fn wait_until(
        &mut self,
        deadline: Instant,
        what: &str,
        check: impl FnMut(&Self) -> Result<bool, ClusterError>,
    ) -> Result<(), ClusterError> {
        let daemons: fn(&mut Self) -> Vec<&mut Daemon> = |cp| cp.daemons.iter_mut().collect();
        super::wait_until(self, daemons, 1500, deadline, what, check)
    }

    fn wait_api_ready(&mut self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        self.wait_until(deadline, "kube-apiserver /readyz", |cp| {
            Ok(cp
                .kubectl_timeout(&["get", "--raw=/readyz"], Duration::from_secs(15))?
                .status
                .success())
        })
    }

    /// The daemon named `name` (kube-apiserver, kube-controller-manager, kube-scheduler).
    pub fn daemon(&mut self, name: &str) -> Option<&mut Daemon> {
        self.daemons.iter_mut().find(|d| d.name() == name)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        while let Some(mut d) = self.daemons.pop() {
            d.stop();
        }
        self.etcd.take();
    }
}

fn write(path: &Path, text: &str) -> Result<(), ClusterError> {
    std::fs::write(path, text).map_err(|e| ClusterError::io(path, e))
}
