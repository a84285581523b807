//! The seed's lab with stable names, for the demo and for humans (`calico-lab up|down`).
//!
//! | namespace   | host  | address (eth1)     | runs |
//! |-------------|-------|--------------------|------|
//! | `lab-lan`   | -     | bridge `br0`       | the LAN segment |
//! | `lab-etcd`  | etcd  | 192.168.33.10/24   | etcd, client URL http://192.168.33.10:2379 |
//! | `lab-node1` | node1 | 192.168.33.11/24   | (later: dockerd, calico-node) |
//! | `lab-node2` | node2 | 192.168.33.12/24   | (later: dockerd, calico-node) |
//!
//! State lives in `/run/calico-lab/lab/`: etcd's data and log, pid files, and `calicoctl.cfg`
//! (the real `/etc/calico/calicoctl.cfg` is never touched). The daemons are detached: they
//! outlive `calico-lab up` and `calico-lab down` kills them through the run record.
//!
//! `up` is a list of [`Step`]s run in order; a later stage adds its own (dockerd per node,
//! `calicoctl node run`, ...) to [`steps`]. If a step fails, everything started so far is torn
//! down.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::etcd::{Etcd, EtcdError, EtcdOptions};
use crate::lab::{Host, Lab, LabError};
use crate::state::{self, ROOT, RunRecord};

/// Run id of the demo lab; namespaces are `lab-<host>`.
pub const LAB_ID: &str = "lab";
/// The seed's etcd client URL.
pub const ETCD_ENDPOINT: &str = "http://192.168.33.10:2379";
/// The seed's hosts: name and eth1 address.
pub const HOSTS: [(&str, &str); 3] = [
    ("etcd", "192.168.33.10/24"),
    ("node1", "192.168.33.11/24"),
    ("node2", "192.168.33.12/24"),
];

/// Errors bringing the seed lab up or down.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("the lab is already up (run `calico-lab down` first)")]
    AlreadyUp,
    #[error("step {step} failed")]
    Step {
        step: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{node} cannot reach etcd at {ETCD_ENDPOINT}: {detail}")]
    Unreachable { node: String, detail: String },
    #[error("no host {name} in the seed lab (hosts: etcd, node1, node2)")]
    NoHost { name: String },
}

/// What the steps share: the lab under construction and its hosts by name.
pub struct UpContext {
    pub lab: Lab,
    pub hosts: BTreeMap<String, Host>,
}

impl UpContext {
    /// Host `name` (one of [`HOSTS`]).
    pub fn host(&self, name: &str) -> Result<&Host, SeedError> {
        self.hosts.get(name).ok_or_else(|| SeedError::NoHost {
            name: name.to_owned(),
        })
    }
}

/// One step of `calico-lab up`: `run` returns the lines that tell the user what it started.
/// `down`, if any, runs before the teardown (steps in reverse order) for what killing the
/// recorded daemons and deleting the namespaces would not clean up (e.g. removing Docker
/// containers before their dockerd dies); it gets the run record and must not fail the
/// teardown (log and carry on).
pub struct Step {
    pub name: &'static str,
    pub run: fn(&mut UpContext) -> Result<Vec<String>, SeedError>,
    pub down: Option<fn(&RunRecord)>,
}

/// The steps of `calico-lab up`, in order.
pub fn steps() -> Vec<Step> {
    vec![
        Step {
            name: "etcd",
            run: start_etcd,
            down: None,
        },
        Step {
            name: "calicoctl config",
            run: write_calicoctl_cfg,
            down: None,
        },
        Step {
            name: "check",
            run: check_nodes_reach_etcd,
            down: None,
        },
    ]
}

/// The lab's directory.
pub fn lab_dir() -> PathBuf {
    lab_dir_of(LAB_ID)
}

fn lab_dir_of(id: &str) -> PathBuf {
    PathBuf::from(ROOT).join(id)
}

/// Path of the generated calicoctl config.
pub fn calicoctl_cfg() -> PathBuf {
    lab_dir().join("calicoctl.cfg")
}

/// Namespace of seed host `name`.
pub fn netns_of(name: &str) -> String {
    format!("{LAB_ID}-{name}")
}

/// Builds the lab and runs every step, printing as it goes through `say`. On success the lab
/// is detached and keeps running.
pub fn up(say: &mut dyn FnMut(&str)) -> Result<(), SeedError> {
    up_with_id(LAB_ID, say)
}

/// [`up`] under another run id (namespaces `<id>-etcd`, ...; state in `/run/calico-lab/<id>`),
/// so that tests can build the seed lab without touching a human's `lab`.
pub fn up_with_id(id: &str, say: &mut dyn FnMut(&str)) -> Result<(), SeedError> {
    state::sweep();
    if RunRecord::path_for(id).exists() || state::netns_exists(&format!("{id}-lan")) {
        return Err(SeedError::AlreadyUp);
    }
    let lab = Lab::with_id(id)?;
    say(&format!(
        "LAN segment: bridge br0 in namespace {}",
        lab.lan_netns()
    ));
    let mut hosts = BTreeMap::new();
    for (name, addr) in HOSTS {
        let host = lab.add_host(name, addr)?;
        say(&format!(
            "host {name}: namespace {}, eth1 {addr}",
            host.netns()
        ));
        hosts.insert(name.to_owned(), host);
    }
    let mut ctx = UpContext { lab, hosts };
    let all = steps();
    for (i, step) in all.iter().enumerate() {
        match (step.run)(&mut ctx) {
            Ok(lines) => lines.iter().for_each(|l| say(l)),
            // Dropping ctx (and its lab) tears down everything started so far; first the down
            // hooks of the steps that ran, the failed one included (it may have half-started).
            Err(e) => {
                if let Ok(rec) = RunRecord::load(id) {
                    for ran in all[..=i].iter().rev() {
                        if let Some(down) = ran.down {
                            down(&rec);
                        }
                    }
                }
                return Err(SeedError::Step {
                    step: step.name,
                    source: Box::new(e),
                });
            }
        }
    }
    ctx.lab.detach()?;
    Ok(())
}

fn start_etcd(ctx: &mut UpContext) -> Result<Vec<String>, SeedError> {
    let host = ctx.host("etcd")?.clone();
    let ip: IpAddr = host.ip();
    let etcd = Etcd::start(EtcdOptions {
        name: Some("etcd".into()),
        state_dir: Some(ctx.lab.dir().join("etcd")),
        detached: true,
        ..EtcdOptions::in_netns(host.netns_path(), ip)
    })?;
    let endpoint = etcd.endpoint();
    let log = etcd.dir().join("etcd.log");
    let pid = etcd.detach().unwrap_or(0);
    ctx.lab.record_pid(pid)?;
    let pid_file = ctx.lab.dir().join("etcd.pid");
    std::fs::write(&pid_file, format!("{pid}\n")).map_err(|source| SeedError::Write {
        path: pid_file,
        source,
    })?;
    Ok(vec![format!(
        "etcd: pid {pid} in {}, client URL {endpoint}, log {}",
        host.netns(),
        log.display()
    )])
}

/// The calicoctl configuration for the lab, as Calico's `CalicoAPIConfig`.
pub fn calicoctl_cfg_text() -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata:\nspec:\n  datastoreType: \"etcdv3\"\n  etcdEndpoints: \"{ETCD_ENDPOINT}\"\n"
    )
}

fn write_calicoctl_cfg(ctx: &mut UpContext) -> Result<Vec<String>, SeedError> {
    let path = ctx.lab.dir().join("calicoctl.cfg");
    std::fs::write(&path, calicoctl_cfg_text()).map_err(|source| SeedError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(vec![
        format!("calicoctl config: {}", path.display()),
        format!(
            "  use it from a node: ip netns exec {} calicoctl -c {} get nodes",
            ctx.host("node1")?.netns(),
            path.display()
        ),
        "  (the host namespace has no route to the lab: run calicoctl inside a node)".into(),
    ])
}

/// Each node must reach etcd across the LAN and find it healthy.
fn check_nodes_reach_etcd(ctx: &mut UpContext) -> Result<Vec<String>, SeedError> {
    let mut lines = Vec::new();
    for name in ["node1", "node2"] {
        let host = ctx.host(name)?;
        let out = host.exec_timeout(
            &[
                "etcdctl",
                "--dial-timeout=2s",
                "--command-timeout=3s",
                &format!("--endpoints={ETCD_ENDPOINT}"),
                "endpoint",
                "health",
            ],
            Duration::from_secs(10),
        )?;
        if !out.status.success() {
            return Err(SeedError::Unreachable {
                node: name.to_owned(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        lines.push(format!(
            "{name} ({}) reaches etcd at {ETCD_ENDPOINT}: healthy",
            host.ip()
        ));
    }
    Ok(lines)
}

/// Tears the seed lab down; returns false if it was not up.
pub fn down() -> Result<bool, SeedError> {
    down_with_id(LAB_ID)
}

/// [`down`] for the lab built by [`up_with_id`].
pub fn down_with_id(id: &str) -> Result<bool, SeedError> {
    let names = || {
        std::iter::once(format!("{id}-lan"))
            .chain(HOSTS.iter().map(move |(name, _)| format!("{id}-{name}")))
    };
    match RunRecord::load(id) {
        Ok(rec) => {
            for step in steps().iter().rev() {
                if let Some(down) = step.down {
                    down(&rec);
                }
            }
            state::teardown_run(&rec);
            Ok(true)
        }
        Err(state::StateError::NoSuchRun { .. }) => {
            // No record, but namespaces with our names may remain from a broken run.
            let mut any = false;
            for ns in names() {
                if state::netns_exists(&ns) {
                    any = true;
                }
            }
            if any {
                let rec = RunRecord {
                    id: id.to_owned(),
                    owner_pid: None,
                    owner_start: None,
                    namespaces: names().collect(),
                    pids: Vec::new(),
                    cgroups: Vec::new(),
                    dir: lab_dir_of(id),
                };
                state::teardown_run(&rec);
            }
            Ok(any)
        }
        Err(e) => Err(LabError::from(e).into()),
    }
}

/// Lines describing the seed lab's state and every other run on this machine.
pub fn status() -> Vec<String> {
    let mut lines = Vec::new();
    match RunRecord::load(LAB_ID) {
        Ok(rec) => {
            lines.push(format!("seed lab: up (state in {})", rec.dir.display()));
            for (name, addr) in HOSTS {
                let ns = netns_of(name);
                let present = if state::netns_exists(&ns) {
                    "present"
                } else {
                    "MISSING"
                };
                lines.push(format!("  host {name:<6} {ns:<10} {addr:<17} {present}"));
            }
            for pid in &rec.pids {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_default();
                let state = if crate::process::pid_running(*pid) {
                    format!("running ({comm})")
                } else {
                    "DEAD".into()
                };
                lines.push(format!("  pid {pid:<8} {state}"));
            }
            let health = crate::lab::output_bounded(
                {
                    let mut c = std::process::Command::new("nsenter");
                    c.arg(format!("--net=/run/netns/{}", netns_of("node1")))
                        .args(["--", "etcdctl", "--dial-timeout=2s", "--command-timeout=3s"])
                        .arg(format!("--endpoints={ETCD_ENDPOINT}"))
                        .args(["endpoint", "health"])
                        .env("ETCDCTL_API", "3");
                    c
                },
                Duration::from_secs(10),
            );
            let ok = health.as_ref().is_ok_and(|o| o.status.success());
            lines.push(format!(
                "  etcd {ETCD_ENDPOINT} from node1: {}",
                if ok { "healthy" } else { "NOT healthy" }
            ));
            lines.push(format!("  calicoctl config: {}", calicoctl_cfg().display()));
        }
        Err(_) => lines.push("seed lab: down".into()),
    }
    let others: Vec<RunRecord> = state::list_runs()
        .into_iter()
        .filter(|r| r.id != LAB_ID)
        .collect();
    if !others.is_empty() {
        lines.push("other lab runs:".into());
        for r in others {
            let owner = match r.owner_pid {
                Some(pid) if r.owner_dead() => format!("owner {pid} dead (sweepable)"),
                Some(pid) => format!("owner {pid} alive"),
                None => "detached".into(),
            };
            lines.push(format!(
                "  {}: {} namespace(s), {owner}",
                r.id,
                r.namespaces.len()
            ));
        }
    }
    lines
}
