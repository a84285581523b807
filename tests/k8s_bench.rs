//! Benchmark (ignored by default; docs/BENCHMARKS.md has the command and a run): on the real
//! cluster, the time from `kubectl apply` of a pod to Running and to the first ping answered
//! from another pod on the same node, with calico-rs (installed by Helm) against Debian's
//! `ptp` + `host-local` reference plugins on the same node. The node's CNI configuration is
//! swapped between the two (a `00-bench-ptp.conflist` sorts before calico's
//! `10-calico.conflist`; containerd loads the first file and reloads on change), and the
//! plugins alternate round by round in one run (which goes first alternates too). The pods of one round are deleted before the
//! swap, so each pod's CNI DEL goes to the plugin that added it. The cross-node figure (pinger
//! on node2, new pod on node1) is measured for calico-rs too.
//!
//! `scripts/bench-k8s.sh [ROUNDS]` runs it:
//! `K8S_BENCH_ROUNDS=5 cargo test --test k8s_bench -- --ignored --nocapture`
//!
//! Both columns include the same kubectl overheads (an apply, a watch, an exec per ping
//! attempt); the ratio is what compares the plugins.

mod k8s_common;

use std::time::{Duration, Instant};

use calico_lab::cluster::{BOOTSTRAP_POOL_CIDR, KubeLab};
use k8s_common::*;

const PTP_SUBNET: &str = "10.250.1.0/24";
const PTP_CONF: &str = "00-bench-ptp.conflist";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Cni {
    CalicoRs,
    Ptp,
}

impl Cni {
    fn label(self) -> &'static str {
        match self {
            Cni::CalicoRs => "calico-rs",
            Cni::Ptp => "ptp+host-local",
        }
    }

    /// The first three octets of the addresses it hands out.
    fn prefix(self) -> &'static str {
        let cidr = match self {
            Cni::CalicoRs => BOOTSTRAP_POOL_CIDR,
            Cni::Ptp => PTP_SUBNET,
        };
        cidr.rsplit_once('.').expect("cidr").0
    }
}

/// Puts `cni` first in node1's CNI configuration directory.
fn select(kube: &KubeLab, cni: Cni) {
    let node = kube
        .nodes()
        .iter()
        .find(|n| n.name() == "node1")
        .expect("node1");
    let conf = node.node_path("/etc/cni/net.d").join(PTP_CONF);
    match cni {
        Cni::Ptp => std::fs::write(
            &conf,
            format!(
                r#"{{"cniVersion":"1.0.0","name":"bench-ptp","plugins":[{{"type":"ptp","ipMasq":false,"mtu":1440,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{PTP_SUBNET}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"/var/lib/cni/bench-ptp"}}}}]}}"#
            ),
        )
        .expect("write the ptp conflist"),
        Cni::CalicoRs => {
            let _ = std::fs::remove_file(&conf);
        }
    }
}

fn delete_pods(kube: &KubeLab, pods: &[&str]) {
    let mut args = vec![
        "delete",
        "pod",
        "--wait=true",
        "--timeout=120s",
        "--ignore-not-found",
    ];
    args.extend_from_slice(pods);
    kube.kubectl_ok(&args).expect("delete pods");
}

/// Seconds from apply to Running and to the first answered ping from `pinger`.
fn time_one(kube: &KubeLab, pinger: &str, name: &str, node: &str, want_prefix: &str) -> (f64, f64) {
    let file = kube.lab().dir().join(format!("{name}.yaml"));
    std::fs::write(&file, pod_yaml(name, node)).expect("manifest");
    let t0 = Instant::now();
    kube.kubectl_ok(&["apply", "-f", &file.display().to_string()])
        .expect("apply");
    kube.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        &format!("pod/{name}"),
        "--timeout=120s",
    ])
    .expect("Running");
    let running = t0.elapsed().as_secs_f64();
    let ip = pod_ip(kube, name);
    assert!(
        ip.starts_with(want_prefix),
        "{name} got {ip}, not from {want_prefix}.x: the CNI swap did not apply"
    );
    let script = format!(
        "n=0; until ping -c1 -W1 {ip} >/dev/null 2>&1; do n=$((n+1)); [ $n -ge 300 ] && exit 1; sleep 0.02; done"
    );
    let out = kube
        .kubectl(&["exec", pinger, "--", "sh", "-c", &script])
        .expect("exec");
    assert!(
        out.status.success(),
        "{pinger} never reached {name} ({ip}): {}",
        text(&out)
    );
    (running, t0.elapsed().as_secs_f64())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: K8S_BENCH_ROUNDS=5 cargo test --test k8s_bench -- --ignored --nocapture"]
fn pod_created_to_first_ping_calico_rs_vs_ptp_host_local() {
    let rounds: usize = std::env::var("K8S_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let started = Instant::now();
    let (kube, _images) = cluster_with_calico(started, &[]);
    let node1 = kube
        .nodes()
        .iter()
        .find(|n| n.name() == "node1")
        .expect("node1");
    for plugin in ["ptp", "host-local"] {
        let dest = node1.node_path("/opt/cni/bin").join(plugin);
        std::fs::copy(format!("/usr/lib/cni/{plugin}"), &dest)
            .unwrap_or_else(|e| panic!("copy {plugin} to {}: {e}", dest.display()));
    }
    let mut same = [
        (Cni::CalicoRs, Vec::new(), Vec::new()),
        (Cni::Ptp, Vec::new(), Vec::new()),
    ];
    for round in 0..rounds {
        // Which plugin goes first alternates round by round.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let slot = &mut same[i];
            let cni = slot.0;
            select(&kube, cni);
            // containerd reloads the directory on change; give it a moment, then check the
            // pinger's address (time_one checks the measured pod's).
            std::thread::sleep(Duration::from_secs(2));
            let pinger = format!("pinger-{round}");
            let target = format!("target-{round}");
            start_pods(&kube, &[(&pinger, "node1")]);
            let pip = pod_ip(&kube, &pinger);
            assert!(
                pip.starts_with(cni.prefix()),
                "{pinger} got {pip} under {}",
                cni.label()
            );
            let (running, ping) = time_one(&kube, &pinger, &target, "node1", cni.prefix());
            say(
                started,
                &format!(
                    "round {round} {}: Running {running:.2} s, first ping {ping:.2} s",
                    cni.label()
                ),
            );
            slot.1.push(running);
            slot.2.push(ping);
            delete_pods(&kube, &[&pinger, &target]);
        }
    }
    select(&kube, Cni::CalicoRs);
    std::thread::sleep(Duration::from_secs(2));
    // Cross node, calico-rs only: the pinger on node2, the new pod on node1.
    let mut cross = (Vec::new(), Vec::new());
    start_pods(&kube, &[("pinger-x", "node2")]);
    for round in 0..rounds {
        let target = format!("cross-{round}");
        let (running, ping) = time_one(&kube, "pinger-x", &target, "node1", Cni::CalicoRs.prefix());
        say(
            started,
            &format!(
                "round {round} calico-rs cross-node: Running {running:.2} s, first ping {ping:.2} s"
            ),
        );
        cross.0.push(running);
        cross.1.push(ping);
        delete_pods(&kube, &[&target]);
    }

    let calico_ping = median(&mut same[0].2.clone());
    let ptp_ping = median(&mut same[1].2.clone());
    println!(
        "\n| plugin | path | rounds | created → Running, median s | created → first ping, median s | ratio (ping) |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (cni, running, ping) in &same {
        let p = median(&mut ping.clone());
        println!(
            "| {} | same node | {} | {:.2} | {:.2} | {:.2} |",
            cni.label(),
            ping.len(),
            median(&mut running.clone()),
            p,
            p / ptp_ping
        );
    }
    println!(
        "| calico-rs | cross node | {} | {:.2} | {:.2} | - |",
        cross.1.len(),
        median(&mut cross.0),
        median(&mut cross.1)
    );
    println!(
        "\nall same-node samples (s, first ping): calico-rs {:?} ptp {:?}",
        same[0].2, same[1].2
    );
    println!(
        "calico-rs / ptp+host-local (same node, first ping): {:.2}",
        calico_ping / ptp_ping
    );
}
