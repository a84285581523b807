//! The etcd mirror against a real etcd (calico_lab): create, no-op, update, ownership, removal,
//! and the key layout calico-node and calicoctl read.

use calico_api::{IPPool, IPPoolSpec};
use calico_controllers::mirror::{EtcdMirror, MirrorError, Upserted};
use calico_controllers::{OWNER_ANNOTATION, OWNER_KUBERNETES};
use calico_datastore::{Datastore, EtcdClient, EtcdConfig};
use calico_lab::etcd::{Etcd, EtcdOptions};

async fn start() -> (Etcd, Datastore, EtcdClient) {
    let etcd = tokio::task::spawn_blocking(|| Etcd::start(EtcdOptions::default()))
        .await
        .expect("join")
        .expect("start etcd");
    let cfg = EtcdConfig::new(etcd.endpoints());
    let kv = EtcdClient::connect(&cfg).await.expect("connect");
    (etcd, Datastore::from_etcd(kv.clone()), kv)
}

fn k8s_pool(block: i64) -> IPPool {
    let mut p = IPPool::new(
        "pool-m",
        IPPoolSpec {
            cidr: "10.30.0.0/16".into(),
            block_size: Some(block),
            ..Default::default()
        },
    );
    p.metadata.uid = Some("k8s-uid".into());
    p.metadata.resource_version = Some("12".into());
    p
}

#[tokio::test]
async fn create_noop_update_remove() {
    let (_etcd, ds, kv) = start().await;
    let mirror = EtcdMirror::new(ds.clone());
    assert_eq!(
        mirror.upsert(&k8s_pool(26)).await.unwrap(),
        Upserted::Created
    );
    let first = ds.get::<IPPool>(None, "pool-m").await.unwrap().unwrap();

    // Same content again: no write (the etcd revision of the key does not move).
    assert_eq!(
        mirror.upsert(&k8s_pool(26)).await.unwrap(),
        Upserted::Unchanged
    );
    let same = ds.get::<IPPool>(None, "pool-m").await.unwrap().unwrap();
    assert_eq!(
        same.metadata.resource_version,
        first.metadata.resource_version
    );

    // A spec change is written, under Calico's key, with the owner mark.
    assert_eq!(
        mirror.upsert(&k8s_pool(28)).await.unwrap(),
        Upserted::Updated
    );
    let raw = kv
        .get("/calico/resources/v3/projectcalico.org/ippools/pool-m")
        .await
        .unwrap()
        .expect("Calico's key for the pool");
    let doc: serde_json::Value = serde_json::from_slice(&raw.value).unwrap();
    assert_eq!(doc["spec"]["blockSize"], 28);
    assert_eq!(
        doc["metadata"]["annotations"][OWNER_ANNOTATION],
        OWNER_KUBERNETES
    );
    assert_ne!(doc["metadata"]["uid"], "k8s-uid");

    assert!(mirror.remove(&k8s_pool(28)).await.unwrap());
    assert!(ds.get::<IPPool>(None, "pool-m").await.unwrap().is_none());
    // Removing again is a no-op, not an error.
    assert!(!mirror.remove(&k8s_pool(28)).await.unwrap());
}

#[tokio::test]
async fn objects_kubernetes_does_not_own_are_never_changed() {
    let (_etcd, ds, _kv) = start().await;
    let mirror = EtcdMirror::new(ds.clone());
    let mut theirs = k8s_pool(29);
    theirs.metadata = Default::default();
    theirs.metadata.name = Some("pool-m".into());
    // Someone else's owner mark counts as foreign too.
    theirs.metadata.annotations =
        Some([(OWNER_ANNOTATION.to_string(), "calicoctl".to_string())].into());
    let stored = ds.create(&theirs).await.unwrap();

    let err = mirror.upsert(&k8s_pool(26)).await.expect_err("conflict");
    assert!(
        matches!(&err, MirrorError::NotOwned { owner, .. } if owner == "calicoctl"),
        "{err}"
    );
    assert!(err.to_string().contains("IPPool \"pool-m\""), "{err}");
    assert!(!mirror.remove(&k8s_pool(26)).await.unwrap());
    let after = ds.get::<IPPool>(None, "pool-m").await.unwrap().unwrap();
    assert_eq!(
        after.metadata.resource_version,
        stored.metadata.resource_version
    );
    assert_eq!(after.spec.block_size, Some(29));
}
