//! Kubernetes service addresses over BGP (BGPConfiguration `serviceClusterIPs` /
//! `serviceExternalIPs`), seen by real BGP routers: two calico-node agents peer (one global
//! BGPPeer) with BIRD 2, GoBGP and FRR, each in its own namespace on the lab LAN. The
//! controllers' side (Services and EndpointSlices into etcd) is tested against a real
//! kube-apiserver in crates/controllers/tests/apiserver.rs; here the test writes the record
//! the controllers write.
//!
//! Needs root, `bird`/`birdc`, `gobgpd`/`gobgp`, FRR's `bgpd`/`vtysh`, and the binaries
//! `target/debug/calico-node` and `target/debug/calicoctl`.

mod cluster_support;
use cluster_support::gobgp::GoBgp;
use cluster_support::*;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use calico_api::service_advertisement::{AdvertisedService, service_key};
use calico_ipam::Ipam;
use calico_lab::{Host, ProcessGuard};

const ROUTER_AS: u32 = 64513;
const CLUSTER_RANGE: &str = "10.96.0.0/16";
const EXTERNAL_RANGE: &str = "203.0.113.0/24";

/// A BGP router in its own namespace, peering with every node; answers "which prefixes did
/// node `i` (at `ip`) send me".
trait Router {
    fn prefixes_from(&self, ip: &str) -> String;
    fn dump(&self) -> String;
}

struct Bird {
    host: Host,
    sock: PathBuf,
    _guard: ProcessGuard,
}

impl Bird {
    fn start(host: Host, dir: &std::path::Path, nodes: &[String]) -> Bird {
        let conf = dir.join("bird.conf");
        let sock = dir.join("bird.ctl");
        let mut text = format!("router id {};\nprotocol device {{ }}\n", host.ip());
        for (i, n) in nodes.iter().enumerate() {
            text.push_str(&format!(
                "protocol bgp n{i} {{\n  local {me} as {ROUTER_AS};\n  neighbor {n} as 64512;\n  \
                 hold time 9;\n  connect retry time 1;\n  ipv4 {{ import all; export none; }};\n}}\n",
                me = host.ip()
            ));
        }
        std::fs::write(&conf, text).unwrap();
        let mut cmd = Command::new("bird");
        cmd.arg("-c").arg(&conf).arg("-s").arg(&sock).arg("-f");
        let guard = host.spawn(cmd, "bird").expect("spawn bird");
        Bird {
            host,
            sock,
            _guard: guard,
        }
    }

    fn birdc(&self, args: &[&str]) -> String {
        let sock = self.sock.display().to_string();
        let mut argv = vec!["birdc", "-s", &sock];
        argv.extend_from_slice(args);
        self.host
            .exec(&argv)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Router for Bird {
    fn prefixes_from(&self, ip: &str) -> String {
        // Every route (best or not) whose next hop is the node: eBGP keeps the sender's address.
        self.birdc(&["show", "route", "where", &format!("gw = {ip}")])
    }
    fn dump(&self) -> String {
        format!(
            "{}\n{}",
            self.birdc(&["show", "route", "all"]),
            self.birdc(&["show", "protocols"])
        )
    }
}

impl Router for GoBgp {
    fn prefixes_from(&self, ip: &str) -> String {
        self.gobgp(&["neighbor", ip, "adj-in", "-a", "ipv4"])
    }
    fn dump(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.gobgp(&["global", "rib", "-a", "ipv4"]),
            self.gobgp(&["neighbor"]),
            self.guard.log()
        )
    }
}

struct Frr {
    host: Host,
    vty: PathBuf,
    _guard: ProcessGuard,
}

impl Frr {
    fn start(host: Host, dir: &std::path::Path, nodes: &[String]) -> Frr {
        let conf = dir.join("bgpd.conf");
        let vty = dir.join("vty");
        std::fs::create_dir_all(&vty).unwrap();
        let mut text = format!(
            "frr defaults traditional\nhostname frr\n!\nrouter bgp {ROUTER_AS}\n bgp router-id {}\n \
             no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n",
            host.ip()
        );
        for n in nodes {
            text.push_str(&format!(
                " neighbor {n} remote-as 64512\n neighbor {n} timers 3 9\n neighbor {n} timers connect 1\n"
            ));
        }
        text.push_str(" !\n address-family ipv4 unicast\n");
        for n in nodes {
            text.push_str(&format!("  neighbor {n} activate\n"));
        }
        text.push_str(" exit-address-family\n!\n");
        std::fs::write(&conf, text).unwrap();
        let mut cmd = Command::new("/usr/lib/frr/bgpd");
        cmd.arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("bgpd.pid"))
            .arg("--vty_socket")
            .arg(&vty)
            .args(["-Z", "-n", "-S", "-P", "0", "-u", "root", "-g", "root"]);
        let guard = host.spawn(cmd, "bgpd").expect("spawn bgpd");
        Frr {
            host,
            vty,
            _guard: guard,
        }
    }

    fn vtysh(&self, command: &str) -> String {
        let vty = self.vty.display().to_string();
        self.host
            .exec(&["vtysh", "--vty_socket", &vty, "-c", command])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Router for Frr {
    fn prefixes_from(&self, ip: &str) -> String {
        self.vtysh(&format!("show bgp ipv4 unicast neighbors {ip} routes"))
    }
    fn dump(&self) -> String {
        format!(
            "{}\n{}",
            self.vtysh("show bgp ipv4 unicast"),
            self.vtysh("show bgp summary")
        )
    }
}

fn default_config(ranges: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n\
         spec:\n  nodeToNodeMeshEnabled: true\n{ranges}"
    )
}

/// Writes (`Some`) or deletes (`None`) the record the controllers publish for shop/web.
fn publish(c: &Cluster, record: Option<AdvertisedService>) {
    c.with_datastore(async move |_, ipam: &Ipam| {
        let key = service_key("shop", "web");
        match record {
            Some(r) => {
                ipam.kv()
                    .put(&key, serde_json::to_vec(&r).unwrap())
                    .await
                    .expect("put");
            }
            None => {
                ipam.kv().delete(&key, None).await.expect("delete");
            }
        }
    })
}

/// Waits until `router` has (`present`) or lacks every prefix of `prefixes` from node `ip`.
fn wait_router(router: &dyn Router, name: &str, ip: &str, prefixes: &[&str], present: bool) {
    let ok = wait_for(WAIT, || {
        let got = router.prefixes_from(ip);
        prefixes
            .iter()
            .all(|p| got.contains(p) == present)
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "{name}: from {ip} wanted {prefixes:?} {}:\n{}",
        if present { "present" } else { "absent" },
        router.dump()
    );
}

#[test]
fn service_ranges_and_local_service_addresses_reach_bird_gobgp_and_frr() {
    let mut c = Cluster::new(2);
    let (ip1, ip2) = (c.ip(1).to_string(), c.ip(2).to_string());
    let nodes = vec![ip1.clone(), ip2.clone()];
    let bird_host = c.lab.add_host("bird", "192.168.33.20/24").expect("host");
    let gobgp_host = c.lab.add_host("gobgp", "192.168.33.21/24").expect("host");
    let frr_host = c.lab.add_host("frr", "192.168.33.22/24").expect("host");
    let dir = c.lab.dir().to_path_buf();
    let (bird_dir, gobgp_dir, frr_dir) = (dir.join("bird"), dir.join("gobgp"), dir.join("frr"));
    for d in [&bird_dir, &gobgp_dir, &frr_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let bird = Bird::start(bird_host, &bird_dir, &nodes);
    let gobgp = GoBgp::start(gobgp_host, &gobgp_dir, ROUTER_AS, &nodes);
    let frr = Frr::start(frr_host, &frr_dir, &nodes);
    c.apply_yaml(&[&default_config(&format!(
        "  serviceClusterIPs: [{{cidr: {CLUSTER_RANGE}}}]\n  \
         serviceExternalIPs: [{{cidr: {EXTERNAL_RANGE}}}]\n"
    ))]);
    for (name, ip) in [
        ("bird", "192.168.33.20"),
        ("gobgp", "192.168.33.21"),
        ("frr", "192.168.33.22"),
    ] {
        c.apply_yaml(&[&format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: {name}\n\
                 spec:\n  peerIP: {ip}\n  asNumber: {ROUTER_AS}\n"
        )]);
    }
    c.start_agent(1);
    c.start_agent(2);

    // Every node advertises the ranges whole, to every router.
    let routers: [(&dyn Router, &str); 3] = [(&bird, "bird"), (&gobgp, "gobgp"), (&frr, "frr")];
    for (r, name) in routers {
        for ip in [&ip1, &ip2] {
            wait_router(r, name, ip, &[CLUSTER_RANGE, EXTERNAL_RANGE], true);
        }
    }

    // A Local Service with its endpoint on node1: the /32s come from node1 only.
    publish(
        &c,
        Some(AdvertisedService {
            cluster_ips: ["10.96.0.10".parse().unwrap()].into(),
            external_ips: ["203.0.113.5".parse().unwrap()].into(),
            load_balancer_ips: Default::default(),
            nodes: ["node1".to_string()].into(),
        }),
    );
    let host_routes = ["10.96.0.10/32", "203.0.113.5/32"];
    wait_router(&bird, "bird", &ip1, &host_routes, true);
    // node2 computed its share in the same round trigger; give it a moment, then it must
    // still not advertise them.
    std::thread::sleep(Duration::from_secs(2));
    wait_router(&bird, "bird", &ip2, &host_routes, false);
    // node2 learned node1's /32s over the mesh but never routes service addresses via
    // another node (kube-proxy handles them locally).
    let r2 = c.routes(2);
    assert!(
        !r2.iter()
            .any(|r| r.starts_with("10.96.0.10") || r.starts_with("10.96.0.0/16")),
        "{r2:?}"
    );

    // The Service goes: node1 withdraws the /32s, the ranges stay.
    publish(&c, None);
    wait_router(&bird, "bird", &ip1, &host_routes, false);
    wait_router(&bird, "bird", &ip1, &[CLUSTER_RANGE], true);

    // The ranges are removed from the configuration: withdrawn by every node.
    c.apply_yaml(&[&default_config("")]);
    for (r, name) in routers {
        for ip in [&ip1, &ip2] {
            wait_router(r, name, ip, &[CLUSTER_RANGE, EXTERNAL_RANGE], false);
        }
    }
}
