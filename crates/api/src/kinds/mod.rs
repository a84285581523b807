//! Every `projectcalico.org/v3` kind. Modules with a reference CRD started as skeletons
//! generated once by `tools/gen_skeletons.py` and are maintained by hand.

// kube's repeated `printcolumn(type_ = ...)` arguments look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::asnumber::AsNumber;
pub use crate::numorstring::{Dscp, Port, Protocol};
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

// A feature switch, as Calico spells it in many configuration fields. (A plain comment:
// schemars would copy a doc comment into every field that uses the type.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Enablement {
    Enabled,
    Disabled,
}

mod bgpconfiguration;
mod bgpfilter;
mod bgppeer;
mod blockaffinity;
mod caliconodestatus;
mod clusterinformation;
mod felixconfiguration;
mod globalnetworkpolicy;
mod globalnetworkset;
mod hostendpoint;
mod ipamblock;
mod ipamconfiguration;
mod ipamhandle;
mod ippool;
mod ipreservation;
mod kubecontrollersconfiguration;
mod networkpolicy;
mod networkset;
mod node;
mod profile;
mod stagedglobalnetworkpolicy;
mod stagedkubernetesnetworkpolicy;
mod stagednetworkpolicy;
mod tier;
mod workloadendpoint;

pub use bgpconfiguration::*;
pub use bgpfilter::*;
pub use bgppeer::*;
pub use blockaffinity::*;
pub use caliconodestatus::*;
pub use clusterinformation::*;
pub use felixconfiguration::*;
pub use globalnetworkpolicy::*;
pub use globalnetworkset::*;
pub use hostendpoint::*;
pub use ipamblock::*;
pub use ipamconfiguration::*;
pub use ipamhandle::*;
pub use ippool::*;
pub use ipreservation::*;
pub use kubecontrollersconfiguration::*;
pub use networkpolicy::*;
pub use networkset::*;
pub use node::*;
pub use profile::*;
pub use stagedglobalnetworkpolicy::*;
pub use stagedkubernetesnetworkpolicy::*;
pub use stagednetworkpolicy::*;
pub use tier::*;
pub use workloadendpoint::*;
