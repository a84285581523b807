//! Harness: a lab node namespace with etcd on its loopback, pod namespaces, and the built
//! plugin binaries invoked exactly as containerd does (`ip netns exec <node> calico` with the
//! CNI_* environment and the netconf on stdin).
//!
//! The binaries must be built first:
//! `cargo build -p calico-rs --bin calico --bin calico-ipam` (or set CALICO_CNI_BIN_DIR).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use calico_datastore::{Datastore, EtcdClient, EtcdConfig};
use calico_lab::{Etcd, EtcdOptions, Host, Lab};
use serde_json::{Value, json};

pub const NODE: &str = "node1";

pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CALICO_CNI_BIN_DIR") {
        return PathBuf::from(d);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let dir = target.join("debug");
    assert!(
        dir.join("calico").is_file() && dir.join("calico-ipam").is_file(),
        "build the plugins first: cargo build -p calico-rs --bin calico --bin calico-ipam ({})",
        dir.display()
    );
    dir.canonicalize().expect("bin dir")
}

/// CNI_PATH: our binaries first, then Debian's reference plugins.
pub fn cni_path() -> String {
    format!("{}:/usr/lib/cni", bin_dir().display())
}

pub struct World {
    pub lab: Lab,
    pub node: Host,
    pub etcd: Etcd,
}

impl World {
    /// A node namespace, etcd on its 127.0.0.1:2379, and an IPv4 pool.
    pub fn new(pool: &str, block_size: u8) -> World {
        let lab = Lab::new().expect("lab");
        let node = lab.add_host(NODE, "192.168.33.11/24").expect("node");
        let etcd = Etcd::start(EtcdOptions::in_netns(
            node.netns_path(),
            "127.0.0.1".parse().unwrap(),
        ))
        .expect("etcd");
        let w = World { lab, node, etcd };
        let pool = pool.to_owned();
        w.ds(move |ds| async move {
            let p: calico_api::IPPool = serde_json::from_value(json!({
                "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                "metadata": {"name": "pool1"},
                "spec": {"cidr": pool, "blockSize": block_size, "natOutgoing": true}
            }))
            .unwrap();
            ds.create(&p).await.expect("pool");
        });
        w
    }

    pub fn endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    /// Runs `f` with a datastore client inside the node namespace (where etcd listens).
    pub fn ds<R: Send, F, Fut>(&self, f: F) -> R
    where
        F: FnOnce(Datastore) -> Fut + Send,
        Fut: Future<Output = R>,
    {
        with_datastore(&self.node, &self.etcd, f)
    }

    /// Runs `f` with an etcd client inside the node namespace.
    pub fn kv<R: Send, F, Fut>(&self, f: F) -> R
    where
        F: FnOnce(EtcdClient) -> Fut + Send,
        Fut: Future<Output = R>,
    {
        with_etcd(&self.node, &self.etcd, f)
    }

    pub fn netconf(&self) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "k8s-pod-network",
            "type": "calico",
            "datastore_type": "etcdv3",
            "etcd_endpoints": self.endpoint(),
            "nodename": NODE,
            "mtu": 1440,
            "log_level": "debug",
            "log_file_path": self.lab.dir().join("cni.log"),
            "ipam": {"type": "calico-ipam", "assign_ipv4": "true"},
            "container_settings": {"allow_ip_forwarding": false},
            // No `kubernetes` section: there is no API server here, so pods are known by their
            // CNI_ARGS identity (annotations are fed through `Plugin::add_with_pod_info`).
            "policy": {"type": "k8s"}
        })
    }

    /// A pod namespace; returns its `/run/netns/...` path.
    pub fn pod_netns(&self, name: &str) -> Host {
        self.lab.add_namespace(name).expect("pod namespace")
    }
}

/// Runs `f` with an etcd client connected to `etcd`, inside `host`'s namespace (where etcd
/// listens: the test process has no route to it otherwise).
pub fn with_etcd<R: Send, F, Fut>(host: &Host, etcd: &Etcd, f: F) -> R
where
    F: FnOnce(EtcdClient) -> Fut + Send,
    Fut: Future<Output = R>,
{
    let ep = etcd.endpoint();
    host.run_async(|| async move {
        let kv = EtcdClient::connect(&EtcdConfig::new([ep]))
            .await
            .expect("etcd client");
        f(kv).await
    })
    .unwrap_or_else(|e| panic!("run in {}'s namespace: {e}", host.name()))
}

/// [`with_etcd`] with a datastore client.
pub fn with_datastore<R: Send, F, Fut>(host: &Host, etcd: &Etcd, f: F) -> R
where
    F: FnOnce(Datastore) -> Fut + Send,
    Fut: Future<Output = R>,
{
    with_etcd(host, etcd, |kv| f(Datastore::from_etcd(kv)))
}

/// The calico-node agent for node `name` in `host` (IPv4 only, BIRD, no default pools), its
/// state under `run_dir`; the caller adds to its environment and spawns it in `host`. Needs
/// `cargo build -p calico-rs --bin calico-node`.
pub fn agent_command(host: &Host, name: &str, etcd: &str, run_dir: &Path) -> Command {
    let mut cmd = Command::new(bin_dir().join("calico-node"));
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NODENAME", name)
        .env("DATASTORE_TYPE", "etcdv3")
        .env("ETCD_ENDPOINTS", etcd)
        .env("IP", format!("{}/24", host.ip()))
        .env("IP6", "none")
        .env("CALICO_NETWORKING_BACKEND", "bird")
        .env("NO_DEFAULT_POOLS", "true")
        .env("CALICO_RUN_DIR", run_dir)
        .env("CALICO_STATE_DIR", run_dir.join("lib"))
        .env("CALICO_LOG_LEVEL", "info");
    cmd
}

/// One plugin call as containerd makes it.
pub struct Call<'a> {
    pub plugin: &'a str,
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: Option<String>,
    pub ifname: &'a str,
    pub args: String,
    pub extra_env: Vec<(String, String)>,
}

impl<'a> Call<'a> {
    pub fn new(command: &'a str, container_id: &'a str, pod: &str, netns: Option<&Host>) -> Self {
        Call {
            plugin: "calico",
            command,
            container_id,
            netns: netns.map(|h| h.netns_path().display().to_string()),
            ifname: "eth0",
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID=uid-{pod}"
            ),
            extra_env: vec![],
        }
    }
}

pub struct Reply {
    pub ok: bool,
    pub json: Option<Value>,
    pub stderr: String,
}

pub fn invoke(node: &Host, call: &Call, stdin: &Value) -> Reply {
    let bin = if call.plugin.starts_with('/') {
        PathBuf::from(call.plugin)
    } else {
        bin_dir().join(call.plugin)
    };
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "ip", "netns", "exec", node.netns()])
        .arg(&bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", &call.args)
        .env("CNI_PATH", cni_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = &call.netns {
        cmd.env("CNI_NETNS", ns);
    }
    for (k, v) in &call.extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.to_string().as_bytes())
        .unwrap();
    let out: Output = child.wait_with_output().expect("plugin output");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    Reply {
        ok: out.status.success(),
        json: serde_json::from_str(&text).ok(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

pub fn ok(reply: Reply, what: &str) -> Option<Value> {
    assert!(
        reply.ok,
        "{what} failed: {:?}\nstderr: {}",
        reply.json, reply.stderr
    );
    reply.json
}

/// Output of a command in a namespace; panics on failure.
pub fn sh(host: &Host, argv: &[&str]) -> String {
    host.exec_ok(argv).expect("command")
}

/// Links named `cali*` in the node namespace.
pub fn cali_links(node: &Host) -> Vec<String> {
    sh(node, &["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("cali"))
        .collect()
}

/// Routes in the node namespace that go to a `cali*` device.
pub fn cali_routes(node: &Host) -> Vec<String> {
    sh(node, &["ip", "-4", "route", "show"])
        .lines()
        .filter(|l| l.contains("dev cali"))
        .map(str::to_owned)
        .collect()
}

pub fn handles(w: &World) -> Vec<String> {
    w.kv(|kv| async move {
        kv.list("/calico/ipam/v2/handle/")
            .await
            .expect("list handles")
            .kvs
            .into_iter()
            .map(|k| k.key)
            .collect()
    })
}

pub fn endpoints(w: &World) -> Vec<calico_api::WorkloadEndpoint> {
    w.ds(|ds| async move {
        ds.list::<calico_api::WorkloadEndpoint>(None)
            .await
            .expect("list endpoints")
            .items
    })
}

/// Allocated addresses across all blocks.
pub fn allocated(w: &World) -> usize {
    w.kv(|kv| async move {
        let l = kv
            .list("/calico/ipam/v2/assignment/")
            .await
            .expect("list blocks");
        l.kvs
            .iter()
            .map(|b| {
                let v: Value = serde_json::from_slice(&b.value).unwrap();
                v["allocations"]
                    .as_array()
                    .map_or(0, |a| a.iter().filter(|x| !x.is_null()).count())
            })
            .sum()
    })
}
