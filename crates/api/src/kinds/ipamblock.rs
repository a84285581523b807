//! `IPAMBlock` (skeleton generated once by tools/gen_skeletons.py, maintained by hand).

#![allow(clippy::upper_case_acronyms)]

use super::*;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllocationAttribute {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alternate_owner_attrs: BTreeMap<String, String>,
    #[serde(rename = "handle_id", skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secondary: BTreeMap<String, String>,
}

#[derive(CustomResource)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "IPAMBlock",
    plural = "ipamblocks",
    singular = "ipamblock",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "Affinity", type_ = "string", json_path = ".spec.affinity"),
    printcolumn(
        name = "ClaimTime",
        type_ = "date",
        json_path = ".spec.affinityClaimTime"
    ),
    derive = "PartialEq",
    derive = "Default"
)]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMBlockSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity_claim_time: Option<String>,
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub allocations: Vec<Option<i64>>,
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub attributes: Vec<AllocationAttribute>,
    pub cidr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0))]
    pub sequence_number: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sequence_number_for_allocation: BTreeMap<String, i64>,
    pub strict_affinity: bool,
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub unallocated: Vec<i64>,
}
