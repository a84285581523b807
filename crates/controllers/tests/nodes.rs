//! Kubernetes Nodes → Calico Nodes in a REAL etcd, and a deleted Kubernetes Node's IPAM
//! released (addresses allocated with the ipam crate, as calico-ipam does).

mod common;

use std::collections::BTreeMap;

use calico_api::Node;
use calico_controllers::nodes::{KUBE_LABELS_ANNOTATION, kubernetes_name, sync};
use common::*;
use serde_json::json;

async fn calico(lab: &Lab, name: &str) -> Option<Node> {
    lab.ds.get::<Node>(None, name).await.expect("get node")
}

fn labels(n: &Node) -> BTreeMap<String, String> {
    n.metadata.labels.clone().unwrap_or_default()
}

#[tokio::test]
async fn kubernetes_nodes_become_calico_nodes_and_deleted_ones_release_their_addresses() {
    let lab = lab().await;
    lab.pool("pool-a", "10.70.0.0/24").await;
    lab.node("k2", false).await; // calico-node registered before the controller ran
    lab.node("docker1", false).await;
    lab.node("old", true).await;
    lab.node("busy", true).await;
    let docker_ip = lab.pod_ip("docker1", "x", "y", "d1").await;
    let old_pod = lab.pod_ip("old", "shop", "gone", "o1").await;
    let old_tunnel = lab
        .assign(
            "old",
            "ipip-tunnel-addr-old",
            BTreeMap::from([
                ("node".into(), "old".into()),
                ("type".into(), "ipipTunnelAddress".into()),
            ]),
        )
        .await;
    let busy_ip = lab.pod_ip("busy", "shop", "still-there", "b1").await;
    // Of unknown origin (neither a pod's nor a tunnel's) on a deleted node: never released,
    // and the node is not cleaned up while it is there (Calico's rule).
    lab.node("odd", true).await;
    let odd_ip = lab
        .assign(
            "odd",
            "odd-1",
            BTreeMap::from([("node".into(), "odd".into())]),
        )
        .await;
    // A calicoctl label on k2 that Kubernetes never set.
    let mut k2 = calico(&lab, "k2").await.expect("k2");
    k2.metadata.labels = Some([("rack".to_string(), "r7".to_string())].into());
    lab.ds.update(&k2).await.expect("label k2");

    let kube = vec![
        kube_node("k1", json!({"zone": "a"})),
        kube_node("k2", json!({"zone": "b"})),
    ];
    let pods = [pod("shop", "still-there", &[busy_ip])];
    let r = sync(&lab.ds, &lab.ipam, &kube, &pods)
        .await
        .expect("sync 1");
    assert_eq!(r.created, ["k1"]);
    assert_eq!(r.updated, ["k2"]);
    assert_eq!(r.deleted, ["old"]);
    assert_eq!(r.kept, ["busy", "odd"]);
    let mut released = r.released.clone();
    released.sort();
    let mut want = vec![old_pod, old_tunnel];
    want.sort();
    assert_eq!(released, want);

    let k1 = calico(&lab, "k1").await.expect("k1 created");
    assert_eq!(kubernetes_name(&k1), Some("k1"));
    assert_eq!(labels(&k1)["zone"], "a");
    let k2 = calico(&lab, "k2").await.expect("k2");
    assert_eq!(kubernetes_name(&k2), Some("k2"));
    assert_eq!(labels(&k2)["zone"], "b");
    assert_eq!(labels(&k2)["rack"], "r7", "calicoctl's label kept");
    assert!(
        calico(&lab, "old").await.is_none(),
        "deleted node's Calico Node kept"
    );
    assert!(!lab.allocated(old_pod).await && !lab.allocated(old_tunnel).await);
    assert!(
        lab.ipam
            .host_affinities("old")
            .await
            .expect("affinities")
            .is_empty(),
        "deleted node keeps block affinities"
    );
    // A live pod's address on a deleted node stays, and so does the node, for now.
    assert!(lab.allocated(busy_ip).await);
    assert!(calico(&lab, "busy").await.is_some());
    assert!(lab.allocated(odd_ip).await);
    assert!(calico(&lab, "odd").await.is_some());
    // The Docker host is untouched.
    let docker = calico(&lab, "docker1").await.expect("docker1");
    assert!(docker.spec.orch_refs.is_empty() && docker.metadata.annotations.is_none());
    assert!(lab.allocated(docker_ip).await);

    // Round 2: a label removed in Kubernetes goes, calicoctl's stays; the busy node's pod is
    // gone now, so the node goes too. Nothing else is written.
    let rev_k1 = calico(&lab, "k1")
        .await
        .expect("k1")
        .metadata
        .resource_version;
    let kube = vec![
        kube_node("k1", json!({"zone": "a"})),
        kube_node("k2", json!({})),
    ];
    let r = sync(&lab.ds, &lab.ipam, &kube, &[]).await.expect("sync 2");
    assert_eq!(r.updated, ["k2"]);
    assert!(r.created.is_empty());
    assert_eq!(r.deleted, ["busy"]);
    assert_eq!(r.released, [busy_ip]);
    let k2 = calico(&lab, "k2").await.expect("k2");
    assert_eq!(labels(&k2), BTreeMap::from([("rack".into(), "r7".into())]));
    assert_eq!(
        k2.metadata.annotations.as_ref().expect("annotations")[KUBE_LABELS_ANNOTATION],
        "{}"
    );
    assert_eq!(
        calico(&lab, "k1")
            .await
            .expect("k1")
            .metadata
            .resource_version,
        rev_k1
    );
    assert!(calico(&lab, "docker1").await.is_some());

    // An empty list of Kubernetes Nodes deletes nothing.
    let r = sync(&lab.ds, &lab.ipam, &[], &[]).await.expect("sync 3");
    assert!(r.deleted.is_empty());
    assert!(calico(&lab, "k1").await.is_some());
}
