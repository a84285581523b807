//! The watch-driven sync: kube's own watcher and reflector over a scripted API server
//! (`tower_test::mock`: one list, then a watch whose events the test releases), the
//! Kubernetes NetworkPolicy sync writing to a REAL etcd. The safety resync is 300 s, so a
//! change reaching etcd within seconds can only have come through the watch.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_api::NetworkPolicy;
use calico_controllers::health::{Metrics, QUEUE_DEPTH};
use calico_controllers::knp;
use calico_controllers::mirror::EtcdMirror;
use calico_controllers::watch::{self, Timing, Trigger};
use common::lab;
use http::{Request, Response};
use k8s_openapi::api::networking::v1::NetworkPolicy as Knp;
use kube::Api;
use kube::client::Body;
use serde_json::{Value, json};

const PATH: &str = "/apis/networking.k8s.io/v1/networkpolicies";

fn knp(name: &str, port: u16, rv: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": rv},
        "spec": {"podSelector": {"matchLabels": {"app": name}},
                 "ingress": [{"ports": [{"port": port}]}]}
    })
}

fn ok(body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(200)
        .body(Body::from(body))
        .expect("response")
}

async fn port_of(mirror: &EtcdMirror, name: &str) -> Option<Value> {
    let p: NetworkPolicy = mirror
        .datastore()
        .get(Some("shop"), &format!("knp.default.{name}"))
        .await
        .expect("get")?;
    serde_json::to_value(&p.spec.ingress[0].destination.as_ref()?.ports).ok()
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 10 s");
}

#[tokio::test]
async fn a_watch_event_reaches_etcd_without_waiting_for_the_resync() {
    let lab = lab().await;
    let mirror = EtcdMirror::new(lab.ds.clone());
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut release = Some(release_rx);
        let mut held = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            assert_eq!(req.method().as_str(), "GET");
            assert_eq!(req.uri().path(), PATH);
            let query = req.uri().query().unwrap_or_default().to_string();
            if !query.contains("watch=true") {
                let list = json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicyList",
                    "metadata": {"resourceVersion": "7"}, "items": [knp("web", 80, "7")]
                });
                send.send_response(ok(serde_json::to_vec(&list).expect("JSON")));
            } else if let Some(rx) = release.take() {
                assert!(query.contains("resourceVersion=7"), "{query}");
                // The events are sent only once the test has seen the first pass.
                let _ = rx.await;
                let mut body = Vec::new();
                for (ty, obj) in [
                    ("MODIFIED", knp("web", 8080, "8")),
                    ("ADDED", knp("api", 443, "9")),
                ] {
                    body.extend(
                        serde_json::to_vec(&json!({"type": ty, "object": obj})).expect("JSON"),
                    );
                    body.push(b'\n');
                }
                send.send_response(ok(body));
            } else {
                // The re-watch after the stream ended: left pending until the test ends.
                held.push(send);
            }
        }
    });

    let metrics = Arc::new(Metrics::default());
    let trigger = Trigger::new("kubernetes-network-policies", metrics.clone());
    let (store, driver) = watch::reflect(Api::<Knp>::all(client.clone()), vec![trigger.clone()]);
    let driver = tokio::spawn(driver);
    let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
    let timing = Timing {
        resync: Duration::from_secs(300),
        debounce: Duration::from_millis(50),
        retry: Duration::from_secs(1),
    };
    let sync = {
        let (mirror, store) = (mirror.clone(), store.clone());
        tokio::spawn(watch::sync_loop(
            trigger.clone(),
            "KubernetesNetworkPolicy",
            metrics.clone(),
            timing,
            watch::ready(&store),
            lost_rx,
            move || {
                let (mirror, items) = (mirror.clone(), watch::objects(&store));
                async move { knp::sync(&mirror, &items).await.map(|_| ()) }
            },
        ))
    };

    // The initial list is synced.
    eventually("initial list in etcd", async || {
        port_of(&mirror, "web").await == Some(json!([80]))
    })
    .await;
    // Let the loop settle into its wait, then release the watch events.
    eventually("loop idle", async || trigger.pending() == 0).await;
    release_tx.send(()).expect("release");
    let took = eventually("watched update in etcd", async || {
        port_of(&mirror, "web").await == Some(json!([8080]))
            && port_of(&mirror, "api").await == Some(json!([443]))
    })
    .await;
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(
        metrics.value(QUEUE_DEPTH, "queue", "kubernetes-network-policies"),
        Some(0)
    );
    let text = metrics.render();
    let passes: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("calico_controllers_reconciles_total{kind=\"KubernetesNetworkPolicy\"} ")
        })
        .expect("reconciles counted")
        .parse()
        .expect("number");
    assert!(passes >= 2, "{text}");

    lost_tx.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(5), sync)
        .await
        .expect("loop stops when leadership is lost")
        .expect("join");
    driver.abort();
    drop(store);
    drop(client);
    server.abort();
}
