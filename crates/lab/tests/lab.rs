//! Lab hosts in real network namespaces: creation, traffic, processes, teardown and sweeping.

use std::process::Command;
use std::time::Duration;

use calico_lab::etcd::{Etcd, EtcdOptions};
use calico_lab::state::{RunRecord, netns_exists};
use calico_lab::{Lab, iperf, process::pid_running};

#[test]
fn hosts_on_the_lan_ping_each_other_and_vanish_on_drop() {
    let lab = Lab::new().expect("lab");
    assert!(
        lab.id().starts_with("crs") && lab.id().len() == 8,
        "{}",
        lab.id()
    );
    let node1 = lab.add_host("node1", "192.168.33.11/24").expect("node1");
    let node2 = lab.add_host("node2", "192.168.33.12/24").expect("node2");
    assert!(node1.netns().len() <= 15);
    assert_eq!(node1.ip().to_string(), "192.168.33.11");

    let addrs = node1
        .exec_ok(&["ip", "-4", "-o", "addr", "show", "eth1"])
        .unwrap();
    assert!(addrs.contains("192.168.33.11/24"), "{addrs}");
    assert!(
        node1
            .wait_ping("192.168.33.12", Duration::from_secs(10))
            .unwrap()
    );
    assert!(
        node2
            .wait_ping("192.168.33.11", Duration::from_secs(10))
            .unwrap()
    );
    // The host namespace knows nothing of the lab's addresses.
    let host_addrs = String::from_utf8(
        Command::new("ip")
            .args(["-o", "addr"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !host_addrs.contains("192.168.33.11"),
        "lab address leaked into the host namespace"
    );

    let namespaces = vec![
        lab.lan_netns().to_owned(),
        node1.netns().to_owned(),
        node2.netns().to_owned(),
    ];
    let record = RunRecord::path_for(lab.id());
    assert!(record.exists());
    drop(lab);
    for ns in &namespaces {
        assert!(!netns_exists(ns), "namespace {ns} survived teardown");
    }
    assert!(!record.exists(), "run record survived teardown");
}

#[test]
fn rust_code_runs_inside_a_host() {
    let lab = Lab::new().expect("lab");
    let node1 = lab.add_host("node1", "192.168.33.11/24").expect("node1");
    let names = node1
        .run(|| {
            // /proc/self/net/dev shows the thread's namespace.
            std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default()
        })
        .unwrap();
    assert!(names.contains("eth1:"), "{names}");
    let bound = node1
        .run_async(|| async {
            tokio::net::TcpListener::bind("192.168.33.11:0")
                .await
                .is_ok()
        })
        .unwrap();
    assert!(
        bound,
        "could not bind the host's address inside its namespace"
    );
    // In the test's own namespace that address does not exist.
    assert!(std::net::TcpListener::bind("192.168.33.11:0").is_err());
}

#[test]
fn spawned_processes_run_in_the_host_and_die_with_their_guard() {
    let lab = Lab::new().expect("lab");
    let node1 = lab.add_host("node1", "192.168.33.11/24").expect("node1");
    let node2 = lab.add_host("node2", "192.168.33.12/24").expect("node2");
    let mut nc = Command::new("busybox");
    nc.args(["nc", "-l", "-p", "7000", "-e", "echo", "hello"]);
    let guard = node2.spawn(nc, "nc").expect("spawn");
    let pid = guard.pid().unwrap();
    let listening = node1.exec_ok(&["sh", "-c", "for i in $(seq 50); do busybox nc -w1 192.168.33.12 7000 && exit 0; sleep 0.1; done; exit 1"]);
    assert!(listening.unwrap().contains("hello"));
    let sleeper = node1
        .nsenter_spawn(
            {
                let mut c = Command::new("sleep");
                c.arg("300");
                c
            },
            "sleep",
        )
        .unwrap();
    let spid = sleeper.pid().unwrap();
    let ns = std::fs::read_link(format!("/proc/{spid}/ns/net")).unwrap();
    let want = node1
        .run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
        .unwrap();
    assert_eq!(ns, want, "nsenter_spawn did not enter the host's namespace");
    drop(sleeper);
    drop(guard);
    assert!(!pid_running(spid));
    assert!(!pid_running(pid));
}

#[test]
fn etcd_runs_inside_a_lab_host_on_the_seed_address() {
    let lab = Lab::new().expect("lab");
    let etcd_host = lab.add_host("etcd", "192.168.33.10/24").expect("etcd host");
    let node1 = lab.add_host("node1", "192.168.33.11/24").expect("node1");
    let etcd = Etcd::start(EtcdOptions::in_netns(
        etcd_host.netns_path(),
        etcd_host.ip(),
    ))
    .expect("etcd");
    assert_eq!(etcd.endpoint(), "http://192.168.33.10:2379");
    let out = node1
        .exec(&[
            "etcdctl",
            "--endpoints=http://192.168.33.10:2379",
            "--dial-timeout=2s",
            "put",
            "/from-node1",
            "x",
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the helper test below in a child process; returns it and its lab's record.
fn start_helper() -> (std::process::Child, RunRecord, u32) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "helper_build_lab_and_hang",
            "--ignored",
            "--nocapture",
        ])
        .env("CALICO_LAB_HELPER", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut id = String::new();
    let mut etcd_pid = 0;
    {
        use std::io::BufRead;
        let stdout = child.stdout.take().unwrap();
        for line in std::io::BufReader::new(stdout).lines().take(200) {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("ETCD-PID ") {
                etcd_pid = rest.trim().parse().unwrap();
            }
            if let Some(rest) = line.strip_prefix("LAB-ID ") {
                id = rest.trim().to_owned();
                break;
            }
        }
    }
    assert!(pid_running(etcd_pid), "helper's etcd is not running");
    assert!(!id.is_empty(), "helper did not report its lab");
    let rec = RunRecord::load(&id).unwrap();
    assert_eq!(rec.namespaces.len(), 2);
    assert_eq!(rec.pids.len(), 1);
    for ns in &rec.namespaces {
        assert!(netns_exists(ns), "{ns} should exist while its owner lives");
    }
    (child, rec, etcd_pid)
}

fn assert_gone(rec: &RunRecord) {
    for ns in &rec.namespaces {
        assert!(!netns_exists(ns), "{ns} survived");
    }
    for pid in &rec.pids {
        assert!(!pid_running(*pid), "daemon {pid} survived");
    }
    assert!(
        !RunRecord::path_for(&rec.id).exists(),
        "run record survived"
    );
}

#[test]
fn leaked_run_of_a_dead_owner_is_swept() {
    // The owner is SIGKILLed: nothing unwinds, the record stays, the sweeper cleans up.
    let (mut child, rec, etcd_pid) = start_helper();
    child.kill().unwrap();
    child.wait().unwrap();
    // PR_SET_PDEATHSIG: the owner's etcd dies with it, no sweeper needed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pid_running(etcd_pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pid_running(etcd_pid),
        "etcd {etcd_pid} outlived its SIGKILLed owner"
    );
    // Another test's Lab::new may sweep it first; either way it must be gone now.
    calico_lab::sweep();
    assert_gone(&rec);
}

#[test]
fn sigterm_tears_the_lab_down() {
    let (mut child, rec, _) = start_helper();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "helper ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert_gone(&rec);
}

/// Not a test on its own: the child process of `leaked_run_of_a_dead_owner_is_swept`.
#[test]
#[ignore]
fn helper_build_lab_and_hang() {
    if std::env::var("CALICO_LAB_HELPER").is_err() {
        return;
    }
    let lab = Lab::new().unwrap();
    let h = lab.add_host("node1", "192.168.33.11/24").unwrap();
    let mut c = Command::new("sleep");
    c.arg("120");
    // A detached daemon: only the sweeper can stop it.
    h.spawn_detached(c, "sleep").unwrap();
    // An owned etcd: the death signal must take it down with us.
    let etcd = Etcd::start(EtcdOptions::default()).unwrap();
    println!("ETCD-PID {}", etcd.pid().unwrap());
    println!("LAB-ID {}", lab.id());
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn live_runs_are_not_swept() {
    let lab = Lab::new().expect("lab");
    let swept = calico_lab::sweep();
    assert!(!swept.contains(&lab.id().to_owned()));
    assert!(netns_exists(lab.lan_netns()));
}

#[test]
fn bad_host_names_are_refused() {
    let lab = Lab::new().expect("lab");
    assert!(
        lab.add_host("this-name-is-too-long", "192.168.33.11/24")
            .is_err()
    );
    assert!(lab.add_host("Node1", "192.168.33.11/24").is_err());
    assert!(lab.add_host("node1", "192.168.33.11").is_err());
    lab.add_host("node1", "192.168.33.11/24").unwrap();
    assert!(lab.add_host("node1", "192.168.33.12/24").is_err());
}

/// Tears a seed lab down even if the test fails half-way.
struct SeedGuard(String);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        let _ = calico_lab::seed::down_with_id(&self.0);
    }
}

#[test]
fn seed_lab_comes_up_detached_and_goes_down() {
    let id = format!("sd{:05x}", std::process::id() & 0xfffff);
    let guard = SeedGuard(id.clone());
    let mut said = Vec::new();
    calico_lab::seed::up_with_id(&id, &mut |l| said.push(l.to_owned())).expect("up");
    let text = said.join("\n");
    assert!(text.contains("http://192.168.33.10:2379"), "{text}");
    let rec = RunRecord::load(&id).unwrap();
    assert_eq!(rec.owner_pid, None, "an up lab has no owner");
    assert_eq!(rec.namespaces.len(), 4);
    assert_eq!(rec.pids.len(), 1);
    // Detached: a sweep leaves it alone.
    calico_lab::sweep();
    assert!(netns_exists(&format!("{id}-node1")));
    // node1 reaches etcd across the LAN.
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("{id}-node1"), "etcdctl"])
        .args(["--endpoints=http://192.168.33.10:2379", "--dial-timeout=2s"])
        .args(["put", "/seed", "ok"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = std::fs::read_to_string(rec.dir.join("calicoctl.cfg")).unwrap();
    assert!(
        cfg.contains("etcdEndpoints: \"http://192.168.33.10:2379\""),
        "{cfg}"
    );
    assert!(matches!(
        calico_lab::seed::up_with_id(&id, &mut |_| {}),
        Err(calico_lab::seed::SeedError::AlreadyUp)
    ));
    assert!(calico_lab::seed::down_with_id(&id).unwrap());
    assert_gone(&rec);
    assert!(!rec.dir.exists());
    assert!(!calico_lab::seed::down_with_id(&id).unwrap());
    drop(guard);
}

#[test]
fn a_panicking_test_still_tears_its_lab_down() {
    let mut names = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new().expect("lab");
        let h = lab.add_host("node1", "192.168.33.11/24").unwrap();
        names.push(lab.lan_netns().to_owned());
        names.push(h.netns().to_owned());
        panic!("test failure inside a lab");
    }));
    assert!(result.is_err());
    assert_eq!(names.len(), 2);
    for ns in &names {
        assert!(!netns_exists(ns), "{ns} survived a panic");
    }
}

#[test]
fn a_plumbed_workload_serves_tcp_to_its_node_until_the_servers_drop() {
    let lab = Lab::new().expect("lab");
    let node = lab.add_host("node1", "192.168.33.11/24").expect("node1");
    let wl = lab
        .add_workload(&node, "wl1", "10.65.0.5".parse().unwrap())
        .expect("workload");
    let route = wl
        .exec_ok(&["ip", "-4", "route", "show", "default"])
        .unwrap();
    assert!(route.contains("via 169.254.1.1 dev eth0"), "{route}");
    // What calico-node does on a real node: forwarding on (proxy ARP answers only then) and
    // the /32 route to the workload's veth.
    node.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    node.exec_ok(&["ip", "route", "add", "10.65.0.5/32", "dev", "caliwl1"])
        .unwrap();
    // Proxy ARP answers after up to proxy_delay (0.8 s): the first ping pays it.
    assert!(
        node.wait_ping("10.65.0.5", Duration::from_secs(10))
            .unwrap()
    );
    let dst = |port| std::net::SocketAddr::new("10.65.0.5".parse().unwrap(), port);
    let wait = Duration::from_millis(800);
    let servers = wl
        .serve_tcp("0.0.0.0".parse().unwrap(), &[8080])
        .expect("server");
    assert!(node.tcp_probe(dst(8080), wait).unwrap(), "served port");
    assert!(
        !node.tcp_probe(dst(8081), wait).unwrap(),
        "port without a server"
    );
    drop(servers);
    assert!(!node.tcp_probe(dst(8080), wait).unwrap(), "server stopped");
    // A port already taken is an error naming it, not a hang.
    let _first = wl.serve_tcp("0.0.0.0".parse().unwrap(), &[9090]).unwrap();
    let err = wl
        .serve_tcp("0.0.0.0".parse().unwrap(), &[9090])
        .expect_err("second bind");
    assert!(err.to_string().contains("0.0.0.0:9090"), "{err}");
}

#[test]
fn iperf3_measures_between_two_hosts_and_leaves_no_server_behind() {
    let lab = Lab::new().expect("lab");
    let node1 = lab.add_host("node1", "192.168.33.11/24").expect("node1");
    let node2 = lab.add_host("node2", "192.168.33.12/24").expect("node2");
    assert!(
        node1
            .wait_ping("192.168.33.12", Duration::from_secs(10))
            .unwrap()
    );
    let listening = |port: u16| {
        node2
            .exec_ok(&["ss", "-Hltn", &format!("sport = :{port}")])
            .unwrap()
    };
    let gbps = iperf::throughput(&node2, &node1, node2.ip(), 5301).expect("iperf3");
    assert!(gbps > 0.0, "{gbps} Gbit/s");
    assert_eq!(listening(5301), "", "the one-shot server is gone");
    // Nobody has this address: the client fails within its bounds, the server is killed.
    let started = std::time::Instant::now();
    let err = iperf::throughput(&node2, &node1, "192.168.33.99".parse().unwrap(), 5302)
        .expect_err("no such host");
    assert!(err.to_string().contains("192.168.33.99:5302"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "{err}");
    assert_eq!(listening(5302), "", "the server is killed on failure");
    // A port already taken: the server's exit is the error, not a wait.
    let mut nc = Command::new("busybox");
    nc.args(["nc", "-l", "-p", "5303"]);
    let _taken = node2.spawn(nc, "nc").expect("nc");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while listening(5303).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ne!(listening(5303), "", "nc listens");
    let err = iperf::throughput(&node2, &node1, node2.ip(), 5303).expect_err("port taken");
    assert!(err.to_string().contains("iperf3"), "{err}");
}
