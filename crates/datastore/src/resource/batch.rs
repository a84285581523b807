//! Writing many resources in one etcd transaction: the one batch writer (calicoctl's
//! create/apply/replace/delete and `Datastore::apply_all` all come through here).
//!
//! etcd caps a transaction at `--max-txn-ops` operations (default 128). A batch that fits is
//! written all-or-nothing: one read of every key, then one transaction whose comparisons pin
//! every key to what was read (absent, or its mod revision) and whose writes put or delete
//! every document. If anything changed in between, nothing is written and the batch is re-read
//! and re-decided (bounded); a document that names what it expects (a `resourceVersion`, or
//! [`BatchOp::Create`]'s "absent") then fails with `Conflict` / `AlreadyExists` instead of
//! being written over the other writer's change.
//!
//! Metadata follows the one rule of [`super::meta`]: the document is the whole object (labels
//! and annotations included); `uid` and `creationTimestamp` are the datastore's. A replace or
//! apply that would store exactly what is stored writes nothing ([`Applied::Unchanged`]), so
//! re-applying a file keeps every resourceVersion.
//!
//! etcd also caps a request at `--max-request-bytes` (default 1.5 MiB); a transaction is kept
//! under [`MAX_TXN_BYTES`] (1 MiB, estimated from the documents plus room for the metadata we
//! add), which counts as "does not fit" just like the operation limit.
//!
//! A larger batch is either refused before anything is written ([`Atomicity::AllOrNothing`],
//! the default for `apply_all`) or written in chunks of `max_txn_ops` documents, each chunk
//! atomic ([`Atomicity::Chunked`]); a failure in a later chunk is reported as
//! [`ResourceError::PartialBatch`] with how many documents were committed. To get larger atomic
//! batches, run etcd with a larger `--max-txn-ops` and tell the client with
//! [`crate::kv::EtcdClient::with_max_txn_ops`].

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use tracing::debug;

use super::etcd::{decode, encode, kv_error};
use super::meta::{
    identify, prepare_create, prepare_update, resource_key, resource_version, set_meta,
    with_resource_version,
};
use super::{Applied, KindRef, ObjectId, ResourceError, Result};
use crate::kv::{Compare, EtcdClient, KeyValue, TxnOutcome, Write};

/// What one document of a batch must find, and what is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp {
    /// The object must be absent; it is created (`calicoctl create`).
    Create,
    /// The object must exist (at the document's `resourceVersion` when it has one); it is
    /// replaced by the document (`calicoctl replace`).
    Replace,
    /// Create, or replace if it exists (`calicoctl apply`).
    Apply,
    /// The object must exist (at the document's `resourceVersion` when it has one); it is
    /// deleted. Only the document's identity is read.
    Delete,
}

/// One document of a batch and what to do with it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    pub op: BatchOp,
    pub kind: KindRef,
    pub doc: Value,
}

impl BatchItem {
    pub fn new(op: BatchOp, kind: KindRef, doc: Value) -> Self {
        BatchItem { op, kind, doc }
    }

    /// The same operation on every document.
    pub fn all(op: BatchOp, docs: Vec<(KindRef, Value)>) -> Vec<BatchItem> {
        docs.into_iter()
            .map(|(kind, doc)| BatchItem::new(op, kind, doc))
            .collect()
    }
}

/// How a batch larger than one transaction is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Atomicity {
    /// One transaction or nothing: a batch over the limit is refused up front.
    AllOrNothing,
    /// One transaction per chunk of `max_txn_ops` documents.
    Chunked,
}

/// The result of a batch: every document as stored (a deleted one: its last state), in input
/// order, and what happened to it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    pub results: Vec<(Value, Applied)>,
    /// Revision of the last transaction (of the last read when nothing had to be written).
    pub revision: i64,
}

/// Largest estimated transaction we send, under etcd's default 1.5 MiB request limit.
pub const MAX_TXN_BYTES: usize = 1024 * 1024;

/// Room per document for what create adds (uid, creationTimestamp) and protobuf framing.
const PER_DOC_OVERHEAD: usize = 256;

/// Whole-batch attempts when a concurrent writer changes a key between read and write.
const BATCH_ATTEMPTS: u32 = 5;

struct Item {
    op: BatchOp,
    kind: KindRef,
    id: ObjectId,
    key: String,
    doc: Value,
    expected: Option<i64>,
    /// Estimated bytes this item adds to a transaction.
    size: usize,
}

pub(super) async fn write_batch(
    kv: &EtcdClient,
    batch: Vec<BatchItem>,
    atomicity: Atomicity,
) -> Result<BatchOutcome> {
    // Validate everything before writing anything.
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(batch.len());
    for BatchItem { op, kind, doc } in batch {
        let id = identify(&kind, &doc)?;
        let expected = resource_version(&kind, &id, &doc)?;
        if op == BatchOp::Create && expected.is_some() {
            return Err(ResourceError::ResourceVersionOnCreate {
                kind: kind.kind.clone(),
                id,
            });
        }
        let key = resource_key(&kind, &id);
        let size = key.len() * 2 + doc.to_string().len() + PER_DOC_OVERHEAD;
        if !seen.insert(key.clone()) {
            return Err(ResourceError::DuplicateInBatch {
                kind: kind.kind.clone(),
                id,
            });
        }
        items.push(Item {
            op,
            kind,
            id,
            key,
            doc,
            expected,
            size,
        });
    }
    let limit = kv.max_txn_ops().max(1);
    if atomicity == Atomicity::AllOrNothing {
        if items.len() > limit {
            return Err(ResourceError::BatchTooLarge {
                ops: items.len(),
                limit,
            });
        }
        let bytes: usize = items.iter().map(|i| i.size).sum();
        if bytes > MAX_TXN_BYTES {
            return Err(ResourceError::BatchTooManyBytes {
                bytes,
                limit: MAX_TXN_BYTES,
            });
        }
    }
    let total = items.len();
    let mut outcome = BatchOutcome {
        results: Vec::with_capacity(total),
        revision: 0,
    };
    for chunk in chunks(&items, limit) {
        match write_chunk(kv, chunk).await {
            Ok((results, revision)) => {
                outcome.results.extend(results);
                outcome.revision = revision;
            }
            Err(e) if outcome.results.is_empty() => return Err(e),
            Err(e) => {
                return Err(ResourceError::PartialBatch {
                    committed: outcome.results.len(),
                    total,
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(outcome)
}

/// How to split writes of the given estimated `sizes` into etcd transactions: consecutive
/// index ranges of at most `max_ops` writes and [`MAX_TXN_BYTES`] bytes each (a single write
/// over the byte limit still gets its own range; etcd then judges it). Every writer that
/// chunks a batch (this module, calicoctl) splits it this way.
pub fn txn_chunks(sizes: &[usize], max_ops: usize) -> Vec<std::ops::Range<usize>> {
    let max_ops = max_ops.max(1);
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, size) in sizes.iter().enumerate() {
        if i > start && (i - start == max_ops || bytes + size > MAX_TXN_BYTES) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

fn chunks(items: &[Item], limit: usize) -> Vec<&[Item]> {
    let sizes: Vec<usize> = items.iter().map(|i| i.size).collect();
    txn_chunks(&sizes, limit)
        .into_iter()
        .map(|r| &items[r])
        .collect()
}

/// What one item does in a transaction, decided from the state read just before.
struct Planned {
    compare: Compare,
    /// `None` when the object already is what the document says.
    write: Option<Write>,
    /// The object as it is after the transaction (a deleted one: its last state), without
    /// its new resourceVersion yet.
    doc: Value,
    applied: Applied,
}

/// Decides one item against the key's current state; fails for what no retry can change.
fn plan(item: &Item, cur: Option<&KeyValue>, now: &str) -> Result<Planned> {
    let (kind, id) = (&item.kind, &item.id);
    let key = item.key.clone();
    let not_found = || ResourceError::NotFound {
        kind: kind.kind.clone(),
        id: id.clone(),
    };
    let check_expected = |cur: &KeyValue| match item.expected {
        Some(expected) if expected != cur.mod_revision => Err(ResourceError::Conflict {
            kind: kind.kind.clone(),
            id: id.clone(),
            expected: expected.to_string(),
            actual: cur.mod_revision.to_string(),
        }),
        _ => Ok(()),
    };
    match (item.op, cur) {
        (BatchOp::Create, Some(_)) => Err(ResourceError::AlreadyExists {
            kind: kind.kind.clone(),
            id: id.clone(),
        }),
        (BatchOp::Replace | BatchOp::Delete, None) => Err(not_found()),
        (BatchOp::Create | BatchOp::Apply, None) => {
            let mut doc = item.doc.clone();
            set_meta(&mut doc, "resourceVersion", None);
            let doc = prepare_create(kind, doc, &uuid::Uuid::new_v4().to_string(), now);
            Ok(Planned {
                compare: Compare::Absent { key: key.clone() },
                write: Some(Write::Put {
                    value: encode(kind, id, &doc)?,
                    key,
                }),
                doc,
                applied: Applied::Created,
            })
        }
        (BatchOp::Replace | BatchOp::Apply, Some(cur)) => {
            check_expected(cur)?;
            let stored = decode(kind, cur)?;
            let doc = prepare_update(kind, &stored, item.doc.clone());
            let mut unchanged = stored;
            set_meta(&mut unchanged, "resourceVersion", None);
            let (write, applied) = if unchanged == doc {
                (None, Applied::Unchanged)
            } else {
                (
                    Some(Write::Put {
                        key: key.clone(),
                        value: encode(kind, id, &doc)?,
                    }),
                    Applied::Updated,
                )
            };
            Ok(Planned {
                compare: Compare::ModRevision {
                    key,
                    revision: cur.mod_revision,
                },
                write,
                doc,
                applied,
            })
        }
        (BatchOp::Delete, Some(cur)) => {
            check_expected(cur)?;
            let mut doc = decode(kind, cur)?;
            set_meta(&mut doc, "resourceVersion", None);
            Ok(Planned {
                compare: Compare::ModRevision {
                    key: key.clone(),
                    revision: cur.mod_revision,
                },
                write: Some(Write::Delete { key }),
                doc,
                applied: Applied::Deleted,
            })
        }
    }
}

/// One atomic transaction for `chunk` (at most `max_txn_ops` items).
async fn write_chunk(kv: &EtcdClient, chunk: &[Item]) -> Result<(Vec<(Value, Applied)>, i64)> {
    let keys: Vec<String> = chunk.iter().map(|i| i.key.clone()).collect();
    let first = &chunk[0];
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for attempt in 1..=BATCH_ATTEMPTS {
        let (current, read_revision) = kv
            .get_many(&keys)
            .await
            .map_err(|e| kv_error(&first.kind, &first.id, e))?;
        let planned = chunk
            .iter()
            .zip(&current)
            .map(|(item, cur)| plan(item, cur.as_ref(), &now))
            .collect::<Result<Vec<_>>>()?;
        if planned.iter().all(|p| p.write.is_none()) {
            // Everything already is as asked: nothing to write, every revision kept.
            let results = planned
                .into_iter()
                .zip(&current)
                .map(|(p, cur)| {
                    let rev = cur.as_ref().map_or(0, |kv| kv.mod_revision);
                    (with_resource_version(p.doc, rev), p.applied)
                })
                .collect();
            return Ok((results, read_revision));
        }
        let compares = planned.iter().map(|p| p.compare.clone()).collect();
        let writes = planned.iter().filter_map(|p| p.write.clone()).collect();
        match kv
            .txn(compares, writes)
            .await
            .map_err(|e| kv_error(&first.kind, &first.id, e))?
        {
            TxnOutcome::Committed { revision } => {
                let results = planned
                    .into_iter()
                    .zip(&current)
                    .map(|(p, cur)| {
                        let rev = match p.applied {
                            Applied::Unchanged => cur.as_ref().map_or(0, |kv| kv.mod_revision),
                            _ => revision,
                        };
                        (with_resource_version(p.doc, rev), p.applied)
                    })
                    .collect();
                return Ok((results, revision));
            }
            TxnOutcome::Failed { failed, .. } => {
                let who = failed.first().map(|i| &chunk[*i]);
                debug!(
                    attempt,
                    key = who.map(|i| i.key.as_str()),
                    "batch raced a concurrent writer, re-reading"
                );
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
        }
    }
    Err(ResourceError::TooManyConflicts {
        kind: first.kind.kind.clone(),
        id: first.id.clone(),
        attempts: BATCH_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests_support {
    use super::*;

    pub(super) fn item(size: usize) -> Item {
        Item {
            op: BatchOp::Apply,
            kind: KindRef::new("IPPool", "ippools", false),
            id: ObjectId::global("x"),
            key: String::new(),
            doc: Value::Null,
            expected: None,
            size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::item;
    use super::*;

    fn sizes(items: &[Item], limit: usize) -> Vec<usize> {
        chunks(items, limit).iter().map(|c| c.len()).collect()
    }

    #[test]
    fn chunks_respect_the_operation_limit() {
        let items: Vec<_> = (0..300).map(|_| item(100)).collect();
        assert_eq!(sizes(&items, 128), [128, 128, 44]);
        assert_eq!(sizes(&items[..128], 128), [128]);
        assert!(chunks(&items[..0], 128).is_empty());
    }

    #[test]
    fn chunks_respect_the_byte_limit() {
        let items: Vec<_> = (0..10).map(|_| item(MAX_TXN_BYTES / 4)).collect();
        assert_eq!(sizes(&items, 128), [4, 4, 2]);
        // An oversized item travels alone rather than being dropped.
        let big = vec![item(10), item(MAX_TXN_BYTES * 2), item(10)];
        assert_eq!(sizes(&big, 128), [1, 1, 1]);
    }
}

#[cfg(test)]
mod properties {
    use super::tests_support::item;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Chunks cover every item once, in order, each within both limits (except a lone
        /// oversized item).
        #[test]
        fn chunks_partition_in_order_within_limits(
            sizes in proptest::collection::vec(1usize..400_000, 0..60),
            limit in 1usize..20,
        ) {
            let items: Vec<_> = sizes.iter().map(|s| item(*s)).collect();
            let parts = chunks(&items, limit);
            let flat: Vec<usize> = parts.iter().flat_map(|c| c.iter().map(|i| i.size)).collect();
            prop_assert_eq!(flat, sizes);
            for c in &parts {
                prop_assert!(!c.is_empty() && c.len() <= limit);
                let bytes: usize = c.iter().map(|i| i.size).sum();
                prop_assert!(bytes <= MAX_TXN_BYTES || c.len() == 1);
            }
        }
    }
}
