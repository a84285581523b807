//! The etcd launcher against the real `/usr/bin/etcd`.

use std::time::Duration;

use calico_lab::etcd::{Etcd, EtcdCluster, EtcdOptions};

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "etcdctl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn loopback_etcd_serves_and_is_killed_on_drop() {
    let etcd = Etcd::start(EtcdOptions::default()).expect("start etcd");
    let ep = etcd.endpoint();
    assert!(ep.starts_with("http://127.0.0.1:"), "{ep}");
    ok(etcd.etcdctl(&["put", "/k", "v"]).unwrap());
    assert!(ok(etcd.etcdctl(&["get", "/k"]).unwrap()).contains('v'));
    let pid = etcd.pid().expect("pid");
    let dir = etcd.dir().to_owned();
    drop(etcd);
    assert!(
        !calico_lab::process::pid_alive(pid),
        "etcd {pid} still runs"
    );
    assert!(!dir.exists(), "state dir {} not removed", dir.display());
}

#[test]
fn restart_keeps_data_and_port() {
    let mut etcd = Etcd::start(EtcdOptions {
        extra_args: vec!["--max-txn-ops=1000".into()],
        ..Default::default()
    })
    .expect("start etcd");
    let ep = etcd.endpoint();
    ok(etcd.etcdctl(&["put", "/persist", "yes"]).unwrap());
    etcd.kill();
    assert!(!etcd.is_running());
    assert!(!etcd.etcdctl(&["get", "/persist"]).unwrap().status.success());
    etcd.restart().expect("restart");
    assert_eq!(etcd.endpoint(), ep);
    assert!(ok(etcd.etcdctl(&["get", "/persist"]).unwrap()).contains("yes"));
}

#[test]
fn tls_etcd_requires_a_client_certificate() {
    let etcd = Etcd::start(EtcdOptions {
        tls: true,
        ..Default::default()
    })
    .expect("start etcd with TLS");
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"));
    let tls = etcd.tls().expect("tls files");
    for f in [&tls.ca, &tls.client_cert, &tls.client_key] {
        assert!(f.exists(), "{} missing", f.display());
    }
    ok(etcd.etcdctl(&["put", "/tls", "1"]).unwrap());
    // Without a client certificate the server refuses.
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", etcd.endpoint()))
        .arg(format!("--cacert={}", tls.ca.display()))
        .args(["--dial-timeout=1s", "--command-timeout=2s", "get", "/tls"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "read without client cert succeeded");
}

#[test]
fn cluster_survives_losing_one_member() {
    let mut cluster = EtcdCluster::start(3).expect("start cluster");
    assert_eq!(cluster.endpoints().len(), 3);
    ok(cluster.etcdctl(0, &["put", "/c", "1"]).unwrap());
    cluster.kill(0);
    // Quorum remains with two of three; allow a re-election.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let out = cluster.etcdctl(1, &["put", "/c", "2"]).unwrap();
        if out.status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no quorum after kill");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!cluster.etcdctl(0, &["get", "/c"]).unwrap().status.success());
    cluster.restart(0).expect("restart member 0");
    assert!(ok(cluster.etcdctl(0, &["get", "/c"]).unwrap()).contains('2'));
}
