//! etcd-only objects reflected into Kubernetes (reflect.rs): kube's own client over a scripted
//! API server (tower_test::mock) and a REAL etcd (calico_lab). Both directions run for several
//! rounds; after the first round neither writes anything (no ping-pong), an etcd change
//! updates the reflection, deleting the etcd object deletes it, and Kubernetes-owned objects
//! are never touched.

mod common;

use std::sync::Arc;

use calico_api::IPPool;
use calico_controllers::health::Metrics;
use calico_controllers::mirror::{EtcdMirror, Upserted};
use calico_controllers::reconcile::{Context, reconcile};
use calico_controllers::reflect::{self, Reflected};
use calico_controllers::{OWNER_ANNOTATION, OWNER_ETCD, OWNER_KUBERNETES};
use calico_datastore::{Datastore, EtcdClient, EtcdConfig};
use calico_lab::etcd::{Etcd, EtcdOptions};
use common::{Expect, expect, scripted};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

const POOLS: &str = "/apis/projectcalico.org/v3/ippools";

async fn start() -> (Etcd, Datastore, EtcdClient) {
    let etcd = tokio::task::spawn_blocking(|| Etcd::start(EtcdOptions::default()))
        .await
        .expect("join")
        .expect("start etcd");
    let kv = EtcdClient::connect(&EtcdConfig::new(etcd.endpoints()))
        .await
        .expect("connect etcd");
    (etcd, Datastore::from_etcd(kv.clone()), kv)
}

fn pool(name: &str, cidr: &str, annotations: Value) -> IPPool {
    serde_json::from_value(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"cidr": cidr, "blockSize": 26}
    }))
    .expect("pool")
}

/// The Kubernetes pool applied with kubectl (mirrored into etcd).
fn kube_owned() -> Value {
    json!({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": "k8s-pool", "resourceVersion": "5", "uid": "u1",
                     "finalizers": ["projectcalico.org/etcd-mirror"]},
        "spec": {"cidr": "10.1.0.0/16", "blockSize": 26}
    })
}

/// A pool applied with kubectl whose name clashes with a calicoctl pool in etcd.
fn kube_clash() -> Value {
    json!({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": "clash", "resourceVersion": "6", "uid": "u2"},
        "spec": {"cidr": "10.3.0.0/16", "blockSize": 26}
    })
}

fn list(items: Vec<Value>) -> Expect {
    expect(
        "GET",
        POOLS,
        json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPoolList",
               "metadata": {"resourceVersion": "50"}, "items": items}),
        |_| {},
    )
}

/// The reflection as the API server returns it, with a pool-usage annotation the controllers
/// patched on it (must not count as a difference).
fn reflection(rv: &str, disabled: bool) -> Value {
    let mut spec = json!({"cidr": "10.2.0.0/16", "blockSize": 26});
    if disabled {
        spec["disabled"] = json!(true);
    }
    json!({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": "docker-pool", "resourceVersion": rv, "uid": "u3",
                     "labels": {"host": "docker-1"},
                     "annotations": {OWNER_ANNOTATION: OWNER_ETCD, "note": "docker",
                                     "status.projectcalico.org/free-addresses": "65536"}},
        "spec": spec
    })
}

async fn etcd_revision(kv: &EtcdClient) -> i64 {
    kv.list("/calico/").await.expect("etcd list").revision
}

#[tokio::test]
async fn both_directions_converge_then_follow_etcd_changes_and_deletion() {
    let (_etcd, ds, kv) = start().await;
    let mirror = EtcdMirror::new(ds.clone());
    // etcd: the mirror of k8s-pool (Kubernetes-owned), a Docker host's pool, a calicoctl pool
    // whose name a kubectl pool also uses.
    let k8s: IPPool = serde_json::from_value(kube_owned()).expect("k8s pool");
    assert_eq!(mirror.upsert(&k8s).await.unwrap(), Upserted::Created);
    let mut docker = pool("docker-pool", "10.2.0.0/16", json!({"note": "docker"}));
    docker.metadata.labels = Some([("host".to_string(), "docker-1".to_string())].into());
    ds.create(&docker).await.expect("docker pool");
    ds.create(&pool("clash", "10.4.0.0/16", json!({})))
        .await
        .expect("clash pool");

    let mut script = vec![
        list(vec![kube_owned(), kube_clash()]),
        expect("POST", POOLS, reflection("100", false), |body| {
            let meta = &body["metadata"];
            assert_eq!(meta["name"], "docker-pool");
            assert_eq!(meta["annotations"][OWNER_ANNOTATION], OWNER_ETCD);
            assert_eq!(meta["annotations"]["note"], "docker");
            assert_eq!(meta["labels"]["host"], "docker-1");
            assert!(meta.get("resourceVersion").is_none(), "{meta}");
            assert!(meta.get("uid").is_none(), "etcd's uid copied: {meta}");
            assert_eq!(body["spec"]["cidr"], "10.2.0.0/16");
        }),
    ];
    // Rounds 2-4: nothing differs, so only lists.
    for _ in 0..3 {
        script.push(list(vec![
            kube_owned(),
            kube_clash(),
            reflection("100", false),
        ]));
    }
    // etcd change → replace with the resourceVersion read, the usage annotation kept.
    script.push(list(vec![
        kube_owned(),
        kube_clash(),
        reflection("100", false),
    ]));
    script.push(expect(
        "PUT",
        &format!("{POOLS}/docker-pool"),
        reflection("101", true),
        |body| {
            assert_eq!(body["metadata"]["resourceVersion"], "100");
            assert_eq!(body["spec"]["disabled"], true);
            assert_eq!(
                body["metadata"]["annotations"]["status.projectcalico.org/free-addresses"],
                "65536"
            );
            assert_eq!(
                body["metadata"]["annotations"][OWNER_ANNOTATION],
                OWNER_ETCD
            );
        },
    ));
    // etcd object deleted → reflection deleted; nothing else.
    script.push(list(vec![
        kube_owned(),
        kube_clash(),
        reflection("101", true),
    ]));
    script.push(expect(
        "DELETE",
        &format!("{POOLS}/docker-pool"),
        reflection("101", true),
        |_| {},
    ));
    script.push(list(vec![kube_owned(), kube_clash()]));
    let (client, server) = scripted(script);
    let ctx = Arc::new(Context {
        client: client.clone(),
        mirror: mirror.clone(),
        metrics: Arc::new(Metrics::default()),
    });

    // Round 1: the Docker pool is reflected; the mirror and the clash are left alone.
    let done = reflect::sync::<IPPool>(client.clone(), &ds).await.unwrap();
    assert_eq!(done.created, vec!["docker-pool".to_string()]);
    assert!(done.updated.is_empty() && done.deleted.is_empty());
    let settled = etcd_revision(&kv).await;

    // Rounds 2-4, both directions: the reconciler skips the reflection (no request, no
    // finalizer, no etcd write), the mirror of the Kubernetes pool is unchanged, and the
    // reflect pass writes nothing.
    for round in 2..=4 {
        let refl: IPPool = serde_json::from_value(reflection("100", false)).unwrap();
        let action = reconcile::<IPPool>(Arc::new(refl), ctx.clone())
            .await
            .unwrap();
        assert_eq!(action, Action::await_change(), "round {round}");
        assert_eq!(mirror.upsert(&k8s).await.unwrap(), Upserted::Unchanged);
        let done = reflect::sync::<IPPool>(client.clone(), &ds).await.unwrap();
        assert_eq!(done, Reflected::default(), "round {round} wrote {done:?}");
        assert_eq!(
            etcd_revision(&kv).await,
            settled,
            "round {round} wrote etcd"
        );
    }
    let stored = ds
        .get::<IPPool>(None, "docker-pool")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .get(OWNER_ANNOTATION),
        None
    );

    // A calicoctl edit in etcd reaches the reflection.
    let mut edited = stored.clone();
    edited.spec.disabled = Some(true);
    ds.update(&edited).await.expect("update docker pool");
    let done = reflect::sync::<IPPool>(client.clone(), &ds).await.unwrap();
    assert_eq!(done.updated, vec!["docker-pool".to_string()]);

    // Deleting the etcd object deletes the reflection, and only it.
    let stored = ds
        .get::<IPPool>(None, "docker-pool")
        .await
        .unwrap()
        .unwrap();
    ds.delete::<IPPool>(
        None,
        "docker-pool",
        stored.metadata.resource_version.as_deref(),
    )
    .await
    .expect("delete docker pool");
    let done = reflect::sync::<IPPool>(client.clone(), &ds).await.unwrap();
    assert_eq!(done.deleted, vec!["docker-pool".to_string()]);
    assert!(done.created.is_empty() && done.updated.is_empty());
    let done = reflect::sync::<IPPool>(client.clone(), &ds).await.unwrap();
    assert!(done.is_empty(), "{done:?}");

    // The Kubernetes-owned mirror and the calicoctl pool are still in etcd as they were.
    let mirrored = ds.get::<IPPool>(None, "k8s-pool").await.unwrap().unwrap();
    assert_eq!(
        mirrored
            .metadata
            .annotations
            .unwrap()
            .get(OWNER_ANNOTATION)
            .map(String::as_str),
        Some(OWNER_KUBERNETES)
    );
    let clash = ds.get::<IPPool>(None, "clash").await.unwrap().unwrap();
    assert_eq!(clash.spec.cidr, "10.4.0.0/16");

    drop(ctx);
    drop(client);
    server
        .await
        .expect("the API server saw exactly the scripted requests");
}
