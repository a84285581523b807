//! `calico-lab`: the seed's lab for humans and the demo.
//!
//! ```text
//! calico-lab up              # namespaces lab-etcd, lab-node1, lab-node2 on one LAN; etcd at 192.168.33.10:2379
//! calico-lab status          # what runs, etcd health, other (test) runs
//! calico-lab shell node1     # a shell inside node1 (calicoctl pointed at the lab's etcd)
//! calico-lab exec node1 -- ip r
//! calico-lab down            # kill the daemons, delete the namespaces
//! calico-lab sweep           # remove leftovers of test runs whose owner died
//! ```

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use calico_lab::seed;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "calico-lab",
    about = "The seed's lab: hosts as network namespaces on one LAN"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the lab (etcd, node1, node2) and start its daemons; they keep running.
    Up,
    /// Stop the lab's daemons and delete its namespaces.
    Down,
    /// Show the lab's hosts, daemons and etcd health, and other lab runs.
    Status,
    /// Open an interactive shell inside a lab host (etcd, node1, node2).
    Shell { host: String },
    /// Run a command inside a lab host.
    Exec {
        host: String,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Remove namespaces, processes, mounts and cgroups left by lab runs whose owner died.
    Sweep,
    /// The Kubernetes lab (scripts/k8s-lab.sh): a control plane and two nodes.
    K8s {
        #[command(subcommand)]
        action: K8sCmd,
    },
}

#[derive(Subcommand)]
enum K8sCmd {
    /// Build the LAN, the Calico etcd, the control plane and the nodes; they keep running.
    Up {
        /// Image tarballs to import on every node (images/containerd/build.sh OUT_DIR).
        #[arg(long)]
        images: Option<std::path::PathBuf>,
        /// Install calico-rs with `helm install` of this chart (charts/calico-rs) and wait
        /// until it runs on every node.
        #[arg(long)]
        chart: Option<std::path::PathBuf>,
        /// Then start the Docker host docker1 (192.168.33.13): dockerd and calico-node by
        /// `calicoctl node run` (calicoctl and calico-node from this program's directory),
        /// on the same Calico etcd and BGP mesh. Needs --chart.
        #[arg(long, requires = "chart")]
        docker_host: bool,
    },
    /// Stop every daemon and pod of the Kubernetes lab and delete its namespaces.
    Down,
}

/// Run id of the Kubernetes lab: namespaces `k8s-kube`, `k8s-node1`, ...
const K8S_LAB_ID: &str = "k8s";
/// Where `calico-lab k8s up` leaves the admin kubeconfig.
const K8S_PUBLIC_DIR: &str = "/run/calico-rs-k8s";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("calico-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn host_netns(host: &str) -> anyhow::Result<String> {
    if !seed::HOSTS.iter().any(|(name, _)| *name == host) {
        bail!("no host {host:?} in the lab (hosts: etcd, node1, node2)");
    }
    let ns = seed::netns_of(host);
    if !calico_lab::state::netns_exists(&ns) {
        bail!("namespace {ns} does not exist: is the lab up? (calico-lab up)");
    }
    Ok(ns)
}

/// Environment that points calicoctl at the lab's etcd (Calico's variables), with this
/// binary's directory (where cargo also puts `calicoctl`) first on PATH.
fn calicoctl_env(cmd: &mut Command, host: &str) {
    cmd.env("DATASTORE_TYPE", "etcdv3")
        .env("ETCD_ENDPOINTS", seed::ETCD_ENDPOINT)
        // The node's own agent and dockerd, as scripts/seed-lab.sh lays them out.
        .env(
            "CALICO_RUN_DIR",
            format!("{}/{host}/run", seed::lab_dir().display()),
        )
        .env(
            "DOCKER_HOST",
            format!("unix:///var/tmp/calico-lab/{host}/docker/docker.sock"),
        );
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_owned()))
    {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", dir.display()));
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Up => {
            println!("calico-lab: bringing up the seed lab");
            seed::up(&mut |line| println!("  {line}")).context("calico-lab up")?;
            println!("calico-lab: the lab is up");
            println!("  a shell on a node:  calico-lab shell node1");
            println!(
                "  calicoctl:          calico-lab exec node1 -- calicoctl -c {} get nodes",
                seed::calicoctl_cfg().display()
            );
            println!("  state and status:   calico-lab status");
            println!("  tear it down:       calico-lab down");
        }
        Cmd::Down => {
            if seed::down().context("calico-lab down")? {
                println!("calico-lab: the lab is down");
            } else {
                println!("calico-lab: no lab was up");
            }
        }
        Cmd::Status => {
            for line in seed::status() {
                println!("{line}");
            }
        }
        Cmd::Shell { host } => {
            let ns = host_netns(&host)?;
            let shell = if std::path::Path::new("/bin/bash").exists() {
                "/bin/bash"
            } else {
                "/bin/sh"
            };
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &ns, shell])
                .env("PS1", format!("[lab {host}] \\w# "))
                .env("CALICO_LAB_HOST", &host);
            calicoctl_env(&mut cmd, &host);
            if shell.ends_with("bash") {
                cmd.arg("--norc");
            }
            println!("calico-lab: shell in {ns} (exit to leave)");
            let err = cmd.exec();
            bail!("cannot start a shell in {ns}: {err}");
        }
        Cmd::Exec { host, command } => {
            let ns = host_netns(&host)?;
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &ns]).args(&command);
            calicoctl_env(&mut cmd, &host);
            let err = cmd.exec();
            bail!("cannot run {command:?} in {ns}: {err}");
        }
        Cmd::K8s {
            action:
                K8sCmd::Up {
                    images,
                    chart,
                    docker_host,
                },
        } => {
            use calico_lab::cluster::{KubeLab, KubeLabOptions};
            println!("calico-lab: bringing up the Kubernetes lab");
            let kube = KubeLab::start(
                KubeLabOptions {
                    id: Some(K8S_LAB_ID.into()),
                    detached: true,
                    images_dir: images,
                    ..Default::default()
                },
                &mut |line| println!("  {line}"),
            )
            .context("calico-lab k8s up")?;
            let mut kube = kube;
            if let Some(chart) = chart {
                let mut line = format!("helm install calico-rs {} -n kube-system", chart.display());
                for s in kube.calico_values() {
                    line.push_str(&format!(" --set-string {s}"));
                }
                println!("  {line}");
                println!(
                    "  waiting for calico-node on every node, the controllers and Ready nodes..."
                );
                let started = std::time::Instant::now();
                kube.install_calico(&chart, &[], std::time::Duration::from_secs(600))
                    .context("installing calico-rs")?;
                println!("  calico-rs is running ({:.0?})", started.elapsed());
            }
            if docker_host {
                let bin_dir = std::env::current_exe()?
                    .parent()
                    .map(std::path::Path::to_owned)
                    .context("calico-lab's directory")?;
                let (name, addr) = calico_lab::cluster::DOCKER_HOST;
                println!(
                    "  Docker host {name} ({addr}): dockerd, calicoctl node run --name {name} --node-image={} --no-default-ippools (starting...)",
                    calico_lab::cluster::DOCKER_NODE_IMAGE
                );
                let started = std::time::Instant::now();
                let host = kube
                    .start_docker_host(&bin_dir.join("calicoctl"), &bin_dir.join("calico-node"))
                    .context("starting the Docker host")?;
                println!(
                    "  Docker host {name} is running ({:.0?}): docker -H unix://{}",
                    started.elapsed(),
                    host.socket().display()
                );
            }
            std::fs::create_dir_all(K8S_PUBLIC_DIR)?;
            let public = std::path::Path::new(K8S_PUBLIC_DIR).join("admin.kubeconfig");
            std::fs::copy(kube.control_plane().admin_kubeconfig(), &public)?;
            println!(
                "  admin kubeconfig: {} (server {}; use it inside a lab namespace, e.g. nsenter --net=/run/netns/{})",
                public.display(),
                kube.control_plane().server(),
                kube.control_plane().host().netns()
            );
            kube.detach()?;
        }
        Cmd::K8s {
            action: K8sCmd::Down,
        } => {
            let up = calico_lab::state::RunRecord::path_for(K8S_LAB_ID).exists();
            if up {
                calico_lab::teardown(K8S_LAB_ID).context("calico-lab k8s down")?;
            }
            let _ = std::fs::remove_dir_all(K8S_PUBLIC_DIR);
            println!(
                "calico-lab: {}",
                if up {
                    "the Kubernetes lab is down"
                } else {
                    "no Kubernetes lab was up"
                }
            );
        }
        Cmd::Sweep => {
            let swept = calico_lab::sweep();
            if swept.is_empty() {
                println!("calico-lab: nothing to sweep");
            } else {
                println!("calico-lab: swept {}", swept.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
