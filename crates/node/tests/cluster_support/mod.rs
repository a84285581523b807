//! Shared harness of the tests that run real `calico-node` agents with BGP: a LAN
//! (192.168.33.0/24, every host's `eth1`), etcd on its own host (192.168.33.2), agents on
//! node1..nodeN (192.168.33.11..), pool 10.65.0.0/16 (no block can overlap the LAN). The test
//! process talks to etcd only from inside the etcd host's namespace.
//!
//! Needs root and the binaries `target/debug/calico-node` and `target/debug/calicoctl`
//! (`cargo build -p calico-rs --bin calico-node --bin calicoctl`); without them a test says so
//! and fails.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;
pub mod gobgp;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use calico_datastore::{Datastore, EtcdClient};
use calico_ipam::{AutoAssignArgs, Ipam};
use calico_lab::etcd::{Etcd, EtcdOptions};
use calico_lab::{Host, Lab, ProcessGuard};

pub use common::binary;

pub const POOL: &str = "10.65.0.0/16";

pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    common::poll(timeout, Duration::from_millis(100), f)
}

pub fn routes_of(host: &Host) -> BTreeSet<String> {
    let out = host.exec(&["ip", "-4", "route", "show"]).expect("ip route");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn via(block: &str, peer: IpAddr) -> String {
    format!("{block} via {peer} dev eth1 proto bird")
}

/// One agent host: its namespace, its run directory and (while running) its agent.
pub struct Node {
    // Declared first: the agent is killed before anything else of the node is dropped.
    pub agent: Option<ProcessGuard>,
    pub host: Host,
    pub name: String,
    pub run_dir: PathBuf,
}

/// The lab, etcd and the nodes. Field order is drop order: agents, then etcd, then the lab.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub etcd: Etcd,
    pub etcd_host: Host,
    pub lab: Lab,
}

impl Cluster {
    pub fn new(n: usize) -> Cluster {
        let addrs: Vec<String> = (1..=n)
            .map(|i| format!("192.168.33.{}/24", 10 + i))
            .collect();
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        Cluster::with_hosts(&addrs)
    }

    /// Nodes node1.. with these host addresses (`a.b.c.d/len`). Hosts on other subnets than
    /// 192.168.33.0/24 reach each other (and etcd) through the LAN namespace, which then
    /// routes between the subnets and knows nothing else (no pod route).
    pub fn with_hosts(addrs: &[&str]) -> Cluster {
        let lab = Lab::new().expect("lab");
        let etcd_host = lab.add_host("etcd", "192.168.33.2/24").expect("etcd host");
        let etcd = Etcd::start(EtcdOptions::in_netns(
            etcd_host.netns_path(),
            etcd_host.ip(),
        ))
        .expect("etcd");
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let name = format!("node{}", i + 1);
                let host = lab.add_host(&name, addr).expect("host");
                let run_dir = lab.dir().join(format!("{name}-run"));
                Node {
                    agent: None,
                    host,
                    name,
                    run_dir,
                }
            })
            .collect();
        if addrs.iter().any(|a| !a.starts_with("192.168.33.")) {
            let out = Command::new("ip")
                .args(["netns", "exec", lab.lan_netns(), "sysctl", "-qw"])
                .arg("net.ipv4.ip_forward=1")
                .output()
                .expect("sysctl in the LAN namespace");
            assert!(out.status.success(), "the LAN namespace cannot route");
        }
        Cluster {
            nodes,
            etcd,
            etcd_host,
            lab,
        }
    }

    /// A cluster of `addrs` (see [`Cluster::with_hosts`]) with every agent started with
    /// `env`, and one workload address allocated on each node ([`Cluster::allocate`]):
    /// the cluster and, per node, (address, block).
    pub fn with_agents(addrs: &[&str], env: &[(&str, &str)]) -> (Cluster, Vec<(IpAddr, String)>) {
        let mut c = Cluster::with_hosts(addrs);
        for i in 1..=addrs.len() {
            c.start_agent_with(i, env);
        }
        let allocated = (1..=addrs.len())
            .map(|i| c.allocate(&format!("node{i}")))
            .collect();
        (c, allocated)
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    /// Starts (or restarts) node `i`'s agent and waits for its start-up line.
    pub fn start_agent(&mut self, i: usize) {
        self.start_agent_with(i, &[]);
    }

    /// [`Cluster::start_agent`] with extra environment variables; an empty value removes the
    /// variable from the harness's defaults.
    pub fn start_agent_with(&mut self, i: usize, env: &[(&str, &str)]) {
        let endpoint = self.etcd.endpoint();
        let node = &mut self.nodes[i - 1];
        let mut cmd = Command::new(binary("calico-node"));
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NODENAME", &node.name)
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", &endpoint)
            .env("IP", format!("{}/24", node.host.ip()))
            .env("IP6", "none")
            .env("CALICO_NETWORKING_BACKEND", "bird")
            .env("CALICO_IPV4POOL_CIDR", POOL)
            .env("NO_DEFAULT_POOLS", "false")
            .env("FELIX_IPV6SUPPORT", "false")
            .env("CALICO_RUN_DIR", &node.run_dir)
            .env("CALICO_STATE_DIR", node.run_dir.join("lib"))
            .env("CALICO_LOG_LEVEL", "info");
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        // Each start gets its own log so a restart's log does not overwrite the first one.
        let log = format!(
            "calico-node-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        );
        let guard = node.host.spawn(cmd, &log).expect("spawn calico-node");
        let log_path = node.host.log_path(&log);
        node.agent = Some(guard);
        let started = wait_for(WAIT, || {
            std::fs::read_to_string(&log_path)
                .ok()
                .filter(|l| l.contains("Calico node started successfully"))
        });
        assert!(
            started.is_some(),
            "{} did not start:\n{}",
            node.name,
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    pub fn agent_log(&self, i: usize) -> String {
        self.node(i)
            .agent
            .as_ref()
            .map(|a| a.log())
            .unwrap_or_default()
    }

    /// Runs `f` with an etcd client, inside the etcd host's namespace.
    pub fn with_etcd<R: Send>(&self, f: impl AsyncFnOnce(&EtcdClient) -> R + Send) -> R {
        common::with_etcd(&self.etcd_host, &self.etcd, f)
    }

    /// Runs `f` with a datastore and IPAM client, inside the etcd host's namespace.
    pub fn with_datastore<R: Send>(&self, f: impl AsyncFnOnce(&Datastore, &Ipam) -> R + Send) -> R {
        self.with_etcd(async move |kv: &EtcdClient| {
            let ds = Datastore::from_etcd(kv.clone());
            let ipam = Ipam::new(kv.clone());
            f(&ds, &ipam).await
        })
    }

    /// Applies Calico YAML documents ([`common::apply_yaml_docs`]), from inside the etcd
    /// host's namespace.
    pub fn apply_yaml(&self, docs: &[&str]) {
        let docs: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        self.with_datastore(async move |ds: &Datastore, _| common::apply_yaml_docs(ds, &docs).await)
    }

    /// Allocates one address for a workload on `node` (handle `wl-<node>`), so that the node
    /// claims a block. Returns the address and the node's block.
    pub fn allocate(&self, node: &str) -> (IpAddr, String) {
        let node = node.to_string();
        self.with_datastore(async move |_, ipam: &Ipam| {
            let got = ipam
                .auto_assign(AutoAssignArgs {
                    num_v4: 1,
                    handle_id: Some(format!("wl-{node}")),
                    hostname: node.clone(),
                    ..Default::default()
                })
                .await
                .expect("auto_assign");
            let ip = got.v4[0];
            let blocks = ipam.host_affinities(&node).await.expect("affinities");
            let block = blocks
                .iter()
                .map(|(b, _)| *b)
                .find(|b| b.contains(&ip))
                .expect("the address is in a block affine to the node");
            (ip, block.to_string())
        })
    }

    /// `calicoctl node status` on node `i`.
    pub fn node_status(&self, i: usize) -> String {
        let node = self.node(i);
        let run_dir = format!("CALICO_RUN_DIR={}", node.run_dir.display());
        let ctl = binary("calicoctl");
        let out = node
            .host
            .exec(&[
                "env",
                &run_dir,
                &ctl.display().to_string(),
                "node",
                "status",
            ])
            .expect("calicoctl node status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn routes(&self, i: usize) -> BTreeSet<String> {
        routes_of(&self.node(i).host)
    }

    /// Waits until node `i`'s `ip -4 route` holds every line of `want` and none of `gone`.
    pub fn wait_routes(&self, i: usize, want: &[String], gone: &[String]) {
        let ok = wait_for(WAIT, || {
            let r = self.routes(i);
            (want.iter().all(|w| r.contains(w)) && gone.iter().all(|g| !r.contains(g)))
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "node{i}: wanted {want:?} and not {gone:?}, have {:?}\nlog:\n{}",
            self.routes(i),
            self.agent_log(i)
        );
    }

    pub fn ip(&self, i: usize) -> IpAddr {
        self.node(i).host.ip()
    }

    /// `calicoctl ARGS` against the cluster's etcd, from inside the etcd host's namespace.
    pub fn calicoctl(&self, args: &[&str]) -> String {
        let endpoints = format!("ETCD_ENDPOINTS={}", self.etcd.endpoint());
        let ctl = binary("calicoctl").display().to_string();
        let mut argv = vec!["env", "DATASTORE_TYPE=etcdv3", &endpoints, &ctl];
        argv.extend_from_slice(args);
        let out = self.etcd_host.exec(&argv).expect("calicoctl");
        assert!(
            out.status.success(),
            "calicoctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
