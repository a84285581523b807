//! Calico `projectcalico.org/v3` resource types, defaults, validation and CRD generation.

mod resource;

pub use resource::{API_GROUP, API_VERSION, CalicoResource, ObjectMeta};
