//! Configuration kinds and the IPAM state kinds.

use std::net::IpAddr;

use ipnet::IpNet;

use super::names::is_dns_label;
use super::net::{parse_cidr, parse_ip_or_cidr};
use super::policy::check_selector;
use super::{Errs, Validate, ValidationErrors, validate_with};
use crate::kinds::*;

/// Felix programs at most this many route tables in total.
const ROUTE_TABLES_MAX: i64 = 0xffff;
/// OpenStack regions become part of a namespace name `openstack-region-<region>`.
const OPENSTACK_REGION_MAX: usize = 63 - "openstack-region-".len();

fn felix_configuration(f: &FelixConfiguration, e: &mut Errs) {
    let s = &f.spec;
    let name = f.metadata.name.as_deref().unwrap_or_default();
    if (name == "default" || name.starts_with("node.")) && s.node_selector.is_some() {
        e.add(
            "spec.nodeSelector",
            "must not be set on the default or a per-node (node.*) FelixConfiguration",
        );
    }
    check_selector("spec.nodeSelector", s.node_selector.as_deref(), e);
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
            format!(
                "{}..{} is not a range of route tables within 1..=250",
                r.min, r.max
            ),
        );
    }
    let mut tables = 0;
    for (i, r) in s.route_table_ranges.iter().enumerate() {
        if r.min < 1 {
            e.add(
                format!("spec.routeTableRanges[{i}].min"),
                "route table indices start at 1",
            );
        }
        if r.min > r.max {
            e.add(
                format!("spec.routeTableRanges[{i}]"),
                "min must not be greater than max",
            );
        }
        if r.max > i64::from(u32::MAX) {
            e.add(
                format!("spec.routeTableRanges[{i}].max"),
                "route table indices end at 4294967295",
            );
        }
        tables += (r.max - r.min + 1).max(0);
    }
    if tables > ROUTE_TABLES_MAX {
        e.add(
            "spec.routeTableRanges",
            format!("{tables} route tables; at most {ROUTE_TABLES_MAX}"),
        );
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
    if s.kube_node_port_ranges.len() > 7 {
        e.add(
            "spec.kubeNodePortRanges",
            format!(
                "{} ranges; at most 7 (iptables multiport limit)",
                s.kube_node_port_ranges.len()
            ),
        );
    }
    for (i, p) in s.kube_node_port_ranges.iter().enumerate() {
        if p.is_named() {
            e.add(
                format!("spec.kubeNodePortRanges[{i}]"),
                "node port ranges cannot be named ports",
            );
        }
    }
    for (i, c) in s.external_nodes_list.iter().enumerate() {
        match parse_ip_or_cidr(c) {
            Ok(IpNet::V4(_)) => {}
            Ok(_) => e.add(
                format!("spec.externalNodesList[{i}]"),
                format!("{c:?} is not an IPv4 CIDR"),
            ),
            Err(r) => e.add(format!("spec.externalNodesList[{i}]"), r),
        }
    }
    if let Some(region) = s.openstack_region.as_deref().filter(|r| !r.is_empty()) {
        if region.len() > OPENSTACK_REGION_MAX {
            e.add(
                "spec.openstackRegion",
                format!(
                    "{} characters; at most {OPENSTACK_REGION_MAX}",
                    region.len()
                ),
            );
        } else if !is_dns_label(region) {
            e.add(
                "spec.openstackRegion",
                format!("{region:?} is not a DNS label"),
            );
        }
    }
    for (i, o) in s.health_timeout_overrides.iter().enumerate() {
        let ok = !o.name.is_empty()
            && o.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b' ' | b'-'));
        if !ok {
            e.add(
                format!("spec.healthTimeoutOverrides[{i}].name"),
                format!(
                    "{:?} may hold only letters, digits, '_', '-' and spaces",
                    o.name
                ),
            );
        }
    }
    // calico-node refuses it on every node (docs/felixconfiguration.md): refuse it here too.
    if s.policy_sync_path_prefix
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        e.add(
            "spec.policySyncPathPrefix",
            "the policy sync API (for application-layer policy) is not implemented by calico-rs",
        );
    }
}

fn ipam_configuration(c: &IPAMConfiguration, e: &mut Errs) {
    // As Calico: IPAM reads only the object named default.
    let name = c.metadata.name.as_deref().unwrap_or_default();
    if name != "default" {
        e.add(
            "metadata.name",
            format!(
                "{name:?}: the IPAMConfiguration must be named default (the only one IPAM reads)"
            ),
        );
    }
    if let Some(m) = c.spec.max_blocks_per_host
        && m < 0
    {
        e.add("spec.maxBlocksPerHost", format!("{m} is negative"));
    }
    // Accepted fields must act: these two have no effect in calico-rs, so they are refused.
    if let Some(secs) = c.spec.ip_cooldown_seconds
        && secs != 0
    {
        e.add(
            "spec.ipCooldownSeconds",
            format!("{secs}: not implemented by calico-rs (a released address is free at once); leave it unset or 0"),
        );
    }
    if c.spec.kube_virt_vm_address_persistence == Some(Enablement::Enabled) {
        e.add(
            "spec.kubeVirtVMAddressPersistence",
            "Enabled: not implemented by calico-rs (no KubeVirt integration)",
        );
    }
}

fn ipam_block(b: &IPAMBlock, e: &mut Errs) {
    if let Err(r) = parse_cidr(&b.spec.cidr, true) {
        e.add("spec.cidr", r);
    }
}

fn block_affinity(a: &BlockAffinity, e: &mut Errs) {
    if let Err(r) = parse_cidr(&a.spec.cidr, true) {
        e.add("spec.cidr", r);
    }
    if a.spec.deleted {
        e.add("spec.deleted", "cannot be set to true");
    }
}

fn ipam_handle(h: &IPAMHandle, e: &mut Errs) {
    for block in h.spec.block.keys() {
        if parse_cidr(block, true).is_err() {
            e.add(
                format!("spec.block[{block}]"),
                format!("{block:?} is not a block CIDR"),
            );
        }
    }
}

fn calico_node_status(s: &CalicoNodeStatus, e: &mut Errs) {
    if let Some(p) = s.spec.update_period_seconds
        && p < 0
    {
        e.add("spec.updatePeriodSeconds", format!("{p} is negative"));
    }
}

fn nothing_more<T>(_: &T, _: &mut Errs) {}

/// The durations of a KubeControllersConfiguration must be Go durations: the controllers
/// read them (an unreadable leakGracePeriod would stop IPAM garbage collection).
fn kube_controllers_configuration(k: &KubeControllersConfiguration, e: &mut Errs) {
    let c = &k.spec.controllers;
    let node = c.node.as_ref();
    let durations = [
        (
            "spec.controllers.node.leakGracePeriod",
            node.and_then(|n| n.leak_grace_period.as_ref()),
        ),
        (
            "spec.controllers.node.reconcilerPeriod",
            node.and_then(|n| n.reconciler_period.as_ref()),
        ),
        (
            "spec.controllers.namespace.reconcilerPeriod",
            c.namespace
                .as_ref()
                .and_then(|n| n.reconciler_period.as_ref()),
        ),
        (
            "spec.controllers.policy.reconcilerPeriod",
            c.policy.as_ref().and_then(|n| n.reconciler_period.as_ref()),
        ),
        (
            "spec.controllers.serviceAccount.reconcilerPeriod",
            c.service_account
                .as_ref()
                .and_then(|n| n.reconciler_period.as_ref()),
        ),
        (
            "spec.controllers.workloadEndpoint.reconcilerPeriod",
            c.workload_endpoint
                .as_ref()
                .and_then(|n| n.reconciler_period.as_ref()),
        ),
        (
            "spec.etcdV3CompactionPeriod",
            k.spec.etcd_v3_compaction_period.as_ref(),
        ),
    ];
    for (path, value) in durations {
        if let Some(v) = value
            && crate::GoDuration::parse(v.trim()).is_err()
        {
            e.add(
                path,
                format!("{v:?} is not a duration (e.g. 15m, 1h30m, 90s, 0)"),
            );
        }
    }
}

validate_with!(FelixConfiguration, felix_configuration);
validate_with!(IPAMConfiguration, ipam_configuration);
validate_with!(IPAMBlock, ipam_block);
validate_with!(BlockAffinity, block_affinity);
validate_with!(IPAMHandle, ipam_handle);
validate_with!(CalicoNodeStatus, calico_node_status);
validate_with!(KubeControllersConfiguration, kube_controllers_configuration);
// Its typed fields (enums, numbers) already carry every rule Calico checks.
validate_with!(ClusterInformation, nothing_more);
