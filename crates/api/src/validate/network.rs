//! Pools, BGP, endpoints, nodes and network sets.

use std::net::IpAddr;

use ipnet::IpNet;

use super::names::is_iana_service_name;
use super::net::{
    check_ip_or_cidr_list, is_interface_name, is_mac, parse_cidr, parse_ip_or_cidr, parse_peer_ip,
};
use super::policy::check_selector;
use super::support;
use super::{Errs, FieldError, Validate, ValidationErrors, validate_with};
use crate::kinds::*;

// ---------------------------------------------------------------- IPPool

fn ip_pool(p: &IPPool, e: &mut Errs) {
    let s = &p.spec;
    let net = match parse_cidr(&s.cidr, true) {
        Ok(n) => Some(n),
        Err(r) => {
            e.add("spec.cidr", r);
            None
        }
    };
    let ipip_on = s.ipip_mode.is_some_and(|m| m != IPIPMode::Never);
    let vxlan_on = s.vxlan_mode.is_some_and(|m| m != VXLANMode::Never);
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
                format!("pool {net} is smaller than one block (/{block}); use a prefix of /{block} or shorter"),
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
        if !v4 && ipip_on {
            e.add("spec.ipipMode", "IPIP is not supported on IPv6 pools");
        }
    }
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
            check_selector(path, sel.as_deref(), e);
        }
    }
    support::ip_pool(s, e);
}

/// Rejects pools whose CIDRs overlap, e.g. a new pool against the existing ones. Each error
/// names the later pool in its path and the earlier one in its reason.
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

fn ip_reservation(r: &IPReservation, e: &mut Errs) {
    check_ip_or_cidr_list("spec.reservedCIDRs", &r.spec.reserved_cidrs, e);
}

// ---------------------------------------------------------------- BGP

fn bgp_peer(p: &BGPPeer, e: &mut Errs) {
    let s = &p.spec;
    let set = |v: &Option<String>| v.as_deref().is_some_and(|x| !x.is_empty());
    let has_as = s.as_number.is_some_and(|a| a.0 != 0);
    let peer_addr = match s.peer_ip.as_deref().filter(|x| !x.is_empty()) {
        Some(ip) => match parse_peer_ip(ip) {
            Ok(a) => Some(a),
            Err(r) => {
                e.add("spec.peerIP", r);
                None
            }
        },
        None => None,
    };
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
    if let Some(r) = s.reachable_by.as_deref().filter(|r| !r.is_empty()) {
        match r.parse::<IpAddr>() {
            Err(_) => e.add("spec.reachableBy", format!("{r:?} is not an IP address")),
            Ok(_) if !set(&s.peer_ip) => e.add("spec.reachableBy", "reachableBy needs peerIP"),
            Ok(gw) if peer_addr.is_some_and(|a| a.is_ipv4() != gw.is_ipv4()) => e.add(
                "spec.reachableBy",
                "reachableBy and peerIP are of different address families",
            ),
            Ok(_) => {}
        }
    }
    if s.keep_original_next_hop == Some(true) && s.next_hop_mode.is_some() {
        e.add(
            "spec.keepOriginalNextHop",
            "keepOriginalNextHop and nextHopMode cannot both be set (use nextHopMode)",
        );
    }
    check_selector("spec.nodeSelector", s.node_selector.as_deref(), e);
    check_selector("spec.peerSelector", s.peer_selector.as_deref(), e);
    check_selector(
        "spec.localWorkloadSelector",
        s.local_workload_selector.as_deref(),
        e,
    );
    if let Some(t) = s.ttl_security
        && !(0..=255).contains(&t)
    {
        e.add("spec.ttlSecurity", format!("{t} is not in 0..=255"));
    }
    support::bgp_peer(s, e);
}

/// A BGP community: `AA:NN` (standard, each 0..=65535) or `AA:NN:MM` (large, each u32).
pub fn check_community(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split(':').collect();
    let digits = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let ok = parts.iter().all(digits)
        && match parts.len() {
            2 => parts.iter().all(|p| p.parse::<u16>().is_ok()),
            3 => parts.iter().all(|p| p.parse::<u32>().is_ok()),
            _ => false,
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a community (AA:NN with 16-bit parts or AA:NN:MM with 32-bit parts)"
        ))
    }
}

fn bgp_configuration(c: &BGPConfiguration, e: &mut Errs) {
    let s = &c.spec;
    support::bgp_configuration(c.metadata.name.as_deref().unwrap_or_default(), s, e);
    if let Some(p) = s.listen_port
        && !(1..=65535).contains(&p)
    {
        e.add("spec.listenPort", format!("{p} is not in 1..=65535"));
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
    for (i, iface) in s.ignored_interfaces.iter().enumerate() {
        if !is_interface_name(iface, true) {
            e.add(
                format!("spec.ignoredInterfaces[{i}]"),
                format!("{iface:?} is not an interface name or pattern"),
            );
        }
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
            && let Err(r) = parse_ip_or_cidr(c)
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
                    format!(
                        "{c:?} is neither a community value nor the name of one in spec.communities"
                    ),
                );
            }
        }
    }
}

/// The parts of a BGPFilter rule that Calico's rules look at, for both address families.
struct FilterRuleView<'a> {
    cidr: Option<&'a str>,
    has_match_operator: bool,
    prefix: Option<&'a BGPFilterPrefixLength>,
    accept: bool,
    has_operations: bool,
    interface: Option<&'a str>,
    priority: Option<i64>,
    operations: &'a [BGPFilterOperation],
}

impl<'a> From<&'a BGPFilterRuleV4> for FilterRuleView<'a> {
    fn from(r: &'a BGPFilterRuleV4) -> Self {
        FilterRuleView {
            cidr: r.cidr.as_deref(),
            has_match_operator: r.match_operator.is_some(),
            prefix: r.prefix_length.as_ref(),
            accept: r.action == BGPFilterAction::Accept,
            has_operations: !r.operations.is_empty(),
            interface: r.interface.as_deref(),
            priority: r.priority,
            operations: &r.operations,
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
            interface: r.interface.as_deref(),
            priority: r.priority,
            operations: &r.operations,
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
    if let Some(i) = r.interface
        && !is_interface_name(i, true)
    {
        e.add(
            format!("{path}.interface"),
            format!("{i:?} is not an interface name or pattern"),
        );
    }
    support::bgp_filter_rule(path, r.interface, r.priority, r.operations, e);
}

fn bgp_filter(f: &BGPFilter, e: &mut Errs) {
    let s = &f.spec;
    for (field, rules) in [("exportV4", &s.export_v4), ("importV4", &s.import_v4)] {
        for (i, r) in rules.iter().enumerate() {
            check_bgp_filter_rule(&format!("spec.{field}[{i}]"), r.into(), false, e);
        }
    }
    for (field, rules) in [("exportV6", &s.export_v6), ("importV6", &s.import_v6)] {
        for (i, r) in rules.iter().enumerate() {
            check_bgp_filter_rule(&format!("spec.{field}[{i}]"), r.into(), true, e);
        }
    }
}

// ---------------------------------------------------------------- endpoints and nodes

fn check_port_name(path: &str, name: &str, e: &mut Errs) {
    if !is_iana_service_name(name) {
        e.add(
            path,
            format!("{name:?} is not a valid port name (1 to 15 lower-case letters, digits and '-', with a letter)"),
        );
    }
}

fn host_endpoint(h: &HostEndpoint, e: &mut Errs) {
    let s = &h.spec;
    if s.node.as_deref().is_none_or(str::is_empty) {
        e.add("spec.node", "node is required");
    }
    match s.interface_name.as_deref().filter(|i| !i.is_empty()) {
        None if s.expected_ips.is_empty() => e.add(
            "spec.interfaceName",
            "interfaceName or expectedIPs is required",
        ),
        Some(i) if !is_interface_name(i, false) && i != "*" => e.add(
            "spec.interfaceName",
            format!("{i:?} is not an interface name (or *)"),
        ),
        _ => {}
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
        check_port_name(&format!("spec.ports[{i}].name"), &p.name, e);
        if !(1..=65535).contains(&p.port) {
            e.add(
                format!("spec.ports[{i}].port"),
                format!("{} is not in 1..=65535", p.port),
            );
        }
        if !p.protocol.supports_ports() {
            e.add(
                format!("spec.ports[{i}].protocol"),
                "named ports need protocol TCP, UDP or SCTP",
            );
        }
    }
}

fn is_container_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn workload_endpoint(w: &WorkloadEndpoint, e: &mut Errs) {
    let s = &w.spec;
    let mut networks = Vec::new();
    for (i, n) in s.ip_networks.iter().enumerate() {
        match parse_ip_or_cidr(n) {
            Ok(net) if net.prefix_len() != net.max_prefix_len() => e.add(
                format!("spec.ipNetworks[{i}]"),
                format!("{n} holds more than one address; endpoints take /32 or /128"),
            ),
            Ok(net) => networks.push(net),
            Err(r) => e.add(format!("spec.ipNetworks[{i}]"), r),
        }
    }
    for (field, gw, v4) in [
        ("ipv4Gateway", &s.ipv4_gateway, true),
        ("ipv6Gateway", &s.ipv6_gateway, false),
    ] {
        if let Some(g) = gw.as_deref().filter(|g| !g.is_empty()) {
            match parse_ip_or_cidr(g) {
                Ok(net) if matches!(net, IpNet::V4(_)) == v4 => {}
                _ => e.add(
                    format!("spec.{field}"),
                    format!(
                        "{g:?} is not an {} address",
                        if v4 { "IPv4" } else { "IPv6" }
                    ),
                ),
            }
        }
    }
    for (i, nat) in s.ip_nats.iter().enumerate() {
        let path = format!("spec.ipNATs[{i}]");
        let internal = parse_ip_or_cidr(&nat.internal_ip);
        let external = parse_ip_or_cidr(&nat.external_ip);
        match (&internal, &external) {
            (Err(r), _) => e.add(format!("{path}.internalIP"), r.clone()),
            (_, Err(r)) => e.add(format!("{path}.externalIP"), r.clone()),
            (Ok(a), Ok(b)) if matches!(a, IpNet::V4(_)) != matches!(b, IpNet::V4(_)) => e.add(
                format!("{path}.externalIP"),
                "internalIP and externalIP are of different address families",
            ),
            (Ok(a), Ok(_)) if !networks.iter().any(|n| n.contains(&a.addr())) => e.add(
                format!("{path}.internalIP"),
                format!("{} is not one of the endpoint's ipNetworks", a.addr()),
            ),
            _ => {}
        }
    }
    if let Some(mac) = s.mac.as_deref().filter(|m| !m.is_empty())
        && !is_mac(mac)
    {
        e.add("spec.mac", format!("{mac:?} is not a MAC address"));
    }
    if let Some(id) = s.container_id.as_deref().filter(|c| !c.is_empty())
        && !is_container_id(id)
    {
        e.add(
            "spec.containerID",
            format!("{id:?} is not a container ID (letters, digits and '-')"),
        );
    }
    if let Some(i) = s.interface_name.as_deref().filter(|i| !i.is_empty())
        && !is_interface_name(i, false)
    {
        e.add(
            "spec.interfaceName",
            format!("{i:?} is not an interface name"),
        );
    }
    for (i, p) in s.ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        if !p.protocol.supports_ports() {
            e.add(
                format!("{path}.protocol"),
                "endpoint ports need protocol TCP, UDP or SCTP",
            );
        }
        if p.name.is_empty() {
            if p.host_port.is_none_or(|h| h == 0) {
                e.add(
                    format!("{path}.name"),
                    "a port without a hostPort needs a name",
                );
            }
        } else {
            check_port_name(&format!("{path}.name"), &p.name, e);
        }
        if p.port == 0 {
            e.add(format!("{path}.port"), "port numbers are 1..=65535");
        }
    }
}

fn node(n: &Node, e: &mut Errs) {
    let s = &n.spec;
    let family = |path: &str, value: Option<&str>, v4: bool, e: &mut Errs| {
        if let Some(a) = value.filter(|a| !a.is_empty()) {
            match parse_ip_or_cidr(a) {
                Ok(net) if matches!(net, IpNet::V4(_)) == v4 => {}
                Ok(_) => e.add(
                    path,
                    format!(
                        "{a:?} is not an {} address",
                        if v4 { "IPv4" } else { "IPv6" }
                    ),
                ),
                Err(r) => e.add(path, r),
            }
        }
    };
    if let Some(bgp) = &s.bgp {
        if *bgp == NodeBGPSpec::default() {
            e.add(
                "spec.bgp",
                "must not be empty (omit it when the node runs no BGP)",
            );
        }
        family("spec.bgp.ipv4Address", bgp.ipv4_address.as_deref(), true, e);
        family(
            "spec.bgp.ipv6Address",
            bgp.ipv6_address.as_deref(),
            false,
            e,
        );
        family(
            "spec.bgp.ipv4IPIPTunnelAddr",
            bgp.ipv4_ipip_tunnel_addr.as_deref(),
            true,
            e,
        );
        if let Some(id) = bgp
            .route_reflector_cluster_id
            .as_deref()
            .filter(|i| !i.is_empty())
            && id.parse::<std::net::Ipv4Addr>().is_err()
        {
            e.add(
                "spec.bgp.routeReflectorClusterID",
                format!("{id:?} is not in IPv4 dotted-quad form"),
            );
        }
    }
    family(
        "spec.ipv4VXLANTunnelAddr",
        s.ipv4_vxlan_tunnel_addr.as_deref(),
        true,
        e,
    );
    family(
        "spec.ipv6VXLANTunnelAddr",
        s.ipv6_vxlan_tunnel_addr.as_deref(),
        false,
        e,
    );
    for (field, mac) in [
        ("vxlanTunnelMACAddr", &s.vxlan_tunnel_mac_addr),
        ("vxlanTunnelMACAddrV6", &s.vxlan_tunnel_mac_addr_v6),
    ] {
        if let Some(m) = mac.as_deref().filter(|m| !m.is_empty())
            && !is_mac(m)
        {
            e.add(
                format!("spec.{field}"),
                format!("{m:?} is not a MAC address"),
            );
        }
    }
    for (i, a) in s.addresses.iter().enumerate() {
        if let Err(r) = parse_ip_or_cidr(&a.address) {
            e.add(format!("spec.addresses[{i}].address"), r);
        }
    }
}

/// The namespace label is how Calico maps namespaces internally; sets may not carry it.
fn check_set_labels(meta: &crate::ObjectMeta, e: &mut Errs) {
    if meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(crate::names::LABEL_NAMESPACE))
    {
        e.add(
            "metadata.labels[projectcalico.org/namespace]",
            "projectcalico.org/namespace is reserved and cannot be set",
        );
    }
}

fn network_set(n: &NetworkSet, e: &mut Errs) {
    check_set_labels(&n.metadata, e);
    check_ip_or_cidr_list("spec.nets", &n.spec.nets, e);
}

fn global_network_set(n: &GlobalNetworkSet, e: &mut Errs) {
    check_set_labels(&n.metadata, e);
    check_ip_or_cidr_list("spec.nets", &n.spec.nets, e);
}

validate_with!(IPPool, ip_pool);
validate_with!(IPReservation, ip_reservation);
validate_with!(BGPPeer, bgp_peer);
validate_with!(BGPConfiguration, bgp_configuration);
validate_with!(BGPFilter, bgp_filter);
validate_with!(HostEndpoint, host_endpoint);
validate_with!(WorkloadEndpoint, workload_endpoint);
validate_with!(Node, node);
validate_with!(NetworkSet, network_set);
validate_with!(GlobalNetworkSet, global_network_set);
