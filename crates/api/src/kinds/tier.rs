//! `Tier` (skeleton generated once by tools/gen_skeletons.py, maintained by hand).

#![allow(clippy::upper_case_acronyms)]

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TierDefaultAction {
    Pass,
    Deny,
}

/// An ordered group of policies.
#[derive(CustomResource)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "Tier",
    plural = "tiers",
    singular = "tier",
    status = "TierStatus",
    printcolumn(name = "Order", type_ = "integer", json_path = ".spec.order"),
    printcolumn(
        name = "DefaultAction",
        type_ = "string",
        json_path = ".spec.defaultAction"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].reason"
    ),
    derive = "PartialEq",
    derive = "Default"
)]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Deny"))]
    pub default_action: Option<TierDefaultAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    pub last_transition_time: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub reason: String,
    pub status: ConditionStatus,
    pub r#type: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-map-keys" = ["type"]))]
    #[schemars(extend("x-kubernetes-list-type" = "map"))]
    pub conditions: Vec<Condition>,
}
