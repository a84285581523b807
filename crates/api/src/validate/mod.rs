//! Calico's validation rules, as libcalico-go's validator and the CEL rules of Calico's CRDs
//! apply them. Every failure names the field path and the reason; a resource reports all its
//! failures at once.

use std::fmt;

use crate::CalicoResource;

mod config;
mod names;
pub(crate) use names::check_meta as names_check_meta;
mod net;
mod network;
mod policy;
mod support;

pub use names::{
    check_qualified_name, is_dns_label, is_dns_subdomain, is_iana_service_name, is_label_value,
};
pub use net::{parse_cidr, parse_ip_or_cidr};
pub use network::{check_community, validate_pools_disjoint};

/// One failed rule: `spec.blockSize: 33 is not in 20..=32 for an IPv4 pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// All failures of one resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    pub kind: &'static str,
    pub name: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: ", self.kind, self.name)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Calico's validation of one resource.
pub trait Validate {
    fn validate(&self) -> Result<(), ValidationErrors>;
}

/// Collects failures while walking a resource.
#[derive(Default)]
pub(crate) struct Errs(Vec<FieldError>);

impl Errs {
    pub(crate) fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }

    pub(crate) fn finish<R: CalicoResource>(self, r: &R) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors {
                kind: R::KIND,
                name: r.meta().name.clone().unwrap_or_default(),
                errors: self.0,
            })
        }
    }
}

/// Validation that starts with the checks every kind shares (name, namespace, labels,
/// annotations) and adds the kind's own rules.
macro_rules! validate_with {
    ($ty:ty, $check:path) => {
        impl Validate for $ty {
            fn validate(&self) -> Result<(), ValidationErrors> {
                let mut e = Errs::default();
                $crate::validate::names_check_meta::<Self>(&self.metadata, &mut e);
                $check(self, &mut e);
                e.finish(self)
            }
        }
    };
}
pub(crate) use validate_with;
