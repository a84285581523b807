//! [`Store`] on etcd v3 in Calico's key layout, with compare-and-swap batches.
//!
//! Values are the JSON of the resource without `metadata.resourceVersion`; the key's
//! `mod_revision` is the resource version. A batch is one etcd transaction whose guards
//! check every key's state (absent for create, at the expected revision for update and
//! delete), so either all writes apply or none do.
//!
//! etcd refuses transactions with more than `--max-txn-ops` operations (128 by default).
//! Larger batches are split into transactions of at most [`MAX_TXN_OPS`] writes; then only
//! each chunk is atomic, and a failure after the first chunk is reported as
//! [`StoreError::Partial`] naming how many writes were applied. calicoctl validates
//! everything and checks every precondition before the first chunk, so this happens only
//! when another writer races with us.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp,
};
use serde_json::Value;

use crate::config::EtcdConfig;
use crate::kinds::KindInfo;
use crate::store::{ResourceKey, Store, StoreError, Stored, WriteOp, prefix, strip_revision};

/// Writes per transaction: etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// Bytes per transaction, well under etcd's default 1.5 MiB request limit.
const MAX_TXN_BYTES: usize = 1024 * 1024;

pub struct EtcdStore {
    client: Client,
}

impl EtcdStore {
    pub async fn connect(cfg: &EtcdConfig) -> Result<Self, StoreError> {
        let endpoints = cfg.endpoints.join(",");
        let connect_err = |reason: String| StoreError::Connect {
            endpoints: endpoints.clone(),
            reason,
        };
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(30));
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            opts = opts.with_user(user.clone(), password.clone());
        }
        let uses_tls = cfg.endpoints.iter().any(|e| e.starts_with("https://"))
            || cfg.ca_cert_file.is_some()
            || cfg.cert_file.is_some();
        if uses_tls {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &cfg.ca_cert_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| connect_err(format!("etcdCACertFile {}: {e}", ca.display())))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) {
                let cert_pem = std::fs::read(cert)
                    .map_err(|e| connect_err(format!("etcdCertFile {}: {e}", cert.display())))?;
                let key_pem = std::fs::read(key)
                    .map_err(|e| connect_err(format!("etcdKeyFile {}: {e}", key.display())))?;
                tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(cfg.endpoints.clone(), Some(opts))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        Ok(EtcdStore { client })
    }

    /// The underlying client, for tests that check etcd directly.
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

fn backend(operation: &'static str) -> impl Fn(etcd_client::Error) -> StoreError {
    move |e| StoreError::Backend {
        operation,
        reason: e.to_string(),
    }
}

fn decode(key: &[u8], value: &[u8], revision: i64) -> Result<Stored, StoreError> {
    let mut v: Value = serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })?;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    Ok(Stored { value: v, revision })
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &ResourceKey) -> Result<Option<Stored>, StoreError> {
        let resp = self
            .client
            .clone()
            .get(key.etcd_key(), None)
            .await
            .map_err(backend("get"))?;
        match resp.kvs().first() {
            Some(kv) => decode(kv.key(), kv.value(), kv.mod_revision()).map(Some),
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
        let resp = self
            .client
            .clone()
            .get(p, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(backend("list"))?;
        resp.kvs()
            .iter()
            .map(|kv| decode(kv.key(), kv.value(), kv.mod_revision()))
            .collect()
    }

    async fn commit(&self, ops: &[WriteOp]) -> Result<Vec<i64>, StoreError> {
        let mut revisions = Vec::with_capacity(ops.len());
        let mut start = 0;
        while start < ops.len() {
            let mut end = start;
            let mut bytes = 0;
            let mut compares = Vec::new();
            let mut writes = Vec::new();
            while end < ops.len() && end - start < MAX_TXN_OPS {
                let (cmp, write, size) = txn_parts(&ops[end])?;
                if end > start && bytes + size > MAX_TXN_BYTES {
                    break;
                }
                bytes += size;
                compares.push(cmp);
                writes.push(write);
                end += 1;
            }
            let txn = Txn::new().when(compares).and_then(writes);
            let result = self.client.clone().txn(txn).await;
            let failure = match result {
                Ok(resp) if resp.succeeded() => {
                    let rev = resp.header().map_or(0, |h| h.revision());
                    for op in &ops[start..end] {
                        revisions.push(if matches!(op, WriteOp::Delete { .. }) {
                            0
                        } else {
                            rev
                        });
                    }
                    None
                }
                Ok(_) => Some(StoreError::Conflict {
                    identifiers: ops[start..end]
                        .iter()
                        .map(|op| op.key().identifier())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
                Err(e) => Some(backend("transaction")(e)),
            };
            if let Some(err) = failure {
                if start == 0 {
                    return Err(err);
                }
                return Err(StoreError::Partial {
                    written: start,
                    total: ops.len(),
                    reason: err.to_string(),
                });
            }
            start = end;
        }
        Ok(revisions)
    }
}

fn txn_parts(op: &WriteOp) -> Result<(Compare, TxnOp, usize), StoreError> {
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
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                TxnOp::put(key, bytes, None),
                size,
            )
        }
        WriteOp::Update {
            value, revision, ..
        } => {
            let bytes = encode(value)?;
            let size = key.len() + bytes.len();
            (
                Compare::mod_revision(key.clone(), CompareOp::Equal, *revision),
                TxnOp::put(key, bytes, None),
                size,
            )
        }
        WriteOp::Delete { revision, .. } => {
            let cmp = match revision {
                Some(r) => Compare::mod_revision(key.clone(), CompareOp::Equal, *r),
                None => Compare::create_revision(key.clone(), CompareOp::Greater, 0),
            };
            let size = key.len();
            (cmp, TxnOp::delete(key, None), size)
        }
    })
}
