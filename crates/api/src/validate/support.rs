//! What calico-rs implements of the networking kinds: a field calico-rs would accept and then
//! not act on is refused here, with its name and the reason, so `calicoctl apply` and the
//! controllers refuse it before anything is written. One place lists these refusals
//! (docs/resources.md is the per-field table); the rules that are Calico's own (ranges,
//! syntax) stay beside the kind in `network.rs`.

use crate::kinds::*;

use super::Errs;

/// Marks the reason of every refusal, so a user tells "calico-rs lacks it" from "invalid".
const NOT_IMPLEMENTED: &str = "not implemented by calico-rs";

/// Calico's range of route priorities (`ipv4NormalRoutePriority`, Felix's equivalents).
const ROUTE_PRIORITY: std::ops::RangeInclusive<i64> = 1..=2_147_483_646;

/// The kernel's own metric of IPv6 routes installed without one, which is what the agent does.
const KERNEL_IPV6_METRIC: i64 = 1024;

/// Calico's log severity names (libcalico-go's validator).
pub(crate) const LOG_SEVERITIES: [&str; 5] = ["Debug", "Info", "Warning", "Error", "Fatal"];

/// Refuses a field, unless Calico's own rules already found it invalid (one reason per path).
fn refuse(e: &mut Errs, path: impl Into<String>, why: &str) {
    let path = path.into();
    if !e.0.iter().any(|f| f.path == path) {
        e.add(path, format!("{NOT_IMPLEMENTED}: {why}"));
    }
}

fn set(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|x| !x.trim().is_empty())
}

/// A Go duration (`90s`, `2m`, `1h30m`) that is not negative, as Calico parses these fields.
pub(crate) fn check_duration(path: &str, v: Option<&str>, e: &mut Errs) {
    let Some(v) = v else { return };
    match crate::GoDuration::parse(v) {
        Ok(d) if d.as_nanos() < 0 => e.add(path, format!("{v:?} is negative")),
        Ok(_) => {}
        Err(err) => e.add(path, format!("{v:?} is not a duration: {err}")),
    }
}

pub(super) fn ip_pool(s: &IPPoolSpec, e: &mut Errs) {
    if s.namespace_selector
        .as_deref()
        .is_some_and(|n| !n.trim().is_empty() && n.trim() != "all()")
    {
        refuse(
            e,
            "spec.namespaceSelector",
            "calico-ipam does not read namespace labels, so it cannot choose pools by namespace \
             (leave it empty or all())",
        );
    }
}

pub(super) fn bgp_peer(s: &BGPPeerSpec, e: &mut Errs) {
    if s.source_address == Some(SourceAddress::None) {
        refuse(
            e,
            "spec.sourceAddress",
            "the BGP speaker always connects from the node's address (UseNodeIP)",
        );
    }
    if let Some(n) = s.num_allowed_local_as_numbers {
        if n < 0 {
            e.add("spec.numAllowedLocalASNumbers", format!("{n} is negative"));
        } else if n > 0 {
            refuse(
                e,
                "spec.numAllowedLocalASNumbers",
                "the BGP speaker drops every route whose AS path holds its own AS (0)",
            );
        }
    }
    if set(&s.reachable_by) {
        refuse(
            e,
            "spec.reachableBy",
            "the agent installs no route towards a peer through a gateway",
        );
    }
    if set(&s.local_workload_selector) {
        refuse(
            e,
            "spec.localWorkloadSelector",
            "the BGP speaker does not peer with workloads",
        );
    }
    if s.reverse_peering == Some(ReversePeering::Manual) {
        refuse(
            e,
            "spec.reversePeering",
            "it applies to workload peerings (localWorkloadSelector), which calico-rs does not have",
        );
    }
    check_duration("spec.keepaliveTime", s.keepalive_time.as_deref(), e);
    check_duration("spec.maxRestartTime", s.max_restart_time.as_deref(), e);
}

pub(super) fn bgp_configuration(name: &str, s: &BGPConfigurationSpec, e: &mut Errs) {
    let global = name == "default";
    if !global && !name.starts_with("node.") {
        refuse(
            e,
            "metadata.name",
            "calico-node reads the BGPConfiguration named default and node.<nodename> only",
        );
    }
    if !global {
        // The agent reads these from `default` only (as Calico's are cluster-wide).
        let global_only = [
            ("asNumber", s.as_number.is_some()),
            (
                "nodeToNodeMeshEnabled",
                s.node_to_node_mesh_enabled.is_some(),
            ),
            ("nodeMeshPassword", s.node_mesh_password.is_some()),
            (
                "nodeMeshMaxRestartTime",
                s.node_mesh_max_restart_time.is_some(),
            ),
            ("communities", !s.communities.is_empty()),
            ("serviceClusterIPs", !s.service_cluster_ips.is_empty()),
            ("serviceExternalIPs", !s.service_external_ips.is_empty()),
            (
                "serviceLoadBalancerIPs",
                !s.service_load_balancer_ips.is_empty(),
            ),
        ];
        for (field, present) in global_only {
            if present {
                e.add(
                    format!("spec.{field}"),
                    "is read from the BGPConfiguration named default only",
                );
            }
        }
    }
    if let Some(l) = s.log_severity_screen.as_deref() {
        if !LOG_SEVERITIES.contains(&l) {
            e.add(
                "spec.logSeverityScreen",
                format!("{l:?} is not one of {}", LOG_SEVERITIES.join(", ")),
            );
        } else if l != "Info" {
            refuse(
                e,
                "spec.logSeverityScreen",
                "the BGP speaker logs at calico-node's level (FelixConfiguration \
                 logSeverityScreen); leave this at Info",
            );
        }
    }
    check_duration(
        "spec.nodeMeshMaxRestartTime",
        s.node_mesh_max_restart_time.as_deref(),
        e,
    );
    if s.service_load_balancer_aggregation == Some(Enablement::Disabled) {
        refuse(
            e,
            "spec.serviceLoadBalancerAggregation",
            "serviceLoadBalancerIPs are advertised as the configured ranges (Enabled), with /32s \
             only for Services with externalTrafficPolicy: Local",
        );
    }
    if s.bind_mode == Some(BindMode::NodeIP) {
        refuse(
            e,
            "spec.bindMode",
            "the BGP speaker listens on every address of the node (None)",
        );
    }
    if s.program_cluster_routes
        .is_some_and(|p| p != ProgramClusterRoutes::Enabled)
    {
        refuse(
            e,
            "spec.programClusterRoutes",
            "calico-node always programs the routes it learns over BGP (Enabled)",
        );
    }
    for (field, v, inert) in [
        (
            "ipv4NormalRoutePriority",
            s.ipv4_normal_route_priority,
            None,
        ),
        (
            "ipv6NormalRoutePriority",
            s.ipv6_normal_route_priority,
            Some(KERNEL_IPV6_METRIC),
        ),
    ] {
        let Some(v) = v else { continue };
        if !ROUTE_PRIORITY.contains(&v) {
            e.add(
                format!("spec.{field}"),
                format!(
                    "{v} is not in {}..={}",
                    ROUTE_PRIORITY.start(),
                    ROUTE_PRIORITY.end()
                ),
            );
        } else if Some(v) != inert {
            refuse(
                e,
                format!("spec.{field}"),
                "routes are installed with the kernel's default metric (0 for IPv4, 1024 for \
                 IPv6)",
            );
        }
    }
    for (field, v) in [
        ("localWorkloadPeeringIPV4", &s.local_workload_peering_ipv4),
        ("localWorkloadPeeringIPV6", &s.local_workload_peering_ipv6),
    ] {
        if set(v) {
            refuse(
                e,
                format!("spec.{field}"),
                "the BGP speaker does not peer with workloads",
            );
        }
    }
}

/// A BGPFilter rule's fields that calico-rs cannot honour (the same for both families).
pub(super) fn bgp_filter_rule(
    path: &str,
    interface: Option<&str>,
    priority: Option<i64>,
    operations: &[BGPFilterOperation],
    e: &mut Errs,
) {
    if interface.is_some_and(|i| !i.is_empty()) {
        refuse(
            e,
            format!("{path}.interface"),
            "the BGP speaker holds no outgoing interface per route",
        );
    }
    if priority.is_some() {
        refuse(
            e,
            format!("{path}.priority"),
            "learned routes carry no kernel priority",
        );
    }
    for (i, op) in operations.iter().enumerate() {
        if op.set_priority.is_some() {
            refuse(
                e,
                format!("{path}.operations[{i}].setPriority"),
                "learned routes carry no kernel priority",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{AnyResource, from_value};

    /// Validation errors of one YAML document (defaults applied, as calicoctl does).
    fn errors(yaml: &str) -> Vec<String> {
        let v: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let mut r: AnyResource = from_value(v).unwrap();
        r.set_defaults();
        match r.validate() {
            Ok(()) => vec![],
            Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn doc(kind: &str, name: &str, spec: &str) -> String {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n{spec}"
        )
    }

    /// The one error of `spec`, which must name `path` and, for a refusal, say calico-rs lacks it.
    fn refused(kind: &str, name: &str, spec: &str, path: &str) {
        let errs = errors(&doc(kind, name, spec));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(&format!("{path}: not implemented by calico-rs: ")),
            "{errs:?}"
        );
    }

    fn invalid(kind: &str, name: &str, spec: &str, path: &str, reason: &str) {
        let errs = errors(&doc(kind, name, spec));
        assert_eq!(errs, vec![format!("{path}: {reason}")]);
    }

    fn accepted(kind: &str, name: &str, spec: &str) {
        assert_eq!(errors(&doc(kind, name, spec)), Vec::<String>::new());
    }

    #[test]
    fn ip_pool_namespace_selector_is_refused_unless_it_selects_everything() {
        let pool = |extra: &str| format!("  cidr: 10.1.0.0/16\n{extra}");
        refused(
            "IPPool",
            "p",
            &pool("  allowedUses: [Workload]\n  namespaceSelector: \"team == 'a'\"\n"),
            "spec.namespaceSelector",
        );
        accepted(
            "IPPool",
            "p",
            &pool("  allowedUses: [Workload]\n  namespaceSelector: all()\n"),
        );
        accepted("IPPool", "p", &pool("  assignmentMode: Manual\n"));
    }

    #[test]
    fn bgp_peer_fields_without_an_implementation_are_refused_by_name() {
        let peer = |extra: &str| format!("  peerIP: 192.0.2.1\n  asNumber: 64513\n{extra}");
        for (extra, path) in [
            ("  sourceAddress: None\n", "spec.sourceAddress"),
            (
                "  numAllowedLocalASNumbers: 2\n",
                "spec.numAllowedLocalASNumbers",
            ),
            ("  reachableBy: 192.0.2.254\n", "spec.reachableBy"),
            ("  reversePeering: Manual\n", "spec.reversePeering"),
        ] {
            refused("BGPPeer", "p", &peer(extra), path);
        }
        refused(
            "BGPPeer",
            "p",
            "  asNumber: 64513\n  localWorkloadSelector: app == 'bgp'\n",
            "spec.localWorkloadSelector",
        );
        accepted(
            "BGPPeer",
            "p",
            &peer(
                "  sourceAddress: UseNodeIP\n  numAllowedLocalASNumbers: 0\n  reversePeering: Auto\n  \
                 keepaliveTime: 30s\n  maxRestartTime: 2m\n",
            ),
        );
    }

    #[test]
    fn bgp_peer_durations_are_go_durations() {
        let peer = |extra: &str| format!("  peerIP: 192.0.2.1\n  asNumber: 64513\n{extra}");
        let errs = errors(&doc("BGPPeer", "p", &peer("  keepaliveTime: 30 seconds\n")));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.keepaliveTime: \"30 seconds\" is not a duration"),
            "{errs:?}"
        );
        invalid(
            "BGPPeer",
            "p",
            &peer("  maxRestartTime: -5s\n"),
            "spec.maxRestartTime",
            "\"-5s\" is negative",
        );
        invalid(
            "BGPPeer",
            "p",
            &peer("  numAllowedLocalASNumbers: -1\n"),
            "spec.numAllowedLocalASNumbers",
            "-1 is negative",
        );
    }

    #[test]
    fn bgp_configuration_fields_without_an_implementation_are_refused_by_name() {
        for (extra, path) in [
            ("  bindMode: NodeIP\n", "spec.bindMode"),
            (
                "  programClusterRoutes: Disabled\n",
                "spec.programClusterRoutes",
            ),
            (
                "  ipv4NormalRoutePriority: 1024\n",
                "spec.ipv4NormalRoutePriority",
            ),
            (
                "  ipv6NormalRoutePriority: 512\n",
                "spec.ipv6NormalRoutePriority",
            ),
            (
                "  localWorkloadPeeringIPV4: 169.254.0.179\n",
                "spec.localWorkloadPeeringIPV4",
            ),
            (
                "  localWorkloadPeeringIPV6: 'fe80::179'\n",
                "spec.localWorkloadPeeringIPV6",
            ),
            (
                "  serviceLoadBalancerAggregation: Disabled\n",
                "spec.serviceLoadBalancerAggregation",
            ),
            ("  logSeverityScreen: Debug\n", "spec.logSeverityScreen"),
        ] {
            refused("BGPConfiguration", "default", extra, path);
        }
        refused(
            "BGPConfiguration",
            "my-config",
            "  listenPort: 1790\n",
            "metadata.name",
        );
        accepted(
            "BGPConfiguration",
            "default",
            "  bindMode: None\n  programClusterRoutes: Enabled\n  ipv6NormalRoutePriority: 1024\n  \
             ignoredInterfaces: ['eth9*']\n  logSeverityScreen: Info\n  \
             serviceClusterIPs: [{cidr: 10.96.0.0/12}]\n  nodeMeshMaxRestartTime: 120s\n",
        );
    }

    #[test]
    fn bgp_configuration_values_are_checked_as_calico_checks_them() {
        invalid(
            "BGPConfiguration",
            "default",
            "  logSeverityScreen: Loud\n",
            "spec.logSeverityScreen",
            "\"Loud\" is not one of Debug, Info, Warning, Error, Fatal",
        );
        invalid(
            "BGPConfiguration",
            "default",
            "  ipv4NormalRoutePriority: 0\n",
            "spec.ipv4NormalRoutePriority",
            "0 is not in 1..=2147483646",
        );
        let errs = errors(&doc(
            "BGPConfiguration",
            "default",
            "  nodeMeshMaxRestartTime: 2 minutes\n",
        ));
        assert!(
            errs.len() == 1 && errs[0].starts_with("spec.nodeMeshMaxRestartTime: "),
            "{errs:?}"
        );
    }

    #[test]
    fn cluster_wide_bgp_fields_are_refused_on_a_node_configuration() {
        for (extra, path) in [
            ("  asNumber: 64600\n", "spec.asNumber"),
            (
                "  nodeToNodeMeshEnabled: false\n",
                "spec.nodeToNodeMeshEnabled",
            ),
            (
                "  serviceClusterIPs: [{cidr: 10.96.0.0/12}]\n",
                "spec.serviceClusterIPs",
            ),
            (
                "  serviceExternalIPs: [{cidr: 203.0.113.0/24}]\n",
                "spec.serviceExternalIPs",
            ),
            (
                "  serviceLoadBalancerIPs: [{cidr: 198.51.100.0/24}]\n",
                "spec.serviceLoadBalancerIPs",
            ),
        ] {
            invalid(
                "BGPConfiguration",
                "node.n1",
                extra,
                path,
                "is read from the BGPConfiguration named default only",
            );
        }
        accepted(
            "BGPConfiguration",
            "node.n1",
            "  listenPort: 1790\n  prefixAdvertisements: [{cidr: 10.1.0.0/16, communities: ['65000:1']}]\n",
        );
    }

    #[test]
    fn bgp_filter_interface_priority_and_set_priority_are_refused_by_name() {
        refused(
            "BGPFilter",
            "f",
            "  exportV4:\n  - action: Reject\n    interface: 'cali*'\n",
            "spec.exportV4[0].interface",
        );
        refused(
            "BGPFilter",
            "f",
            "  importV6:\n  - action: Reject\n    priority: 10\n",
            "spec.importV6[0].priority",
        );
        refused(
            "BGPFilter",
            "f",
            "  importV4:\n  - action: Accept\n    operations: [{setPriority: {value: 5}}]\n",
            "spec.importV4[0].operations[0].setPriority",
        );
        accepted(
            "BGPFilter",
            "f",
            "  exportV4:\n  - action: Accept\n    cidr: 10.0.0.0/8\n    matchOperator: In\n    \
             operations: [{addCommunity: {value: '65000:1'}}]\n",
        );
    }
}
