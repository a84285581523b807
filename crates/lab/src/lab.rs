//! Hosts as network namespaces on one LAN segment.
//!
//! ```text
//!   <id>-lan  (namespace)                  <id>-node1 (namespace)
//!   ┌──────────────────────────┐           ┌───────────────────────┐
//!   │ br0 ── node1 (veth) ─────┼───────────┼─ eth1 192.168.33.11/24│
//!   │     └─ node2 (veth) ─────┼──┐        └───────────────────────┘
//!   └──────────────────────────┘  │        <id>-node2
//!                                 └────────┼─ eth1 192.168.33.12/24 ...
//! ```
//!
//! Like a real host, each lab host has a default route: via the subnet's first address (e.g.
//! 192.168.33.1), which the bridge holds. It is a dead end (the LAN namespace has no uplink and
//! does not forward), but Calico needs it: proxy ARP on a workload's veth answers for
//! 169.254.1.1 only if the host has a route to it out of another interface.
//!
//! The host namespace gets nothing: no link, address or route. Each run has its own id
//! (`crs` + 5 hex digits), so runs in parallel never share a name, and each run's bridge lives
//! in its own namespace, so they can all use the seed's addresses.
//!
//! ```no_run
//! let lab = calico_lab::Lab::new()?;
//! let node1 = lab.add_host("node1", "192.168.33.11/24")?;
//! let node2 = lab.add_host("node2", "192.168.33.12/24")?;
//! let out = node1.exec(&["ping", "-c1", "-W1", "192.168.33.12"])?;
//! assert!(out.status.success());
//! let links = node2.run(|| std::fs::read_dir("/sys/class/net").map(|d| d.count()))?;
//! # Ok::<(), calico_lab::LabError>(())
//! ```
//!
//! Teardown happens on drop (also while unwinding from a panic), on SIGINT/SIGTERM/SIGHUP, and
//! for runs whose owner was SIGKILLed, by [`crate::sweep`] (which `Lab::new` runs first).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::netns::{self, NetnsError};
use crate::process::{self, ProcessError, ProcessGuard, SpawnOptions, pid_start_time};
use crate::signals;
use crate::state::{self, ROOT, RunRecord, StateError, netns_exists};

/// Name of the bridge inside the LAN namespace.
pub const BRIDGE: &str = "br0";
/// Name of each host's LAN interface, as in the seed.
pub const HOST_IFACE: &str = "eth1";

/// Errors building or using a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot create lab directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lab run {id} already exists (namespace {netns} is present)")]
    Exists { id: String, netns: String },
    #[error("host name {name:?} is not valid: {reason}")]
    BadHostName { name: String, reason: &'static str },
    #[error("host {name} already exists in lab {id}")]
    DuplicateHost { id: String, name: String },
    #[error("address {addr:?} for host {host} is not an IP address with a prefix length")]
    BadAddress { host: String, addr: String },
    #[error("{what} failed: `{command}`: {stderr}")]
    Command {
        what: String,
        command: String,
        stderr: String,
    },
    #[error("cannot run `{command}`")]
    Run {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("cannot start {program} on host {host}")]
    Spawn {
        host: String,
        program: String,
        #[source]
        source: ProcessError,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// Default bound for [`Host::exec`].
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Shared {
    record: Mutex<RunRecord>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut RunRecord)) -> Result<(), LabError> {
        let mut rec = self.record.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut rec);
        rec.save()?;
        Ok(())
    }

    fn snapshot(&self) -> RunRecord {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A set of hosts on one LAN. Everything it created is removed when it is dropped, unless it
/// was [detached](Lab::detach).
#[derive(Debug)]
pub struct Lab {
    id: String,
    lan: String,
    dir: PathBuf,
    shared: Arc<Shared>,
    detached: bool,
}

impl Lab {
    /// A new lab with a fresh per-run id and an empty LAN. Sweeps dead runs first.
    pub fn new() -> Result<Lab, LabError> {
        state::sweep();
        let mut rng = rand::rng();
        for _ in 0..16 {
            let id = format!("crs{:05x}", rng.random_range(0..0x10_0000u32));
            if RunRecord::path_for(&id).exists() || netns_exists(&format!("{id}-lan")) {
                continue;
            }
            return Self::create(&id, true);
        }
        Err(LabError::Exists {
            id: "crs*".into(),
            netns: "16 random ids in a row".into(),
        })
    }

    /// A lab with a fixed id (e.g. `lab` for `calico-lab up`): namespaces `<id>-lan`,
    /// `<id>-<host>`. Fails if that run exists already.
    pub fn with_id(id: &str) -> Result<Lab, LabError> {
        state::sweep();
        check_name(id)?;
        let lan = format!("{id}-lan");
        if RunRecord::path_for(id).exists() || netns_exists(&lan) {
            return Err(LabError::Exists {
                id: id.to_owned(),
                netns: lan,
            });
        }
        Self::create(id, true)
    }

    fn create(id: &str, owned: bool) -> Result<Lab, LabError> {
        let dir = Path::new(ROOT).join(id);
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Dir {
            path: dir.clone(),
            source,
        })?;
        let me = std::process::id();
        let lan = format!("{id}-lan");
        // Record first, create second: a crash in between leaves something the sweeper finds.
        let record = RunRecord {
            id: id.to_owned(),
            owner_pid: owned.then_some(me),
            owner_start: owned.then(|| pid_start_time(me)).flatten(),
            namespaces: vec![lan.clone()],
            pids: Vec::new(),
            cgroups: Vec::new(),
            dir: dir.clone(),
        };
        record.save()?;
        signals::register(id);
        let lab = Lab {
            id: id.to_owned(),
            lan: lan.clone(),
            dir,
            shared: Arc::new(Shared {
                record: Mutex::new(record),
            }),
            detached: false,
        };
        ip(&["netns", "add", &lan], "create the LAN namespace")?;
        ip(
            &["-n", &lan, "link", "set", "lo", "up"],
            "bring up lo on the LAN",
        )?;
        ip(
            &["-n", &lan, "link", "add", BRIDGE, "type", "bridge"],
            "create the LAN bridge",
        )?;
        ip(
            &["-n", &lan, "link", "set", BRIDGE, "up"],
            "bring up the LAN bridge",
        )?;
        tracing::info!(lab = id, "lab created");
        Ok(lab)
    }

    /// The run id (prefix of every namespace name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Name of the LAN namespace (holds the bridge [`BRIDGE`]).
    pub fn lan_netns(&self) -> &str {
        &self.lan
    }

    /// The run's directory under /run/calico-lab (logs, pid files, generated config).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds host `name` (letters, digits and `-`, at most 15 characters) with `addr` (e.g.
    /// `192.168.33.11/24`) on its [`HOST_IFACE`], attached to the LAN bridge.
    pub fn add_host(&self, name: &str, addr: &str) -> Result<Host, LabError> {
        check_name(name)?;
        let (ip_addr, _) = parse_cidr(addr).ok_or_else(|| LabError::BadAddress {
            host: name.to_owned(),
            addr: addr.to_owned(),
        })?;
        let netns = format!("{}-{name}", self.id);
        let mut dup = false;
        self.shared.update(|rec| {
            if rec.namespaces.contains(&netns) {
                dup = true;
            } else {
                rec.namespaces.push(netns.clone());
            }
        })?;
        if dup || netns_exists(&netns) {
            return Err(LabError::DuplicateHost {
                id: self.id.clone(),
                name: name.to_owned(),
            });
        }
        let lan = &self.lan;
        ip(&["netns", "add", &netns], "create the host namespace")?;
        ip(&["-n", &netns, "link", "set", "lo", "up"], "bring up lo")?;
        // The bridge port is named after the host: unique within the LAN namespace.
        ip(
            &[
                "-n", lan, "link", "add", name, "type", "veth", "peer", "name", HOST_IFACE,
                "netns", &netns,
            ],
            "create the host's veth pair",
        )?;
        ip(
            &["-n", lan, "link", "set", name, "master", BRIDGE, "up"],
            "attach the host to the LAN bridge",
        )?;
        let host = Host {
            name: name.to_owned(),
            netns,
            ip: ip_addr,
            lab_dir: self.dir.clone(),
            shared: self.shared.clone(),
        };
        host.add_address(addr)?;
        ip(
            &["-n", &host.netns, "link", "set", HOST_IFACE, "up"],
            "bring up eth1",
        )?;
        if let Some(gw) = lan_gateway(addr) {
            self.ensure_gateway(&gw)?;
            let via = gw.split('/').next().unwrap_or_default();
            ip(
                &[
                    "-n",
                    &host.netns,
                    "route",
                    "replace",
                    "default",
                    "via",
                    via,
                    "dev",
                    HOST_IFACE,
                ],
                "add the host's default route",
            )?;
        }
        Ok(host)
    }

    /// Gives the bridge the LAN's gateway address (once per subnet).
    fn ensure_gateway(&self, gw: &str) -> Result<(), LabError> {
        ip(
            &["-n", &self.lan, "addr", "replace", gw, "dev", BRIDGE],
            "give the LAN bridge its gateway address",
        )
    }

    /// Adds a bare namespace `<id>-<name>` (only `lo`, up; not on the LAN), e.g. to stand in
    /// for a container's namespace. Its [`Host::ip`] is unspecified (0.0.0.0).
    pub fn add_namespace(&self, name: &str) -> Result<Host, LabError> {
        check_name(name)?;
        let netns = format!("{}-{name}", self.id);
        let mut dup = false;
        self.shared.update(|rec| {
            if rec.namespaces.contains(&netns) {
                dup = true;
            } else {
                rec.namespaces.push(netns.clone());
            }
        })?;
        if dup || netns_exists(&netns) {
            return Err(LabError::DuplicateHost {
                id: self.id.clone(),
                name: name.to_owned(),
            });
        }
        ip(&["netns", "add", &netns], "create a namespace")?;
        ip(&["-n", &netns, "link", "set", "lo", "up"], "bring up lo")?;
        Ok(Host {
            name: name.to_owned(),
            netns,
            ip: IpAddr::from([0, 0, 0, 0]),
            lab_dir: self.dir.clone(),
            shared: self.shared.clone(),
        })
    }

    /// A workload namespace `name` behind a veth on `node`, plumbed as Calico's CNI plugin
    /// does it for IPv4: host side `cali<name>` with proxy ARP, workload side `eth0` with
    /// `ip`/32 and a default route via 169.254.1.1. Declaring its WorkloadEndpoint is the
    /// test's business, and so are the node's side of routing, as calico-node does it: IPv4
    /// forwarding (proxy ARP answers only on a forwarding node) and the /32 route to the veth.
    /// The veth goes with the namespace.
    pub fn add_workload(
        &self,
        node: &Host,
        name: &str,
        ip: std::net::Ipv4Addr,
    ) -> Result<Host, LabError> {
        let wl = self.add_namespace(name)?;
        let iface = format!("{}{name}", calico_api::names::WORKLOAD_IFACE_PREFIX);
        node.exec_ok(&[
            "ip",
            "link",
            "add",
            &iface,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            wl.netns(),
        ])?;
        node.exec_ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{iface}.proxy_arp=1"),
        ])?;
        node.exec_ok(&["ip", "link", "set", &iface, "up"])?;
        wl.exec_ok(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        wl.exec_ok(&["ip", "link", "set", "eth0", "up"])?;
        wl.exec_ok(&[
            "ip",
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ])?;
        wl.exec_ok(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ])?;
        Ok(wl)
    }

    /// A handle on host `name` of this lab (it must have been added).
    pub fn host(&self, name: &str) -> Option<Host> {
        let netns = format!("{}-{name}", self.id);
        let rec = self.shared.snapshot();
        if !rec.namespaces.contains(&netns) {
            return None;
        }
        let ip = host_ip(&netns).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Some(Host {
            name: name.to_owned(),
            netns,
            ip,
            lab_dir: self.dir.clone(),
            shared: self.shared.clone(),
        })
    }

    /// Records a daemon PID that must be killed at teardown (used for detached daemons).
    pub fn record_pid(&self, pid: u32) -> Result<(), LabError> {
        self.shared.update(|rec| rec.pids.push(pid))
    }

    /// Keeps everything running after `self` is dropped (for `calico-lab up`): the run loses
    /// its owner, so no sweeper touches it; [`teardown`] with its id removes it.
    pub fn detach(mut self) -> Result<String, LabError> {
        self.shared.update(|rec| {
            rec.owner_pid = None;
            rec.owner_start = None;
        })?;
        signals::unregister(&self.id);
        self.detached = true;
        Ok(self.id.clone())
    }

    /// Removes everything now (what `Drop` does).
    pub fn teardown(mut self) {
        self.teardown_now();
    }

    fn teardown_now(&mut self) {
        if self.detached {
            return;
        }
        self.detached = true;
        let rec = self.shared.snapshot();
        state::teardown_run(&rec);
        signals::unregister(&self.id);
        tracing::info!(lab = self.id, "lab torn down");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown_now();
    }
}

/// Tears down run `id` (detached or not) from its record: `calico-lab down`.
pub fn teardown(id: &str) -> Result<(), LabError> {
    let rec = RunRecord::load(id)?;
    state::teardown_run(&rec);
    Ok(())
}

/// One host of a lab. Cheap to clone; the [`Lab`] owns the namespace.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    netns: String,
    ip: IpAddr,
    lab_dir: PathBuf,
    shared: Arc<Shared>,
}

impl Host {
    /// The host's name in the lab (`node1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace name (`<id>-node1`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// `/run/netns/<id>-node1`, for `setns`, `nsenter --net=` and netlink helpers.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    /// The host's first LAN address (without prefix length).
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The lab's directory (/run/calico-lab/<id>), where this host's logs and state go.
    pub fn lab_dir(&self) -> &Path {
        &self.lab_dir
    }

    /// Records a cgroup (path relative to each hierarchy's root, e.g. `/calico-lab-x`) that
    /// this run owns: teardown kills every process left in it and removes it.
    pub fn record_cgroup(&self, cgroup: &str) -> Result<(), LabError> {
        self.shared.update(|rec| {
            if !rec.cgroups.iter().any(|c| c == cgroup) {
                rec.cgroups.push(cgroup.to_owned());
            }
        })
    }

    /// Records a daemon PID that must be killed at teardown.
    pub fn record_pid(&self, pid: u32) -> Result<(), LabError> {
        self.shared.update(|rec| rec.pids.push(pid))
    }

    /// A log file path for something running on this host, in the lab's directory.
    pub fn log_path(&self, what: &str) -> PathBuf {
        self.lab_dir.join(format!("{}-{what}.log", self.name))
    }

    /// Adds another address to eth1 (IPv6 without duplicate address detection).
    pub fn add_address(&self, addr: &str) -> Result<(), LabError> {
        let (ip_addr, _) = parse_cidr(addr).ok_or_else(|| LabError::BadAddress {
            host: self.name.clone(),
            addr: addr.to_owned(),
        })?;
        let mut args = vec![
            "-n",
            &self.netns,
            "addr",
            "replace",
            addr,
            "dev",
            HOST_IFACE,
        ];
        if ip_addr.is_ipv6() {
            args.push("nodad");
        }
        ip(&args, "add an address to eth1")
    }

    /// Runs a command in the host's namespace (`ip netns exec`), bounded by [`EXEC_TIMEOUT`],
    /// and returns its output whatever its exit status.
    pub fn exec(&self, argv: &[&str]) -> Result<Output, LabError> {
        self.exec_timeout(argv, EXEC_TIMEOUT)
    }

    /// [`Host::exec`] with an explicit bound.
    pub fn exec_timeout(&self, argv: &[&str], timeout: Duration) -> Result<Output, LabError> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).args(argv);
        output_bounded(cmd, timeout)
    }

    /// Like [`Host::exec`] but fails unless the command succeeds; returns stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String, LabError> {
        let out = self.exec(argv)?;
        if !out.status.success() {
            return Err(LabError::Command {
                what: format!("command on host {}", self.name),
                command: argv.join(" "),
                stderr: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
                .trim()
                .to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `cmd` in the host's namespace through `ip netns exec` (which also gives it a
    /// private mount namespace with this namespace's /sys and `/etc/netns/<ns>` files). Output
    /// goes to [`Host::log_path`]`(log_name)`. Killed on drop and when this process dies.
    pub fn spawn(&self, cmd: Command, log_name: &str) -> Result<ProcessGuard, LabError> {
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", &self.netns])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        copy_env_and_dir(&cmd, &mut wrapped);
        self.spawn_with(wrapped, log_name, None, false)
    }

    /// Starts `cmd` in the host's network namespace only (like `nsenter --net=...`: `setns`
    /// before exec, no mount namespace of its own), for daemons such as dockerd that need the
    /// host's mounts. Killed on drop and when this process dies.
    pub fn nsenter_spawn(&self, cmd: Command, log_name: &str) -> Result<ProcessGuard, LabError> {
        self.spawn_with(cmd, log_name, Some(self.netns_path()), false)
    }

    /// Starts a daemon in the host's network namespace that outlives this process (for
    /// `calico-lab up`). Its PID is recorded in the run so teardown kills it, and written to
    /// `<lab dir>/<host>-<log_name>.pid`.
    pub fn spawn_detached(&self, cmd: Command, log_name: &str) -> Result<u32, LabError> {
        let guard = self.spawn_with(cmd, log_name, Some(self.netns_path()), true)?;
        let pid = guard.detach().unwrap_or(0);
        self.shared.update(|rec| rec.pids.push(pid))?;
        let pid_file = self.lab_dir.join(format!("{}-{log_name}.pid", self.name));
        std::fs::write(&pid_file, format!("{pid}\n")).map_err(|source| LabError::Dir {
            path: pid_file,
            source,
        })?;
        Ok(pid)
    }

    fn spawn_with(
        &self,
        cmd: Command,
        log_name: &str,
        netns: Option<PathBuf>,
        detached: bool,
    ) -> Result<ProcessGuard, LabError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        process::spawn(
            cmd,
            &SpawnOptions {
                netns,
                log: Some(self.log_path(log_name)),
                detached,
            },
        )
        .map_err(|source| LabError::Spawn {
            host: self.name.clone(),
            program,
            source,
        })
    }

    /// Runs `f` on a thread inside this host's network namespace (sockets it opens belong to
    /// the host).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R, LabError> {
        Ok(netns::run_in(&self.netns_path(), f)?)
    }

    /// Runs an async block inside this host's namespace on a current-thread tokio runtime.
    pub fn run_async<R, F, Fut>(&self, f: F) -> Result<R, LabError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = R>,
        R: Send,
    {
        Ok(netns::run_async_in(&self.netns_path(), f)?)
    }

    /// Pings `target` from this host until one reply arrives or `timeout` passes.
    pub fn wait_ping(&self, target: &str, timeout: Duration) -> Result<bool, LabError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let out = self.exec_timeout(
                &["ping", "-c1", "-W1", "-n", target],
                Duration::from_secs(3),
            )?;
            if out.status.success() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(false)
    }
}

fn copy_env_and_dir(from: &Command, to: &mut Command) {
    for (k, v) in from.get_envs() {
        match v {
            Some(v) => to.env(k, v),
            None => to.env_remove(k),
        };
    }
    if let Some(dir) = from.get_current_dir() {
        to.current_dir(dir);
    }
}

fn check_name(name: &str) -> Result<(), LabError> {
    let bad = |reason| LabError::BadHostName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 15 {
        return Err(bad("must be 1 to 15 characters (it names a link)"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(bad("only lowercase letters, digits and '-' are allowed"));
    }
    if name.starts_with('-') {
        return Err(bad("must not start with '-'"));
    }
    Ok(())
}

/// The gateway of an IPv4 host address's subnet: its first address (`192.168.33.1/24` for
/// `192.168.33.11/24`). `None` for IPv6, for /31 and /32, and when the host *is* that address.
fn lan_gateway(addr: &str) -> Option<String> {
    let (ip, len) = parse_cidr(addr)?;
    let IpAddr::V4(v4) = ip else { return None };
    if len >= 31 {
        return None;
    }
    let mask = u32::MAX << (32 - u32::from(len));
    let gw = (u32::from(v4) & mask) | 1;
    (gw != u32::from(v4)).then(|| format!("{}/{len}", std::net::Ipv4Addr::from(gw)))
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// The first global IPv4 address on eth1 in `netns`, if any.
fn host_ip(netns: &str) -> Option<IpAddr> {
    let out = state::run_quiet("ip", &["-n", netns, "-4", "-o", "addr", "show", HOST_IFACE])?;
    let word = out.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
    parse_cidr(word).map(|(ip, _)| ip)
}

/// Runs `ip ARGS`, bounded, failing with stderr when it fails.
fn ip(args: &[&str], what: &str) -> Result<(), LabError> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let out = output_bounded(cmd, Duration::from_secs(20))?;
    if !out.status.success() {
        return Err(LabError::Command {
            what: what.to_owned(),
            command: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// `Command::output` with a time bound (the child is killed when it runs over).
pub fn output_bounded(mut cmd: Command, timeout: Duration) -> Result<Output, LabError> {
    let command = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Run {
            command: command.clone(),
            source,
        })?;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_t = std::thread::spawn(move || read_all(stdout.as_mut()));
    let err_t = std::thread::spawn(move || read_all(stderr.as_mut()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Timeout { command, timeout });
            }
            Err(source) => return Err(LabError::Run { command, source }),
        }
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

fn read_all<R: std::io::Read>(r: Option<&mut R>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_the_first_address_of_the_subnet() {
        assert_eq!(
            lan_gateway("192.168.33.11/24").as_deref(),
            Some("192.168.33.1/24")
        );
        assert_eq!(lan_gateway("10.1.2.200/16").as_deref(), Some("10.1.0.1/16"));
        assert_eq!(lan_gateway("192.168.33.1/24"), None);
        assert_eq!(lan_gateway("10.0.0.1/32"), None);
        assert_eq!(lan_gateway("fd00::11/64"), None);
    }

    #[test]
    fn names_are_checked_like_link_names() {
        assert!(check_name("node1").is_ok());
        assert!(check_name("a-very-long-name").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("Node").is_err());
        assert!(check_name("").is_err());
    }
}
