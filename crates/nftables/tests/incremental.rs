//! The incremental path against the real kernel (a throw-away lab namespace): a one-rule change
//! in one policy rewrites only that policy's chain (every other chain and rule keeps its
//! kernel handle), a membership change touches only that selector's sets, a new endpoint
//! touches its own chains and the dispatch maps, and a restarted dataplane adopts the table
//! (every chain keeps its handle). After each step the table equals, rule for rule and
//! element for element, what a full apply of the same program gives in a second namespace.

use std::collections::{BTreeMap, BTreeSet};

use calico_lab::{Host, Lab};
use calico_nftables::PolicyDataplane;
use calico_policy::compile;
use calico_policy::model::WorkloadEndpoint;
use calico_policy::model::{Action, LabelMap, Policy, PolicyModel, Port, Rule};
use calico_policy::program::HostProgram;
use serde_json::Value;

fn listing(ns: &Host) -> Value {
    let out = ns
        .exec_ok(&["nft", "-j", "-a", "list", "table", "inet", "calico-rs"])
        .expect("nft list");
    serde_json::from_str(&out).expect("json")
}

fn objects<'a>(v: &'a Value, kind: &str) -> Vec<&'a Value> {
    v["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|i| i.get(kind))
        .collect()
}

/// Chain name → chain handle.
fn chain_handles(v: &Value) -> BTreeMap<String, u64> {
    objects(v, "chain")
        .into_iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["handle"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Chain name → its rules' handles.
fn rule_handles(v: &Value) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in objects(v, "rule") {
        out.entry(r["chain"].as_str().unwrap().to_owned())
            .or_default()
            .push(r["handle"].as_u64().unwrap());
    }
    out
}

/// The table without handles and with set elements sorted: what must be equal between an
/// incrementally updated table and a freshly applied one.
fn contents(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for item in v["nftables"].as_array().unwrap() {
        let Some((kind, obj)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        if kind == "metainfo" || kind == "table" {
            continue;
        }
        let mut obj = obj.clone();
        let o = obj.as_object_mut().unwrap();
        o.remove("handle");
        if let Some(Value::Array(elems)) = o.get_mut("elem") {
            elems.sort_by_key(|e| e.to_string());
        }
        if kind == "rule" {
            // Rules keep their order within a chain: number them.
            out.insert(format!("{kind} {}", Value::Object(o.clone())));
        } else {
            out.insert(format!("{kind} {}", Value::Object(o.clone())));
        }
    }
    // Rule order inside a chain matters: add it as chain → list of rule texts.
    let mut per_chain: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in objects(v, "rule") {
        let mut r = r.clone();
        r.as_object_mut().unwrap().remove("handle");
        per_chain
            .entry(r["chain"].as_str().unwrap().to_owned())
            .or_default()
            .push(r.to_string());
    }
    for (c, rules) in per_chain {
        out.insert(format!("order {c}: {}", rules.join(" | ")));
    }
    out
}

fn endpoint(i: usize, role: &str) -> WorkloadEndpoint {
    WorkloadEndpoint {
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
    }
}

fn allow_port(port: u16, from: &str) -> Rule {
    let mut r = Rule::new(Action::Allow);
    r.protocol = Some("TCP".into());
    r.destination.ports = vec![Port::number(port)];
    r.source.selector = from.into();
    r
}

/// Two policies on different endpoints, each with a few rules.
fn model() -> PolicyModel {
    let mut m = PolicyModel::default();
    for (i, role) in ["web", "db", "web", "cache"].into_iter().enumerate() {
        m.workload_endpoints.push(endpoint(i, role));
    }
    let mut web = Policy::new("web", "role == 'web'");
    web.ingress = vec![allow_port(80, "all()"), allow_port(443, "all()")];
    let mut db = Policy::new("db", "role == 'db'");
    db.ingress = vec![allow_port(5432, "role == 'web'")];
    m.policies = vec![web, db];
    m
}

fn program(m: &PolicyModel) -> HostProgram {
    compile(m, Some("node1")).expect("compile")
}

/// A second namespace gets the same program in one full apply; both tables must be equal.
fn assert_same_as_full(ns: &Host, reference: &Host, p: &HostProgram) {
    let mut dp = PolicyDataplane::new_in(&reference.netns_path()).expect("dataplane");
    dp.apply(p).expect("full apply");
    let want = contents(&listing(reference));
    let got = contents(&listing(ns));
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "incremental table differs from a full apply\nmissing: {missing:#?}\nextra: {extra:#?}"
    );
}

#[test]
fn one_rule_change_rewrites_only_that_policys_chain() {
    let lab = Lab::new().expect("lab");
    let ns = lab.add_namespace("inc").expect("namespace");
    let reference = lab.add_namespace("full").expect("namespace");
    let mut dp = PolicyDataplane::new_in(&ns.netns_path()).expect("dataplane");

    let mut m = model();
    let first = dp.apply_changes(&program(&m)).expect("first apply");
    assert!(first.full, "nothing applied yet: the whole table");
    let before = listing(&ns);
    let (chains0, rules0) = (chain_handles(&before), rule_handles(&before));
    assert!(chains0.contains_key("pol:i:web") && chains0.contains_key("pol:i:db"));

    // Unchanged program: nothing sent.
    let same = dp.apply_changes(&program(&m)).expect("no-op");
    assert_eq!(same.messages, 0);

    // One more rule in policy web.
    m.policies[0].ingress.push(allow_port(8080, "all()"));
    let p = program(&m);
    let r = dp.apply_changes(&p).expect("one rule");
    assert!(!r.full);
    assert_eq!(
        r.chains,
        BTreeSet::from(["pol:i:web".to_string()]),
        "only the policy's chain is touched"
    );
    assert!(r.sets.is_empty(), "no set changed: {:?}", r.sets);
    let after = listing(&ns);
    let (chains1, rules1) = (chain_handles(&after), rule_handles(&after));
    assert_eq!(chains0, chains1, "every chain keeps its handle");
    for (chain, handles) in &rules0 {
        if chain == "pol:i:web" {
            continue;
        }
        assert_eq!(
            Some(handles),
            rules1.get(chain),
            "rules of {chain} were rewritten"
        );
    }
    let web_rules = &rules1["pol:i:web"];
    assert!(web_rules.len() > rules0["pol:i:web"].len());
    assert!(
        web_rules.iter().all(|h| !rules0["pol:i:web"].contains(h)),
        "the changed chain is rewritten"
    );
    assert!(after.to_string().contains("8080"));
    // The same seen through the chain-filtered netlink dump (what benchmarks poll).
    let comments = dp
        .socket()
        .rule_comments("calico-rs", "pol:i:web")
        .expect("rule comments");
    assert_eq!(comments.len(), web_rules.len(), "{comments:?}");
    assert!(
        comments
            .last()
            .is_some_and(|c| c == "policy web ingress rule 2"),
        "{comments:?}"
    );
    assert_same_as_full(&ns, &reference, &p);

    // Membership: endpoint 1 (db) becomes web. The `role == 'web'` set changes; the policy
    // chains do not; the endpoint's own chain (now policy web, not db) and tier chain do.
    m.workload_endpoints[3]
        .labels
        .insert("role".into(), "web".into());
    let p = program(&m);
    let r = dp.apply_changes(&p).expect("membership");
    assert!(!r.full);
    assert!(
        !r.chains.iter().any(|c| c.starts_with("pol:")),
        "policy chains untouched: {:?}",
        r.chains
    );
    assert!(
        r.chains.iter().all(|c| c.contains("cali30123456789")),
        "only endpoint 3's chains: {:?}",
        r.chains
    );
    assert!(!r.sets.is_empty() && r.sets.iter().all(|s| s.starts_with("s-")));
    assert_same_as_full(&ns, &reference, &p);

    // A pure set change: a web endpoint appears on another node (only a set member).
    let mut remote = endpoint(9, "web");
    remote.node = "node2".into();
    m.workload_endpoints.push(remote);
    let p = program(&m);
    let before = listing(&ns);
    let r = dp.apply_changes(&p).expect("remote member");
    assert!(r.chains.is_empty(), "no chain: {:?}", r.chains);
    // Two selectors match it, `all()` and `role == 'web'`: two sets, IPv4 and IPv6 halves,
    // each flushed and refilled.
    assert_eq!(r.sets.len(), 4, "{:?}", r.sets);
    assert!(r.messages <= 1 + 8, "{} messages", r.messages);
    let after = listing(&ns);
    assert_eq!(rule_handles(&before), rule_handles(&after));
    assert_same_as_full(&ns, &reference, &p);

    // A new local endpoint: its chains, the two dispatch maps and the sets it joins.
    m.workload_endpoints.push(endpoint(5, "cache"));
    let p = program(&m);
    let r = dp.apply_changes(&p).expect("new endpoint");
    assert!(
        r.chains.iter().all(|c| c.contains("cali50123456789")),
        "{:?}",
        r.chains
    );
    // The dispatch maps, and the `all()` set it joins (IPv4 and IPv6 halves).
    assert!(r.sets.contains("from-wl") && r.sets.contains("to-wl"));
    assert_eq!(r.sets.len(), 4, "{:?}", r.sets);
    assert_same_as_full(&ns, &reference, &p);

    // Restart: a new dataplane adopts the table; the first difference keeps every chain.
    let kept = chain_handles(&listing(&ns));
    drop(dp);
    let mut dp = PolicyDataplane::new_in(&ns.netns_path()).expect("dataplane");
    let (chains, sets) = dp.adopt_existing().expect("adopt");
    assert_eq!(chains, kept.len());
    assert!(sets > 0);
    // Meanwhile a policy went away: its chain is deleted, all others stay.
    m.policies.remove(1);
    let p = program(&m);
    let r = dp.apply_changes(&p).expect("first apply after restart");
    assert!(!r.full, "adopted, not replaced");
    let after = chain_handles(&listing(&ns));
    for (name, handle) in &kept {
        if name == "pol:i:db" {
            assert!(!after.contains_key(name), "removed policy's chain deleted");
        } else if let Some(h) = after.get(name) {
            assert_eq!(h, handle, "chain {name} kept its handle");
        }
    }
    assert_same_as_full(&ns, &reference, &p);

    // An endpoint goes: its map elements are removed before its chains are deleted (the
    // kernel refuses to delete a chain a map element still points at).
    let gone = m.workload_endpoints.remove(0);
    let p = program(&m);
    let r = dp.apply_changes(&p).expect("endpoint removed");
    assert!(!r.full, "removed by difference, not by a full replace");
    assert!(r.sets.contains("from-wl") && r.sets.contains("to-wl"));
    assert!(r.chains.contains(&format!("fw-{}", gone.interface_name)));
    let now = chain_handles(&listing(&ns));
    assert!(!now.keys().any(|c| c.contains(&gone.interface_name)));
    assert_same_as_full(&ns, &reference, &p);
}

/// A transaction of 100,000 rules is accepted and answered: the kernel's answer to a batch
/// must not overflow the socket (no acknowledgement per message; it used to fail with ENOBUFS
/// at 1,000 endpoints × 10,000 rules).
#[test]
fn a_batch_of_100k_rules_is_answered() {
    use calico_nftables::{Batch, ChainSpec, Expr, Family};
    let lab = Lab::new().expect("lab");
    let ns = lab.add_namespace("big").expect("namespace");
    let mut dp = PolicyDataplane::new_in(&ns.netns_path()).expect("dataplane");
    let mut b = Batch::new(Family::Inet);
    b.add_table("calico-rs");
    b.add_chain("calico-rs", &ChainSpec::regular("big"));
    for i in 0..100_000 {
        b.add_rule("calico-rs", "big", &[Expr::Counter], Some(&format!("r{i}")));
    }
    dp.send(&b).expect("a large batch is applied");
    let comments = dp
        .socket()
        .rule_comments("calico-rs", "big")
        .expect("rule comments");
    assert_eq!(comments.len(), 100_000);
    assert_eq!(comments.last().map(String::as_str), Some("r99999"));
    dp.remove().expect("remove");
}

/// Rendering from the previous program and table gives exactly what a fresh render gives,
/// for each kind of change the agent sees.
#[test]
fn rendering_from_the_previous_table_equals_a_fresh_render() {
    use calico_nftables::RenderSettings;
    use calico_nftables::render::{render_spec, render_spec_from};
    let mut models = vec![model()];
    let mut m = model();
    m.policies[0].ingress.push(allow_port(8080, "all()"));
    models.push(m.clone());
    m.workload_endpoints[3]
        .labels
        .insert("role".into(), "web".into());
    models.push(m.clone());
    let mut remote = endpoint(9, "web");
    remote.node = "node2".into();
    m.workload_endpoints.push(remote);
    models.push(m.clone());
    m.workload_endpoints.push(endpoint(5, "cache"));
    models.push(m.clone());
    m.policies.remove(1);
    models.push(m.clone());
    m.policies[0].ingress.clear();
    models.push(m);
    let programs: Vec<HostProgram> = models.iter().map(program).collect();
    for (i, a) in programs.iter().enumerate() {
        for b in &programs {
            let ta = render_spec(a, &RenderSettings::default()).expect("render");
            let fresh = render_spec(b, &RenderSettings::default()).expect("render");
            let reused =
                render_spec_from(b, &RenderSettings::default(), Some((a, &ta))).expect("render");
            assert!(
                fresh == reused,
                "from model {i}: differs from a fresh render"
            );
        }
    }
}

/// `b` as the incremental policy model hands it over after `a`: every set and rule list
/// equal to `a`'s is `a`'s own (the same `Arc`), only what changed is new.
fn shared_with(a: &HostProgram, b: &HostProgram) -> HostProgram {
    let mut out = b.clone();
    for (id, s) in out.sets.iter_mut() {
        if let Some(old) = a.sets.get(id).filter(|old| *old == s) {
            *s = old.clone();
        }
    }
    for (id, r) in out.rule_lists.iter_mut() {
        if let Some(old) = a.rule_lists.get(id).filter(|old| *old == r) {
            *r = old.clone();
        }
    }
    out
}

/// The patch path (only what the program changed, found by pointer) against the oracle, the
/// whole render: the previous table patched equals a fresh render of the new program, and
/// the patch's operations, run on the simulated kernel from the previous table, give it too.
/// Every pair of models where the endpoints stay the same must take the patch path.
#[test]
fn patching_the_previous_table_equals_a_fresh_render() {
    use calico_nftables::RenderSettings;
    use calico_nftables::render::{render_changes, render_spec};
    use calico_nftables::table::{diff_patch, same_table, simulate};
    let mut models = vec![model()];
    let mut m = model();
    // A rule added (a new selector: a new set), then one removed, then a rule list emptied.
    m.policies[0]
        .ingress
        .push(allow_port(8080, "role == 'cache'"));
    models.push(m.clone());
    m.policies[1].ingress[0] = allow_port(5433, "role == 'db'");
    models.push(m.clone());
    // A remote endpoint that enters a set, then changes its label (moves between sets).
    let mut remote = endpoint(9, "web");
    remote.node = "node2".into();
    m.workload_endpoints.push(remote);
    models.push(m.clone());
    let last = m.workload_endpoints.len() - 1;
    m.workload_endpoints[last]
        .labels
        .insert("role".into(), "cache".into());
    models.push(m.clone());
    m.policies[0].ingress.clear();
    models.push(m.clone());
    // A local endpoint changes its label (its chains change: the whole render).
    m.workload_endpoints[3]
        .labels
        .insert("role".into(), "web".into());
    models.push(m);
    let programs: Vec<HostProgram> = models.iter().map(program).collect();
    let settings = RenderSettings::default();
    let mut patched = 0;
    for (i, a) in programs.iter().enumerate() {
        let ta = render_spec(a, &settings).expect("render");
        // Shared as the model shares them, and not shared at all (a fresh compile).
        let pairs = programs
            .iter()
            .enumerate()
            .flat_map(|(j, b)| [(j, shared_with(a, b)), (j, b.clone())]);
        for (j, b) in pairs {
            let fresh = render_spec(&b, &settings).expect("render");
            let Some(patch) = render_changes(&b, (a, &ta)).expect("render") else {
                assert!(
                    a.endpoints != b.endpoints,
                    "{i} → {j}: same endpoints but no patch"
                );
                continue;
            };
            patched += 1;
            let mut t = ta.clone();
            t.apply_patch(&patch);
            assert!(t == fresh, "{i} → {j}: the patched table differs");
            let ops = diff_patch(&ta, &patch).expect("no set or chain re-created");
            let sim = simulate(&ta, &ops).expect("the kernel takes the patch's ops");
            assert!(same_table(&sim, &fresh), "{i} → {j}: the ops differ");
            if i == j {
                assert!(ops.is_empty(), "{i}: no change, nothing sent");
            }
        }
    }
    assert!(patched >= 60, "only {patched} pairs took the patch path");
}
