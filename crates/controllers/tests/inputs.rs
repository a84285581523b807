//! The leader's Kubernetes-native inputs wired together (`run::kubernetes_inputs`): five
//! watches (kube's watcher over a scripted API server that lists each kind once and then
//! keeps the watches open) feeding the profile, KNP, Node, pod-label and IPAM syncs, all
//! writing to a REAL etcd; and the whole thing stopping when leadership is lost.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_api::{NetworkPolicy, Node, Profile, WorkloadEndpoint};
use calico_controllers::health::Metrics;
use calico_controllers::mirror::EtcdMirror;
use calico_controllers::nodes::kubernetes_name;
use calico_controllers::reconcile::Context;
use calico_controllers::run::kubernetes_inputs;
use common::lab;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

fn list(api_version: &str, kind: &str, items: Value) -> Value {
    json!({"apiVersion": api_version, "kind": format!("{kind}List"),
           "metadata": {"resourceVersion": "10"}, "items": items})
}

fn reply(path: &str) -> Value {
    match path {
        "/api/v1/namespaces" => list(
            "v1",
            "Namespace",
            json!([{
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {"team": "web"}}}]),
        ),
        "/api/v1/serviceaccounts" => list(
            "v1",
            "ServiceAccount",
            json!([{
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "api", "namespace": "shop"}}]),
        ),
        "/apis/networking.k8s.io/v1/networkpolicies" => list(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            json!([{
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"podSelector": {}}}]),
        ),
        "/api/v1/nodes" => list(
            "v1",
            "Node",
            json!([{
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "k1", "labels": {"zone": "a"}}}]),
        ),
        "/api/v1/pods" => list(
            "v1",
            "Pod",
            json!([{
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"containers": [], "serviceAccountName": "api", "nodeName": "k1"}}]),
        ),
        "/apis/projectcalico.org/v3/ippools" => list("projectcalico.org/v3", "IPPool", json!([])),
        "/api/v1/services" => list("v1", "Service", json!([])),
        "/apis/discovery.k8s.io/v1/endpointslices" => {
            list("discovery.k8s.io/v1", "EndpointSlice", json!([]))
        }
        other => panic!("unexpected request for {other}"),
    }
}

#[tokio::test]
async fn every_input_reaches_etcd_and_the_loops_stop_with_leadership() {
    let lab = lab().await;
    let wep: WorkloadEndpoint = serde_json::from_value(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": "k1-k8s-web--0-eth0", "namespace": "shop"},
        "spec": {"orchestrator": "k8s", "pod": "web-0", "node": "k1", "endpoint": "eth0",
                 "containerID": "c1", "interfaceName": "cali0123456789a",
                 "ipNetworks": ["10.90.0.5/32"], "profiles": ["kns.shop"]}
    }))
    .expect("wep");
    lab.ds.create(&wep).await.expect("create wep");

    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            assert_eq!(req.method().as_str(), "GET", "{}", req.uri());
            if req.uri().query().unwrap_or_default().contains("watch=true") {
                held.push(send); // watches stay open and quiet
                continue;
            }
            let body = serde_json::to_vec(&reply(req.uri().path())).expect("JSON");
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(body))
                    .expect("response"),
            );
        }
    });
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context {
        client,
        mirror: EtcdMirror::new(lab.ds.clone()),
        metrics: metrics.clone(),
    });
    let ipam = Arc::new(calico_ipam::Ipam::new(
        calico_datastore::EtcdClient::connect(&calico_datastore::EtcdConfig::new(
            lab.etcd.endpoints(),
        ))
        .await
        .expect("connect"),
    ));
    let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
    let inputs = tokio::spawn(kubernetes_inputs(ctx.clone(), ipam, None, lost_rx));

    let ds = lab.ds.clone();
    let start = Instant::now();
    let done = loop {
        let profile = ds.get::<Profile>(None, "kns.shop").await.expect("get");
        let sa = ds.get::<Profile>(None, "ksa.shop.api").await.expect("get");
        let policy = ds
            .get::<NetworkPolicy>(Some("shop"), "knp.default.web")
            .await
            .expect("get");
        let node = ds.get::<Node>(None, "k1").await.expect("get");
        let wep = ds
            .get::<WorkloadEndpoint>(Some("shop"), "k1-k8s-web--0-eth0")
            .await
            .expect("get")
            .expect("wep");
        let labelled = wep
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app"))
            .is_some();
        let ipam_ran = metrics
            .render()
            .contains("calico_controllers_reconciles_total{kind=\"IPAM\"}");
        if let Some(node) = node
            && profile.is_some()
            && sa.is_some()
            && policy.is_some()
            && labelled
            && ipam_ran
        {
            break node;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "inputs not synced in 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(kubernetes_name(&done), Some("k1"));
    assert_eq!(done.metadata.labels.as_ref().expect("labels")["zone"], "a");
    let text = metrics.render();
    assert!(!text.contains("reconcile_errors_total"), "{text}");

    lost_tx.send(true).expect("lose leadership");
    tokio::time::timeout(Duration::from_secs(5), inputs)
        .await
        .expect("inputs stop when leadership is lost")
        .expect("join");
    drop(ctx);
    server.abort();
}
