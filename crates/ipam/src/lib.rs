//! Calico block IPAM on the etcd datastore.
//!
//! - [`cidr`]: pure address arithmetic (pools → blocks, ordinals, etcd key form).
//! - [`model`]: Calico's etcd records (blocks, affinities, handles, config) and their keys.
//! - [`block`]: pure operations on one block (allocate, assign, release).
//! - [`pool`]: IPPool / IPReservation views.
//! - [`plan`]: the affinity and borrowing decision.
//! - [`allocator`]: the etcd-backed allocator ([`Ipam`]).
//! - [`admin`]: usage, borrowed addresses, configuration, the consistency check and its report,
//!   release and split (the data `calicoctl ipam ...` prints; calicoctl renders it).
//!
//! See docs/ipam.md for the layout, the algorithms and their guarantees.

pub mod admin;
pub mod allocator;
pub mod block;
pub mod cidr;
pub mod model;
pub mod plan;
pub mod pool;

pub use allocator::{Assigned, AssignmentInfo, AutoAssignArgs, Ipam, IpamError, IpamOptions};
pub use cidr::Family;
pub use model::IpamConfig;
pub use pool::{AllowedUse, Pool};
