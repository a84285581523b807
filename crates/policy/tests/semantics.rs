//! Calico's documented policy semantics, checked through the compiler and the reference
//! evaluator.

mod common;

use calico_policy::model::{
    Action, Direction, FailsafePort, IcmpFields, IpVersion, NetworkSet, Policy, PolicyModel, Port,
    Protocol, ServiceAccountMatch, Tier, TierDefaultAction,
};
use calico_policy::program::{EndOfTier, Fallthrough};
use calico_policy::verdict::{DecidedBy, Outcome, evaluate};
use calico_policy::{CompileError, Packet, Verdict};
use common::*;

const A: &str = "10.0.0.1";
const B: &str = "10.0.0.2";
const C: &str = "10.0.0.3";

fn tcp(src: &str, dst: &str, port: u16) -> Packet {
    Packet::tcp(ip(src), 40000, ip(dst), port)
}

fn two_workloads() -> PolicyModel {
    PolicyModel {
        workload_endpoints: vec![
            workload("prod", "a", A, &[("app", "frontend")]),
            workload("prod", "b", B, &[("app", "db")]),
        ],
        ..Default::default()
    }
}

#[test]
fn no_policy_and_no_profile_means_deny() {
    let prog = build(&two_workloads());
    assert_eq!(
        ingress(&prog, &wid("prod", "b"), &tcp(A, B, 5432)),
        Verdict::Deny
    );
    assert_eq!(
        egress(&prog, &wid("prod", "a"), &tcp(A, B, 5432)),
        Verdict::Deny
    );
}

#[test]
fn endpoints_without_policy_fall_back_to_their_profiles() {
    let mut m = two_workloads();
    m.profiles.push(allow_all_profile("kns.prod"));
    m.workload_endpoints[1].profiles = vec!["kns.prod".into()];
    let prog = build(&m);
    assert_eq!(
        ingress(&prog, &wid("prod", "b"), &tcp(A, B, 5432)),
        Verdict::Allow
    );
    // The other endpoint has no profile.
    assert_eq!(
        ingress(&prog, &wid("prod", "a"), &tcp(B, A, 80)),
        Verdict::Deny
    );
}

#[test]
fn an_applicable_policy_ends_its_tier_with_a_drop_before_the_profiles() {
    let mut m = two_workloads();
    m.profiles.push(allow_all_profile("kns.prod"));
    m.workload_endpoints[1].profiles = vec!["kns.prod".into()];
    m.policies.push(ingress_policy(
        "db-from-frontend",
        "app == 'db'",
        vec![from_selector(Action::Allow, "app == 'frontend'")],
    ));
    let prog = build(&m);
    let b = wid("prod", "b");
    assert_eq!(ingress(&prog, &b, &tcp(A, B, 5432)), Verdict::Allow);
    // From an unknown address: no rule matches, the default tier drops, the profile is not reached.
    let t = evaluate(&prog.endpoints[&b].ingress, &prog, &tcp(C, B, 5432));
    assert_eq!(t.outcome, Outcome::Deny);
    assert_eq!(
        t.decided_by,
        DecidedBy::EndOfTier {
            tier: "default".into()
        }
    );
    // Egress has no applicable policy (types default to Ingress): the profile decides.
    assert_eq!(egress(&prog, &b, &tcp(B, C, 53)), Verdict::Allow);
}

#[test]
fn a_tier_with_no_applicable_policy_does_not_drop() {
    let mut m = two_workloads();
    m.tiers.push(Tier {
        name: "security".into(),
        order: Some(100.0),
        default_action: TierDefaultAction::Deny,
    });
    let mut p = ingress_policy("security.only-frontend", "app == 'frontend'", vec![]);
    p.tier = "security".into();
    m.policies.push(p);
    m.policies.push(ingress_policy(
        "allow-db",
        "app == 'db'",
        vec![rule(Action::Allow)],
    ));
    let prog = build(&m);
    // b is not selected by the security tier's policy: the tier is skipped for it.
    assert_eq!(
        ingress(&prog, &wid("prod", "b"), &tcp(C, B, 1)),
        Verdict::Allow
    );
    assert_eq!(prog.endpoints[&wid("prod", "b")].ingress.tiers.len(), 1);
    // a is selected by a policy with no rules: end of the security tier drops.
    assert_eq!(
        ingress(&prog, &wid("prod", "a"), &tcp(C, A, 1)),
        Verdict::Deny
    );
}

#[test]
fn pass_skips_to_the_next_tier_and_deny_in_an_earlier_tier_wins() {
    let mut m = two_workloads();
    m.tiers.push(Tier {
        name: "platform".into(),
        order: Some(10.0),
        default_action: TierDefaultAction::Deny,
    });
    let mut platform = Policy::new("platform.guard", "all()");
    platform.tier = "platform".into();
    platform.ingress = vec![
        {
            let mut r = from_selector(Action::Deny, "app == 'frontend'");
            r.protocol = Some("TCP".into());
            r.destination.ports = vec![Port::number(22)];
            r
        },
        rule(Action::Pass),
    ];
    m.policies.push(platform);
    m.policies.push(ingress_policy(
        "allow-all",
        "all()",
        vec![rule(Action::Allow)],
    ));
    let prog = build(&m);
    let b = wid("prod", "b");
    assert_eq!(ingress(&prog, &b, &tcp(A, B, 22)), Verdict::Deny);
    let t = evaluate(&prog.endpoints[&b].ingress, &prog, &tcp(A, B, 80));
    assert_eq!(t.outcome, Outcome::Allow);
    assert_eq!(
        t.decided_by,
        DecidedBy::PolicyRule {
            tier: "default".into(),
            policy: "allow-all".into(),
            rule: 0
        }
    );
}

#[test]
fn a_tier_whose_default_action_is_pass_continues_when_nothing_matches() {
    let mut m = two_workloads();
    m.tiers.push(Tier {
        name: "observe".into(),
        order: Some(1.0),
        default_action: TierDefaultAction::Pass,
    });
    let mut p = ingress_policy(
        "observe.nothing",
        "all()",
        vec![from_selector(Action::Deny, "app == 'nobody'")],
    );
    p.tier = "observe".into();
    m.policies.push(p);
    m.policies.push(ingress_policy(
        "allow-all",
        "all()",
        vec![rule(Action::Allow)],
    ));
    let prog = build(&m);
    let chain = &prog.endpoints[&wid("prod", "b")].ingress;
    assert_eq!(chain.tiers[0].end_of_tier, EndOfTier::Pass);
    assert_eq!(
        ingress(&prog, &wid("prod", "b"), &tcp(A, B, 80)),
        Verdict::Allow
    );
}

#[test]
fn policies_run_by_order_then_name_and_unordered_ones_last() {
    let mut m = two_workloads();
    let mut deny = ingress_policy("z-deny", "all()", vec![rule(Action::Deny)]);
    deny.order = Some(10.0);
    let mut allow = ingress_policy("a-allow", "all()", vec![rule(Action::Allow)]);
    allow.order = Some(20.0);
    let unordered = ingress_policy("0-first-by-name", "all()", vec![rule(Action::Allow)]);
    let mut same_order = ingress_policy("b-allow", "all()", vec![rule(Action::Allow)]);
    same_order.order = Some(20.0);
    m.policies = vec![unordered, allow, deny, same_order];
    let prog = build(&m);
    let names: Vec<_> = prog.endpoints[&wid("prod", "b")].ingress.tiers[0]
        .policies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["z-deny", "a-allow", "b-allow", "0-first-by-name"]);
    assert_eq!(
        ingress(&prog, &wid("prod", "b"), &tcp(A, B, 80)),
        Verdict::Deny
    );
}

#[test]
fn tiers_run_by_order_and_unordered_tiers_last() {
    let mut m = two_workloads();
    for (name, order) in [
        ("late", None),
        ("early", Some(5.0)),
        ("mid", Some(2_000_000.0)),
    ] {
        m.tiers.push(Tier {
            name: name.into(),
            order,
            default_action: TierDefaultAction::Pass,
        });
        let mut p = ingress_policy(&format!("{name}.p"), "all()", vec![rule(Action::Log)]);
        p.tier = name.into();
        m.policies.push(p);
    }
    m.policies
        .push(ingress_policy("d", "all()", vec![rule(Action::Log)]));
    let prog = build(&m);
    let tiers: Vec<_> = prog.endpoints[&wid("prod", "a")]
        .ingress
        .tiers
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(tiers, ["early", "default", "mid", "late"]);
}

#[test]
fn log_records_and_continues() {
    let mut m = two_workloads();
    m.policies.push(ingress_policy(
        "log-then-allow",
        "all()",
        vec![rule(Action::Log), rule(Action::Allow)],
    ));
    let prog = build(&m);
    let t = evaluate(
        &prog.endpoints[&wid("prod", "b")].ingress,
        &prog,
        &tcp(A, B, 80),
    );
    assert_eq!(t.outcome, Outcome::Allow);
    assert_eq!(t.logged.len(), 1);
    assert_eq!(t.logged[0].owner, "log-then-allow");
}

#[test]
fn types_default_from_the_rules_present() {
    let mut m = two_workloads();
    // Only egress rules: an egress policy; ingress of b stays on default deny w/o profile,
    // so give b an allow-all profile to observe that ingress is untouched.
    m.profiles.push(allow_all_profile("open"));
    m.workload_endpoints[1].profiles = vec!["open".into()];
    let mut p = Policy::new("egress-only", "app == 'db'");
    p.egress = vec![{
        let mut r = rule(Action::Allow);
        r.destination.nets = vec![net("10.0.0.0/24")];
        r
    }];
    m.policies.push(p);
    // No rules at all: ingress policy that denies everything for a.
    m.policies
        .push(Policy::new("isolate-frontend", "app == 'frontend'"));
    let prog = build(&m);
    let b = wid("prod", "b");
    assert_eq!(
        ingress(&prog, &b, &tcp(A, B, 80)),
        Verdict::Allow,
        "profile decides ingress"
    );
    assert_eq!(egress(&prog, &b, &tcp(B, A, 80)), Verdict::Allow);
    assert_eq!(egress(&prog, &b, &tcp(B, "192.168.1.1", 80)), Verdict::Deny);
    assert_eq!(
        ingress(&prog, &wid("prod", "a"), &tcp(B, A, 80)),
        Verdict::Deny
    );
    assert!(prog.endpoints[&wid("prod", "a")].egress.tiers.is_empty());
}

#[test]
fn named_ports_resolve_per_endpoint_on_the_local_side() {
    let mut m = PolicyModel {
        workload_endpoints: vec![
            with_port(
                workload("prod", "web1", A, &[("app", "web")]),
                "http",
                Protocol::TCP,
                80,
            ),
            with_port(
                workload("prod", "web2", B, &[("app", "web")]),
                "http",
                Protocol::TCP,
                8080,
            ),
            workload("prod", "client", C, &[("app", "client")]),
        ],
        ..Default::default()
    };
    m.policies.push(ingress_policy(
        "web",
        "app == 'web'",
        vec![tcp_to(Action::Allow, &[Port::Named("http".into())])],
    ));
    let prog = build(&m);
    let (w1, w2) = (wid("prod", "web1"), wid("prod", "web2"));
    assert_eq!(ingress(&prog, &w1, &tcp(C, A, 80)), Verdict::Allow);
    assert_eq!(ingress(&prog, &w1, &tcp(C, A, 8080)), Verdict::Deny);
    assert_eq!(ingress(&prog, &w2, &tcp(C, B, 8080)), Verdict::Allow);
    assert_eq!(ingress(&prog, &w2, &tcp(C, B, 80)), Verdict::Deny);
    // UDP to the same number is not the TCP named port.
    assert_eq!(
        ingress(&prog, &w1, &Packet::udp(ip(C), 1, ip(A), 80)),
        Verdict::Deny
    );
}

#[test]
fn named_ports_on_the_peer_side_become_named_port_sets() {
    let mut m = PolicyModel {
        workload_endpoints: vec![
            with_port(
                workload("prod", "web1", A, &[("app", "web")]),
                "http",
                Protocol::TCP,
                80,
            ),
            with_port(
                workload("prod", "web2", B, &[("app", "web")]),
                "http",
                Protocol::TCP,
                8080,
            ),
            workload("prod", "client", C, &[("app", "client")]),
        ],
        ..Default::default()
    };
    let mut p = Policy::new("client-out", "app == 'client'");
    p.egress = vec![{
        let mut r = tcp_to(Action::Allow, &[Port::Named("http".into())]);
        r.destination.selector = "app == 'web'".into();
        r
    }];
    m.policies.push(p);
    let prog = build(&m);
    let client = wid("prod", "client");
    assert_eq!(egress(&prog, &client, &tcp(C, A, 80)), Verdict::Allow);
    assert_eq!(egress(&prog, &client, &tcp(C, B, 8080)), Verdict::Allow);
    assert_eq!(egress(&prog, &client, &tcp(C, A, 8080)), Verdict::Deny);
    assert_eq!(egress(&prog, &client, &tcp(C, B, 80)), Verdict::Deny);
    let named: Vec<_> = prog
        .sets
        .values()
        .filter(|s| matches!(s.key, calico_policy::sets::SetKey::NamedPort { .. }))
        .collect();
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].members.len(), 2);
}

fn namespaces_model() -> PolicyModel {
    let mut dev = workload("dev", "d", "10.1.0.1", &[("app", "api")]);
    dev.namespace_labels = labels(&[("team", "blue")]);
    let mut prod = workload("prod", "p", "10.2.0.1", &[("app", "api")]);
    prod.namespace_labels = labels(&[("team", "red")]);
    let mut prod_client = workload("prod", "c", "10.2.0.2", &[("app", "client")]);
    prod_client.namespace_labels = labels(&[("team", "red")]);
    PolicyModel {
        workload_endpoints: vec![dev, prod, prod_client],
        network_sets: vec![NetworkSet {
            name: "internet".into(),
            labels: labels(&[("kind", "external")]),
            nets: vec![net("203.0.113.0/24")],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn namespaced_policy_rules_select_peers_in_their_own_namespace_by_default() {
    let mut m = namespaces_model();
    let mut p = ingress_policy(
        "api",
        "app == 'api'",
        vec![from_selector(Action::Allow, "has(app)")],
    );
    p.namespace = Some("prod".into());
    m.policies.push(p);
    let prog = build(&m);
    let api = wid("prod", "p");
    assert_eq!(
        ingress(&prog, &api, &tcp("10.2.0.2", "10.2.0.1", 80)),
        Verdict::Allow
    );
    assert_eq!(
        ingress(&prog, &api, &tcp("10.1.0.1", "10.2.0.1", 80)),
        Verdict::Deny
    );
    // The policy only applies in its namespace: dev's api has no policy and no profile.
    assert!(prog.endpoints[&wid("dev", "d")].ingress.tiers.is_empty());
}

#[test]
fn namespace_selector_matches_namespace_labels_and_global_matches_non_namespaced_peers() {
    let mut m = namespaces_model();
    let mut by_ns = from_selector(Action::Allow, "");
    by_ns.source.namespace_selector = "team == 'blue'".into();
    let mut global = from_selector(Action::Allow, "kind == 'external'");
    global.source.namespace_selector = "global()".into();
    let mut p = ingress_policy("api", "app == 'api'", vec![by_ns, global]);
    p.namespace = Some("prod".into());
    m.policies.push(p);
    let prog = build(&m);
    let api = wid("prod", "p");
    assert_eq!(
        ingress(&prog, &api, &tcp("10.1.0.1", "10.2.0.1", 80)),
        Verdict::Allow
    );
    assert_eq!(
        ingress(&prog, &api, &tcp("10.2.0.2", "10.2.0.1", 80)),
        Verdict::Deny
    );
    assert_eq!(
        ingress(&prog, &api, &tcp("203.0.113.9", "10.2.0.1", 80)),
        Verdict::Allow
    );
    assert_eq!(
        ingress(&prog, &api, &tcp("198.51.100.1", "10.2.0.1", 80)),
        Verdict::Deny
    );
}

#[test]
fn namespace_selector_all_means_any_namespaced_peer() {
    let mut m = namespaces_model();
    let mut r = from_selector(Action::Allow, "");
    r.source.namespace_selector = "all()".into();
    m.policies
        .push(ingress_policy("any-ns", "app == 'api'", vec![r]));
    let prog = build(&m);
    let api = wid("prod", "p");
    assert_eq!(
        ingress(&prog, &api, &tcp("10.1.0.1", "10.2.0.1", 80)),
        Verdict::Allow
    );
    assert_eq!(
        ingress(&prog, &api, &tcp("203.0.113.9", "10.2.0.1", 80)),
        Verdict::Deny
    );
}

#[test]
fn global_policy_namespace_selector_picks_the_endpoints_it_applies_to() {
    let mut m = namespaces_model();
    let mut p = ingress_policy("blue-only", "", vec![rule(Action::Deny)]);
    p.namespace_selector = "team == 'blue'".into();
    m.policies.push(p);
    let prog = build(&m);
    assert_eq!(prog.endpoints[&wid("dev", "d")].ingress.tiers.len(), 1);
    assert!(prog.endpoints[&wid("prod", "p")].ingress.tiers.is_empty());
}

#[test]
fn network_set_cidrs_are_matched_by_selectors() {
    let mut m = namespaces_model();
    let mut p = Policy::new("to-internet", "app == 'client'");
    p.egress = vec![{
        let mut r = rule(Action::Allow);
        r.destination.selector = "kind == 'external'".into();
        r
    }];
    m.policies.push(p);
    let prog = build(&m);
    let c = wid("prod", "c");
    assert_eq!(
        egress(&prog, &c, &tcp("10.2.0.2", "203.0.113.77", 443)),
        Verdict::Allow
    );
    assert_eq!(
        egress(&prog, &c, &tcp("10.2.0.2", "203.0.114.1", 443)),
        Verdict::Deny
    );
    assert_eq!(
        egress(&prog, &c, &tcp("10.2.0.2", "10.2.0.1", 443)),
        Verdict::Deny
    );
}

#[test]
fn staged_policies_are_reported_but_never_enforced() {
    let mut m = two_workloads();
    m.profiles.push(allow_all_profile("open"));
    m.workload_endpoints[1].profiles = vec!["open".into()];
    let mut staged = ingress_policy("staged-deny", "app == 'db'", vec![rule(Action::Deny)]);
    staged.staged = true;
    m.policies.push(staged);
    let prog = build(&m);
    let b = wid("prod", "b");
    let chain = &prog.endpoints[&b].ingress;
    // A tier holding only staged policies has no end-of-tier drop.
    assert_eq!(chain.tiers[0].end_of_tier, EndOfTier::Pass);
    let t = evaluate(chain, &prog, &tcp(A, B, 80));
    assert_eq!(t.outcome, Outcome::Allow);
    assert_eq!(t.staged.len(), 1);
    assert_eq!(t.staged[0].action, Some((Action::Deny, 0)));
}

#[test]
fn icmp_type_and_code_and_protocol_numbers() {
    let mut m = two_workloads();
    let mut ping = rule(Action::Allow);
    ping.protocol = Some("ICMP".into());
    ping.icmp = Some(IcmpFields {
        icmp_type: Some(8),
        code: Some(0),
    });
    let mut ping6 = rule(Action::Allow);
    ping6.protocol = Some("58".into());
    ping6.icmp = Some(IcmpFields {
        icmp_type: Some(128),
        code: None,
    });
    let mut not_tcp = rule(Action::Allow);
    not_tcp.not_protocol = Some("tcp".into());
    not_tcp.protocol = None;
    not_tcp.destination.nets = vec![net("10.9.9.9/32")];
    m.policies
        .push(ingress_policy("icmp", "all()", vec![ping, ping6, not_tcp]));
    let mut b6 = workload("prod", "b6", "fd00::2", &[]);
    b6.ips.push(net("10.9.9.9/32"));
    m.workload_endpoints.push(b6);
    let prog = build(&m);
    let b = wid("prod", "b");
    assert_eq!(
        ingress(&prog, &b, &Packet::ping(ip(A), ip(B))),
        Verdict::Allow
    );
    let mut reply = Packet::ping(ip(A), ip(B));
    reply.icmp_type = Some(0);
    assert_eq!(ingress(&prog, &b, &reply), Verdict::Deny);
    let b6 = wid("prod", "b6");
    assert_eq!(
        ingress(&prog, &b6, &Packet::ping(ip("fd00::1"), ip("fd00::2"))),
        Verdict::Allow
    );
    assert_eq!(
        ingress(&prog, &b6, &Packet::udp(ip(A), 1, ip("10.9.9.9"), 53)),
        Verdict::Allow
    );
    assert_eq!(ingress(&prog, &b6, &tcp(A, "10.9.9.9", 53)), Verdict::Deny);
}

#[test]
fn rules_with_nets_of_one_family_do_not_apply_to_the_other() {
    let mut m = two_workloads();
    let mut deny_v4 = rule(Action::Deny);
    deny_v4.source.not_nets = vec![net("10.0.0.0/8")];
    let mut v6_only = rule(Action::Allow);
    v6_only.ip_version = Some(IpVersion::V6);
    m.policies.push(ingress_policy(
        "fam",
        "all()",
        vec![deny_v4, v6_only, rule(Action::Allow)],
    ));
    m.workload_endpoints[1].ips.push(net("fd00::2/128"));
    let prog = build(&m);
    let b = wid("prod", "b");
    assert_eq!(ingress(&prog, &b, &tcp("192.168.0.1", B, 1)), Verdict::Deny);
    assert_eq!(ingress(&prog, &b, &tcp(A, B, 1)), Verdict::Allow);
    // The notNets rule does not exist for IPv6, so the v6 packet reaches the allow rules.
    let t = evaluate(
        &prog.endpoints[&b].ingress,
        &prog,
        &tcp("fd00::9", "fd00::2", 1),
    );
    assert_eq!(
        t.decided_by,
        DecidedBy::PolicyRule {
            tier: "default".into(),
            policy: "fam".into(),
            rule: 1
        }
    );
}

#[test]
fn service_account_names_and_selectors_match_peers() {
    let mut m = two_workloads();
    m.workload_endpoints[0].service_account = Some("frontend-sa".into());
    m.workload_endpoints[0].service_account_labels = labels(&[("tier", "web")]);
    let mut by_name = rule(Action::Allow);
    by_name.source.service_accounts = Some(ServiceAccountMatch {
        names: vec!["frontend-sa".into()],
        selector: String::new(),
    });
    let mut by_label = rule(Action::Allow);
    by_label.protocol = Some("UDP".into());
    by_label.source.service_accounts = Some(ServiceAccountMatch {
        names: vec![],
        selector: "tier == 'web'".into(),
    });
    let mut p = ingress_policy("sa", "app == 'db'", vec![by_name, by_label]);
    p.namespace = Some("prod".into());
    m.policies.push(p);
    m.workload_endpoints.push(workload("prod", "other", C, &[]));
    let prog = build(&m);
    let b = wid("prod", "b");
    assert_eq!(ingress(&prog, &b, &tcp(A, B, 1)), Verdict::Allow);
    assert_eq!(
        ingress(&prog, &b, &Packet::udp(ip(A), 1, ip(B), 1)),
        Verdict::Allow
    );
    assert_eq!(ingress(&prog, &b, &tcp(C, B, 1)), Verdict::Deny);
}

#[test]
fn not_selector_excludes_peers_in_any_namespace() {
    let mut m = namespaces_model();
    let mut r = rule(Action::Allow);
    r.source.not_selector = "app == 'client'".into();
    let mut p = ingress_policy("not-client", "app == 'api'", vec![r]);
    p.namespace = Some("prod".into());
    m.policies.push(p);
    m.workload_endpoints.push({
        let mut e = workload("prod", "p2", "10.2.0.3", &[("app", "api")]);
        e.namespace_labels = labels(&[("team", "red")]);
        e
    });
    let prog = build(&m);
    let api = wid("prod", "p");
    assert_eq!(
        ingress(&prog, &api, &tcp("10.2.0.2", "10.2.0.1", 1)),
        Verdict::Deny
    );
    assert_eq!(
        ingress(&prog, &api, &tcp("10.2.0.3", "10.2.0.1", 1)),
        Verdict::Allow
    );
    // With only a notSelector, a namespaced rule still means "in my namespace".
    assert_eq!(
        ingress(&prog, &api, &tcp("10.1.0.1", "10.2.0.1", 1)),
        Verdict::Deny
    );
}

#[test]
fn host_endpoints_keep_failsafe_ports_open_and_default_to_deny() {
    let mut m = PolicyModel {
        host_endpoints: vec![host_endpoint(
            "node1-eth0",
            "eth0",
            "192.168.33.11",
            &[("host", "node1")],
        )],
        ..Default::default()
    };
    m.policies.push(ingress_policy(
        "deny-all",
        "has(host)",
        vec![rule(Action::Deny)],
    ));
    let prog = build(&m);
    let h = hid("node1-eth0");
    let ssh = tcp("192.168.33.12", "192.168.33.11", 22);
    let t = evaluate(&prog.endpoints[&h].ingress, &prog, &ssh);
    assert_eq!(t.outcome, Outcome::Allow);
    assert!(matches!(
        t.decided_by,
        DecidedBy::Failsafe(FailsafePort { port: 22, .. })
    ));
    assert_eq!(
        ingress(&prog, &h, &tcp("192.168.33.12", "192.168.33.11", 80)),
        Verdict::Deny
    );
    // Outbound DNS is failsafe; other egress has no policy or profile: denied.
    let dns = Packet::udp(ip("192.168.33.11"), 5000, ip("192.168.33.1"), 53);
    assert_eq!(egress(&prog, &h, &dns), Verdict::Allow);
    assert_eq!(
        egress(&prog, &h, &tcp("192.168.33.11", "192.168.33.1", 80)),
        Verdict::Deny
    );
}

#[test]
fn forward_pre_dnat_and_untracked_chains_take_only_their_policies() {
    let mut m = PolicyModel {
        host_endpoints: vec![host_endpoint(
            "hep",
            "eth0",
            "192.168.33.11",
            &[("host", "node1")],
        )],
        ..Default::default()
    };
    let mut normal = ingress_policy("normal", "has(host)", vec![rule(Action::Allow)]);
    normal.order = Some(1.0);
    let mut fwd = ingress_policy("fwd", "has(host)", vec![rule(Action::Deny)]);
    fwd.apply_on_forward = true;
    let mut pre = ingress_policy(
        "pre",
        "has(host)",
        vec![tcp_to(Action::Deny, &[Port::number(8080)])],
    );
    pre.pre_dnat = true;
    pre.apply_on_forward = true;
    let mut untracked = ingress_policy(
        "untracked",
        "has(host)",
        vec![tcp_to(Action::Allow, &[Port::number(9000)])],
    );
    untracked.do_not_track = true;
    untracked.apply_on_forward = true;
    m.policies = vec![normal, fwd, pre, untracked];
    let prog = build(&m);
    let ep = &prog.endpoints[&hid("hep")];
    let host = ep.host.as_ref().expect("host chains");
    let names = |c: &calico_policy::program::Chain| -> Vec<String> {
        c.tiers
            .iter()
            .flat_map(|t| t.policies.iter().map(|p| p.name.clone()))
            .collect()
    };
    assert_eq!(names(&ep.ingress), ["normal", "fwd"]);
    assert_eq!(names(&host.forward_ingress), ["fwd"]);
    assert_eq!(names(&host.pre_dnat_ingress), ["pre"]);
    assert_eq!(names(&host.untracked_ingress), ["untracked"]);
    // No applyOnForward policy for egress: forwarded traffic is allowed by default.
    assert!(host.forward_egress.tiers.is_empty());
    assert_eq!(host.forward_egress.fallthrough, Fallthrough::Allow);
    let p = tcp("192.168.33.12", "10.0.0.5", 8080);
    assert_eq!(outcome(&prog, &host.forward_ingress, &p), Outcome::Deny);
    assert_eq!(outcome(&prog, &host.pre_dnat_ingress, &p), Outcome::Deny);
    // Pre-DNAT and untracked chains never drop at the end of a tier: later stages decide.
    assert_eq!(
        outcome(
            &prog,
            &host.pre_dnat_ingress,
            &tcp("192.168.33.12", "10.0.0.5", 80)
        ),
        Outcome::Continue
    );
    assert_eq!(
        outcome(
            &prog,
            &host.untracked_ingress,
            &tcp("192.168.33.12", "10.0.0.5", 80)
        ),
        Outcome::Continue
    );
    assert_eq!(
        outcome(
            &prog,
            &host.untracked_ingress,
            &tcp("192.168.33.12", "10.0.0.5", 9000)
        ),
        Outcome::Allow
    );
    // Failsafe also guards the untracked and pre-DNAT chains, not the forward ones.
    assert!(!host.untracked_ingress.failsafe.is_empty());
    assert!(host.forward_ingress.failsafe.is_empty());
}

#[test]
fn workloads_ignore_host_only_policies() {
    let mut m = two_workloads();
    let mut pre = ingress_policy("pre", "all()", vec![rule(Action::Deny)]);
    pre.pre_dnat = true;
    let mut untracked = ingress_policy("untracked", "all()", vec![rule(Action::Deny)]);
    untracked.do_not_track = true;
    m.policies = vec![pre, untracked];
    let prog = build(&m);
    assert!(prog.endpoints[&wid("prod", "a")].ingress.tiers.is_empty());
    assert!(prog.endpoints[&wid("prod", "a")].host.is_none());
}

#[test]
fn profile_labels_are_inherited_and_own_labels_win() {
    let mut m = two_workloads();
    let mut prof = allow_all_profile("team");
    prof.labels_to_apply = labels(&[("team", "x"), ("app", "overridden?")]);
    m.profiles.push(prof);
    m.workload_endpoints[0].profiles = vec!["team".into()];
    m.policies.push(ingress_policy(
        "from-team-x",
        "app == 'db'",
        vec![from_selector(
            Action::Allow,
            "team == 'x' && app == 'frontend'",
        )],
    ));
    let prog = build(&m);
    assert_eq!(
        ingress(&prog, &wid("prod", "b"), &tcp(A, B, 1)),
        Verdict::Allow
    );
}

#[test]
fn compile_errors_name_the_resource_and_field() {
    let mut m = two_workloads();
    let mut p = ingress_policy(
        "bad",
        "all()",
        vec![from_selector(Action::Allow, "app = 'x'")],
    );
    p.namespace = Some("prod".into());
    m.policies.push(p);
    let err = calico_policy::compile(&m, None).unwrap_err();
    assert!(
        matches!(&err, CompileError::Selector { field, .. } if field == "spec.ingress[0].source.selector")
    );
    assert!(
        err.to_string()
            .starts_with("NetworkPolicy \"prod/bad\": spec.ingress[0].source.selector"),
        "{err}"
    );

    let mut m = two_workloads();
    let mut p = Policy::new("x", "");
    p.tier = "missing".into();
    m.policies.push(p);
    assert!(matches!(
        calico_policy::compile(&m, None),
        Err(CompileError::UnknownTier { tier, .. }) if tier == "missing"
    ));

    let mut m = two_workloads();
    let mut r = rule(Action::Allow);
    r.destination.ports = vec![Port::number(80)];
    m.policies.push(ingress_policy("ports", "", vec![r]));
    assert!(matches!(
        calico_policy::compile(&m, None),
        Err(CompileError::PortsNeedProtocol { field, .. }) if field == "spec.ingress[0].destination.ports"
    ));

    let mut m = two_workloads();
    let mut r = rule(Action::Allow);
    r.protocol = Some("TCP".into());
    r.icmp = Some(IcmpFields {
        icmp_type: Some(8),
        code: None,
    });
    m.policies.push(ingress_policy("icmp", "", vec![r]));
    assert!(matches!(
        calico_policy::compile(&m, None),
        Err(CompileError::Icmp { .. })
    ));

    let mut m = two_workloads();
    let mut r = rule(Action::Allow);
    r.protocol = Some("tcpish".into());
    m.policies.push(ingress_policy("proto", "", vec![r]));
    assert!(
        matches!(calico_policy::compile(&m, None), Err(CompileError::Protocol { value, .. }) if value == "tcpish")
    );
}

#[test]
fn compile_for_one_node_keeps_remote_endpoints_in_sets_only() {
    let mut m = two_workloads();
    m.workload_endpoints[1].node = "node2".into();
    m.policies.push(ingress_policy(
        "p",
        "all()",
        vec![from_selector(Action::Allow, "app == 'db'")],
    ));
    let prog = calico_policy::compile(&m, Some("node1")).unwrap();
    assert_eq!(prog.endpoints.len(), 1);
    assert_eq!(
        ingress(&prog, &wid("prod", "a"), &tcp(B, A, 1)),
        Verdict::Allow
    );
}

#[test]
fn each_distinct_selector_becomes_one_set() {
    let mut m = two_workloads();
    for name in ["p1", "p2"] {
        m.policies.push(ingress_policy(
            name,
            "all()",
            vec![from_selector(Action::Allow, "app  ==  \"frontend\"")],
        ));
    }
    let prog = build(&m);
    // Same selector written two ways, two policies, two endpoints: one set.
    assert_eq!(prog.sets.len(), 1);
    let set = prog.sets.values().next().unwrap();
    assert_eq!(set.members.len(), 1);
    let _ = Direction::Ingress;
}

#[test]
fn a_rule_selector_of_all_means_known_endpoints_while_an_empty_one_means_anyone() {
    let mut m = two_workloads();
    m.policies.push(ingress_policy(
        "known",
        "app == 'db'",
        vec![from_selector(Action::Allow, "all()")],
    ));
    m.policies.push(ingress_policy(
        "anyone",
        "app == 'frontend'",
        vec![from_selector(Action::Allow, "")],
    ));
    let prog = build(&m);
    assert_eq!(
        ingress(&prog, &wid("prod", "b"), &tcp(A, B, 1)),
        Verdict::Allow
    );
    assert_eq!(
        ingress(&prog, &wid("prod", "b"), &tcp("198.51.100.1", B, 1)),
        Verdict::Deny
    );
    assert_eq!(
        ingress(&prog, &wid("prod", "a"), &tcp("198.51.100.1", A, 1)),
        Verdict::Allow
    );
}

#[test]
fn a_connection_between_local_workloads_needs_both_egress_and_ingress() {
    let mut m = two_workloads();
    let mut out = Policy::new("a-out", "app == 'frontend'");
    out.egress = vec![tcp_to(Action::Allow, &[Port::number(5432)])];
    m.policies.push(out);
    m.policies.push(ingress_policy(
        "b-in",
        "app == 'db'",
        vec![tcp_to(Action::Allow, &[Port::Range(5000, 6000)])],
    ));
    let prog = build(&m);
    let (a, b) = (
        &prog.endpoints[&wid("prod", "a")],
        &prog.endpoints[&wid("prod", "b")],
    );
    let path = |p: &Packet| calico_policy::path_verdict(Some(a), Some(b), &prog, p);
    assert_eq!(path(&tcp(A, B, 5432)), Verdict::Allow);
    assert_eq!(path(&tcp(A, B, 5433)), Verdict::Deny, "egress of a denies");
    assert_eq!(
        calico_policy::path_verdict(None, Some(b), &prog, &tcp(C, B, 5433)),
        Verdict::Allow
    );
}

#[test]
fn an_empty_port_range_is_an_error() {
    let mut m = two_workloads();
    m.policies.push(ingress_policy(
        "range",
        "",
        vec![tcp_to(Action::Allow, &[Port::Range(90, 80)])],
    ));
    let err = calico_policy::compile(&m, None).unwrap_err();
    assert!(
        matches!(&err, CompileError::PortRange { field, .. } if field == "spec.ingress[0].destination.ports[0]"),
        "{err}"
    );
}

#[test]
fn each_policy_is_compiled_once_per_direction_and_shared_by_endpoints() {
    let mut m = two_workloads();
    for i in 0..10 {
        m.workload_endpoints.push(with_port(
            workload(
                "prod",
                &format!("w{i}"),
                &format!("10.0.1.{i}"),
                &[("app", "web")],
            ),
            "http",
            Protocol::TCP,
            8000 + i,
        ));
    }
    m.profiles.push(allow_all_profile("open"));
    for ep in &mut m.workload_endpoints {
        ep.profiles = vec!["open".into()];
    }
    m.policies.push(ingress_policy(
        "web",
        "app == 'web'",
        vec![tcp_to(Action::Allow, &[Port::Named("http".into())])],
    ));
    let prog = build(&m);
    // One list for the policy, two for the profile; not one per endpoint.
    assert_eq!(prog.rule_lists.len(), 3);
    for i in 0..10u16 {
        let w = wid("prod", &format!("w{i}"));
        let dst = format!("10.0.1.{i}");
        assert_eq!(ingress(&prog, &w, &tcp(A, &dst, 8000 + i)), Verdict::Allow);
        assert_eq!(
            ingress(&prog, &w, &tcp(A, &dst, 8000 + (i + 1) % 10)),
            Verdict::Deny
        );
    }
}

#[test]
fn rules_are_rendered_per_family_as_felix_does() {
    use calico_policy::program::RuleMatch;
    let mut m = RuleMatch::default();
    m.source.nets = vec![net("10.0.0.0/8"), net("fd00::/8")];
    let v4 = m.for_family(IpVersion::V4).expect("exists for IPv4");
    assert_eq!(v4.source.nets, vec![net("10.0.0.0/8")]);
    let mut only_v4 = RuleMatch::default();
    only_v4.destination.nets = vec![net("10.0.0.0/8")];
    assert!(only_v4.for_family(IpVersion::V6).is_none());
    // A negated catch-all makes the rule vanish for that family (Felix avoids the contradiction).
    let mut not_all = RuleMatch::default();
    not_all.source.not_nets = vec![net("0.0.0.0/0")];
    assert!(not_all.for_family(IpVersion::V4).is_none());
    let v6_rule = RuleMatch {
        ip_version: Some(IpVersion::V6),
        ..Default::default()
    };
    assert!(v6_rule.for_family(IpVersion::V4).is_none());
    assert!(v6_rule.for_family(IpVersion::V6).is_some());
}
