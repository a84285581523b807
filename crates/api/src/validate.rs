//! Calico's validation rules. Every failure names the field path and the reason; a resource
//! reports all its failures at once.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::kinds::*;
use crate::{CalicoResource, ObjectMeta};

/// One failed rule: `spec.blockSize: 33 is not in 20..=32 for an IPv4 pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// All failures of one resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    pub kind: &'static str,
    pub name: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: ", self.kind, self.name)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Calico's validation of one resource.
pub trait Validate {
    fn validate(&self) -> Result<(), ValidationErrors>;
}

/// Collects failures while walking a resource.
#[derive(Default)]
struct Errs(Vec<FieldError>);

impl Errs {
    fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }
    fn finish<R: CalicoResource>(self, r: &R) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors {
                kind: R::KIND,
                name: r.meta().name.clone().unwrap_or_default(),
                errors: self.0,
            })
        }
    }
}

/// DNS-1123 label: at most 63 characters of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain: at most 253 characters, dot-separated labels.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_meta<R: CalicoResource>(meta: &ObjectMeta, e: &mut Errs) {
    match meta.name.as_deref() {
        None | Some("") => e.add("metadata.name", "a name is required"),
        Some(name) if !is_dns_subdomain(name) => e.add(
            "metadata.name",
            format!("{name:?} is not a valid name: use lower-case letters, digits, '-' and '.', at most 253 characters, starting and ending with a letter or digit"),
        ),
        _ => {}
    }
    match meta.namespace.as_deref() {
        Some(ns) if R::NAMESPACED && !is_dns_label(ns) => e.add(
            "metadata.namespace",
            format!("{ns:?} is not a valid namespace (a DNS label)"),
        ),
        Some(ns) if !R::NAMESPACED && !ns.is_empty() => e.add(
            "metadata.namespace",
            format!(
                "{} is not namespaced, but namespace {ns:?} was given",
                R::KIND
            ),
        ),
        _ => {}
    }
}

/// Parses a CIDR as Calico writes it. `strict` rejects host bits (`10.0.0.1/8`).
pub fn parse_cidr(s: &str, strict: bool) -> Result<IpNet, String> {
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not a valid CIDR"))?;
    if strict && net.trunc() != net {
        return Err(format!("{s:?} has host bits set; use {}", net.trunc()));
    }
    Ok(net)
}

/// An IP address or a CIDR (a bare address means a single host).
pub fn parse_ip_or_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    parse_cidr(s, false)
}

fn check_selector(path: &str, sel: Option<&str>, e: &mut Errs) {
    if let Some(s) = sel
        && let Err(err) = calico_selector::Selector::parse(s)
    {
        e.add(path, format!("invalid selector {s:?}: {err}"));
    }
}

/// Like [`check_selector`], and also rejects `global()`, which Calico allows only in an
/// EntityRule's namespaceSelector.
fn check_local_selector(path: &str, sel: Option<&str>, e: &mut Errs) {
    if sel.is_some_and(|s| s.contains("global(")) {
        e.add(
            path,
            "global() may only be used in a rule's namespaceSelector",
        );
    } else {
        check_selector(path, sel, e);
    }
}

fn check_nets(path: &str, nets: &[String], e: &mut Errs) {
    for (i, n) in nets.iter().enumerate() {
        if let Err(r) = parse_ip_or_cidr(n) {
            e.add(format!("{path}[{i}]"), r);
        }
    }
}

// ---------------------------------------------------------------- IPPool

impl Validate for IPPool {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        let s = &self.spec;
        let net = match parse_cidr(&s.cidr, true) {
            Ok(n) => Some(n),
            Err(r) => {
                e.add("spec.cidr", r);
                None
            }
        };
        if let Some(net) = net {
            let v4 = matches!(net, IpNet::V4(_));
            let (lo, hi, default, fam) = if v4 {
                (20, 32, 26, "IPv4")
            } else {
                (116, 128, 122, "IPv6")
            };
            if let Some(b) = s.block_size.filter(|b| *b != 0)
                && !(lo..=hi).contains(&b)
            {
                e.add(
                    "spec.blockSize",
                    format!("{b} is not in {lo}..={hi} for an {fam} pool"),
                );
            }
            let block = s.block_size.filter(|b| *b != 0).unwrap_or(default);
            if s.disabled != Some(true) && i64::from(net.prefix_len()) > block {
                e.add(
                    "spec.cidr",
                    format!("pool {net} is smaller than its block size /{block}; the prefix must be /{block} or shorter"),
                );
            }
            let link_local: IpNet = if v4 { "169.254.0.0/16" } else { "fe80::/10" }
                .parse()
                .expect("constant CIDR");
            if link_local.contains(&net.network()) || net.contains(&link_local.network()) {
                e.add(
                    "spec.cidr",
                    format!("{net} overlaps the link-local range {link_local}"),
                );
            }
            if !v4 && s.ipip_mode.is_some_and(|m| m != IPIPMode::Never) {
                e.add("spec.ipipMode", "IPIP is not supported on IPv6 pools");
            }
        }
        let ipip_on = s.ipip_mode.is_some_and(|m| m != IPIPMode::Never);
        let vxlan_on = s.vxlan_mode.is_some_and(|m| m != VXLANMode::Never);
        if ipip_on && vxlan_on {
            e.add(
                "spec.vxlanMode",
                "ipipMode and vxlanMode cannot both be enabled",
            );
        }
        let uses = &s.allowed_uses;
        if uses.contains(&IPPoolAllowedUse::LoadBalancer) {
            if uses.iter().any(|u| *u != IPPoolAllowedUse::LoadBalancer) {
                e.add(
                    "spec.allowedUses",
                    "LoadBalancer cannot be combined with Workload or Tunnel",
                );
            }
            if ipip_on || vxlan_on {
                e.add(
                    "spec.allowedUses",
                    "a LoadBalancer pool cannot use IPIP or VXLAN",
                );
            }
            if s.disable_bgp_export == Some(true) {
                e.add(
                    "spec.disableBGPExport",
                    "a LoadBalancer pool cannot disable BGP export",
                );
            }
            if s.node_selector.as_deref().is_some_and(|n| n != "all()") {
                e.add(
                    "spec.nodeSelector",
                    "a LoadBalancer pool must have nodeSelector all()",
                );
            }
        }
        if uses.contains(&IPPoolAllowedUse::Tunnel)
            && s.namespace_selector
                .as_deref()
                .is_some_and(|n| !n.is_empty())
        {
            e.add(
                "spec.namespaceSelector",
                "a pool used for tunnel addresses cannot have a namespaceSelector",
            );
        }
        for (path, sel) in [
            ("spec.nodeSelector", &s.node_selector),
            ("spec.namespaceSelector", &s.namespace_selector),
        ] {
            if sel.as_deref().is_some_and(|x| x.contains("global(")) {
                e.add(path, "global() is not valid in an IPPool selector");
            } else {
                check_selector(path, sel.as_deref(), &mut e);
            }
        }
        e.finish(self)
    }
}

/// Rejects pools whose CIDRs overlap, e.g. a new pool against the existing ones. Each error
/// names the pool (`IPPool "b"`) in its path.
pub fn validate_pools_disjoint(pools: &[IPPool]) -> Result<(), Vec<FieldError>> {
    let parsed: Vec<(String, IpNet)> = pools
        .iter()
        .filter_map(|p| {
            let net = parse_cidr(&p.spec.cidr, false).ok()?;
            Some((p.metadata.name.clone().unwrap_or_default(), net))
        })
        .collect();
    let mut errors = Vec::new();
    for (i, (name_a, a)) in parsed.iter().enumerate() {
        for (name_b, b) in &parsed[i + 1..] {
            if a.contains(&b.network()) || b.contains(&a.network()) {
                errors.push(FieldError {
                    path: format!("IPPool {name_b:?}: spec.cidr"),
                    reason: format!("{b} overlaps {a} of IPPool {name_a:?}"),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------- policy

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

fn check_entity(path: &str, ent: &EntityRule, protocol: Option<&Protocol>, e: &mut Errs) {
    check_local_selector(&format!("{path}.selector"), ent.selector.as_deref(), e);
    check_local_selector(
        &format!("{path}.notSelector"),
        ent.not_selector.as_deref(),
        e,
    );
    check_selector(
        &format!("{path}.namespaceSelector"),
        ent.namespace_selector.as_deref(),
        e,
    );
    if let Some(sa) = &ent.service_accounts {
        check_local_selector(
            &format!("{path}.serviceAccounts.selector"),
            sa.selector.as_deref(),
            e,
        );
    }
    check_nets(&format!("{path}.nets"), &ent.nets, e);
    check_nets(&format!("{path}.notNets"), &ent.not_nets, e);
    for (field, ports) in [("ports", &ent.ports), ("notPorts", &ent.not_ports)] {
        if !ports.is_empty() && !protocol.is_some_and(Protocol::supports_ports) {
            e.add(
                format!("{path}.{field}"),
                "ports need protocol TCP, UDP, SCTP or UDPLite on the rule",
            );
        }
    }
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
    for (field, icmp) in [("icmp", &r.icmp), ("notICMP", &r.not_icmp)] {
        if let Some(icmp) = icmp {
            if !r.protocol.as_ref().is_some_and(Protocol::is_icmp) {
                e.add(
                    format!("{path}.{field}"),
                    "ICMP fields need protocol ICMP or ICMPv6",
                );
            }
            check_icmp(&format!("{path}.{field}"), icmp, e);
        }
    }
    for (field, p) in [("protocol", &r.protocol), ("notProtocol", &r.not_protocol)] {
        match (p.as_ref().map(Protocol::number), r.ip_version) {
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
    if r.http.is_some() {
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
    }
    if let Some(src) = &r.source {
        check_entity(&format!("{path}.source"), src, r.protocol.as_ref(), e);
    }
    if let Some(dst) = &r.destination {
        check_entity(&format!("{path}.destination"), dst, r.protocol.as_ref(), e);
    }
}

fn check_rules(ingress: &[Rule], egress: &[Rule], e: &mut Errs) {
    for (i, r) in ingress.iter().enumerate() {
        check_rule(&format!("spec.ingress[{i}]"), r, e);
    }
    for (i, r) in egress.iter().enumerate() {
        check_rule(&format!("spec.egress[{i}]"), r, e);
    }
}

fn check_tier(tier: Option<&str>, e: &mut Errs) {
    if let Some(t) = tier
        && !t.is_empty()
        && !is_dns_label(t)
    {
        e.add("spec.tier", format!("{t:?} is not a valid tier name"));
    }
}

macro_rules! policy_validate {
    ($($ty:ty),*) => {$(
        impl Validate for $ty {
            fn validate(&self) -> Result<(), ValidationErrors> {
                let mut e = Errs::default();
                check_meta::<Self>(&self.metadata, &mut e);
                let s = &self.spec;
                check_tier(s.tier.as_deref(), &mut e);
                check_local_selector("spec.selector", s.selector.as_deref(), &mut e);
                check_local_selector("spec.serviceAccountSelector", s.service_account_selector.as_deref(), &mut e);
                check_rules(&s.ingress, &s.egress, &mut e);
                e.finish(self)
            }
        }
    )*};
}
policy_validate!(NetworkPolicy, StagedNetworkPolicy);

macro_rules! global_policy_validate {
    ($($ty:ty),*) => {$(
        impl Validate for $ty {
            fn validate(&self) -> Result<(), ValidationErrors> {
                let mut e = Errs::default();
                check_meta::<Self>(&self.metadata, &mut e);
                let s = &self.spec;
                check_tier(s.tier.as_deref(), &mut e);
                check_local_selector("spec.selector", s.selector.as_deref(), &mut e);
                check_local_selector("spec.namespaceSelector", s.namespace_selector.as_deref(), &mut e);
                check_local_selector("spec.serviceAccountSelector", s.service_account_selector.as_deref(), &mut e);
                check_rules(&s.ingress, &s.egress, &mut e);
                if s.pre_dnat == Some(true) {
                    if s.do_not_track == Some(true) {
                        e.add("spec.preDNAT", "preDNAT and doNotTrack cannot both be true");
                    }
                    if !s.egress.is_empty() {
                        e.add("spec.egress", "a preDNAT policy cannot have egress rules");
                    }
                    if s.types.contains(&PolicyType::Egress) {
                        e.add("spec.types", "a preDNAT policy cannot have type Egress");
                    }
                }
                if (s.pre_dnat == Some(true) || s.do_not_track == Some(true)) && s.apply_on_forward != Some(true) {
                    e.add("spec.applyOnForward", "applyOnForward must be true for preDNAT or doNotTrack policies");
                }
                e.finish(self)
            }
        }
    )*};
}
global_policy_validate!(GlobalNetworkPolicy, StagedGlobalNetworkPolicy);

impl Validate for Profile {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        check_rules(&self.spec.ingress, &self.spec.egress, &mut e);
        e.finish(self)
    }
}

impl Validate for Tier {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        let name = self.metadata.name.as_deref().unwrap_or_default();
        if name.contains('.') {
            e.add(
                "metadata.name",
                format!("tier name {name:?} must be a DNS label (no '.')"),
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
            if self.spec.order != Some(order) {
                e.add(
                    "spec.order",
                    format!("the {name:?} tier must have order {order}"),
                );
            }
            if self.spec.default_action.is_some_and(|a| a != action) {
                e.add(
                    "spec.defaultAction",
                    format!("the {name:?} tier must have defaultAction {action:?}"),
                );
            }
        }
        e.finish(self)
    }
}

// ---------------------------------------------------------------- BGP

/// `host`, `host:port` or `[v6]:port`, as Calico's BGPPeer `peerIP` allows.
fn check_peer_ip(s: &str) -> Result<(), String> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("{s:?} is not an IP address, IPv4:port or [IPv6]:port");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        s.rsplit_once(':').ok_or_else(bad)?
    };
    host.parse::<IpAddr>().map_err(|_| bad())?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

impl Validate for BGPPeer {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        let s = &self.spec;
        if let Some(ip) = s.peer_ip.as_deref()
            && let Err(r) = check_peer_ip(ip)
        {
            e.add("spec.peerIP", r);
        }
        let set = |v: &Option<String>| v.as_deref().is_some_and(|x| !x.is_empty());
        let has_as = s.as_number.is_some_and(|a| a.0 != 0);
        if set(&s.node) && set(&s.node_selector) {
            e.add(
                "spec.nodeSelector",
                "node and nodeSelector cannot both be set",
            );
        }
        if set(&s.peer_ip) && set(&s.peer_selector) {
            e.add(
                "spec.peerSelector",
                "peerIP and peerSelector cannot both be set",
            );
        }
        if set(&s.peer_selector) && has_as {
            e.add(
                "spec.asNumber",
                "asNumber must be empty when peerSelector is set",
            );
        }
        if set(&s.local_workload_selector) {
            if set(&s.peer_ip) {
                e.add(
                    "spec.peerIP",
                    "peerIP must be empty when localWorkloadSelector is set",
                );
            }
            if set(&s.peer_selector) {
                e.add(
                    "spec.peerSelector",
                    "peerSelector must be empty when localWorkloadSelector is set",
                );
            }
            if !has_as {
                e.add(
                    "spec.asNumber",
                    "asNumber is required when localWorkloadSelector is set",
                );
            }
        }
        if set(&s.reachable_by) && !set(&s.peer_ip) {
            e.add("spec.reachableBy", "reachableBy needs peerIP");
        }
        if let Some(r) = s.reachable_by.as_deref().filter(|r| !r.is_empty())
            && r.parse::<IpAddr>().is_err()
        {
            e.add("spec.reachableBy", format!("{r:?} is not an IP address"));
        }
        if s.keep_original_next_hop == Some(true) && s.next_hop_mode.is_some() {
            e.add(
                "spec.keepOriginalNextHop",
                "keepOriginalNextHop and nextHopMode cannot both be set (use nextHopMode)",
            );
        }
        check_selector("spec.nodeSelector", s.node_selector.as_deref(), &mut e);
        check_selector("spec.peerSelector", s.peer_selector.as_deref(), &mut e);
        check_selector(
            "spec.localWorkloadSelector",
            s.local_workload_selector.as_deref(),
            &mut e,
        );
        if let Some(t) = s.ttl_security
            && !(0..=255).contains(&t)
        {
            e.add("spec.ttlSecurity", format!("{t} is not in 0..=255"));
        }
        e.finish(self)
    }
}

/// A BGP community: `AA:NN` (standard, each 0..=65535) or `AA:NN:MM` (large, each u32).
pub fn check_community(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split(':').collect();
    let ok = match parts.len() {
        2 => parts.iter().all(|p| p.parse::<u16>().is_ok()),
        3 => parts.iter().all(|p| p.parse::<u32>().is_ok()),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?} is not a community (AA:NN or AA:NN:MM)"))
    }
}

impl Validate for BGPConfiguration {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        let s = &self.spec;
        if let Some(p) = s.listen_port
            && !(1..=65535).contains(&p)
        {
            e.add("spec.listenPort", format!("{p} is not in 1..=65535"));
        }
        for (field, cidrs) in [
            (
                "serviceClusterIPs",
                s.service_cluster_ips
                    .iter()
                    .map(|b| &b.cidr)
                    .collect::<Vec<_>>(),
            ),
            (
                "serviceExternalIPs",
                s.service_external_ips.iter().map(|b| &b.cidr).collect(),
            ),
            (
                "serviceLoadBalancerIPs",
                s.service_load_balancer_ips
                    .iter()
                    .map(|b| &b.cidr)
                    .collect(),
            ),
        ] {
            for (i, c) in cidrs.into_iter().enumerate() {
                if let Some(c) = c
                    && let Err(r) = parse_ip_or_cidr(c)
                {
                    e.add(format!("spec.{field}[{i}].cidr"), r);
                }
            }
        }
        if s.node_to_node_mesh_enabled == Some(false) {
            if s.node_mesh_password.is_some() {
                e.add(
                    "spec.nodeMeshPassword",
                    "cannot be set when nodeToNodeMeshEnabled is false",
                );
            }
            if s.node_mesh_max_restart_time.is_some() {
                e.add(
                    "spec.nodeMeshMaxRestartTime",
                    "cannot be set when nodeToNodeMeshEnabled is false",
                );
            }
        }
        if !s.communities.is_empty() && s.prefix_advertisements.is_empty() {
            e.add(
                "spec.communities",
                "communities are defined but no prefixAdvertisements use them",
            );
        }
        for (i, c) in s.communities.iter().enumerate() {
            if let Some(v) = c.value.as_deref()
                && let Err(r) = check_community(v)
            {
                e.add(format!("spec.communities[{i}].value"), r);
            }
        }
        for (i, p) in s.prefix_advertisements.iter().enumerate() {
            if let Some(c) = p.cidr.as_deref()
                && let Err(r) = parse_cidr(c, false)
            {
                e.add(format!("spec.prefixAdvertisements[{i}].cidr"), r);
            }
            for (j, c) in p.communities.iter().enumerate() {
                let named = s
                    .communities
                    .iter()
                    .any(|k| k.name.as_deref() == Some(c.as_str()));
                if !named && check_community(c).is_err() {
                    e.add(
                        format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                        format!("{c:?} is neither a community value nor the name of one in spec.communities"),
                    );
                }
            }
        }
        e.finish(self)
    }
}

// ---------------------------------------------------------------- endpoints and sets

impl Validate for HostEndpoint {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        let s = &self.spec;
        if s.node.as_deref().is_none_or(str::is_empty) {
            e.add("spec.node", "node is required");
        }
        if s.interface_name.as_deref().is_none_or(str::is_empty) && s.expected_ips.is_empty() {
            e.add(
                "spec.interfaceName",
                "interfaceName or expectedIPs is required",
            );
        }
        for (i, ip) in s.expected_ips.iter().enumerate() {
            if ip.parse::<IpAddr>().is_err() {
                e.add(
                    format!("spec.expectedIPs[{i}]"),
                    format!("{ip:?} is not an IP address"),
                );
            }
        }
        for (i, p) in s.ports.iter().enumerate() {
            if !(0..=65535).contains(&p.port) {
                e.add(
                    format!("spec.ports[{i}].port"),
                    format!("{} is not in 0..=65535", p.port),
                );
            }
            if !p.protocol.supports_ports() {
                e.add(
                    format!("spec.ports[{i}].protocol"),
                    "named ports need protocol TCP, UDP or SCTP",
                );
            }
        }
        e.finish(self)
    }
}

impl Validate for WorkloadEndpoint {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        let s = &self.spec;
        for (i, n) in s.ip_networks.iter().enumerate() {
            if let Err(r) = parse_cidr(n, false) {
                e.add(format!("spec.ipNetworks[{i}]"), r);
            }
        }
        for (field, gw) in [
            ("ipv4Gateway", &s.ipv4_gateway),
            ("ipv6Gateway", &s.ipv6_gateway),
        ] {
            if let Some(g) = gw
                && g.parse::<IpAddr>().is_err()
            {
                e.add(
                    format!("spec.{field}"),
                    format!("{g:?} is not an IP address"),
                );
            }
        }
        if let Some(mac) = s.mac.as_deref()
            && !is_mac(mac)
        {
            e.add("spec.mac", format!("{mac:?} is not a MAC address"));
        }
        e.finish(self)
    }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
}

impl Validate for Node {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        if let Some(bgp) = &self.spec.bgp {
            if let Some(a) = bgp.ipv4_address.as_deref() {
                match parse_ip_or_cidr(a) {
                    Ok(IpNet::V4(_)) => {}
                    Ok(_) => e.add(
                        "spec.bgp.ipv4Address",
                        format!("{a:?} is not an IPv4 address"),
                    ),
                    Err(r) => e.add("spec.bgp.ipv4Address", r),
                }
            }
            if let Some(a) = bgp.ipv6_address.as_deref() {
                match parse_ip_or_cidr(a) {
                    Ok(IpNet::V6(_)) => {}
                    Ok(_) => e.add(
                        "spec.bgp.ipv6Address",
                        format!("{a:?} is not an IPv6 address"),
                    ),
                    Err(r) => e.add("spec.bgp.ipv6Address", r),
                }
            }
        }
        e.finish(self)
    }
}

macro_rules! nets_validate {
    ($($ty:ty),*) => {$(
        impl Validate for $ty {
            fn validate(&self) -> Result<(), ValidationErrors> {
                let mut e = Errs::default();
                check_meta::<Self>(&self.metadata, &mut e);
                check_nets("spec.nets", &self.spec.nets, &mut e);
                e.finish(self)
            }
        }
    )*};
}
nets_validate!(NetworkSet, GlobalNetworkSet);

impl Validate for IPReservation {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        check_nets("spec.reservedCIDRs", &self.spec.reserved_cidrs, &mut e);
        e.finish(self)
    }
}

/// Kinds whose typed fields already carry every rule Calico checks beyond the name.
macro_rules! meta_only_validate {
    ($($ty:ty),*) => {$(
        impl Validate for $ty {
            fn validate(&self) -> Result<(), ValidationErrors> {
                let mut e = Errs::default();
                check_meta::<Self>(&self.metadata, &mut e);
                e.finish(self)
            }
        }
    )*};
}
meta_only_validate!(
    KubeControllersConfiguration,
    ClusterInformation,
    CalicoNodeStatus,
    IPAMHandle
);

// ---------------------------------------------------------------- the rest

/// The parts of a BGPFilter rule that Calico's rules look at, for both address families.
struct FilterRuleView<'a> {
    cidr: Option<&'a str>,
    has_match_operator: bool,
    prefix: Option<&'a BGPFilterPrefixLength>,
    accept: bool,
    has_operations: bool,
}

impl<'a> From<&'a BGPFilterRuleV4> for FilterRuleView<'a> {
    fn from(r: &'a BGPFilterRuleV4) -> Self {
        FilterRuleView {
            cidr: r.cidr.as_deref(),
            has_match_operator: r.match_operator.is_some(),
            prefix: r.prefix_length.as_ref(),
            accept: r.action == BGPFilterAction::Accept,
            has_operations: !r.operations.is_empty(),
        }
    }
}

impl<'a> From<&'a BGPFilterRuleV6> for FilterRuleView<'a> {
    fn from(r: &'a BGPFilterRuleV6) -> Self {
        FilterRuleView {
            cidr: r.cidr.as_deref(),
            has_match_operator: r.match_operator.is_some(),
            prefix: r.prefix_length.as_ref(),
            accept: r.action == BGPFilterAction::Accept,
            has_operations: !r.operations.is_empty(),
        }
    }
}

fn check_bgp_filter_rule(path: &str, r: FilterRuleView<'_>, v6: bool, e: &mut Errs) {
    let cidr = r.cidr.filter(|c| !c.is_empty());
    if cidr.is_some() != r.has_match_operator {
        e.add(
            format!("{path}.matchOperator"),
            "cidr and matchOperator must both be set or both be empty",
        );
    }
    let max_len = if v6 { 128 } else { 32 };
    if let Some(c) = cidr {
        match parse_cidr(c, false) {
            Ok(IpNet::V6(_)) if !v6 => {
                e.add(format!("{path}.cidr"), format!("{c:?} is not an IPv4 CIDR"))
            }
            Ok(IpNet::V4(_)) if v6 => {
                e.add(format!("{path}.cidr"), format!("{c:?} is not an IPv6 CIDR"))
            }
            Ok(_) => {}
            Err(reason) => e.add(format!("{path}.cidr"), reason),
        }
    }
    if let Some(p) = r.prefix {
        if cidr.is_none() {
            e.add(format!("{path}.prefixLength"), "prefixLength needs cidr");
        }
        for (field, v) in [("min", p.min), ("max", p.max)] {
            if let Some(v) = v
                && !(0..=max_len).contains(&v)
            {
                e.add(
                    format!("{path}.prefixLength.{field}"),
                    format!("{v} is not in 0..={max_len}"),
                );
            }
        }
        if let (Some(min), Some(max)) = (p.min, p.max)
            && min > max
        {
            e.add(
                format!("{path}.prefixLength"),
                format!("min {min} is greater than max {max}"),
            );
        }
    }
    if r.has_operations && !r.accept {
        e.add(
            format!("{path}.operations"),
            "operations may only be used with action Accept",
        );
    }
}

impl Validate for BGPFilter {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        let s = &self.spec;
        for (field, rules) in [("exportV4", &s.export_v4), ("importV4", &s.import_v4)] {
            for (i, r) in rules.iter().enumerate() {
                check_bgp_filter_rule(&format!("spec.{field}[{i}]"), r.into(), false, &mut e);
            }
        }
        for (field, rules) in [("exportV6", &s.export_v6), ("importV6", &s.import_v6)] {
            for (i, r) in rules.iter().enumerate() {
                check_bgp_filter_rule(&format!("spec.{field}[{i}]"), r.into(), true, &mut e);
            }
        }
        e.finish(self)
    }
}

impl Validate for FelixConfiguration {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        let s = &self.spec;
        let name = self.metadata.name.as_deref().unwrap_or_default();
        if (name == "default" || name.starts_with("node.")) && s.node_selector.is_some() {
            e.add(
                "spec.nodeSelector",
                "must not be set on the default or a per-node (node.*) FelixConfiguration",
            );
        }
        check_selector("spec.nodeSelector", s.node_selector.as_deref(), &mut e);
        if s.route_table_range.is_some() && !s.route_table_ranges.is_empty() {
            e.add(
                "spec.routeTableRanges",
                "routeTableRange and routeTableRanges cannot both be set",
            );
        }
        if let Some(r) = &s.route_table_range
            && !(1 <= r.min && r.min <= r.max && r.max <= 250)
        {
            e.add(
                "spec.routeTableRange",
                format!("{}..{} is not a range within 1..=250", r.min, r.max),
            );
        }
        for (i, r) in s.route_table_ranges.iter().enumerate() {
            if r.min < 1 {
                e.add(
                    format!("spec.routeTableRanges[{i}].min"),
                    "min must be at least 1",
                );
            }
            if r.min > r.max {
                e.add(
                    format!("spec.routeTableRanges[{i}]"),
                    "min must not be greater than max",
                );
            }
        }
        for (field, value, v6) in [
            ("natOutgoingAddress", &s.nat_outgoing_address, false),
            (
                "deviceRouteSourceAddress",
                &s.device_route_source_address,
                false,
            ),
            (
                "deviceRouteSourceAddressIPv6",
                &s.device_route_source_address_ipv6,
                true,
            ),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                let ok = match v.parse::<IpAddr>() {
                    Ok(IpAddr::V4(_)) => !v6,
                    Ok(IpAddr::V6(_)) => v6,
                    Err(_) => false,
                };
                if !ok {
                    let fam = if v6 { "IPv6" } else { "IPv4" };
                    e.add(
                        format!("spec.{field}"),
                        format!("{v:?} is not an {fam} address"),
                    );
                }
            }
        }
        e.finish(self)
    }
}

impl Validate for StagedKubernetesNetworkPolicy {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        let s = &self.spec;
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
            if let Some(b) = &peer.ip_block {
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
        e.finish(self)
    }
}

macro_rules! cidr_validate {
    ($($ty:ty),*) => {$(
        impl Validate for $ty {
            fn validate(&self) -> Result<(), ValidationErrors> {
                let mut e = Errs::default();
                check_meta::<Self>(&self.metadata, &mut e);
                if let Err(r) = parse_cidr(&self.spec.cidr, true) {
                    e.add("spec.cidr", r);
                }
                e.finish(self)
            }
        }
    )*};
}
cidr_validate!(IPAMBlock, BlockAffinity);

impl Validate for IPAMConfiguration {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errs::default();
        check_meta::<Self>(&self.metadata, &mut e);
        if let Some(m) = self.spec.max_blocks_per_host
            && m < 0
        {
            e.add("spec.maxBlocksPerHost", format!("{m} is negative"));
        }
        e.finish(self)
    }
}
