//! `BlockAffinity` (skeleton generated once by tools/gen_skeletons.py, maintained by hand).

#![allow(clippy::upper_case_acronyms)]

use super::*;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BlockAffinityState {
    #[default]
    #[serde(rename = "")]
    Unset,
    #[serde(rename = "confirmed")]
    Confirmed,
    #[serde(rename = "pending")]
    Pending,
    #[serde(rename = "pendingDeletion")]
    PendingDeletion,
}

#[derive(CustomResource)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "BlockAffinity",
    plural = "blockaffinities",
    singular = "blockaffinity",
    shortname = "affinity",
    shortname = "affinities",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    derive = "PartialEq",
    derive = "Default"
)]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockAffinitySpec {
    pub cidr: String,
    #[schemars(extend("default" = false))]
    pub deleted: bool,
    pub node: String,
    pub state: BlockAffinityState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
}
