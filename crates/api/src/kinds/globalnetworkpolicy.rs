//! `GlobalNetworkPolicy` (skeleton generated once by tools/gen_skeletons.py, maintained by hand).

#![allow(clippy::upper_case_acronyms)]

use super::*;

/// Cluster-wide policy: ordered rules for the selected endpoints.
#[derive(CustomResource)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "GlobalNetworkPolicy",
    plural = "globalnetworkpolicies",
    singular = "globalnetworkpolicy",
    shortname = "gnp",
    shortname = "cgnp",
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier"),
    printcolumn(name = "Order", type_ = "number", json_path = ".spec.order"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    derive = "PartialEq",
    derive = "Default"
)]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkPolicySpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_on_forward: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub do_not_track: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub ingress: Vec<Rule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub performance_hints: Vec<PolicyPerformanceHint>,
    #[serde(rename = "preDNAT", skip_serializing_if = "Option::is_none")]
    pub pre_dnat: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "default"))]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub types: Vec<PolicyType>,
}
