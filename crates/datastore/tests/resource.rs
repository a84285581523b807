//! The resource layer (typed and dynamic) against a real etcd started by the test.

mod common;

use std::time::Duration;

use calico_api::{CalicoResource, ObjectMeta};
use calico_datastore::{
    Applied, Atomicity, BatchItem, BatchOp, Datastore, EtcdClient, KindRef, ObjectId,
    ResourceError, ResourceEvent,
};
use common::{Etcd, Options};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A cluster-scoped test kind (the real kinds live in calico-api; this layer only needs the
/// trait).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
struct Pool {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    metadata: ObjectMeta,
    spec: PoolSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
struct PoolSpec {
    cidr: String,
    #[serde(default)]
    disabled: bool,
}

impl CalicoResource for Pool {
    const KIND: &'static str = "IPPool";
    const PLURAL: &'static str = "ippools";
    const NAMESPACED: bool = false;
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A namespaced test kind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
struct Policy {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    metadata: ObjectMeta,
    spec: Value,
}

impl CalicoResource for Policy {
    const KIND: &'static str = "NetworkPolicy";
    const PLURAL: &'static str = "networkpolicies";
    const NAMESPACED: bool = true;
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn pool(name: &str, cidr: &str) -> Pool {
    Pool {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: PoolSpec {
            cidr: cidr.into(),
            disabled: false,
        },
        ..Default::default()
    }
}

fn policy(ns: &str, name: &str, order: u32) -> Policy {
    Policy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: json!({"order": order, "selector": "all()"}),
        ..Default::default()
    }
}

async fn connect(etcd: &Etcd) -> (Datastore, EtcdClient) {
    let kv = EtcdClient::connect(&etcd.config()).await.expect("connect");
    (Datastore::from_etcd(kv.clone()), kv)
}

fn rv<T: CalicoResource>(t: &T) -> i64 {
    t.meta()
        .resource_version
        .as_deref()
        .expect("resourceVersion set")
        .parse()
        .expect("numeric resourceVersion")
}

#[tokio::test]
async fn create_stores_calicos_key_and_json_and_sets_server_metadata() {
    let etcd = Etcd::start();
    let (ds, kv) = connect(&etcd).await;
    let created = ds.create(&pool("pool-a", "10.1.0.0/16")).await.unwrap();
    assert!(
        created
            .metadata
            .uid
            .as_deref()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.api_version, "projectcalico.org/v3");
    assert_eq!(created.kind, "IPPool");

    let raw = kv
        .get("/calico/resources/v3/projectcalico.org/ippools/pool-a")
        .await
        .unwrap()
        .expect("stored under Calico's key");
    assert_eq!(rv(&created), raw.mod_revision);
    let stored: Value = serde_json::from_slice(&raw.value).unwrap();
    assert_eq!(stored["apiVersion"], "projectcalico.org/v3");
    assert_eq!(stored["kind"], "IPPool");
    assert_eq!(stored["spec"]["cidr"], "10.1.0.0/16");
    assert_eq!(stored["metadata"]["uid"], json!(created.metadata.uid));
    assert!(
        stored["metadata"].get("resourceVersion").is_none(),
        "{stored}"
    );

    let fetched: Pool = ds.get(None, "pool-a").await.unwrap().unwrap();
    assert_eq!(fetched, created);
    assert_eq!(ds.get::<Pool>(None, "nope").await.unwrap(), None);

    ds.create(&policy("ns1", "allow", 1)).await.unwrap();
    assert!(
        kv.get("/calico/resources/v3/projectcalico.org/networkpolicies/ns1/allow")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn create_twice_is_already_exists_naming_kind_and_object() {
    let etcd = Etcd::start();
    let (ds, _) = connect(&etcd).await;
    ds.create(&policy("ns1", "p", 1)).await.unwrap();
    let err = ds.create(&policy("ns1", "p", 2)).await.unwrap_err();
    assert!(err.is_already_exists(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "resource already exists: NetworkPolicy(ns1/p)"
    );
    let mut with_rv = pool("pool-b", "10.2.0.0/16");
    with_rv.metadata.resource_version = Some("5".into());
    assert!(matches!(
        ds.create(&with_rv).await,
        Err(ResourceError::ResourceVersionOnCreate { .. })
    ));
}

#[tokio::test]
async fn list_by_namespace_and_across_namespaces() {
    let etcd = Etcd::start();
    let (ds, _) = connect(&etcd).await;
    for (ns, name) in [("a", "p1"), ("a", "p2"), ("b", "p1"), ("ab", "p9")] {
        ds.create(&policy(ns, name, 1)).await.unwrap();
    }
    ds.create(&pool("pool-a", "10.1.0.0/16")).await.unwrap();
    let names = |l: &[Policy]| -> Vec<String> {
        l.iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap(),
                    p.metadata.name.as_deref().unwrap()
                )
            })
            .collect()
    };
    let in_a = ds.list::<Policy>(Some("a")).await.unwrap();
    assert_eq!(names(&in_a.items), ["a/p1", "a/p2"]);
    let all = ds.list::<Policy>(None).await.unwrap();
    assert_eq!(names(&all.items), ["a/p1", "a/p2", "ab/p9", "b/p1"]);
    assert!(all.revision >= in_a.revision);
    assert_eq!(ds.list::<Pool>(None).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn update_with_stale_resource_version_is_a_typed_conflict() {
    let etcd = Etcd::start();
    let (ds, _) = connect(&etcd).await;
    let v1 = ds.create(&policy("ns1", "allow", 1)).await.unwrap();
    let mut edit = v1.clone();
    edit.spec = json!({"order": 2});
    let v2 = ds.update(&edit).await.unwrap();
    assert!(rv(&v2) > rv(&v1));
    assert_eq!(v2.metadata.uid, v1.metadata.uid);
    assert_eq!(
        v2.metadata.creation_timestamp,
        v1.metadata.creation_timestamp
    );

    // A second writer still holding v1 loses.
    let mut stale = v1.clone();
    stale.spec = json!({"order": 3});
    match ds.update(&stale).await {
        Err(ResourceError::Conflict {
            kind,
            id,
            expected,
            actual,
        }) => {
            assert_eq!(kind, "NetworkPolicy");
            assert_eq!(id, ObjectId::namespaced("ns1", "allow"));
            assert_eq!(expected, rv(&v1).to_string());
            assert_eq!(actual, rv(&v2).to_string());
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let now: Policy = ds.get(Some("ns1"), "allow").await.unwrap().unwrap();
    assert_eq!(now.spec, json!({"order": 2}));

    // Updating something that does not exist.
    let mut ghost = policy("ns1", "ghost", 1);
    ghost.metadata.resource_version = Some("3".into());
    assert!(ds.update(&ghost).await.unwrap_err().is_not_found());
    let mut bad = v2.clone();
    bad.metadata.resource_version = Some("latest".into());
    assert!(matches!(
        ds.update(&bad).await,
        Err(ResourceError::InvalidResourceVersion { .. })
    ));
}

#[tokio::test]
async fn update_without_resource_version_replaces_and_keeps_server_metadata() {
    let etcd = Etcd::start();
    let (ds, _) = connect(&etcd).await;
    let mut original = pool("pool-a", "10.1.0.0/16");
    original.metadata.labels = Some([("old".to_string(), "yes".to_string())].into());
    let created = ds.create(&original).await.unwrap();

    // What a user's YAML looks like: no resourceVersion, no uid, new labels.
    let mut replacement = pool("pool-a", "10.9.0.0/16");
    replacement.metadata.labels = Some([("new".to_string(), "yes".to_string())].into());
    let replaced = ds.update(&replacement).await.unwrap();
    assert_eq!(replaced.spec.cidr, "10.9.0.0/16");
    assert_eq!(replaced.metadata.uid, created.metadata.uid);
    assert_eq!(
        replaced.metadata.creation_timestamp,
        created.metadata.creation_timestamp
    );
    assert_eq!(replaced.metadata.labels, replacement.metadata.labels);
    assert!(rv(&replaced) > rv(&created));

    assert!(
        ds.update(&pool("absent", "10.3.0.0/16"))
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn apply_creates_then_replaces() {
    let etcd = Etcd::start();
    let (ds, _) = connect(&etcd).await;
    let (a, how) = ds.apply(&pool("p", "10.1.0.0/16")).await.unwrap();
    assert_eq!(how, Applied::Created);
    let (b, how) = ds.apply(&pool("p", "10.2.0.0/16")).await.unwrap();
    assert_eq!(how, Applied::Updated);
    assert_eq!(b.spec.cidr, "10.2.0.0/16");
    assert_eq!(b.metadata.uid, a.metadata.uid);
    // apply with a stale resourceVersion is a conflict, as in calicoctl.
    let mut stale = a.clone();
    stale.spec.cidr = "10.3.0.0/16".into();
    assert!(ds.apply(&stale).await.unwrap_err().is_conflict());
}

#[tokio::test]
async fn delete_honours_resource_version_and_reports_missing() {
    let etcd = Etcd::start();
    let (ds, _) = connect(&etcd).await;
    let v1 = ds.create(&pool("p", "10.1.0.0/16")).await.unwrap();
    let v2 = ds.update(&pool("p", "10.2.0.0/16")).await.unwrap();
    let stale = v1.metadata.resource_version.clone();
    let err = ds
        .delete::<Pool>(None, "p", stale.as_deref())
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert!(ds.get::<Pool>(None, "p").await.unwrap().is_some());
    let deleted: Pool = ds
        .delete(None, "p", v2.metadata.resource_version.as_deref())
        .await
        .unwrap();
    assert_eq!(deleted.spec.cidr, "10.2.0.0/16");
    assert!(ds.get::<Pool>(None, "p").await.unwrap().is_none());
    let err = ds.delete::<Pool>(None, "p", None).await.unwrap_err();
    assert_eq!(err.to_string(), "resource does not exist: IPPool(p)");
    assert!(matches!(
        ds.delete::<Policy>(None, "x", None).await,
        Err(ResourceError::MissingNamespace { .. })
    ));
}

#[tokio::test]
async fn concurrent_replacers_never_lose_the_object_or_its_uid() {
    let etcd = Etcd::start();
    let (ds, _) = connect(&etcd).await;
    let created = ds.create(&pool("hot", "10.0.0.0/16")).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let ds = ds.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                ds.update(&pool("hot", &format!("10.{w}.{i}.0/24")))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let last: Pool = ds.get(None, "hot").await.unwrap().unwrap();
    assert_eq!(last.metadata.uid, created.metadata.uid);
}

#[tokio::test]
async fn dynamic_store_handles_kinds_given_at_run_time() {
    let etcd = Etcd::start();
    let (ds, _) = connect(&etcd).await;
    let store = ds.dynamic();
    let peers = KindRef::new("BGPPeer", "bgppeers", false);
    let doc = json!({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
        "metadata": {"name": "rr1"}, "spec": {"peerIP": "192.0.2.1", "asNumber": 64512}});
    let created = store.create(&peers, doc).await.unwrap();
    assert_eq!(created["spec"]["asNumber"], 64512);
    let got = store
        .get(&peers, &ObjectId::global("rr1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, created);
    let wrong = json!({"kind": "IPPool", "metadata": {"name": "x"}});
    assert!(matches!(
        store.create(&peers, wrong).await,
        Err(ResourceError::WrongKind { .. })
    ));
    let listed = store.list(&peers, None).await.unwrap();
    assert_eq!(listed.items, vec![created.clone()]);
    let deleted = store
        .delete(
            &peers,
            &ObjectId::global("rr1"),
            created["metadata"]["resourceVersion"].as_str(),
        )
        .await
        .unwrap();
    assert_eq!(deleted["spec"], created["spec"]);
}

fn pool_doc(name: &str, i: usize) -> (KindRef, Value) {
    (
        KindRef::new("IPPool", "ippools", false),
        json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": name}, "spec": {"cidr": format!("10.{}.{}.0/24", i / 256, i % 256)}}),
    )
}

#[tokio::test]
async fn apply_all_is_all_or_nothing() {
    let etcd = Etcd::start();
    let (ds, kv) = connect(&etcd).await;
    let existing = ds.create(&pool("p-3", "10.200.0.0/24")).await.unwrap();
    ds.update(&pool("p-3", "10.201.0.0/24")).await.unwrap();

    // One document carries a stale resourceVersion: nothing at all is written.
    let mut docs: Vec<_> = (0..50).map(|i| pool_doc(&format!("p-{i}"), i)).collect();
    docs[3].1["metadata"]["resourceVersion"] = json!(existing.metadata.resource_version);
    let err = ds.apply_all(docs.clone()).await.unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(ds.list::<Pool>(None).await.unwrap().items.len(), 1);

    // Without it, all 50 land in one transaction (one revision).
    docs[3].1["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let outcome = ds.apply_all(docs).await.unwrap();
    assert_eq!(outcome.results.len(), 50);
    assert_eq!(
        outcome
            .results
            .iter()
            .filter(|(_, a)| *a == Applied::Updated)
            .count(),
        1
    );
    let listing = kv
        .list("/calico/resources/v3/projectcalico.org/ippools/")
        .await
        .unwrap();
    assert_eq!(listing.kvs.len(), 50);
    assert!(
        listing
            .kvs
            .iter()
            .all(|kv| kv.mod_revision == outcome.revision)
    );

    // Duplicates are refused before anything is written.
    let dup = vec![pool_doc("d", 1), pool_doc("d", 2)];
    assert!(matches!(
        ds.apply_all(dup).await,
        Err(ResourceError::DuplicateInBatch { .. })
    ));
    assert!(ds.get::<Pool>(None, "d").await.unwrap().is_none());
}

#[tokio::test]
async fn batches_over_the_txn_limit_are_refused_or_chunked_as_asked() {
    let etcd = Etcd::start();
    let (ds, _) = connect(&etcd).await;
    let docs: Vec<_> = (0..300).map(|i| pool_doc(&format!("c-{i}"), i)).collect();
    assert!(matches!(
        ds.apply_all(docs.clone()).await,
        Err(ResourceError::BatchTooLarge {
            ops: 300,
            limit: 128
        })
    ));
    assert!(ds.list::<Pool>(None).await.unwrap().items.is_empty());
    let outcome = ds
        .dynamic()
        .write_batch(BatchItem::all(BatchOp::Apply, docs), Atomicity::Chunked)
        .await
        .unwrap();
    assert_eq!(outcome.results.len(), 300);
    assert_eq!(ds.list::<Pool>(None).await.unwrap().items.len(), 300);
    // A create batch over existing objects fails in its first chunk and writes nothing.
    let again: Vec<_> = (0..10).map(|i| pool_doc(&format!("c-{i}"), i)).collect();
    assert!(
        ds.dynamic()
            .write_batch(
                BatchItem::all(BatchOp::Create, again),
                Atomicity::AllOrNothing
            )
            .await
            .unwrap_err()
            .is_already_exists()
    );
}

#[tokio::test]
async fn a_thousand_documents_apply_atomically_with_a_larger_max_txn_ops() {
    let etcd = Etcd::start_with(Options {
        members: 1,
        max_txn_ops: Some(1024),
        ..Default::default()
    });
    let kv = EtcdClient::connect(&etcd.config())
        .await
        .unwrap()
        .with_max_txn_ops(1024);
    let ds = Datastore::from_etcd(kv.clone());
    let docs: Vec<_> = (0..1000).map(|i| pool_doc(&format!("k-{i}"), i)).collect();
    let outcome = ds.apply_all(docs).await.unwrap();
    let listing = kv
        .list("/calico/resources/v3/projectcalico.org/ippools/")
        .await
        .unwrap();
    assert_eq!(listing.kvs.len(), 1000);
    assert!(
        listing
            .kvs
            .iter()
            .all(|kv| kv.mod_revision == outcome.revision)
    );
}

async fn next<T>(w: &mut calico_datastore::ResourceWatch<T>) -> ResourceEvent<T> {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("event within 20 s")
        .expect("stream open")
        .expect("no watch error")
}

#[tokio::test]
async fn typed_watch_from_a_revision_sees_add_modify_delete() {
    let etcd = Etcd::start();
    let (ds, _) = connect(&etcd).await;
    let created = ds.create(&policy("ns1", "w", 1)).await.unwrap();
    ds.create(&policy("ns2", "other-ns", 1)).await.unwrap();
    let mut w = ds.watch::<Policy>(Some("ns1"), rv(&created));
    assert!(matches!(next(&mut w).await, ResourceEvent::Added(p) if p == created));
    let mut edit = created.clone();
    edit.spec = json!({"order": 9});
    let modified = ds.update(&edit).await.unwrap();
    assert!(matches!(next(&mut w).await, ResourceEvent::Modified(p) if p == modified));
    ds.delete::<Policy>(Some("ns1"), "w", None).await.unwrap();
    match next(&mut w).await {
        ResourceEvent::Deleted { id, previous, .. } => {
            assert_eq!(id, ObjectId::namespaced("ns1", "w"));
            assert_eq!(previous, Some(modified));
        }
        other => panic!("expected delete, got {other:?}"),
    }
}

#[tokio::test]
async fn typed_list_watch_starts_with_a_snapshot() {
    let etcd = Etcd::start();
    let (ds, _) = connect(&etcd).await;
    ds.create(&pool("a", "10.1.0.0/16")).await.unwrap();
    ds.create(&pool("b", "10.2.0.0/16")).await.unwrap();
    let mut w = ds.list_watch::<Pool>(None);
    match next(&mut w).await {
        ResourceEvent::Snapshot { items, errors, .. } => {
            assert_eq!(items.len(), 2);
            assert!(errors.is_empty());
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    ds.create(&pool("c", "10.3.0.0/16")).await.unwrap();
    assert!(matches!(next(&mut w).await, ResourceEvent::Added(p) if p.spec.cidr == "10.3.0.0/16"));
}

#[tokio::test]
async fn batches_over_the_request_size_are_refused_or_chunked_by_bytes() {
    let etcd = Etcd::start();
    let (ds, _) = connect(&etcd).await;
    // 20 documents of ~80 KB: 1.6 MB, over etcd's 1.5 MiB request limit in one transaction.
    let docs: Vec<_> = (0..20)
        .map(|i| {
            let (kind, mut doc) = pool_doc(&format!("big-{i}"), i);
            doc["metadata"]["annotations"] = json!({"note": "x".repeat(80_000)});
            (kind, doc)
        })
        .collect();
    assert!(matches!(
        ds.apply_all(docs.clone()).await,
        Err(ResourceError::BatchTooManyBytes { .. })
    ));
    assert!(ds.list::<Pool>(None).await.unwrap().items.is_empty());
    let outcome = ds
        .dynamic()
        .write_batch(BatchItem::all(BatchOp::Apply, docs), Atomicity::Chunked)
        .await
        .unwrap();
    assert_eq!(outcome.results.len(), 20);
    assert_eq!(ds.list::<Pool>(None).await.unwrap().items.len(), 20);
}

/// calicoctl's way of writing: each item says what it expects (absent, or the revision its
/// checks read); if any expectation no longer holds nothing at all is written.
#[tokio::test]
async fn a_mixed_batch_pins_each_item_and_writes_nothing_when_one_is_stale() {
    let etcd = Etcd::start();
    let (ds, kv) = connect(&etcd).await;
    let a = ds.create(&pool("a", "10.1.0.0/16")).await.unwrap();
    let b = ds.create(&pool("b", "10.2.0.0/16")).await.unwrap();
    let kind = KindRef::new("IPPool", "ippools", false);
    let at = |name: &str, cidr: &str, rv: &Option<String>| {
        let mut doc = pool_doc(name, 0).1;
        doc["spec"]["cidr"] = json!(cidr);
        doc["metadata"]["labels"] = json!({"edited": "yes"});
        doc["metadata"]["resourceVersion"] = json!(rv);
        doc
    };
    // Another writer changes b after "our" read.
    ds.update(&pool("b", "10.3.0.0/16")).await.unwrap();
    let before = kv.current_revision().await.unwrap();
    let stale = vec![
        BatchItem::new(BatchOp::Create, kind.clone(), pool_doc("c", 4).1),
        BatchItem::new(
            BatchOp::Replace,
            kind.clone(),
            at("a", "10.1.0.0/16", &a.metadata.resource_version),
        ),
        BatchItem::new(
            BatchOp::Delete,
            kind.clone(),
            at("b", "10.2.0.0/16", &b.metadata.resource_version),
        ),
    ];
    let err = ds
        .dynamic()
        .write_batch(stale.clone(), Atomicity::Chunked)
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(
        kv.current_revision().await.unwrap(),
        before,
        "nothing written"
    );

    // With b's current revision all three land in one transaction.
    let b_now = ds.get::<Pool>(None, "b").await.unwrap().unwrap();
    let mut fresh = stale;
    fresh[2].doc["metadata"]["resourceVersion"] = json!(b_now.metadata.resource_version);
    let outcome = ds
        .dynamic()
        .write_batch(fresh, Atomicity::Chunked)
        .await
        .unwrap();
    let applied: Vec<Applied> = outcome.results.iter().map(|(_, a)| *a).collect();
    assert_eq!(
        applied,
        [Applied::Created, Applied::Updated, Applied::Deleted]
    );
    assert!(ds.get::<Pool>(None, "b").await.unwrap().is_none());
    let a2 = ds.get::<Pool>(None, "a").await.unwrap().unwrap();
    assert_eq!(a2.metadata.uid, a.metadata.uid);
    assert_eq!(
        a2.metadata.labels,
        Some([("edited".into(), "yes".into())].into())
    );
    assert_eq!(rv(&a2), outcome.revision);

    // The same document again changes nothing and keeps the revision.
    let again = vec![BatchItem::new(
        BatchOp::Replace,
        kind.clone(),
        at("a", "10.1.0.0/16", &a2.metadata.resource_version),
    )];
    let outcome = ds
        .dynamic()
        .write_batch(again, Atomicity::Chunked)
        .await
        .unwrap();
    assert_eq!(outcome.results[0].1, Applied::Unchanged);
    assert_eq!(
        ds.get::<Pool>(None, "a")
            .await
            .unwrap()
            .unwrap()
            .metadata
            .resource_version,
        a2.metadata.resource_version
    );
    // Create of something that exists fails and writes nothing else.
    let before = kv.current_revision().await.unwrap();
    let exists = vec![
        BatchItem::new(BatchOp::Create, kind.clone(), pool_doc("d", 5).1),
        BatchItem::new(BatchOp::Create, kind, pool_doc("a", 1).1),
    ];
    assert!(
        ds.dynamic()
            .write_batch(exists, Atomicity::Chunked)
            .await
            .unwrap_err()
            .is_already_exists()
    );
    assert_eq!(kv.current_revision().await.unwrap(), before);
}
