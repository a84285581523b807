//! The kinds the controllers reconcile, and where each one reports its status.
//!
//! Calico's published CRDs give only IPPool and Tier a status with conditions (the other
//! kinds have no `status` in their schema, or, KubeControllersConfiguration, one without
//! conditions; we keep the CRDs identical to Calico's), so IPPools and Tiers get
//! `status.conditions` and the other kinds get the same information in annotations under
//! `status.projectcalico.org/`.
//!
//! CalicoNodeStatus is mirrored like the others (its spec into etcd, Ready in annotations); its
//! `status` is calico-node's, written in etcd and copied back by [`crate::node_status`].
//!
//! Not reconciled: ClusterInformation, IPAMBlock, IPAMHandle and BlockAffinity are state that
//! calico-node and calico-ipam keep in etcd (the chart's admission policy refuses them).

use calico_api::{
    BGPConfiguration, BGPFilter, BGPPeer, CalicoNodeStatus, CalicoResource, Condition,
    FelixConfiguration, GlobalNetworkPolicy, GlobalNetworkSet, HostEndpoint, IPAMConfiguration,
    IPPool, IPReservation, KubeControllersConfiguration, NetworkPolicy, NetworkSet,
    StagedGlobalNetworkPolicy, StagedKubernetesNetworkPolicy, StagedNetworkPolicy, Tier, Validate,
};
use kube::{Api, Client};
use serde::{Serialize, de::DeserializeOwned};

use crate::status::Outcome;

/// IPPool condition type shown in Calico's printer column.
pub const ALLOCATABLE: &str = "Allocatable";

/// Prefix of the status annotations (kinds without a status subresource).
pub const STATUS_ANNOTATION_PREFIX: &str = "status.projectcalico.org/";
/// `Ready` condition status: `True` / `False`.
pub const READY_ANNOTATION: &str = "status.projectcalico.org/ready";
/// `Ready` condition reason: `Mirrored` / `Invalid` / `Conflict`.
pub const REASON_ANNOTATION: &str = "status.projectcalico.org/reason";
/// `Ready` condition message (the failing fields for `Invalid`).
pub const MESSAGE_ANNOTATION: &str = "status.projectcalico.org/message";
/// `metadata.generation` the status describes.
pub const OBSERVED_GENERATION_ANNOTATION: &str = "status.projectcalico.org/observed-generation";

/// Where a kind reports its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusMode {
    /// `status.conditions` through the status subresource.
    Conditions,
    /// Annotations under [`STATUS_ANNOTATION_PREFIX`].
    Annotations,
}

/// A kind mirrored from Kubernetes into etcd.
pub trait MirroredKind:
    CalicoResource
    + Validate
    + kube::Resource<DynamicType = ()>
    + Serialize
    + DeserializeOwned
    + Clone
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const STATUS: StatusMode;

    /// The API for objects in `namespace` (ignored for cluster-scoped kinds).
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;

    /// Current conditions (kinds with [`StatusMode::Conditions`]).
    fn conditions(&self) -> &[Condition] {
        &[]
    }

    /// Kind-specific conditions besides `Ready`.
    fn extra_conditions(&self, _outcome: &Outcome) -> Vec<ExtraCondition> {
        Vec::new()
    }
}

/// A condition other than `Ready`: type, status, reason, message.
pub type ExtraCondition = (&'static str, bool, &'static str, String);

impl MirroredKind for IPPool {
    const STATUS: StatusMode = StatusMode::Conditions;
    fn api(client: Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or(&[])
    }

    /// `Allocatable` (shown in the IPPool printer column): whether calico-ipam may hand out
    /// addresses from this pool as it stands in etcd.
    fn extra_conditions(&self, outcome: &Outcome) -> Vec<ExtraCondition> {
        let (status, reason, message) = match outcome {
            Outcome::Mirrored if !self.spec.is_enabled() => {
                (false, "Disabled", "spec.disabled is true".to_string())
            }
            Outcome::Mirrored => (
                true,
                "Enabled",
                "addresses are allocated from this pool".into(),
            ),
            Outcome::Invalid(_) => (
                false,
                "Invalid",
                "this version is not applied; see the Ready condition".into(),
            ),
            Outcome::Conflict(_) => (
                false,
                "Conflict",
                "etcd holds another pool of this name; see the Ready condition".into(),
            ),
        };
        vec![(ALLOCATABLE, status, reason, message)]
    }
}

/// Kinds whose Calico CRD has no `status` with conditions: they report in annotations.
/// `cluster` kinds are served cluster-wide; `namespaced` ones in the object's namespace.
macro_rules! annotated_kinds {
    (cluster: $($c:ty),* ; namespaced: $($n:ty),* $(,)?) => {
        $(
            impl MirroredKind for $c {
                const STATUS: StatusMode = StatusMode::Annotations;
                fn api(client: Client, _: Option<&str>) -> Api<Self> {
                    Api::all(client)
                }
            }
        )*
        $(
            impl MirroredKind for $n {
                const STATUS: StatusMode = StatusMode::Annotations;
                fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
                    match namespace {
                        Some(ns) => Api::namespaced(client, ns),
                        None => Api::all(client),
                    }
                }
            }
        )*
    };
}

annotated_kinds!(
    cluster: BGPConfiguration,
    BGPFilter,
    BGPPeer,
    // The status is calico-node's report (copied back from etcd), not conditions.
    CalicoNodeStatus,
    FelixConfiguration,
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    HostEndpoint,
    IPAMConfiguration,
    IPReservation,
    // Calico's CRD has a status subresource, but its status is the running configuration
    // (runningConfig, environmentVars), not conditions.
    KubeControllersConfiguration,
    StagedGlobalNetworkPolicy;
    namespaced: NetworkPolicy,
    NetworkSet,
    StagedKubernetesNetworkPolicy,
    StagedNetworkPolicy,
);

impl MirroredKind for Tier {
    const STATUS: StatusMode = StatusMode::Conditions;
    fn api(client: Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or(&[])
    }
}
