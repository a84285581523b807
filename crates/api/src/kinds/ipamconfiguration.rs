//! `IPAMConfiguration` (skeleton generated once by tools/gen_skeletons.py, maintained by hand).

#![allow(clippy::upper_case_acronyms)]

use super::*;

#[derive(CustomResource)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "IPAMConfiguration",
    plural = "ipamconfigurations",
    singular = "ipamconfiguration",
    shortname = "ipamconfig",
    shortname = "ipamconfigs",
    printcolumn(
        name = "StrictAffinity",
        type_ = "boolean",
        json_path = ".spec.strictAffinity"
    ),
    printcolumn(
        name = "MaxBlocksPerHost",
        type_ = "integer",
        json_path = ".spec.maxBlocksPerHost"
    ),
    printcolumn(
        name = "AutoAllocateBlocks",
        type_ = "boolean",
        json_path = ".spec.autoAllocateBlocks"
    ),
    derive = "PartialEq",
    derive = "Default"
)]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMConfigurationSpec {
    #[schemars(extend("default" = true))]
    pub auto_allocate_blocks: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_cooldown_seconds: Option<i32>,
    #[serde(
        rename = "kubeVirtVMAddressPersistence",
        skip_serializing_if = "Option::is_none"
    )]
    pub kube_virt_vm_address_persistence: Option<Enablement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0))]
    pub max_blocks_per_host: Option<i32>,
    #[schemars(extend("default" = false))]
    pub strict_affinity: bool,
}
