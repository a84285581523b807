//! Pod labels → WorkloadEndpoints in a REAL etcd.

mod common;

use calico_api::WorkloadEndpoint;
use calico_controllers::pods::sync;
use common::*;
use serde_json::json;

fn wep(name: &str, orchestrator: &str, pod: &str) -> WorkloadEndpoint {
    serde_json::from_value(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": "shop",
                     "labels": {"projectcalico.org/namespace": "shop",
                                "projectcalico.org/orchestrator": orchestrator}},
        "spec": {"orchestrator": orchestrator, "pod": pod, "node": "n1", "endpoint": "eth0",
                 "workload": pod, "containerID": "c1",
                 "interfaceName": "cali0123456789a", "ipNetworks": ["10.80.0.5/32"],
                 "profiles": ["kns.shop"]}
    }))
    .expect("wep")
}

fn with_labels(p: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(p).expect("pod")
}

#[tokio::test]
async fn pod_labels_flow_to_their_workload_endpoints() {
    let lab = lab().await;
    lab.ds
        .create(&wep("n1-k8s-web--0-eth0", "k8s", "web-0"))
        .await
        .expect("k8s wep");
    let docker = lab
        .ds
        .create(&wep("n1-libnetwork-web--0-eth0", "libnetwork", "web-0"))
        .await
        .expect("docker wep");
    let pod = |labels: serde_json::Value| {
        with_labels(json!({
            "metadata": {"name": "web-0", "namespace": "shop", "labels": labels},
            "spec": {"containers": [], "serviceAccountName": "api"}
        }))
    };

    let done = sync(&lab.ds, &[pod(json!({"app": "web", "tier": "fe"}))])
        .await
        .expect("sync 1");
    assert_eq!(done, ["n1-k8s-web--0-eth0"]);
    let w: WorkloadEndpoint = lab
        .ds
        .get(Some("shop"), "n1-k8s-web--0-eth0")
        .await
        .expect("get")
        .expect("wep");
    let labels = w.metadata.labels.clone().expect("labels");
    assert_eq!(labels["app"], "web");
    assert_eq!(labels["tier"], "fe");
    assert_eq!(labels["projectcalico.org/namespace"], "shop");
    assert_eq!(labels["projectcalico.org/orchestrator"], "k8s");
    assert_eq!(labels["projectcalico.org/serviceaccount"], "api");
    assert_eq!(w.spec.service_account_name.as_deref(), Some("api"));
    assert_eq!(w.spec.profiles, ["kns.shop", "ksa.shop.api"]);
    assert_eq!(
        w.spec.ip_networks,
        ["10.80.0.5/32"],
        "the CNI plugin's fields kept"
    );

    // Settled: nothing written.
    let done = sync(&lab.ds, &[pod(json!({"app": "web", "tier": "fe"}))])
        .await
        .expect("sync 2");
    assert!(done.is_empty());

    // Relabelled: the removed label goes.
    sync(&lab.ds, &[pod(json!({"app": "web2"}))])
        .await
        .expect("sync 3");
    let w: WorkloadEndpoint = lab
        .ds
        .get(Some("shop"), "n1-k8s-web--0-eth0")
        .await
        .expect("get")
        .expect("wep");
    let labels = w.metadata.labels.expect("labels");
    assert_eq!(labels["app"], "web2");
    assert!(!labels.contains_key("tier"));

    // The Docker endpoint was never touched.
    let d: WorkloadEndpoint = lab
        .ds
        .get(Some("shop"), "n1-libnetwork-web--0-eth0")
        .await
        .expect("get")
        .expect("docker wep");
    assert_eq!(
        d.metadata.resource_version,
        docker.metadata.resource_version
    );
}
