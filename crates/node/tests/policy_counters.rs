//! `calicoctl node policy` against the real agent's table: the order of tiers, policies,
//! profiles and fallthrough for a workload, and per-rule counters that move by exactly the
//! packets real traffic sent through each rule.
//!
//! The server `srv` has a tier `security` (policy `security.guard`: Deny ICMP from
//! `role=bad`, then Pass) before the default tier (policy `srv-allow`: Allow ICMP from
//! `role=ok`, Allow TCP 7777, which nothing uses). Each probe is a fresh ping (`-c1`, its own
//! ICMP id, hence a new connection judged by the chains) or a fresh TCP connection. See
//! `policy_support` for the topology.

mod policy_support;

use std::collections::BTreeMap;

use policy_support::{
    PolicyLab, Workload, eventually, namespace_profile, pings, tcp_connects, tcp_connects_from,
};
use serde_json::Value;

/// (step, tier, kind, name, rule, action) → packets, for one direction of the view.
type Rows = BTreeMap<(u64, String, String, String, Option<u64>, String), u64>;

/// `calicoctl node policy --interface <w's> -o json`, ingress direction, as [`Rows`], plus
/// the rows in order.
fn ingress(lab: &PolicyLab, w: &Workload) -> (Rows, Vec<String>) {
    let (ok, out, err) = lab.calicoctl(&["node", "policy", "--interface", &w.iface, "-o", "json"]);
    assert!(ok, "calicoctl node policy failed: {err}");
    let views: Value = serde_json::from_str(&out).expect("json");
    let views = views.as_array().expect("a list of endpoints");
    assert_eq!(views.len(), 1, "{out}");
    assert_eq!(views[0]["interface"], w.iface.as_str());
    assert_eq!(views[0]["kind"], "workload");
    let dir = views[0]["directions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["direction"] == "ingress"))
        .expect("an ingress direction");
    assert_eq!(dir["chain"], format!("tw-{}", w.iface).as_str());
    let mut rows = Rows::new();
    let mut order = Vec::new();
    for r in dir["rows"].as_array().expect("rows") {
        let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        let key = (
            r["step"].as_u64().expect("step"),
            s("tier"),
            s("kind"),
            s("name"),
            r["rule"].as_u64(),
            s("action"),
        );
        order.push(format!(
            "{} {} {} {} {} {}",
            key.0,
            key.1,
            key.2,
            key.3,
            key.4.map_or("-".into(), |i| i.to_string()),
            key.5
        ));
        rows.insert(key, r["packets"].as_u64().expect("packets"));
    }
    (rows, order)
}

fn key(
    step: u64,
    tier: &str,
    kind: &str,
    name: &str,
    rule: Option<u64>,
    action: &str,
) -> (u64, String, String, String, Option<u64>, String) {
    (
        step,
        tier.into(),
        kind.into(),
        name.into(),
        rule,
        action.into(),
    )
}

#[test]
fn node_policy_shows_the_order_and_counts_real_packets_per_rule() {
    let mut lab = PolicyLab::new();
    lab.apply_yaml(&[
        namespace_profile("app", &[]),
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: security\nspec:\n  order: 100\n"
            .to_string(),
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: security.guard\n\
         spec:\n  tier: security\n  selector: app == 'srv'\n  types: [Ingress]\n  ingress:\n  \
         - action: Deny\n    protocol: ICMP\n    source:\n      selector: role == 'bad'\n  \
         - action: Pass\n"
            .to_string(),
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: srv-allow\n\
         spec:\n  selector: app == 'srv'\n  types: [Ingress]\n  ingress:\n  \
         - action: Allow\n    protocol: ICMP\n    source:\n      selector: role == 'ok'\n  \
         - action: Allow\n    protocol: TCP\n    destination:\n      ports: [7777]\n"
            .to_string(),
    ]);
    // No agent yet, no table: the command says so instead of showing nothing.
    let (ok, _, err) = lab.calicoctl(&["node", "policy"]);
    assert!(!ok);
    assert!(
        err.starts_with("no table inet calico-rs on this host"),
        "{err}"
    );
    lab.start_agent();
    let srv = lab.add_workload("srv", "app", "srv", "10.65.0.30", &[("app", "srv")]);
    let good = lab.add_workload("good", "app", "good", "10.65.0.31", &[("role", "ok")]);
    let bad = lab.add_workload("bad", "app", "bad", "10.65.0.32", &[("role", "bad")]);
    lab.serve_tcp(&srv, 8080);
    eventually("good pings srv", &lab, || pings(&good, &srv));
    eventually("bad is denied", &lab, || !pings(&bad, &srv));

    let (before, order) = ingress(&lab, &srv);
    // Calico's evaluation order, as the kernel holds it: the security tier, then the
    // default tier, each ending in its drop; the profile and the fallthrough after them.
    assert_eq!(
        order,
        vec![
            "1 security policy security.guard 0 Deny",
            "1 security policy security.guard 1 Pass",
            "1 security end of tier security - Deny",
            "2 default policy srv-allow 0 Allow",
            "2 default policy srv-allow 1 Allow",
            "2 default end of tier default - Deny",
            "3 - profile kns.app 0 Allow",
            "4 - fallthrough no policy or profile allowed - Deny",
        ],
        "{before:#?}"
    );

    // Traffic: 4 allowed pings, 3 denied pings, 2 TCP connections no rule allows.
    for _ in 0..4 {
        assert!(pings(&good, &srv), "good -> srv ping allowed");
    }
    for _ in 0..3 {
        assert!(!pings(&bad, &srv), "bad -> srv ping denied");
    }
    for _ in 0..2 {
        assert!(
            !tcp_connects(&good, &srv, 8080),
            "good -> srv:8080 denied (end of the default tier)"
        );
    }
    let (after, _) = ingress(&lab, &srv);
    let delta = |k: &(u64, String, String, String, Option<u64>, String)| {
        after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0)
    };
    let deny_bad = key(1, "security", "policy", "security.guard", Some(0), "Deny");
    let pass = key(1, "security", "policy", "security.guard", Some(1), "Pass");
    let end_security = key(1, "security", "end of tier", "security", None, "Deny");
    let allow_ok = key(2, "default", "policy", "srv-allow", Some(0), "Allow");
    let allow_7777 = key(2, "default", "policy", "srv-allow", Some(1), "Allow");
    let end_default = key(2, "default", "end of tier", "default", None, "Deny");
    assert_eq!(delta(&deny_bad), 3, "denied pings counted on the Deny rule");
    assert_eq!(
        delta(&allow_ok),
        4,
        "allowed pings counted on the Allow rule"
    );
    assert_eq!(delta(&allow_7777), 0, "nothing was sent to 7777");
    assert_eq!(delta(&end_security), 0, "the security tier passes the rest");
    // Each TCP attempt is at least one SYN (a retransmission within the 1 s timeout adds
    // one): Pass in the security tier, then the default tier's end-of-tier drop.
    let syns = delta(&end_default);
    assert!((2..=4).contains(&syns), "end of default tier: {syns} SYNs");
    assert_eq!(
        delta(&pass),
        4 + syns,
        "the Pass rule saw the pings and the SYNs"
    );

    // The table layout and the lookup by endpoint name through the datastore.
    let (ok, table, err) = lab.calicoctl(&["node", "policy", "--endpoint", &srv.name, "-n", "app"]);
    assert!(ok, "{err}");
    eprintln!(
        "calicoctl node policy --endpoint {} -n app:\n{table}",
        srv.name
    );
    assert!(
        table.starts_with(&format!(
            "WorkloadEndpoint app/{} (interface {}), ingress (chain tw-{}):\nSTEP ",
            srv.name, srv.iface, srv.iface
        )),
        "{table}"
    );
    let allow_line = table
        .lines()
        .find(|l| l.contains("srv-allow") && l.split_whitespace().nth(4) == Some("0"))
        .expect("srv-allow rule 0 row");
    let cells: Vec<&str> = allow_line.split_whitespace().collect();
    assert_eq!(
        cells[..6],
        ["2", "default", "policy", "srv-allow", "0", "Allow"]
    );
    assert_eq!(cells[6], after[&allow_ok].to_string());
    // Errors name what is missing.
    let (ok, _, err) = lab.calicoctl(&["node", "policy", "--interface", "calinope"]);
    assert!(!ok);
    assert!(err.contains("\"calinope\" has no policy chains"), "{err}");
    let (ok, _, err) = lab.calicoctl(&["node", "policy", "--endpoint", "nope"]);
    assert!(!ok);
    assert!(
        err.contains("no WorkloadEndpoint or HostEndpoint named \"nope\""),
        "{err}"
    );
}

/// `(kind, name, rule, action)` → packets of one direction of a host endpoint's view.
fn host_rows(lab: &PolicyLab, endpoint: &str, direction: &str) -> BTreeMap<String, u64> {
    let (ok, out, err) = lab.calicoctl(&["node", "policy", "--endpoint", endpoint, "-o", "json"]);
    assert!(ok, "calicoctl node policy --endpoint {endpoint}: {err}");
    let views: Value = serde_json::from_str(&out).expect("json");
    let view = &views[0];
    assert_eq!(view["kind"], "host", "{out}");
    assert_eq!(view["interface"], "eth1", "{out}");
    assert_eq!(
        view["endpoint"],
        format!("HostEndpoint {endpoint}").as_str()
    );
    let dir = view["directions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["direction"] == direction))
        .unwrap_or_else(|| panic!("no {direction} direction in {out}"));
    dir["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let rule = r["rule"].as_u64().map_or("-".into(), |i| i.to_string());
            (
                format!(
                    "{} {} {} {}",
                    r["kind"].as_str().unwrap_or("?"),
                    r["name"].as_str().unwrap_or("?"),
                    rule,
                    r["action"].as_str().unwrap_or("?")
                ),
                r["packets"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn node_policy_shows_a_host_endpoint_with_failsafe_and_rule_counters() {
    let mut lab = PolicyLab::new();
    let client = lab
        .lab
        .add_host("client", "192.168.33.50/24")
        .expect("client host");
    lab.apply_yaml(&[
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: node1-eth1\n  \
         labels:\n    role: node\nspec:\n  node: node1\n  interfaceName: eth1\n  \
         expectedIPs: [192.168.33.11]\n"
            .to_string(),
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: hep-guard\n\
         spec:\n  selector: role == 'node'\n  types: [Ingress]\n  ingress:\n  \
         - action: Deny\n    protocol: TCP\n    destination:\n      ports: [9999]\n  \
         - action: Allow\n    protocol: TCP\n    destination:\n      ports: [8088]\n"
            .to_string(),
    ]);
    lab.start_agent();
    let node = lab.node.clone();
    for port in [22, 8088, 9999, 7000] {
        lab.serve_tcp_in(&node, port);
    }
    let node_ip = node.ip();
    eventually("the host endpoint policy drops 9999", &lab, || {
        !tcp_connects_from(&client, node_ip, 9999)
    });

    let before = host_rows(&lab, "node1-eth1", "ingress");
    let names: Vec<&str> = before.keys().map(String::as_str).collect();
    for want in [
        "failsafe inbound 6 22 - Allow",
        "policy hep-guard 0 Deny",
        "policy hep-guard 1 Allow",
        "end of tier default - Deny",
    ] {
        assert!(names.contains(&want), "no row {want:?} in {names:#?}");
    }
    assert!(tcp_connects_from(&client, node_ip, 22), "failsafe 22");
    assert!(tcp_connects_from(&client, node_ip, 8088), "allowed 8088");
    assert!(!tcp_connects_from(&client, node_ip, 9999), "denied 9999");
    assert!(!tcp_connects_from(&client, node_ip, 7000), "no rule: 7000");
    let after = host_rows(&lab, "node1-eth1", "ingress");
    let delta = |k: &str| after[k] - before[k];
    // One SYN per allowed connection (the rest is established); a dropped SYN may be
    // retransmitted once within the 1 s timeout.
    assert_eq!(delta("failsafe inbound 6 22 - Allow"), 1);
    assert_eq!(delta("policy hep-guard 1 Allow"), 1);
    assert!(
        (1..=2).contains(&delta("policy hep-guard 0 Deny")),
        "{after:#?}"
    );
    assert!(
        (1..=2).contains(&delta("end of tier default - Deny")),
        "{after:#?}"
    );
    assert_eq!(delta("failsafe inbound 6 179 - Allow"), 0);
}
