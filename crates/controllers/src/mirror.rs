//! The etcd copy of a Kubernetes-owned object, and the ownership rule.
//!
//! Ownership: an object applied through Kubernetes is owned by Kubernetes. Its etcd copy carries
//! `projectcalico.org/owner: kubernetes`; the controllers only ever overwrite or delete etcd
//! objects that carry it, so an object created in etcd by calicoctl or a Docker host is never
//! clobbered by a Kubernetes object of the same name (that is reported as a `Conflict`). The
//! copy is written only when it differs from what etcd holds. A `status` in etcd belongs to
//! etcd's side (calico-node's report in a CalicoNodeStatus): the copy never carries one, and an
//! update keeps the stored one. Only that status is read back ([`crate::node_status`]), into
//! the status subresource, which the mirror never copies: the two sides cannot ping-pong.

use std::collections::BTreeMap;

use calico_api::CalicoResource;
use calico_datastore::{Datastore, ResourceError};
use kube::api::ObjectMeta;

use crate::{OWNER_ANNOTATION, OWNER_KUBERNETES};

/// Annotation prefixes that describe the Kubernetes object rather than the Calico resource
/// (kubectl's last-applied copy, our own status annotations); they are not copied to etcd.
const KUBERNETES_ONLY_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/",
    crate::kinds::STATUS_ANNOTATION_PREFIX,
];

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(
        "{kind} {name:?} already exists in etcd and is not owned by Kubernetes \
         (owner: {owner}); delete it with calicoctl or rename the Kubernetes object"
    )]
    NotOwned {
        kind: &'static str,
        name: String,
        owner: String,
    },
    #[error("{kind} {name:?}: cannot build the etcd copy: {source}")]
    Copy {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{kind} {name:?}: etcd: {source}")]
    Datastore {
        kind: &'static str,
        name: String,
        #[source]
        source: ResourceError,
    },
}

/// The object as it is stored in etcd: Calico metadata (name, namespace, labels, annotations
/// plus the owner mark) and the spec; Kubernetes bookkeeping (uid, resourceVersion,
/// generation, finalizers, managedFields, status) left out.
pub fn etcd_copy<T: CalicoResource>(obj: &T) -> Result<T, serde_json::Error> {
    let mut doc = serde_json::to_value(obj)?;
    if let Some(map) = doc.as_object_mut() {
        map.remove("status");
    }
    let mut copy: T = serde_json::from_value(doc)?;
    let meta = obj.meta();
    let mut annotations: BTreeMap<String, String> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !KUBERNETES_ONLY_ANNOTATIONS.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(OWNER_ANNOTATION.into(), OWNER_KUBERNETES.into());
    *copy.meta_mut() = ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        labels: meta.labels.clone().filter(|l| !l.is_empty()),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    };
    Ok(copy)
}

/// Whether an etcd object is owned by Kubernetes (and so may be changed by the controllers).
pub fn owned_by_kubernetes(meta: &ObjectMeta) -> bool {
    owner(meta) == Some(OWNER_KUBERNETES)
}

fn owner(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(OWNER_ANNOTATION))
        .map(String::as_str)
}

/// Whether two stored forms carry the same Calico content (what etcd adds - uid,
/// resourceVersion, creationTimestamp - ignored).
fn same_content<T: CalicoResource>(stored: &T, desired: &T) -> bool {
    let strip = |o: &T| {
        let mut v = serde_json::to_value(o).ok()?;
        let meta = v.get_mut("metadata")?.as_object_mut()?;
        for k in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
            meta.remove(k);
        }
        v.as_object_mut()?.remove("status");
        Some(v)
    };
    match (strip(stored), strip(desired)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `desired` with the resourceVersion (compare-and-swap) and the `status` (etcd's side's) of
/// `stored`.
fn with_status_of<T: CalicoResource>(stored: &T, mut desired: T) -> Result<T, serde_json::Error> {
    desired.meta_mut().resource_version = stored.meta().resource_version.clone();
    let status = serde_json::to_value(stored)?
        .get("status")
        .filter(|s| !s.is_null())
        .cloned();
    let Some(status) = status else {
        return Ok(desired);
    };
    let mut doc = serde_json::to_value(&desired)?;
    if let Some(map) = doc.as_object_mut() {
        map.insert("status".into(), status);
    }
    serde_json::from_value(doc)
}

/// Writes and removes the etcd copies.
#[derive(Clone, Debug)]
pub struct EtcdMirror {
    ds: Datastore,
}

/// What [`EtcdMirror::upsert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Updated,
    Unchanged,
}

impl EtcdMirror {
    pub fn new(ds: Datastore) -> Self {
        EtcdMirror { ds }
    }

    pub fn datastore(&self) -> &Datastore {
        &self.ds
    }

    /// Makes etcd hold the copy of `obj`, unless etcd holds an object of that name owned by
    /// someone else. A concurrent change between read and write fails on the resourceVersion
    /// compare-and-swap and is retried by the caller's requeue.
    pub async fn upsert<T: CalicoResource>(&self, obj: &T) -> Result<Upserted, MirrorError> {
        let name = obj.meta().name.clone().unwrap_or_default();
        let ns = obj.meta().namespace.clone();
        let err = |source| MirrorError::Datastore {
            kind: T::KIND,
            name: name.clone(),
            source,
        };
        let desired = etcd_copy(obj).map_err(|source| MirrorError::Copy {
            kind: T::KIND,
            name: name.clone(),
            source,
        })?;
        match self.ds.get::<T>(ns.as_deref(), &name).await.map_err(err)? {
            None => {
                self.ds.create(&desired).await.map_err(err)?;
                Ok(Upserted::Created)
            }
            Some(stored) if !owned_by_kubernetes(stored.meta()) => Err(MirrorError::NotOwned {
                kind: T::KIND,
                name,
                owner: owner(stored.meta())
                    .unwrap_or("unset (calicoctl or a Docker host)")
                    .into(),
            }),
            Some(stored) if same_content(&stored, &desired) => Ok(Upserted::Unchanged),
            Some(stored) => {
                let desired =
                    with_status_of(&stored, desired).map_err(|source| MirrorError::Copy {
                        kind: T::KIND,
                        name: name.clone(),
                        source,
                    })?;
                self.ds.update(&desired).await.map_err(err)?;
                Ok(Upserted::Updated)
            }
        }
    }

    /// Deletes the etcd copy of `obj` if etcd holds one owned by Kubernetes; an object owned by
    /// someone else is left alone. Returns whether something was deleted.
    pub async fn remove<T: CalicoResource>(&self, obj: &T) -> Result<bool, MirrorError> {
        let name = obj.meta().name.clone().unwrap_or_default();
        let ns = obj.meta().namespace.clone();
        let err = |source| MirrorError::Datastore {
            kind: T::KIND,
            name: name.clone(),
            source,
        };
        match self.ds.get::<T>(ns.as_deref(), &name).await.map_err(err)? {
            Some(stored) if owned_by_kubernetes(stored.meta()) => {
                match self
                    .ds
                    .delete::<T>(
                        ns.as_deref(),
                        &name,
                        stored.meta().resource_version.as_deref(),
                    )
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if e.is_not_found() => Ok(false),
                    Err(e) => Err(err(e)),
                }
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_api::{IPPool, IPPoolSpec};

    #[test]
    fn copy_keeps_calico_metadata_and_marks_the_owner() {
        let mut pool = IPPool::new(
            "p",
            IPPoolSpec {
                cidr: "10.0.0.0/16".into(),
                ..Default::default()
            },
        );
        pool.metadata.uid = Some("k8s-uid".into());
        pool.metadata.resource_version = Some("42".into());
        pool.metadata.finalizers = Some(vec![crate::FINALIZER.into()]);
        pool.metadata.generation = Some(3);
        pool.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        pool.metadata.annotations = Some(
            [
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".to_string(),
                ),
                ("note".to_string(), "kept".to_string()),
            ]
            .into(),
        );
        pool.status = Some(Default::default());
        let copy = etcd_copy(&pool).unwrap();
        assert_eq!(copy.spec, pool.spec);
        assert_eq!(copy.status, None);
        assert_eq!(copy.metadata.name.as_deref(), Some("p"));
        assert_eq!(copy.metadata.labels, pool.metadata.labels);
        assert_eq!(copy.metadata.uid, None);
        assert_eq!(copy.metadata.resource_version, None);
        assert_eq!(copy.metadata.finalizers, None);
        assert_eq!(copy.metadata.generation, None);
        let ann = copy.metadata.annotations.unwrap();
        assert_eq!(ann.get("note").map(String::as_str), Some("kept"));
        assert_eq!(
            ann.get(OWNER_ANNOTATION).map(String::as_str),
            Some(OWNER_KUBERNETES)
        );
        assert!(!ann.keys().any(|k| k.starts_with("kubectl.kubernetes.io/")));
    }

    #[test]
    fn an_update_keeps_the_status_etcd_holds_and_status_alone_is_no_change() {
        use calico_api::{
            CalicoNodeAgent, CalicoNodeStatus, CalicoNodeStatusSpec, CalicoNodeStatusStatus,
        };
        let spec = |period| CalicoNodeStatusSpec {
            node: Some("node1".into()),
            update_period_seconds: Some(period),
            ..Default::default()
        };
        // As etcd holds it: the mirror's copy, then calico-node's status.
        let mut stored = etcd_copy(&CalicoNodeStatus::new("s", spec(10))).unwrap();
        stored.metadata.resource_version = Some("7".into());
        stored.status = Some(CalicoNodeStatusStatus {
            last_updated: Some("2026-12-07T19:00:00Z".into()),
            agent: Some(CalicoNodeAgent::default()),
            ..Default::default()
        });
        let same = etcd_copy(&CalicoNodeStatus::new("s", spec(10))).unwrap();
        assert!(
            same_content(&stored, &same),
            "calico-node's status is not a change"
        );
        let changed = etcd_copy(&CalicoNodeStatus::new("s", spec(5))).unwrap();
        assert!(!same_content(&stored, &changed));
        let written = with_status_of(&stored, changed).unwrap();
        assert_eq!(written.spec.update_period_seconds, Some(5));
        assert_eq!(written.status, stored.status);
        assert_eq!(written.metadata.resource_version.as_deref(), Some("7"));
    }
}
