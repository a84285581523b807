//! `FelixConfiguration` (skeleton generated once by tools/gen_skeletons.py, maintained by hand).

#![allow(clippy::upper_case_acronyms)]

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixAwsSrcDstCheck {
    DoNothing,
    Enable,
    Disable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixBpfAttachType {
    TC,
    TCX,
    Netkit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixBpfConnectTimeLoadBalancing {
    TCP,
    Enabled,
    Disabled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixBpfConntrackLogLevel {
    Off,
    Debug,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixBpfConntrackMode {
    Auto,
    Userspace,
    BPFProgram,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BPFConntrackTimers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_grace_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generic_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_established: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_fins_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_reset_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_syn_sent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_timeout: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixBpfJITHardening {
    Auto,
    Strict,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixBpfOverlayHostSourceIP {
    TunnelAddress,
    HostAddress,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtoPort {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    pub port: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixFlowLogsPolicyEvaluationMode {
    None,
    Continuous,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthTimeoutOverride {
    pub name: String,
    pub timeout: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixIptablesBackend {
    Legacy,
    NFT,
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixLocalSubnetL2Reachability {
    Disabled,
    PodsAndLoadBalancers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixNatOutgoingExclusions {
    IPPoolsOnly,
    IPPoolsAndHostIPs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixNftablesFlowTableOffload {
    All,
    Disabled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixNftablesMode {
    Disabled,
    Enabled,
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FelixPrometheusMetricsClientAuth {
    RequireAndVerifyClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    NoClientCert,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTableRange {
    pub max: i64,
    pub min: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTableIDRange {
    pub max: i64,
    pub min: i64,
}

#[derive(CustomResource)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "FelixConfiguration",
    plural = "felixconfigurations",
    singular = "felixconfiguration",
    derive = "PartialEq",
    derive = "Default"
)]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FelixConfigurationSpec {
    #[serde(
        rename = "allowIPIPPacketsFromWorkloads",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_ipip_packets_from_workloads: Option<bool>,
    #[serde(
        rename = "allowVXLANPacketsFromWorkloads",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_vxlan_packets_from_workloads: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_src_dst_check: Option<FelixAwsSrcDstCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_attach_type: Option<FelixBpfAttachType>,
    #[serde(rename = "bpfCTLBLogFilter", skip_serializing_if = "Option::is_none")]
    pub bpf_ctlb_log_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_connect_time_load_balancing: Option<FelixBpfConnectTimeLoadBalancing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_connect_time_load_balancing_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_conntrack_log_level: Option<FelixBpfConntrackLogLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_conntrack_mode: Option<FelixBpfConntrackMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_conntrack_timeouts: Option<BPFConntrackTimers>,
    #[serde(
        rename = "bpfDSROptoutCIDRs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub bpf_dsr_optout_cidrs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_data_iface_pattern: Option<String>,
    #[serde(
        rename = "bpfDisableGROForIfaces",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_disable_gro_for_ifaces: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_disable_unprivileged: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_enabled: Option<bool>,
    #[serde(rename = "bpfEnforceRPF", skip_serializing_if = "Option::is_none")]
    pub bpf_enforce_rpf: Option<String>,
    #[serde(
        rename = "bpfExcludeCIDRsFromNAT",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub bpf_exclude_cidrs_from_nat: Vec<String>,
    #[serde(
        rename = "bpfExportBufferSizeMB",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_export_buffer_size_mb: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_ext_to_service_connmark: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_external_service_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bpf_force_track_packets_from_ifaces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_host_conntrack_bypass: Option<bool>,
    #[serde(
        rename = "bpfHostNetworkedNATWithoutCTLB",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_host_networked_nat_without_ctlb: Option<Enablement>,
    #[serde(rename = "bpfIPFragTimeout", skip_serializing_if = "Option::is_none")]
    pub bpf_ip_frag_timeout: Option<String>,
    #[serde(
        rename = "bpfIPFragmentReassemblyEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_ip_fragment_reassembly_enabled: Option<bool>,
    #[serde(rename = "bpfJITHardening", skip_serializing_if = "Option::is_none")]
    pub bpf_jit_hardening: Option<FelixBpfJITHardening>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_kube_proxy_healthz_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_kube_proxy_iptables_cleanup_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_kube_proxy_min_sync_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_l3_iface_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bpf_log_filters: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_maglev_max_endpoints_per_service: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_maglev_max_services: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_conntrack: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_conntrack_cleanup_queue: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_conntrack_scaling: Option<String>,
    #[serde(rename = "bpfMapSizeIPSets", skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_ip_sets: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_if_state: Option<i64>,
    #[serde(
        rename = "bpfMapSizeNATAffinity",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_nat_affinity: Option<i64>,
    #[serde(
        rename = "bpfMapSizeNATBackend",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_nat_backend: Option<i64>,
    #[serde(
        rename = "bpfMapSizeNATFrontend",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_map_size_nat_frontend: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_per_cpu_conntrack: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_route: Option<i64>,
    #[serde(
        rename = "bpfOverlayHostSourceIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub bpf_overlay_host_source_ip: Option<FelixBpfOverlayHostSourceIP>,
    #[serde(rename = "bpfPSNATPorts", skip_serializing_if = "Option::is_none")]
    pub bpf_psnat_ports: Option<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_policy_debug_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_profiling: Option<Enablement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_redirect_to_peer: Option<Enablement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_v2_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_insert_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataplane_driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataplane_watchdog_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_disable_log_dropping: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_memory_profile_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_simulate_calc_graph_hang_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_simulate_dataplane_apply_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_simulate_dataplane_hang_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_endpoint_to_host_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_route_protocol: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_route_source_address: Option<String>,
    #[serde(
        rename = "deviceRouteSourceAddressIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_route_source_address_ipv6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_conntrack_invalid_check: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_reporting_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_reporting_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_status_path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_nodes_list: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failsafe_inbound_host_ports: Vec<ProtoPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failsafe_outbound_host_ports: Vec<ProtoPort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_detect_override: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<String>,
    #[serde(rename = "floatingIPs", skip_serializing_if = "Option::is_none")]
    pub floating_ips: Option<Enablement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_logs_collector_debug_trace: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_logs_flush_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_logs_goldmane_server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_logs_local_reporter: Option<Enablement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_logs_policy_evaluation_mode: Option<FelixFlowLogsPolicyEvaluationMode>,
    #[serde(rename = "genericXDPEnabled", skip_serializing_if = "Option::is_none")]
    pub generic_xdp_enabled: Option<bool>,
    #[serde(rename = "goGCThreshold", skip_serializing_if = "Option::is_none")]
    pub go_gc_threshold: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go_max_procs: Option<i64>,
    #[serde(rename = "goMemoryLimitMB", skip_serializing_if = "Option::is_none")]
    pub go_memory_limit_mb: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub health_timeout_overrides: Vec<HealthTimeoutOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_exclude: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_refresh_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_forwarding: Option<Enablement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipip_enabled: Option<bool>,
    #[serde(rename = "ipipMTU", skip_serializing_if = "Option::is_none")]
    pub ipip_mtu: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipsets_refresh_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables_backend: Option<FelixIptablesBackend>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables_filter_allow_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables_filter_deny_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables_lock_probe_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables_mangle_allow_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables_mark_mask: Option<i64>,
    #[serde(
        rename = "iptablesNATOutgoingInterfaceFilter",
        skip_serializing_if = "Option::is_none"
    )]
    pub iptables_nat_outgoing_interface_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables_post_write_check_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables_refresh_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_elevated_route_priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_normal_route_priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_elevated_route_priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_normal_route_priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_support: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio_ambient_mode: Option<Enablement>,
    #[serde(rename = "istioDSCPMark", skip_serializing_if = "Option::is_none")]
    pub istio_dscp_mark: Option<Dscp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kube_node_port_ranges: Vec<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_migration_route_convergence_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_subnet_l2_reachability: Option<FelixLocalSubnetL2Reachability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_subnet_l2_reachability_refresh_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_action_rate_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_action_rate_limit_burst: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_debug_filename_regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_file_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_severity_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_severity_sys: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ipset_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu_iface_pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat_outgoing_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat_outgoing_exclusions: Option<FelixNatOutgoingExclusions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat_port_range: Option<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netlink_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nftables_filter_allow_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nftables_filter_deny_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nftables_flow_table_data_iface_pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Disabled"))]
    pub nftables_flow_table_offload: Option<FelixNftablesFlowTableOffload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nftables_mangle_allow_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nftables_mark_mask: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Auto"))]
    pub nftables_mode: Option<FelixNftablesMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nftables_refresh_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openstack_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_sync_path_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program_cluster_routes: Option<ProgramClusterRoutes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_go_metrics_enabled: Option<bool>,
    #[serde(
        rename = "prometheusMetricsCAFile",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus_metrics_ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_client_auth: Option<FelixPrometheusMetricsClientAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_process_metrics_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_wire_guard_metrics_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove_external_routes: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<String>,
    #[serde(rename = "reportingTTL", skip_serializing_if = "Option::is_none")]
    pub reporting_ttl: Option<String>,
    #[serde(rename = "requireMTUFile", skip_serializing_if = "Option::is_none")]
    pub require_mtu_file: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_refresh_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_sync_disabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_table_range: Option<RouteTableRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_table_ranges: Vec<RouteTableIDRange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_loop_prevention: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar_acceleration_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_reporting_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_reporting_initial_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_reporting_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_internal_dataplane_driver: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vxlan_enabled: Option<bool>,
    #[serde(rename = "vxlanMTU", skip_serializing_if = "Option::is_none")]
    pub vxlan_mtu: Option<i64>,
    #[serde(rename = "vxlanMTUV6", skip_serializing_if = "Option::is_none")]
    pub vxlan_mtuv6: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<i64>,
    #[serde(rename = "vxlanVNI", skip_serializing_if = "Option::is_none")]
    pub vxlan_vni: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows_manage_firewall_rules: Option<Enablement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_enabled_v6: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_host_encryption_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_interface_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_interface_name_v6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_keep_alive: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_listening_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_listening_port_v6: Option<i64>,
    #[serde(rename = "wireguardMTU", skip_serializing_if = "Option::is_none")]
    pub wireguard_mtu: Option<i64>,
    #[serde(rename = "wireguardMTUV6", skip_serializing_if = "Option::is_none")]
    pub wireguard_mtuv6: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_routing_rule_priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_threading_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_source_spoofing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_refresh_interval: Option<String>,
}
