//! Test harness: a lab host is a network namespace with its own etcd (loopback only), drivers
//! and dockerd. Everything is per-run named and torn down by guards.
//!
//! The lab crate had no committed code yet, so this is a small local version of it. The whole
//! test body runs on one thread that has entered the host's namespace (`setns` affects only
//! the calling thread), with a current-thread runtime: children spawned from it (etcd, `ip`,
//! `docker`) and the driver's netlink/sysctl work all land in that namespace.

#![allow(dead_code)]

use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use calico_datastore::{EtcdClient, EtcdConfig};
use calico_docker::{Driver, SyncerConfig, run_network_syncer};
use calico_lab::dockerd::{Dockerd, DockerdConfig};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short name for this run: `<prefix><pid36><n>`.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{:x}{n}", std::process::id())
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command to completion and asserts it succeeded (setup outside the async body).
pub fn sh_sync(args: &[&str]) {
    run(args)
}

fn run(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(st.success(), "{args:?} failed: {st}");
}

/// Gives the namespace what every real host has and proxy ARP needs: forwarding and a default
/// route (proxy ARP only answers for 169.254.1.1 when the host has a unicast route to it through
/// another interface). The route points into a veth pair whose both ends stay in the namespace
/// (the kernel here has no dummy module).
pub fn make_router(netns: &str) {
    run(&[
        "ip", "-n", netns, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ]);
    run(&["ip", "-n", netns, "link", "set", "uplink1", "up"]);
    run(&["ip", "-n", netns, "link", "set", "uplink0", "up"]);
    run(&[
        "ip", "-n", netns, "route", "add", "default", "dev", "uplink0",
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        netns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
}

/// Links two namespaces with a veth pair `lnk0`/`lnk1` carrying `ip1`/`ip2` (prefixes
/// included), both inside the namespaces.
pub fn link(ns1: &str, ip1: &str, ns2: &str, ip2: &str) {
    run(&[
        "ip", "-n", ns1, "link", "add", "lnk0", "type", "veth", "peer", "name", "lnk1", "netns",
        ns2,
    ]);
    run(&["ip", "-n", ns1, "addr", "add", ip1, "dev", "lnk0"]);
    run(&["ip", "-n", ns2, "addr", "add", ip2, "dev", "lnk1"]);
    run(&["ip", "-n", ns1, "link", "set", "lnk0", "up"]);
    run(&["ip", "-n", ns2, "link", "set", "lnk1", "up"]);
}

/// Runs `f` on a fresh thread inside netns `name`, on a current-thread runtime.
pub fn in_netns<F, Fut>(name: &str, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let path = format!("/run/netns/{name}");
    let handle = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f());
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

/// An etcd on this namespace's loopback, killed on drop.
pub struct Etcd {
    child: Child,
    pub url: String,
}

impl Etcd {
    /// On this namespace's loopback. Must be called from a thread inside the namespace.
    pub async fn start(dir: &Path) -> Etcd {
        Self::start_on(dir, "127.0.0.1").await
    }

    /// Listening for clients on `ip` (an address inside the namespace).
    pub async fn start_on(dir: &Path, ip: &str) -> Etcd {
        let url = format!("http://{ip}:2379");
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .arg("--name")
            .arg("t")
            .arg("--data-dir")
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "t=http://127.0.0.1:2380"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let etcd = Etcd { child, url };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(c) = EtcdClient::connect(&etcd.config()).await
                && c.current_revision().await.is_ok()
            {
                return etcd;
            }
            assert!(Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn config(&self) -> EtcdConfig {
        EtcdConfig::new([self.url.clone()])
    }

    pub async fn client(&self) -> EtcdClient {
        EtcdClient::connect(&self.config())
            .await
            .expect("etcd client")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Output of a command run in the current thread's namespace.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub async fn cmd(c: &mut tokio::process::Command) -> Out {
    let what = format!("{:?}", c.as_std());
    let o = tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .unwrap_or_else(|_| panic!("command timed out: {what}"))
        .expect("command spawn");
    Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub async fn sh(args: &[&str]) -> Out {
    cmd(tokio::process::Command::new(args[0]).args(&args[1..])).await
}

/// `docker -H <sock> args...`
pub async fn docker(sock: &Path, args: &[&str]) -> Out {
    cmd(tokio::process::Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args(args))
    .await
}

pub async fn docker_ok(sock: &Path, args: &[&str]) -> String {
    let o = docker(sock, args).await;
    assert!(o.ok, "docker {args:?} failed: {}{}", o.stdout, o.stderr);
    o.stdout
}

/// `docker network create --driver calico --ipam-driver calico-ipam EXTRA... NAME`.
pub async fn calico_network(sock: &Path, extra: &[&str], name: &str) -> Out {
    let mut args = vec![
        "network",
        "create",
        "--driver",
        "calico",
        "--ipam-driver",
        "calico-ipam",
    ];
    args.extend_from_slice(extra);
    args.push(name);
    docker(sock, &args).await
}

/// [`calico_network`], which must succeed; the network's id.
pub async fn calico_network_ok(sock: &Path, extra: &[&str], name: &str) -> String {
    let o = calico_network(sock, extra, name).await;
    assert!(
        o.ok,
        "docker network create {name} failed: {}{}",
        o.stdout, o.stderr
    );
    o.stdout
}

/// A busybox container `name` sleeping on network `net` (`docker run -d`); its id.
pub async fn sleeper(sock: &Path, net: &str, name: &str) -> String {
    docker_ok(
        sock,
        &[
            "run", "-d", "--net", net, "--name", name, "busybox", "sleep", "600",
        ],
    )
    .await
}

/// The drivers, served on their own thread inside the host's namespace so they keep answering
/// dockerd while the test thread is blocked (e.g. in a guard's drop during a panic).
pub struct DriverThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DriverThread {
    pub fn start(
        hostname: &str,
        netns: &str,
        etcd: EtcdConfig,
        plugins: &Path,
        docker_sock: &Path,
        with_syncer: bool,
    ) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let hostname = hostname.to_string();
        let plugins = plugins.to_path_buf();
        let docker_sock = docker_sock.to_path_buf();
        let path = format!("/run/netns/{netns}");
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns on a valid namespace fd; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let kv = EtcdClient::connect(&etcd).await.expect("etcd");
                if with_syncer {
                    let (kv, engine) = (kv.clone(), calico_docker::DockerEngine::new(&docker_sock));
                    let config = SyncerConfig {
                        hostname: hostname.clone(),
                        // Long: changes must arrive by the watch and dockerd's events, not the resync.
                        resync_interval: Duration::from_secs(300),
                    };
                    tokio::spawn(run_network_syncer(
                        kv,
                        engine,
                        config,
                        std::future::pending(),
                    ));
                }
                let driver = Arc::new(Driver::with_etcd(hostname, kv, docker_sock));
                let server = calico_docker::serve(driver, &plugins, async move {
                    let _ = rx.await;
                });
                let _ = ready_tx.send(());
                server.await.expect("driver server");
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("drivers started");
        DriverThread {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for DriverThread {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A lab host: drivers serving and dockerd running. Dropping it stops dockerd first (its
/// shutdown still talks to the drivers), then the drivers.
pub struct Host {
    pub name: String,
    pub dockerd: Dockerd,
    pub drivers: DriverThread,
}

impl Host {
    pub async fn start(hostname: &str, netns: &str, dir: &Path, etcd: &Etcd) -> Host {
        Self::start_with(hostname, netns, dir, etcd.config(), false).await
    }

    /// With the network syncer running beside the drivers when `with_syncer`.
    pub async fn start_with(
        hostname: &str,
        netns: &str,
        dir: &Path,
        etcd: EtcdConfig,
        with_syncer: bool,
    ) -> Host {
        let plugins = dir.join("plugins");
        let state = dir.join("docker");
        std::fs::create_dir_all(&plugins).unwrap();
        let drivers = DriverThread::start(
            hostname,
            netns,
            etcd,
            &plugins,
            &Dockerd::socket_path(&state),
            with_syncer,
        );
        let dockerd = Dockerd::start(DockerdConfig {
            netns: netns.to_string(),
            state_dir: state,
            plugins_dir: plugins,
            start_timeout: Duration::from_secs(30),
            cgroup_parent: None,
        })
        .await
        .expect("dockerd");
        Host {
            name: hostname.to_string(),
            dockerd,
            drivers,
        }
    }

    pub fn sock(&self) -> PathBuf {
        self.dockerd.socket()
    }

    /// Removes all containers, then drops (stops) the host.
    pub async fn shutdown(self) {
        if std::env::var_os("CDK_DOCKERD_LOG").is_some() {
            let log = self.dockerd.config().state_dir.join("dockerd.log");
            eprintln!("{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        let ids = docker(&self.sock(), &["ps", "-aq"]).await.stdout;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            docker(&self.sock(), &args).await;
        }
        drop(self);
    }
}

/// Raw HTTP POST to a plugin socket; returns (status, body).
/// Two Docker hosts in the namespaces `n1` and `n2` (linked, 10.200.0.1 and .2), without
/// containers or routing: etcd on node1's link address, drivers + syncer + dockerd on each; a
/// default IPv4 pool (192.168.0.0/16). Run it inside `n1` (`in_netns`); files under `dir`.
pub async fn two_hosts_setup(
    dir: &std::path::Path,
    n1: &str,
    n2: &str,
) -> (Etcd, EtcdClient, Host, Host) {
    let (d1, d2) = (dir.join("node1"), dir.join("node2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let etcd = Etcd::start_on(&d1, "10.200.0.1").await;
    let kv = etcd.client().await;
    let ds = calico_datastore::Datastore::from_etcd(kv.clone());
    let mut pool = calico_api::IPPool::new(
        "default-ipv4-ippool",
        calico_api::IPPoolSpec {
            cidr: "192.168.0.0/16".into(),
            ..Default::default()
        },
    );
    pool.metadata = calico_api::ObjectMeta {
        name: Some("default-ipv4-ippool".into()),
        ..Default::default()
    };
    ds.create(&pool).await.unwrap();
    let h1 = Host::start_with("node1", n1, &d1, etcd.config(), true).await;
    let h2 = Host::start_with("node2", n2, &d2, etcd.config(), true).await;
    (etcd, kv, h1, h2)
}

pub async fn plugin_post(sock: &Path, path: &str, body: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(sock)
        .await
        .expect("plugin socket");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("plugin answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Polls `check` every 100 ms for up to `secs`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
