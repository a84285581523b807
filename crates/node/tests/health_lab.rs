//! Metrics, health and FelixConfiguration with real `calico-node` agents in lab namespaces and
//! a real etcd (the harness of cluster_support: LAN 192.168.33.0/24, etcd on .2, nodes .11..).
//!
//! Every scrape runs inside the node's namespace (the agent serves on its loopback or LAN
//! address there) with Python's `prometheus_client` text parser (installed by
//! scripts/setup.sh), so what is checked is what Prometheus would read.
//!
//! Needs root, python3 with prometheus_client, and the binaries `target/debug/calico-node`
//! and `target/debug/calicoctl` (`cargo build -p calico-rs --bin calico-node --bin calicoctl`).

mod cluster_support;
use cluster_support::*;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use calico_api::{
    FelixConfiguration, GlobalNetworkPolicy, ObjectMeta, Profile, WorkloadEndpoint,
    WorkloadEndpointSpec,
};
use calico_datastore::{Datastore, KindRef};
use calico_lab::Host;
use serde_json::{Value, json};

/// Fetches a URL from inside `host`'s namespace; with `parse`, parses the body with
/// prometheus_client's text parser. Prints `{"code", "body", "samples"}` as JSON.
const SCRAPE: &str = r#"
import json, sys, urllib.request, urllib.error
url, parse = sys.argv[1], sys.argv[2] == "parse"
try:
    r = urllib.request.urlopen(url, timeout=5)
    code, body = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read().decode()
except Exception as e:
    code, body = 0, repr(e)
out = {"code": code, "body": body, "samples": [], "types": {}}
if parse and code == 200:
    from prometheus_client.parser import text_string_to_metric_families
    for f in text_string_to_metric_families(body):
        out["types"][f.name] = f.type
        for s in f.samples:
            out["samples"].append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

struct Reply {
    code: u64,
    body: String,
    /// `name{label="value",...}` → value, as the parser read them.
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

fn fetch(host: &Host, url: &str, parse: bool) -> Reply {
    let out = host
        .exec(&[
            "python3",
            "-c",
            SCRAPE,
            url,
            if parse { "parse" } else { "raw" },
        ])
        .expect("python3");
    assert!(
        out.status.success(),
        "scrape script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("scrape output is JSON");
    let mut samples = BTreeMap::new();
    for s in v["samples"].as_array().into_iter().flatten() {
        let labels = s[1].as_object().expect("labels");
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or_default()))
            .collect();
        let key = if l.is_empty() {
            s[0].as_str().unwrap_or_default().to_string()
        } else {
            format!("{}{{{}}}", s[0].as_str().unwrap_or_default(), l.join(","))
        };
        samples.insert(key, s[2].as_f64().expect("value"));
    }
    let types = v["types"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap_or_default().to_string()))
        .collect();
    Reply {
        code: v["code"].as_u64().unwrap_or(0),
        body: v["body"].as_str().unwrap_or_default().to_string(),
        samples,
        types,
    }
}

fn metrics(host: &Host, addr: &str) -> Reply {
    fetch(host, &format!("http://{addr}/metrics"), true)
}

fn readiness(host: &Host, addr: &str) -> Reply {
    fetch(host, &format!("http://{addr}/readiness"), false)
}

/// Waits until `f` holds; panics with `what` and the last value otherwise.
fn wait_until<T: std::fmt::Debug>(
    what: &str,
    mut get: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let mut last = None;
    let got = wait_for(WAIT, || {
        let v = get();
        if ok(&v) {
            Some(v)
        } else {
            last = Some(v);
            None
        }
    });
    got.unwrap_or_else(|| panic!("{what}: last seen {last:?}"))
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {:?}\n{}", self.code, self.samples, self.body)
    }
}

/// Applies a FelixConfiguration document (`name`, `spec`) from inside the etcd namespace.
fn felix(c: &Cluster, name: &str, spec: Value) {
    let doc = json!({"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
                     "metadata": {"name": name}, "spec": spec});
    c.with_datastore(async move |ds: &Datastore, _| {
        ds.dynamic()
            .apply(&KindRef::of::<FelixConfiguration>(), doc)
            .await
            .expect("apply FelixConfiguration");
    });
}

/// One workload endpoint on `node` with an allow-all profile, and one GlobalNetworkPolicy
/// selecting it: one active endpoint and one active policy on that node.
fn workload_with_policy(c: &Cluster, node: &str) {
    let node = node.to_string();
    c.with_datastore(async move |ds: &Datastore, _| {
        let allow = serde_json::from_value(json!({
            "ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]
        }))
        .expect("profile");
        ds.apply(&Profile::new("lab-allow", allow)).await.expect("profile");
        let name = format!("{node}-libnetwork-libnetwork-w1");
        let mut wep = WorkloadEndpoint::new(
            &name,
            WorkloadEndpointSpec {
                orchestrator: Some("libnetwork".into()),
                workload: Some("libnetwork".into()),
                node: Some(node.clone()),
                endpoint: Some("w1".into()),
                interface_name: Some("caliw1".into()),
                ip_networks: vec!["10.65.200.1/32".into()],
                profiles: vec!["lab-allow".into()],
                ..Default::default()
            },
        );
        wep.metadata = ObjectMeta {
            name: Some(name),
            namespace: Some("default".into()),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        };
        ds.create(&wep).await.expect("workload endpoint");
        let gnp: GlobalNetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "web-ingress"},
            "spec": {"selector": "app == 'web'", "ingress": [{"action": "Allow", "protocol": "TCP"}]}
        }))
        .expect("policy");
        ds.apply(&gnp).await.expect("policy");
    });
}

const METRICS_ON: [(&str, &str); 2] = [
    ("FELIX_PROMETHEUSMETRICSENABLED", "true"),
    ("FELIX_HEALTHENABLED", "true"),
];

#[test]
fn metrics_match_the_lab_and_readiness_follows_the_mesh() {
    let mut c = Cluster::new(2);
    c.start_agent_with(1, &METRICS_ON);
    c.start_agent_with(2, &METRICS_ON);
    let (_, block1) = c.allocate("node1");
    let (_, block2) = c.allocate("node2");
    workload_with_policy(&c, "node1");
    let h1 = c.node(1).host.clone();

    let want = [
        ("felix_active_local_endpoints", 1.0),
        ("felix_active_local_policies", 1.0),
        ("felix_cluster_num_hosts", 2.0),
        ("calico_bgp_peers{state=\"Established\"}", 1.0),
        ("calico_bgp_prefixes_received", 1.0),
        ("calico_bgp_routes_installed", 1.0),
        ("calico_ipam_blocks", 1.0),
        ("calico_ipam_allocated_addresses", 1.0),
    ];
    let m = wait_until(
        "node1's metrics match the lab",
        || metrics(&h1, "127.0.0.1:9091"),
        |m| m.code == 200 && want.iter().all(|(k, v)| m.samples.get(*k) == Some(v)),
    );
    // The parser reads counters the OpenMetrics way (`_total` samples); on the wire they
    // carry Felix's names.
    assert!(m.samples["felix_resyncs_started_total"] >= 1.0, "{m:?}");
    assert!(m.body.contains("\nfelix_resyncs_started "), "{m:?}");
    assert!(
        m.samples["felix_int_dataplane_apply_time_seconds_count"] >= 1.0,
        "{m:?}"
    );
    assert!(
        m.samples["felix_route_table_list_seconds_count"] >= 1.0,
        "{m:?}"
    );
    assert_eq!(
        m.samples["felix_int_dataplane_failures_total"], 0.0,
        "{m:?}"
    );
    assert_eq!(m.types["felix_int_dataplane_apply_time_seconds"], "summary");
    assert_eq!(m.types["felix_active_local_endpoints"], "gauge");
    assert_eq!(m.types["felix_resyncs_started"], "counter");
    // node2 sees no local endpoint and learned node1's block.
    let m2 = metrics(&c.node(2).host, "127.0.0.1:9091");
    assert_eq!(
        m2.samples.get("felix_active_local_endpoints"),
        Some(&0.0),
        "{m2:?}"
    );
    assert!(c.routes(2).contains(&via(&block1, c.ip(1))));
    assert!(c.routes(1).contains(&via(&block2, c.ip(2))));

    // Ready with its peer Established; not ready once the peer's agent is gone; ready again
    // when it returns. The start-up grace (30 s) has nothing to do with it: with one peer,
    // none Established is not ready before and after.
    let r = wait_until(
        "node1 ready",
        || readiness(&h1, "127.0.0.1:9099"),
        |r| r.code == 200,
    );
    assert!(r.body.contains("| bgp "), "{r:?}");
    c.nodes[1].agent = None;
    let r = wait_until(
        "node1 not ready without its peer",
        || readiness(&h1, "127.0.0.1:9099"),
        |r| r.code == 503,
    );
    assert!(
        r.body
            .contains(&format!("BGP not established with {}", c.ip(2))),
        "{r:?}"
    );
    let status = c.node_status(1);
    assert!(
        status.contains(&format!(
            "Readiness: not ready\n  - bgp: BGP not established with {}",
            c.ip(2)
        )),
        "{status}"
    );
    c.start_agent_with(2, &METRICS_ON);
    wait_until(
        "node1 ready again",
        || readiness(&h1, "127.0.0.1:9099"),
        |r| r.code == 200,
    );
    assert!(c.node_status(1).ends_with("Readiness: ready\n"));
}

/// Runs `nft -i` in `host`'s namespace holding the table `inet calico-rs` with the owner flag
/// (kernel ≥ 5.12): only this process's socket may change it, and it disappears when the
/// process exits. Killed on drop.
struct TableThief {
    child: Child,
}

impl TableThief {
    fn start(host: &Host) -> TableThief {
        let mut child = Command::new("ip")
            .args(["netns", "exec", host.netns(), "nft", "-i"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nft -i");
        // One transaction: the agent's table is replaced by an empty one only we may change.
        child
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"delete table inet calico-rs; add table inet calico-rs { flags owner; }\n")
            .expect("write to nft");
        TableThief { child }
    }
}

impl Drop for TableThief {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_agent_whose_nftables_is_taken_away_is_not_ready_until_it_is_back() {
    let mut c = Cluster::new(1);
    let mut env = METRICS_ON.to_vec();
    env.push(("FELIX_ROUTEREFRESHINTERVAL", "2"));
    c.start_agent_with(1, &env);
    workload_with_policy(&c, "node1");
    let h = c.node(1).host.clone();
    wait_until(
        "ready",
        || readiness(&h, "127.0.0.1:9099"),
        |r| r.code == 200,
    );
    let table = |h: &Host| {
        h.exec_ok(&["nft", "list", "table", "inet", "calico-rs"])
            .unwrap_or_default()
    };
    assert!(table(&h).contains("chain"), "the agent's table is in place");

    let thief = TableThief::start(&h);
    wait_for(WAIT, || table(&h).contains("flags owner").then_some(())).expect("table taken");
    // Within one refresh (2 s) plus a round: not ready, saying why.
    let r = wait_for(Duration::from_secs(8), || {
        let r = readiness(&h, "127.0.0.1:9099");
        (r.code == 503).then_some(r)
    })
    .unwrap_or_else(|| panic!("still ready with the table gone:\n{}", c.agent_log(1)));
    assert!(r.body.contains("int_dataplane"), "{r:?}");
    assert!(r.body.contains("Operation not permitted"), "{r:?}");
    assert!(
        c.node_status(1)
            .contains("Readiness: not ready\n  - int_dataplane: policy: ")
    );
    let m = metrics(&h, "127.0.0.1:9091");
    assert!(
        m.samples["felix_int_dataplane_failures_total"] >= 1.0,
        "{m:?}"
    );
    assert!(
        c.agent_log(1).contains("policy sync failed"),
        "the log says why"
    );

    drop(thief);
    wait_until(
        "ready again",
        || readiness(&h, "127.0.0.1:9099"),
        |r| r.code == 200,
    );
    let t = table(&h);
    assert!(t.contains("chain") && !t.contains("flags owner"), "{t}");
}

#[test]
fn felix_configuration_fields_act_at_run_time() {
    let mut c = Cluster::new(1);
    c.start_agent(1);
    let (_, block) = c.allocate("node1");
    let h = c.node(1).host.clone();
    let lan = c.ip(1).to_string();

    // Nothing enabled: Felix's defaults serve nothing.
    assert_eq!(metrics(&h, "127.0.0.1:9091").code, 0);
    assert_eq!(readiness(&h, "127.0.0.1:9099").code, 0);

    // healthEnabled / prometheusMetricsEnabled in default; the node's resource moves them.
    felix(
        &c,
        "default",
        json!({"healthEnabled": true, "prometheusMetricsEnabled": true}),
    );
    wait_until(
        "health on 127.0.0.1:9099",
        || readiness(&h, "127.0.0.1:9099"),
        |r| r.code == 200,
    );
    wait_until(
        "metrics on *:9091",
        || metrics(&h, &format!("{lan}:9091")),
        |m| m.code == 200,
    );
    felix(
        &c,
        "node.node1",
        json!({"healthPort": 9300, "healthHost": lan, "prometheusMetricsPort": 9301, "prometheusMetricsHost": "127.0.0.1"}),
    );
    wait_until(
        "health on LAN:9300",
        || readiness(&h, &format!("{lan}:9300")),
        |r| r.code == 200,
    );
    assert_eq!(
        readiness(&h, "127.0.0.1:9099").code,
        0,
        "the old port is closed"
    );
    assert_eq!(
        readiness(&h, "127.0.0.1:9300").code,
        0,
        "healthHost binds the LAN address only"
    );
    wait_until(
        "metrics on 127.0.0.1:9301",
        || metrics(&h, "127.0.0.1:9301"),
        |m| m.code == 200,
    );
    assert_eq!(
        metrics(&h, &format!("{lan}:9301")).code,
        0,
        "prometheusMetricsHost"
    );
    assert_eq!(metrics(&h, "127.0.0.1:9091").code, 0);
    let health = format!("{lan}:9300");

    // logSeverityScreen: Debug shows debug lines, Error hides info lines.
    felix(
        &c,
        "default",
        json!({"healthEnabled": true, "prometheusMetricsEnabled": true, "logSeverityScreen": "Debug"}),
    );
    wait_until(
        "debug lines",
        || c.agent_log(1),
        |l| l.contains(" DEBUG ") && l.contains("dataplane in sync"),
    );
    felix(
        &c,
        "default",
        json!({"healthEnabled": true, "prometheusMetricsEnabled": true, "logSeverityScreen": "Error", "routeRefreshInterval": "1s"}),
    );
    wait_until("level error", || c.agent_log(1), |l| l.contains("to=error"));
    let before = c.agent_log(1).len();
    std::thread::sleep(Duration::from_secs(3));
    let after = c.agent_log(1);
    assert!(
        !after[before..].contains(" INFO ") && !after[before..].contains(" DEBUG "),
        "only errors at Error:\n{}",
        &after[before..]
    );

    // routeRefreshInterval: a blackhole removed behind the agent's back is back within a
    // refresh; with 1h it stays gone (nothing else triggers a round here).
    let hole = format!("blackhole {block} proto bird");
    let delete = |h: &Host| {
        h.exec_ok(&["ip", "route", "del", "blackhole", &block])
            .expect("ip route del")
    };
    c.wait_routes(1, std::slice::from_ref(&hole), &[]);
    delete(&h);
    c.wait_routes(1, std::slice::from_ref(&hole), &[]);
    felix(
        &c,
        "default",
        json!({"healthEnabled": true, "prometheusMetricsEnabled": true, "routeRefreshInterval": "1h"}),
    );
    // Let the round this write triggered finish before removing the route.
    std::thread::sleep(Duration::from_secs(2));
    delete(&h);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !c.routes(1).contains(&hole),
        "no refresh with 1h: {:?}",
        c.routes(1)
    );
    felix(
        &c,
        "default",
        json!({"healthEnabled": true, "prometheusMetricsEnabled": true, "routeRefreshInterval": "2s"}),
    );
    c.wait_routes(1, std::slice::from_ref(&hole), &[]);
    std::thread::sleep(Duration::from_secs(1));
    delete(&h);
    c.wait_routes(1, std::slice::from_ref(&hole), &[]);

    // reportingInterval: the status report moves every second; with 0s it stops.
    let report = |c: &Cluster| -> f64 {
        let out = c
            .etcd
            .etcdctl(&[
                "get",
                "--print-value-only",
                "/calico/felix/v2/no-region/host/node1/status",
            ])
            .expect("etcdctl");
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["uptime"].as_f64())
            .unwrap_or(-1.0)
    };
    felix(
        &c,
        "default",
        json!({"healthEnabled": true, "prometheusMetricsEnabled": true, "reportingInterval": "1s"}),
    );
    let first = wait_until("a report", || report(&c), |u| *u >= 0.0);
    wait_until("reports every second", || report(&c), |u| *u > first + 1.0);
    felix(
        &c,
        "default",
        json!({"healthEnabled": true, "prometheusMetricsEnabled": true, "reportingInterval": "0s"}),
    );
    std::thread::sleep(Duration::from_secs(2));
    let stopped = report(&c);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(report(&c), stopped, "no report with 0s");

    // A refused field: not ready, named in readiness, node status and the log; removing it
    // makes the node ready again.
    felix(
        &c,
        "node.node1",
        json!({"healthPort": 9300, "healthHost": lan, "wireguardEnabled": true}),
    );
    let r = wait_until("refusal", || readiness(&h, &health), |r| r.code == 503);
    assert!(r.body.contains("FelixConfiguration node.node1: spec.wireguardEnabled: refused: WireGuard encryption is not implemented"), "{r:?}");
    assert!(c.node_status(1).contains(
        "  - felix_configuration: FelixConfiguration node.node1: spec.wireguardEnabled: refused"
    ));
    assert!(c.agent_log(1).contains("FelixConfiguration field refused"));
    felix(
        &c,
        "node.node1",
        json!({"healthPort": 9300, "healthHost": lan}),
    );
    wait_until("ready again", || readiness(&h, &health), |r| r.code == 200);
}

/// A policy with a rule the dataplane cannot enforce (an `http` match) is named, with the
/// rule, in `calicoctl node status` (the real binary) and counted on `/metrics`; deleting
/// the policy clears both.
#[test]
fn a_policy_not_enforced_as_written_is_shown_and_counted() {
    let mut c = Cluster::new(1);
    c.start_agent_with(1, &METRICS_ON);
    workload_with_policy(&c, "node1");
    let h = c.node(1).host.clone();
    let skipped = "calico_policy_issues{outcome=\"rule skipped\"}";
    wait_until(
        "no issue at first",
        || metrics(&h, "127.0.0.1:9091"),
        |m| m.code == 200 && m.samples.get(skipped) == Some(&0.0),
    );
    assert!(!c.node_status(1).contains("Policy not enforced as written"));

    c.with_datastore(async move |ds: &Datastore, _| {
        let gnp: GlobalNetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "web-http"},
            "spec": {"selector": "app == 'web'", "ingress": [
                {"action": "Allow", "protocol": "TCP", "http": {"methods": ["GET"]}}
            ]}
        }))
        .expect("policy");
        ds.apply(&gnp).await.expect("policy");
    });
    let m = wait_until(
        "the skipped rule counted",
        || metrics(&h, "127.0.0.1:9091"),
        |m| m.samples.get(skipped) == Some(&1.0),
    );
    assert_eq!(m.types["calico_policy_issues"], "gauge");
    assert_eq!(
        m.samples
            .get("calico_policy_issues{outcome=\"rules replaced by deny\"}"),
        Some(&0.0),
        "{m:?}"
    );
    let status = c.node_status(1);
    assert!(
        status.contains(
            "Policy not enforced as written:\n  - GlobalNetworkPolicy \"web-http\" spec.ingress[0].http: rule skipped ("
        ),
        "{status}"
    );
    // The other policy is still enforced: the node stays ready.
    assert!(status.contains("Readiness: ready\n"), "{status}");

    c.with_datastore(async move |ds: &Datastore, _| {
        ds.delete::<GlobalNetworkPolicy>(None, "web-http", None)
            .await
            .expect("delete policy");
    });
    wait_until(
        "the issue cleared",
        || metrics(&h, "127.0.0.1:9091"),
        |m| m.samples.get(skipped) == Some(&0.0),
    );
    let status = c.node_status(1);
    assert!(
        !status.contains("Policy not enforced as written"),
        "{status}"
    );
}

#[test]
fn ipv6_support_decides_the_default_ipv6_pool() {
    let mut c = Cluster::new(2);
    let pools = |c: &Cluster| c.calicoctl(&["get", "ippools"]);
    // The harness sets FELIX_IPV6SUPPORT=false: unset it so FelixConfiguration decides.
    felix(&c, "default", json!({"ipv6Support": false}));
    c.start_agent_with(1, &[("FELIX_IPV6SUPPORT", "")]);
    let p = pools(&c);
    assert!(
        p.contains("default-ipv4-ippool") && !p.contains("default-ipv6-ippool"),
        "{p}"
    );
    felix(&c, "node.node2", json!({"ipv6Support": true}));
    c.start_agent_with(2, &[("FELIX_IPV6SUPPORT", "")]);
    let p = pools(&c);
    assert!(
        p.contains("default-ipv6-ippool"),
        "node2's own resource enables IPv6: {p}"
    );
}
