//! `KubeControllersConfiguration` (skeleton generated once by tools/gen_skeletons.py, maintained by hand).

#![allow(clippy::upper_case_acronyms)]

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum LoadBalancerControllerConfigAssignIPs {
    AllServices,
    RequestedServicesOnly,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerControllerConfig {
    #[serde(rename = "assignIPs", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "AllServices"))]
    pub assign_ips: Option<LoadBalancerControllerConfigAssignIPs>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationControllerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Enabled"))]
    pub policy_name_migrator: Option<Enablement>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceControllerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoHostEndpointTemplate {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(
        rename = "interfaceCIDRs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub interface_cidrs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoHostEndpointConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_create: Option<Enablement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_default_host_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub templates: Vec<AutoHostEndpointTemplate>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeControllerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_endpoint: Option<AutoHostEndpointConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak_grace_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_labels: Option<Enablement>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyControllerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountControllerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointControllerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllersConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerControllerConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationControllerConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<NamespaceControllerConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeControllerConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyControllerConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountControllerConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_endpoint: Option<WorkloadEndpointControllerConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum LogLevel {
    None,
    Debug,
    Info,
    Warning,
    Error,
    Fatal,
    Panic,
}

#[derive(CustomResource)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "KubeControllersConfiguration",
    plural = "kubecontrollersconfigurations",
    singular = "kubecontrollersconfiguration",
    shortname = "kcc",
    shortname = "kccs",
    status = "KubeControllersConfigurationStatus",
    derive = "PartialEq",
    derive = "Default"
)]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeControllersConfigurationSpec {
    pub controllers: ControllersConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_profile_port: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_v3_compaction_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Enabled"))]
    pub health_checks: Option<Enablement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<LogLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_port: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeControllersConfigurationStatus {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment_vars: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_config: Option<KubeControllersConfigurationSpec>,
}
