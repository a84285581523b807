//! The kinds the controllers reconcile, and where each one reports its status.
//!
//! Calico's published CRDs give only IPPool and Tier a status subresource with conditions
//! (BGPPeer, BGPConfiguration, BGPFilter, NetworkPolicy and GlobalNetworkPolicy have no
//! `status` in their schema, and we keep the CRDs identical to Calico's), so IPPools and Tiers
//! get `status.conditions` and the other kinds get the same information in annotations under
//! `status.projectcalico.org/`.

use calico_api::{
    BGPConfiguration, BGPFilter, BGPPeer, CalicoResource, Condition, GlobalNetworkPolicy, IPPool,
    NetworkPolicy, Tier, Validate,
};
use kube::{Api, Client};
use serde::{Serialize, de::DeserializeOwned};

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
}

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
}

impl MirroredKind for BGPPeer {
    const STATUS: StatusMode = StatusMode::Annotations;
    fn api(client: Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

impl MirroredKind for GlobalNetworkPolicy {
    const STATUS: StatusMode = StatusMode::Annotations;
    fn api(client: Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

impl MirroredKind for NetworkPolicy {
    const STATUS: StatusMode = StatusMode::Annotations;
    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
}

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

impl MirroredKind for BGPConfiguration {
    const STATUS: StatusMode = StatusMode::Annotations;
    fn api(client: Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

impl MirroredKind for BGPFilter {
    const STATUS: StatusMode = StatusMode::Annotations;
    fn api(client: Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}
