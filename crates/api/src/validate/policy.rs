//! Policies, their rules, profiles and tiers.

use ipnet::IpNet;

use super::names::{
    check_annotations, check_global_policy_name, check_network_policy_name, is_dns_label,
    is_iana_service_name,
};
use super::net::parse_cidr;
use super::{Errs, Validate, ValidationErrors, validate_with};
use crate::kinds::*;

pub(crate) fn check_selector(path: &str, sel: Option<&str>, e: &mut Errs) {
    if let Some(s) = sel
        && let Err(err) = calico_selector::Selector::parse(s)
    {
        e.add(path, format!("invalid selector {s:?}: {err}"));
    }
}

/// Like [`check_selector`], and also rejects `global()`, which Calico allows only in an
/// EntityRule's namespaceSelector.
pub(crate) fn check_local_selector(path: &str, sel: Option<&str>, e: &mut Errs) {
    if sel.is_some_and(|s| s.contains("global(")) {
        e.add(
            path,
            "global() can only be used in a rule's namespaceSelector",
        );
    } else {
        check_selector(path, sel, e);
    }
}

fn check_icmp(path: &str, icmp: &ICMPFields, e: &mut Errs) {
    if let Some(t) = icmp.r#type
        && !(0..=254).contains(&t)
    {
        e.add(
            format!("{path}.type"),
            format!("ICMP type {t} is not in 0..=254"),
        );
    }
    if let Some(c) = icmp.code {
        if !(0..=255).contains(&c) {
            e.add(
                format!("{path}.code"),
                format!("ICMP code {c} is not in 0..=255"),
            );
        }
        if icmp.r#type.is_none() {
            e.add(format!("{path}.code"), "an ICMP code needs an ICMP type");
        }
    }
}

fn check_ports(path: &str, ports: &[Port], protocol: Option<&Protocol>, e: &mut Errs) {
    for (i, p) in ports.iter().enumerate() {
        match p {
            Port::Number(0) | Port::Range { min: 0, .. } => {
                e.add(format!("{path}[{i}]"), "port numbers are 1..=65535")
            }
            Port::Named(n) if !is_iana_service_name(n) => e.add(
                format!("{path}[{i}]"),
                format!("{n:?} is not a valid port name (1 to 15 lower-case letters, digits and '-', with a letter)"),
            ),
            _ => {}
        }
    }
    match protocol {
        // Named ports resolve against the endpoint's own ports, which carry a protocol.
        None if ports.iter().any(|p| !p.is_named()) => e.add(
            path,
            "rules with a port number or range must set protocol to TCP, UDP or SCTP",
        ),
        Some(p) if !p.supports_ports() && !ports.is_empty() => e.add(
            path,
            format!(
                "protocol {p} has no ports; rules with ports must set protocol to TCP, UDP or SCTP"
            ),
        ),
        _ => {}
    }
}

/// Address families seen in a rule's nets, to reject mixes.
#[derive(Default)]
struct Families {
    v4: bool,
    v6: bool,
}

fn check_rule_nets(
    path: &str,
    nets: &[String],
    negated: bool,
    ip_version: Option<i64>,
    seen: &mut Families,
    e: &mut Errs,
) {
    let mut here = Families::default();
    for (i, n) in nets.iter().enumerate() {
        match parse_cidr(n, false) {
            Err(r) => e.add(format!("{path}[{i}]"), r),
            Ok(net) => {
                match net {
                    IpNet::V4(_) => here.v4 = true,
                    IpNet::V6(_) => here.v6 = true,
                }
                if negated && net.prefix_len() == 0 {
                    e.add(
                        format!("{path}[{i}]"),
                        format!("{n} matches everything, so negating it matches no traffic"),
                    );
                }
            }
        }
    }
    if (here.v4 && ip_version.is_some_and(|v| v != 4))
        || (here.v6 && ip_version.is_some_and(|v| v != 6))
    {
        e.add(path, "the rule's ipVersion does not match these CIDRs");
    }
    if (here.v4 && (here.v6 || seen.v6)) || (here.v6 && seen.v4) {
        e.add(path, "a rule cannot mix IPv4 and IPv6 CIDRs");
    }
    seen.v4 |= here.v4;
    seen.v6 |= here.v6;
}

fn check_entity(path: &str, ent: &EntityRule, rule: &Rule, seen: &mut Families, e: &mut Errs) {
    check_local_selector(&format!("{path}.selector"), ent.selector.as_deref(), e);
    check_local_selector(
        &format!("{path}.notSelector"),
        ent.not_selector.as_deref(),
        e,
    );
    let ns_path = format!("{path}.namespaceSelector");
    match ent.namespace_selector.as_deref() {
        Some(ns) if ns.contains("global(") && ns.trim() != "global()" => {
            e.add(ns_path, "global() cannot be combined with other selectors")
        }
        ns => check_selector(&ns_path, ns, e),
    }
    if let Some(sa) = &ent.service_accounts {
        check_local_selector(
            &format!("{path}.serviceAccounts.selector"),
            sa.selector.as_deref(),
            e,
        );
    }
    check_rule_nets(
        &format!("{path}.nets"),
        &ent.nets,
        false,
        rule.ip_version,
        seen,
        e,
    );
    check_rule_nets(
        &format!("{path}.notNets"),
        &ent.not_nets,
        true,
        rule.ip_version,
        seen,
        e,
    );
    check_ports(
        &format!("{path}.ports"),
        &ent.ports,
        rule.protocol.as_ref(),
        e,
    );
    check_ports(
        &format!("{path}.notPorts"),
        &ent.not_ports,
        rule.protocol.as_ref(),
        e,
    );
    if let Some(svc) = &ent.services {
        let p = format!("{path}.services");
        if !ent.ports.is_empty() || !ent.not_ports.is_empty() {
            e.add(&p, "ports and notPorts cannot be combined with services");
        }
        if svc.name.as_deref().is_none_or(str::is_empty) {
            e.add(format!("{p}.name"), "services must name a service");
        }
        if ent.namespace_selector.is_some() {
            e.add(&p, "namespaceSelector and services cannot be combined");
        }
        if ent.service_accounts.is_some() {
            e.add(&p, "serviceAccounts and services cannot be combined");
        }
        if ent.selector.is_some() || ent.not_selector.is_some() {
            e.add(&p, "selector/notSelector and services cannot be combined");
        }
        if !ent.nets.is_empty() || !ent.not_nets.is_empty() {
            e.add(&p, "nets/notNets and services cannot be combined");
        }
    }
}

fn check_http(path: &str, http: &HTTPMatch, e: &mut Errs) {
    let mut methods = http.methods.clone();
    methods.sort();
    if methods.windows(2).any(|w| w[0] == w[1]) {
        e.add(
            format!("{path}.methods"),
            "a method is listed more than once",
        );
    }
    for (i, p) in http.paths.iter().enumerate() {
        let path_i = format!("{path}.paths[{i}]");
        let exact = p.exact.as_deref().filter(|s| !s.is_empty());
        let prefix = p.prefix.as_deref().filter(|s| !s.is_empty());
        match (exact, prefix) {
            (Some(_), Some(_)) => e.add(path_i, "set exact or prefix, not both"),
            (None, None) => e.add(path_i, "set exact or prefix"),
            (Some(v), None) | (None, Some(v)) => {
                if !v.starts_with('/') || v.contains(['?', ' ', '#']) {
                    e.add(
                        path_i,
                        format!("{v:?} must start with '/' and contain no '?', '#' or space"),
                    );
                }
            }
        }
    }
}

fn check_rule(path: &str, r: &Rule, e: &mut Errs) {
    if let Some(v) = r.ip_version
        && v != 4
        && v != 6
    {
        e.add(
            format!("{path}.ipVersion"),
            format!("{v} is not an IP version (4 or 6)"),
        );
    }
    for (field, p) in [("protocol", &r.protocol), ("notProtocol", &r.not_protocol)] {
        match (p.as_ref().map(Protocol::number), r.ip_version) {
            (Some(0), _) if matches!(p, Some(Protocol::Number(0))) => e.add(
                format!("{path}.{field}"),
                "protocol number 0 is not valid (1..=255)",
            ),
            (Some(1), Some(6)) => {
                e.add(format!("{path}.{field}"), "protocol ICMP needs ipVersion 4")
            }
            (Some(58), Some(4)) => e.add(
                format!("{path}.{field}"),
                "protocol ICMPv6 needs ipVersion 6",
            ),
            _ => {}
        }
    }
    if let Some(icmp) = &r.icmp {
        if !r.protocol.as_ref().is_some_and(Protocol::is_icmp) {
            e.add(
                format!("{path}.icmp"),
                "ICMP fields need protocol ICMP or ICMPv6",
            );
        }
        check_icmp(&format!("{path}.icmp"), icmp, e);
    }
    if let Some(icmp) = &r.not_icmp {
        check_icmp(&format!("{path}.notICMP"), icmp, e);
    }
    if let Some(http) = &r.http {
        if r.action != Action::Allow {
            e.add(
                format!("{path}.http"),
                "HTTP match is only valid on Allow rules",
            );
        }
        if r.protocol.as_ref().is_some_and(|p| p.number() != 6) {
            e.add(
                format!("{path}.http"),
                "HTTP match needs protocol TCP or no protocol",
            );
        }
        check_http(&format!("{path}.http"), http, e);
    }
    if let Some(m) = &r.metadata {
        check_annotations(&format!("{path}.metadata.annotations"), &m.annotations, e);
    }
    let mut seen = Families::default();
    if let Some(src) = &r.source {
        check_entity(&format!("{path}.source"), src, r, &mut seen, e);
    }
    if let Some(dst) = &r.destination {
        check_entity(&format!("{path}.destination"), dst, r, &mut seen, e);
    }
}

/// What the policy kinds share, so one function checks them all.
struct PolicyView<'a> {
    tier: Option<&'a str>,
    selector: Option<&'a str>,
    service_account_selector: Option<&'a str>,
    ingress: &'a [Rule],
    egress: &'a [Rule],
    types: &'a [PolicyType],
    /// Global policies: their namespaceSelector and preDNAT/doNotTrack/applyOnForward.
    global: Option<GlobalView<'a>>,
}

struct GlobalView<'a> {
    namespace_selector: Option<&'a str>,
    pre_dnat: bool,
    do_not_track: bool,
    apply_on_forward: bool,
}

fn check_policy(p: &PolicyView<'_>, e: &mut Errs) {
    if let Some(t) = p.tier.filter(|t| !t.is_empty())
        && !is_dns_label(t)
    {
        e.add(
            "spec.tier",
            format!("{t:?} is not a valid tier name (a DNS label)"),
        );
    }
    check_local_selector("spec.selector", p.selector, e);
    check_local_selector("spec.serviceAccountSelector", p.service_account_selector, e);
    if p.types
        .iter()
        .filter(|t| **t == PolicyType::Ingress)
        .count()
        > 1
        || p.types.iter().filter(|t| **t == PolicyType::Egress).count() > 1
    {
        e.add("spec.types", "a type is listed more than once");
    }
    for (i, r) in p.ingress.iter().enumerate() {
        let path = format!("spec.ingress[{i}]");
        check_rule(&path, r, e);
        if r.destination.as_ref().is_some_and(|d| d.services.is_some()) {
            e.add(
                format!("{path}.destination.services"),
                "not allowed in an ingress rule's destination",
            );
        }
    }
    for (i, r) in p.egress.iter().enumerate() {
        let path = format!("spec.egress[{i}]");
        check_rule(&path, r, e);
        if r.source.as_ref().is_some_and(|s| s.services.is_some()) {
            e.add(
                format!("{path}.source.services"),
                "not allowed in an egress rule's source",
            );
        }
        if r.http.is_some() {
            e.add(
                format!("{path}.http"),
                "HTTP match is not allowed in egress rules",
            );
        }
    }
    let Some(g) = &p.global else { return };
    check_local_selector("spec.namespaceSelector", g.namespace_selector, e);
    // Global policies name services across namespaces, so a namespace is needed.
    let services =
        p.egress
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                Some((
                    format!("spec.egress[{i}].destination"),
                    r.destination.as_ref()?,
                ))
            })
            .chain(p.ingress.iter().enumerate().filter_map(|(i, r)| {
                Some((format!("spec.ingress[{i}].source"), r.source.as_ref()?))
            }));
    for (path, ent) in services {
        if let Some(svc) = &ent.services
            && svc.namespace.as_deref().is_none_or(str::is_empty)
        {
            e.add(
                format!("{path}.services.namespace"),
                "a global policy must name the service's namespace",
            );
        }
    }
    if g.pre_dnat {
        if g.do_not_track {
            e.add("spec.preDNAT", "preDNAT and doNotTrack cannot both be true");
        }
        if !p.egress.is_empty() {
            e.add("spec.egress", "a preDNAT policy cannot have egress rules");
        }
        if p.types.contains(&PolicyType::Egress) {
            e.add("spec.types", "a preDNAT policy cannot have type Egress");
        }
    }
    if (g.pre_dnat || g.do_not_track) && !g.apply_on_forward {
        e.add(
            "spec.applyOnForward",
            "applyOnForward must be true for preDNAT or doNotTrack policies",
        );
    }
}

fn network_policy(p: &NetworkPolicy, e: &mut Errs) {
    check_network_policy_name(&p.metadata, e);
    let s = &p.spec;
    check_policy(
        &PolicyView {
            tier: s.tier.as_deref(),
            selector: s.selector.as_deref(),
            service_account_selector: s.service_account_selector.as_deref(),
            ingress: &s.ingress,
            egress: &s.egress,
            types: &s.types,
            global: None,
        },
        e,
    );
}

fn staged_network_policy(p: &StagedNetworkPolicy, e: &mut Errs) {
    check_network_policy_name(&p.metadata, e);
    let s = &p.spec;
    if s.staged_action == Some(StagedAction::Delete) {
        let only_identity = StagedNetworkPolicySpec {
            tier: s.tier.clone(),
            staged_action: s.staged_action,
            ..Default::default()
        };
        if *s != only_identity {
            e.add("spec", "with stagedAction Delete, only tier may be set");
        }
        return;
    }
    check_policy(
        &PolicyView {
            tier: s.tier.as_deref(),
            selector: s.selector.as_deref(),
            service_account_selector: s.service_account_selector.as_deref(),
            ingress: &s.ingress,
            egress: &s.egress,
            types: &s.types,
            global: None,
        },
        e,
    );
}

fn global_network_policy(p: &GlobalNetworkPolicy, e: &mut Errs) {
    check_global_policy_name(&p.metadata, e);
    let s = &p.spec;
    check_policy(
        &PolicyView {
            tier: s.tier.as_deref(),
            selector: s.selector.as_deref(),
            service_account_selector: s.service_account_selector.as_deref(),
            ingress: &s.ingress,
            egress: &s.egress,
            types: &s.types,
            global: Some(GlobalView {
                namespace_selector: s.namespace_selector.as_deref(),
                pre_dnat: s.pre_dnat == Some(true),
                do_not_track: s.do_not_track == Some(true),
                apply_on_forward: s.apply_on_forward == Some(true),
            }),
        },
        e,
    );
}

fn staged_global_network_policy(p: &StagedGlobalNetworkPolicy, e: &mut Errs) {
    check_global_policy_name(&p.metadata, e);
    let s = &p.spec;
    if s.staged_action == Some(StagedAction::Delete) {
        let only_identity = StagedGlobalNetworkPolicySpec {
            tier: s.tier.clone(),
            staged_action: s.staged_action,
            ..Default::default()
        };
        if *s != only_identity {
            e.add("spec", "with stagedAction Delete, only tier may be set");
        }
        return;
    }
    check_policy(
        &PolicyView {
            tier: s.tier.as_deref(),
            selector: s.selector.as_deref(),
            service_account_selector: s.service_account_selector.as_deref(),
            ingress: &s.ingress,
            egress: &s.egress,
            types: &s.types,
            global: Some(GlobalView {
                namespace_selector: s.namespace_selector.as_deref(),
                pre_dnat: s.pre_dnat == Some(true),
                do_not_track: s.do_not_track == Some(true),
                apply_on_forward: s.apply_on_forward == Some(true),
            }),
        },
        e,
    );
}

fn staged_kubernetes_network_policy(p: &StagedKubernetesNetworkPolicy, e: &mut Errs) {
    let s = &p.spec;
    if s.staged_action == Some(StagedAction::Delete) {
        let only_action = StagedKubernetesNetworkPolicySpec {
            staged_action: s.staged_action,
            ..Default::default()
        };
        if *s != only_action {
            e.add(
                "spec",
                "with stagedAction Delete, no other field may be set",
            );
        }
        return;
    }
    for (i, t) in s.policy_types.iter().enumerate() {
        if t != "Ingress" && t != "Egress" {
            e.add(
                format!("spec.policyTypes[{i}]"),
                format!("{t:?} is not Ingress or Egress"),
            );
        }
    }
    let peers = s
        .ingress
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.from
                .iter()
                .enumerate()
                .map(move |(j, p)| (format!("spec.ingress[{i}].from[{j}]"), p))
        })
        .chain(s.egress.iter().enumerate().flat_map(|(i, r)| {
            r.to.iter()
                .enumerate()
                .map(move |(j, p)| (format!("spec.egress[{i}].to[{j}]"), p))
        }));
    for (path, peer) in peers {
        let Some(b) = &peer.ip_block else { continue };
        let net = match parse_cidr(&b.cidr, false) {
            Ok(n) => Some(n),
            Err(r) => {
                e.add(format!("{path}.ipBlock.cidr"), r);
                None
            }
        };
        for (k, x) in b.except.iter().enumerate() {
            match (parse_cidr(x, false), net) {
                (Err(r), _) => e.add(format!("{path}.ipBlock.except[{k}]"), r),
                (Ok(xn), Some(n)) if !n.contains(&xn) => e.add(
                    format!("{path}.ipBlock.except[{k}]"),
                    format!("{xn} is not inside the block's cidr {n}"),
                ),
                _ => {}
            }
        }
    }
}

fn profile(p: &Profile, e: &mut Errs) {
    for (i, r) in p.spec.ingress.iter().enumerate() {
        check_rule(&format!("spec.ingress[{i}]"), r, e);
    }
    for (i, r) in p.spec.egress.iter().enumerate() {
        check_rule(&format!("spec.egress[{i}]"), r, e);
    }
}

fn tier(t: &Tier, e: &mut Errs) {
    let name = t.metadata.name.as_deref().unwrap_or_default();
    if !name.is_empty() && !is_dns_label(name) {
        e.add(
            "metadata.name",
            format!("tier name {name:?} must be a DNS label (at most 63 characters, no '.')"),
        );
    }
    // Calico's built-in tiers have a fixed order and default action.
    let fixed = match name {
        "default" => Some((1_000_000.0, TierDefaultAction::Deny)),
        "kube-admin" => Some((1_000.0, TierDefaultAction::Pass)),
        "kube-baseline" => Some((10_000_000.0, TierDefaultAction::Pass)),
        _ => None,
    };
    if let Some((order, action)) = fixed {
        if t.spec.order != Some(order) {
            e.add(
                "spec.order",
                format!("the {name:?} tier must have order {order}"),
            );
        }
        if t.spec.default_action.is_some_and(|a| a != action) {
            e.add(
                "spec.defaultAction",
                format!("the {name:?} tier must have defaultAction {action:?}"),
            );
        }
    }
}

validate_with!(NetworkPolicy, network_policy);
validate_with!(StagedNetworkPolicy, staged_network_policy);
validate_with!(GlobalNetworkPolicy, global_network_policy);
validate_with!(StagedGlobalNetworkPolicy, staged_global_network_policy);
validate_with!(
    StagedKubernetesNetworkPolicy,
    staged_kubernetes_network_policy
);
validate_with!(Profile, profile);
validate_with!(Tier, tier);
