//! The Kubernetes lab's Docker host: a lab host with its own dockerd (the seed lab's launcher,
//! [`crate::dockerd`]) and calico-node started the seed's way, `calicoctl node run`, against
//! the same Calico etcd as the Kubernetes nodes: one datastore, one BGP mesh, one pool.
//!
//! Started after calico-rs is installed on the cluster, so that the pools exist and
//! calico-node adds none of its own (`--no-default-ippools` besides, as an operator joining a
//! Docker host to an existing Calico network does).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::ClusterError;
use crate::dockerd::{Dockerd, DockerdConfig, build_busybox_image, build_scratch_image};
use crate::lab::{Host, output_bounded};

/// The Docker host's name and LAN address.
pub const DOCKER_HOST: (&str, &str) = ("docker1", "192.168.33.13/24");
/// The calico-node image built on the Docker host (FROM scratch).
pub const DOCKER_NODE_IMAGE: &str = "calico-rs/node:latest";
/// The workload image built on the Docker host (FROM scratch, Debian's busybox-static).
pub const DOCKER_BUSYBOX_IMAGE: &str = "busybox:latest";

/// What the Docker host runs.
#[derive(Debug, Clone)]
pub struct DockerHostOptions {
    /// The Calico etcd's client URL.
    pub etcd_endpoint: String,
    /// calicoctl (runs `calicoctl node run` on the host).
    pub calicoctl: PathBuf,
    /// calico-node, the image's entrypoint.
    pub calico_node: PathBuf,
}

/// A running Docker host. Dropping it stops dockerd (and with it calico-node and the
/// containers) unless [`DockerHost::detach`]ed; the run record holds dockerd's PID and the containers' cgroup
/// parent either way, so the lab's teardown removes a killed run's leftovers.
#[derive(Debug)]
pub struct DockerHost {
    host: Host,
    run_dir: PathBuf,
    opts: DockerHostOptions,
    dockerd: Option<Dockerd>,
}

impl DockerHost {
    /// Starts dockerd on `host`, builds the busybox and calico-node images into it, and runs
    /// `calicoctl node run --name <host> --no-default-ippools`; returns once calico-node has
    /// started (calicoctl waits for its start line).
    pub fn start(host: &Host, opts: DockerHostOptions) -> Result<DockerHost, ClusterError> {
        let dir = host.lab_dir().join(host.name());
        let run_dir = dir.join("run");
        std::fs::create_dir_all(&run_dir).map_err(|e| ClusterError::io(&run_dir, e))?;
        let cgroup_parent = format!("/calico-lab-{}", host.netns());
        host.record_cgroup(&cgroup_parent)?;
        let config = DockerdConfig {
            netns: host.netns().to_owned(),
            state_dir: dir.join("docker"),
            plugins_dir: dir.join("plugins"),
            start_timeout: Duration::from_secs(60),
            cgroup_parent: Some(cgroup_parent),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClusterError::io(Path::new("tokio runtime"), e))?;
        let dockerd =
            runtime
                .block_on(Dockerd::start(config))
                .map_err(|e| ClusterError::Failed {
                    what: format!("dockerd on {}", host.name()),
                    detail: e.to_string(),
                })?;
        if let Some(pid) = dockerd.pid() {
            host.record_pid(pid)?;
        }
        let docker_host = DockerHost {
            host: host.clone(),
            run_dir,
            opts,
            dockerd: Some(dockerd),
        };
        docker_host.build_images()?;
        docker_host.node_run()?;
        Ok(docker_host)
    }

    fn dockerd(&self) -> &Dockerd {
        self.dockerd.as_ref().expect("dockerd runs until drop")
    }

    fn build_images(&self) -> Result<(), ClusterError> {
        let failed = |what: &str, e: std::io::Error| ClusterError::Failed {
            what: format!("building {what} on {}", self.host.name()),
            detail: e.to_string(),
        };
        build_busybox_image(self.dockerd(), DOCKER_BUSYBOX_IMAGE)
            .map_err(|e| failed(DOCKER_BUSYBOX_IMAGE, e))?;
        build_scratch_image(
            self.dockerd(),
            DOCKER_NODE_IMAGE,
            &[&self.opts.calico_node, Path::new("/usr/sbin/ip")],
        )
        .map_err(|e| failed(DOCKER_NODE_IMAGE, e))
    }

    fn node_run(&self) -> Result<(), ClusterError> {
        let out = self.calicoctl(&[
            "node",
            "run",
            "--name",
            self.host.name(),
            &format!("--node-image={DOCKER_NODE_IMAGE}"),
            "--no-default-ippools",
        ])?;
        if !out.status.success() {
            return Err(ClusterError::Failed {
                what: format!("calicoctl node run on {}", self.host.name()),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(())
    }

    /// The lab host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// dockerd's API socket (`docker -H unix://...`).
    pub fn socket(&self) -> PathBuf {
        self.dockerd().socket()
    }

    /// calico-node's run directory on the host (`CALICO_RUN_DIR`: its status socket).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// `calicoctl ARGS` on the host, as its operator runs it (the Calico etcd, this dockerd,
    /// this calico-node's run directory), bounded (120 s).
    pub fn calicoctl(&self, args: &[&str]) -> Result<Output, ClusterError> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.host.netns_path().display()))
            .arg("--")
            .arg(&self.opts.calicoctl)
            .args(args)
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", &self.opts.etcd_endpoint)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("CALICO_RUN_DIR", &self.run_dir);
        Ok(output_bounded(cmd, Duration::from_secs(120))?)
    }

    /// `docker ARGS` against this host's dockerd, bounded (120 s).
    pub fn docker(&self, args: &[&str]) -> Result<Output, ClusterError> {
        let mut cmd = self.dockerd().cli();
        cmd.args(args);
        Ok(output_bounded(cmd, Duration::from_secs(120))?)
    }

    /// `docker ARGS`, failing unless it succeeds; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> Result<String, ClusterError> {
        let out = self.docker(args)?;
        if !out.status.success() {
            return Err(ClusterError::Failed {
                what: format!("docker {}", args.join(" ")),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits (bounded by `timeout`) until `calicoctl node status` on this host shows
    /// `peers` BGP sessions Established.
    pub fn wait_established(&self, peers: usize, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.calicoctl(&["node", "status"])?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.matches("Established").count() >= peers {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout {
                    what: format!("{peers} BGP sessions Established on {}", self.host.name()),
                    logs: text,
                });
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Keeps dockerd (and calico-node, the containers) running after `self` is dropped.
    pub fn detach(mut self) {
        if let Some(d) = self.dockerd.take() {
            d.detach();
        }
    }
}

impl Drop for DockerHost {
    fn drop(&mut self) {
        if let Some(mut d) = self.dockerd.take() {
            // Containers first, while calico-node still serves the drivers: removing them once
            // it is gone makes dockerd retry every driver call (as scripts/seed-lab.sh does).
            if let Ok(out) = d
                .cli()
                .args(["ps", "-a", "--format", "{{.Names}}"])
                .output()
            {
                let names = String::from_utf8_lossy(&out.stdout).into_owned();
                let workloads: Vec<&str> = names
                    .lines()
                    .filter(|n| !n.is_empty() && *n != "calico-node")
                    .collect();
                if !workloads.is_empty() {
                    let _ = output_bounded(
                        {
                            let mut c = d.cli();
                            c.args(["rm", "-f"]).args(&workloads);
                            c
                        },
                        Duration::from_secs(60),
                    );
                }
            }
            d.stop();
        }
    }
}
