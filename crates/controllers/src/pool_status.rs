//! Allocated and free addresses of each IPPool, from the IPAM blocks in etcd, reported on the
//! Kubernetes IPPool objects and as metrics.
//!
//! Calico's IPPool CRD (which ours matches) has only `status.conditions`; numbers are not
//! conditions, so they go in annotations beside the other status annotations:
//! `status.projectcalico.org/allocated-addresses`, `.../free-addresses` and
//! `.../total-addresses`. The mirror never copies `status.projectcalico.org/*` into etcd, and
//! an annotation patch leaves the spec's generation alone, so these writes cannot loop. The
//! annotations are patched only when a number changed.

use std::collections::BTreeMap;

use calico_api::IPPool;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use crate::health::{IPAM_ALLOCATED, IPAM_FREE, Metrics};
use crate::ipam_gc::PoolUsage;

pub const ALLOCATED_ANNOTATION: &str = "status.projectcalico.org/allocated-addresses";
pub const FREE_ANNOTATION: &str = "status.projectcalico.org/free-addresses";
pub const TOTAL_ANNOTATION: &str = "status.projectcalico.org/total-addresses";

#[derive(Debug, thiserror::Error)]
pub enum PoolStatusError {
    #[error("listing IPPools in Kubernetes: {0}")]
    List(#[source] Box<kube::Error>),
    #[error("IPPool {name:?}: patching the address counts: {source}")]
    Patch {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// The annotations an IPPool should carry for `usage` (pure).
pub fn annotations(usage: &PoolUsage) -> [(&'static str, String); 3] {
    [
        (ALLOCATED_ANNOTATION, usage.allocated.to_string()),
        (FREE_ANNOTATION, usage.free().to_string()),
        (TOTAL_ANNOTATION, usage.total.to_string()),
    ]
}

/// Sets the IPAM gauges from `usage` (pools that disappeared drop out).
pub fn record_metrics(metrics: &Metrics, usage: &BTreeMap<String, PoolUsage>) {
    let allocated: Vec<(String, u128)> = usage
        .iter()
        .map(|(n, u)| (n.clone(), u.allocated))
        .collect();
    let free: Vec<(String, u128)> = usage.iter().map(|(n, u)| (n.clone(), u.free())).collect();
    metrics.replace_gauges(IPAM_ALLOCATED, "pool", &allocated);
    metrics.replace_gauges(IPAM_FREE, "pool", &free);
}

/// Patches the counts onto every Kubernetes IPPool whose etcd copy has usage in `usage`;
/// returns the names patched.
pub async fn report(
    client: kube::Client,
    usage: &BTreeMap<String, PoolUsage>,
) -> Result<Vec<String>, PoolStatusError> {
    let api: Api<IPPool> = Api::all(client);
    let pools = api
        .list(&ListParams::default())
        .await
        .map_err(|e| PoolStatusError::List(Box::new(e)))?;
    let mut patched = Vec::new();
    for pool in &pools.items {
        let Some(name) = pool.metadata.name.as_deref() else {
            continue;
        };
        let Some(u) = usage.get(name) else {
            // Not in etcd (invalid, or a conflict): nothing to count.
            continue;
        };
        let desired = annotations(u);
        let current = pool.metadata.annotations.as_ref();
        if desired
            .iter()
            .all(|(k, v)| current.and_then(|a| a.get(*k)) == Some(v))
        {
            continue;
        }
        let map: serde_json::Map<String, serde_json::Value> = desired
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        let patch = json!({ "metadata": { "annotations": map } });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| PoolStatusError::Patch {
                name: name.to_string(),
                source: Box::new(e),
            })?;
        patched.push(name.to_string());
    }
    Ok(patched)
}
