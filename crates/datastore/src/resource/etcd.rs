//! [`ResourceStore`] on etcd v3.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;
use tracing::debug;

use super::batch::{self, Atomicity, BatchItem, BatchOutcome};
use super::meta::{
    id_from_key, identify, parse_resource_version, prepare_create, prepare_update, resource_key,
    resource_prefix, resource_version, with_resource_version,
};
use super::{
    Applied, KindRef, ObjectId, ResourceError, ResourceEvent, ResourceList, ResourceStore,
    ResourceWatch, Result,
};
use crate::kv::{EtcdClient, KeyValue, KvError, WatchEvent};

/// How often an update without resourceVersion re-reads and retries after losing a race
/// (calicoctl uses 5).
const REPLACE_ATTEMPTS: u32 = 5;

/// Calico resources stored in etcd.
#[derive(Clone, Debug)]
pub struct EtcdResourceStore {
    kv: EtcdClient,
}

impl EtcdResourceStore {
    pub fn new(kv: EtcdClient) -> Self {
        EtcdResourceStore { kv }
    }

    /// The key-value client underneath (shared, cheap to clone).
    pub fn kv(&self) -> &EtcdClient {
        &self.kv
    }
}

/// Parses a stored value and sets its resourceVersion.
pub(super) fn decode(kind: &KindRef, kv: &KeyValue) -> Result<Value> {
    let doc: Value = serde_json::from_slice(&kv.value).map_err(|source| ResourceError::Decode {
        kind: kind.kind.clone(),
        key: kv.key.clone(),
        source,
    })?;
    Ok(with_resource_version(doc, kv.mod_revision))
}

pub(super) fn encode(kind: &KindRef, id: &ObjectId, doc: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(doc).map_err(|source| ResourceError::Encode {
        kind: kind.kind.clone(),
        id: id.clone(),
        source,
    })
}

/// Maps a key-value error on one object to the resource error naming it.
pub(super) fn kv_error(kind: &KindRef, id: &ObjectId, e: KvError) -> ResourceError {
    let (kind, id) = (kind.kind.clone(), id.clone());
    match e {
        KvError::AlreadyExists { .. } => ResourceError::AlreadyExists { kind, id },
        KvError::NotFound { .. } => ResourceError::NotFound { kind, id },
        KvError::Conflict {
            expected, actual, ..
        } => ResourceError::Conflict {
            kind,
            id,
            expected: expected.to_string(),
            actual: actual.to_string(),
        },
        source => ResourceError::Datastore {
            kind,
            id,
            source: Box::new(source),
        },
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl EtcdResourceStore {
    async fn get_raw(&self, kind: &KindRef, id: &ObjectId) -> Result<Option<KeyValue>> {
        let key = resource_key(kind, id);
        self.kv.get(&key).await.map_err(|e| kv_error(kind, id, e))
    }

    /// One compare-and-swap of `doc` against the stored `current`.
    async fn replace_at(
        &self,
        kind: &KindRef,
        id: &ObjectId,
        current: &KeyValue,
        doc: Value,
    ) -> Result<Value> {
        let stored = decode(kind, current)?;
        let new = prepare_update(kind, &stored, doc);
        let bytes = encode(kind, id, &new)?;
        let rev = self
            .kv
            .update(&current.key, bytes, current.mod_revision)
            .await
            .map_err(|e| kv_error(kind, id, e))?;
        Ok(with_resource_version(new, rev))
    }
}

#[async_trait]
impl ResourceStore for EtcdResourceStore {
    async fn get(&self, kind: &KindRef, id: &ObjectId) -> Result<Option<Value>> {
        self.get_raw(kind, id)
            .await?
            .map(|kv| decode(kind, &kv))
            .transpose()
    }

    async fn list(&self, kind: &KindRef, namespace: Option<&str>) -> Result<ResourceList<Value>> {
        let prefix = resource_prefix(kind, namespace);
        let listing =
            self.kv
                .list(&prefix)
                .await
                .map_err(|source| ResourceError::DatastorePrefix {
                    kind: kind.kind.clone(),
                    prefix: prefix.clone(),
                    source: Box::new(source),
                })?;
        let mut items = Vec::with_capacity(listing.kvs.len());
        for kv in &listing.kvs {
            // Keys that do not have this kind's shape (none should) are not objects of it.
            if id_from_key(kind, &kv.key).is_some() {
                items.push(decode(kind, kv)?);
            }
        }
        Ok(ResourceList {
            items,
            revision: listing.revision,
        })
    }

    async fn create(&self, kind: &KindRef, doc: Value) -> Result<Value> {
        let id = identify(kind, &doc)?;
        if resource_version(kind, &id, &doc)?.is_some() {
            return Err(ResourceError::ResourceVersionOnCreate {
                kind: kind.kind.clone(),
                id,
            });
        }
        let doc = prepare_create(kind, doc, &new_uid(), &now_rfc3339());
        let bytes = encode(kind, &id, &doc)?;
        let rev = self
            .kv
            .create(&resource_key(kind, &id), bytes)
            .await
            .map_err(|e| kv_error(kind, &id, e))?;
        Ok(with_resource_version(doc, rev))
    }

    async fn update(&self, kind: &KindRef, doc: Value) -> Result<Value> {
        let id = identify(kind, &doc)?;
        let not_found = || ResourceError::NotFound {
            kind: kind.kind.clone(),
            id: id.clone(),
        };
        if let Some(expected) = resource_version(kind, &id, &doc)? {
            let current = self.get_raw(kind, &id).await?.ok_or_else(not_found)?;
            if current.mod_revision != expected {
                return Err(ResourceError::Conflict {
                    kind: kind.kind.clone(),
                    id,
                    expected: expected.to_string(),
                    actual: current.mod_revision.to_string(),
                });
            }
            return self.replace_at(kind, &id, &current, doc).await;
        }
        // No resourceVersion: replace whatever is there now, without losing a concurrent
        // writer's change silently (each attempt is a compare-and-swap on what we read).
        for attempt in 1..=REPLACE_ATTEMPTS {
            let current = self.get_raw(kind, &id).await?.ok_or_else(not_found)?;
            match self.replace_at(kind, &id, &current, doc.clone()).await {
                Err(ResourceError::Conflict { .. }) => {
                    debug!(kind = %kind.kind, %id, attempt, "replace lost a race, re-reading");
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
        Err(ResourceError::TooManyConflicts {
            kind: kind.kind.clone(),
            id,
            attempts: REPLACE_ATTEMPTS,
        })
    }

    async fn apply(&self, kind: &KindRef, doc: Value) -> Result<(Value, Applied)> {
        let id = identify(kind, &doc)?;
        // Validate it now so a bad one is reported whether or not the object exists.
        resource_version(kind, &id, &doc)?;
        // Bounded: create, else update; if the object vanished in between, once more.
        for _ in 0..2 {
            let mut for_create = doc.clone();
            super::meta::set_meta(&mut for_create, "resourceVersion", None);
            match self.create(kind, for_create).await {
                Ok(created) => return Ok((created, Applied::Created)),
                Err(ResourceError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.update(kind, doc.clone()).await {
                Ok(updated) => return Ok((updated, Applied::Updated)),
                Err(ResourceError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ResourceError::TooManyConflicts {
            kind: kind.kind.clone(),
            id,
            attempts: 2,
        })
    }

    async fn delete(
        &self,
        kind: &KindRef,
        id: &ObjectId,
        resource_version: Option<&str>,
    ) -> Result<Value> {
        let expected = resource_version
            .map(|rv| parse_resource_version(kind, id, rv))
            .transpose()?;
        let key = resource_key(kind, id);
        let prev = self
            .kv
            .delete(&key, expected)
            .await
            .map_err(|e| kv_error(kind, id, e))?;
        if prev.value.is_empty() {
            // Deleted by an earlier attempt whose answer was lost: the content is gone.
            let mut doc = serde_json::json!({
                "apiVersion": calico_api::API_VERSION,
                "kind": kind.kind,
                "metadata": {"name": id.name},
            });
            if let Some(ns) = &id.namespace {
                super::meta::set_meta(&mut doc, "namespace", Some(Value::String(ns.clone())));
            }
            return Ok(doc);
        }
        decode(kind, &prev)
    }

    fn watch(
        &self,
        kind: &KindRef,
        namespace: Option<&str>,
        from_revision: i64,
    ) -> ResourceWatch<Value> {
        let prefix = resource_prefix(kind, namespace);
        typed_events(
            kind.clone(),
            prefix.clone(),
            self.kv.watch(&prefix, from_revision),
        )
    }

    fn list_watch(&self, kind: &KindRef, namespace: Option<&str>) -> ResourceWatch<Value> {
        let prefix = resource_prefix(kind, namespace);
        typed_events(kind.clone(), prefix.clone(), self.kv.list_watch(&prefix))
    }

    async fn write_batch(
        &self,
        items: Vec<BatchItem>,
        atomicity: Atomicity,
    ) -> Result<BatchOutcome> {
        batch::write_batch(&self.kv, items, atomicity).await
    }
}

/// Turns key-value watch events into resource events of `kind`.
fn typed_events(
    kind: KindRef,
    prefix: String,
    stream: crate::kv::KvWatchStream,
) -> ResourceWatch<Value> {
    stream
        .filter_map(move |item| {
            let kind = kind.clone();
            let prefix = prefix.clone();
            async move {
                let event = match item {
                    Err(source) => {
                        return Some(Err(ResourceError::DatastorePrefix {
                            kind: kind.kind.clone(),
                            prefix,
                            source: Box::new(source),
                        }));
                    }
                    Ok(e) => e,
                };
                match event {
                    WatchEvent::Put(kv) => {
                        id_from_key(&kind, &kv.key)?;
                        Some(decode(&kind, &kv).map(|doc| {
                            if kv.create_revision == kv.mod_revision {
                                ResourceEvent::Added(doc)
                            } else {
                                ResourceEvent::Modified(doc)
                            }
                        }))
                    }
                    WatchEvent::Delete {
                        key,
                        revision,
                        prev,
                    } => {
                        let id = id_from_key(&kind, &key)?;
                        let previous = prev.and_then(|p| decode(&kind, &p).ok());
                        Some(Ok(ResourceEvent::Deleted {
                            id,
                            revision,
                            previous,
                        }))
                    }
                    WatchEvent::Snapshot(listing) => {
                        let mut items = Vec::with_capacity(listing.kvs.len());
                        let mut errors = Vec::new();
                        for kv in listing
                            .kvs
                            .iter()
                            .filter(|kv| id_from_key(&kind, &kv.key).is_some())
                        {
                            match decode(&kind, kv) {
                                Ok(doc) => items.push(doc),
                                Err(e) => errors.push(calico_api::error_chain(&e)),
                            }
                        }
                        Some(Ok(ResourceEvent::Snapshot {
                            revision: listing.revision,
                            items,
                            errors,
                        }))
                    }
                }
            }
        })
        .boxed()
}
