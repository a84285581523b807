//! Resources as calicoctl names and reads them, on top of `calico-datastore`'s
//! [`ResourceStore`]. calicoctl has no writer of its own: every create, apply, replace, patch,
//! label and delete is one call of the datastore's batch writer
//! ([`ResourceStore::write_batch`]), which owns the metadata rule (the document is the whole
//! object; uid and creationTimestamp are the datastore's) and the all-or-nothing transaction.

use std::sync::Arc;

use calico_datastore::{
    Atomicity, BatchItem, BatchOutcome, KindRef, ObjectId, ResourceError, ResourceStore,
};
use serde_json::Value;

use crate::kinds::KindInfo;

/// Which object: kind, namespace (namespaced kinds only) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub namespace: Option<String>,
    pub name: String,
}

impl ResourceKey {
    pub fn new(kind: &'static KindInfo, namespace: Option<&str>, name: &str) -> Self {
        ResourceKey {
            kind: kind.kind,
            plural: kind.plural,
            namespaced: kind.namespaced,
            namespace: if kind.namespaced {
                namespace.map(str::to_string)
            } else {
                None
            },
            name: name.to_string(),
        }
    }

    /// `Kind(name)` / `Kind(ns/name)` as Calico's errors print it.
    pub fn identifier(&self) -> String {
        format!("{}({})", self.kind, self.object_id())
    }

    pub fn kind_ref(&self) -> KindRef {
        KindRef::new(self.kind, self.plural, self.namespaced)
    }

    pub fn object_id(&self) -> ObjectId {
        ObjectId {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

pub fn kind_ref(kind: &KindInfo) -> KindRef {
    KindRef::new(kind.kind, kind.plural, kind.namespaced)
}

/// An object as stored, with the revision that last modified it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The object, with `metadata.resourceVersion` set to `revision`.
    pub value: Value,
    pub revision: i64,
}

impl Stored {
    fn from_value(value: Value) -> Self {
        let revision = value
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        Stored { value, revision }
    }
}

/// The datastore as calicoctl uses it.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ResourceStore>,
}

impl Objects {
    pub fn new(store: Arc<dyn ResourceStore>) -> Self {
        Objects { store }
    }

    pub async fn get(&self, key: &ResourceKey) -> Result<Option<Stored>, ResourceError> {
        Ok(self
            .store
            .get(&key.kind_ref(), &key.object_id())
            .await?
            .map(Stored::from_value))
    }

    /// Every object of a kind, in key order; only one namespace when `namespace` is given.
    pub async fn list(
        &self,
        kind: &'static KindInfo,
        namespace: Option<&str>,
    ) -> Result<Vec<Stored>, ResourceError> {
        let namespace = namespace.filter(|_| kind.namespaced);
        Ok(self
            .store
            .list(&kind_ref(kind), namespace)
            .await?
            .items
            .into_iter()
            .map(Stored::from_value)
            .collect())
    }

    /// Writes every item or none (one etcd transaction per 128 writes; calicoctl has checked
    /// every precondition before, and each item pins what was read, so a later chunk fails
    /// only when another writer raced us, reported as a partial batch).
    pub async fn write(&self, items: Vec<BatchItem>) -> Result<BatchOutcome, ResourceError> {
        self.store.write_batch(items, Atomicity::Chunked).await
    }
}
