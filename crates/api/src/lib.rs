//! Calico `projectcalico.org/v3` resource types, defaults, validation and CRD generation.

mod asnumber;
pub mod crd;
pub mod kinds;
mod numorstring;
mod resource;

pub use asnumber::{AsNumber, AsNumberError};
pub use kinds::*;
pub use numorstring::{Dscp, NumOrStringError, PROTOCOL_NAMES, Port, Protocol};
pub use resource::{API_GROUP, API_VERSION, CalicoResource, ObjectMeta};

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
