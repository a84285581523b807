//! The Helm lifecycle of charts/calico-rs on the real cluster (crates/lab/src/cluster): one
//! cluster, one scenario per step, in order:
//!
//! 1. Failure case: `helm upgrade` with an invalid value (`node.logLevel=loud`) is refused by
//!    the chart's values.schema.json, naming the field; the release stays at revision 1 and
//!    the DaemonSet is untouched (same generation, same pods).
//! 2. `helm upgrade --reuse-values --set node.logLevel=debug` rolls the calico-node DaemonSet:
//!    revision 2, a new pod on every node, Ready, running with the new value, while a pod on
//!    node1 pings a pod on node2 five times a second through the whole rollout. Assertion: not
//!    one probe is lost. A calico-node restart keeps the dataplane (routes, veths, nftables stay
//!    in the kernel; the peers keep the restarting node's routes through BGP graceful restart),
//!    so nothing in the forwarding path changes; a loss would be a real regression, not noise
//!    (busybox ping counts late replies, so a slow machine delays answers but loses none).
//!    Every replaced calico-node container exits with code 0 on the kubelet's SIGTERM (not
//!    137 at the grace deadline), as does its cni-kubeconfig sidecar: a watch on the pods
//!    records their final states.
//! 3. `helm test` runs the chart's three hooks and passes. Failure case: with the controllers
//!    scaled to zero, `helm test` fails and names the controllers' hook; with them back it
//!    passes again (replacing the failed hook's pod, which Helm keeps for inspection).
//! 4. `helm uninstall` (after the workload pods are deleted, as a user would before removing
//!    the network): every object of the release's manifest is gone, no calico-rs pod is left,
//!    the CRDs stay (Helm never deletes crds/, by design, as with Calico's own chart); on each
//!    node no cali* interface, no route to a pool address, no `calico-rs` nftables table and no
//!    calico CNI config (conflist, kubeconfig) is left: the chart's pre-delete hook marks the
//!    datastore and each calico-node, stopped after the mark, removes them.

mod k8s_common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use calico_lab::cluster::{BOOTSTRAP_POOL_CIDR, KubeLab};
use k8s_common::*;

const NS: &str = "kube-system";

fn helm(kube: &KubeLab, args: &[&str], timeout: Duration) -> std::process::Output {
    kube.helm(args, timeout).expect("helm")
}

/// `helm status` revision number.
fn revision(kube: &KubeLab) -> u64 {
    let out = helm(
        kube,
        &["status", "calico-rs", "-n", NS, "-o", "json"],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "helm status: {}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("helm status json");
    v["version"].as_u64().expect("version")
}

fn ds_generation(kube: &KubeLab) -> String {
    kube.kubectl_ok(&[
        "get",
        "daemonset",
        "calico-node",
        "-n",
        NS,
        "-o",
        "jsonpath={.metadata.generation}",
    ])
    .expect("daemonset")
    .trim()
    .to_owned()
}

/// (pod name, node, ready) of each calico-node pod.
fn calico_node_pods(kube: &KubeLab) -> Vec<(String, String, bool)> {
    let out = kube
        .kubectl_ok(&[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            "app.kubernetes.io/name=calico-node",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ])
        .expect("calico-node pods");
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.to_owned(),
                w.next()?.to_owned(),
                w.next() == Some("True"),
            ))
        })
        .collect()
}

/// What a continuous ping saw: sequence numbers answered, and how many were sent.
#[derive(Debug)]
struct Probe {
    sent: u64,
    answered: BTreeSet<u64>,
}

impl Probe {
    /// From busybox ping's output (`64 bytes from IP: seq=N ttl=T time=...` lines and the
    /// `N packets transmitted` summary).
    fn parse(out: &str) -> Probe {
        let answered = out
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| {
                l.split("seq=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        let sent = out
            .lines()
            .find_map(|l| {
                l.split(" packets transmitted")
                    .next()
                    .filter(|_| l.contains(" packets transmitted"))?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        Probe { sent, answered }
    }

    fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.answered.len() as u64)
    }

    /// The longest run of consecutive unanswered probes.
    fn longest_gap(&self) -> u64 {
        let (mut longest, mut run) = (0, 0);
        for seq in 0..self.sent {
            if self.answered.contains(&seq) {
                run = 0;
            } else {
                run += 1;
                longest = longest.max(run);
            }
        }
        longest
    }
}

#[test]
fn probe_parses_busybox_ping() {
    let out = "PING 10.0.0.2 (10.0.0.2): 56 data bytes\n64 bytes from 10.0.0.2: seq=0 ttl=62 time=0.1 ms\n64 bytes from 10.0.0.2: seq=3 ttl=62 time=0.1 ms\n\n--- 10.0.0.2 ping statistics ---\n5 packets transmitted, 2 packets received, 60% packet loss\n";
    let p = Probe::parse(out);
    assert_eq!(p.sent, 5);
    assert_eq!(p.lost(), 3);
    assert_eq!(p.longest_gap(), 2);
}

/// `helm test`'s report: each `TEST SUITE:` hook with its `Phase:`.
fn test_phases(report: &str) -> std::collections::BTreeMap<String, String> {
    report
        .split("TEST SUITE:")
        .skip(1)
        .filter_map(|block| {
            let name = block.split_whitespace().next()?.to_owned();
            let phase = block
                .lines()
                .find_map(|l| l.trim().strip_prefix("Phase:"))?
                .trim()
                .to_owned();
            Some((name, phase))
        })
        .collect()
}

/// The release's objects as `kind/name` with their namespace (empty: cluster-scoped), from
/// `helm get manifest`.
fn release_objects(kube: &KubeLab) -> Vec<(String, String, String)> {
    let out = helm(
        kube,
        &["get", "manifest", "calico-rs", "-n", NS],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "helm get manifest: {}", text(&out));
    let manifest = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut objects = Vec::new();
    for doc in manifest.split("\n---") {
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(doc).expect("manifest YAML");
        let (Some(kind), Some(name)) = (v["kind"].as_str(), v["metadata"]["name"].as_str()) else {
            continue;
        };
        let api = v["apiVersion"].as_str().unwrap_or("");
        let group = api.split_once('/').map(|(g, _)| g).unwrap_or("");
        let resource = if group.is_empty() {
            kind.to_lowercase()
        } else {
            format!("{}.{group}", kind.to_lowercase())
        };
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
        objects.push((resource, name.to_owned(), ns));
    }
    objects
}

/// A `kubectl get pods -w` on the calico-node pods that records each container's terminated
/// exit code (calico-node and its cni-kubeconfig sidecar) as the pods go. Stopped on drop.
struct ExitWatch {
    guard: calico_lab::ProcessGuard,
    log: std::path::PathBuf,
}

impl ExitWatch {
    fn start(kube: &KubeLab) -> ExitWatch {
        let template = concat!(
            "{.metadata.name} calico-node=",
            "{.status.containerStatuses[?(@.name==\"calico-node\")].state.terminated.exitCode}",
            " cni-kubeconfig=",
            "{.status.initContainerStatuses[?(@.name==\"cni-kubeconfig\")].state.terminated.exitCode}",
            "{\"\\n\"}"
        );
        let cp = kube.control_plane();
        let mut cmd =
            std::process::Command::new(calico_lab::cluster::k8s_bin("kubectl").expect("kubectl"));
        cmd.arg(format!("--kubeconfig={}", cp.admin_kubeconfig().display()))
            .args([
                "get",
                "pods",
                "-n",
                NS,
                "-l",
                "app.kubernetes.io/name=calico-node",
                "-w",
                "-o",
            ])
            .arg(format!("jsonpath={template}"));
        let name = "calico-node-exits";
        let guard = cp.host().nsenter_spawn(cmd, name).expect("kubectl get -w");
        let log = guard.log_path().expect("log").to_owned();
        ExitWatch { guard, log }
    }

    /// (pod, container) → exit code, for every container seen terminated.
    fn finals(&self) -> std::collections::BTreeMap<(String, String), String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = std::collections::BTreeMap::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(pod) = words.next() else { continue };
            for w in words {
                if let Some((container, code)) = w.split_once('=')
                    && !code.is_empty()
                {
                    out.insert((pod.to_owned(), container.to_owned()), code.to_owned());
                }
            }
        }
        out
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        self.guard.kill();
    }
}

#[test]
fn helm_upgrade_test_and_uninstall_on_a_real_cluster() {
    let started = Instant::now();
    let (kube, _images) = cluster_with_calico(started, &[]);
    start_pods(&kube, &[("bbox1", "node1"), ("bbox2", "node2")]);
    let ip1 = pod_ip(&kube, "bbox1");
    let ip2 = pod_ip(&kube, "bbox2");
    assert!(
        ping_within(&kube, "bbox1", &ip2, Duration::from_secs(60)),
        "bbox1 cannot ping bbox2 ({ip2}) before the upgrade"
    );
    assert_eq!(revision(&kube), 1);
    let chart = chart().display().to_string();

    // 1. An invalid value is refused by the schema; nothing changes.
    let generation = ds_generation(&kube);
    let pods_before = calico_node_pods(&kube);
    let refused = helm(
        &kube,
        &[
            "upgrade",
            "calico-rs",
            &chart,
            "-n",
            NS,
            "--reuse-values",
            "--set-string",
            "node.logLevel=loud",
        ],
        Duration::from_secs(120),
    );
    assert!(
        !refused.status.success(),
        "helm accepted node.logLevel=loud"
    );
    let why = text(&refused);
    assert!(
        why.contains("logLevel")
            && why.contains("values don't meet the specifications of the schema"),
        "the refusal does not name the field: {why}"
    );
    assert_eq!(revision(&kube), 1, "a refused upgrade made a revision");
    assert_eq!(
        ds_generation(&kube),
        generation,
        "a refused upgrade changed the DaemonSet"
    );
    assert_eq!(
        calico_node_pods(&kube),
        pods_before,
        "a refused upgrade replaced pods"
    );
    say(started, "invalid upgrade refused, nothing changed");

    // 2. A real upgrade rolls calico-node under a continuous ping.
    kube.kubectl_ok(&[
        "exec",
        "bbox1",
        "--",
        "sh",
        "-c",
        &format!("ping -i 0.2 -w 900 {ip2} > /tmp/probe 2>&1 &"),
    ])
    .expect("start the probe");
    // Some answered probes before the rollout starts.
    std::thread::sleep(Duration::from_secs(3));
    let exits = ExitWatch::start(&kube);
    let rollout_started = Instant::now();
    let out = helm(
        &kube,
        &[
            "upgrade",
            "calico-rs",
            &chart,
            "-n",
            NS,
            "--reuse-values",
            "--set-string",
            "node.logLevel=debug",
        ],
        Duration::from_secs(180),
    );
    assert!(out.status.success(), "helm upgrade: {}", text(&out));
    kube.kubectl_ok(&[
        "rollout",
        "status",
        "daemonset/calico-node",
        "-n",
        NS,
        "--timeout=600s",
    ])
    .expect("calico-node rollout");
    say(
        started,
        &format!(
            "calico-node rolled out in {:.0?}",
            rollout_started.elapsed()
        ),
    );
    assert_eq!(revision(&kube), 2);
    assert_ne!(
        ds_generation(&kube),
        generation,
        "the DaemonSet was not changed"
    );
    let pods_after = wait_for(
        "calico-node Ready on both nodes",
        Duration::from_secs(300),
        || {
            let pods = calico_node_pods(&kube);
            (pods.len() == 2 && pods.iter().all(|p| p.2)).then_some(pods)
        },
    );
    for (name, node, _) in &pods_after {
        assert!(
            !pods_before.iter().any(|p| &p.0 == name),
            "{name} on {node} was not replaced"
        );
        let env = kube
            .kubectl_ok(&[
                "get", "pod", name, "-n", NS, "-o",
                "jsonpath={.spec.containers[?(@.name==\"calico-node\")].env[?(@.name==\"CALICO_LOG_LEVEL\")].value}",
            ])
            .expect("pod env");
        assert_eq!(env.trim(), "debug", "{name} runs without the new value");
    }
    // The old pods' last states: calico-node and its sidecar stopped on SIGTERM with 0.
    let finals = wait_for(
        "the replaced calico-node containers' exit codes",
        Duration::from_secs(60),
        || {
            let finals = exits.finals();
            pods_before
                .iter()
                .all(|(name, _, _)| finals.contains_key(&(name.clone(), "calico-node".into())))
                .then_some(finals)
        },
    );
    drop(exits);
    say(
        started,
        &format!("replaced containers' exit codes: {finals:?}"),
    );
    for ((pod, container), code) in &finals {
        if pods_before.iter().any(|p| &p.0 == pod) {
            assert_eq!(
                code, "0",
                "{pod}/{container} exited with {code} on the rolling update (137: killed at the grace deadline)"
            );
        }
    }
    // Keep probing through the new agents' first seconds (BGP re-established, dataplane
    // resynced), then stop the probe (SIGINT: ping prints its summary).
    std::thread::sleep(Duration::from_secs(10));
    let out = kube
        .kubectl_ok(&[
            "exec",
            "bbox1",
            "--",
            "sh",
            "-c",
            "kill -INT $(pidof ping); sleep 1; cat /tmp/probe",
        ])
        .expect("stop the probe");
    let probe = Probe::parse(&out);
    say(
        started,
        &format!(
            "probe through the upgrade: {} sent, {} lost, longest gap {}",
            probe.sent,
            probe.lost(),
            probe.longest_gap()
        ),
    );
    assert!(probe.sent >= 50, "the probe barely ran: {out}");
    assert_eq!(
        probe.lost(),
        0,
        "pings lost while calico-node rolled (longest gap {} probes of 0.2 s): {out}",
        probe.longest_gap()
    );

    // 3. helm test, and its failure case.
    let out = helm(
        &kube,
        &["test", "calico-rs", "-n", NS, "--logs", "--timeout", "300s"],
        Duration::from_secs(330),
    );
    let report = text(&out);
    assert!(out.status.success(), "helm test: {report}");
    let phases = test_phases(&report);
    for hook in [
        "calico-rs-test-controllers",
        "calico-rs-test-pod-network",
        "calico-rs-test-datastore",
    ] {
        assert_eq!(
            phases.get(hook).map(String::as_str),
            Some("Succeeded"),
            "helm test: {hook}: {report}"
        );
    }
    say(started, "helm test passed");
    kube.kubectl_ok(&[
        "scale",
        "deployment",
        "calico-kube-controllers",
        "-n",
        NS,
        "--replicas=0",
    ])
    .expect("scale the controllers to zero");
    wait_for("the controllers to stop", Duration::from_secs(120), || {
        let pods = kube
            .kubectl_ok(&[
                "get",
                "pods",
                "-n",
                NS,
                "-l",
                "app.kubernetes.io/name=calico-kube-controllers",
                "-o",
                "name",
            ])
            .ok()?;
        pods.trim().is_empty().then_some(())
    });
    let out = helm(
        &kube,
        &["test", "calico-rs", "-n", NS, "--logs", "--timeout", "120s"],
        Duration::from_secs(150),
    );
    let report = text(&out);
    assert!(
        !out.status.success(),
        "helm test passed without controllers: {report}"
    );
    assert_eq!(
        test_phases(&report)
            .get("calico-rs-test-controllers")
            .map(String::as_str),
        Some("Failed"),
        "helm test's failure does not name the controllers' hook: {report}"
    );
    say(started, "helm test fails without controllers");
    // A failed hook's pod is kept for inspection (hook-delete-policy); with the controllers
    // back, the next `helm test` replaces it (before-hook-creation) and passes.
    kube.kubectl_ok(&[
        "scale",
        "deployment",
        "calico-kube-controllers",
        "-n",
        NS,
        "--replicas=1",
    ])
    .expect("scale the controllers back");
    kube.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/calico-kube-controllers",
        "-n",
        NS,
        "--timeout=180s",
    ])
    .expect("controllers back");
    let out = helm(
        &kube,
        &["test", "calico-rs", "-n", NS, "--logs", "--timeout", "300s"],
        Duration::from_secs(330),
    );
    assert!(
        out.status.success(),
        "helm test with the controllers back: {}",
        text(&out)
    );

    // 4. helm uninstall leaves nothing behind.
    kube.kubectl_ok(&[
        "delete",
        "pod",
        "bbox1",
        "bbox2",
        "--wait=true",
        "--timeout=120s",
    ])
    .expect("delete the workload pods");
    // What the uninstall must remove is there before it (so its absence after means
    // something): block routes, the nftables table, the CNI config.
    let pool_prefix = format!("{}.", BOOTSTRAP_POOL_CIDR.rsplit_once('.').expect("cidr").0);
    let cni_files = |node: &calico_lab::cluster::KubeNode| -> Vec<String> {
        std::fs::read_dir(node.node_path("/etc/cni/net.d"))
            .expect("the node's /etc/cni/net.d")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.contains("calico"))
            .collect()
    };
    for node in kube.nodes() {
        let routes = node
            .host()
            .exec_ok(&["ip", "route", "show", "table", "all"])
            .expect("ip route");
        assert!(
            routes.lines().any(|l| l.contains(&pool_prefix)),
            "{}: no pool route before uninstall:\n{routes}",
            node.name()
        );
        let tables = node
            .host()
            .exec_ok(&["nft", "list", "tables"])
            .expect("nft");
        assert!(
            tables.lines().any(|l| l.trim() == "table inet calico-rs"),
            "{}: no calico-rs table before uninstall:\n{tables}",
            node.name()
        );
        let conf = cni_files(node);
        assert!(
            conf.len() >= 2,
            "{}: the conflist and kubeconfig are not there before uninstall: {conf:?}",
            node.name()
        );
    }
    let objects = release_objects(&kube);
    assert!(objects.len() > 20, "{objects:?}");
    let out = helm(
        &kube,
        &[
            "uninstall",
            "calico-rs",
            "-n",
            NS,
            "--wait",
            "--timeout",
            "300s",
        ],
        Duration::from_secs(330),
    );
    assert!(out.status.success(), "helm uninstall: {}", text(&out));
    for (resource, name, ns) in &objects {
        let mut args = vec![
            "get",
            resource.as_str(),
            name.as_str(),
            "--ignore-not-found",
            "-o",
            "name",
        ];
        if !ns.is_empty() {
            args.extend(["-n", ns.as_str()]);
        }
        let left = kube.kubectl_ok(&args).expect("kubectl get");
        assert!(
            left.trim().is_empty(),
            "{resource} {name} left after helm uninstall"
        );
    }
    let mut left = String::new();
    let gone = Instant::now() + Duration::from_secs(180);
    while Instant::now() < gone {
        left = kube
            .kubectl_ok(&[
                "get",
                "pods",
                "-A",
                "-l",
                "app.kubernetes.io/part-of=calico-rs",
                "-o",
                "wide",
            ])
            .expect("kubectl get pods");
        if left.trim().is_empty() || left.contains("No resources found") {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        left.trim().is_empty() || left.contains("No resources found"),
        "calico-rs pods left after helm uninstall:\n{left}"
    );
    let crds = kube
        .kubectl_ok(&["get", "crd", "-o", "name"])
        .expect("crds");
    assert!(
        crds.contains("ippools.crd.projectcalico.org")
            || crds.contains("ippools.projectcalico.org"),
        "the CRDs are gone; Helm keeps crds/ by design: {crds}"
    );
    // On the nodes: the workloads' veths and routes went with their CNI DEL; calico-node,
    // stopped after the pre-delete hook's mark, removed its routes, its nftables table and the
    // CNI config, and the cni-kubeconfig sidecar the kubeconfig.
    for node in kube.nodes() {
        let links = node.host().exec_ok(&["ip", "-o", "link"]).expect("ip link");
        assert!(
            !links.lines().any(|l| l.contains(": cali")),
            "{}: cali interfaces left:\n{links}",
            node.name()
        );
        let routes = node
            .host()
            .exec_ok(&["ip", "route", "show", "table", "all"])
            .expect("ip route");
        for ip in [&ip1, &ip2] {
            assert!(
                !routes.lines().any(|l| l.starts_with(&format!("{ip} "))),
                "{}: the route to the deleted pod {ip} is left:\n{routes}",
                node.name()
            );
        }
        let kept: Vec<&str> = routes
            .lines()
            .filter(|l| l.contains(&pool_prefix))
            .collect();
        assert!(
            kept.is_empty(),
            "{}: routes to pool addresses left after uninstall: {kept:?}",
            node.name()
        );
        let tables = node
            .host()
            .exec_ok(&["nft", "list", "tables"])
            .expect("nft");
        assert!(
            !tables.lines().any(|l| l.trim() == "table inet calico-rs"),
            "{}: the calico-rs nftables table is left:\n{tables}",
            node.name()
        );
        let conf = cni_files(node);
        assert!(
            conf.is_empty(),
            "{}: calico CNI config left in /etc/cni/net.d: {conf:?}",
            node.name()
        );
        say(
            started,
            &format!(
                "{} after uninstall: no pool route, no calico-rs table, no calico CNI config",
                node.name()
            ),
        );
    }
    say(started, "helm uninstall left nothing behind");
}
