//! The CNI path through the kubelet on a real cluster (crates/lab/src/cluster), with the
//! chart's kubeconfig: the `cni-kubeconfig` sidecar writes `/etc/cni/net.d/calico-kubeconfig`
//! from the pod's projected token, and the plugin, called by containerd for the kubelet, reads
//! the pod and its namespace from the API server with it at ADD. One cluster for the binary, in
//! order:
//!
//! 1. `helm install` with IPv6 left empty: no default IPv6 pool appears in etcd (as Calico's
//!    manifests, FELIX_IPV6SUPPORT=false); two more pools applied with kubectl.
//! 2. Pod annotation `cni.projectcalico.org/ipv4pools` (a pool name): the address comes from
//!    that pool; `ipAddrs`: exactly that address; a namespace's `ipv4pools` applies to its pods.
//! 3. Pod labels reach the WorkloadEndpoint: a Calico policy selecting on a label admits one
//!    pod and not the other.
//! 4. Failure: an annotation naming a pool that does not exist: the sandbox fails with an event
//!    naming it; no address is allocated and no veth is left on the node.
//! 5. IPAMConfiguration applied with kubectl acts on calico-ipam: `autoAllocateBlocks: false`
//!    (with strictAffinity) makes a pod in a pool without blocks fail; back to `true`, the
//!    kubelet's retry gets it an address from that pool.
//! 6. CalicoNodeStatus applied with kubectl reaches etcd, and node1's calico-node report
//!    (BGP sessions) comes back on the Kubernetes object.

mod k8s_common;

use std::time::{Duration, Instant};

use calico_lab::cluster::{KubeLab, KubeLabOptions};
use k8s_common::*;

/// A second pool, chosen by name in annotations.
const POOL_B: (&str, &str) = ("pool-b", "10.246.0.0/24");
/// A pool without blocks, for the IPAMConfiguration scenario.
const POOL_C: (&str, &str) = ("pool-c", "10.247.0.0/24");
/// The address asked for with `ipAddrs` (in manifests/ippool.yaml's 10.244.0.0/16).
const FIXED_IP: &str = "10.244.200.7";

fn wait_ready(kube: &KubeLab, pods: &[&str], namespace: &str) {
    let mut args = vec!["wait", "--for=condition=Ready", "-n", namespace];
    args.extend(pods);
    args.push("--timeout=180s");
    if let Err(e) = kube.kubectl_ok(&args) {
        let events = kube
            .kubectl_ok(&["get", "events", "-A", "--sort-by=.lastTimestamp"])
            .unwrap_or_default();
        panic!("pods {pods:?} not Ready: {e}\n{events}");
    }
}

/// Whether one ping from pod `from` reaches `ip` (up to 2 tries of 1 s).
fn pings(kube: &KubeLab, from: &str, ip: &str) -> bool {
    kube.kubectl(&["exec", from, "--", "ping", "-c", "2", "-W", "1", ip])
        .expect("kubectl exec")
        .status
        .success()
}

/// `calico*`/`cali*` interfaces in a node's namespace (the workload veths).
fn cali_links(kube: &KubeLab, node: &str) -> Vec<String> {
    let host = kube
        .nodes()
        .iter()
        .find(|n| n.name() == node)
        .expect("node")
        .host();
    let out = host.exec_ok(&["ip", "-o", "link"]).expect("ip link");
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("cali"))
        .collect()
}

/// Allocated addresses per `calicoctl ipam show` (the IPS IN USE column summed).
fn ips_in_use(kube: &KubeLab) -> String {
    let out = kube
        .calicoctl(&calicoctl(), &["ipam", "show"])
        .expect("calicoctl ipam show");
    text(&out)
}

#[test]
fn cni_annotations_labels_ipam_config_and_node_status_on_a_real_cluster() {
    let started = Instant::now();
    let images = tempfile::tempdir().expect("tempdir");
    build_images(images.path());
    let mut kube = KubeLab::start(
        KubeLabOptions {
            images_dir: Some(images.path().to_owned()),
            ..Default::default()
        },
        &mut |line| eprintln!("[{:>4.0?}] {line}", started.elapsed()),
    )
    .expect("cluster");
    kube.install_calico(
        &root().join("charts/calico-rs"),
        &[],
        Duration::from_secs(600),
    )
    .expect("helm install calico-rs");
    eprintln!("[{:>4.0?}] calico-rs ready", started.elapsed());

    // 1. IPv4 only: the chart leaves IPv6 empty, so calico-node made no IPv6 pool.
    let pools = text(
        &kube
            .calicoctl(&calicoctl(), &["get", "ippool", "-o", "wide"])
            .expect("calicoctl get ippool"),
    );
    assert!(pools.contains("default-ipv4-ippool"), "{pools}");
    assert!(
        !pools.contains("default-ipv6-ippool") && !pools.contains("::/"),
        "an IPv6 pool was created although the chart leaves IPv6 empty:\n{pools}"
    );
    kube.apply_pool(
        &calicoctl(),
        &root().join("manifests/ippool.yaml"),
        "pool-10-244",
        Duration::from_secs(120),
    )
    .expect("apply manifests/ippool.yaml");
    for (name, cidr) in [POOL_B, POOL_C] {
        apply(
            &kube,
            name,
            &format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n  blockSize: 28\n  natOutgoing: false\n"
            ),
        );
    }
    wait_for("pool-b and pool-c in etcd", Duration::from_secs(60), || {
        let out = kube
            .calicoctl(&calicoctl(), &["get", "ippool", "-o", "wide"])
            .ok()?;
        let t = text(&out);
        (t.contains(POOL_B.1) && t.contains(POOL_C.1)).then_some(())
    });

    // 2. Annotations, read from the API server at ADD through the chart's kubeconfig.
    kube.kubectl_ok(&["create", "namespace", "team-b"])
        .expect("namespace");
    kube.kubectl_ok(&[
        "annotate",
        "namespace",
        "team-b",
        &format!("cni.projectcalico.org/ipv4pools=[\"{}\"]", POOL_B.0),
    ])
    .expect("annotate namespace");
    apply(
        &kube,
        "by-pool",
        &pod_yaml_in(
            "by-pool",
            "default",
            "node1",
            "{app: bbox, role: friend}",
            &format!("{{cni.projectcalico.org/ipv4pools: '[\"{}\"]'}}", POOL_B.0),
        ),
    );
    apply(
        &kube,
        "by-ip",
        &pod_yaml_in(
            "by-ip",
            "default",
            "node2",
            "{app: bbox, role: target}",
            &format!("{{cni.projectcalico.org/ipAddrs: '[\"{FIXED_IP}\"]'}}"),
        ),
    );
    apply(
        &kube,
        "in-team-b",
        &pod_yaml_in(
            "in-team-b",
            "team-b",
            "node1",
            "{app: bbox, role: stranger}",
            "{}",
        ),
    );
    wait_ready(&kube, &["pod/by-pool", "pod/by-ip"], "default");
    wait_ready(&kube, &["pod/in-team-b"], "team-b");
    let by_pool = pod_ip_in(&kube, "by-pool", "default");
    let by_ip = pod_ip_in(&kube, "by-ip", "default");
    let in_team_b = pod_ip_in(&kube, "in-team-b", "team-b");
    eprintln!(
        "[{:>4.0?}] by-pool {by_pool}, by-ip {by_ip}, in-team-b {in_team_b}",
        started.elapsed()
    );
    assert!(
        in_cidr(&by_pool, POOL_B.1),
        "pod annotation ipv4pools: {by_pool} not in {}",
        POOL_B.1
    );
    assert_eq!(by_ip, FIXED_IP, "pod annotation ipAddrs");
    assert!(
        in_cidr(&in_team_b, POOL_B.1),
        "namespace annotation ipv4pools: {in_team_b} not in {}",
        POOL_B.1
    );

    // 3. Labels on the endpoints: by-ip admits ICMP only from role == 'friend'.
    assert!(wait_for(
        "by-pool to reach by-ip",
        Duration::from_secs(60),
        || { pings(&kube, "by-pool", &by_ip).then_some(true) }
    ));
    apply(
        &kube,
        "friends-only",
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: friends-only\nspec:\n  selector: role == 'target'\n  types: [Ingress]\n  ingress:\n  - action: Allow\n    protocol: ICMP\n    source:\n      selector: role == 'friend'\n",
    );
    wait_for(
        "the policy to refuse in-team-b (role stranger)",
        Duration::from_secs(60),
        || {
            let out = kube
                .kubectl(&[
                    "exec",
                    "-n",
                    "team-b",
                    "in-team-b",
                    "--",
                    "ping",
                    "-c",
                    "1",
                    "-W",
                    "1",
                    &by_ip,
                ])
                .ok()?;
            (!out.status.success()).then_some(())
        },
    );
    assert!(
        pings(&kube, "by-pool", &by_ip),
        "role == 'friend' must still be admitted"
    );
    let stranger = kube
        .kubectl(&[
            "exec",
            "-n",
            "team-b",
            "in-team-b",
            "--",
            "ping",
            "-c",
            "3",
            "-W",
            "1",
            &by_ip,
        ])
        .expect("kubectl exec");
    assert!(
        !String::from_utf8_lossy(&stranger.stdout).contains("bytes from"),
        "role == 'stranger' got through: {}",
        text(&stranger)
    );

    // 4. Failure: a pool that does not exist. The sandbox fails naming it; nothing leaks.
    let links_before = cali_links(&kube, "node1");
    let ipam_before = ips_in_use(&kube);
    apply(
        &kube,
        "no-pool",
        &pod_yaml_in(
            "no-pool",
            "default",
            "node1",
            "{app: bbox}",
            "{cni.projectcalico.org/ipv4pools: '[\"no-such-pool\"]'}",
        ),
    );
    let event = wait_for(
        "a FailedCreatePodSandBox event for no-pool",
        Duration::from_secs(120),
        || {
            let out = kube
                .kubectl_ok(&[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=no-pool,reason=FailedCreatePodSandBox",
                    "-o",
                    "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
                ])
                .ok()?;
            (!out.trim().is_empty()).then_some(out)
        },
    );
    assert!(event.contains("no-such-pool"), "{event}");
    let phase = kube
        .kubectl_ok(&["get", "pod", "no-pool", "-o", "jsonpath={.status.phase}"])
        .expect("phase");
    assert_eq!(phase.trim(), "Pending");
    assert!(pod_ip_in(&kube, "no-pool", "default").is_empty());
    assert_eq!(
        cali_links(&kube, "node1"),
        links_before,
        "a veth was left by the failed ADD"
    );
    assert_eq!(
        ips_in_use(&kube),
        ipam_before,
        "the failed ADD changed IPAM"
    );
    kube.kubectl_ok(&["delete", "pod", "no-pool", "--wait=true", "--timeout=60s"])
        .expect("delete no-pool");

    // 5. IPAMConfiguration applied with kubectl is what calico-ipam reads.
    let ipam_config = |auto: bool| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata:\n  name: default\nspec:\n  strictAffinity: true\n  autoAllocateBlocks: {auto}\n  maxBlocksPerHost: 8\n"
        )
    };
    apply(&kube, "ipam-config", &ipam_config(false));
    let shown = wait_for(
        "the IPAMConfiguration in etcd",
        Duration::from_secs(60),
        || {
            let out = kube
                .calicoctl(&calicoctl(), &["ipam", "show", "--show-configuration"])
                .ok()?;
            let t = text(&out);
            t.lines()
                .any(|l| l.contains("AutoAllocateBlocks") && l.contains("false"))
                .then_some(t)
        },
    );
    assert!(
        shown
            .lines()
            .any(|l| l.contains("StrictAffinity") && l.contains("true")),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.contains("MaxBlocksPerHost") && l.contains('8')),
        "{shown}"
    );
    apply(
        &kube,
        "in-pool-c",
        &pod_yaml_in(
            "in-pool-c",
            "default",
            "node2",
            "{app: bbox}",
            &format!("{{cni.projectcalico.org/ipv4pools: '[\"{}\"]'}}", POOL_C.0),
        ),
    );
    let refused = wait_for(
        "in-pool-c's ADD to fail without block allocation",
        Duration::from_secs(120),
        || {
            let out = kube
                .kubectl_ok(&[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=in-pool-c,reason=FailedCreatePodSandBox",
                    "-o",
                    "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
                ])
                .ok()?;
            (!out.trim().is_empty()).then_some(out)
        },
    );
    assert!(
        refused.contains("no free IPv4 address"),
        "autoAllocateBlocks: false must stop a new block: {refused}"
    );
    apply(&kube, "ipam-config", &ipam_config(true));
    wait_ready(&kube, &["pod/in-pool-c"], "default");
    let in_pool_c = pod_ip_in(&kube, "in-pool-c", "default");
    assert!(in_cidr(&in_pool_c, POOL_C.1), "{in_pool_c}");

    // 6. CalicoNodeStatus: spec to etcd, calico-node's report back on the object.
    apply(
        &kube,
        "node1-status",
        "apiVersion: projectcalico.org/v3\nkind: CalicoNodeStatus\nmetadata:\n  name: node1-status\nspec:\n  node: node1\n  classes: [Agent, BGP]\n  updatePeriodSeconds: 2\n",
    );
    let in_etcd = wait_for(
        "CalicoNodeStatus node1-status in etcd",
        Duration::from_secs(60),
        || {
            let out = kube
                .calicoctl(
                    &calicoctl(),
                    &["get", "caliconodestatus", "node1-status", "-o", "yaml"],
                )
                .ok()?;
            out.status.success().then(|| text(&out))
        },
    );
    assert!(in_etcd.contains("node: node1"), "{in_etcd}");
    let established = wait_for(
        "node1's BGP report on the Kubernetes object",
        Duration::from_secs(90),
        || {
            let out = kube
                .kubectl_ok(&[
                    "get",
                    "caliconodestatus",
                    "node1-status",
                    "-o",
                    "jsonpath={.status.bgp.numberEstablishedV4} {.status.agent.birdV4.state}",
                ])
                .ok()?;
            out.trim().starts_with('1').then_some(out)
        },
    );
    eprintln!("[{:>4.0?}] node1-status: {established}", started.elapsed());
    assert!(established.contains("Ready"), "{established}");
    eprintln!("[{:>4.0?}] done", started.elapsed());
}
