//! NAT outgoing and the detected MTU for Docker containers, through the real deployment:
//! calico-node with `CALICO_LIBNETWORK_ENABLED=true` (the agent that programs the nat chain
//! and writes the MTU file, and the Docker drivers it serves) beside a real dockerd, in lab
//! namespaces. An "outside" host on the LAN has no route back to any pool.
//!
//! Topology: LAN 192.168.33.0/24; etcd .10, node1 .11 (its `eth1` MTU set to 1400 before
//! calico-node starts), outside .20. Pools 10.65.0.0/16 (natOutgoing) and 10.66.0.0/16 (not).
//!
//! Needs root and `cargo build -p calico-rs --bin calico-node`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use calico_datastore::{Datastore, EtcdClient, EtcdConfig};
use calico_lab::{Dockerd, DockerdConfig, Etcd, EtcdOptions, Host, Lab, ProcessGuard};
use serde_json::json;

const OUTSIDE: &str = "192.168.33.20";
const PORT: u16 = 8080;
const HOST_MTU: u32 = 1400;

fn calico_node() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin = target.join("debug/calico-node");
    assert!(
        bin.is_file(),
        "build the agent first: cargo build -p calico-rs --bin calico-node ({})",
        bin.display()
    );
    bin
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `echo MSG | nc` from inside a container to the outside host: the echoed text, if any.
fn nc_from(w: &World, container: &str, msg: &str) -> Option<String> {
    let script = format!("echo {msg} | nc -w 2 {OUTSIDE} {PORT}");
    let o = w.docker(&["exec", container, "sh", "-c", &script]);
    let out = o.stdout.trim().to_string();
    // Only the echo counts (nc's exit status after its idle timeout varies by version).
    (out == msg).then_some(out)
}

/// Field order is drop order: dockerd first (its shutdown still calls the drivers), then
/// calico-node, then etcd and the lab.
struct World {
    dockerd: Dockerd,
    agent: ProcessGuard,
    _etcd: Etcd,
    node: Host,
    outside: Host,
    _lab: Lab,
    /// Runs the docker tests' common (async) docker helpers.
    rt: tokio::runtime::Runtime,
}

impl World {
    fn docker(&self, args: &[&str]) -> common::Out {
        self.rt
            .block_on(common::docker(&self.dockerd.socket(), args))
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        self.rt
            .block_on(common::docker_ok(&self.dockerd.socket(), args))
            .trim()
            .to_string()
    }

    fn remove_containers(&self) {
        for id in self.docker(&["ps", "-aq"]).stdout.split_whitespace() {
            self.docker(&["rm", "-f", id]);
        }
    }
}

#[test]
fn containers_get_nat_outgoing_and_the_detected_mtu() {
    let lab = Lab::new().unwrap();
    let etcd_host = lab.add_host("etcd", "192.168.33.10/24").unwrap();
    let node = lab.add_host("node1", "192.168.33.11/24").unwrap();
    let outside = lab.add_host("outside", &format!("{OUTSIDE}/24")).unwrap();
    outside.exec_ok(&["ip", "route", "del", "default"]).unwrap();
    // A host interface with a non-default MTU: the detected pod MTU follows it.
    node.exec_ok(&["ip", "link", "set", "eth1", "mtu", &HOST_MTU.to_string()])
        .unwrap();
    let etcd = Etcd::start(EtcdOptions::in_netns(
        etcd_host.netns_path(),
        etcd_host.ip(),
    ))
    .unwrap();
    let ep = etcd.endpoint();
    let ep2 = ep.clone();
    etcd_host
        .run_async(|| async move {
            let kv = EtcdClient::connect(&EtcdConfig::new([ep2])).await.unwrap();
            let ds = Datastore::from_etcd(kv);
            for (name, cidr, nat) in [
                ("nat", "10.65.0.0/16", true),
                ("plain", "10.66.0.0/16", false),
            ] {
                let p: calico_api::IPPool = serde_json::from_value(json!({
                    "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                    "metadata": {"name": name}, "spec": {"cidr": cidr, "natOutgoing": nat}
                }))
                .unwrap();
                ds.create(&p).await.unwrap();
            }
        })
        .unwrap();

    let state = lab.dir().join("node1-docker");
    let plugins = lab.dir().join("node1-plugins");
    let run_dir = lab.dir().join("node1-run");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dockerd = rt
        .block_on(Dockerd::start(DockerdConfig {
            netns: node.netns().to_string(),
            state_dir: state.clone(),
            plugins_dir: plugins.clone(),
            start_timeout: Duration::from_secs(60),
            cgroup_parent: None,
        }))
        .expect("dockerd");
    let sock = dockerd.socket();
    let mut cmd = Command::new(calico_node());
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NODENAME", "node1")
        .env("DATASTORE_TYPE", "etcdv3")
        .env("ETCD_ENDPOINTS", &ep)
        .env("IP", "192.168.33.11/24")
        .env("IP6", "none")
        .env("CALICO_NETWORKING_BACKEND", "bird")
        .env("NO_DEFAULT_POOLS", "true")
        .env("FELIX_IPV6SUPPORT", "false")
        .env("CALICO_LIBNETWORK_ENABLED", "true")
        .env("CALICO_LIBNETWORK_PLUGINS_DIR", &plugins)
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("CALICO_RUN_DIR", &run_dir)
        .env("CALICO_STATE_DIR", run_dir.join("lib"))
        .env("CALICO_LOG_LEVEL", "info");
    let agent = node.spawn(cmd, "calico-node").expect("spawn calico-node");
    let w = World {
        dockerd,
        agent,
        _etcd: etcd,
        node,
        outside,
        _lab: lab,
        rt,
    };
    let mtu_file = run_dir.join("lib/mtu");
    assert!(
        wait_until(Duration::from_secs(30), || mtu_file.is_file()),
        "calico-node wrote no MTU file\n{}",
        w.agent.log()
    );
    assert_eq!(
        std::fs::read_to_string(&mtu_file).unwrap().trim(),
        HOST_MTU.to_string(),
        "no encapsulation: the pod MTU is the host MTU"
    );
    assert!(
        wait_until(Duration::from_secs(30), || plugins
            .join("calico.sock")
            .exists()),
        "the drivers never served\n{}",
        w.agent.log()
    );
    calico_lab::dockerd::build_busybox_image(&w.dockerd, "busybox:latest").unwrap();

    for (net, subnet) in [("natnet", "10.65.0.0/16"), ("plainnet", "10.66.0.0/16")] {
        w.rt.block_on(common::calico_network_ok(&sock, &["--subnet", subnet], net));
    }
    for (name, net) in [("c1", "natnet"), ("c2", "plainnet")] {
        w.rt.block_on(common::sleeper(&sock, net, name));
    }

    // MTU: both ends of the veth have the detected value.
    let inside = w.docker_ok(&["exec", "c1", "cat", "/sys/class/net/cali0/mtu"]);
    assert_eq!(inside, HOST_MTU.to_string(), "container side");
    let host_side = w
        .node
        .exec_ok(&["ip", "-o", "link", "show"])
        .unwrap()
        .lines()
        .filter(|l| l.contains(": cali"))
        .map(|l| l.contains(&format!("mtu {HOST_MTU} ")))
        .collect::<Vec<_>>();
    assert!(
        !host_side.is_empty() && host_side.iter().all(|ok| *ok),
        "host side veths: {}",
        w.node.exec_ok(&["ip", "-o", "link", "show"]).unwrap()
    );

    // NAT outgoing: c1 (natOutgoing pool) reaches the outside host as the node.
    let server = w
        .outside
        .serve_tcp_echo(OUTSIDE.parse().unwrap(), PORT)
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || nc_from(&w, "c1", "hello")
            .is_some()),
        "c1 never reached the outside host\n{}\n{}",
        w.node
            .exec_ok(&["nft", "list", "table", "inet", "calico-rs"])
            .unwrap_or_default(),
        w.agent.log()
    );
    let peers: Vec<SocketAddr> = server.peers();
    assert!(!peers.is_empty());
    assert!(
        peers.iter().all(|p| p.ip() == w.node.ip()),
        "the outside host saw {peers:?}, not only the node's address"
    );
    // c2 (pool without natOutgoing): the same probe fails, and the server saw no connection
    // from it.
    let before = server.peers().len();
    assert!(nc_from(&w, "c2", "hello").is_none());
    assert_eq!(server.peers().len(), before);

    w.remove_containers();
}
