//! Pod labels on WorkloadEndpoints, as Calico's pod (workloadendpoint) controller keeps them in
//! etcd mode.
//!
//! The CNI plugin creates a pod's WorkloadEndpoint with only Calico's own labels
//! (`projectcalico.org/namespace`, `projectcalico.org/orchestrator`, and
//! `projectcalico.org/serviceaccount` when it knows the service account). This sync keeps the
//! endpoint's labels equal to the pod's labels plus those, and its `serviceAccountName` and
//! `ksa.<namespace>.<sa>` profile in line with the pod, so label selectors in policy see the
//! pod's current labels. Only endpoints with `spec.orchestrator: k8s` are matched (by namespace
//! and `spec.pod`); Docker and plain-CNI endpoints are never touched, and neither are endpoints
//! of pods that have none yet (the CNI plugin creates them). Pods' labels are Kubernetes' to
//! set, so a label edited on the endpoint with calicoctl is overwritten at the next sync.

use std::collections::{BTreeMap, HashMap};

use calico_api::WorkloadEndpoint;
use calico_datastore::{Datastore, ResourceError};
use k8s_openapi::api::core::v1::Pod;

use crate::nodes::ORCHESTRATOR_K8S;

pub use calico_api::names::{
    LABEL_NAMESPACE as NAMESPACE_LABEL, LABEL_ORCHESTRATOR as ORCHESTRATOR_LABEL,
    LABEL_SERVICE_ACCOUNT as SERVICE_ACCOUNT_LABEL,
};

#[derive(Debug, thiserror::Error)]
pub enum PodSyncError {
    #[error("listing WorkloadEndpoints in etcd: {0}")]
    List(#[source] ResourceError),
    #[error("WorkloadEndpoint {namespace}/{name}: updating in etcd: {source}")]
    Update {
        namespace: String,
        name: String,
        #[source]
        source: ResourceError,
    },
}

/// The labels a pod's WorkloadEndpoint carries (pure).
pub fn endpoint_labels(pod: &Pod) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    if let Some(ns) = &pod.metadata.namespace {
        labels.insert(NAMESPACE_LABEL.into(), ns.clone());
    }
    labels.insert(ORCHESTRATOR_LABEL.into(), ORCHESTRATOR_K8S.into());
    if let Some(sa) = service_account(pod) {
        labels.insert(SERVICE_ACCOUNT_LABEL.into(), sa.to_string());
    }
    labels
}

fn service_account(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
}

/// `wep` brought in line with `pod`, or None when it already is (pure).
pub fn desired_endpoint(wep: &WorkloadEndpoint, pod: &Pod) -> Option<WorkloadEndpoint> {
    let mut out = wep.clone();
    let labels = endpoint_labels(pod);
    out.metadata.labels = Some(labels);
    if let (Some(sa), Some(ns)) = (service_account(pod), &pod.metadata.namespace) {
        out.spec.service_account_name = Some(sa.to_string());
        let profile = format!("{}{ns}.{sa}", crate::profiles::SERVICE_ACCOUNT_PREFIX);
        out.spec
            .profiles
            .retain(|p| !p.starts_with(crate::profiles::SERVICE_ACCOUNT_PREFIX) || *p == profile);
        if !out.spec.profiles.contains(&profile) {
            out.spec.profiles.push(profile);
        }
    }
    (out != *wep).then_some(out)
}

/// Endpoints to update (pure).
pub fn plan(pods: &[Pod], weps: &[WorkloadEndpoint]) -> Vec<WorkloadEndpoint> {
    let by_pod: HashMap<(&str, &str), &Pod> = pods
        .iter()
        .filter_map(|p| {
            Some((
                (
                    p.metadata.namespace.as_deref()?,
                    p.metadata.name.as_deref()?,
                ),
                p,
            ))
        })
        .collect();
    weps.iter()
        .filter(|w| w.spec.orchestrator.as_deref() == Some(ORCHESTRATOR_K8S))
        .filter_map(|w| {
            let key = (w.metadata.namespace.as_deref()?, w.spec.pod.as_deref()?);
            desired_endpoint(w, by_pod.get(&key)?)
        })
        .collect()
}

/// Updates the Kubernetes pods' WorkloadEndpoints in etcd; returns the names updated.
/// Each update is a compare-and-swap on the revision listed: an endpoint the CNI plugin
/// changed meanwhile fails the round, which the next round repeats.
pub async fn sync(ds: &Datastore, pods: &[Pod]) -> Result<Vec<String>, PodSyncError> {
    let weps = ds
        .list::<WorkloadEndpoint>(None)
        .await
        .map_err(PodSyncError::List)?
        .items;
    let mut done = Vec::new();
    let mut first_error = None;
    for w in plan(pods, &weps) {
        let namespace = w.metadata.namespace.clone().unwrap_or_default();
        let name = w.metadata.name.clone().unwrap_or_default();
        match ds.update(&w).await {
            Ok(_) => {
                tracing::info!(%namespace, %name, "WorkloadEndpoint labels synced from its pod");
                done.push(name);
            }
            // The pod's endpoint went away meanwhile (CNI DEL): nothing to label.
            Err(e) if e.is_not_found() => {}
            // One endpoint changed meanwhile (or etcd failed): the others still get their
            // labels; the pass reports the first failure and is retried.
            Err(source) => {
                first_error.get_or_insert(PodSyncError::Update {
                    namespace,
                    name,
                    source,
                });
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: serde_json::Value, sa: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "shop", "labels": labels},
            "spec": {"containers": [], "serviceAccountName": sa}
        }))
        .unwrap()
    }

    fn wep(orchestrator: &str) -> WorkloadEndpoint {
        serde_json::from_value(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": "n1-k8s-web--0-eth0", "namespace": "shop",
                         "labels": {"projectcalico.org/namespace": "shop",
                                    "projectcalico.org/orchestrator": orchestrator}},
            "spec": {"orchestrator": orchestrator, "pod": "web-0", "node": "n1",
                     "endpoint": "eth0", "profiles": ["kns.shop"]}
        }))
        .unwrap()
    }

    #[test]
    fn pod_labels_and_service_account_reach_the_endpoint() {
        let p = pod(json!({"app": "web"}), Some("api"));
        let out = plan(std::slice::from_ref(&p), &[wep("k8s")]);
        assert_eq!(out.len(), 1);
        let labels = out[0].metadata.labels.clone().unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[NAMESPACE_LABEL], "shop");
        assert_eq!(labels[ORCHESTRATOR_LABEL], "k8s");
        assert_eq!(labels[SERVICE_ACCOUNT_LABEL], "api");
        assert_eq!(out[0].spec.service_account_name.as_deref(), Some("api"));
        assert_eq!(out[0].spec.profiles, ["kns.shop", "ksa.shop.api"]);
        // Settled.
        assert!(plan(&[p], &out).is_empty());
    }

    #[test]
    fn removed_labels_go_and_other_orchestrators_are_untouched() {
        let mut w = wep("k8s");
        w.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("old".into(), "x".into());
        let out = plan(&[pod(json!({}), None)], &[w, wep("cni")]);
        assert_eq!(out.len(), 1);
        assert!(!out[0].metadata.labels.as_ref().unwrap().contains_key("old"));
        assert!(plan(&[pod(json!({"a": "b"}), None)], &[wep("libnetwork")]).is_empty());
    }
}
