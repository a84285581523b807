//! The seed, end to end, exactly as the README's first command runs it: etcd and two Docker
//! hosts as network namespaces, `calicoctl node run` on both, `cal_net1` created on node1,
//! busybox on each node, and the seed's observable results asserted one by one.
//!
//! Runs `scripts/seed-lab.sh` (so the demo and this test cannot drift apart) and always tears
//! the lab down afterwards, also when an assertion fails.

use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn script(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(format!("{ROOT}/scripts/seed-lab.sh"))
        .args(args)
        .current_dir(ROOT)
        // CI built everything before the tests; the script must not rebuild inside a test.
        .env("SETUP_SKIP_BUILD", "1")
        .output()
        .expect("run scripts/seed-lab.sh")
}

/// Tears the lab down when the test ends, whatever happened.
struct LabGuard;

impl Drop for LabGuard {
    fn drop(&mut self) {
        let out = script(&["down"]);
        if !out.status.success() {
            eprintln!("seed-lab.sh down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn docker(node: &str, args: &[&str]) -> Output {
    Command::new("docker")
        .arg("-H")
        .arg(format!(
            "unix:///var/tmp/calico-lab/{node}/docker/docker.sock"
        ))
        .args(args)
        .output()
        .expect("docker CLI")
}

fn ip_r(node: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("lab-{node}"), "ip", "r"])
        .output()
        .expect("ip r");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn container_ip(node: &str, name: &str, network: &str) -> String {
    let fmt = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let out = docker(node, &["inspect", "-f", &fmt, name]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The /26 block containing `ip` (the default block size).
fn block_of(ip: &str) -> String {
    let addr: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
    let base = u32::from(addr) & !63;
    format!("{}/26", std::net::Ipv4Addr::from(base))
}

#[test]
fn seed_lab_two_docker_hosts_route_busybox_to_busybox_over_bgp() {
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    // One user of the fixed lab-* namespaces at a time (tests/seed_restart.rs,
    // scripts/bench-docker.sh): held until the test ends, after the guard's teardown.
    std::fs::create_dir_all("/run/calico-lab").expect("create /run/calico-lab");
    let seed_lock = std::fs::File::create("/run/calico-lab/seed.lock").expect("open the seed lock");
    seed_lock.lock().expect("lock /run/calico-lab/seed.lock");
    let _guard = LabGuard;
    let up = script(&[]);
    let text = String::from_utf8_lossy(&up.stdout).into_owned();
    let err = String::from_utf8_lossy(&up.stderr).into_owned();
    assert!(up.status.success(), "seed-lab.sh failed:\n{text}\n{err}");

    // Step 4: both nodes started, as the seed's transcript ends.
    assert_eq!(
        text.matches("Calico node started successfully").count(),
        2,
        "{text}"
    );
    assert!(text.contains("Created default IPv4 pool (192.168.0.0/16) with NAT outgoing true"));

    // Step 5: node status in the seed's table, the mesh peer Established.
    assert!(text.contains("Calico process is running."), "{text}");
    assert!(
        text.lines().any(
            |l| l.starts_with("| 192.168.33.12 | node-to-node mesh | up ")
                && l.ends_with("| Established |")
        ),
        "{text}"
    );
    assert!(
        text.contains("IPv6 BGP status\nNo IPv6 peers found."),
        "{text}"
    );

    // Step 7: bbox1's interface: cali0, a /32 from the pool, MAC ee:ee:ee:ee:ee:ee.
    let bbox1 = container_ip("node1", "bbox1", "cal_net1");
    let bbox2 = container_ip("node2", "bbox2", "cal_net1");
    for ip in [&bbox1, &bbox2] {
        assert!(
            ip.starts_with("192.168."),
            "address {ip:?} is not in 192.168.0.0/16"
        );
    }
    let ip_a = String::from_utf8_lossy(&docker("node1", &["exec", "bbox1", "ip", "a"]).stdout)
        .into_owned();
    assert!(ip_a.contains(": cali0@"), "{ip_a}");
    assert!(ip_a.contains("link/ether ee:ee:ee:ee:ee:ee"), "{ip_a}");
    assert!(
        ip_a.contains(&format!("inet {bbox1}/32 scope global cali0")),
        "{ip_a}"
    );

    // Step 8: the routing tables are the seed's, on both nodes.
    for (node, local, remote, peer) in [
        ("node1", &bbox1, &bbox2, "192.168.33.12"),
        ("node2", &bbox2, &bbox1, "192.168.33.11"),
    ] {
        let routes = ip_r(node);
        let learned = format!("{} via {peer} dev eth1 proto bird", block_of(remote));
        let blackhole = format!("blackhole {} proto bird", block_of(local));
        assert!(
            routes.contains(&learned),
            "{node}: no `{learned}` in\n{routes}"
        );
        assert!(
            routes.contains(&blackhole),
            "{node}: no `{blackhole}` in\n{routes}"
        );
        assert!(
            routes.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 5
                    && f[0] == local.as_str()
                    && f[1] == "dev"
                    && f[2].starts_with("cali")
                    && f[2].len() == 15
                    && f[3..5] == ["scope", "link"]
            }),
            "{node}: no `{local} dev cali<11 hex> scope link` in\n{routes}"
        );
    }

    // Step 9: bbox1 pings bbox2 by name across the hosts, two routed hops (ttl 62).
    let ping = docker(
        "node1",
        &["exec", "bbox1", "ping", "-c", "3", "-W", "2", "bbox2"],
    );
    let ping_out = String::from_utf8_lossy(&ping.stdout).into_owned();
    assert!(ping.status.success(), "{ping_out}");
    assert!(
        ping_out.contains(&format!("from {bbox2}: seq=")),
        "{ping_out}"
    );
    assert!(ping_out.contains("ttl=62"), "{ping_out}");
    assert!(ping_out.contains(" 0% packet loss"), "{ping_out}");

    // Step 10, the default policy: containers talk only within their Calico network. bbox3 on
    // a second network (on node2, beside bbox2) cannot reach bbox1; bbox2 on cal_net1 can.
    let net2 = docker(
        "node1",
        &[
            "network",
            "create",
            "--driver",
            "calico",
            "--ipam-driver",
            "calico-ipam",
            "cal_net2",
        ],
    );
    assert!(
        net2.status.success(),
        "{}",
        String::from_utf8_lossy(&net2.stderr)
    );
    let mut on_node2 = false;
    for _ in 0..60 {
        if docker("node2", &["network", "inspect", "cal_net2"])
            .status
            .success()
        {
            on_node2 = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(on_node2, "cal_net2 never appeared on node2");
    let run3 = docker(
        "node2",
        &[
            "run", "--net", "cal_net2", "--name", "bbox3", "-tid", "busybox",
        ],
    );
    assert!(
        run3.status.success(),
        "{}",
        String::from_utf8_lossy(&run3.stderr)
    );
    let same_net = docker(
        "node2",
        &["exec", "bbox2", "ping", "-c", "2", "-W", "2", &bbox1],
    );
    assert!(
        same_net.status.success(),
        "bbox2 (cal_net1) cannot reach bbox1: {}",
        String::from_utf8_lossy(&same_net.stdout)
    );
    let other_net = docker(
        "node2",
        &["exec", "bbox3", "ping", "-c", "3", "-W", "1", &bbox1],
    );
    let other_out = String::from_utf8_lossy(&other_net.stdout).into_owned();
    assert!(
        !other_net.status.success() && other_out.contains("100% packet loss"),
        "bbox3 on cal_net2 reached bbox1 on cal_net1:\n{other_out}"
    );

    // Removing a container releases its address: the next container gets it back or the
    // block holds it no more (ipam show --ip says so).
    let rm = docker("node2", &["rm", "-f", "bbox2"]);
    assert!(rm.status.success());
    let show = Command::new("ip")
        .args(["netns", "exec", "lab-node1"])
        .arg(format!("{ROOT}/target/debug/calicoctl"))
        .args([
            "-c",
            "/run/calico-lab/lab/calicoctl.cfg",
            "ipam",
            "show",
            "--ip",
            &bbox2,
        ])
        .output()
        .expect("calicoctl ipam show");
    let show_out = String::from_utf8_lossy(&show.stdout).into_owned();
    assert!(
        show_out.contains("is not assigned"),
        "address of the removed bbox2 still assigned:\n{show_out}\n{}",
        String::from_utf8_lossy(&show.stderr)
    );
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
