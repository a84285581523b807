//! Property tests: the incremental set index equals recomputation and reports exactly what
//! changed; the compiled program agrees with a direct evaluation of the model; staged policies
//! never change enforcement; input order does not matter.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_policy::model::{
    Action, Direction, LabelMap, NamedPort, NetworkSet, Policy, PolicyModel, Port, Profile,
    Protocol, Rule, Tier, TierDefaultAction, WorkloadEndpoint,
};
use calico_policy::sets::{Member, SetIndex, SetKey, SetSource, SourceId};
use calico_policy::{Packet, Verdict, compile, verdict};
use calico_selector::Selector;
use common::*;
use ipnet::IpNet;
use proptest::prelude::*;

const SELECTORS: &[&str] = &[
    "all()",
    "app == 'a'",
    "app != 'a'",
    "has(env)",
    "env in {'prod', 'dev'}",
    "app == 'b' || env == 'prod'",
    "!has(app)",
];

fn label_map() -> impl Strategy<Value = LabelMap> {
    (
        prop::option::of(prop_oneof![Just("a"), Just("b"), Just("c")]),
        prop::option::of(prop_oneof![Just("prod"), Just("dev"), Just("test")]),
    )
        .prop_map(|(app, env)| {
            let mut m = LabelMap::new();
            if let Some(a) = app {
                m.insert("app".into(), a.into());
            }
            if let Some(e) = env {
                m.insert("env".into(), e.into());
            }
            m
        })
}

fn source() -> impl Strategy<Value = SetSource> {
    (
        label_map(),
        prop::collection::vec(0u8..4, 0..3),
        prop::collection::vec((0u16..3, prop::bool::ANY), 0..3),
    )
        .prop_map(|(labels, addrs, ports)| SetSource {
            labels,
            nets: addrs
                .into_iter()
                .map(|a| IpNet::from(IpAddr::from([10, 0, 0, a])))
                .collect(),
            ports: ports
                .into_iter()
                .map(|(p, udp)| NamedPort {
                    name: if p == 0 {
                        "http".into()
                    } else {
                        "metrics".into()
                    },
                    protocol: if udp { Protocol::UDP } else { Protocol::TCP },
                    port: 8000 + p,
                })
                .collect(),
        })
}

#[derive(Debug, Clone)]
enum Op {
    Upsert(u8, SetSource),
    Remove(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..5, source()).prop_map(|(i, s)| Op::Upsert(i, s)),
        1 => (0u8..5).prop_map(Op::Remove),
    ]
}

fn keys() -> Vec<SetKey> {
    let mut out = Vec::new();
    for s in SELECTORS {
        let sel = Selector::parse(s).unwrap();
        out.push(SetKey::Selector(sel.clone()));
        out.push(SetKey::NamedPort {
            selector: sel,
            protocol: Protocol::TCP,
            name: "http".into(),
        });
    }
    out
}

fn sid(i: u8) -> SourceId {
    SourceId::Workload {
        namespace: "ns".into(),
        name: format!("ep{i}"),
    }
}

fn snapshot(index: &SetIndex) -> BTreeMap<calico_policy::sets::SetId, BTreeSet<Member>> {
    index
        .set_ids()
        .map(|id| (id.clone(), index.members(id)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn incremental_index_equals_recomputation_and_reports_exactly_the_changed_sets(
        ops in prop::collection::vec(op(), 1..20)
    ) {
        let mut index = SetIndex::new();
        for k in keys() {
            index.ensure_set(k);
        }
        let mut current: BTreeMap<u8, SetSource> = BTreeMap::new();
        for op in ops {
            let before = snapshot(&index);
            let changes = match op {
                Op::Upsert(i, s) => {
                    current.insert(i, s.clone());
                    index.upsert_source(sid(i), s)
                }
                Op::Remove(i) => {
                    current.remove(&i);
                    index.remove_source(&sid(i))
                }
            };
            let after = snapshot(&index);
            // Same as building from scratch, with sets created after the sources.
            let mut fresh = SetIndex::new();
            for (i, s) in &current {
                fresh.upsert_source(sid(*i), s.clone());
            }
            for k in keys() {
                fresh.ensure_set(k);
            }
            prop_assert_eq!(&after, &snapshot(&fresh));
            // Reported changes are exactly the differences.
            let reported: BTreeMap<_, _> = changes.iter().map(|c| (c.id.clone(), c)).collect();
            prop_assert_eq!(reported.len(), changes.len(), "one change per set");
            for (id, members) in &after {
                let old = &before[id];
                let added: BTreeSet<Member> = members.difference(old).cloned().collect();
                let removed: BTreeSet<Member> = old.difference(members).cloned().collect();
                match reported.get(id) {
                    Some(c) => {
                        prop_assert_eq!(&c.added, &added);
                        prop_assert_eq!(&c.removed, &removed);
                        prop_assert!(!added.is_empty() || !removed.is_empty());
                    }
                    None => prop_assert!(added.is_empty() && removed.is_empty(), "unreported change in {}", id),
                }
            }
        }
    }
}

// ---- Compiled program vs. a direct reading of the model ----

const EPS: usize = 4;
const NETSET_CIDR: &str = "192.0.2.0/24";

fn ep_ip(i: usize) -> IpAddr {
    IpAddr::from([10, 0, 0, i as u8 + 1])
}

fn rule_strategy() -> impl Strategy<Value = Rule> {
    (
        prop_oneof![
            Just(Action::Allow),
            Just(Action::Deny),
            Just(Action::Pass),
            Just(Action::Log)
        ],
        prop::option::of(prop::sample::select(SELECTORS)),
        prop::option::of(prop::sample::select(SELECTORS)),
        prop::option::of(prop::collection::vec(
            prop_oneof![Just(80u16), Just(443)],
            1..3,
        )),
        prop::bool::ANY,
    )
        .prop_map(|(action, sel, not_sel, ports, named)| {
            let mut r = Rule::new(action);
            r.source.selector = sel.unwrap_or("").to_string();
            r.source.not_selector = not_sel.unwrap_or("").to_string();
            if let Some(ports) = ports {
                r.protocol = Some("TCP".into());
                r.destination.ports = ports.into_iter().map(Port::number).collect();
                if named {
                    r.destination.ports.push(Port::Named("http".into()));
                }
            }
            r
        })
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    (
        0u32..1000,
        prop::bool::ANY,
        prop::option::of(prop_oneof![Just(1.0f64), Just(2.0)]),
        prop::sample::select(SELECTORS),
        prop::collection::vec(rule_strategy(), 0..4),
        prop::bool::ANY,
    )
        .prop_map(|(n, in_t1, order, sel, rules, staged)| {
            let mut p = Policy::new(&format!("p{n}"), sel);
            if in_t1 {
                p.tier = "t1".into();
            }
            p.order = order;
            p.ingress = rules;
            p.types = vec![Direction::Ingress];
            p.staged = staged;
            p
        })
}

fn model_strategy() -> impl Strategy<Value = PolicyModel> {
    (
        prop::collection::vec(
            (
                label_map(),
                prop::bool::ANY,
                prop::option::of(8000u16..8003),
            ),
            EPS,
        ),
        label_map(),
        prop::collection::vec(policy_strategy(), 0..6),
        prop::bool::ANY,
    )
        .prop_map(|(eps, netset_labels, policies, t1_passes)| {
            let workload_endpoints = eps
                .into_iter()
                .enumerate()
                .map(|(i, (labels, profile, http))| WorkloadEndpoint {
                    name: format!("ep{i}"),
                    node: "n".into(),
                    namespace: "ns".into(),
                    interface_name: format!("cali{i}"),
                    labels,
                    ips: vec![IpNet::from(ep_ip(i))],
                    ports: http
                        .map(|port| NamedPort {
                            name: "http".into(),
                            protocol: Protocol::TCP,
                            port,
                        })
                        .into_iter()
                        .collect(),
                    profiles: if profile { vec!["open".into()] } else { vec![] },
                    ..Default::default()
                })
                .collect();
            let mut policies = policies;
            // Unique names (the model requires them).
            for (i, p) in policies.iter_mut().enumerate() {
                p.name = format!("{}-{i}", p.name);
            }
            PolicyModel {
                tiers: vec![Tier {
                    name: "t1".into(),
                    order: Some(10.0),
                    default_action: if t1_passes {
                        TierDefaultAction::Pass
                    } else {
                        TierDefaultAction::Deny
                    },
                }],
                policies,
                profiles: vec![Profile {
                    name: "open".into(),
                    labels_to_apply: LabelMap::new(),
                    ingress: vec![Rule::new(Action::Allow)],
                    egress: vec![Rule::new(Action::Allow)],
                }],
                workload_endpoints,
                network_sets: vec![NetworkSet {
                    name: "ns1".into(),
                    labels: netset_labels,
                    nets: vec![net(NETSET_CIDR)],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
}

/// Labels of whoever owns `addr`, if anyone (Calico's labels for these global resources are
/// the own labels plus generated ones; the selectors here only read `app` and `env`).
fn peer_labels(m: &PolicyModel, addr: IpAddr) -> Option<LabelMap> {
    for ep in &m.workload_endpoints {
        if ep.ips.iter().any(|n| n.contains(&addr)) {
            return Some(ep.labels.clone());
        }
    }
    for s in &m.network_sets {
        if s.nets.iter().any(|n| n.contains(&addr)) {
            return Some(s.labels.clone());
        }
    }
    None
}

fn sel_holds(text: &str, peer: &Option<LabelMap>) -> bool {
    let sel = Selector::parse(text).unwrap();
    peer.as_ref().is_some_and(|l| sel.matches(l))
}

/// Calico's semantics read straight from the model, for ingress to workload `target`.
fn direct_verdict(m: &PolicyModel, target: usize, p: &Packet) -> Verdict {
    let ep = &m.workload_endpoints[target];
    let peer = peer_labels(m, p.src);
    let rule_matches = |r: &Rule| {
        if r.protocol
            .as_ref()
            .is_some_and(|proto| Protocol::parse(proto) != Some(p.protocol))
        {
            return false;
        }
        if !r.source.selector.is_empty() && !sel_holds(&r.source.selector, &peer) {
            return false;
        }
        if !r.source.not_selector.is_empty() && sel_holds(&r.source.not_selector, &peer) {
            return false;
        }
        if !r.destination.ports.is_empty() {
            let dport = p.dst_port.unwrap_or(0);
            let ok = r.destination.ports.iter().any(|port| match port {
                Port::Range(a, b) => *a <= dport && dport <= *b,
                Port::Named(n) => ep
                    .ports
                    .iter()
                    .any(|np| &np.name == n && np.protocol == p.protocol && np.port == dport),
            });
            if !ok {
                return false;
            }
        }
        true
    };
    let mut tiers: Vec<(f64, String, TierDefaultAction)> = m
        .tiers
        .iter()
        .map(|t| {
            (
                t.order.unwrap_or(f64::INFINITY),
                t.name.clone(),
                t.default_action,
            )
        })
        .collect();
    tiers.push((1_000_000.0, "default".into(), TierDefaultAction::Deny));
    tiers.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    'tiers: for (_, tier, default_action) in &tiers {
        let mut ps: Vec<&Policy> = m
            .policies
            .iter()
            .filter(|p| {
                p.tier_name() == tier && Selector::parse(&p.selector).unwrap().matches(&ep.labels)
            })
            .collect();
        if ps.is_empty() {
            continue;
        }
        ps.sort_by(|a, b| {
            a.order
                .unwrap_or(f64::INFINITY)
                .total_cmp(&b.order.unwrap_or(f64::INFINITY))
                .then(a.name.cmp(&b.name))
        });
        let mut enforced = false;
        for pol in ps {
            if pol.staged {
                continue;
            }
            enforced = true;
            for r in &pol.ingress {
                if rule_matches(r) {
                    match r.action {
                        Action::Allow => return Verdict::Allow,
                        Action::Deny => return Verdict::Deny,
                        Action::Pass => continue 'tiers,
                        Action::Log => {}
                    }
                }
            }
        }
        if enforced && *default_action == TierDefaultAction::Deny {
            return Verdict::Deny;
        }
    }
    if ep.profiles.iter().any(|p| p == "open") {
        Verdict::Allow
    } else {
        Verdict::Deny
    }
}

fn packets() -> impl Strategy<Value = (usize, Packet)> {
    (
        0..EPS,
        prop_oneof![
            (0..EPS).prop_map(ep_ip),
            Just(IpAddr::from([192, 0, 2, 7])),
            Just(IpAddr::from([198, 51, 100, 1])),
        ],
        prop_oneof![Just(80u16), Just(443), Just(22), Just(8000), Just(8001)],
        prop::bool::ANY,
    )
        .prop_map(|(t, src, port, udp)| {
            let p = if udp {
                Packet::udp(src, 1234, ep_ip(t), port)
            } else {
                Packet::tcp(src, 1234, ep_ip(t), port)
            };
            (t, p)
        })
}

fn compiled_verdict(m: &PolicyModel, target: usize, p: &Packet) -> Verdict {
    let prog = compile(m, None).unwrap();
    let ep = &prog.endpoints[&wid("ns", &format!("ep{target}"))];
    verdict(ep, Direction::Ingress, &prog, p)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn compiled_programs_agree_with_the_model_read_directly(
        m in model_strategy(), pkts in prop::collection::vec(packets(), 1..6)
    ) {
        let prog = compile(&m, None).unwrap();
        for (t, p) in pkts {
            let ep = &prog.endpoints[&wid("ns", &format!("ep{t}"))];
            prop_assert_eq!(verdict(ep, Direction::Ingress, &prog, &p), direct_verdict(&m, t, &p), "packet {:?} to ep{}", p, t);
        }
    }

    #[test]
    fn staged_policies_never_change_what_is_enforced(
        m in model_strategy(), (t, p) in packets()
    ) {
        let mut unstaged_only = m.clone();
        unstaged_only.policies.retain(|p| !p.staged);
        prop_assert_eq!(compiled_verdict(&m, t, &p), compiled_verdict(&unstaged_only, t, &p));
    }

    #[test]
    fn the_order_resources_are_listed_in_does_not_matter(m in model_strategy(), seed in any::<u64>()) {
        let mut shuffled = m.clone();
        let n = shuffled.policies.len();
        if n > 1 {
            shuffled.policies.rotate_left((seed as usize) % n);
            shuffled.policies.reverse();
        }
        shuffled.workload_endpoints.reverse();
        prop_assert_eq!(compile(&m, None).unwrap(), compile(&shuffled, None).unwrap());
    }
}

// ---- Namespaces, both directions: compiled program vs. Calico's rules read directly ----

const NAMESPACES: &[&str] = &["ns1", "ns2"];
const NS_SELECTORS: &[&str] = &["", "", "team == 'x'", "all()", "global()", "!has(team)"];

struct Entity {
    labels: LabelMap,
    namespace: Option<String>,
    namespace_labels: LabelMap,
    ports: Vec<NamedPort>,
}

fn entity(m: &PolicyModel, addr: IpAddr) -> Option<Entity> {
    for ep in &m.workload_endpoints {
        if ep.ips.iter().any(|n| n.contains(&addr)) {
            return Some(Entity {
                labels: ep.labels.clone(),
                namespace: Some(ep.namespace.clone()),
                namespace_labels: ep.namespace_labels.clone(),
                ports: ep.ports.clone(),
            });
        }
    }
    for s in &m.network_sets {
        if s.nets.iter().any(|n| n.contains(&addr)) {
            return Some(Entity {
                labels: s.labels.clone(),
                namespace: None,
                namespace_labels: LabelMap::new(),
                ports: Vec::new(),
            });
        }
    }
    None
}

/// One side of a rule, per Calico's documentation: `selector` picks endpoints and network sets
/// by label; `namespaceSelector` picks their namespace (`global()`: not namespaced); in a
/// namespaced policy without one, a selector or notSelector means "in the policy's namespace";
/// `notSelector` excludes by label anywhere; named ports are the destination's declared ports.
fn side_ok(
    e: &calico_policy::model::EntityRule,
    who: &Option<Entity>,
    port: Option<u16>,
    protocol: Protocol,
    policy_ns: Option<&str>,
) -> bool {
    let sel = |t: &str, l: &LabelMap| Selector::parse(t).unwrap().matches(l);
    if !e.namespace_selector.is_empty() {
        let ok = match who {
            None => false,
            // Calico evaluates a namespaceSelector over the namespace labels the peer inherits;
            // a non-namespaced peer inherits none, so `!has(team)` matches it, while `all()`
            // means "namespaced" and `global()` "not namespaced".
            Some(w) => match (&w.namespace, e.namespace_selector.as_str()) {
                (None, "global()") => true,
                (None, "all()") | (Some(_), "global()") => false,
                (None, ns_sel) => sel(ns_sel, &LabelMap::new()),
                (Some(_), ns_sel) => sel(ns_sel, &w.namespace_labels),
            },
        };
        if !ok {
            return false;
        }
    } else if let Some(ns) = policy_ns
        && (!e.selector.is_empty() || !e.not_selector.is_empty())
        && who
            .as_ref()
            .is_none_or(|w| w.namespace.as_deref() != Some(ns))
    {
        return false;
    }
    if !e.selector.is_empty() && !who.as_ref().is_some_and(|w| sel(&e.selector, &w.labels)) {
        return false;
    }
    if !e.not_selector.is_empty()
        && who
            .as_ref()
            .is_some_and(|w| sel(&e.not_selector, &w.labels))
    {
        return false;
    }
    if !e.ports.is_empty() {
        let Some(port) = port else { return false };
        let ok = e.ports.iter().any(|p| match p {
            Port::Range(a, b) => *a <= port && port <= *b,
            Port::Named(n) => who.as_ref().is_some_and(|w| {
                w.ports
                    .iter()
                    .any(|np| &np.name == n && np.protocol == protocol && np.port == port)
            }),
        });
        if !ok {
            return false;
        }
    }
    true
}

fn direct_verdict_2(m: &PolicyModel, target: usize, dir: Direction, p: &Packet) -> Verdict {
    let ep = &m.workload_endpoints[target];
    let (src, dst) = (entity(m, p.src), entity(m, p.dst));
    let mut ps: Vec<&Policy> = m
        .policies
        .iter()
        .filter(|pol| {
            !pol.staged
                && pol.effective_types().contains(&dir)
                && pol.namespace.as_ref().is_none_or(|ns| *ns == ep.namespace)
                && Selector::parse(&pol.selector).unwrap().matches(&ep.labels)
        })
        .collect();
    if ps.is_empty() {
        return if ep.profiles.is_empty() {
            Verdict::Deny
        } else {
            Verdict::Allow
        };
    }
    ps.sort_by(|a, b| {
        a.order
            .unwrap_or(f64::INFINITY)
            .total_cmp(&b.order.unwrap_or(f64::INFINITY))
            .then(a.qualified_name().cmp(&b.qualified_name()))
    });
    for pol in ps {
        let rules = match dir {
            Direction::Ingress => &pol.ingress,
            Direction::Egress => &pol.egress,
        };
        for r in rules {
            let proto_ok = r
                .protocol
                .as_ref()
                .is_none_or(|t| Protocol::parse(t) == Some(p.protocol));
            let ns = pol.namespace.as_deref();
            if proto_ok
                && side_ok(&r.source, &src, p.src_port, p.protocol, ns)
                && side_ok(&r.destination, &dst, p.dst_port, p.protocol, ns)
            {
                match r.action {
                    Action::Allow => return Verdict::Allow,
                    Action::Deny => return Verdict::Deny,
                    // Pass from the only tier leads to the profiles.
                    Action::Pass => {
                        return if ep.profiles.is_empty() {
                            Verdict::Deny
                        } else {
                            Verdict::Allow
                        };
                    }
                    Action::Log => {}
                }
            }
        }
    }
    Verdict::Deny
}

fn side_strategy(with_ports: bool) -> impl Strategy<Value = calico_policy::model::EntityRule> {
    (
        prop::option::of(prop::sample::select(SELECTORS)),
        prop::option::of(prop::sample::select(SELECTORS)),
        prop::sample::select(NS_SELECTORS),
        prop::option::of(prop::collection::vec(
            prop_oneof![Just(Port::number(80)), Just(Port::Named("http".into()))],
            1..3,
        )),
    )
        .prop_map(
            move |(sel, not_sel, ns_sel, ports)| calico_policy::model::EntityRule {
                selector: sel.unwrap_or("").to_string(),
                not_selector: not_sel.unwrap_or("").to_string(),
                namespace_selector: ns_sel.to_string(),
                ports: if with_ports {
                    ports.unwrap_or_default()
                } else {
                    Vec::new()
                },
                ..Default::default()
            },
        )
}

fn rule_2() -> impl Strategy<Value = Rule> {
    (
        prop_oneof![
            Just(Action::Allow),
            Just(Action::Deny),
            Just(Action::Pass),
            Just(Action::Log)
        ],
        side_strategy(false),
        side_strategy(true),
        prop::bool::ANY,
    )
        .prop_map(|(action, source, destination, peer_is_source)| {
            let mut r = Rule::new(action);
            if !destination.ports.is_empty() {
                r.protocol = Some("TCP".into());
            }
            // Keep the endpoint's own side free of selectors most of the time, as real rules do.
            r.source = source;
            r.destination = destination;
            if peer_is_source {
                r.destination.selector.clear();
                r.destination.not_selector.clear();
                r.destination.namespace_selector.clear();
            }
            r
        })
}

fn namespaced_model() -> impl Strategy<Value = PolicyModel> {
    let ep = (
        label_map(),
        0usize..2,
        prop::option::of(8000u16..8002),
        prop::bool::ANY,
    );
    let pol = (
        0u32..100,
        prop::option::of(0usize..2),
        prop::option::of(prop_oneof![Just(1.0f64), Just(2.0)]),
        prop::sample::select(SELECTORS),
        prop::collection::vec(rule_2(), 0..3),
        prop::collection::vec(rule_2(), 0..3),
    );
    (
        prop::collection::vec(ep, EPS),
        prop::collection::vec(pol, 0..5),
        label_map(),
    )
        .prop_map(|(eps, pols, netset_labels)| {
            let team = |ns: usize| {
                if ns == 0 {
                    labels(&[("team", "x")])
                } else {
                    LabelMap::new()
                }
            };
            PolicyModel {
                workload_endpoints: eps
                    .into_iter()
                    .enumerate()
                    .map(|(i, (labels, ns, http, profile))| WorkloadEndpoint {
                        name: format!("ep{i}"),
                        node: "n".into(),
                        namespace: NAMESPACES[ns].into(),
                        namespace_labels: team(ns),
                        interface_name: format!("cali{i}"),
                        labels,
                        ips: vec![IpNet::from(ep_ip(i))],
                        ports: http
                            .map(|port| NamedPort {
                                name: "http".into(),
                                protocol: Protocol::TCP,
                                port,
                            })
                            .into_iter()
                            .collect(),
                        profiles: if profile { vec!["open".into()] } else { vec![] },
                        ..Default::default()
                    })
                    .collect(),
                policies: pols
                    .into_iter()
                    .enumerate()
                    .map(|(i, (n, ns, order, sel, ingress, egress))| {
                        let mut p = Policy::new(&format!("p{n}-{i}"), sel);
                        p.namespace = ns.map(|n| NAMESPACES[n].to_string());
                        p.order = order;
                        p.ingress = ingress;
                        p.egress = egress;
                        p
                    })
                    .collect(),
                profiles: vec![Profile {
                    name: "open".into(),
                    labels_to_apply: LabelMap::new(),
                    ingress: vec![Rule::new(Action::Allow)],
                    egress: vec![Rule::new(Action::Allow)],
                }],
                network_sets: vec![NetworkSet {
                    name: "world".into(),
                    labels: netset_labels,
                    nets: vec![net(NETSET_CIDR)],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
}

fn peer_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0..EPS).prop_map(ep_ip),
        Just(IpAddr::from([192, 0, 2, 7])),
        Just(IpAddr::from([198, 51, 100, 1])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn namespaced_policies_in_both_directions_agree_with_the_model_read_directly(
        m in namespaced_model(),
        cases in prop::collection::vec(
            (0..EPS, prop::bool::ANY, peer_addr(), prop_oneof![Just(80u16), Just(8000), Just(8001), Just(22)]),
            1..6,
        )
    ) {
        let prog = compile(&m, None).unwrap();
        for (t, is_ingress, peer, port) in cases {
            let (dir, p) = if is_ingress {
                (Direction::Ingress, Packet::tcp(peer, 1234, ep_ip(t), port))
            } else {
                (Direction::Egress, Packet::tcp(ep_ip(t), 1234, peer, port))
            };
            let ep = &prog.endpoints[&wid(&m.workload_endpoints[t].namespace, &format!("ep{t}"))];
            prop_assert_eq!(
                verdict(ep, dir, &prog, &p),
                direct_verdict_2(&m, t, dir, &p),
                "{:?} {:?} ep{}", dir, p, t
            );
        }
    }
}
