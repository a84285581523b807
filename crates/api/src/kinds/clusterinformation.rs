//! `ClusterInformation` (skeleton generated once by tools/gen_skeletons.py, maintained by hand).

#![allow(clippy::upper_case_acronyms)]

use super::*;

#[derive(CustomResource)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "ClusterInformation",
    plural = "clusterinformations",
    singular = "clusterinformation",
    shortname = "clusterinfo",
    shortname = "clusterinfos",
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.calicoVersion"),
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".spec.datastoreReady"),
    printcolumn(name = "Types", type_ = "string", json_path = ".spec.clusterType"),
    derive = "PartialEq",
    derive = "Default"
)]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterInformationSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calico_version: Option<String>,
    #[serde(rename = "clusterGUID", skip_serializing_if = "Option::is_none")]
    pub cluster_guid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore_ready: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}
