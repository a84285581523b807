//! Typed access for any `T: CalicoResource`, on top of a dynamic [`ResourceStore`].

use std::sync::Arc;

use calico_api::CalicoResource;
use futures::StreamExt;
use serde_json::Value;

use super::batch::{Atomicity, BatchItem, BatchOp, BatchOutcome};
use super::meta::resource_key;
use super::{
    Applied, EtcdResourceStore, KindRef, ObjectId, ResourceError, ResourceEvent, ResourceList,
    ResourceStore, ResourceWatch, Result,
};
use crate::config::EtcdConfig;
use crate::kv::{EtcdClient, KvError};

/// The datastore, typed. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Datastore {
    store: Arc<dyn ResourceStore>,
}

impl std::fmt::Debug for Datastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datastore").finish_non_exhaustive()
    }
}

fn to_value<T: CalicoResource>(obj: &T) -> Result<Value> {
    serde_json::to_value(obj).map_err(|source| ResourceError::Encode {
        kind: T::KIND.to_owned(),
        id: ObjectId {
            namespace: obj.meta().namespace.clone(),
            name: obj.meta().name.clone().unwrap_or_default(),
        },
        source,
    })
}

fn from_value<T: CalicoResource>(doc: Value) -> Result<T> {
    let key = super::meta::identify(&KindRef::of::<T>(), &doc)
        .map(|id| resource_key(&KindRef::of::<T>(), &id))
        .unwrap_or_else(|_| format!("(a {} document)", T::KIND));
    serde_json::from_value(doc).map_err(|source| ResourceError::Decode {
        kind: T::KIND.to_owned(),
        key,
        source,
    })
}

/// The document a stored key-value holds, when its key is an object of `kind` (`None` for any
/// other key): how a watch of a wider prefix (calico-node watches all of `/calico/`) keeps a
/// view of several kinds. The document carries its `resourceVersion`, as a list gives it.
pub fn decode_doc(kind: &KindRef, kv: &crate::kv::KeyValue) -> Option<Result<Value>> {
    super::meta::id_from_key(kind, &kv.key)?;
    Some(super::etcd::decode(kind, kv))
}

/// [`decode_doc`], typed: the `T` a stored key-value holds when its key is one of `T`'s.
pub fn decode_kv<T: CalicoResource>(kv: &crate::kv::KeyValue) -> Option<Result<T>> {
    Some(decode_doc(&KindRef::of::<T>(), kv)?.and_then(from_value))
}

/// The identity of a `T` named by the caller, checked against the kind's scope.
fn object_id<T: CalicoResource>(namespace: Option<&str>, name: &str) -> Result<ObjectId> {
    match (T::NAMESPACED, namespace) {
        (true, Some(ns)) => Ok(ObjectId::namespaced(ns, name)),
        (true, None) => Err(ResourceError::MissingNamespace {
            kind: T::KIND.to_owned(),
            name: name.to_owned(),
        }),
        (false, Some(ns)) => Err(ResourceError::UnexpectedNamespace {
            kind: T::KIND.to_owned(),
            name: name.to_owned(),
            namespace: ns.to_owned(),
        }),
        (false, None) => Ok(ObjectId::global(name)),
    }
}

fn typed_event<T: CalicoResource>(event: ResourceEvent<Value>) -> Result<ResourceEvent<T>> {
    Ok(match event {
        ResourceEvent::Added(v) => ResourceEvent::Added(from_value(v)?),
        ResourceEvent::Modified(v) => ResourceEvent::Modified(from_value(v)?),
        ResourceEvent::Deleted {
            id,
            revision,
            previous,
        } => ResourceEvent::Deleted {
            id,
            revision,
            previous: previous.and_then(|v| from_value(v).ok()),
        },
        ResourceEvent::Snapshot {
            revision,
            items,
            mut errors,
        } => {
            let mut typed = Vec::with_capacity(items.len());
            for v in items {
                match from_value(v) {
                    Ok(t) => typed.push(t),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            ResourceEvent::Snapshot {
                revision,
                items: typed,
                errors,
            }
        }
    })
}

impl Datastore {
    pub fn new(store: Arc<dyn ResourceStore>) -> Self {
        Datastore { store }
    }

    /// Connects to etcd and uses it as the store.
    pub async fn connect(config: &EtcdConfig) -> Result<Self, KvError> {
        Ok(Self::from_etcd(EtcdClient::connect(config).await?))
    }

    pub fn from_etcd(kv: EtcdClient) -> Self {
        Datastore::new(Arc::new(EtcdResourceStore::new(kv)))
    }

    /// The dynamic (JSON) interface, for callers that handle kinds at run time.
    pub fn dynamic(&self) -> &Arc<dyn ResourceStore> {
        &self.store
    }

    pub async fn get<T: CalicoResource>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<T>> {
        let id = object_id::<T>(namespace, name)?;
        self.store
            .get(&KindRef::of::<T>(), &id)
            .await?
            .map(from_value)
            .transpose()
    }

    /// Objects in `namespace`, or all of them for `None`.
    pub async fn list<T: CalicoResource>(
        &self,
        namespace: Option<&str>,
    ) -> Result<ResourceList<T>> {
        let list = self.store.list(&KindRef::of::<T>(), namespace).await?;
        Ok(ResourceList {
            items: list
                .items
                .into_iter()
                .map(from_value)
                .collect::<Result<_>>()?,
            revision: list.revision,
        })
    }

    pub async fn create<T: CalicoResource>(&self, obj: &T) -> Result<T> {
        from_value(
            self.store
                .create(&KindRef::of::<T>(), to_value(obj)?)
                .await?,
        )
    }

    /// Compare-and-swap on `metadata.resourceVersion`, or a replace when it is unset.
    pub async fn update<T: CalicoResource>(&self, obj: &T) -> Result<T> {
        from_value(
            self.store
                .update(&KindRef::of::<T>(), to_value(obj)?)
                .await?,
        )
    }

    pub async fn apply<T: CalicoResource>(&self, obj: &T) -> Result<(T, Applied)> {
        let (v, applied) = self
            .store
            .apply(&KindRef::of::<T>(), to_value(obj)?)
            .await?;
        Ok((from_value(v)?, applied))
    }

    pub async fn delete<T: CalicoResource>(
        &self,
        namespace: Option<&str>,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<T> {
        let id = object_id::<T>(namespace, name)?;
        from_value(
            self.store
                .delete(&KindRef::of::<T>(), &id, resource_version)
                .await?,
        )
    }

    /// Changes from `from_revision` (`<= 0`: from now); see [`ResourceEvent`].
    pub fn watch<T: CalicoResource>(
        &self,
        namespace: Option<&str>,
        from_revision: i64,
    ) -> ResourceWatch<T> {
        self.store
            .watch(&KindRef::of::<T>(), namespace, from_revision)
            .map(|e| e.and_then(typed_event::<T>))
            .boxed()
    }

    /// A [`ResourceEvent::Snapshot`] of everything, then changes.
    pub fn list_watch<T: CalicoResource>(&self, namespace: Option<&str>) -> ResourceWatch<T> {
        self.store
            .list_watch(&KindRef::of::<T>(), namespace)
            .map(|e| e.and_then(typed_event::<T>))
            .boxed()
    }

    /// One object through the batch writer: `op` says what it must find (absent for
    /// [`BatchOp::Create`]; present, at `metadata.resourceVersion` when set, for
    /// [`BatchOp::Replace`]), and an object already as asked is not rewritten.
    pub async fn write<T: CalicoResource>(&self, op: BatchOp, obj: &T) -> Result<(T, Applied)> {
        let item = BatchItem::new(op, KindRef::of::<T>(), to_value(obj)?);
        let mut outcome = self
            .store
            .write_batch(vec![item], Atomicity::AllOrNothing)
            .await?;
        let (doc, applied) = outcome.results.remove(0);
        Ok((from_value(doc)?, applied))
    }

    /// Applies (create or replace) every document in one etcd transaction: all are written or
    /// none is. Fails with [`ResourceError::BatchTooLarge`] before writing if the batch does not
    /// fit one transaction (see [`Atomicity`]).
    pub async fn apply_all(&self, docs: Vec<(KindRef, Value)>) -> Result<BatchOutcome> {
        self.store
            .write_batch(
                BatchItem::all(BatchOp::Apply, docs),
                Atomicity::AllOrNothing,
            )
            .await
    }
}
