//! FelixConfiguration as the agent applies it: which fields act, which are refused, and the
//! values in force for this node.
//!
//! Precedence is Felix's: a `FELIX_<FIELD>` environment variable (the field name upper-cased,
//! e.g. `FELIX_HEALTHPORT`) wins over the node's own resource `node.<nodename>`, which wins
//! over the global `default`; a field set nowhere keeps Felix's default. The agent re-reads
//! the resources on every reconcile round, so a change applies at run time.
//!
//! Every field of the kind is in [`FIELDS`], marked honoured, refused or not applicable
//! (`docs/felixconfiguration.md` is the same table). A refused field that is set to anything
//! but its inert value (e.g. `wireguardEnabled: true`) is a [`Refusal`]: the agent logs it as
//! an error naming the field and reports it in readiness and `calicoctl node status`.
//!
//! The policy fields (`failsafe*HostPorts`, `defaultEndpointToHostAction`, `interfacePrefix`)
//! are read by the policy dataplane (`calico_policy::felix`, with the same precedence), not
//! here; [`check_policy_environment`] refuses a bad `FELIX_*` value for them at start.

use std::time::Duration;

use serde_json::Value;

use crate::snapshot::parse_duration_secs;

/// Felix's default `prometheusMetricsPort`.
pub const DEFAULT_METRICS_PORT: u16 = 9091;
/// Felix's default `healthPort`.
pub const DEFAULT_HEALTH_PORT: u16 = 9099;
/// Felix's default `healthHost`.
pub const DEFAULT_HEALTH_HOST: &str = "localhost";
/// Felix's default `routeRefreshInterval`.
pub const DEFAULT_ROUTE_REFRESH: Duration = Duration::from_secs(90);
/// Felix's default `reportingInterval`.
pub const DEFAULT_REPORTING_INTERVAL: Duration = Duration::from_secs(30);
/// Felix's default `interfacePrefix`.
pub const DEFAULT_INTERFACE_PREFIX: &str = calico_api::names::WORKLOAD_IFACE_PREFIX;

/// One HTTP endpoint the agent may serve (metrics or health).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub enabled: bool,
    /// Empty: every address of the host.
    pub host: String,
    pub port: u16,
}

/// A field the agent does not honour, set to a value that would need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `FelixConfiguration default`, `FelixConfiguration node.n1` or `FELIX_X` (environment).
    pub source: String,
    /// `spec.<field>` (or the variable's name).
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: refused: {}",
            self.source, self.field, self.reason
        )
    }
}

/// The FelixConfiguration values in force for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FelixSettings {
    /// `logSeverityScreen` as a tracing level (`debug`, `info`, `warn`, `error`); `None`: not
    /// set anywhere, the start-up level (`CALICO_LOG_LEVEL`) stays.
    pub log_level: Option<String>,
    pub metrics: Listen,
    pub health: Listen,
    pub ipv6_support: bool,
    /// `None`: `routeRefreshInterval: 0s`, no periodic refresh.
    pub route_refresh: Option<Duration>,
    /// `None`: `reportingInterval: 0s`, no status reports.
    pub reporting_interval: Option<Duration>,
    /// `interfacePrefix`, passed through to the policy dataplane.
    pub interface_prefix: String,
    /// `vxlanPort`, `vxlanVNI`, `vxlanMTU`, `vxlanMTUV6` (`crate::tunnel`).
    pub vxlan: crate::tunnel::VxlanSettings,
    /// `natOutgoingAddress`: SNAT to this address instead of masquerading.
    pub nat_outgoing_address: Option<std::net::IpAddr>,
    /// `natPortRange` (`min`, `max`): source ports of masqueraded TCP and UDP.
    pub nat_port_range: Option<(u16, u16)>,
    /// `mtuIfacePattern` (validated as a regular expression).
    pub mtu_iface_pattern: String,
    /// `ipipMTU`, `vxlanMTU`, `vxlanMTUV6` (the pod MTU when that encapsulation is in use).
    pub encap_mtus: calico_dataplane::mtu::EncapMtus,
    /// Refused fields, and fields whose value does not parse (those keep their default).
    pub refused: Vec<Refusal>,
}

impl Default for FelixSettings {
    fn default() -> Self {
        FelixSettings {
            log_level: None,
            metrics: Listen {
                enabled: false,
                host: String::new(),
                port: DEFAULT_METRICS_PORT,
            },
            health: Listen {
                enabled: false,
                host: DEFAULT_HEALTH_HOST.into(),
                port: DEFAULT_HEALTH_PORT,
            },
            ipv6_support: true,
            route_refresh: Some(DEFAULT_ROUTE_REFRESH),
            reporting_interval: Some(DEFAULT_REPORTING_INTERVAL),
            interface_prefix: DEFAULT_INTERFACE_PREFIX.into(),
            vxlan: crate::tunnel::VxlanSettings::default(),
            nat_outgoing_address: None,
            nat_port_range: None,
            mtu_iface_pattern: calico_dataplane::mtu::DEFAULT_IFACE_PATTERN.into(),
            encap_mtus: calico_dataplane::mtu::EncapMtus::default(),
            refused: vec![],
        }
    }
}

/// What the agent does with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// The agent acts on it (the text says where).
    Honoured(&'static str),
    /// Refused unless it has its inert value.
    Refused { inert: Inert, reason: &'static str },
    /// Tunes a mechanism this agent does not have; accepted and has no effect.
    NotApplicable(&'static str),
}

/// The value of a refused field that asks for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inert {
    /// `false` (feature switches).
    False,
    /// `true` (`useInternalDataplaneDriver`).
    True,
    /// The empty string (paths, names).
    Empty,
    /// Only `Disabled` (`Enabled`/`Disabled` switches).
    Disabled,
    /// Only this value (case-insensitive), the default of an enumeration.
    Text(&'static str),
}

impl Inert {
    fn accepts(self, v: &Value) -> bool {
        match (self, v) {
            (_, Value::Null) => true,
            (Inert::False, Value::Bool(b)) => !b,
            (Inert::False, Value::String(s)) => s.eq_ignore_ascii_case("false"),
            (Inert::True, Value::Bool(b)) => *b,
            (Inert::True, Value::String(s)) => s.eq_ignore_ascii_case("true"),
            (Inert::Empty, Value::String(s)) => s.is_empty(),
            (Inert::Disabled, Value::String(s)) => s.eq_ignore_ascii_case("disabled"),
            (Inert::Text(t), Value::String(s)) => s.eq_ignore_ascii_case(t),
            _ => false,
        }
    }
}

const NO_BPF: &str =
    "the eBPF dataplane is not implemented; calico-rs enforces policy with nftables";
const NO_WIREGUARD: &str = "WireGuard encryption is not implemented by calico-rs";
const NO_OVERLAY: &str = "the overlay follows the IPPools' vxlanMode/ipipMode (calico-node sets this switch itself); forcing it on is not supported";
const NO_TLS: &str = "the metrics endpoint serves plain HTTP only (no TLS)";
const IPTABLES: &str = "iptables tuning: calico-rs programs nftables";
const NFT_TUNING: &str = "nftables tuning of Felix's own ruleset layout";
const BPF_TUNING: &str = "eBPF dataplane tuning (eBPF is refused via bpfEnabled)";
const WG_TUNING: &str = "WireGuard tuning (WireGuard is refused via wireguardEnabled)";
const OVERLAY_TUNING: &str = "overlay tuning calico-rs does not implement (docs/overlays.md)";
const DEBUG: &str = "Felix debugging aid";
const GO_RUNTIME: &str = "Go runtime tuning";
const FLOW_LOGS: &str = "flow logs are not implemented";
const OTHER_PLATFORM: &str = "another platform (OpenStack, Windows, AWS, Istio)";
const REPORTING: &str = "usage reporting to the Calico project is never done";
const ENCAP_MTU: &str = "the pod MTU when that encapsulation is in use (calico-node's MTU file, read by the CNI plugin and the Docker driver)";

/// Every field of FelixConfiguration's spec and what the agent does with it.
pub const FIELDS: &[(&str, Support)] = {
    use Support::*;
    &[
        (
            "allowIPIPPacketsFromWorkloads",
            NotApplicable(OVERLAY_TUNING),
        ),
        (
            "allowVXLANPacketsFromWorkloads",
            NotApplicable(OVERLAY_TUNING),
        ),
        ("awsSrcDstCheck", NotApplicable(OTHER_PLATFORM)),
        ("bpfAttachType", NotApplicable(BPF_TUNING)),
        ("bpfCTLBLogFilter", NotApplicable(BPF_TUNING)),
        ("bpfConnectTimeLoadBalancing", NotApplicable(BPF_TUNING)),
        (
            "bpfConnectTimeLoadBalancingEnabled",
            NotApplicable(BPF_TUNING),
        ),
        ("bpfConntrackLogLevel", NotApplicable(BPF_TUNING)),
        ("bpfConntrackMode", NotApplicable(BPF_TUNING)),
        ("bpfConntrackTimeouts", NotApplicable(BPF_TUNING)),
        ("bpfDSROptoutCIDRs", NotApplicable(BPF_TUNING)),
        ("bpfDataIfacePattern", NotApplicable(BPF_TUNING)),
        ("bpfDisableGROForIfaces", NotApplicable(BPF_TUNING)),
        ("bpfDisableUnprivileged", NotApplicable(BPF_TUNING)),
        (
            "bpfEnabled",
            Refused {
                inert: Inert::False,
                reason: NO_BPF,
            },
        ),
        ("bpfEnforceRPF", NotApplicable(BPF_TUNING)),
        ("bpfExcludeCIDRsFromNAT", NotApplicable(BPF_TUNING)),
        ("bpfExportBufferSizeMB", NotApplicable(BPF_TUNING)),
        ("bpfExtToServiceConnmark", NotApplicable(BPF_TUNING)),
        ("bpfExternalServiceMode", NotApplicable(BPF_TUNING)),
        ("bpfForceTrackPacketsFromIfaces", NotApplicable(BPF_TUNING)),
        ("bpfHostConntrackBypass", NotApplicable(BPF_TUNING)),
        ("bpfHostNetworkedNATWithoutCTLB", NotApplicable(BPF_TUNING)),
        ("bpfIPFragTimeout", NotApplicable(BPF_TUNING)),
        ("bpfIPFragmentReassemblyEnabled", NotApplicable(BPF_TUNING)),
        ("bpfJITHardening", NotApplicable(BPF_TUNING)),
        ("bpfKubeProxyHealthzPort", NotApplicable(BPF_TUNING)),
        (
            "bpfKubeProxyIptablesCleanupEnabled",
            NotApplicable(BPF_TUNING),
        ),
        ("bpfKubeProxyMinSyncPeriod", NotApplicable(BPF_TUNING)),
        ("bpfL3IfacePattern", NotApplicable(BPF_TUNING)),
        ("bpfLogFilters", NotApplicable(BPF_TUNING)),
        ("bpfLogLevel", NotApplicable(BPF_TUNING)),
        ("bpfMaglevMaxEndpointsPerService", NotApplicable(BPF_TUNING)),
        ("bpfMaglevMaxServices", NotApplicable(BPF_TUNING)),
        ("bpfMapSizeConntrack", NotApplicable(BPF_TUNING)),
        ("bpfMapSizeConntrackCleanupQueue", NotApplicable(BPF_TUNING)),
        ("bpfMapSizeConntrackScaling", NotApplicable(BPF_TUNING)),
        ("bpfMapSizeIPSets", NotApplicable(BPF_TUNING)),
        ("bpfMapSizeIfState", NotApplicable(BPF_TUNING)),
        ("bpfMapSizeNATAffinity", NotApplicable(BPF_TUNING)),
        ("bpfMapSizeNATBackend", NotApplicable(BPF_TUNING)),
        ("bpfMapSizeNATFrontend", NotApplicable(BPF_TUNING)),
        ("bpfMapSizePerCpuConntrack", NotApplicable(BPF_TUNING)),
        ("bpfMapSizeRoute", NotApplicable(BPF_TUNING)),
        ("bpfOverlayHostSourceIP", NotApplicable(BPF_TUNING)),
        ("bpfPSNATPorts", NotApplicable(BPF_TUNING)),
        ("bpfPolicyDebugEnabled", NotApplicable(BPF_TUNING)),
        ("bpfProfiling", NotApplicable(BPF_TUNING)),
        ("bpfRedirectToPeer", NotApplicable(BPF_TUNING)),
        ("cgroupV2Path", NotApplicable(BPF_TUNING)),
        ("chainInsertMode", NotApplicable(IPTABLES)),
        (
            "dataplaneDriver",
            Refused {
                inert: Inert::Empty,
                reason: "only the built-in nftables dataplane exists",
            },
        ),
        ("dataplaneWatchdogTimeout", NotApplicable(DEBUG)),
        ("debugDisableLogDropping", NotApplicable(DEBUG)),
        ("debugHost", NotApplicable(DEBUG)),
        ("debugMemoryProfilePath", NotApplicable(DEBUG)),
        ("debugPort", NotApplicable(DEBUG)),
        ("debugSimulateCalcGraphHangAfter", NotApplicable(DEBUG)),
        ("debugSimulateDataplaneApplyDelay", NotApplicable(DEBUG)),
        ("debugSimulateDataplaneHangAfter", NotApplicable(DEBUG)),
        (
            "defaultEndpointToHostAction",
            Honoured("policy dataplane: the workload-to-host chain"),
        ),
        (
            "deviceRouteProtocol",
            NotApplicable("routes use protocol bird (12), as calico/node's BIRD"),
        ),
        (
            "deviceRouteSourceAddress",
            NotApplicable("workload routes carry no source address"),
        ),
        (
            "deviceRouteSourceAddressIPv6",
            NotApplicable("workload routes carry no source address"),
        ),
        ("disableConntrackInvalidCheck", NotApplicable(NFT_TUNING)),
        (
            "endpointReportingDelay",
            NotApplicable("endpoint status reporting is not implemented"),
        ),
        (
            "endpointReportingEnabled",
            Refused {
                inert: Inert::False,
                reason: "endpoint status reporting is not implemented",
            },
        ),
        (
            "endpointStatusPathPrefix",
            NotApplicable("endpoint status files are not written"),
        ),
        ("externalNodesList", NotApplicable(OVERLAY_TUNING)),
        (
            "failsafeInboundHostPorts",
            Honoured("policy dataplane: host endpoints' failsafe rules"),
        ),
        (
            "failsafeOutboundHostPorts",
            Honoured("policy dataplane: host endpoints' failsafe rules"),
        ),
        ("featureDetectOverride", NotApplicable(DEBUG)),
        ("featureGates", NotApplicable(DEBUG)),
        ("floatingIPs", NotApplicable(OTHER_PLATFORM)),
        ("flowLogsCollectorDebugTrace", NotApplicable(FLOW_LOGS)),
        ("flowLogsFlushInterval", NotApplicable(FLOW_LOGS)),
        (
            "flowLogsGoldmaneServer",
            Refused {
                inert: Inert::Empty,
                reason: "flow logs are not implemented",
            },
        ),
        ("flowLogsLocalReporter", NotApplicable(FLOW_LOGS)),
        ("flowLogsPolicyEvaluationMode", NotApplicable(FLOW_LOGS)),
        ("genericXDPEnabled", NotApplicable("XDP is not used")),
        ("goGCThreshold", NotApplicable(GO_RUNTIME)),
        ("goMaxProcs", NotApplicable(GO_RUNTIME)),
        ("goMemoryLimitMB", NotApplicable(GO_RUNTIME)),
        ("healthEnabled", Honoured("serves /liveness and /readiness")),
        ("healthHost", Honoured("address of the health server")),
        ("healthPort", Honoured("port of the health server")),
        (
            "healthTimeoutOverrides",
            NotApplicable("the agent has one fixed liveness timeout"),
        ),
        (
            "interfaceExclude",
            NotApplicable("interfaces are not monitored for addresses"),
        ),
        (
            "interfacePrefix",
            Honoured("policy dataplane: which interfaces are workloads"),
        ),
        (
            "interfaceRefreshInterval",
            NotApplicable("interfaces are not monitored for addresses"),
        ),
        (
            "ipForwarding",
            NotApplicable("calicoctl node run enables forwarding"),
        ),
        (
            "ipipEnabled",
            Refused {
                inert: Inert::False,
                reason: NO_OVERLAY,
            },
        ),
        ("ipipMTU", Honoured(ENCAP_MTU)),
        ("ipsetsRefreshInterval", NotApplicable(IPTABLES)),
        ("iptablesBackend", NotApplicable(IPTABLES)),
        ("iptablesFilterAllowAction", NotApplicable(IPTABLES)),
        ("iptablesFilterDenyAction", NotApplicable(IPTABLES)),
        ("iptablesLockProbeInterval", NotApplicable(IPTABLES)),
        ("iptablesMangleAllowAction", NotApplicable(IPTABLES)),
        ("iptablesMarkMask", NotApplicable(IPTABLES)),
        (
            "iptablesNATOutgoingInterfaceFilter",
            NotApplicable(IPTABLES),
        ),
        ("iptablesPostWriteCheckInterval", NotApplicable(IPTABLES)),
        ("iptablesRefreshInterval", NotApplicable(IPTABLES)),
        (
            "ipv4ElevatedRoutePriority",
            NotApplicable("routes use the kernel's default metric"),
        ),
        (
            "ipv4NormalRoutePriority",
            NotApplicable("routes use the kernel's default metric"),
        ),
        (
            "ipv6ElevatedRoutePriority",
            NotApplicable("routes use the kernel's default metric"),
        ),
        (
            "ipv6NormalRoutePriority",
            NotApplicable("routes use the kernel's default metric"),
        ),
        (
            "ipv6Support",
            Honoured("IPv6 routes are programmed only when true; default IPv6 pool at start-up"),
        ),
        ("istioAmbientMode", NotApplicable(OTHER_PLATFORM)),
        ("istioDSCPMark", NotApplicable(OTHER_PLATFORM)),
        (
            "kubeNodePortRanges",
            NotApplicable("no kube-proxy integration"),
        ),
        (
            "liveMigrationRouteConvergenceTime",
            NotApplicable(OTHER_PLATFORM),
        ),
        ("localSubnetL2Reachability", NotApplicable(OVERLAY_TUNING)),
        (
            "localSubnetL2ReachabilityRefreshInterval",
            NotApplicable(OVERLAY_TUNING),
        ),
        (
            "logActionRateLimit",
            NotApplicable("Log rules are not rendered"),
        ),
        (
            "logActionRateLimitBurst",
            NotApplicable("Log rules are not rendered"),
        ),
        ("logDebugFilenameRegex", NotApplicable(DEBUG)),
        (
            "logFilePath",
            NotApplicable("the agent logs to standard output only"),
        ),
        ("logPrefix", NotApplicable("Log rules are not rendered")),
        (
            "logSeverityFile",
            NotApplicable("the agent logs to standard output only"),
        ),
        (
            "logSeverityScreen",
            Honoured("the log level, changed at run time"),
        ),
        (
            "logSeveritySys",
            NotApplicable("the agent does not log to syslog"),
        ),
        ("maxIpsetSize", NotApplicable(IPTABLES)),
        ("metadataAddr", NotApplicable(OTHER_PLATFORM)),
        ("metadataPort", NotApplicable(OTHER_PLATFORM)),
        (
            "mtuIfacePattern",
            Honoured("the host interfaces whose smallest MTU is the host MTU (MTU file)"),
        ),
        (
            "natOutgoingAddress",
            Honoured("NAT outgoing SNATs to this address instead of masquerading"),
        ),
        (
            "natOutgoingExclusions",
            Refused {
                inert: Inert::Text("IPPoolsOnly"),
                reason: "only IPPoolsOnly (Felix's default) is implemented: traffic to host addresses outside the pools is masqueraded",
            },
        ),
        (
            "natPortRange",
            Honoured("source ports of masqueraded TCP and UDP"),
        ),
        (
            "netlinkTimeout",
            NotApplicable("netlink calls are bounded by the agent itself"),
        ),
        ("nftablesFilterAllowAction", NotApplicable(NFT_TUNING)),
        ("nftablesFilterDenyAction", NotApplicable(NFT_TUNING)),
        (
            "nftablesFlowTableDataIfacePattern",
            NotApplicable(NFT_TUNING),
        ),
        ("nftablesFlowTableOffload", NotApplicable(NFT_TUNING)),
        ("nftablesMangleAllowAction", NotApplicable(NFT_TUNING)),
        ("nftablesMarkMask", NotApplicable(NFT_TUNING)),
        ("nftablesMode", NotApplicable("policy is always nftables")),
        ("nftablesRefreshInterval", NotApplicable(NFT_TUNING)),
        (
            "nodeSelector",
            NotApplicable("only default and node.<name> resources apply"),
        ),
        ("openstackRegion", NotApplicable(OTHER_PLATFORM)),
        (
            "policySyncPathPrefix",
            Refused {
                inert: Inert::Empty,
                reason: "the policy sync API (for application-layer policy) is not implemented",
            },
        ),
        (
            "programClusterRoutes",
            NotApplicable("routes are always programmed from BGP"),
        ),
        ("prometheusGoMetricsEnabled", NotApplicable(GO_RUNTIME)),
        (
            "prometheusMetricsCAFile",
            Refused {
                inert: Inert::Empty,
                reason: NO_TLS,
            },
        ),
        (
            "prometheusMetricsCertFile",
            Refused {
                inert: Inert::Empty,
                reason: NO_TLS,
            },
        ),
        ("prometheusMetricsClientAuth", NotApplicable(NO_TLS)),
        ("prometheusMetricsEnabled", Honoured("serves /metrics")),
        (
            "prometheusMetricsHost",
            Honoured("address of the metrics server"),
        ),
        (
            "prometheusMetricsKeyFile",
            Refused {
                inert: Inert::Empty,
                reason: NO_TLS,
            },
        ),
        (
            "prometheusMetricsPort",
            Honoured("port of the metrics server"),
        ),
        ("prometheusProcessMetricsEnabled", NotApplicable(GO_RUNTIME)),
        (
            "prometheusWireGuardMetricsEnabled",
            NotApplicable(WG_TUNING),
        ),
        (
            "removeExternalRoutes",
            NotApplicable("only the agent's own routes are touched"),
        ),
        (
            "reportingInterval",
            Honoured("interval of the agent's status report in the datastore"),
        ),
        ("reportingTTL", NotApplicable("status reports carry no TTL")),
        (
            "requireMTUFile",
            NotApplicable("calico-node always writes the MTU file at start-up"),
        ),
        (
            "routeRefreshInterval",
            Honoured("interval of the full route (and policy table) check"),
        ),
        (
            "routeSource",
            NotApplicable("routes come from IPAM blocks and workload endpoints"),
        ),
        (
            "routeSyncDisabled",
            Refused {
                inert: Inert::False,
                reason: "the agent always programs routes",
            },
        ),
        ("routeTableRange", NotApplicable(OVERLAY_TUNING)),
        ("routeTableRanges", NotApplicable(OVERLAY_TUNING)),
        (
            "serviceLoopPrevention",
            NotApplicable("no service IP advertisement"),
        ),
        (
            "sidecarAccelerationEnabled",
            Refused {
                inert: Inert::False,
                reason: "sidecar acceleration is not implemented",
            },
        ),
        ("usageReportingEnabled", NotApplicable(REPORTING)),
        ("usageReportingInitialDelay", NotApplicable(REPORTING)),
        ("usageReportingInterval", NotApplicable(REPORTING)),
        (
            "useInternalDataplaneDriver",
            Refused {
                inert: Inert::True,
                reason: "only the built-in nftables dataplane exists",
            },
        ),
        (
            "vxlanEnabled",
            Refused {
                inert: Inert::False,
                reason: NO_OVERLAY,
            },
        ),
        (
            "vxlanMTU",
            Honoured(
                "MTU of vxlan.calico and, when an IPv4 pool uses VXLAN, of pods (0 or unset: host MTU − 50)",
            ),
        ),
        (
            "vxlanMTUV6",
            Honoured(
                "MTU of vxlan-v6.calico and, when an IPv6 pool uses VXLAN, of pods (0 or unset: host MTU − 70)",
            ),
        ),
        ("vxlanPort", Honoured("UDP port of the VXLAN devices")),
        ("vxlanVNI", Honoured("VNI of the VXLAN devices")),
        ("windowsManageFirewallRules", NotApplicable(OTHER_PLATFORM)),
        (
            "wireguardEnabled",
            Refused {
                inert: Inert::False,
                reason: NO_WIREGUARD,
            },
        ),
        (
            "wireguardEnabledV6",
            Refused {
                inert: Inert::False,
                reason: NO_WIREGUARD,
            },
        ),
        (
            "wireguardHostEncryptionEnabled",
            Refused {
                inert: Inert::False,
                reason: NO_WIREGUARD,
            },
        ),
        ("wireguardInterfaceName", NotApplicable(WG_TUNING)),
        ("wireguardInterfaceNameV6", NotApplicable(WG_TUNING)),
        ("wireguardKeepAlive", NotApplicable(WG_TUNING)),
        ("wireguardListeningPort", NotApplicable(WG_TUNING)),
        ("wireguardListeningPortV6", NotApplicable(WG_TUNING)),
        ("wireguardMTU", NotApplicable(WG_TUNING)),
        ("wireguardMTUV6", NotApplicable(WG_TUNING)),
        ("wireguardRoutingRulePriority", NotApplicable(WG_TUNING)),
        ("wireguardThreadingEnabled", NotApplicable(WG_TUNING)),
        (
            "workloadSourceSpoofing",
            NotApplicable("source spoofing is never allowed"),
        ),
        ("xdpEnabled", NotApplicable("XDP is not used")),
        ("xdpRefreshInterval", NotApplicable("XDP is not used")),
    ]
};

/// The policy fields' `FELIX_*` variables (read by `calico_policy::felix` on every round),
/// checked once at start: a bad value stops calico-node naming the variable, rather than
/// leaving a node without a policy program until someone restarts it with a good one.
pub fn check_policy_environment() -> Result<(), calico_policy::felix::FelixConfigError> {
    calico_policy::felix::settings_for(&[], "").map(|_| ())
}

/// Whether this kernel has WireGuard (the module loaded or built in).
pub fn kernel_has_wireguard() -> bool {
    std::path::Path::new("/sys/module/wireguard").exists()
}

/// Where a value came from, and the value.
struct Found {
    source: String,
    field: String,
    value: Value,
}

/// Reads fields with Felix's precedence.
struct Lookup<'a, E: Fn(&str) -> Option<String>> {
    env: &'a E,
    /// (`FelixConfiguration <name>`, spec), the node's own resource first.
    specs: Vec<(String, &'a Value)>,
}

impl<E: Fn(&str) -> Option<String>> Lookup<'_, E> {
    fn get(&self, field: &str) -> Option<Found> {
        let var = format!("FELIX_{}", field.to_ascii_uppercase());
        if let Some(v) = (self.env)(&var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
        {
            return Some(Found {
                source: "environment".into(),
                field: var,
                value: Value::String(v),
            });
        }
        self.specs.iter().find_map(|(source, spec)| {
            spec.get(field).filter(|v| !v.is_null()).map(|v| Found {
                source: source.clone(),
                field: format!("spec.{field}"),
                value: v.clone(),
            })
        })
    }
}

/// The settings in force for `node`: `env` is the process environment (Felix's variables),
/// `docs` every stored FelixConfiguration document (only `default` and `node.<node>` count),
/// `wireguard`: whether the kernel has WireGuard (for the refusal's reason).
pub fn settings_for(
    env: &impl Fn(&str) -> Option<String>,
    docs: &[Value],
    node: &str,
    wireguard: bool,
) -> FelixSettings {
    let spec_of = |want: &str| {
        docs.iter()
            .find(|d| d.pointer("/metadata/name").and_then(Value::as_str) == Some(want))
            .and_then(|d| d.get("spec"))
    };
    let node_name = format!("node.{node}");
    let specs = [node_name.as_str(), "default"]
        .into_iter()
        .filter_map(|n| spec_of(n).map(|s| (format!("FelixConfiguration {n}"), s)))
        .collect();
    let look = Lookup { env, specs };
    let mut out = FelixSettings::default();
    let bad = |f: &Found, reason: String| out_refused(&f.source, &f.field, reason);
    let mut refused = Vec::new();

    if let Some(f) = look.get("logSeverityScreen") {
        match f.value.as_str().and_then(tracing_level) {
            Some(l) => out.log_level = Some(l.into()),
            None => refused.push(bad(
                &f,
                format!("{} is not Debug, Info, Warning, Error or Fatal", f.value),
            )),
        }
    }
    for (listen, enabled, host, port) in [
        (
            &mut out.metrics,
            "prometheusMetricsEnabled",
            "prometheusMetricsHost",
            "prometheusMetricsPort",
        ),
        (&mut out.health, "healthEnabled", "healthHost", "healthPort"),
    ] {
        if let Some(f) = look.get(enabled) {
            match as_bool(&f.value) {
                Some(b) => listen.enabled = b,
                None => refused.push(bad(&f, format!("{} is not true or false", f.value))),
            }
        }
        if let Some(f) = look.get(host) {
            match f.value.as_str() {
                Some(h) => listen.host = h.to_string(),
                None => refused.push(bad(
                    &f,
                    format!("{} is not a host name or address", f.value),
                )),
            }
        }
        if let Some(f) = look.get(port) {
            match as_u64(&f.value).filter(|p| (1..=65535).contains(p)) {
                Some(p) => listen.port = p as u16,
                None => refused.push(bad(&f, format!("{} is not a port 1-65535", f.value))),
            }
        }
    }
    if let Some(f) = look.get("ipv6Support") {
        match as_bool(&f.value) {
            Some(b) => out.ipv6_support = b,
            None => refused.push(bad(&f, format!("{} is not true or false", f.value))),
        }
    }
    for (field, slot) in [
        ("routeRefreshInterval", &mut out.route_refresh),
        ("reportingInterval", &mut out.reporting_interval),
    ] {
        if let Some(f) = look.get(field) {
            match as_duration(&f.value) {
                Some(d) if d.is_zero() => *slot = None,
                Some(d) => *slot = Some(d),
                None => refused.push(bad(
                    &f,
                    format!("{} is not a duration such as 90s", f.value),
                )),
            }
        }
    }
    if let Some(f) = look.get("interfacePrefix") {
        match f.value.as_str() {
            Some(p) => out.interface_prefix = p.to_string(),
            None => refused.push(bad(&f, format!("{} is not a string", f.value))),
        }
    }
    if let Some(f) = look.get("vxlanPort") {
        match as_u64(&f.value).filter(|p| (1..=65535).contains(p)) {
            Some(p) => out.vxlan.port = p as u16,
            None => refused.push(bad(&f, format!("{} is not a port 1-65535", f.value))),
        }
    }
    if let Some(f) = look.get("vxlanVNI") {
        match as_u64(&f.value).filter(|v| (1..=0xff_ffff).contains(v)) {
            Some(v) => out.vxlan.vni = v as u32,
            None => refused.push(bad(&f, format!("{} is not a VNI 1-16777215", f.value))),
        }
    }
    if let Some(f) = look.get("natOutgoingAddress") {
        match f.value.as_str().map(str::trim) {
            Some("") => {}
            Some(a) => match a.parse::<std::net::IpAddr>() {
                Ok(ip) => out.nat_outgoing_address = Some(ip),
                Err(_) => refused.push(bad(&f, format!("{} is not an IP address", f.value))),
            },
            None => refused.push(bad(&f, format!("{} is not an IP address", f.value))),
        }
    }
    if let Some(f) = look.get("natPortRange") {
        let text = match &f.value {
            Value::String(s) => s.trim().to_string(),
            other => other.to_string(),
        };
        match calico_api::Port::parse(&text) {
            Ok(calico_api::Port::Range { min, max }) if min > 0 => {
                out.nat_port_range = Some((min, max))
            }
            Ok(calico_api::Port::Number(p)) if p > 0 => out.nat_port_range = Some((p, p)),
            _ => refused.push(bad(
                &f,
                format!("{} is not a port range such as 32768:65535", f.value),
            )),
        }
    }
    if let Some(f) = look.get("mtuIfacePattern") {
        match f.value.as_str() {
            Some(p) if regex::Regex::new(p).is_ok() => out.mtu_iface_pattern = p.to_string(),
            _ => refused.push(bad(&f, format!("{} is not a regular expression", f.value))),
        }
    }
    for (field, slot) in [
        ("ipipMTU", &mut out.encap_mtus.ipip),
        ("vxlanMTU", &mut out.encap_mtus.vxlan),
        ("vxlanMTUV6", &mut out.encap_mtus.vxlan_v6),
    ] {
        if let Some(f) = look.get(field) {
            match as_u64(&f.value) {
                // 0 is Felix's "derive it from the host MTU".
                Some(0) => {}
                Some(m) if (68..=65535).contains(&m) => *slot = Some(m as u32),
                _ => refused.push(bad(&f, format!("{} is not an MTU 68-65535", f.value))),
            }
        }
    }
    // One parse, two consumers: Felix uses vxlanMTU(V6) for the device and for the pod MTU.
    out.vxlan.mtu = out.encap_mtus.vxlan;
    out.vxlan.mtu_v6 = out.encap_mtus.vxlan_v6;
    for (field, support) in FIELDS {
        let Support::Refused { inert, reason } = support else {
            continue;
        };
        if let Some(f) = look.get(field)
            && !inert.accepts(&f.value)
        {
            let reason = if *reason == NO_WIREGUARD && !wireguard {
                format!("{reason}, and this kernel has no WireGuard (no wireguard module)")
            } else {
                reason.to_string()
            };
            refused.push(bad(&f, reason));
        }
    }
    out.refused = refused;
    out
}

fn out_refused(source: &str, field: &str, reason: String) -> Refusal {
    Refusal {
        source: source.to_string(),
        field: field.to_string(),
        reason,
    }
}

/// Felix's log severities as tracing levels.
fn tracing_level(s: &str) -> Option<&'static str> {
    Some(match s.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => return None,
    })
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A Go duration (`90s`, `1m30s`), or a number of seconds (Felix's environment form).
fn as_duration(v: &Value) -> Option<Duration> {
    match v {
        Value::Number(n) => n.as_u64().map(Duration::from_secs),
        Value::String(s) => s
            .parse::<u64>()
            .ok()
            .or_else(|| parse_duration_secs(s).map(u64::from))
            .map(Duration::from_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn fc(name: &str, spec: Value) -> Value {
        json!({"kind": "FelixConfiguration", "metadata": {"name": name}, "spec": spec})
    }

    fn settings(env: &[(&str, &str)], docs: &[Value]) -> FelixSettings {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings_for(&|k: &str| env.get(k).cloned(), docs, "n1", false)
    }

    #[test]
    fn defaults_are_felixs() {
        let s = settings(&[], &[]);
        assert_eq!(s, FelixSettings::default());
        assert_eq!(s.health.host, "localhost");
        assert_eq!((s.metrics.port, s.health.port), (9091, 9099));
        assert!(!s.metrics.enabled && !s.health.enabled);
        assert_eq!(s.route_refresh, Some(Duration::from_secs(90)));
    }

    #[test]
    fn environment_beats_node_beats_default() {
        let docs = [
            fc(
                "default",
                json!({"healthPort": 9000, "healthEnabled": true, "logSeverityScreen": "Warning", "routeRefreshInterval": "2m"}),
            ),
            fc(
                "node.n1",
                json!({"healthPort": 9001, "prometheusMetricsEnabled": true}),
            ),
            fc(
                "node.n2",
                json!({"healthPort": 9002, "logSeverityScreen": "Debug"}),
            ),
        ];
        let s = settings(&[], &docs);
        assert_eq!(s.health.port, 9001);
        assert!(s.health.enabled && s.metrics.enabled);
        assert_eq!(s.log_level.as_deref(), Some("warn"));
        assert_eq!(s.route_refresh, Some(Duration::from_secs(120)));
        let s = settings(
            &[
                ("FELIX_HEALTHPORT", "9100"),
                ("FELIX_ROUTEREFRESHINTERVAL", "0"),
            ],
            &docs,
        );
        assert_eq!(s.health.port, 9100);
        assert_eq!(s.route_refresh, None, "0 disables the refresh");
    }

    #[test]
    fn refused_fields_name_the_field_and_inert_values_pass() {
        let docs = [fc(
            "default",
            json!({"wireguardEnabled": true, "bpfEnabled": false, "policySyncPathPrefix": "/var/run/nodeagent", "ipipEnabled": false}),
        )];
        let s = settings(&[], &docs);
        let text: Vec<String> = s.refused.iter().map(|r| r.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("FelixConfiguration default: spec.policySyncPathPrefix: refused: "),
            "{text:?}"
        );
        assert!(
            text[1].contains("spec.wireguardEnabled") && text[1].contains("no wireguard module"),
            "{text:?}"
        );
        let s = settings(&[("FELIX_USEINTERNALDATAPLANEDRIVER", "false")], &[]);
        assert_eq!(s.refused[0].field, "FELIX_USEINTERNALDATAPLANEDRIVER");
    }

    #[test]
    fn bad_values_are_refused_and_keep_the_default() {
        let s = settings(
            &[],
            &[fc(
                "node.n1",
                json!({"healthPort": 70000, "logSeverityScreen": "Loud", "reportingInterval": "soon"}),
            )],
        );
        assert_eq!(s.health.port, 9099);
        assert_eq!(s.log_level, None);
        assert_eq!(s.reporting_interval, Some(DEFAULT_REPORTING_INTERVAL));
        let fields: Vec<&str> = s.refused.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.logSeverityScreen",
                "spec.healthPort",
                "spec.reportingInterval"
            ]
        );
    }

    #[test]
    fn every_field_of_the_kind_is_classified_once() {
        let schema = calico_api::crd::schema("FelixConfiguration").expect("schema");
        let props = schema
            .pointer("/properties/spec/properties")
            .and_then(Value::as_object)
            .expect("spec properties");
        let mut want: Vec<&str> = props.keys().map(String::as_str).collect();
        want.sort();
        let have: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
        let mut sorted = have.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(have, sorted, "FIELDS is sorted and has no duplicates");
        assert_eq!(have, want);
    }

    #[test]
    fn vxlan_settings_are_read_and_bad_values_refused_with_their_field() {
        let env = |_: &str| None;
        let docs = [json!({"metadata": {"name": "default"},
            "spec": {"vxlanPort": 8472, "vxlanVNI": 7, "vxlanMTU": 1400, "vxlanMTUV6": 0}})];
        let s = settings_for(&env, &docs, "n1", false);
        assert_eq!(
            s.vxlan,
            crate::tunnel::VxlanSettings {
                port: 8472,
                vni: 7,
                mtu: Some(1400),
                mtu_v6: None
            }
        );
        assert!(s.refused.is_empty(), "{:?}", s.refused);
        let docs = [json!({"metadata": {"name": "default"},
            "spec": {"vxlanPort": 0, "vxlanVNI": 16777216, "vxlanMTU": 20}})];
        let s = settings_for(&env, &docs, "n1", false);
        assert_eq!(s.vxlan, crate::tunnel::VxlanSettings::default());
        let fields: Vec<&str> = s.refused.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(fields.len(), 3, "{:?}", s.refused);
        for f in ["vxlanPort", "vxlanVNI", "vxlanMTU"] {
            assert!(
                fields.iter().any(|x| x.contains(f)),
                "{f} not named: {fields:?}"
            );
        }
    }

    #[test]
    fn the_docs_table_matches_fields() {
        let doc = include_str!("../../../docs/felixconfiguration.md");
        for (field, support) in FIELDS {
            let verdict = match support {
                Support::Honoured(_) => "honoured",
                Support::Refused { .. } => "refused",
                Support::NotApplicable(_) => "not applicable",
            };
            let row = format!("| `{field}` | {verdict} |");
            assert!(doc.contains(&row), "docs/felixconfiguration.md lacks {row}");
        }
    }
}
