//! The scale lab: etcd on its own lab host (192.168.33.2), node-0 (192.168.33.11) running the
//! real `calico-node` with real local workloads (veths into their own namespaces, as the node
//! labs plumb them), and model-only agents (`calico-node` with `CALICO_MODEL_ONLY=true`, each
//! its own process, in the etcd host's namespace, metrics on 127.0.0.1:21000+i). Everything is
//! inside lab namespaces; torn down on drop (followers and agent first, then etcd, then the
//! namespaces).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use calico_datastore::EtcdClient;
use calico_lab::etcd::{Etcd, EtcdOptions};
use calico_lab::{Host, Lab, ProcessGuard};
use calico_nftables::render::{TABLE_NAME, set_name};
use calico_nftables::socket::NftSocket;
use calico_policy::model::IpVersion;
use calico_policy::sets::SetKey;
use calico_selector::Selector;

use super::*;

#[path = "../common/mod.rs"]
mod common;

pub const NODE_IP: &str = "192.168.33.11";
const FOLLOWER_PORT: u16 = 21_000;
/// Model-only agent `i` serves `/readiness` on 127.0.0.1:22000+i (etcd host's namespace).
pub const HEALTH_PORT: u16 = 22_000;

/// The calico-node binary of this build profile (`BENCH_PROFILE=release` for the release one).
pub fn calico_node_binary() -> PathBuf {
    let profile = std::env::var("BENCH_PROFILE").unwrap_or_else(|_| "debug".into());
    let bin = common::target_dir().join(profile).join("calico-node");
    assert!(
        bin.is_file(),
        "{} is not built: cargo build -p calico-rs --bin calico-node",
        bin.display()
    );
    bin
}

pub use common::poll;

/// `VmHWM` (peak) and `VmRSS` of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |f: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(f))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// `MemAvailable` of the machine, in KiB.
pub fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The nft set (IPv4) of a selector, as the agent names it.
pub fn selector_set(selector: &str) -> String {
    let sel = Selector::parse(selector).expect("selector");
    set_name(&SetKey::Selector(sel).id(), IpVersion::V4)
}

/// Field order is drop order: model-only agents, the agent, workloads, etcd, the lab.
pub struct ScaleLab {
    pub followers: Vec<ProcessGuard>,
    pub agent: Option<ProcessGuard>,
    pub workloads: Vec<Host>,
    pub etcd: Etcd,
    pub etcd_host: Host,
    pub node: Host,
    pub run_dir: PathBuf,
    pub lab: Lab,
    pub shape: Shape,
    /// One nf_tables socket in node-0's namespace for the probes (opened at first use and
    /// kept: a probe polls every 0.5 ms, and opening a socket in a namespace per poll cost
    /// milliseconds of the same two cores the agent runs on).
    nft: std::cell::RefCell<Option<NftSocket>>,
    /// CPUs the model-only agents started from now on run on ([`super::cpu::on`]); `None`:
    /// anywhere.
    pub follower_cpus: Option<String>,
}

impl ScaleLab {
    pub fn new(shape: Shape) -> ScaleLab {
        let lab = Lab::new().expect("lab");
        let etcd_host = lab.add_host("etcd", "192.168.33.2/24").expect("etcd host");
        let etcd = Etcd::start(EtcdOptions {
            // Server-side request latency (grpc_server_handling_seconds) beside the probe's.
            extra_args: vec!["--metrics=extensive".into()],
            ..EtcdOptions::in_netns(etcd_host.netns_path(), etcd_host.ip())
        })
        .expect("etcd");
        let node = lab
            .add_host("node0", &format!("{NODE_IP}/24"))
            .expect("node host");
        node.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .expect("forwarding");
        let run_dir = lab.dir().join("node0-run");
        ScaleLab {
            followers: Vec::new(),
            agent: None,
            workloads: Vec::new(),
            etcd,
            etcd_host,
            node,
            run_dir,
            lab,
            shape,
            nft: Default::default(),
            follower_cpus: None,
        }
    }

    /// `f` with the probes' socket.
    fn with_nft<R>(&self, f: impl FnOnce(&mut NftSocket) -> R) -> R {
        let mut slot = self.nft.borrow_mut();
        let s = slot.get_or_insert_with(|| {
            NftSocket::open_in(&self.node.netns_path()).expect("nft socket")
        });
        f(s)
    }

    /// Runs `f` with an etcd client inside the etcd host's namespace.
    pub fn with_kv<R: Send>(&self, f: impl AsyncFnOnce(&EtcdClient) -> R + Send) -> R {
        common::with_etcd(&self.etcd_host, &self.etcd, f)
    }

    /// Writes the whole synthetic cluster. Returns (objects, revision).
    pub fn write_cluster(&self) -> (usize, i64) {
        let docs = cluster(self.shape);
        let n = docs.len();
        (
            n,
            self.with_kv(async move |kv: &EtcdClient| put_all(kv, docs).await),
        )
    }

    /// Puts documents (plain puts, one transaction per 100); returns the revision and the
    /// moment just before the write (after the client connected).
    pub fn put(&self, docs: Vec<(String, Value)>) -> (i64, Instant) {
        self.with_kv(async move |kv: &EtcdClient| {
            let t = Instant::now();
            (put_all(kv, docs).await, t)
        })
    }

    /// node-0's local workloads: a veth each, its end in its own namespace.
    pub fn add_local_workloads(&mut self) {
        for j in 0..self.shape.local_weps {
            let ip: Ipv4Addr = wep_ip(0, j).parse().expect("ip");
            let wl = self
                .lab
                .add_workload(&self.node, &local_iface_suffix(j), ip)
                .expect("workload plumbing");
            self.workloads.push(wl);
        }
    }

    /// Starts the real agent as node-0 with `CALICO_NETWORKING_BACKEND=backend` (`vxlan`:
    /// remote blocks are routed from the datastore's affinities, as Felix's VXLAN route
    /// manager does, no BGP speaker; `bird`: the speaker, with no peer since the mesh is off).
    /// Returns the moment it was spawned, once it printed its start-up line.
    pub fn start_agent(&mut self, backend: &str) -> Instant {
        let mut cmd = Command::new(calico_node_binary());
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NODENAME", "node-0")
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", self.etcd.endpoint())
            .env("IP", format!("{NODE_IP}/24"))
            .env("IP6", "none")
            .env("CALICO_NETWORKING_BACKEND", backend)
            .env("NO_DEFAULT_POOLS", "true")
            .env("FELIX_IPV6SUPPORT", "false")
            .env("CALICO_RUN_DIR", &self.run_dir)
            .env("CALICO_STATE_DIR", self.run_dir.join("lib"))
            // BENCH_AGENT_LOG: another filter for the agent's log (e.g.
            // `info,calico_node::agent=debug` adds a line per round with its timings).
            .env(
                "CALICO_LOG_LEVEL",
                std::env::var("BENCH_AGENT_LOG").unwrap_or_else(|_| "info".into()),
            );
        let t = Instant::now();
        let guard = self
            .node
            .spawn(cmd, "calico-node")
            .expect("spawn calico-node");
        self.agent = Some(guard);
        let started = poll(Duration::from_secs(120), Duration::from_millis(20), || {
            self.agent_log()
                .contains("Calico node started successfully")
                .then_some(())
        });
        assert!(
            started.is_some(),
            "agent did not start:\n{}",
            self.agent_log()
        );
        t
    }

    pub fn agent_log(&self) -> String {
        self.agent.as_ref().map(|a| a.log()).unwrap_or_default()
    }

    pub fn agent_pid(&self) -> u32 {
        self.agent
            .as_ref()
            .and_then(|a| a.pid())
            .expect("agent pid")
    }

    /// Starts model-only agent `i` (node `node-<1 + i % (nodes-1)>`, a simulated agent of a
    /// remote node), its metrics on 127.0.0.1:21000+i and its health on 127.0.0.1:22000+i in
    /// the etcd host's namespace; on [`ScaleLab::follower_cpus`] when set.
    pub fn start_follower(&mut self, i: usize) {
        let node = format!("node-{}", 1 + i % (self.shape.nodes - 1).max(1));
        let mut cmd = match &self.follower_cpus {
            Some(cpus) => super::cpu::on(cpus, &calico_node_binary()),
            None => Command::new(calico_node_binary()),
        };
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CALICO_MODEL_ONLY", "true")
            .env("NODENAME", &node)
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", self.etcd.endpoint())
            .env("FELIX_HEALTHENABLED", "true")
            .env("FELIX_HEALTHHOST", "127.0.0.1")
            .env("FELIX_HEALTHPORT", (HEALTH_PORT + i as u16).to_string())
            .env("FELIX_PROMETHEUSMETRICSENABLED", "true")
            .env("FELIX_PROMETHEUSMETRICSHOST", "127.0.0.1")
            .env(
                "FELIX_PROMETHEUSMETRICSPORT",
                (FOLLOWER_PORT + i as u16).to_string(),
            )
            .env("CALICO_LOG_LEVEL", "warning");
        let guard = self
            .etcd_host
            .spawn(cmd, &format!("model-only-{i}"))
            .expect("spawn a model-only agent");
        self.followers.push(guard);
    }

    /// The revision each model-only agent's model has taken (`calico_model_revision`; 0 while
    /// its metrics are not served yet).
    pub fn follower_revisions(&self) -> Vec<i64> {
        let n = self.followers.len();
        self.etcd_host
            .run(move || {
                (0..n)
                    .map(|i| {
                        // Not answering yet counts as revision 0.
                        let text = scrape(&format!("127.0.0.1:{}", FOLLOWER_PORT + i as u16))
                            .unwrap_or_default();
                        gauge(&text, "calico_model_revision").unwrap_or(0.0) as i64
                    })
                    .collect()
            })
            .expect("scrape in the etcd namespace")
    }

    /// Waits until every model-only agent has taken `rev`.
    pub fn wait_followers(&self, rev: i64, timeout: Duration) {
        let ok = poll(timeout, Duration::from_millis(200), || {
            self.follower_revisions()
                .iter()
                .all(|r| *r >= rev)
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "model-only agents never reached {rev}: {:?}\n{}",
            self.follower_revisions(),
            self.followers.first().map(|f| f.log()).unwrap_or_default()
        );
    }

    /// (mvcc range_total, gRPC Range) from etcd's `/metrics`.
    pub fn ranges(&self) -> (u64, u64) {
        let endpoint = self.etcd.endpoint();
        self.etcd_host
            .run(move || etcd_ranges(&endpoint))
            .expect("scrape in the etcd namespace")
    }

    /// Whether nft set `set` of the agent's table holds `ip`.
    /// Whether the interval set `set` holds `ip`, read over netlink (a dump of that set only:
    /// no process per poll, so polling every 0.5 ms costs the agent little CPU).
    pub fn set_holds(&self, set: &str, ip: &str) -> bool {
        let ip: Ipv4Addr = ip.parse().expect("ip");
        let key = ip.octets().to_vec();
        let mut elems = self.with_nft(|s| s.set_elements(TABLE_NAME, set).expect("dump set"));
        elems.sort();
        // The last element whose key is not above the address: a start means inside.
        elems
            .iter()
            .rev()
            .find(|(k, _)| *k <= key)
            .is_some_and(|(_, end)| !end)
    }

    /// `ip -4 route show exact <cidr>` on node-0 (empty: no route).
    pub fn route(&self, cidr: &str) -> String {
        let out = self
            .node
            .exec(&["ip", "-4", "route", "show", "exact", cidr])
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Routes through the VXLAN device on node-0.
    pub fn vxlan_routes(&self) -> usize {
        let out = self
            .node
            .exec(&["ip", "-4", "route", "show", "dev", "vxlan.calico"])
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    /// The agent's chain of policy `pol<i>` (ingress).
    pub fn policy_chain(&self, i: usize) -> String {
        let mut s = NftSocket::open_in(&self.node.netns_path()).expect("nft socket");
        let chains = s.list_chains().expect("list chains");
        let (dot, colon) = (format!(".pol{i}"), format!(":pol{i}"));
        chains
            .into_iter()
            .map(|c| c.name)
            .find(|n| n.starts_with("pol:i:") && (n.ends_with(&dot) || n.ends_with(&colon)))
            .unwrap_or_else(|| panic!("no chain of pol{i}"))
    }

    /// Whether a rule of `chain` has a comment ending in ` rule <index>`.
    pub fn chain_has_rule(&self, chain: &str, index: usize) -> bool {
        let want = format!(" rule {index}");
        self.with_nft(|s| s.rule_comments(TABLE_NAME, chain).expect("dump chain"))
            .iter()
            .any(|c| c.ends_with(&want))
    }
}
