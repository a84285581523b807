//! GoBGP as an external BGP router in its own lab host, peering with calico-node agents.

use std::path::Path;
use std::process::Command;

use calico_lab::{Host, ProcessGuard};

/// The AS the harness's agents run in (Calico's default).
pub const NODE_AS: u32 = 64512;

/// `gobgpd` in `host`'s namespace, its API on 127.0.0.1:50051 there.
pub struct GoBgp {
    // Declared first: killed before the host goes.
    pub guard: ProcessGuard,
    pub host: Host,
}

impl GoBgp {
    /// Starts `gobgpd` as AS `local_as`, peering (IPv4 unicast, hold time 9 s, connect retry
    /// 1 s) with every address in `nodes` (AS [`NODE_AS`]); its configuration goes in `dir`.
    pub fn start(host: Host, dir: &Path, local_as: u32, nodes: &[String]) -> GoBgp {
        let conf = dir.join("gobgpd.toml");
        let mut text = format!(
            "[global.config]\n  as = {local_as}\n  router-id = \"{}\"\n",
            host.ip()
        );
        for n in nodes {
            text.push_str(&format!(
                "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{n}\"\n    \
                 peer-as = {NODE_AS}\n  [neighbors.timers.config]\n    hold-time = 9\n    \
                 keepalive-interval = 3\n    connect-retry = 1\n  [[neighbors.afi-safis]]\n    \
                 [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n"
            ));
        }
        std::fs::write(&conf, text).expect("gobgpd config");
        let mut cmd = Command::new("gobgpd");
        cmd.arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg("--api-hosts=127.0.0.1:50051");
        let guard = host.spawn(cmd, "gobgpd").expect("spawn gobgpd");
        GoBgp { guard, host }
    }

    /// `gobgp ARGS` against it (stdout; empty when the command fails).
    pub fn gobgp(&self, args: &[&str]) -> String {
        let mut argv = vec!["gobgp", "-u", "127.0.0.1", "-p", "50051"];
        argv.extend_from_slice(args);
        self.host
            .exec(&argv)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}
