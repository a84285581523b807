//! Test harness: a throw-away etcd on loopback (data on tmpfs, killed on drop and on test
//! process death), the IPAM resources the tests need, and `ipam-stress` child processes.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calico_datastore::{Datastore, EtcdClient, EtcdConfig};
use calico_ipam::Ipam;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free loopback port")
        .port()
}

/// One etcd member on 127.0.0.1 with its data in /dev/shm (fsync is cheap there, so the tests
/// measure our code, not the disk).
pub struct Etcd {
    child: Option<Child>,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd; a start that fails (e.g. a port taken between our probe and etcd's bind)
    /// is retried with fresh ports, at most three times.
    pub fn start() -> Etcd {
        let mut last_log = String::new();
        for _ in 0..3 {
            match Etcd::try_start() {
                Ok(e) => return e,
                Err(log) => last_log = log,
            }
        }
        panic!("etcd did not start in three attempts; last log:\n{last_log}");
    }

    fn try_start() -> Result<Etcd, String> {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("calico-ipam-etcd-")
            .tempdir_in(base)
            .expect("temp dir");
        let (cport, pport) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{cport}");
        let name = format!("ipam-{}-{cport}", std::process::id());
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).expect("etcd log");
        let mut cmd = Command::new("etcd");
        cmd.args([
            format!("--name={name}"),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{pport}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{pport}"),
            format!("--initial-cluster={name}=http://127.0.0.1:{pport}"),
            "--log-level=warn".into(),
            "--logger=zap".into(),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn etcd");
        let mut etcd = Etcd {
            child: Some(child),
            url,
            _dir: dir,
        };
        if etcd.wait_healthy() {
            Ok(etcd)
        } else {
            // Dropping `etcd` kills the child and removes the directory.
            Err(std::fs::read_to_string(&log_path).unwrap_or_default())
        }
    }

    /// True once etcd answers; false if it exits or stays silent for 20 s.
    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return false;
            }
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    &format!("--endpoints={}", self.url),
                    "--command-timeout=2s",
                    "endpoint",
                    "health",
                ])
                .output()
                .expect("run etcdctl");
            if out.status.success() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn config(&self) -> EtcdConfig {
        EtcdConfig::new([self.url.clone()])
    }

    pub async fn client(&self) -> EtcdClient {
        EtcdClient::connect(&self.config()).await.expect("connect")
    }

    pub async fn ipam(&self) -> Ipam {
        Ipam::new(self.client().await)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn resource<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid test resource")
}

pub async fn create_pool(
    ds: &Datastore,
    name: &str,
    cidr: &str,
    block_size: u8,
    extra: serde_json::Value,
) {
    let mut spec = serde_json::json!({"cidr": cidr, "blockSize": block_size});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    let p: calico_api::IPPool = resource(serde_json::json!({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": name}, "spec": spec
    }));
    ds.create(&p).await.expect("create IPPool");
}

pub async fn create_reservation(ds: &Datastore, name: &str, cidrs: &[&str]) {
    let r: calico_api::IPReservation = resource(serde_json::json!({
        "apiVersion": "projectcalico.org/v3", "kind": "IPReservation",
        "metadata": {"name": name}, "spec": {"reservedCIDRs": cidrs}
    }));
    ds.create(&r).await.expect("create IPReservation");
}

pub async fn create_node(ds: &Datastore, name: &str, labels: serde_json::Value) {
    let n: calico_api::Node = resource(serde_json::json!({
        "apiVersion": "projectcalico.org/v3", "kind": "Node",
        "metadata": {"name": name, "labels": labels}, "spec": {}
    }));
    ds.create(&n).await.expect("create Node");
}

pub async fn delete_node(ds: &Datastore, name: &str) {
    ds.delete::<calico_api::Node>(None, name, None)
        .await
        .expect("delete Node");
}

/// Path of the `ipam-stress` binary cargo built for this test.
pub fn stress_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ipam-stress")
}

/// A child process killed on drop (and on test death).
pub struct Proc {
    pub child: Child,
    pub host: String,
}

impl Proc {
    pub fn spawn(url: &str, host: &str, extra: &[&str]) -> Proc {
        let mut cmd = Command::new(stress_bin());
        cmd.args(["--endpoints", url, "--host", host])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: as above.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Proc {
            child: cmd.spawn().expect("spawn ipam-stress"),
            host: host.to_owned(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one JSON line from a child's stdout (blocking; call from spawn_blocking).
pub fn read_event(r: &mut impl std::io::BufRead) -> Option<serde_json::Value> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Ok(v) = serde_json::from_str(line.trim()) {
            return Some(v);
        }
    }
}

/// How many gRPC calls of `method` (e.g. `Txn`, `Range`) etcd has started, from its
/// Prometheus endpoint on the client URL.
pub fn etcd_rpc_count(url: &str, method: &str) -> u64 {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to etcd metrics");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request metrics");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read metrics");
    let needle = format!("grpc_method=\"{method}\"");
    body.lines()
        .filter(|l| l.starts_with("grpc_server_started_total{") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}
