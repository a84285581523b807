//! Interop: our speaker (the `calico-bgp-speaker` driver, run inside a lab namespace) against
//! BIRD 2, GoBGP and FRR, each in its own namespace on the lab LAN. Every test exchanges IPv4
//! and IPv6 routes both ways over separate IPv4 and IPv6 sessions (as Calico runs them).
//! Needs root and the daemons from scripts/setup.sh; every test is bounded (< 60 s) and its lab,
//! processes and files go away on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use calico_lab::{Host, Lab, ProcessGuard};
use serde_json::{Value, json};

const US4: &str = "192.168.33.11";
const US6: &str = "fd00:33::11";
const DEADLINE: Duration = Duration::from_secs(45);

struct Node {
    host: Host,
    v4: String,
    v6: String,
}

fn node(lab: &Lab, name: &str, last: u8) -> Node {
    let v4 = format!("192.168.33.{last}");
    let v6 = format!("fd00:33::{last}");
    let host = lab.add_host(name, &format!("{v4}/24")).expect("add host");
    host.add_address(&format!("{v6}/64")).expect("add v6");
    Node { host, v4, v6 }
}

/// Our speaker, with its config file (rewritten to reconfigure) and its JSON-lines log.
struct Ours {
    config: PathBuf,
    guard: ProcessGuard,
}

impl Ours {
    fn start(host: &Host, dir: &Path, cfg: &Value) -> Ours {
        Self::start_as(host, dir, cfg, "speaker")
    }

    fn start_as(host: &Host, dir: &Path, cfg: &Value, name: &str) -> Ours {
        let config = dir.join(format!("{name}.json"));
        std::fs::write(&config, serde_json::to_vec_pretty(cfg).unwrap()).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_calico-bgp-speaker"));
        cmd.arg(&config).env("RUST_LOG", "calico_bgp=info");
        let guard = host.spawn(cmd, name).expect("spawn speaker");
        Ours { config, guard }
    }

    fn lines(&self) -> Vec<Value> {
        self.guard
            .log()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Current best learned routes (prefix -> (next hop, learned from)), replaying events.
    fn routes(&self) -> std::collections::BTreeMap<String, (String, String)> {
        let mut m = std::collections::BTreeMap::new();
        for l in self.lines() {
            let Some(r) = l.get("route") else { continue };
            match r["event"].as_str() {
                Some("best") => {
                    m.insert(
                        r["prefix"].as_str().unwrap_or_default().to_owned(),
                        (
                            r["nextHop"].as_str().unwrap_or_default().to_owned(),
                            r["learnedFrom"].as_str().unwrap_or_default().to_owned(),
                        ),
                    );
                }
                Some("withdrawn") => {
                    m.remove(r["prefix"].as_str().unwrap_or_default());
                }
                _ => {}
            }
        }
        m
    }

    fn established(&self, peer: &str) -> bool {
        self.lines()
            .iter()
            .rev()
            .find_map(|l| l.get("status").cloned())
            .is_some_and(|s| {
                s.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|p| p["address"] == peer && p["state"] == "Established")
                })
            })
    }

    fn rewrite(&self, cfg: &Value) {
        // A new mtime is what the driver watches; make sure it differs.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&self.config, serde_json::to_vec_pretty(cfg).unwrap()).unwrap();
    }
}

fn our_config(local_as: u32, peers: Vec<Value>, originated: &[&str]) -> Value {
    json!({
        "routerId": US4,
        "localAs": local_as,
        "peers": peers,
        "originated": originated.iter().map(|p| json!({"prefix": p, "communities": [0xfde8_0001u32], "largeCommunities": [{"global": 64512, "local1": 1, "local2": 2}]})).collect::<Vec<_>>(),
    })
}

fn peer(addr: &str, remote_as: u32, password: Option<&str>) -> Value {
    json!({
        "address": addr,
        "remoteAs": remote_as,
        "password": password,
        "holdTime": 9,
        "connectRetry": 1,
    })
}

/// Polls `f` until it returns true or the deadline passes; then panics with `what` and `diag()`.
fn wait_for(what: &str, deadline: Instant, mut f: impl FnMut() -> bool, diag: impl Fn() -> String) {
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("timed out waiting for {what}\n{}", diag());
}

trait Daemon {
    /// Routes the daemon holds (text that contains every prefix it has).
    fn rib_dump(&self) -> String;
    fn log(&self) -> String;
}

struct Case<'a> {
    daemon: &'a dyn Daemon,
    ours: &'a Ours,
    them: &'a Node,
    their_v4: &'a str,
    their_v6: &'a str,
    our_v4: &'a str,
    our_v6: &'a str,
}

impl Case<'_> {
    fn diag(&self) -> String {
        format!(
            "--- our log\n{}\n--- daemon rib\n{}\n--- daemon log\n{}",
            tail(&self.ours.guard.log()),
            self.daemon.rib_dump(),
            tail(&self.daemon.log())
        )
    }

    /// Both sessions up, and every prefix on both sides.
    fn check_exchange(&self) {
        let deadline = Instant::now() + DEADLINE;
        wait_for(
            "both sessions Established",
            deadline,
            || self.ours.established(&self.them.v4) && self.ours.established(&self.them.v6),
            || self.diag(),
        );
        wait_for(
            "the daemon's routes at our speaker",
            deadline,
            || {
                let r = self.ours.routes();
                r.get(self.their_v4)
                    .is_some_and(|(_, from)| from == &self.them.v4)
                    && r.get(self.their_v6)
                        .is_some_and(|(_, from)| from == &self.them.v6)
            },
            || format!("routes: {:?}\n{}", self.ours.routes(), self.diag()),
        );
        let r = self.ours.routes();
        assert_eq!(
            r[self.their_v4].0, self.them.v4,
            "IPv4 next hop is the daemon"
        );
        assert_eq!(
            r[self.their_v6].0, self.them.v6,
            "IPv6 global next hop is the daemon"
        );
        wait_for(
            "our routes at the daemon",
            deadline,
            || {
                let d = self.daemon.rib_dump();
                d.contains(self.our_v4) && d.contains(self.our_v6)
            },
            || self.diag(),
        );
    }

    /// Removing an originated route withdraws it at the daemon.
    fn check_withdraw(&self, cfg_without: &Value) {
        self.ours.rewrite(cfg_without);
        let deadline = Instant::now() + Duration::from_secs(15);
        wait_for(
            "the withdrawal at the daemon",
            deadline,
            || !self.daemon.rib_dump().contains(self.our_v4),
            || self.diag(),
        );
        assert!(
            self.daemon.rib_dump().contains(self.our_v6),
            "the IPv6 route stays"
        );
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// ---------------------------------------------------------------- BIRD 2

struct Bird {
    host: Host,
    sock: PathBuf,
    _guard: ProcessGuard,
    log: PathBuf,
}

impl Bird {
    fn start(
        n: &Node,
        dir: &Path,
        asn: u32,
        our_as: u32,
        password: Option<&str>,
        v4: &str,
        v6: &str,
    ) -> Bird {
        Self::start_with(n, dir, asn, our_as, password, v4, v6, "")
    }

    /// `extra`: more options for both BGP protocols (e.g. `ttl security on;`).
    #[allow(clippy::too_many_arguments)]
    fn start_with(
        n: &Node,
        dir: &Path,
        asn: u32,
        our_as: u32,
        password: Option<&str>,
        v4: &str,
        v6: &str,
        extra: &str,
    ) -> Bird {
        let conf = dir.join("bird.conf");
        let sock = dir.join("bird.ctl");
        let log = dir.join("bird.log");
        let pw = password
            .map(|p| format!("password \"{p}\";"))
            .unwrap_or_default();
        let ibgp = asn == our_as;
        let nhs = if ibgp { "next hop self;" } else { "" };
        let text = format!(
            r#"
log "{log}" all;
router id {id};
protocol device {{ }}
protocol direct {{ ipv4; ipv6; }}
protocol static s4 {{ ipv4; route {v4} blackhole; }}
protocol static s6 {{ ipv6; route {v6} blackhole; }}
protocol bgp us4 {{
  local {id} as {asn};
  neighbor {us4} as {our_as};
  {pw}
  {extra}
  hold time 9;
  connect retry time 1;
  ipv4 {{ import all; export where source = RTS_STATIC; {nhs} }};
}}
protocol bgp us6 {{
  local {id6} as {asn};
  neighbor {us6} as {our_as};
  {pw}
  {extra}
  hold time 9;
  connect retry time 1;
  ipv6 {{ import all; export where source = RTS_STATIC; {nhs} }};
}}
"#,
            log = log.display(),
            id = n.v4,
            id6 = n.v6,
            us4 = US4,
            us6 = US6,
        );
        std::fs::write(&conf, text).unwrap();
        let mut cmd = Command::new("bird");
        cmd.arg("-c").arg(&conf).arg("-s").arg(&sock).arg("-f");
        let guard = n.host.spawn(cmd, "bird").expect("spawn bird");
        Bird {
            host: n.host.clone(),
            sock,
            _guard: guard,
            log,
        }
    }
}

impl Daemon for Bird {
    fn rib_dump(&self) -> String {
        let sock = self.sock.display().to_string();
        let out = self
            .host
            .exec(&["birdc", "-s", &sock, "show", "route", "all"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let proto = self
            .host
            .exec(&["birdc", "-s", &sock, "show", "protocols"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!("{out}\n{proto}")
    }
    fn log(&self) -> String {
        read(&self.log)
    }
}

fn run_bird(ibgp: bool, password: Option<&str>) {
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let us = node(&lab, "us", 11);
    let them = node(&lab, "bird", 12);
    let their_as = if ibgp { 64512 } else { 65002 };
    let bird = Bird::start(
        &them,
        dir.path(),
        their_as,
        64512,
        password,
        "10.12.0.0/24",
        "fd12::/64",
    );
    let peers = vec![
        peer(&them.v4, their_as, password),
        peer(&them.v6, their_as, password),
    ];
    let ours = Ours::start(
        &us.host,
        dir.path(),
        &our_config(64512, peers.clone(), &["10.11.0.0/24", "fd11::/64"]),
    );
    let case = Case {
        daemon: &bird,
        ours: &ours,
        them: &them,
        their_v4: "10.12.0.0/24",
        their_v6: "fd12::/64",
        our_v4: "10.11.0.0/24",
        our_v6: "fd11::/64",
    };
    case.check_exchange();
    let dump = bird.rib_dump();
    // Communities and large communities arrive intact.
    assert!(dump.contains("(65000,1)"), "community at BIRD:\n{dump}");
    assert!(
        dump.contains("(64512, 1, 2)"),
        "large community at BIRD:\n{dump}"
    );
    if !ibgp {
        assert!(
            dump.contains("BGP.as_path: 64512"),
            "eBGP path has our AS:\n{dump}"
        );
    } else {
        assert!(
            dump.contains("BGP.local_pref: 100"),
            "iBGP carries LOCAL_PREF:\n{dump}"
        );
    }
    case.check_withdraw(&our_config(64512, peers, &["fd11::/64"]));
}

#[test]
fn bird_ebgp() {
    run_bird(false, None);
}

#[test]
fn bird_ibgp_md5() {
    run_bird(true, Some("calico-secret"));
}

#[test]
fn bird_ebgp_md5() {
    run_bird(false, Some("s3cr3t"));
}

/// GTSM (RFC 5082) on both sides: the session comes up with TTL 255 and a minimum TTL of 255
/// for a directly connected peer; routes flow both ways.
#[test]
fn bird_ebgp_ttl_security() {
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let us = node(&lab, "us", 11);
    let them = node(&lab, "bird", 12);
    let bird = Bird::start_with(
        &them,
        dir.path(),
        65002,
        64512,
        None,
        "10.12.0.0/24",
        "fd12::/64",
        "ttl security on;",
    );
    let mut peers = vec![peer(&them.v4, 65002, None), peer(&them.v6, 65002, None)];
    for p in &mut peers {
        p["ttlSecurity"] = json!(1);
    }
    let ours = Ours::start(
        &us.host,
        dir.path(),
        &our_config(64512, peers, &["10.11.0.0/24", "fd11::/64"]),
    );
    Case {
        daemon: &bird,
        ours: &ours,
        them: &them,
        their_v4: "10.12.0.0/24",
        their_v6: "fd12::/64",
        our_v4: "10.11.0.0/24",
        our_v6: "fd11::/64",
    }
    .check_exchange();
}

// ---------------------------------------------------------------- GoBGP

struct GoBgp {
    host: Host,
    guard: ProcessGuard,
    api: String,
}

impl GoBgp {
    fn start(n: &Node, dir: &Path, asn: u32, our_as: u32, password: Option<&str>) -> GoBgp {
        Self::start_with(n, dir, asn, our_as, password, None, "gobgpd")
    }

    /// `restart`: `Some(restarting)` enables graceful restart (and `-r` when restarting).
    fn start_with(
        n: &Node,
        dir: &Path,
        asn: u32,
        our_as: u32,
        password: Option<&str>,
        restart: Option<bool>,
        name: &str,
    ) -> GoBgp {
        let conf = dir.join(format!("{name}.toml"));
        let gr = if restart.is_some() {
            "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 20\n"
        } else {
            ""
        };
        let mp_gr = if restart.is_some() {
            "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n"
        } else {
            ""
        };
        let pw = password
            .map(|p| format!("auth-password = \"{p}\""))
            .unwrap_or_default();
        let neighbor = |addr: &str, afi: &str| {
            format!(
                r#"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{addr}"
    peer-as = {our_as}
    {pw}
  [neighbors.timers.config]
    hold-time = 9
    keepalive-interval = 3
    connect-retry = 1
{gr}  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "{afi}"
{mp_gr}"#
            )
        };
        let text = format!(
            "[global.config]\n  as = {asn}\n  router-id = \"{id}\"\n{}{}",
            neighbor(US4, "ipv4-unicast"),
            neighbor(US6, "ipv6-unicast"),
            id = n.v4
        );
        std::fs::write(&conf, text).unwrap();
        let api = "127.0.0.1:50051".to_owned();
        let mut cmd = Command::new("gobgpd");
        cmd.arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg(format!("--api-hosts={api}"));
        let guard = n.host.spawn(cmd, "gobgpd").expect("spawn gobgpd");
        GoBgp {
            host: n.host.clone(),
            guard,
            api,
        }
    }

    fn gobgp(&self, args: &[&str]) -> String {
        let (h, p) = self.api.split_once(':').unwrap();
        let mut argv = vec!["gobgp", "-u", h, "-p", p];
        argv.extend_from_slice(args);
        self.host
            .exec(&argv)
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }

    fn add(&self, prefix: &str, nh: &str, afi: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        wait_for(
            "gobgp global rib add",
            deadline,
            || {
                self.gobgp(&["global", "rib", "add", prefix, "nexthop", nh, "-a", afi]);
                self.gobgp(&["global", "rib", "-a", afi]).contains(prefix)
            },
            || self.guard.log(),
        );
    }
}

impl Daemon for GoBgp {
    fn rib_dump(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.gobgp(&["global", "rib", "-a", "ipv4"]),
            self.gobgp(&["global", "rib", "-a", "ipv6"]),
            self.gobgp(&["neighbor"])
        )
    }
    fn log(&self) -> String {
        self.guard.log()
    }
}

fn run_gobgp(ibgp: bool, password: Option<&str>) {
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let us = node(&lab, "us", 11);
    let them = node(&lab, "gobgp", 13);
    let their_as = if ibgp { 64512 } else { 65003 };
    let gobgp = GoBgp::start(&them, dir.path(), their_as, 64512, password);
    gobgp.add("10.13.0.0/24", &them.v4, "ipv4");
    gobgp.add("fd13::/64", &them.v6, "ipv6");
    let peers = vec![
        peer(&them.v4, their_as, password),
        peer(&them.v6, their_as, password),
    ];
    let ours = Ours::start(
        &us.host,
        dir.path(),
        &our_config(64512, peers.clone(), &["10.11.0.0/24", "fd11::/64"]),
    );
    let case = Case {
        daemon: &gobgp,
        ours: &ours,
        them: &them,
        their_v4: "10.13.0.0/24",
        their_v6: "fd13::/64",
        our_v4: "10.11.0.0/24",
        our_v6: "fd11::/64",
    };
    case.check_exchange();
    let adj = gobgp.gobgp(&["neighbor", US4, "adj-in", "-a", "ipv4"]);
    if ibgp {
        assert!(adj.contains(US4), "iBGP next hop is our address:\n{adj}");
    } else {
        assert!(adj.contains("64512"), "eBGP path carries our AS:\n{adj}");
    }
    case.check_withdraw(&our_config(64512, peers, &["fd11::/64"]));
}

#[test]
fn gobgp_ebgp() {
    run_gobgp(false, None);
}

#[test]
fn gobgp_ibgp_md5() {
    run_gobgp(true, Some("calico-secret"));
}

// ---------------------------------------------------------------- FRR

struct Frr {
    host: Host,
    vty: PathBuf,
    _guard: ProcessGuard,
    log: PathBuf,
}

impl Frr {
    fn start(
        n: &Node,
        dir: &Path,
        asn: u32,
        our_as: u32,
        password: Option<&str>,
        v4: &str,
        v6: &str,
    ) -> Frr {
        let conf = dir.join("bgpd.conf");
        let vty = dir.join("vty");
        std::fs::create_dir_all(&vty).unwrap();
        let log = dir.join("bgpd.log");
        let pw = |addr: &str| {
            password
                .map(|p| format!(" neighbor {addr} password {p}\n"))
                .unwrap_or_default()
        };
        let nhs = |addr: &str| {
            if asn == our_as {
                format!("  neighbor {addr} next-hop-self\n")
            } else {
                String::new()
            }
        };
        let text = format!(
            "frr defaults traditional\nhostname frr\nlog file {log}\n!\nrouter bgp {asn}\n bgp router-id {id}\n no bgp ebgp-requires-policy\n no bgp network import-check\n no bgp default ipv4-unicast\n neighbor {us4} remote-as {our_as}\n neighbor {us4} timers 3 9\n neighbor {us4} timers connect 1\n{pw4} neighbor {us6} remote-as {our_as}\n neighbor {us6} timers 3 9\n neighbor {us6} timers connect 1\n{pw6} !\n address-family ipv4 unicast\n  network {v4}\n  neighbor {us4} activate\n{nhs4} exit-address-family\n !\n address-family ipv6 unicast\n  network {v6}\n  neighbor {us6} activate\n{nhs6} exit-address-family\n!\n",
            log = log.display(),
            id = n.v4,
            us4 = US4,
            us6 = US6,
            pw4 = pw(US4),
            pw6 = pw(US6),
            nhs4 = nhs(US4),
            nhs6 = nhs(US6),
        );
        std::fs::write(&conf, text).unwrap();
        let mut cmd = Command::new("/usr/lib/frr/bgpd");
        cmd.arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("bgpd.pid"))
            .arg("--vty_socket")
            .arg(&vty)
            .args(["-Z", "-n", "-S", "-P", "0", "-u", "root", "-g", "root"]);
        let guard = n.host.spawn(cmd, "bgpd").expect("spawn bgpd");
        Frr {
            host: n.host.clone(),
            vty,
            _guard: guard,
            log,
        }
    }

    fn vtysh(&self, command: &str) -> String {
        let vty = self.vty.display().to_string();
        self.host
            .exec(&["vtysh", "--vty_socket", &vty, "-c", command])
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }
}

impl Daemon for Frr {
    fn rib_dump(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.vtysh("show bgp ipv4 unicast"),
            self.vtysh("show bgp ipv6 unicast"),
            self.vtysh("show bgp summary")
        )
    }
    fn log(&self) -> String {
        read(&self.log)
    }
}

fn run_frr(ibgp: bool, password: Option<&str>) {
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let us = node(&lab, "us", 11);
    let them = node(&lab, "frr", 14);
    let their_as = if ibgp { 64512 } else { 65004 };
    let frr = Frr::start(
        &them,
        dir.path(),
        their_as,
        64512,
        password,
        "10.14.0.0/24",
        "fd14::/64",
    );
    let peers = vec![
        peer(&them.v4, their_as, password),
        peer(&them.v6, their_as, password),
    ];
    let ours = Ours::start(
        &us.host,
        dir.path(),
        &our_config(64512, peers.clone(), &["10.11.0.0/24", "fd11::/64"]),
    );
    let case = Case {
        daemon: &frr,
        ours: &ours,
        them: &them,
        their_v4: "10.14.0.0/24",
        their_v6: "fd14::/64",
        our_v4: "10.11.0.0/24",
        our_v6: "fd11::/64",
    };
    case.check_exchange();
    case.check_withdraw(&our_config(64512, peers, &["fd11::/64"]));
}

#[test]
fn frr_ebgp() {
    run_frr(false, None);
}

#[test]
fn frr_ibgp_md5() {
    run_frr(true, Some("calico-secret"));
}

// ---------------------------------------------------------------- route reflector

/// Our speaker reflects between two iBGP BIRD clients: a route from one reaches the other with
/// ORIGINATOR_ID and CLUSTER_LIST set and its next hop unchanged.
#[test]
fn route_reflector_between_bird_clients() {
    let lab = Lab::new().expect("lab");
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let dir_us = tempfile::tempdir().unwrap();
    let us = node(&lab, "us", 11);
    let a = node(&lab, "ca", 21);
    let b = node(&lab, "cb", 22);
    let bird_a = Bird::start(
        &a,
        dir_a.path(),
        64512,
        64512,
        None,
        "10.21.0.0/24",
        "fd21::/64",
    );
    let bird_b = Bird::start(
        &b,
        dir_b.path(),
        64512,
        64512,
        None,
        "10.22.0.0/24",
        "fd22::/64",
    );
    let client = |addr: &str| {
        let mut p = peer(addr, 64512, None);
        p["routeReflectorClient"] = json!(true);
        p
    };
    let mut cfg = our_config(
        64512,
        vec![client(&a.v4), client(&a.v6), client(&b.v4), client(&b.v6)],
        &["10.11.0.0/24"],
    );
    cfg["clusterId"] = json!("1.2.3.4");
    let ours = Ours::start(&us.host, dir_us.path(), &cfg);
    let deadline = Instant::now() + DEADLINE;
    let diag = || {
        format!(
            "--- ours\n{}\n--- a\n{}\n--- b\n{}",
            tail(&ours.guard.log()),
            bird_a.rib_dump(),
            bird_b.rib_dump()
        )
    };
    wait_for(
        "reflected routes at both clients",
        deadline,
        || {
            let da = bird_a.rib_dump();
            let db = bird_b.rib_dump();
            da.contains("10.22.0.0/24")
                && da.contains("fd22::/64")
                && db.contains("10.21.0.0/24")
                && db.contains("fd21::/64")
        },
        diag,
    );
    let db = bird_b.rib_dump();
    assert!(
        db.contains("BGP.originator_id: 192.168.33.21"),
        "originator id set:\n{db}"
    );
    assert!(
        db.contains("BGP.cluster_list: 1.2.3.4"),
        "cluster list set:\n{db}"
    );
    assert!(
        db.contains("BGP.next_hop: 192.168.33.21"),
        "next hop kept:\n{db}"
    );
}

// ---------------------------------------------------------------- graceful restart

/// We restart (SIGKILL, then start again with `restarted`): BIRD, as helper, keeps our routes
/// the whole time, and our restarted speaker re-establishes and re-announces them.
#[test]
fn graceful_restart_bird_keeps_our_routes() {
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let us = node(&lab, "us", 11);
    let them = node(&lab, "bird", 12);
    let bird = Bird::start(
        &them,
        dir.path(),
        65002,
        64512,
        None,
        "10.12.0.0/24",
        "fd12::/64",
    );
    let peers = vec![peer(&them.v4, 65002, None), peer(&them.v6, 65002, None)];
    let cfg = our_config(64512, peers, &["10.11.0.0/24", "fd11::/64"]);
    let mut ours = Ours::start(&us.host, dir.path(), &cfg);
    let case = Case {
        daemon: &bird,
        ours: &ours,
        them: &them,
        their_v4: "10.12.0.0/24",
        their_v6: "fd12::/64",
        our_v4: "10.11.0.0/24",
        our_v6: "fd11::/64",
    };
    case.check_exchange();
    ours.guard.kill();
    // Down for three seconds: BIRD must keep both routes (plain BGP would drop them at once).
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let d = bird.rib_dump();
        assert!(
            d.contains("10.11.0.0/24") && d.contains("fd11::/64"),
            "BIRD dropped our routes during restart:\n{d}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut cfg2 = cfg.clone();
    cfg2["restarted"] = json!(true);
    let ours2 = Ours::start_as(&us.host, dir.path(), &cfg2, "speaker2");
    let deadline = Instant::now() + DEADLINE;
    wait_for(
        "sessions back after restart",
        deadline,
        || ours2.established(&them.v4) && ours2.established(&them.v6),
        || format!("{}\n{}", tail(&ours2.guard.log()), bird.log()),
    );
    // After our End-of-RIB, the routes are fresh again, still present.
    std::thread::sleep(Duration::from_secs(1));
    let d = bird.rib_dump();
    assert!(
        d.contains("10.11.0.0/24") && d.contains("fd11::/64"),
        "routes after restart:\n{d}"
    );
    assert!(!d.contains("stale"), "no route left stale:\n{d}");
    wait_for(
        "routes learned again",
        deadline,
        || ours2.routes().contains_key("10.12.0.0/24"),
        || tail(&ours2.guard.log()),
    );
}

/// GoBGP restarts (SIGKILL): we keep its routes as stale, and after it comes back with `-r` and
/// sends End-of-RIB, what it did not re-announce goes.
#[test]
fn graceful_restart_helper_keeps_gobgp_routes() {
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let us = node(&lab, "us", 11);
    let them = node(&lab, "gobgp", 13);
    let mut gobgp = GoBgp::start_with(&them, dir.path(), 65003, 64512, None, Some(false), "gobgpd");
    gobgp.add("10.13.0.0/24", &them.v4, "ipv4");
    gobgp.add("fd13::/64", &them.v6, "ipv6");
    let peers = vec![peer(&them.v4, 65003, None), peer(&them.v6, 65003, None)];
    let ours = Ours::start(
        &us.host,
        dir.path(),
        &our_config(64512, peers, &["10.11.0.0/24", "fd11::/64"]),
    );
    let case = Case {
        daemon: &gobgp,
        ours: &ours,
        them: &them,
        their_v4: "10.13.0.0/24",
        their_v6: "fd13::/64",
        our_v4: "10.11.0.0/24",
        our_v6: "fd11::/64",
    };
    case.check_exchange();
    gobgp.guard.kill();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let r = ours.routes();
        assert!(
            r.contains_key("10.13.0.0/24") && r.contains_key("fd13::/64"),
            "we dropped a restarting peer's routes: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let gobgp2 = GoBgp::start_with(&them, dir.path(), 65003, 64512, None, Some(true), "gobgpd2");
    gobgp2.add("10.13.0.0/24", &them.v4, "ipv4");
    let deadline = Instant::now() + DEADLINE;
    wait_for(
        "the route GoBGP did not re-announce to go after its End-of-RIB",
        deadline,
        || {
            let r = ours.routes();
            !r.contains_key("fd13::/64") && r.contains_key("10.13.0.0/24")
        },
        || {
            format!(
                "{:?}\n{}\n{}",
                ours.routes(),
                tail(&ours.guard.log()),
                gobgp2.rib_dump()
            )
        },
    );
}

// ---------------------------------------------------------------- ours against ours

/// Two of our speakers, the node-to-node mesh case: iBGP over IPv4 and IPv6, both sides active
/// so their connections collide and RFC 4271 6.8 picks one; routes flow both ways. Then the
/// peer is removed from one side's config and the other side's routes go.
#[test]
fn ours_mesh_ibgp_with_collision() {
    let lab = Lab::new().expect("lab");
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = node(&lab, "us", 11);
    let b = node(&lab, "us2", 12);
    let cfg = |me: &Node, other: &Node, routes: &[&str]| {
        let mut c = our_config(
            64512,
            vec![
                peer(&other.v4, 64512, Some("mesh")),
                peer(&other.v6, 64512, Some("mesh")),
            ],
            routes,
        );
        c["routerId"] = json!(me.v4);
        c
    };
    let oa = Ours::start(
        &a.host,
        dir_a.path(),
        &cfg(&a, &b, &["10.11.0.0/24", "fd11::/64"]),
    );
    let ob = Ours::start(
        &b.host,
        dir_b.path(),
        &cfg(&b, &a, &["10.12.0.0/24", "fd12::/64"]),
    );
    let deadline = Instant::now() + DEADLINE;
    let diag = || {
        format!(
            "--- a\n{}\n--- b\n{}",
            tail(&oa.guard.log()),
            tail(&ob.guard.log())
        )
    };
    wait_for(
        "routes both ways",
        deadline,
        || {
            let ra = oa.routes();
            let rb = ob.routes();
            ra.get("10.12.0.0/24").is_some_and(|(nh, _)| nh == &b.v4)
                && ra.get("fd12::/64").is_some_and(|(nh, _)| nh == &b.v6)
                && rb.get("10.11.0.0/24").is_some_and(|(nh, _)| nh == &a.v4)
                && rb.get("fd11::/64").is_some_and(|(nh, _)| nh == &a.v6)
        },
        diag,
    );
    wait_for(
        "status Established on both",
        deadline,
        || {
            oa.established(&b.v4)
                && oa.established(&b.v6)
                && ob.established(&a.v4)
                && ob.established(&a.v6)
        },
        diag,
    );
    // B forgets A: B sends Cease, A's routes from B go (no graceful restart for a Cease).
    ob.rewrite(&our_config(64512, vec![], &["10.12.0.0/24"]));
    wait_for(
        "B's routes withdrawn at A",
        Instant::now() + Duration::from_secs(15),
        || {
            let ra = oa.routes();
            !ra.contains_key("10.12.0.0/24") && !ra.contains_key("fd12::/64")
        },
        diag,
    );
}

/// A 4-octet local AS (RFC 6793): BIRD sees it in the OPEN capability and the AS path.
#[test]
fn bird_ebgp_four_octet_as() {
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let us = node(&lab, "us", 11);
    let them = node(&lab, "bird", 12);
    let big = 4_200_000_001u32;
    let bird = Bird::start(
        &them,
        dir.path(),
        65002,
        big,
        None,
        "10.12.0.0/24",
        "fd12::/64",
    );
    let peers = vec![peer(&them.v4, 65002, None), peer(&them.v6, 65002, None)];
    let ours = Ours::start(
        &us.host,
        dir.path(),
        &our_config(big, peers, &["10.11.0.0/24", "fd11::/64"]),
    );
    let case = Case {
        daemon: &bird,
        ours: &ours,
        them: &them,
        their_v4: "10.12.0.0/24",
        their_v6: "fd12::/64",
        our_v4: "10.11.0.0/24",
        our_v6: "fd11::/64",
    };
    case.check_exchange();
    let dump = bird.rib_dump();
    assert!(
        dump.contains("BGP.as_path: 4200000001"),
        "4-octet AS in the path:\n{dump}"
    );
}

// ---------------------------------------------------------------- policy (BGPFilter, prefixAdvertisements)

/// The attributes GoBGP holds for `prefix` in its global RIB (`gobgp global rib -j`).
fn gobgp_attrs(gobgp: &GoBgp, prefix: &str) -> Option<Vec<Value>> {
    let rib: Value =
        serde_json::from_str(&gobgp.gobgp(&["global", "rib", "-a", "ipv4", "-j"])).ok()?;
    let paths = rib.get(prefix)?.as_array()?;
    paths.first()?.get("attrs")?.as_array().cloned()
}

fn attr_of(attrs: &[Value], type_code: u64) -> Option<&Value> {
    attrs.iter().find(|a| a["type"] == type_code)
}

/// Our speaker exports with the communities of a prefix advertisement (standard and large) and
/// of an accepting export rule's operations (with its AS-path prepend); GoBGP sees them. An
/// import rule `NotIn 10.13.0.0/16` rejects GoBGP's 10.99.0.0/24 until the rule is removed.
#[test]
fn gobgp_sees_prefix_communities_and_not_in_import_rejects() {
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let us = node(&lab, "us", 11);
    let them = node(&lab, "gobgp", 13);
    let gobgp = GoBgp::start(&them, dir.path(), 65003, 64512, None);
    gobgp.add("10.99.0.0/24", &them.v4, "ipv4");
    gobgp.add("10.13.0.0/24", &them.v4, "ipv4");
    let std_comm = (65000u32 << 16) | 100;
    let op_comm = (65000u32 << 16) | 200;
    let config = |import: Value| {
        let mut p = peer(&them.v4, 65003, None);
        p["import"] = import;
        p["export"] = json!([{
            "cidr": "10.12.0.0/24", "minLen": 24, "maxLen": 24, "familyV6": false,
            "action": "Accept",
            "operations": [{"addCommunity": {"standard": op_comm}}, {"prependAsPath": [65100]}],
        }]);
        json!({
            "routerId": US4,
            "localAs": 64512,
            "peers": [p],
            "originated": [{"prefix": "10.11.0.0/24"}, {"prefix": "10.12.0.0/24"}],
            "prefixCommunities": [{
                "cidr": "10.11.0.0/16",
                "communities": [std_comm],
                "largeCommunities": [{"global": 64512, "local1": 7, "local2": 8}],
            }],
        })
    };
    let not_in =
        json!([{"cidr": "10.13.0.0/16", "negate": true, "familyV6": false, "action": "Reject"}]);
    let ours = Ours::start(&us.host, dir.path(), &config(not_in));
    let diag = || {
        format!(
            "--- our log\n{}\n--- gobgp rib\n{}\n--- gobgp log\n{}",
            tail(&ours.guard.log()),
            gobgp.rib_dump(),
            tail(&gobgp.log())
        )
    };
    let deadline = Instant::now() + DEADLINE;
    wait_for("the session", deadline, || ours.established(&them.v4), diag);
    wait_for(
        "both our routes at GoBGP",
        deadline,
        || {
            gobgp_attrs(&gobgp, "10.11.0.0/24").is_some()
                && gobgp_attrs(&gobgp, "10.12.0.0/24").is_some()
        },
        diag,
    );

    // 10.11.0.0/24 lies in the advertisement's CIDR: both communities, nothing else added.
    let a = gobgp_attrs(&gobgp, "10.11.0.0/24").unwrap();
    let shown = format!("{a:?}");
    assert_eq!(
        attr_of(&a, 8).map(|c| c["communities"].clone()),
        Some(json!([std_comm])),
        "standard community from prefixCommunities: {shown}"
    );
    let large = attr_of(&a, 32).unwrap_or_else(|| panic!("large community missing: {shown}"));
    assert_eq!(large["value"][0]["ASN"], 64512, "{shown}");
    assert_eq!(large["value"][0]["LocalData1"], 7, "{shown}");
    assert_eq!(large["value"][0]["LocalData2"], 8, "{shown}");
    // 10.12.0.0/24 is outside it: only the export rule's community, and its prepend after ours.
    let b = gobgp_attrs(&gobgp, "10.12.0.0/24").unwrap();
    let shown = format!("{b:?}");
    assert_eq!(
        attr_of(&b, 8).map(|c| c["communities"].clone()),
        Some(json!([op_comm])),
        "{shown}"
    );
    assert!(attr_of(&b, 32).is_none(), "{shown}");
    let path = attr_of(&b, 2).unwrap_or_else(|| panic!("no AS path: {shown}"));
    assert_eq!(
        path["as_paths"][0]["asns"],
        json!([64512, 65100]),
        "{shown}"
    );

    // Import: 10.13.0.0/24 accepted; 10.99.0.0/24 (sent, as GoBGP's adj-out shows) rejected.
    wait_for(
        "10.13.0.0/24 at our speaker",
        deadline,
        || ours.routes().contains_key("10.13.0.0/24"),
        diag,
    );
    let adj_out = gobgp.gobgp(&["neighbor", US4, "adj-out", "-a", "ipv4"]);
    assert!(
        adj_out.contains("10.99.0.0/24"),
        "GoBGP sent it:\n{adj_out}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !ours.routes().contains_key("10.99.0.0/24"),
        "NotIn 10.13.0.0/16 rejects 10.99.0.0/24: {:?}",
        ours.routes()
    );
    // Without the rule the same session learns it (route refresh, no reset).
    ours.rewrite(&config(json!([])));
    wait_for(
        "10.99.0.0/24 once the import rule is gone",
        Instant::now() + Duration::from_secs(15),
        || ours.routes().contains_key("10.99.0.0/24"),
        diag,
    );
}
