//! The datastore as calicoctl sees it: resources as JSON objects, read one by one or by kind,
//! and written in atomic batches.
//!
//! `MemStore` is a recording fake for unit tests only; the real implementation is
//! [`crate::etcd_store::EtcdStore`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;

use crate::kinds::KindInfo;

/// Which object: kind, namespace (namespaced kinds only) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl ResourceKey {
    pub fn new(kind: &'static KindInfo, namespace: Option<&str>, name: &str) -> Self {
        ResourceKey {
            kind: kind.kind,
            plural: kind.plural,
            namespace: if kind.namespaced {
                namespace.map(str::to_string)
            } else {
                None
            },
            name: name.to_string(),
        }
    }

    /// Calico's etcd key: `/calico/resources/v3/projectcalico.org/<plural>/[<ns>/]<name>`.
    pub fn etcd_key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}{ns}/{}", prefix(self.plural), self.name),
            None => format!("{}{}", prefix(self.plural), self.name),
        }
    }

    /// `Kind(name)` / `Kind(ns/name)` as Calico's errors print it.
    pub fn identifier(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}({ns}/{})", self.kind, self.name),
            None => format!("{}({})", self.kind, self.name),
        }
    }
}

/// Key prefix of every object of one kind (`.../<plural>/`).
pub fn prefix(plural: &str) -> String {
    format!("/calico/resources/v3/projectcalico.org/{plural}/")
}

/// An object as stored, with the revision that last modified it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The object, with `metadata.resourceVersion` set to `revision`.
    pub value: Value,
    pub revision: i64,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Fails the batch if the key exists.
    Create { key: ResourceKey, value: Value },
    /// Fails the batch unless the key's current revision is `revision`.
    Update {
        key: ResourceKey,
        value: Value,
        revision: i64,
    },
    /// Fails the batch unless the key exists (at `revision` when given).
    Delete {
        key: ResourceKey,
        revision: Option<i64>,
    },
}

impl WriteOp {
    pub fn key(&self) -> &ResourceKey {
        match self {
            WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::Delete { key, .. } => key,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A batch's preconditions no longer held: someone changed one of its objects
    /// between our reads and our write.
    #[error("update conflict: {identifiers}")]
    Conflict { identifiers: String },
    /// A batch larger than one etcd transaction failed after some chunks were written.
    #[error("only {written} of {total} writes were applied before a failure: {reason}")]
    Partial {
        written: usize,
        total: usize,
        reason: String,
    },
    #[error("cannot reach the datastore at {endpoints}: {reason}")]
    Connect { endpoints: String, reason: String },
    #[error("datastore {operation} failed: {reason}")]
    Backend {
        operation: &'static str,
        reason: String,
    },
    #[error("datastore entry {key} is not a valid resource: {reason}")]
    Corrupt { key: String, reason: String },
}

/// What calicoctl needs from a datastore.
#[async_trait]
pub trait Store: Send + Sync {
    async fn get(&self, key: &ResourceKey) -> Result<Option<Stored>, StoreError>;
    /// Every object of a kind, in key order; only one namespace when `namespace` is given.
    async fn list(
        &self,
        kind: &'static KindInfo,
        namespace: Option<&str>,
    ) -> Result<Vec<Stored>, StoreError>;
    /// Applies all writes or none. Returns the revision each write produced (0 for deletes).
    async fn commit(&self, ops: &[WriteOp]) -> Result<Vec<i64>, StoreError>;
}

/// In-memory store for unit tests: same semantics as etcd's compare-and-swap batches.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<MemInner>,
}

#[derive(Debug, Default)]
struct MemInner {
    revision: i64,
    objects: BTreeMap<String, (Value, i64)>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of objects stored (to check that failed batches wrote nothing).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.objects.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn with_revision(mut value: Value, revision: i64) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    value
}

#[async_trait]
impl Store for MemStore {
    async fn get(&self, key: &ResourceKey) -> Result<Option<Stored>, StoreError> {
        let inner = self.inner.lock().map_err(|_| poisoned())?;
        Ok(inner.objects.get(&key.etcd_key()).map(|(v, rev)| Stored {
            value: with_revision(v.clone(), *rev),
            revision: *rev,
        }))
    }

    async fn list(
        &self,
        kind: &'static KindInfo,
        namespace: Option<&str>,
    ) -> Result<Vec<Stored>, StoreError> {
        let inner = self.inner.lock().map_err(|_| poisoned())?;
        let mut p = prefix(kind.plural);
        if let (true, Some(ns)) = (kind.namespaced, namespace) {
            p.push_str(ns);
            p.push('/');
        }
        Ok(inner
            .objects
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .map(|(_, (v, rev))| Stored {
                value: with_revision(v.clone(), *rev),
                revision: *rev,
            })
            .collect())
    }

    async fn commit(&self, ops: &[WriteOp]) -> Result<Vec<i64>, StoreError> {
        let mut inner = self.inner.lock().map_err(|_| poisoned())?;
        let failed: Vec<String> = ops
            .iter()
            .filter(|op| {
                let current = inner.objects.get(&op.key().etcd_key()).map(|(_, r)| *r);
                match op {
                    WriteOp::Create { .. } => current.is_some(),
                    WriteOp::Update { revision, .. } => current != Some(*revision),
                    WriteOp::Delete { revision, .. } => {
                        current.is_none() || revision.is_some_and(|r| Some(r) != current)
                    }
                }
            })
            .map(|op| op.key().identifier())
            .collect();
        if !failed.is_empty() {
            return Err(StoreError::Conflict {
                identifiers: failed.join(", "),
            });
        }
        inner.revision += 1;
        let rev = inner.revision;
        let mut out = Vec::new();
        for op in ops {
            match op {
                WriteOp::Create { key, value } | WriteOp::Update { key, value, .. } => {
                    inner
                        .objects
                        .insert(key.etcd_key(), (strip_revision(value), rev));
                    out.push(rev);
                }
                WriteOp::Delete { key, .. } => {
                    inner.objects.remove(&key.etcd_key());
                    out.push(0);
                }
            }
        }
        Ok(out)
    }
}

fn poisoned() -> StoreError {
    StoreError::Backend {
        operation: "lock",
        reason: "in-memory store poisoned".into(),
    }
}

/// The stored form never carries `resourceVersion`: the datastore's revision is the truth.
pub fn strip_revision(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    v
}
