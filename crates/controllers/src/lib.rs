//! calico-kube-controllers: Kubernetes is the source of truth for the projectcalico.org/v3
//! objects applied with kubectl; these reconcilers validate each object with calico-api, report
//! the result on the object, and mirror valid objects into etcd (where calico-node, calicoctl
//! and Docker hosts read them).
//!
//! - [`status`]: the conditions an object should carry (pure);
//! - [`mirror`]: the etcd copy of an object and the ownership rule (who may write it);
//! - [`kinds`]: which kinds are reconciled and where each reports its status;
//! - [`reconcile`]: one reconcile pass (validate → mirror → status), finalizer on delete;
//! - [`profiles`]: Namespaces and ServiceAccounts as `kns.*` / `ksa.*` profiles;
//! - [`leader`]: leader election on a coordination.k8s.io Lease;
//! - [`health`]: /healthz, /readyz and /metrics;
//! - [`run`]: wires the controllers together for the binary.
//!
//! Reconciled kinds: IPPool, BGPPeer, BGPConfiguration, BGPFilter, Tier, NetworkPolicy,
//! GlobalNetworkPolicy.
//!
//! Not done yet (issue 8): IPPool address counts, BGPPeer session state, reflecting etcd-only objects back, Kubernetes NetworkPolicy translation, Node sync and IPAM garbage collection.

pub mod health;
pub mod kinds;
pub mod knp;
pub mod leader;
pub mod mirror;
pub mod profiles;
pub mod reconcile;
pub mod run;
pub mod status;

/// Re-exported so the binary builds a client without its own kube dependency.
pub use kube;

/// Finalizer that holds a Kubernetes object until its etcd copy is removed.
pub const FINALIZER: &str = "projectcalico.org/etcd-mirror";
/// Annotation on etcd copies naming the system that owns the object.
pub const OWNER_ANNOTATION: &str = "projectcalico.org/owner";
/// Value of [`OWNER_ANNOTATION`] for objects mirrored from Kubernetes.
pub const OWNER_KUBERNETES: &str = "kubernetes";
