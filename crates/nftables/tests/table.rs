//! The rendered table in a throw-away namespace: what `nft` reads back, the replacement by a
//! restarted agent, and incremental set updates.

use calico_lab::{Host, Lab};
use calico_nftables::{ApplyError, NftError, PolicyDataplane};
use calico_policy::compile;
use calico_policy::model::{Action, LabelMap, Policy, PolicyModel, Rule, WorkloadEndpoint};
use calico_policy::sets::SetId;
use serde_json::Value;

fn listing(ns: &Host) -> Value {
    let out = ns
        .exec_ok(&["nft", "-j", "list", "table", "inet", "calico-rs"])
        .expect("nft list");
    serde_json::from_str(&out).expect("json")
}

fn names(v: &Value, kind: &str) -> Vec<String> {
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get(kind))
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect()
}

fn model(selector: &str) -> PolicyModel {
    let mut m = PolicyModel::default();
    for (i, role) in ["web", "db"].into_iter().enumerate() {
        m.workload_endpoints.push(WorkloadEndpoint {
            name: format!("w{i}"),
            node: "node1".into(),
            namespace: "default".into(),
            interface_name: format!("cali{i}0123456789"),
            labels: LabelMap::from([("role".to_string(), role.to_string())]),
            ips: vec![
                format!("10.65.0.{}/32", i + 1).parse().unwrap(),
                format!("fd00::{}/128", i + 1).parse().unwrap(),
            ],
            ..Default::default()
        });
    }
    let mut p = Policy::new("p", "all()");
    let mut r = Rule::new(Action::Allow);
    r.source.selector = selector.into();
    p.ingress = vec![r];
    m.policies.push(p);
    m
}

#[test]
fn restarted_agent_replaces_the_table_and_sets_update_alone() {
    let lab = Lab::new().expect("lab");
    let ns = lab.add_namespace("tbl").expect("namespace");
    let web = compile(&model("role == 'web'"), Some("node1")).unwrap();
    let mut dp = PolicyDataplane::new_in(&ns.netns_path()).expect("dataplane");
    dp.apply(&web).expect("apply");
    let v = listing(&ns);
    let chains = names(&v, "chain");
    for c in [
        "from-wl",
        "to-wl",
        "tw-cali00123456789",
        "fw-cali10123456789",
        "pol:i:p",
    ] {
        assert!(
            chains.iter().any(|x| x == c),
            "missing chain {c}: {chains:?}"
        );
    }
    assert_eq!(names(&v, "map"), vec!["from-wl", "to-wl"]);
    let web_set = web.sets.keys().next().expect("one set").clone();
    let sets = names(&v, "set");
    assert!(sets.contains(&format!("{web_set}-4")) && sets.contains(&format!("{web_set}-6")));
    let text = v.to_string();
    assert!(
        text.contains("10.65.0.1") && text.contains("fd00::1"),
        "{text}"
    );
    assert!(!text.contains("10.65.0.2"), "db is not web: {text}");

    // A new agent process (new socket) with another policy: one transaction replaces all.
    drop(dp);
    let db = compile(&model("role == 'db'"), Some("node1")).unwrap();
    let mut dp = PolicyDataplane::new_in(&ns.netns_path()).expect("dataplane");
    dp.apply(&db).expect("apply");
    let v = listing(&ns);
    let sets = names(&v, "set");
    assert!(
        !sets.iter().any(|s| s.starts_with(&web_set.0)),
        "stale set left: {sets:?}"
    );
    let db_set = db.sets.keys().next().unwrap().clone();
    assert!(sets.contains(&format!("{db_set}-4")));
    assert!(v.to_string().contains("10.65.0.2"));

    // Membership change: only that set is rewritten.
    let mut m = model("role == 'db'");
    m.workload_endpoints[0]
        .labels
        .insert("role".into(), "db".into());
    let both = compile(&m, Some("node1")).unwrap();
    assert_eq!(
        dp.update_sets(&both, std::slice::from_ref(&db_set))
            .expect("update"),
        4
    );
    let text = listing(&ns).to_string();
    assert!(
        text.contains("10.65.0.1") && text.contains("fd00::1"),
        "{text}"
    );

    // A set the table does not have: refused, named, nothing changed.
    let err = dp
        .update_sets(&both, &[SetId("s-unknown".into())])
        .expect_err("unknown set");
    match &err {
        ApplyError::Kernel(NftError::Rejected { what, errno }) => {
            assert!(what.contains("s-unknown-4"), "{what}");
            assert_eq!(*errno, 2);
        }
        other => panic!("unexpected {other}"),
    }

    dp.remove().expect("remove");
    let out = ns
        .exec(&["nft", "list", "table", "inet", "calico-rs"])
        .unwrap();
    assert!(!out.status.success(), "table still there");
    dp.remove().expect("removing twice is fine");
}

/// Host endpoint chains as `nft -j` reads them back: hooks, priorities, failsafe rules first,
/// and `notrack` in a doNotTrack policy's allow.
#[test]
fn host_endpoint_chains_read_back() {
    use calico_policy::model::{Direction, HostEndpoint};
    let lab = Lab::new().expect("lab");
    let ns = lab.add_namespace("hep").expect("namespace");
    let mut m = model("all()");
    m.host_endpoints.push(HostEndpoint {
        name: "n1-eth1".into(),
        node: "node1".into(),
        interface_name: Some("eth1".into()),
        labels: LabelMap::from([("hep".to_string(), String::new())]),
        ..Default::default()
    });
    let mut dnt = Policy::new("untracked", "has(hep)");
    dnt.do_not_track = true;
    dnt.apply_on_forward = true;
    dnt.types = vec![Direction::Ingress];
    dnt.ingress = vec![Rule::new(Action::Allow)];
    m.policies.push(dnt);
    let prog = compile(&m, Some("node1")).unwrap();
    let mut dp = PolicyDataplane::new_in(&ns.netns_path()).expect("dataplane");
    dp.apply(&prog).expect("apply");
    let v = listing(&ns);
    let items = v["nftables"].as_array().unwrap();
    let chain = |name: &str| {
        items
            .iter()
            .filter_map(|i| i.get("chain"))
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("chain {name} missing"))
            .clone()
    };
    for (name, hook, prio) in [
        ("hep-raw-in", "prerouting", -300),
        ("hep-raw-out", "output", -300),
        ("hep-prednat", "prerouting", -150),
        ("hep-in", "input", 1),
        ("hep-out", "output", 1),
        ("hep-fwd-in", "forward", 2),
        ("hep-fwd-out", "forward", 3),
    ] {
        let c = chain(name);
        assert_eq!(c["hook"], hook, "{name}");
        assert_eq!(c["prio"], prio, "{name}");
        assert_eq!(c["policy"], "accept", "{name}");
    }
    for name in [
        "fh-eth1",
        "th-eth1",
        "fhfw-eth1",
        "thfw-eth1",
        "fhpd-eth1",
        "fhu-eth1",
    ] {
        chain(name);
    }
    let rules: Vec<&Value> = items.iter().filter_map(|i| i.get("rule")).collect();
    let comments_of = |c: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r["chain"] == c)
            .map(|r| r["comment"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let fh = comments_of("fh-eth1");
    assert_eq!(
        fh.first().map(String::as_str),
        Some("failsafe inbound 6 22")
    );
    let th = comments_of("th-eth1");
    assert_eq!(
        th.first().map(String::as_str),
        Some("failsafe outbound 17 53")
    );
    assert!(
        comments_of("fhfw-eth1")
            .iter()
            .all(|c| !c.starts_with("failsafe"))
    );
    let untracked = rules
        .iter()
        .filter(|r| r["chain"] == "pol:i:untracked")
        .collect::<Vec<_>>();
    assert!(!untracked.is_empty());
    for r in untracked {
        let text = r["expr"].to_string();
        assert!(text.contains("\"notrack\""), "no notrack in {text}");
        assert!(text.contains("\"accept\""), "no accept in {text}");
    }
    dp.remove().expect("remove");
}
