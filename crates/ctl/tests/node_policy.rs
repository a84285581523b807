//! `calicoctl node policy`: flags, and the datastore lookup of `--endpoint` (a real etcd on
//! loopback). The kernel side (the table read back, the order of tiers and policies, counters
//! after real traffic) is tested with the real agent in crates/node/tests/policy_counters.rs.

mod common;

use common::{Ctl, Etcd, no_default_config_session, run_raw};

fn wep(namespace: &str, pod: &str, iface: Option<&str>) -> String {
    let iface = iface
        .map(|i| format!("  interfaceName: {i}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  \
         name: node1-k8s-{pod}-eth0\n  namespace: {namespace}\nspec:\n  node: node1\n  \
         orchestrator: k8s\n  pod: {pod}\n  endpoint: eth0\n{iface}  ipNetworks: [10.65.0.1/32]\n"
    )
}

#[tokio::test]
async fn flags_are_checked_before_anything_is_read() {
    let session = no_default_config_session();
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = ["calicoctl", "node", "policy"].map(String::from).to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let out = run_raw(args(&["-o", "yaml"]), "", &[], &session).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "unsupported output format \"yaml\" for node policy: expected table or json\n"
    );
    // -n only qualifies --endpoint; --endpoint and --interface exclude each other.
    let out = run_raw(args(&["-n", "shop"]), "", &[], &session).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--endpoint"), "{}", out.stderr);
    let out = run_raw(
        args(&["--endpoint", "a", "--interface", "cali1"]),
        "",
        &[],
        &session,
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
}

#[tokio::test]
async fn endpoint_names_resolve_through_the_datastore_or_say_why_not() {
    let etcd = Etcd::start();
    let ctl = Ctl::new(&etcd);
    let docs = [
        wep("shop", "db", Some("calidb")),
        wep("team-x", "db", Some("calidbx")),
        wep("shop", "noif", None),
    ]
    .join("---\n");
    ctl.run_stdin(&["create", "-f", "-"], &docs).await.ok();

    let out = ctl.run(&["node", "policy", "--endpoint", "nope"]).await;
    out.failed();
    assert_eq!(
        out.stderr,
        "no WorkloadEndpoint or HostEndpoint named \"nope\"\n"
    );
    let out = ctl
        .run(&["node", "policy", "--endpoint", "node1-k8s-db-eth0"])
        .await;
    out.failed();
    assert_eq!(
        out.stderr,
        "\"node1-k8s-db-eth0\" names several endpoints (WorkloadEndpoint shop/node1-k8s-db-eth0, \
         WorkloadEndpoint team-x/node1-k8s-db-eth0): give the namespace with -n\n"
    );
    let out = ctl
        .run(&[
            "node",
            "policy",
            "--endpoint",
            "node1-k8s-noif-eth0",
            "-n",
            "shop",
        ])
        .await;
    out.failed();
    assert_eq!(
        out.stderr,
        "WorkloadEndpoint shop/node1-k8s-noif-eth0 has no spec.interfaceName\n"
    );
    let out = ctl
        .run(&[
            "node",
            "policy",
            "--endpoint",
            "node1-k8s-db-eth0",
            "-n",
            "elsewhere",
        ])
        .await;
    out.failed();
    assert_eq!(
        out.stderr,
        "no WorkloadEndpoint or HostEndpoint named \"node1-k8s-db-eth0\" in namespace \"elsewhere\"\n"
    );
}
