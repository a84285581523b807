//! Calico `projectcalico.org/v3` resource types, defaults, validation and CRD generation, and
//! the facts every component shares: Calico's well-known names ([`names`]), Go durations
//! ([`GoDuration`]), the one list of kinds (`kind_table.rs`), [`error_chain`] and Calico's
//! bordered [`table`].

#[macro_use]
mod kind_table;

mod asnumber;
pub mod crd;
mod defaults;
mod duration;
mod error_chain;
pub mod kinds;
pub mod names;
mod numorstring;
mod registry;
mod resource;
pub mod service_advertisement;
pub mod table;
mod validate;
mod wepname;

pub use asnumber::{AsNumber, AsNumberError};
pub use defaults::{Defaults, apply_schema_defaults, default_block_size, default_policy_types};
pub use duration::{GoDuration, GoDurationError};
pub use error_chain::error_chain;
pub use kinds::*;
pub use numorstring::{Dscp, NumOrStringError, PROTOCOL_NAMES, Port, Protocol};
pub use registry::{
    AnyResource, DecodeError, KINDS, KindInfo, decode, from_value, from_value_list, lookup_kind,
};
pub use resource::{API_GROUP, API_VERSION, CalicoResource, ObjectMeta};
pub use validate::{
    FieldError, Validate, ValidationErrors, check_community, check_qualified_name, is_dns_label,
    is_dns_subdomain, is_iana_service_name, is_label_value, parse_cidr, parse_ip_or_cidr,
    validate_pools_disjoint,
};
pub use wepname::{
    WorkloadEndpointNameError, split_workload_endpoint_name, workload_endpoint_name,
};

/// Implements [`CalicoResource`] for every kind, from the one table ([`kind_table`]).
macro_rules! calico_kinds {
    ($($ty:ident { kind: $kind:literal, plural: $plural:literal, namespaced: $namespaced:literal, $($_rest:tt)* })*) => {
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

every_kind!(calico_kinds);
