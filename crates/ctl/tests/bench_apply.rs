//! Benchmark (ignored by default): `calicoctl apply` of 1,000 resources against the same etcd
//! driven by `etcdctl put` of the same bytes, one key at a time (the floor the issue names),
//! and by one raw client doing the same puts in-process.
//!
//! Run: `cargo build -p calico-rs --bin calicoctl && cargo test -p calico-ctl --test
//! bench_apply -- --ignored --nocapture`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::{Etcd, write};

const N: usize = 1000;

fn pools() -> (String, Vec<(String, String)>) {
    let mut docs = Vec::new();
    let mut kvs = Vec::new();
    for i in 0..N {
        let name = format!("bench-{i}");
        let cidr = format!("10.{}.{}.0/24", i / 256, i % 256);
        docs.push(format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n"
        ));
        kvs.push((name, cidr));
    }
    (docs.join("---\n"), kvs)
}

#[tokio::test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
async fn calicoctl_apply_of_1000_pools_against_etcdctl_put_of_the_same_bytes() {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/calicoctl");
    assert!(
        bin.is_file(),
        "build the binary first: cargo build -p calico-rs --bin calicoctl"
    );
    let (yaml, _) = pools();

    // calicoctl: one process, parse + validate + read + write everything.
    let etcd = Etcd::start();
    let file = write(etcd.dir.path(), "pools.yaml", &yaml);
    let cfg = etcd.config_file().display().to_string();
    let t = Instant::now();
    let out = Command::new(&bin)
        .args(["apply", "-f", &file, "-c", &cfg])
        .output()
        .expect("run calicoctl");
    let calicoctl = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = etcd.dump().await;
    assert_eq!(stored.len(), N);

    // The floor: the same keys and bytes written by etcdctl, one put per key.
    let floor_etcd = Etcd::start();
    let t = Instant::now();
    for (key, value) in &stored {
        let status = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &floor_etcd.endpoint, "put", key, value])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run etcdctl");
        assert!(status.success());
    }
    let etcdctl = t.elapsed();

    // A second floor: one in-process client, one put per key.
    let raw_etcd = Etcd::start();
    let mut client = raw_etcd.client().await;
    let t = Instant::now();
    for (key, value) in &stored {
        client
            .put(key.as_str(), value.as_str(), None)
            .await
            .expect("put");
    }
    let raw = t.elapsed();

    println!("| what | time for {N} IPPools | ratio to calicoctl |");
    println!("|---|---|---|");
    println!("| calicoctl apply -f (one process) | {calicoctl:.2?} | 1.00 |");
    println!(
        "| etcdctl put per key (floor named by the issue) | {etcdctl:.2?} | {:.2} |",
        etcdctl.as_secs_f64() / calicoctl.as_secs_f64()
    );
    println!(
        "| raw etcd client put per key, in-process | {raw:.2?} | {:.2} |",
        raw.as_secs_f64() / calicoctl.as_secs_f64()
    );
}
