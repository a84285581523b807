//! Namespace/ServiceAccount profiles synced into a real etcd (calico_lab).

use calico_api::Profile;
use calico_controllers::mirror::EtcdMirror;
use calico_controllers::profiles::sync;
use calico_controllers::{OWNER_ANNOTATION, OWNER_KUBERNETES};
use calico_datastore::{Datastore, EtcdConfig};
use calico_lab::etcd::{Etcd, EtcdOptions};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::ObjectMeta;

fn ns(name: &str, team: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("team".to_string(), team.to_string())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

fn sa(ns: &str, name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    }
}

#[tokio::test]
async fn profiles_follow_namespaces_and_service_accounts() {
    let etcd = tokio::task::spawn_blocking(|| Etcd::start(EtcdOptions::default()))
        .await
        .unwrap()
        .expect("etcd");
    let ds = Datastore::connect(&EtcdConfig::new(etcd.endpoints()))
        .await
        .unwrap();
    let mirror = EtcdMirror::new(ds.clone());

    // A profile made by calicoctl on a Docker host, with a name in our prefix space.
    let mut foreign: Profile = serde_json::from_value(serde_json::json!({
        "apiVersion": "projectcalico.org/v3", "kind": "Profile",
        "metadata": {"name": "kns.docker-net"}, "spec": {}
    }))
    .unwrap();
    foreign.metadata.labels = None;
    ds.create(&foreign).await.unwrap();

    sync(
        &mirror,
        &[ns("shop", "web"), ns("ops", "sre")],
        &[sa("shop", "api")],
    )
    .await
    .unwrap();
    let names = |list: &[Profile]| {
        let mut v: Vec<String> = list
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        v.sort();
        v
    };
    let all = ds.list::<Profile>(None).await.unwrap().items;
    assert_eq!(
        names(&all),
        ["kns.docker-net", "kns.ops", "kns.shop", "ksa.shop.api"]
    );
    let shop = all
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("kns.shop"))
        .unwrap();
    assert_eq!(shop.spec.labels_to_apply["pcns.team"], "web");
    assert_eq!(
        shop.metadata.annotations.as_ref().unwrap()[OWNER_ANNOTATION],
        OWNER_KUBERNETES
    );

    // Namespace ops deleted, shop relabelled: kns.ops goes, kns.shop changes, the Docker
    // host's profile stays.
    sync(&mirror, &[ns("shop", "payments")], &[sa("shop", "api")])
        .await
        .unwrap();
    let all = ds.list::<Profile>(None).await.unwrap().items;
    assert_eq!(names(&all), ["kns.docker-net", "kns.shop", "ksa.shop.api"]);
    let shop = all
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("kns.shop"))
        .unwrap();
    assert_eq!(shop.spec.labels_to_apply["pcns.team"], "payments");

    // Everything gone from Kubernetes: only the foreign profile is left.
    sync(&mirror, &[], &[]).await.unwrap();
    let all = ds.list::<Profile>(None).await.unwrap().items;
    assert_eq!(names(&all), ["kns.docker-net"]);
}
