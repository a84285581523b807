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
//! Each apply is preceded by the round's phase offset ([`phase_offset`]) so that the rounds
//! spread over the kubelet's 1 s PLEG relist cycle, and each round prints a trace of where its
//! time went from the node's logs ([`trace`]; the kubelet's events need verbosity 2).
//!
//! `scripts/bench-k8s.sh [ROUNDS]` runs it:
//! `CALICO_LAB_KUBELET_V=2 K8S_BENCH_ROUNDS=5 cargo test --test k8s_bench -- --ignored --nocapture`
//!
//! Both columns include the same kubectl overheads (an apply, a watch, an exec per ping
//! attempt); the ratio is what compares the plugins.

mod k8s_common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// One measured pod: seconds from apply to Running and to the first answered ping, and the
/// wall-clock second of the day (UTC) of the apply, for [`trace`].
struct Timing {
    running: f64,
    ping: f64,
    applied: f64,
}

/// Seconds since midnight UTC, of now.
fn now_of_day() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
        % 86400.0
}

/// Seconds since midnight of the first `HH:MM:SS.frac` in a log line (klog, containerd and
/// tracing all write one; all in UTC here).
fn time_of_day(line: &str) -> Option<f64> {
    let b = line.as_bytes();
    (0..b.len().saturating_sub(9)).find_map(|i| {
        let w = &b[i..];
        let digits = |r: std::ops::Range<usize>| r.clone().all(|j| w[j].is_ascii_digit());
        if !(digits(0..2) && w[2] == b':' && digits(3..5) && w[5] == b':' && digits(6..8))
            || w[8] != b'.'
        {
            return None;
        }
        let frac_len = w[9..].iter().take_while(|c| c.is_ascii_digit()).count();
        let n = |r: std::ops::Range<usize>| line[i + r.start..i + r.end].parse::<f64>().ok();
        let frac = if frac_len == 0 {
            0.0
        } else {
            n(8..9 + frac_len)?
        };
        Some(n(0..2)? * 3600.0 + n(3..5)? * 60.0 + n(6..8)? + frac)
    })
}

/// The node's log of `what` (containerd, kubelet).
fn log_lines(kube: &KubeLab, node: &str, what: &str) -> Vec<String> {
    let n = kube
        .nodes()
        .iter()
        .find(|n| n.name() == node)
        .expect("node");
    let path = n.host().log_path(what);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Where the time of one pod start went, from the node's logs, in seconds after the apply:
/// the kubelet's `SyncLoop ADD` and PLEG events for the pod (verbosity 2), containerd's
/// RunPodSandbox begin and end, calico's ADD begin and end (its "ADD" and "pod network ready"
/// lines, which containerd's log holds: a CNI plugin's stderr is the runtime's), and
/// StartContainer's return.
/// Also returns the sandbox's time in containerd (RunPodSandbox begin to end: the CNI ADD and
/// the runtime's own work around it), when both lines were found.
fn trace(kube: &KubeLab, node: &str, name: &str, t: &Timing) -> (String, Option<f64>) {
    let rel = |line: &str| {
        time_of_day(line).map(|s| {
            let d = s - t.applied;
            // Across midnight.
            if d < -43200.0 { d + 86400.0 } else { d }
        })
    };
    // Only lines since the apply: the same pod name was used by the other plugin's turn.
    let since_apply = |what| {
        log_lines(kube, node, what)
            .into_iter()
            .filter(|l| rel(l).is_some_and(|d| d > -0.2))
            .collect::<Vec<_>>()
    };
    let kubelet = since_apply("kubelet");
    let containerd = since_apply("containerd");
    let fmt = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:+.2}"));
    let pod_ref = format!("\"default/{name}\"");
    let first = |lines: &[String], pred: &dyn Fn(&str) -> bool| {
        lines.iter().find(|l| pred(l)).and_then(|l| rel(l))
    };
    let seen = first(&kubelet, &|l| {
        l.contains("SyncLoop ADD") && l.contains(&pod_ref)
    });
    let pleg: Vec<String> = kubelet
        .iter()
        .filter(|l| l.contains("SyncLoop (PLEG)") && l.contains(&pod_ref))
        .map(|l| fmt(rel(l)))
        .collect();
    let meta = format!("RunPodSandbox for &PodSandboxMetadata{{Name:{name},");
    let sandbox_begin = first(&containerd, &|l| {
        l.contains(&meta) && !l.contains("returns")
    });
    let sandbox_end_line = containerd
        .iter()
        .find(|l| l.contains(&meta) && l.contains("returns sandbox id"));
    let sandbox_id = sandbox_end_line
        .and_then(|l| l.rsplit("returns sandbox id \\\"").next())
        .map(|s| {
            s.trim_end_matches(|c: char| !c.is_ascii_hexdigit())
                .to_owned()
        })
        .unwrap_or_default();
    let sandbox_end = sandbox_end_line.and_then(|l| rel(l));
    let has_id = |l: &str| !sandbox_id.is_empty() && l.contains(&sandbox_id);
    let add_begin = first(&containerd, &|l| has_id(l) && l.contains(" ADD "));
    let add_end_line = containerd
        .iter()
        .find(|l| has_id(l) && l.contains("pod network ready"));
    let steps = add_end_line
        .and_then(|l| l.split("steps_ms=").nth(1))
        .map(|s| s.split(" \"pod").next().unwrap_or(s).to_owned());
    let container_id = containerd
        .iter()
        .find(|l| {
            has_id(l)
                && l.contains("CreateContainer within sandbox")
                && l.contains("returns container id")
        })
        .and_then(|l| l.rsplit("returns container id \\\"").next())
        .map(|s| {
            s.trim_end_matches(|c: char| !c.is_ascii_hexdigit())
                .to_owned()
        })
        .unwrap_or_default();
    let started = first(&containerd, &|l| {
        !container_id.is_empty()
            && l.contains(&format!(
                "StartContainer for \\\"{container_id}\\\" returns successfully"
            ))
    });
    let mut out = format!(
        "kubelet ADD {}, sandbox {} → {}",
        fmt(seen),
        fmt(sandbox_begin),
        fmt(sandbox_end)
    );
    if add_begin.is_some() || add_end_line.is_some() {
        out += &format!(
            " (calico ADD {} → {}, steps ms {})",
            fmt(add_begin),
            fmt(add_end_line.and_then(|l| rel(l))),
            steps.unwrap_or_default()
        );
    }
    out += &format!(
        ", container started {}, PLEG events [{}], Running {:+.2}, first ping {:+.2}",
        fmt(started),
        pleg.join(" "),
        t.running,
        t.ping
    );
    let sandbox = sandbox_begin.zip(sandbox_end).map(|(b, e)| e - b);
    (out, sandbox)
}

/// A delay in [0, 1) s before round `round`'s apply, the same for both plugins of the round:
/// the kubelet finds a started container only at its next PLEG relist (every 1 s), and the steps
/// before an apply (a pod Ready, a pod deleted) end on a relist, so without it every apply
/// falls at the same point of the relist cycle and a round measures whether the sandbox beats
/// one fixed deadline, not how long it takes. Successive multiples of the golden ratio spread
/// the rounds evenly over the cycle.
fn phase_offset(round: usize) -> Duration {
    Duration::from_secs_f64((round as f64 * 0.618_033_988_75).fract())
}

/// Seconds from apply to Running and to the first answered ping from `pinger`.
fn time_one(kube: &KubeLab, pinger: &str, name: &str, node: &str, want_prefix: &str) -> Timing {
    let file = kube.lab().dir().join(format!("{name}.yaml"));
    std::fs::write(&file, pod_yaml(name, node)).expect("manifest");
    let applied = now_of_day();
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
    Timing {
        running,
        ping: t0.elapsed().as_secs_f64(),
        applied,
    }
}

/// The median, formatted ("?" without samples).
fn median(v: &[f64]) -> String {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).map_or("?".into(), |m| format!("{m:.2}"))
}

/// Over a relist cycle a start pays a whole extra cycle or none: the mean, not the median,
/// is what the phase offsets average.
fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
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
    // Per plugin: seconds to Running, to the first ping, and of the sandbox in containerd.
    let mut same = [
        (Cni::CalicoRs, Vec::new(), Vec::new(), Vec::new()),
        (Cni::Ptp, Vec::new(), Vec::new(), Vec::new()),
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
            std::thread::sleep(phase_offset(round));
            let t = time_one(&kube, &pinger, &target, "node1", cni.prefix());
            let (trace, sandbox) = trace(&kube, "node1", &target, &t);
            say(
                started,
                &format!(
                    "round {round} {}: Running {:.2} s, first ping {:.2} s\n    trace: {trace}",
                    cni.label(),
                    t.running,
                    t.ping,
                ),
            );
            slot.1.push(t.running);
            slot.2.push(t.ping);
            slot.3.extend(sandbox);
            delete_pods(&kube, &[&pinger, &target]);
        }
    }
    select(&kube, Cni::CalicoRs);
    std::thread::sleep(Duration::from_secs(2));
    // Cross node, calico-rs only: the pinger on node2, the new pod on node1.
    let mut cross = (Vec::new(), Vec::new(), Vec::new());
    start_pods(&kube, &[("pinger-x", "node2")]);
    for round in 0..rounds {
        let target = format!("cross-{round}");
        std::thread::sleep(phase_offset(round));
        let t = time_one(&kube, "pinger-x", &target, "node1", Cni::CalicoRs.prefix());
        let (trace, sandbox) = trace(&kube, "node1", &target, &t);
        say(
            started,
            &format!(
                "round {round} calico-rs cross-node: Running {:.2} s, first ping {:.2} s\n    trace: {trace}",
                t.running, t.ping,
            ),
        );
        cross.0.push(t.running);
        cross.1.push(t.ping);
        cross.2.extend(sandbox);
        delete_pods(&kube, &[&target]);
    }

    let ptp_ping = mean(&same[1].2);
    println!(
        "\n| plugin | path | rounds | created → Running, median s | created → first ping, median s | first ping, mean s | sandbox (RunPodSandbox), median s | ratio (first ping, mean) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (cni, running, ping, sandbox) in &same {
        println!(
            "| {} | same node | {} | {} | {} | {:.2} | {} | {:.2} |",
            cni.label(),
            ping.len(),
            median(running),
            median(ping),
            mean(ping),
            median(sandbox),
            mean(ping) / ptp_ping
        );
    }
    println!(
        "| calico-rs | cross node | {} | {} | {} | {:.2} | {} | - |",
        cross.1.len(),
        median(&cross.0),
        median(&cross.1),
        mean(&cross.1),
        median(&cross.2)
    );
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "\nsame-node samples, first ping (s): calico-rs {} | ptp {}",
        show(&same[0].2),
        show(&same[1].2)
    );
    println!(
        "sandbox samples (s): calico-rs {} | ptp {}",
        show(&same[0].3),
        show(&same[1].3)
    );
    println!(
        "calico-rs / ptp+host-local (same node, first ping, mean): {:.2}",
        mean(&same[0].2) / ptp_ping
    );
}
