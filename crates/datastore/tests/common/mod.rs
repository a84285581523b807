//! A small etcd launcher for this crate's integration tests (the shared `calico_lab::etcd`
//! launcher was not available yet when these tests were written).
//!
//! Every member listens on 127.0.0.1 only, on free ports, with a per-run data directory that is
//! removed on drop. The child is killed on drop and gets `PR_SET_PDEATHSIG(SIGKILL)`, so a test
//! process that dies without unwinding leaves no etcd behind. Note that the death signal is tied
//! to the *thread* that spawned the child: start members from the test's own thread (the thread
//! running `#[tokio::test]`'s block_on), not from a short-lived spawned thread.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use calico_datastore::EtcdConfig;

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().expect("local addr").port()
}

/// Client-side TLS material generated for one test.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate signed by an unrelated CA: must be refused.
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generates a CA, a server certificate for 127.0.0.1 and client certificates in `dir`.
pub fn generate_tls(dir: &Path) -> TlsFiles {
    let days = "2";
    for (ca, subj) in [
        ("ca", "/CN=calico-rs test CA"),
        ("rogue-ca", "/CN=rogue CA"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                days,
                "-subj",
                subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    let leaf = |name: &str, ca: &str, cn: &str, ext: &str| {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write ext file");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                days,
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    };
    leaf(
        "server",
        "ca",
        "etcd",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
    );
    let client_ext = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n";
    leaf("client", "ca", "calico", client_ext);
    leaf("rogue", "rogue-ca", "calico", client_ext);
    TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        rogue_cert: dir.join("rogue.pem"),
        rogue_key: dir.join("rogue.key"),
    }
}

/// One etcd member.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    tls: Option<TlsFiles>,
}

impl Member {
    pub fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// (Re)starts the process with the same data directory and ports.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "member {} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open etcd log");
        let log2 = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new("etcd");
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("spawn etcd"));
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Options for a test cluster.
#[derive(Default, Clone)]
pub struct Options {
    pub members: usize,
    pub tls: Option<TlsFiles>,
    pub max_txn_ops: Option<usize>,
}

/// A running etcd cluster (one or more members) on loopback.
pub struct Etcd {
    pub members: Vec<Member>,
    tls: Option<TlsFiles>,
    // Declared last: dropped after the members are killed.
    pub dir: tempfile::TempDir,
}

impl Etcd {
    /// One plain member.
    pub fn start() -> Etcd {
        Etcd::start_with(Options {
            members: 1,
            ..Default::default()
        })
    }

    pub fn start_with(opts: Options) -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("calico-ds-etcd-")
            .tempdir()
            .expect("temp dir");
        let n = opts.members.max(1);
        let run_id = format!("{}-{}", std::process::id(), free_port());
        let mut members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("m{i}-{run_id}");
                Member {
                    data_dir: dir.path().join(format!("{name}.etcd")),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: free_port(),
                    peer_port: free_port(),
                    args: Vec::new(),
                    child: None,
                    tls: opts.tls.clone(),
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            let mut args = vec![
                format!("--name={}", m.name),
                format!("--data-dir={}", m.data_dir.display()),
                format!("--listen-client-urls={}", m.client_url()),
                format!("--advertise-client-urls={}", m.client_url()),
                format!("--listen-peer-urls={}", m.peer_url()),
                format!("--initial-advertise-peer-urls={}", m.peer_url()),
                format!("--initial-cluster={initial_cluster}"),
                format!("--initial-cluster-token=calico-ds-{run_id}"),
                "--initial-cluster-state=new".into(),
                // Fast elections on loopback keep the member-loss test short.
                "--heartbeat-interval=50".into(),
                "--election-timeout=500".into(),
                "--logger=zap".into(),
                "--log-level=warn".into(),
            ];
            if let Some(max) = opts.max_txn_ops {
                args.push(format!("--max-txn-ops={max}"));
            }
            if let Some(tls) = &opts.tls {
                args.extend([
                    format!("--cert-file={}", tls.server_cert.display()),
                    format!("--key-file={}", tls.server_key.display()),
                    format!("--trusted-ca-file={}", tls.ca.display()),
                    "--client-cert-auth".into(),
                ]);
            }
            m.args = args;
            m.start();
        }
        let etcd = Etcd {
            members,
            tls: opts.tls,
            dir,
        };
        for i in 0..n {
            etcd.wait_healthy(i, Duration::from_secs(30));
        }
        etcd
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Client config for every member, with client certificates when TLS is on.
    pub fn config(&self) -> EtcdConfig {
        let mut c = EtcdConfig::new(self.endpoints());
        if let Some(tls) = &self.tls {
            c.ca_cert_file = Some(tls.ca.clone());
            c.cert_file = Some(tls.client_cert.clone());
            c.key_file = Some(tls.client_key.clone());
        }
        c
    }

    /// Runs etcdctl (v3 API) against member `i`.
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> Output {
        let m = &self.members[i];
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", m.client_url()))
            .arg("--command-timeout=5s")
            .args(args);
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.client_cert.display()))
                .arg(format!("--key={}", tls.client_key.display()));
        }
        cmd.output().expect("run etcdctl")
    }

    /// Runs etcdctl and panics with its output unless it succeeds.
    pub fn etcdctl_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.etcdctl(i, args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until member `i` answers a linearizable read (so it has a leader).
    pub fn wait_healthy(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.etcdctl(i, &["endpoint", "health"]);
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "etcd member {} not healthy after {timeout:?}: {}\nlog:\n{}",
                    self.members[i].name,
                    String::from_utf8_lossy(&out.stderr),
                    self.members[i].log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills member `i` and starts it again on the same data dir and ports.
    pub fn restart(&mut self, i: usize) {
        self.members[i].kill();
        self.members[i].start();
        self.wait_healthy(i, Duration::from_secs(30));
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}
