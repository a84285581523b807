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
//! - [`knp`]: Kubernetes NetworkPolicies as `knp.default.*` Calico policies;
//! - [`nodes`]: Kubernetes Nodes as Calico Nodes (orchRefs, labels), deletion with IPAM release;
//! - [`pods`]: pod labels and service account on their WorkloadEndpoints;
//! - [`services`]: Services with `externalTrafficPolicy: Local` and their endpoints' nodes,
//!   published into etcd for calico-node's BGP advertisement of service addresses;
//! - [`ipam_gc`]: IPAM garbage collection (leaked pod addresses, deleted nodes) and pool usage;
//! - [`pool_status`]: IPPools' allocated/free address counts on the Kubernetes objects;
//! - [`bgppeer_status`]: BGPPeers' per-node session state, from the CalicoNodeStatus in etcd;
//! - [`reflect`]: etcd-only objects (calicoctl's, Docker hosts') as read-only Kubernetes copies;
//! - [`watch`]: watch-driven, level-triggered sync loops (with a slow resync);
//! - [`leader`]: leader election on a coordination.k8s.io Lease;
//! - [`health`]: /healthz, /readyz and /metrics;
//! - [`run`]: wires the controllers together for the binary.
//!
//! Reconciled kinds: IPPool, BGPPeer, BGPConfiguration, BGPFilter, Tier, NetworkPolicy,
//! GlobalNetworkPolicy.
//!
//! Not done yet (issue 8): Docker hosts' Nodes and WorkloadEndpoints are not reflected into
//! Kubernetes (no projectcalico.org/v3 CRD exists for them).

pub mod bgppeer_status;
pub mod health;
pub mod ipam_gc;
pub mod kinds;
pub mod knp;
pub mod leader;
pub mod mirror;
pub mod node_status;
pub mod nodes;
pub mod pods;
pub mod pool_status;
pub mod profiles;
pub mod reconcile;
pub mod reflect;
pub mod run;
pub mod services;
pub mod status;
pub mod watch;

/// Re-exported so the binary builds the IPAM client without its own dependency.
pub use calico_ipam;
/// Re-exported so the binary builds a client without its own kube dependency.
pub use kube;

/// Finalizer that holds a Kubernetes object until its etcd copy is removed.
pub const FINALIZER: &str = "projectcalico.org/etcd-mirror";
/// Annotation on etcd copies naming the system that owns the object; its value for objects
/// mirrored from Kubernetes, and on Kubernetes objects reflected from etcd (read-only there).
pub use calico_api::names::{OWNER_ANNOTATION, OWNER_ETCD, OWNER_KUBERNETES};
