//! [`Store`] on etcd v3 in Calico's key layout, through `calico-datastore`'s key-value client
//! (bounded retries, TLS and credentials as Calico configures them).
//!
//! Values are the JSON of the resource without `metadata.resourceVersion`; the key's
//! `mod_revision` is the resource version. A batch is one etcd transaction whose guards
//! check every key's state (absent for create, at the expected revision for update and
//! delete), so either all writes apply or none do.
//!
//! etcd refuses transactions with more than `--max-txn-ops` operations (128 by default).
//! Larger batches are split into transactions of at most that many writes; then only each
//! chunk is atomic, and a failure after the first chunk is reported as
//! [`StoreError::Partial`] naming how many writes were applied. calicoctl validates
//! everything and checks every precondition before the first chunk, so this happens only
//! when another writer races with us.

use async_trait::async_trait;
use calico_api::error_chain;
use calico_datastore::{
    Compare, EtcdClient, EtcdConfig, KeyValue, KvError, TxnOutcome, Write, txn_chunks,
};
use serde_json::Value;

use crate::kinds::KindInfo;
use crate::store::{ResourceKey, Store, StoreError, Stored, WriteOp, prefix, strip_revision};

pub struct EtcdStore {
    kv: EtcdClient,
}

impl EtcdStore {
    pub async fn connect(cfg: &EtcdConfig) -> Result<Self, StoreError> {
        let kv = EtcdClient::connect(cfg)
            .await
            .map_err(|e| StoreError::Connect {
                endpoints: cfg.endpoints.join(","),
                reason: error_chain(&e),
            })?;
        Ok(EtcdStore { kv })
    }

    pub fn from_client(kv: EtcdClient) -> Self {
        EtcdStore { kv }
    }
}

fn backend(operation: &'static str) -> impl Fn(KvError) -> StoreError {
    move |e| StoreError::Backend {
        operation,
        reason: error_chain(&e),
    }
}

fn decode(kv: &KeyValue) -> Result<Stored, StoreError> {
    let mut v: Value = serde_json::from_slice(&kv.value).map_err(|e| StoreError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })?;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
    }
    Ok(Stored {
        value: v,
        revision: kv.mod_revision,
    })
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &ResourceKey) -> Result<Option<Stored>, StoreError> {
        match self.kv.get(&key.etcd_key()).await.map_err(backend("get"))? {
            Some(kv) => decode(&kv).map(Some),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        kind: &'static KindInfo,
        namespace: Option<&str>,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut p = prefix(kind.plural);
        if let (true, Some(ns)) = (kind.namespaced, namespace) {
            p.push_str(ns);
            p.push('/');
        }
        let listing = self.kv.list(&p).await.map_err(backend("list"))?;
        listing.kvs.iter().map(decode).collect()
    }

    async fn commit(&self, ops: &[WriteOp]) -> Result<Vec<i64>, StoreError> {
        let parts = ops.iter().map(txn_parts).collect::<Result<Vec<_>, _>>()?;
        let sizes: Vec<usize> = parts.iter().map(|(_, _, size)| *size).collect();
        let mut parts = parts.into_iter();
        let mut revisions = Vec::with_capacity(ops.len());
        for chunk in txn_chunks(&sizes, self.kv.max_txn_ops()) {
            let (compares, writes): (Vec<_>, Vec<_>) = parts
                .by_ref()
                .take(chunk.len())
                .map(|(cmp, write, _)| (cmp, write))
                .unzip();
            let failure = match self.kv.txn(compares, writes).await {
                Ok(TxnOutcome::Committed { revision }) => {
                    revisions.extend(ops[chunk.clone()].iter().map(|op| match op {
                        WriteOp::Delete { .. } => 0,
                        _ => revision,
                    }));
                    continue;
                }
                Ok(TxnOutcome::Failed { failed, .. }) => StoreError::Conflict {
                    identifiers: failed
                        .iter()
                        .filter_map(|i| ops.get(chunk.start + i))
                        .map(|op| op.key().identifier())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
                Err(e) => backend("transaction")(e),
            };
            if chunk.start == 0 {
                return Err(failure);
            }
            return Err(StoreError::Partial {
                written: chunk.start,
                total: ops.len(),
                reason: failure.to_string(),
            });
        }
        Ok(revisions)
    }
}

fn txn_parts(op: &WriteOp) -> Result<(Compare, Write, usize), StoreError> {
    let key = op.key().etcd_key();
    let encode = |value: &Value| {
        serde_json::to_vec(&strip_revision(value)).map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })
    };
    Ok(match op {
        WriteOp::Create { value, .. } => {
            let bytes = encode(value)?;
            let size = key.len() + bytes.len();
            (
                Compare::Absent { key: key.clone() },
                Write::Put { key, value: bytes },
                size,
            )
        }
        WriteOp::Update {
            value, revision, ..
        } => {
            let bytes = encode(value)?;
            let size = key.len() + bytes.len();
            (
                Compare::ModRevision {
                    key: key.clone(),
                    revision: *revision,
                },
                Write::Put { key, value: bytes },
                size,
            )
        }
        WriteOp::Delete { revision, .. } => {
            // Deletes always carry the revision read just before (commands read first).
            let size = key.len();
            (
                Compare::ModRevision {
                    key: key.clone(),
                    revision: revision.unwrap_or(0),
                },
                Write::Delete { key },
                size,
            )
        }
    })
}
