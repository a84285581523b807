//! A dockerd restart in the seed lab keeps the Calico network and its containers' connectivity.
//!
//! Brings the seed lab up with `scripts/seed-lab.sh` (as the README's first command does),
//! stops node1's dockerd with SIGTERM (its pid file), starts it again exactly as the script does
//! (`scripts/seed-lab.sh dockerd-start node1`), and asserts that calico-node comes back by
//! itself (it runs with `--restart=always`), that cal_net1 still exists on node1, and that bbox1
//! (started by the script without a restart policy, so dockerd stops it and the test runs
//! `docker start bbox1`) comes back on cal_net1 and reaches bbox2 on node2 again, by address
//! and by name. The lab is torn down afterwards whatever happened.
//!
//! The lab uses fixed namespace names (`lab-*`), so this test and tests/seed_lab.rs (and
//! scripts/bench-docker.sh) hold `/run/calico-lab/seed.lock` for their whole run.

use std::fs::File;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const NODE1_PIDFILE: &str = "/var/tmp/calico-lab/node1/docker/docker.pid";

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

/// Holds the seed lab's lock (one user of the `lab-*` namespaces at a time) until dropped.
fn lock_seed_lab() -> File {
    std::fs::create_dir_all("/run/calico-lab").expect("create /run/calico-lab");
    let file = File::create("/run/calico-lab/seed.lock").expect("open the seed lab lock");
    file.lock().expect("lock /run/calico-lab/seed.lock");
    file
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

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Retries `check` every 500 ms until it returns Ok or `limit` passes; returns the last error.
fn within(limit: Duration, mut check: impl FnMut() -> Result<(), String>) -> Result<(), String> {
    let end = Instant::now() + limit;
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= end => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn state(node: &str, container: &str) -> String {
    let out = docker(node, &["inspect", "-f", "{{.State.Status}}", container]);
    text(&out).trim().to_string()
}

/// The last lines of a node's dockerd log, for failure messages.
fn dockerd_log_tail(node: &str) -> String {
    let log = std::fs::read_to_string(format!("/var/tmp/calico-lab/{node}/docker/dockerd.log"))
        .unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

fn container_ip(node: &str, name: &str) -> String {
    let out = docker(
        node,
        &[
            "inspect",
            "-f",
            "{{(index .NetworkSettings.Networks \"cal_net1\").IPAddress}}",
            name,
        ],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ping_from_bbox1(target: &str) -> Result<(), String> {
    let out = docker(
        "node1",
        &["exec", "bbox1", "ping", "-c", "1", "-W", "1", target],
    );
    if out.status.success() && text(&out).contains("ttl=62") {
        Ok(())
    } else {
        Err(text(&out))
    }
}

#[test]
fn seed_lab_dockerd_restart_keeps_cal_net1_and_cross_host_ping() {
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let _lock = lock_seed_lab();
    let _guard = LabGuard;
    let begun = Instant::now();
    let up = script(&[]);
    eprintln!("lab up in {:.1} s", begun.elapsed().as_secs_f64());
    assert!(up.status.success(), "seed-lab.sh failed:\n{}", text(&up));
    let bbox2 = container_ip("node2", "bbox2");
    assert!(bbox2.starts_with("192.168."), "bbox2's address: {bbox2:?}");
    within(Duration::from_secs(10), || ping_from_bbox1(&bbox2))
        .unwrap_or_else(|e| panic!("before the restart bbox1 cannot reach bbox2: {e}"));

    // Stop node1's dockerd the way an init system does: SIGTERM to the pid in its pid file.
    let pid: i32 = std::fs::read_to_string(NODE1_PIDFILE)
        .expect("node1's dockerd pid file")
        .trim()
        .parse()
        .expect("a pid in the pid file");
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0, "SIGTERM to dockerd {pid}");
    within(Duration::from_secs(30), || {
        // kill(pid, 0) fails once the process is gone.
        if unsafe { libc_kill(pid, 0) } != 0 {
            Ok(())
        } else {
            Err(format!("dockerd {pid} still running"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !docker("node1", &["version"]).status.success(),
        "node1's dockerd still answers after SIGTERM"
    );

    eprintln!("dockerd stopped at {:.1} s", begun.elapsed().as_secs_f64());
    let start = script(&["dockerd-start", "node1"]);
    assert!(
        start.status.success(),
        "seed-lab.sh dockerd-start node1:\n{}",
        text(&start)
    );
    let restarted = Instant::now();
    eprintln!(
        "dockerd answering again at {:.1} s",
        begun.elapsed().as_secs_f64()
    );

    // calico-node (--restart=always) is started again by dockerd itself.
    within(Duration::from_secs(30), || {
        match state("node1", "calico-node") {
            s if s == "running" => Ok(()),
            s => Err(format!("calico-node is {s:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("after the restart: {e}\n{}", dockerd_log_tail("node1")));

    // The network survives the restart (kept by dockerd, driver calico).
    let net = docker(
        "node1",
        &[
            "network",
            "inspect",
            "-f",
            "{{.Driver}} {{.IPAM.Driver}}",
            "cal_net1",
        ],
    );
    assert!(
        net.status.success(),
        "cal_net1 gone on node1: {}",
        text(&net)
    );
    assert_eq!(
        String::from_utf8_lossy(&net.stdout).trim(),
        "calico calico-ipam"
    );

    // bbox1 has no restart policy: dockerd stopped it, the user starts it again. The driver
    // may need a moment to serve its socket again, hence the bounded retry.
    assert_ne!(
        state("node1", "bbox1"),
        "running",
        "bbox1 survived a dockerd stop?"
    );
    within(Duration::from_secs(30), || {
        let out = docker("node1", &["start", "bbox1"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    })
    .unwrap_or_else(|e| panic!("docker start bbox1 after the restart: {e}"));
    let bbox1 = container_ip("node1", "bbox1");
    assert!(
        bbox1.starts_with("192.168."),
        "bbox1's new address: {bbox1:?}"
    );

    // Connectivity across the hosts again: by address, then by name (the syncer rewrites the
    // hosts file dockerd regenerated on start).
    within(Duration::from_secs(30), || ping_from_bbox1(&bbox2))
        .unwrap_or_else(|e| panic!("after the restart bbox1 cannot reach bbox2 ({bbox2}): {e}"));
    within(Duration::from_secs(15), || ping_from_bbox1("bbox2"))
        .unwrap_or_else(|e| panic!("after the restart bbox1 cannot reach bbox2 by name: {e}"));
    // And the other way: node2 reaches bbox1's (possibly new) address over the routes.
    within(Duration::from_secs(30), || {
        let out = docker(
            "node2",
            &["exec", "bbox2", "ping", "-c", "1", "-W", "1", &bbox1],
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    })
    .unwrap_or_else(|e| panic!("bbox2 cannot reach the restarted bbox1 ({bbox1}): {e}"));
    eprintln!(
        "connectivity back {:.1} s after dockerd started again",
        restarted.elapsed().as_secs_f64()
    );
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
