//! A real etcd (v3.4, `/usr/bin/etcd`) started as a child process for tests and the lab.
//!
//! ```no_run
//! use calico_lab::etcd::{Etcd, EtcdOptions};
//! // On 127.0.0.1 with free ports, a throw-away data dir, killed on drop:
//! let etcd = Etcd::start(EtcdOptions::default())?;
//! let endpoints = etcd.endpoints(); // ["http://127.0.0.1:NNNNN"]
//! // With TLS (client certificates required) and an extra flag:
//! let tls = Etcd::start(EtcdOptions { tls: true, extra_args: vec!["--max-txn-ops=1000".into()], ..Default::default() })?;
//! let files = tls.tls().unwrap(); // ca, client_cert, client_key, ...
//! # Ok::<(), calico_lab::etcd::EtcdError>(())
//! ```
//!
//! Inside a lab host: `EtcdOptions::in_netns(host.netns_path(), "192.168.33.10".parse()?)`
//! listens on `192.168.33.10:2379` in that namespace only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::process::{self, ProcessError, ProcessGuard, SpawnOptions};

/// Errors starting or talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot create the etcd state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find a free loopback port")]
    FreePort(#[source] std::io::Error),
    #[error("openssl {step} failed: {stderr}")]
    Openssl { step: String, stderr: String },
    #[error("cannot run openssl for {step}")]
    OpensslSpawn {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start etcd member {member}")]
    Spawn {
        member: String,
        #[source]
        source: ProcessError,
    },
    #[error("etcd member {member} exited during start-up ({status}); log:\n{log}")]
    Exited {
        member: String,
        status: String,
        log: String,
    },
    #[error("etcd member {member} not healthy after {waited:?}; last check: {last}; log:\n{log}")]
    NotReady {
        member: String,
        waited: Duration,
        last: String,
        log: String,
    },
    #[error("cannot run etcdctl")]
    Etcdctl(#[source] std::io::Error),
    #[error("no etcd member {index} (the cluster has {len})")]
    NoMember { index: usize, len: usize },
}

/// TLS material generated for one etcd run (PEM files in its state directory).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// How to start etcd. `Default` is: loopback, free ports, plain HTTP, temp dir, owned child.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Network namespace to run in; `None` is the caller's (use only with loopback there).
    pub netns: Option<PathBuf>,
    /// Address to listen on (client and peer).
    pub listen_ip: IpAddr,
    /// Client port; `None` picks a free one on loopback, 2379 in a namespace.
    pub client_port: Option<u16>,
    /// Peer port; `None` picks a free one on loopback, 2380 in a namespace.
    pub peer_port: Option<u16>,
    /// Serve clients over HTTPS with client-certificate authentication.
    pub tls: bool,
    /// Extra command-line flags, e.g. `--max-txn-ops=1000`.
    pub extra_args: Vec<String>,
    /// Member name; `None` derives one from the PID and port.
    pub name: Option<String>,
    /// Where data, log and certificates live; `None` is a temp dir removed on drop.
    pub state_dir: Option<PathBuf>,
    /// Survives the caller (no death signal, not killed on drop). For `calico-lab up`.
    pub detached: bool,
    /// Bound on the readiness wait.
    pub startup_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            netns: None,
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_port: None,
            peer_port: None,
            tls: false,
            extra_args: Vec::new(),
            name: None,
            state_dir: None,
            detached: false,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

impl EtcdOptions {
    /// etcd on `ip:2379` inside the namespace at `netns` (e.g. a lab host's).
    pub fn in_netns(netns: impl Into<PathBuf>, ip: IpAddr) -> Self {
        EtcdOptions {
            netns: Some(netns.into()),
            listen_ip: ip,
            ..Default::default()
        }
    }
}

/// Picks a free TCP port on 127.0.0.1 (bind to port 0, then release it).
pub fn free_port() -> Result<u16, EtcdError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(EtcdError::FreePort)
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// One etcd process and how to (re)start it.
#[derive(Debug)]
struct Member {
    name: String,
    ip: IpAddr,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    netns: Option<PathBuf>,
    detached: bool,
    tls: Option<TlsFiles>,
    /// Flags shared by every start (cluster membership, TLS, extra args).
    args: Vec<String>,
    guard: Option<ProcessGuard>,
    /// Ports were chosen by us and may be re-picked if another process took them.
    auto_ports: bool,
}

impl Member {
    fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", url_host(self.ip), self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://{}:{}", url_host(self.ip), self.peer_port)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("etcd");
        cmd.arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={}", self.client_url()))
            .arg(format!("--advertise-client-urls={}", self.client_url()))
            .arg(format!("--listen-peer-urls={}", self.peer_url()))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url()))
            .arg("--logger=zap")
            .arg("--log-level=warn");
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        cmd.args(&self.args);
        cmd
    }

    fn spawn(&mut self) -> Result<(), EtcdError> {
        let guard = process::spawn(
            self.command(),
            &SpawnOptions {
                netns: self.netns.clone(),
                log: Some(self.log.clone()),
                detached: self.detached,
            },
        )
        .map_err(|source| EtcdError::Spawn {
            member: self.name.clone(),
            source,
        })?;
        self.guard = Some(guard);
        Ok(())
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // The tail is what explains a failure; keep messages readable.
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text[start..].to_owned()
    }

    fn etcdctl(&self, args: &[&str]) -> Result<Output, EtcdError> {
        etcdctl_cmd(
            &self.client_url(),
            self.tls.as_ref(),
            self.netns.as_deref(),
            args,
        )
    }

    /// Waits until the member answers `endpoint health` (a quorum read), or fails early if the
    /// process exits.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), EtcdError> {
        let started = Instant::now();
        let mut last = String::from("not checked yet");
        while started.elapsed() < timeout {
            if let Some(status) = self.guard.as_mut().and_then(|g| g.try_wait()) {
                self.guard = None;
                return Err(EtcdError::Exited {
                    member: self.name.clone(),
                    status: status.to_string(),
                    log: self.log_text(),
                });
            }
            // A cheap port probe first when we can reach it from here.
            let reachable = self.netns.is_some()
                || TcpStream::connect_timeout(
                    &SocketAddr::new(self.ip, self.client_port),
                    Duration::from_millis(200),
                )
                .is_ok();
            if reachable {
                let out = self.etcdctl(&["endpoint", "health"])?;
                if out.status.success() {
                    return Ok(());
                }
                last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(EtcdError::NotReady {
            member: self.name.clone(),
            waited: timeout,
            last,
            log: self.log_text(),
        })
    }

    fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.kill();
        }
    }

    fn stop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.stop(Duration::from_secs(5));
        }
    }
}

/// Runs `etcdctl` (v3 API) against `endpoint`, bounded by its own dial and command timeouts.
fn etcdctl_cmd(
    endpoint: &str,
    tls: Option<&TlsFiles>,
    netns: Option<&Path>,
    args: &[&str],
) -> Result<Output, EtcdError> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display()))
                .arg("--")
                .arg("etcdctl");
            c
        }
        None => Command::new("etcdctl"),
    };
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=1s")
        .arg("--command-timeout=3s");
    if let Some(tls) = tls {
        cmd.arg(format!("--cacert={}", tls.ca.display()))
            .arg(format!("--cert={}", tls.client_cert.display()))
            .arg(format!("--key={}", tls.client_key.display()));
    }
    cmd.args(args).output().map_err(EtcdError::Etcdctl)
}

/// Either a temp dir we own or a caller-provided directory.
#[derive(Debug)]
enum StateDir {
    Temp(tempfile::TempDir),
    Fixed(PathBuf),
}

impl StateDir {
    fn new(fixed: Option<&Path>) -> Result<StateDir, EtcdError> {
        match fixed {
            Some(p) => {
                std::fs::create_dir_all(p).map_err(|source| EtcdError::StateDir {
                    path: p.to_owned(),
                    source,
                })?;
                Ok(StateDir::Fixed(p.to_owned()))
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix(crate::state::ETCD_TEMP_PREFIX)
                    .tempdir()
                    .map_err(|source| EtcdError::StateDir {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                // Dropped with us; if we are killed first, the sweeper finds the owner gone.
                crate::state::write_owner(dir.path()).map_err(|source| EtcdError::StateDir {
                    path: dir.path().to_owned(),
                    source,
                })?;
                Ok(StateDir::Temp(dir))
            }
        }
    }

    fn path(&self) -> &Path {
        match self {
            StateDir::Temp(t) => t.path(),
            StateDir::Fixed(p) => p,
        }
    }
}

/// A single-member etcd. Killed on drop unless detached.
#[derive(Debug)]
pub struct Etcd {
    member: Member,
    timeout: Duration,
    // Declared last: removed after the process is gone.
    dir: StateDir,
}

impl Etcd {
    /// Starts etcd and waits (bounded by `opts.startup_timeout`) until it is healthy.
    pub fn start(opts: EtcdOptions) -> Result<Etcd, EtcdError> {
        let dir = StateDir::new(opts.state_dir.as_deref())?;
        let tls = if opts.tls {
            Some(generate_tls(dir.path(), &[opts.listen_ip])?)
        } else {
            None
        };
        let in_ns = opts.netns.is_some();
        let auto_ports = !in_ns && (opts.client_port.is_none() || opts.peer_port.is_none());
        let client_port = match opts.client_port {
            Some(p) => p,
            None if in_ns => 2379,
            None => free_port()?,
        };
        let peer_port = match opts.peer_port {
            Some(p) => p,
            None if in_ns => 2380,
            None => free_port()?,
        };
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| format!("etcd-{}-{client_port}", std::process::id()));
        let mut member = Member {
            data_dir: dir.path().join(format!("{name}.etcd")),
            log: dir.path().join(format!("{name}.log")),
            name,
            ip: opts.listen_ip,
            client_port,
            peer_port,
            netns: opts.netns.clone(),
            detached: opts.detached,
            tls,
            args: opts.extra_args.clone(),
            guard: None,
            auto_ports,
        };
        start_with_port_retry(&mut member, opts.startup_timeout)?;
        Ok(Etcd {
            member,
            timeout: opts.startup_timeout,
            dir,
        })
    }

    /// Client URLs (one element), e.g. `http://127.0.0.1:40123`.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.member.client_url()]
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        self.member.client_url()
    }

    /// TLS files when started with `tls: true`.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.member.tls.as_ref()
    }

    /// The state directory (data dir, log, certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The etcd data directory (kept across [`Etcd::restart`]).
    pub fn data_dir(&self) -> &Path {
        &self.member.data_dir
    }

    /// The end of etcd's log.
    pub fn log(&self) -> String {
        self.member.log_text()
    }

    /// PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.member.guard.as_ref().and_then(ProcessGuard::pid)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.member
            .guard
            .as_mut()
            .is_some_and(ProcessGuard::is_running)
    }

    /// Stops etcd gracefully (SIGTERM, SIGKILL after 5 s).
    pub fn stop(&mut self) {
        self.member.stop();
    }

    /// Kills etcd with SIGKILL (a crash).
    pub fn kill(&mut self) {
        self.member.kill();
    }

    /// Stops etcd if it runs and starts it again on the same data dir and ports.
    pub fn restart(&mut self) -> Result<(), EtcdError> {
        self.member.stop();
        self.member.spawn()?;
        self.member.wait_ready(self.timeout)
    }

    /// Runs `etcdctl` against this etcd (inside its namespace, with its client certificate).
    pub fn etcdctl(&self, args: &[&str]) -> Result<Output, EtcdError> {
        self.member.etcdctl(args)
    }

    /// Leaves etcd running after `self` is dropped (for `calico-lab up`); returns its PID. Use
    /// only with a fixed `state_dir`, or the data dir is removed under the running process.
    pub fn detach(mut self) -> Option<u32> {
        self.member.guard.take().and_then(ProcessGuard::detach)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.member.kill();
    }
}

fn start_with_port_retry(member: &mut Member, timeout: Duration) -> Result<(), EtcdError> {
    // Another process may grab a port between free_port() and etcd's bind: re-pick and retry.
    let mut attempts = 0;
    loop {
        attempts += 1;
        member.spawn()?;
        match member.wait_ready(timeout) {
            Ok(()) => return Ok(()),
            Err(EtcdError::Exited { log, .. })
                if member.auto_ports && attempts < 3 && log.contains("address already in use") =>
            {
                tracing::warn!(member = member.name, "port taken, retrying with new ports");
                member.client_port = free_port()?;
                member.peer_port = free_port()?;
                let _ = std::fs::remove_dir_all(&member.data_dir);
            }
            Err(e) => {
                member.kill();
                return Err(e);
            }
        }
    }
}

/// A multi-member etcd cluster on loopback (free ports, fast elections) whose members can be
/// killed and restarted.
///
/// ```no_run
/// let mut cluster = calico_lab::etcd::EtcdCluster::start(3)?;
/// let endpoints = cluster.endpoints();
/// cluster.kill(0);       // the other two keep quorum
/// cluster.restart(0)?;   // same data dir and ports
/// # Ok::<(), calico_lab::etcd::EtcdError>(())
/// ```
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    timeout: Duration,
    dir: StateDir,
}

impl EtcdCluster {
    /// Starts `n` members (plain HTTP) and waits until every member is healthy.
    pub fn start(n: usize) -> Result<EtcdCluster, EtcdError> {
        Self::start_with(n, EtcdOptions::default())
    }

    /// Starts `n` members on loopback with `opts` (`tls`, `extra_args`, `startup_timeout` are
    /// honoured; ports are always picked freely).
    pub fn start_with(n: usize, opts: EtcdOptions) -> Result<EtcdCluster, EtcdError> {
        let n = n.max(1);
        let dir = StateDir::new(opts.state_dir.as_deref())?;
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let tls = if opts.tls {
            Some(generate_tls(dir.path(), &[ip])?)
        } else {
            None
        };
        let token = format!("calico-lab-{}-{}", std::process::id(), free_port()?);
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("m{i}-{token}");
            members.push(Member {
                data_dir: dir.path().join(format!("{name}.etcd")),
                log: dir.path().join(format!("{name}.log")),
                name,
                ip,
                client_port: free_port()?,
                peer_port: free_port()?,
                netns: None,
                detached: false,
                tls: tls.clone(),
                args: Vec::new(),
                guard: None,
                auto_ports: false,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.args = vec![
                format!("--initial-cluster={initial_cluster}"),
                format!("--initial-cluster-token={token}"),
                "--initial-cluster-state=new".into(),
                // Fast elections on loopback keep member-loss tests short.
                "--heartbeat-interval=50".into(),
                "--election-timeout=500".into(),
            ];
            m.args.extend(opts.extra_args.iter().cloned());
        }
        let mut cluster = EtcdCluster {
            members,
            timeout: opts.startup_timeout,
            dir,
        };
        for m in &mut cluster.members {
            m.spawn()?;
        }
        let timeout = cluster.timeout;
        for m in &mut cluster.members {
            m.wait_ready(timeout)?;
        }
        Ok(cluster)
    }

    /// Number of members (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Client URLs of every member, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> Result<String, EtcdError> {
        Ok(self.member(i)?.client_url())
    }

    /// TLS files when started with `tls: true`.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.members.first().and_then(|m| m.tls.as_ref())
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn member(&self, i: usize) -> Result<&Member, EtcdError> {
        self.members.get(i).ok_or(EtcdError::NoMember {
            index: i,
            len: self.members.len(),
        })
    }

    fn member_mut(&mut self, i: usize) -> Result<&mut Member, EtcdError> {
        let len = self.members.len();
        self.members
            .get_mut(i)
            .ok_or(EtcdError::NoMember { index: i, len })
    }

    /// SIGKILLs member `i` (no-op if it is not running or does not exist).
    pub fn kill(&mut self, i: usize) {
        if let Some(m) = self.members.get_mut(i) {
            m.kill();
        }
    }

    /// Starts member `i` again on its data dir and ports and waits until it is healthy.
    pub fn restart(&mut self, i: usize) -> Result<(), EtcdError> {
        let timeout = self.timeout;
        let m = self.member_mut(i)?;
        m.stop();
        m.spawn()?;
        m.wait_ready(timeout)
    }

    /// Runs `etcdctl` against member `i`.
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> Result<Output, EtcdError> {
        self.member(i)?.etcdctl(args)
    }

    /// The end of member `i`'s log.
    pub fn log(&self, i: usize) -> Result<String, EtcdError> {
        Ok(self.member(i)?.log_text())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

fn openssl(dir: &Path, step: &str, args: &[&str]) -> Result<(), EtcdError> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|source| EtcdError::OpensslSpawn {
            step: step.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(EtcdError::Openssl {
            step: step.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Generates a CA, a server certificate valid for `ips` (plus 127.0.0.1 and localhost) and a
/// client certificate (CN `calico`) in `dir`, as PEM files.
pub fn generate_tls(dir: &Path, ips: &[IpAddr]) -> Result<TlsFiles, EtcdError> {
    openssl(
        dir,
        "CA certificate",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "7",
            "-subj",
            "/CN=calico-lab CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    let mut sans: Vec<String> = vec!["IP:127.0.0.1".into(), "DNS:localhost".into()];
    for ip in ips {
        let san = format!("IP:{ip}");
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    let leaf = |name: &str, cn: &str, ext: String| -> Result<(), EtcdError> {
        openssl(
            dir,
            &format!("{name} key and request"),
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
        )?;
        let ext_file = dir.join(format!("{name}.ext"));
        std::fs::write(&ext_file, ext).map_err(|source| EtcdError::StateDir {
            path: ext_file.clone(),
            source,
        })?;
        openssl(
            dir,
            &format!("{name} certificate"),
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "7",
                "-extfile",
                &format!("{name}.ext"),
            ],
        )
    };
    leaf(
        "server",
        "etcd",
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
            sans.join(",")
        ),
    )?;
    leaf(
        "client",
        "calico",
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n".into(),
    )?;
    Ok(TlsFiles {
        ca: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    })
}
