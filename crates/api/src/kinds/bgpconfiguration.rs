//! `BGPConfiguration` (skeleton generated once by tools/gen_skeletons.py, maintained by hand).

#![allow(clippy::upper_case_acronyms)]

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BindMode {
    None,
    NodeIP,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct Community {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct SecretKeySelector {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = ""))]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPPassword {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct PrefixAdvertisement {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub communities: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProgramClusterRoutes {
    Enabled,
    Disabled,
    EnabledIPIPOnly,
    EnabledNoEncapOnly,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct ServiceClusterIPBlock {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct ServiceExternalIPBlock {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct ServiceLoadBalancerIPBlock {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

/// Cluster-wide (name default) or per-node (node.<name>) BGP settings.
#[derive(CustomResource)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "BGPConfiguration",
    plural = "bgpconfigurations",
    singular = "bgpconfiguration",
    shortname = "bgpconfig",
    shortname = "bgpconfigs",
    derive = "PartialEq",
    derive = "Default"
)]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPConfigurationSpec {
    /// Default AS number of nodes (64512 when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<BindMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub communities: Vec<Community>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub ignored_interfaces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_normal_route_priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_normal_route_priority: Option<i64>,
    /// Port BGP listens on (179 when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<i64>,
    #[serde(
        rename = "localWorkloadPeeringIPV4",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_workload_peering_ipv4: Option<String>,
    #[serde(
        rename = "localWorkloadPeeringIPV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_workload_peering_ipv6: Option<String>,
    /// Log level of the BGP daemon.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Info"))]
    pub log_severity_screen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BGPPassword>,
    /// Whether every node peers with every other (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program_cluster_routes: Option<ProgramClusterRoutes>,
    #[serde(
        rename = "serviceClusterIPs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    /// Service cluster IP ranges to announce.
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub service_cluster_ips: Vec<ServiceClusterIPBlock>,
    #[serde(
        rename = "serviceExternalIPs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    /// Service external IP ranges to announce.
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub service_external_ips: Vec<ServiceExternalIPBlock>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Enabled"))]
    pub service_load_balancer_aggregation: Option<Enablement>,
    #[serde(
        rename = "serviceLoadBalancerIPs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    /// Service load-balancer IP ranges to announce.
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub service_load_balancer_ips: Vec<ServiceLoadBalancerIPBlock>,
}

/// Calico's cluster-wide AS number when none is configured.
pub const DEFAULT_AS_NUMBER: AsNumber = AsNumber(64512);
/// BGP's port, which BIRD listens on unless `listenPort` says otherwise.
pub const DEFAULT_BGP_PORT: u16 = 179;

impl BGPConfigurationSpec {
    /// The AS number in effect: the one set, or 64512.
    pub fn effective_as_number(&self) -> AsNumber {
        self.as_number.unwrap_or(DEFAULT_AS_NUMBER)
    }

    /// Whether every node peers with every other (on unless turned off).
    pub fn node_to_node_mesh(&self) -> bool {
        self.node_to_node_mesh_enabled != Some(false)
    }

    /// The port BGP listens on.
    pub fn effective_listen_port(&self) -> u16 {
        self.listen_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(DEFAULT_BGP_PORT)
    }
}
