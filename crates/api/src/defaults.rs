//! Defaults as Calico applies them.
//!
//! Two sources: the `default` values in the CRD schema (what the Kubernetes API server fills
//! in, e.g. IPPool `nodeSelector: all()`, policy `tier: default`, Tier `defaultAction: Deny`),
//! and the defaults Calico's own code applies (IPPool block size per family, encapsulation
//! `Never`, allowed uses, policy `types` from the rules).

use serde_json::Value;

use crate::kinds::*;

/// Fills in every field Calico defaults. Idempotent.
pub trait Defaults {
    fn default(&mut self);
}

/// Applies the schema's `default`s to `value`: for every object present, each absent
/// property with a default gets it (as the Kubernetes API server does).
pub fn apply_schema_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (name, prop) in props {
                    if !map.contains_key(name)
                        && let Some(d) = prop.get("default")
                    {
                        map.insert(name.clone(), d.clone());
                    }
                    if let Some(child) = map.get_mut(name) {
                        apply_schema_defaults(child, prop);
                    }
                }
            }
            if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in map.values_mut() {
                    apply_schema_defaults(child, add);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_schema_defaults(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

/// Applies the CRD schema defaults of `K` to `r` (through its JSON form).
fn schema_defaults<K: crate::CalicoResource>(r: &mut K) {
    let Some(schema) = crate::crd::schema(K::KIND) else {
        return;
    };
    let Ok(mut value) = serde_json::to_value(&*r) else {
        return;
    };
    apply_schema_defaults(&mut value, schema);
    // Defaults come from our own schema, so the value still fits the type.
    if let Ok(back) = serde_json::from_value(value) {
        *r = back;
    }
}

/// Calico's default block size for a pool CIDR: 26 for IPv4, 122 for IPv6.
pub fn default_block_size(cidr: &str) -> Option<i64> {
    let addr = cidr.split('/').next()?;
    match addr.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(_) => Some(26),
        std::net::IpAddr::V6(_) => Some(122),
    }
}

impl Defaults for IPPool {
    fn default(&mut self) {
        schema_defaults(self);
        let spec = &mut self.spec;
        // Calico stores the canonical text of the network (`fd00::/64`, not `FD00:0::/64`);
        // a CIDR with host bits stays as written so validation can reject it.
        if let Ok(net) = spec.cidr.parse::<ipnet::IpNet>()
            && net.trunc() == net
        {
            spec.cidr = net.to_string();
        }
        if spec.block_size.is_none_or(|b| b == 0) {
            spec.block_size = default_block_size(&spec.cidr);
        }
        spec.ipip_mode.get_or_insert(IPIPMode::Never);
        spec.vxlan_mode.get_or_insert(VXLANMode::Never);
        if spec.node_selector.as_deref().is_none_or(str::is_empty) {
            spec.node_selector = Some("all()".into());
        }
        if spec.allowed_uses.is_empty() {
            spec.allowed_uses = vec![IPPoolAllowedUse::Workload, IPPoolAllowedUse::Tunnel];
        }
    }
}

/// Calico's default policy types: Ingress unless only egress rules are given, plus Egress
/// when egress rules are given.
pub fn default_policy_types(has_ingress: bool, has_egress: bool) -> Vec<PolicyType> {
    match (has_ingress, has_egress) {
        (_, false) => vec![PolicyType::Ingress],
        (false, true) => vec![PolicyType::Egress],
        (true, true) => vec![PolicyType::Ingress, PolicyType::Egress],
    }
}

macro_rules! policy_defaults {
    ($($ty:ty),*) => {$(
        impl Defaults for $ty {
            fn default(&mut self) {
                schema_defaults(self);
                let spec = &mut self.spec;
                if spec.tier.as_deref().is_none_or(str::is_empty) {
                    spec.tier = Some("default".into());
                }
                if spec.types.is_empty() {
                    spec.types = default_policy_types(!spec.ingress.is_empty(), !spec.egress.is_empty());
                }
            }
        }
    )*};
}
policy_defaults!(NetworkPolicy, GlobalNetworkPolicy);

/// Staged policies default like the policies they stage, except a staged deletion, which
/// names only the policy (and its tier) to delete.
macro_rules! staged_policy_defaults {
    ($($ty:ty),*) => {$(
        impl Defaults for $ty {
            fn default(&mut self) {
                schema_defaults(self);
                let spec = &mut self.spec;
                if spec.tier.as_deref().is_none_or(str::is_empty) {
                    spec.tier = Some("default".into());
                }
                if spec.types.is_empty() && spec.staged_action != Some(StagedAction::Delete) {
                    spec.types = default_policy_types(!spec.ingress.is_empty(), !spec.egress.is_empty());
                }
            }
        }
    )*};
}
staged_policy_defaults!(StagedNetworkPolicy, StagedGlobalNetworkPolicy);

impl Defaults for StagedKubernetesNetworkPolicy {
    fn default(&mut self) {
        schema_defaults(self);
        // Kubernetes: Ingress always, Egress when egress rules exist.
        let spec = &mut self.spec;
        if spec.policy_types.is_empty() && spec.staged_action != Some(StagedAction::Delete) {
            spec.policy_types.push("Ingress".into());
            if !spec.egress.is_empty() {
                spec.policy_types.push("Egress".into());
            }
        }
    }
}

impl Defaults for BGPConfiguration {
    fn default(&mut self) {
        schema_defaults(self);
        // Calico treats the cluster-wide `default` object specially: mesh on, AS 64512.
        if self.metadata.name.as_deref() == Some("default") {
            self.spec.node_to_node_mesh_enabled.get_or_insert(true);
            self.spec.as_number.get_or_insert(DEFAULT_AS_NUMBER);
        }
    }
}

impl Defaults for Tier {
    fn default(&mut self) {
        schema_defaults(self);
    }
}

macro_rules! schema_only_defaults {
    ($($ty:ty),*) => {$(
        impl Defaults for $ty {
            fn default(&mut self) {
                schema_defaults(self);
            }
        }
    )*};
}
schema_only_defaults!(
    IPReservation,
    IPAMConfiguration,
    BGPPeer,
    BGPFilter,
    HostEndpoint,
    NetworkSet,
    GlobalNetworkSet,
    FelixConfiguration,
    KubeControllersConfiguration,
    ClusterInformation,
    CalicoNodeStatus,
    IPAMBlock,
    IPAMHandle,
    BlockAffinity
);

/// Kinds without a CRD have no schema defaults and Calico applies none in code.
macro_rules! no_defaults {
    ($($ty:ty),*) => {$(
        impl Defaults for $ty {
            fn default(&mut self) {}
        }
    )*};
}
no_defaults!(Node, WorkloadEndpoint, Profile);
