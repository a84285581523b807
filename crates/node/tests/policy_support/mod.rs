//! Shared harness of the policy tests that run the real `calico-node` binary: one lab host
//! (`node1`, 192.168.33.11) running etcd and the agent in its namespace, workloads plumbed
//! as Calico's CNI plugin does (host side `cali…` with proxy ARP; workload side /32 with a
//! default route via 169.254.1.1) and declared as WorkloadEndpoints, TCP servers inside
//! workloads, probes from workloads, and `calicoctl` run inside the node.
//!
//! The agent runs with `CALICO_NETWORKING_BACKEND=none` (no BGP: one node), so what these
//! tests exercise is its policy path and its local workload routes.
//!
//! Needs root and `target/debug/calico-node` and `target/debug/calicoctl`
//! (`cargo build -p calico-rs --bin calico-node --bin calicoctl`).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use calico_api::{ObjectMeta, WorkloadEndpoint, WorkloadEndpointSpec};
use calico_datastore::{Datastore, EtcdClient};
use calico_lab::etcd::{Etcd, EtcdOptions};
use calico_lab::{Host, Lab, ProcessGuard, TcpServers};

#[path = "../common/mod.rs"]
mod common;
pub use common::binary;

pub const NODE: &str = "node1";
pub const NODE_IP: &str = "192.168.33.11";
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    common::poll(timeout, Duration::from_millis(50), f)
}

/// One workload: its namespace, address, host-side interface and endpoint name.
pub struct Workload {
    pub ns: Host,
    pub ip: IpAddr,
    pub iface: String,
    pub namespace: String,
    pub name: String,
}

/// The lab. Field order is drop order: servers, agent, etcd, then the lab (namespaces).
pub struct PolicyLab {
    servers: Vec<TcpServers>,
    pub agent: Option<ProcessGuard>,
    pub etcd: Etcd,
    pub node: Host,
    pub run_dir: PathBuf,
    pub lab: Lab,
    logs: usize,
}

impl PolicyLab {
    pub fn new() -> PolicyLab {
        let lab = Lab::new().expect("lab");
        let node = lab
            .add_host(NODE, &format!("{NODE_IP}/24"))
            .expect("node host");
        run(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let etcd = Etcd::start(EtcdOptions::in_netns(
            node.netns_path(),
            NODE_IP.parse().expect("node ip"),
        ))
        .expect("etcd");
        let run_dir = lab.dir().join("node1-run");
        PolicyLab {
            servers: Vec::new(),
            agent: None,
            etcd,
            node,
            run_dir,
            lab,
            logs: 0,
        }
    }

    /// Starts (or restarts) the agent and waits for its start-up line. Returns its log path.
    pub fn start_agent(&mut self) -> PathBuf {
        let mut cmd = Command::new(binary("calico-node"));
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NODENAME", NODE)
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", self.etcd.endpoint())
            .env("IP", format!("{NODE_IP}/24"))
            .env("IP6", "none")
            .env("CALICO_NETWORKING_BACKEND", "none")
            .env("CALICO_IPV4POOL_CIDR", "10.65.0.0/16")
            .env("CALICO_RUN_DIR", &self.run_dir)
            .env("CALICO_STATE_DIR", self.run_dir.join("lib"))
            .env("CALICO_LOG_LEVEL", "info");
        self.logs += 1;
        let log = format!("calico-node-{}", self.logs);
        let guard = self.node.spawn(cmd, &log).expect("spawn calico-node");
        let log_path = self.node.log_path(&log);
        self.agent = Some(guard);
        let started = wait_for(WAIT, || {
            std::fs::read_to_string(&log_path)
                .ok()
                .filter(|l| l.contains("Calico node started successfully"))
        });
        assert!(
            started.is_some(),
            "calico-node did not start:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        log_path
    }

    pub fn agent_log(&self) -> String {
        self.agent.as_ref().map(|a| a.log()).unwrap_or_default()
    }

    /// Runs `f` with a datastore client, inside the node's namespace (where etcd listens).
    pub fn with_datastore<R: Send>(&self, f: impl AsyncFnOnce(&Datastore) -> R + Send) -> R {
        common::with_etcd(&self.node, &self.etcd, async move |kv: &EtcdClient| {
            f(&Datastore::from_etcd(kv.clone())).await
        })
    }

    /// Applies Calico resources given as YAML documents ([`common::apply_yaml_docs`]).
    pub fn apply_yaml(&self, docs: &[String]) {
        let docs = docs.to_vec();
        self.with_datastore(async move |ds: &Datastore| common::apply_yaml_docs(ds, &docs).await)
    }

    /// A workload `pod` in `namespace` at `ip` (10.65.0.0/16), plumbed and declared as a k8s
    /// WorkloadEndpoint with `labels` and the namespace's profile `kns.<namespace>` (what
    /// Calico's CNI plugin writes in etcd mode).
    pub fn add_workload(
        &self,
        lab_name: &str,
        namespace: &str,
        pod: &str,
        ip: &str,
        labels: &[(&str, &str)],
    ) -> Workload {
        let iface = format!("cali{lab_name}");
        let ip: IpAddr = ip.parse().expect("workload ip");
        let IpAddr::V4(ip4) = ip else {
            panic!("workloads here are IPv4")
        };
        let wl = self
            .lab
            .add_workload(&self.node, lab_name, ip4)
            .expect("workload plumbing");
        let spec = WorkloadEndpointSpec {
            orchestrator: Some("k8s".into()),
            node: Some(NODE.into()),
            pod: Some(pod.into()),
            endpoint: Some("eth0".into()),
            interface_name: Some(iface.clone()),
            ip_networks: vec![format!("{ip}/32")],
            profiles: vec![format!("kns.{namespace}")],
            ..Default::default()
        };
        let name = calico_api::workload_endpoint_name(&spec).expect("endpoint name");
        let mut all: std::collections::BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.insert("projectcalico.org/namespace".into(), namespace.into());
        all.insert("projectcalico.org/orchestrator".into(), "k8s".into());
        let mut wep = WorkloadEndpoint::new(&name, spec);
        wep.metadata = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.into()),
            labels: Some(all),
            ..Default::default()
        };
        self.with_datastore(async move |ds: &Datastore| {
            ds.create(&wep).await.expect("create WorkloadEndpoint");
        });
        Workload {
            ns: wl,
            ip,
            iface,
            namespace: namespace.into(),
            name,
        }
    }

    /// A TCP server in `w` on `port` answering each connection with one byte, until the lab
    /// is dropped.
    pub fn serve_tcp(&mut self, w: &Workload, port: u16) {
        self.serve_tcp_in(&w.ns, port);
    }

    /// The same in any namespace of the lab (e.g. the node itself).
    pub fn serve_tcp_in(&mut self, h: &Host, port: u16) {
        let servers = h
            .serve_tcp(Ipv4Addr::UNSPECIFIED.into(), &[port])
            .expect("tcp server");
        self.servers.push(servers);
    }

    /// `calicoctl ARGS` inside the node (as calico-node's host), with the datastore
    /// configured; returns (success, stdout, stderr).
    pub fn calicoctl(&self, args: &[&str]) -> (bool, String, String) {
        let ctl = binary("calicoctl").display().to_string();
        let endpoints = format!("ETCD_ENDPOINTS={}", self.etcd.endpoint());
        let mut argv = vec!["env", "DATASTORE_TYPE=etcdv3", endpoints.as_str(), &ctl];
        argv.extend_from_slice(args);
        let out = self
            .node
            .exec_timeout(&argv, Duration::from_secs(20))
            .expect("calicoctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Runs a command in `h`, failing the test with its stderr.
pub fn run(h: &Host, argv: &[&str]) {
    let out = h.exec(argv).expect("exec");
    assert!(
        out.status.success(),
        "{argv:?} in {}: {}",
        h.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One TCP connection from `from` to `to:port` that gets the server's byte (timeout 1 s).
pub fn tcp_connects(from: &Workload, to: &Workload, port: u16) -> bool {
    tcp_connects_from(&from.ns, to.ip, port)
}

/// The same from any namespace of the lab to any address.
pub fn tcp_connects_from(from: &Host, to: IpAddr, port: u16) -> bool {
    from.tcp_probe(SocketAddr::new(to, port), Duration::from_secs(1))
        .expect("probe in the workload's namespace")
}

/// One ping (one echo request, its own ICMP id, so a new conntrack entry each time).
pub fn pings(from: &Workload, to: &Workload) -> bool {
    from.ns
        .exec_timeout(
            &["ping", "-n", "-c1", "-W1", &to.ip.to_string()],
            Duration::from_secs(5),
        )
        .expect("ping")
        .status
        .success()
}

/// Waits until `f` holds (policy is applied by the agent asynchronously).
pub fn eventually(what: &str, lab: &PolicyLab, mut f: impl FnMut() -> bool) {
    assert!(
        wait_for(WAIT, || f().then_some(())).is_some(),
        "{what}: not so after {WAIT:?}\nagent log:\n{}",
        lab.agent_log()
    );
}

/// The namespace profile Calico's controllers write for a Namespace (`kns.<ns>`): allow all,
/// the namespace's labels applied to its endpoints as `pcns.<key>` (what namespaceSelector
/// matches).
pub fn namespace_profile(ns: &str, labels: &[(&str, &str)]) -> String {
    let mut apply = format!("    pcns.projectcalico.org/name: {ns}\n");
    for (k, v) in labels {
        apply.push_str(&format!("    pcns.{k}: {v}\n"));
    }
    format!(
        "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata:\n  name: kns.{ns}\nspec:\n  \
         ingress:\n  - action: Allow\n  egress:\n  - action: Allow\n  labelsToApply:\n{apply}"
    )
}
