//! Kubernetes NetworkPolicy translation, as Calico converts it.

mod common;

use calico_policy::knp::{
    IpBlock, KnpPeer, KnpPort, KnpPortValue, KnpRule, KubernetesNetworkPolicy, LabelSelector,
    LabelSelectorOperator, LabelSelectorRequirement, translate,
};
use calico_policy::model::{Action, Direction, PolicyModel, Port};
use calico_policy::{Packet, Verdict};
use common::*;

fn knp(name: &str) -> KubernetesNetworkPolicy {
    KubernetesNetworkPolicy {
        name: name.into(),
        namespace: "prod".into(),
        pod_selector: LabelSelector {
            match_labels: labels(&[("app", "db")]),
            match_expressions: vec![],
        },
        ..Default::default()
    }
}

#[test]
fn naming_tier_order_selector_and_types() {
    let mut k = knp("allow-web");
    k.pod_selector.match_expressions = vec![
        LabelSelectorRequirement {
            key: "env".into(),
            operator: LabelSelectorOperator::In,
            values: vec!["prod".into(), "canary".into()],
        },
        LabelSelectorRequirement {
            key: "debug".into(),
            operator: LabelSelectorOperator::DoesNotExist,
            values: vec![],
        },
    ];
    let p = translate(&k).unwrap();
    assert_eq!(p.name, "knp.default.allow-web");
    assert_eq!(p.namespace.as_deref(), Some("prod"));
    assert_eq!(p.tier, "default");
    assert_eq!(p.order, Some(1000.0));
    assert_eq!(
        p.selector,
        r#"(projectcalico.org/orchestrator == "k8s" && app == "db" && env in {"canary", "prod"} && !has(debug))"#
    );
    // No policyTypes: Ingress only, and no rules means deny all ingress.
    assert_eq!(p.types, vec![Direction::Ingress]);
    assert!(p.ingress.is_empty());
}

#[test]
fn empty_pod_selector_selects_every_pod_of_the_namespace() {
    let mut k = knp("all");
    k.pod_selector = LabelSelector::default();
    k.policy_types = vec![Direction::Egress, Direction::Ingress];
    let p = translate(&k).unwrap();
    assert_eq!(p.selector, r#"projectcalico.org/orchestrator == "k8s""#);
    assert_eq!(p.types, vec![Direction::Ingress, Direction::Egress]);
}

#[test]
fn ports_group_by_protocol_and_merge_into_ranges_and_peers_multiply() {
    let mut k = knp("ports");
    k.policy_types = vec![Direction::Ingress];
    k.ingress = vec![KnpRule {
        ports: vec![
            KnpPort {
                protocol: None,
                port: Some(KnpPortValue::Number(81)),
                end_port: None,
            },
            KnpPort {
                protocol: Some("TCP".into()),
                port: Some(KnpPortValue::Number(80)),
                end_port: None,
            },
            KnpPort {
                protocol: Some("TCP".into()),
                port: Some(KnpPortValue::Name("metrics".into())),
                end_port: None,
            },
            KnpPort {
                protocol: Some("UDP".into()),
                port: Some(KnpPortValue::Number(53)),
                end_port: Some(54),
            },
        ],
        peers: vec![
            KnpPeer {
                pod_selector: Some(LabelSelector {
                    match_labels: labels(&[("role", "web")]),
                    match_expressions: vec![],
                }),
                ..Default::default()
            },
            KnpPeer {
                namespace_selector: Some(LabelSelector::default()),
                ..Default::default()
            },
            KnpPeer {
                ip_block: Some(IpBlock {
                    cidr: net("172.16.0.0/16"),
                    except: vec![net("172.16.1.0/24")],
                }),
                ..Default::default()
            },
        ],
    }];
    let p = translate(&k).unwrap();
    // 2 protocols × 3 peers, protocols in sorted order.
    assert_eq!(p.ingress.len(), 6);
    let tcp = &p.ingress[0];
    assert_eq!(tcp.action, Action::Allow);
    assert_eq!(tcp.protocol.as_deref(), Some("TCP"));
    assert_eq!(
        tcp.destination.ports,
        vec![Port::Named("metrics".into()), Port::Range(80, 81)]
    );
    assert_eq!(
        tcp.source.selector,
        r#"(projectcalico.org/orchestrator == "k8s" && role == "web")"#
    );
    assert_eq!(tcp.source.namespace_selector, "");
    let any_ns = &p.ingress[1];
    assert_eq!(
        any_ns.source.selector,
        r#"projectcalico.org/orchestrator == "k8s""#
    );
    assert_eq!(any_ns.source.namespace_selector, "all()");
    let block = &p.ingress[2];
    assert_eq!(block.source.nets, vec![net("172.16.0.0/16")]);
    assert_eq!(block.source.not_nets, vec![net("172.16.1.0/24")]);
    assert_eq!(block.source.selector, "");
    let udp = &p.ingress[3];
    assert_eq!(udp.protocol.as_deref(), Some("UDP"));
    assert_eq!(udp.destination.ports, vec![Port::Range(53, 54)]);
}

#[test]
fn a_port_without_number_allows_the_whole_protocol_and_egress_puts_ports_on_the_peer() {
    let mut k = knp("egress");
    k.policy_types = vec![Direction::Egress];
    k.egress = vec![KnpRule {
        ports: vec![
            KnpPort {
                protocol: Some("UDP".into()),
                port: Some(KnpPortValue::Number(53)),
                end_port: None,
            },
            KnpPort {
                protocol: Some("UDP".into()),
                port: None,
                end_port: None,
            },
        ],
        peers: vec![],
    }];
    let p = translate(&k).unwrap();
    assert_eq!(p.types, vec![Direction::Egress]);
    assert_eq!(p.egress.len(), 1);
    assert_eq!(p.egress[0].protocol.as_deref(), Some("UDP"));
    assert!(p.egress[0].destination.ports.is_empty());
    assert_eq!(p.egress[0].destination.selector, "");
}

#[test]
fn a_bad_end_port_is_an_error_naming_the_field() {
    let mut k = knp("bad");
    k.ingress = vec![KnpRule {
        ports: vec![KnpPort {
            protocol: None,
            port: Some(KnpPortValue::Number(90)),
            end_port: Some(80),
        }],
        peers: vec![],
    }];
    let err = translate(&k).unwrap_err();
    assert!(
        err.to_string().contains("spec.ingress[0].ports[0].endPort"),
        "{err}"
    );
}

#[test]
fn translated_policy_enforces_kubernetes_semantics() {
    // Pods: db (prod), web (prod), web (dev, namespace labelled env=dev), and a non-k8s workload.
    let mut m = PolicyModel {
        workload_endpoints: vec![
            workload("prod", "db", "10.0.0.1", &[("app", "db")]),
            workload("prod", "web", "10.0.0.2", &[("role", "web")]),
            {
                let mut w = workload("dev", "web", "10.0.1.2", &[("role", "web")]);
                w.namespace_labels = labels(&[("env", "dev")]);
                w
            },
            {
                let mut w = workload("prod", "docker", "10.0.0.9", &[("role", "web")]);
                w.orchestrator = Some("libnetwork".into());
                w
            },
        ],
        ..Default::default()
    };
    let mut k = knp("db");
    k.ingress = vec![KnpRule {
        ports: vec![KnpPort {
            protocol: None,
            port: Some(KnpPortValue::Number(5432)),
            end_port: None,
        }],
        peers: vec![
            KnpPeer {
                pod_selector: Some(LabelSelector {
                    match_labels: labels(&[("role", "web")]),
                    match_expressions: vec![],
                }),
                ..Default::default()
            },
            KnpPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: labels(&[("env", "dev")]),
                    match_expressions: vec![],
                }),
                ..Default::default()
            },
        ],
    }];
    m.policies.push(translate(&k).unwrap());
    let prog = build(&m);
    let db = wid("prod", "db");
    let to_db = |src: &str, port| Packet::tcp(ip(src), 40000, ip("10.0.0.1"), port);
    assert_eq!(
        ingress(&prog, &db, &to_db("10.0.0.2", 5432)),
        Verdict::Allow
    );
    assert_eq!(ingress(&prog, &db, &to_db("10.0.0.2", 5433)), Verdict::Deny);
    assert_eq!(
        ingress(&prog, &db, &to_db("10.0.1.2", 5432)),
        Verdict::Allow,
        "namespace peer"
    );
    assert_eq!(
        ingress(&prog, &db, &to_db("10.0.0.9", 5432)),
        Verdict::Deny,
        "not a k8s pod"
    );
    // Not selected by the policy: the web pod has no policy and no profile.
    assert!(prog.endpoints[&wid("prod", "web")].ingress.tiers.is_empty());
}
