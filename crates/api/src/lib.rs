//! Calico `projectcalico.org/v3` resource types, defaults, validation and CRD generation.

mod asnumber;
pub mod crd;
mod defaults;
pub mod kinds;
mod numorstring;
mod registry;
mod resource;
mod validate;
mod wepname;

pub use asnumber::{AsNumber, AsNumberError};
pub use defaults::{Defaults, apply_schema_defaults, default_block_size, default_policy_types};
pub use kinds::*;
pub use numorstring::{Dscp, NumOrStringError, PROTOCOL_NAMES, Port, Protocol};
pub use registry::{
    AnyResource, DecodeError, KINDS, KindInfo, decode, from_value, from_value_list, lookup_kind,
};
pub use resource::{API_GROUP, API_VERSION, CalicoResource, ObjectMeta};
pub use validate::{
    FieldError, Validate, ValidationErrors, check_community, check_qualified_name, is_dns_label,
    is_dns_subdomain, is_iana_service_name, is_label_value, parse_cidr, parse_go_duration,
    parse_ip_or_cidr, validate_pools_disjoint,
};
pub use wepname::{
    WorkloadEndpointNameError, split_workload_endpoint_name, workload_endpoint_name,
};

/// Implements [`CalicoResource`] for every kind, from one table.
macro_rules! calico_kinds {
    ($($ty:ident, $kind:literal, $plural:literal, $namespaced:literal;)*) => {
        $(
            impl CalicoResource for $ty {
                const KIND: &'static str = $kind;
                const PLURAL: &'static str = $plural;
                const NAMESPACED: bool = $namespaced;
                fn meta(&self) -> &ObjectMeta {
                    &self.metadata
                }
                fn meta_mut(&mut self) -> &mut ObjectMeta {
                    &mut self.metadata
                }
            }
        )*
    };
}

calico_kinds! {
    IPPool, "IPPool", "ippools", false;
    IPReservation, "IPReservation", "ipreservations", false;
    IPAMConfiguration, "IPAMConfiguration", "ipamconfigurations", false;
    BGPConfiguration, "BGPConfiguration", "bgpconfigurations", false;
    BGPPeer, "BGPPeer", "bgppeers", false;
    BGPFilter, "BGPFilter", "bgpfilters", false;
    Node, "Node", "nodes", false;
    WorkloadEndpoint, "WorkloadEndpoint", "workloadendpoints", true;
    HostEndpoint, "HostEndpoint", "hostendpoints", false;
    NetworkPolicy, "NetworkPolicy", "networkpolicies", true;
    GlobalNetworkPolicy, "GlobalNetworkPolicy", "globalnetworkpolicies", false;
    StagedNetworkPolicy, "StagedNetworkPolicy", "stagednetworkpolicies", true;
    StagedGlobalNetworkPolicy, "StagedGlobalNetworkPolicy", "stagedglobalnetworkpolicies", false;
    StagedKubernetesNetworkPolicy, "StagedKubernetesNetworkPolicy", "stagedkubernetesnetworkpolicies", true;
    Tier, "Tier", "tiers", false;
    NetworkSet, "NetworkSet", "networksets", true;
    GlobalNetworkSet, "GlobalNetworkSet", "globalnetworksets", false;
    Profile, "Profile", "profiles", false;
    FelixConfiguration, "FelixConfiguration", "felixconfigurations", false;
    KubeControllersConfiguration, "KubeControllersConfiguration", "kubecontrollersconfigurations", false;
    ClusterInformation, "ClusterInformation", "clusterinformations", false;
    CalicoNodeStatus, "CalicoNodeStatus", "caliconodestatuses", false;
    IPAMBlock, "IPAMBlock", "ipamblocks", false;
    IPAMHandle, "IPAMHandle", "ipamhandles", false;
    BlockAffinity, "BlockAffinity", "blockaffinities", false;
}
