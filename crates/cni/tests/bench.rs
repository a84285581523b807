//! ADD/DEL latency of `calico` next to Debian's `ptp` + `host-local`, same node, same run,
//! interleaved call by call (so both see the same machine load). Ignored by default:
//! `CNI_BENCH_PODS=500 cargo test -p calico-cni --test bench -- --ignored --nocapture`
//! (after `cargo build -p calico-rs --bin calico --bin calico-ipam`). For the shipped build:
//! `cargo build --release -p calico-rs --bin calico --bin calico-ipam` and
//! `CALICO_CNI_BIN_DIR=$PWD/target/release` with the same command (docs/BENCHMARKS.md).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let (p50, p99) = (pct(&v, 0.50), pct(&v, 0.99));
    println!(
        "{name:<22} n={:<4} p50={:>8.2?} p99={:>8.2?}",
        v.len(),
        p50,
        p99
    );
    (p50, p99)
}

#[test]
#[ignore = "benchmark: run explicitly"]
fn add_del_latency_against_ptp_host_local() {
    let n: usize = std::env::var("CNI_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let w = World::new("10.80.0.0/16", 26);
    let mut calico = w.netconf();
    calico["log_level"] = json!("warn");
    if let Ok(path) = std::env::var("CNI_BENCH_LOG") {
        calico["log_level"] = json!("debug");
        calico["log_file_path"] = json!(path);
    }
    let ptp = json!({
        "cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp", "ipMasq": false,
        "ipam": {"type": "host-local", "subnet": "10.90.0.0/16",
                 "dataDir": w.lab.dir().join("host-local")}
    });
    let pods: Vec<_> = (0..n).map(|i| w.pod_netns(&format!("b{i}"))).collect();
    let timed = |call: &Call, conf: &serde_json::Value| {
        let t = Instant::now();
        let r = invoke(&w.node, call, conf);
        let d = t.elapsed();
        ok(r, call.command);
        d
    };
    let (mut c_add, mut p_add, mut c_del, mut p_del) = (vec![], vec![], vec![], vec![]);
    let ids: Vec<(String, String)> = (0..n)
        .map(|i| (format!("bc{i}"), format!("bp{i}")))
        .collect();
    for (i, p) in pods.iter().enumerate() {
        let pod = format!("bench-{i}");
        c_add.push(timed(&Call::new("ADD", &ids[i].0, &pod, Some(p)), &calico));
        let mut c = Call::new("ADD", &ids[i].1, &pod, Some(p));
        c.ifname = "eth1";
        c.plugin = "/usr/lib/cni/ptp";
        p_add.push(timed(&c, &ptp));
    }
    for (i, p) in pods.iter().enumerate() {
        let pod = format!("bench-{i}");
        c_del.push(timed(&Call::new("DEL", &ids[i].0, &pod, Some(p)), &calico));
        let mut c = Call::new("DEL", &ids[i].1, &pod, Some(p));
        c.ifname = "eth1";
        c.plugin = "/usr/lib/cni/ptp";
        p_del.push(timed(&c, &ptp));
    }
    let ca = summary("calico ADD", c_add);
    let pa = summary("ptp+host-local ADD", p_add);
    let cd = summary("calico DEL", c_del);
    let pd = summary("ptp+host-local DEL", p_del);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "ratio calico/ptp: ADD p50 {:.2}x p99 {:.2}x, DEL p50 {:.2}x p99 {:.2}x",
        ratio(ca.0, pa.0),
        ratio(ca.1, pa.1),
        ratio(cd.0, pd.0),
        ratio(cd.1, pd.1)
    );
    assert!(cali_links(&w.node).is_empty());
    assert_eq!(allocated(&w), 0);
}
