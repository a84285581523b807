//! Kubernetes NetworkPolicies → `knp.default.<name>` Calico policies: the KNPs listed with
//! kube's own client from a scripted API server (`tower_test::mock`), the Calico policies
//! written to a REAL etcd (calico_lab).

use calico_api::NetworkPolicy;
use calico_controllers::knp::{SOURCE_ANNOTATION, SOURCE_KNP, list_and_sync};
use calico_controllers::mirror::EtcdMirror;
use calico_controllers::{OWNER_ANNOTATION, OWNER_KUBERNETES};
use calico_datastore::{Datastore, EtcdConfig};
use calico_lab::etcd::{Etcd, EtcdOptions};
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

const LIST_PATH: &str = "/apis/networking.k8s.io/v1/networkpolicies";

/// Answers one list request per entry of `lists`, then asserts nothing else is asked.
fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    lists: Vec<Value>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for items in lists {
            let (req, send) = handle.next_request().await.expect("a list request");
            assert_eq!(req.method().as_str(), "GET");
            assert_eq!(req.uri().path(), LIST_PATH);
            let body = json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicyList",
                "metadata": {"resourceVersion": "7"}, "items": items
            });
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
                    .expect("response"),
            );
        }
        if let Some((req, _)) = handle.next_request().await {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    })
}

fn knp(ns: &str, name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
        "spec": {
            "podSelector": {"matchLabels": {"app": name}},
            "ingress": [{"ports": [{"port": port}]}]
        }
    })
}

async fn policies(ds: &Datastore) -> Vec<NetworkPolicy> {
    let mut v = ds.list::<NetworkPolicy>(None).await.expect("list").items;
    v.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    v
}

fn key(p: &NetworkPolicy) -> (String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

#[tokio::test]
async fn kubernetes_network_policies_follow_into_etcd() {
    let etcd = tokio::task::spawn_blocking(|| Etcd::start(EtcdOptions::default()))
        .await
        .expect("join")
        .expect("etcd");
    let ds = Datastore::connect(&EtcdConfig::new(etcd.endpoints()))
        .await
        .expect("connect etcd");
    let mirror = EtcdMirror::new(ds.clone());

    // A policy made with calicoctl whose name is in the knp. space: never touched.
    let foreign: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
        "metadata": {"name": "knp.default.db", "namespace": "shop"},
        "spec": {"selector": "app == 'db'"}
    }))
    .expect("policy");
    ds.create(&foreign).await.expect("create foreign");

    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let server = serve(
        handle,
        vec![
            json!([
                knp("shop", "web", 80),
                knp("ops", "metrics", 9100),
                knp("shop", "db", 5432)
            ]),
            // web changed, metrics deleted, db still there (and still not ours).
            json!([knp("shop", "web", 8080), knp("shop", "db", 5432)]),
        ],
    );

    // Round 1: two mirrored, the foreign one reported and kept as it was.
    list_and_sync(client.clone(), &mirror)
        .await
        .expect("sync 1");
    let all = policies(&ds).await;
    assert_eq!(
        all.iter().map(key).collect::<Vec<_>>(),
        [
            ("ops".to_string(), "knp.default.metrics".to_string()),
            ("shop".to_string(), "knp.default.db".to_string()),
            ("shop".to_string(), "knp.default.web".to_string()),
        ]
    );
    let web = &all[2];
    assert_eq!(
        web.metadata.annotations.as_ref().expect("annotations")[OWNER_ANNOTATION],
        OWNER_KUBERNETES
    );
    assert_eq!(
        web.metadata.annotations.as_ref().expect("annotations")[SOURCE_ANNOTATION],
        SOURCE_KNP
    );
    assert_eq!(web.spec.order, Some(1000.0));
    assert_eq!(web.spec.tier.as_deref(), Some("default"));
    assert!(
        web.metadata.uid.as_deref() != Some("uid-web"),
        "k8s uid copied"
    );
    let ports = |p: &NetworkPolicy| {
        serde_json::to_value(&p.spec.ingress[0].destination.as_ref().expect("dst").ports)
            .expect("JSON")
    };
    assert_eq!(ports(web), json!([80]));
    assert_eq!(all[1], {
        let mut stored = foreign.clone();
        stored.metadata = all[1].metadata.clone();
        stored
    });
    assert!(all[1].metadata.annotations.is_none());

    // Round 2: the update lands, the deleted KNP's policy goes, the foreign one stays.
    list_and_sync(client.clone(), &mirror)
        .await
        .expect("sync 2");
    let all = policies(&ds).await;
    assert_eq!(
        all.iter().map(key).collect::<Vec<_>>(),
        [
            ("shop".to_string(), "knp.default.db".to_string()),
            ("shop".to_string(), "knp.default.web".to_string()),
        ]
    );
    assert_eq!(ports(&all[1]), json!([8080]));
    assert!(all[0].metadata.annotations.is_none());

    drop(client);
    server.await.expect("scripted API server");
}
