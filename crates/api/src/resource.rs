//! The contract every Calico v3 kind fulfils, so that the datastore, calicoctl and the
//! controllers handle all kinds through one generic path.

use serde::{Serialize, de::DeserializeOwned};

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// API group of every Calico resource.
pub const API_GROUP: &str = "projectcalico.org";
/// `apiVersion` written on every Calico resource.
pub const API_VERSION: &str = "projectcalico.org/v3";

/// A Calico v3 resource kind as stored in the datastore and applied by users.
///
/// The etcd key of an object is
/// `/calico/resources/v3/projectcalico.org/<PLURAL>/[<namespace>/]<name>`.
pub trait CalicoResource:
    Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// `kind` as written in YAML, e.g. `IPPool`.
    const KIND: &'static str;
    /// Lower-case plural used in datastore keys and CRD names, e.g. `ippools`.
    const PLURAL: &'static str;
    /// Whether objects of this kind live in a namespace.
    const NAMESPACED: bool;

    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}
