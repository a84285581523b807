//! The reverse direction: Calico objects that exist only in etcd (made by calicoctl or by
//! calico-node on a Docker host) are reflected into Kubernetes as read-only copies marked
//! `projectcalico.org/owner: etcd`, so `kubectl get ippools` shows the whole network.
//!
//! No ping-pong: an etcd object is reflected only when it does not carry
//! `projectcalico.org/owner: kubernetes` (so a mirror of a Kubernetes object is never copied
//! back), the reconcilers skip objects marked `owner: etcd` (so a reflection is never mirrored
//! into etcd), and a reflection is written only when its spec, labels or annotations differ
//! from the etcd object. The admission policy lets only the controllers' service account change
//! a reflection; a reflection whose etcd object is gone is deleted.
//!
//! Only kinds with a projectcalico.org/v3 CRD can be reflected. Calico publishes no CRD for
//! Nodes or WorkloadEndpoints (its API server derives them from Kubernetes Nodes and Pods), and
//! our CRDs are Calico's, so Docker hosts' Nodes and endpoints are not reflected as objects.
//! NetworkPolicy is not reflected either: the `knp.default.*` translations of Kubernetes
//! NetworkPolicies carry no owner mark and would be reflected next to their source.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use calico_api::CalicoResource;
use calico_datastore::{Datastore, ResourceError};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::kinds::{MirroredKind, STATUS_ANNOTATION_PREFIX};
use crate::mirror::owned_by_kubernetes;
use crate::reconcile::Context;
use crate::{OWNER_ANNOTATION, OWNER_ETCD};

/// How often the etcd-only objects are reflected (etcd has no watch in this path yet).
pub const ROUND: Duration = Duration::from_secs(30);

/// Annotations that belong to the Kubernetes object (written by the controllers' status
/// reports or by kubectl), kept on a reflection and ignored when comparing it with etcd.
const KUBERNETES_ONLY: &[&str] = &[STATUS_ANNOTATION_PREFIX, "kubectl.kubernetes.io/"];

#[derive(Debug, thiserror::Error)]
pub enum ReflectError {
    #[error("{kind}: listing etcd: {source}")]
    ListEtcd {
        kind: &'static str,
        #[source]
        source: ResourceError,
    },
    #[error("{kind}: listing Kubernetes: {source}")]
    ListKubernetes {
        kind: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{kind} {name:?}: building the Kubernetes copy: {source}")]
    Copy {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{kind} {name:?}: {action} in Kubernetes: {source}")]
    Write {
        kind: &'static str,
        name: String,
        action: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
}

/// Whether a Kubernetes object is a reflection of an etcd object.
pub fn owned_by_etcd(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(OWNER_ANNOTATION))
        .is_some_and(|o| o == OWNER_ETCD)
}

fn kubernetes_only(key: &str) -> bool {
    KUBERNETES_ONLY.iter().any(|p| key.starts_with(p))
}

/// The Kubernetes copy of an etcd object: name, labels, annotations (plus the owner mark)
/// and spec; etcd's uid, resourceVersion and creationTimestamp left out.
pub fn reflection<K: MirroredKind>(stored: &K) -> Result<K, serde_json::Error> {
    let mut doc = serde_json::to_value(stored)?;
    if let Some(map) = doc.as_object_mut() {
        map.remove("status");
    }
    let mut copy: K = serde_json::from_value(doc)?;
    let meta = CalicoResource::meta(stored);
    let mut annotations: BTreeMap<String, String> = meta.annotations.clone().unwrap_or_default();
    annotations.retain(|k, _| !kubernetes_only(k));
    annotations.insert(OWNER_ANNOTATION.into(), OWNER_ETCD.into());
    *CalicoResource::meta_mut(&mut copy) = ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        labels: meta.labels.clone().filter(|l| !l.is_empty()),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    };
    Ok(copy)
}

/// Whether the Kubernetes object already shows what `desired` holds (spec, labels, and the
/// annotations that do not belong to Kubernetes).
fn same<K: MirroredKind>(current: &K, desired: &K) -> bool {
    let spec = |o: &K| {
        serde_json::to_value(o)
            .ok()
            .and_then(|v| v.get("spec").cloned())
    };
    let labels = |m: &ObjectMeta| m.labels.clone().unwrap_or_default();
    let annotations = |m: &ObjectMeta| {
        let mut a = m.annotations.clone().unwrap_or_default();
        a.retain(|k, _| !kubernetes_only(k));
        a
    };
    let (c, d) = (CalicoResource::meta(current), CalicoResource::meta(desired));
    spec(current).unwrap_or(Value::Null) == spec(desired).unwrap_or(Value::Null)
        && labels(c) == labels(d)
        && annotations(c) == annotations(d)
}

/// What one [`sync`] pass wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reflected {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
}

impl Reflected {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty()
    }
}

/// Brings the reflections of kind `K` (cluster-scoped kinds only) in line with etcd: creates
/// a reflection for each etcd object Kubernetes does not own and that has no Kubernetes object
/// of its name, updates reflections that differ, deletes reflections whose etcd object is gone
/// or is now owned by Kubernetes. Kubernetes-owned objects are never touched (a name clash is
/// the reconciler's `Conflict`).
pub async fn sync<K: MirroredKind>(
    client: Client,
    ds: &Datastore,
) -> Result<Reflected, ReflectError> {
    let kind = K::KIND;
    let in_etcd = ds
        .list::<K>(None)
        .await
        .map_err(|source| ReflectError::ListEtcd { kind, source })?
        .items;
    let api: Api<K> = K::api(client, None);
    let in_kube = api
        .list(&ListParams::default())
        .await
        .map_err(|e| ReflectError::ListKubernetes {
            kind,
            source: Box::new(e),
        })?
        .items;
    let kube_by_name: BTreeMap<String, &K> = in_kube
        .iter()
        .filter_map(|o| Some((CalicoResource::meta(o).name.clone()?, o)))
        .collect();
    let write_err = |name: &str, action, e| ReflectError::Write {
        kind,
        name: name.to_string(),
        action,
        source: Box::new(e),
    };

    let mut done = Reflected::default();
    let mut wanted = BTreeSet::new();
    for stored in &in_etcd {
        let meta = CalicoResource::meta(stored);
        let Some(name) = meta.name.clone() else {
            continue;
        };
        if owned_by_kubernetes(meta) {
            continue;
        }
        wanted.insert(name.clone());
        let mut desired = reflection(stored).map_err(|source| ReflectError::Copy {
            kind,
            name: name.clone(),
            source,
        })?;
        match kube_by_name.get(&name) {
            None => {
                api.create(&PostParams::default(), &desired)
                    .await
                    .map_err(|e| write_err(&name, "creating", e))?;
                info!(kind, name = %name, "reflected an etcd-only object into Kubernetes");
                done.created.push(name);
            }
            // Applied with kubectl: the reconciler reports the clash; never overwritten here.
            Some(current) if !owned_by_etcd(CalicoResource::meta(*current)) => {}
            Some(current) if same(*current, &desired) => {}
            Some(current) => {
                let cur = CalicoResource::meta(*current);
                let dm = CalicoResource::meta_mut(&mut desired);
                dm.resource_version = cur.resource_version.clone();
                let keep = cur.annotations.iter().flatten();
                let keep = keep.filter(|(k, _)| kubernetes_only(k));
                dm.annotations
                    .get_or_insert_with(BTreeMap::new)
                    .extend(keep.map(|(k, v)| (k.clone(), v.clone())));
                api.replace(&name, &PostParams::default(), &desired)
                    .await
                    .map_err(|e| write_err(&name, "updating", e))?;
                info!(kind, name = %name, "updated the reflection of an etcd object");
                done.updated.push(name);
            }
        }
    }
    for current in &in_kube {
        let meta = CalicoResource::meta(current);
        let Some(name) = meta.name.as_deref() else {
            continue;
        };
        if owned_by_etcd(meta) && !wanted.contains(name) {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(write_err(name, "deleting", e)),
            }
            info!(kind, name, "deleted a reflection whose etcd object is gone");
            done.deleted.push(name.to_string());
        }
    }
    Ok(done)
}

/// The metric kind of the reflect loop.
pub const METRIC_KIND: &str = "Reflection";

/// Every [`ROUND`] while this replica leads: one [`sync`] per kind in `kinds`.
pub async fn run_loop(ctx: Arc<Context>, kinds: Vec<SyncFn>, mut lost: watch::Receiver<bool>) {
    loop {
        for sync in &kinds {
            ctx.metrics.reconcile_started(METRIC_KIND);
            if let Err(e) = sync(ctx.client.clone(), ctx.mirror.datastore().clone()).await {
                ctx.metrics.reconcile_failed(METRIC_KIND);
                warn!(error = %e, "reflecting etcd-only objects into Kubernetes");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = lost.wait_for(|l| *l) => return,
        }
    }
}

/// One kind's [`sync`], type-erased so [`run_loop`] can hold several kinds.
pub type SyncFn =
    fn(Client, Datastore) -> futures::future::BoxFuture<'static, Result<Reflected, ReflectError>>;

/// [`sync`] of `K` as a [`SyncFn`].
pub fn sync_fn<K: MirroredKind>() -> SyncFn {
    |client, ds| Box::pin(async move { sync::<K>(client, &ds).await })
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_api::{IPPool, IPPoolSpec};

    fn pool(annotations: &[(&str, &str)]) -> IPPool {
        let mut p = IPPool::new(
            "docker-pool",
            IPPoolSpec {
                cidr: "10.9.0.0/16".into(),
                ..Default::default()
            },
        );
        p.metadata.uid = Some("etcd-uid".into());
        p.metadata.resource_version = Some("7".into());
        p.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p
    }

    #[test]
    fn reflection_marks_the_owner_and_drops_etcd_bookkeeping() {
        let stored = pool(&[("note", "x")]);
        let r = reflection(&stored).unwrap();
        assert_eq!(r.spec, stored.spec);
        assert_eq!(r.metadata.uid, None);
        assert_eq!(r.metadata.resource_version, None);
        assert!(owned_by_etcd(&r.metadata));
        assert_eq!(
            r.metadata
                .annotations
                .unwrap()
                .get("note")
                .map(String::as_str),
            Some("x")
        );
    }

    #[test]
    fn status_annotations_do_not_make_a_reflection_differ() {
        let desired = reflection(&pool(&[])).unwrap();
        let mut current = desired.clone();
        current.metadata.resource_version = Some("99".into());
        current.metadata.annotations.as_mut().unwrap().insert(
            format!("{STATUS_ANNOTATION_PREFIX}free-addresses"),
            "3".into(),
        );
        assert!(same(&current, &desired));
        current.spec.cidr = "10.8.0.0/16".into();
        assert!(!same(&current, &desired));
    }
}
