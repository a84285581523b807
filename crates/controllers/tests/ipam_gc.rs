//! IPAM garbage collection against REAL IPAM state in a REAL etcd (calico_lab): addresses
//! allocated with the ipam crate as the CNI plugin allocates them, pods and nodes as the
//! Kubernetes watch would show them. Then the pool usage reported on the IPPools (kube's
//! client over a scripted API server) and scraped from /metrics over real HTTP.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_api::KubeControllersConfiguration;
use calico_controllers::health::{Metrics, router};
use calico_controllers::ipam_gc::{self, LeakTracker};
use calico_controllers::mirror::EtcdMirror;
use calico_controllers::pool_status::{ALLOCATED_ANNOTATION, FREE_ANNOTATION};
use calico_controllers::reconcile::Context;
use calico_controllers::run::ipam_round;
use calico_controllers::watch::Trigger;
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn leaked_pod_addresses_are_released_after_the_grace_period_and_nothing_else() {
    let lab = lab().await;
    lab.pool("pool-a", "10.60.0.0/24").await;
    lab.node("k1", true).await;
    lab.node("docker1", false).await;
    let live = lab.pod_ip("k1", "shop", "web-0", "c-live").await;
    let leaked = lab.pod_ip("k1", "shop", "web-1", "c-gone").await;
    let starting = lab.pod_ip("k1", "shop", "web-2", "c-new").await;
    let tunnel = lab
        .assign(
            "k1",
            "ipip-tunnel-addr-k1",
            BTreeMap::from([
                ("node".to_string(), "k1".to_string()),
                ("type".to_string(), "ipipTunnelAddress".to_string()),
            ]),
        )
        .await;
    // A Docker host's container, even with pod-like attributes: never Kubernetes'.
    let docker = lab.pod_ip("docker1", "shop", "web-1", "c-docker").await;

    let kube_nodes = [kube_node("k1", json!({}))];
    // web-1 is gone; web-2 exists but has no address reported yet.
    let pods = [pod("shop", "web-0", &[live]), pod("shop", "web-2", &[])];
    let grace = ipam_gc::leak_grace(&lab.ds, None).await.expect("grace");
    assert_eq!(
        grace,
        Some(Duration::from_secs(15 * 60)),
        "Calico's default"
    );

    let mut tracker = LeakTracker::default();
    let t0 = Instant::now();
    let r = ipam_gc::collect(&lab.ipam, &mut tracker, &kube_nodes, &pods, t0, grace)
        .await
        .expect("round 1");
    assert!(
        r.released_leaked.is_empty() && r.released_node_gone.is_empty(),
        "{r:?}"
    );
    assert_eq!(r.waiting, 1);
    assert_eq!(r.not_kubernetes, 1);
    assert_eq!(r.in_use, 3);

    // One second short of the grace period: still kept.
    let r = ipam_gc::collect(
        &lab.ipam,
        &mut tracker,
        &kube_nodes,
        &pods,
        t0 + Duration::from_secs(15 * 60 - 1),
        grace,
    )
    .await
    .expect("round 2");
    assert!(r.released_leaked.is_empty(), "{r:?}");
    assert!(lab.allocated(leaked).await);

    let r = ipam_gc::collect(
        &lab.ipam,
        &mut tracker,
        &kube_nodes,
        &pods,
        t0 + Duration::from_secs(15 * 60),
        grace,
    )
    .await
    .expect("round 3");
    assert_eq!(r.released_leaked, vec![leaked]);
    assert!(
        !lab.allocated(leaked).await,
        "leaked address still allocated"
    );
    assert!(
        lab.ipam
            .ips_by_handle("k8s-pod-network.c-gone")
            .await
            .expect("handle")
            .is_empty()
    );
    for (what, ip) in [
        ("live pod", live),
        ("pod being set up", starting),
        ("tunnel", tunnel),
        ("docker", docker),
    ] {
        assert!(lab.allocated(ip).await, "{what} address {ip} was released");
    }
    // calicoctl ipam check agrees: nothing leaked on the Kubernetes side remains.
    let check = calico_ipam::admin::check(&lab.ipam).await.expect("check");
    assert!(
        !check.report.allocations.contains_key(&leaked.to_string()),
        "{:?}",
        check.report
    );
}

#[tokio::test]
async fn grace_period_from_configuration_and_environment() {
    let lab = lab().await;
    let env = Some("90s");
    assert_eq!(
        ipam_gc::leak_grace(&lab.ds, env).await.expect("env"),
        Some(Duration::from_secs(90))
    );
    let kcc: KubeControllersConfiguration = serde_json::from_value(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "KubeControllersConfiguration",
        "metadata": {"name": "default"},
        "spec": {"controllers": {"node": {"leakGracePeriod": "2m30s"}}}
    }))
    .expect("kcc");
    let mut kcc = lab.ds.create(&kcc).await.expect("create kcc");
    // The KubeControllersConfiguration wins over the environment.
    assert_eq!(
        ipam_gc::leak_grace(&lab.ds, env).await.expect("kcc"),
        Some(Duration::from_secs(150))
    );
    // 0 turns leak collection off: a candidate is never released, however old.
    kcc.spec
        .controllers
        .node
        .as_mut()
        .expect("node")
        .leak_grace_period = Some("0".into());
    lab.ds.update(&kcc).await.expect("update kcc");
    let grace = ipam_gc::leak_grace(&lab.ds, env).await.expect("kcc 0");
    assert_eq!(grace, None);
    lab.pool("pool-a", "10.61.0.0/24").await;
    lab.node("k1", true).await;
    let leaked = lab.pod_ip("k1", "ns", "gone", "c1").await;
    let mut tracker = LeakTracker::default();
    let t0 = Instant::now();
    for later in [0, 3600 * 24] {
        let r = ipam_gc::collect(
            &lab.ipam,
            &mut tracker,
            &[kube_node("k1", json!({}))],
            &[],
            t0 + Duration::from_secs(later),
            grace,
        )
        .await
        .expect("round");
        assert!(r.released_leaked.is_empty());
    }
    assert!(lab.allocated(leaked).await);
    // A bad value names the field.
    kcc = lab
        .ds
        .get(None, "default")
        .await
        .expect("get")
        .expect("kcc");
    kcc.spec
        .controllers
        .node
        .as_mut()
        .expect("node")
        .leak_grace_period = Some("soon".into());
    lab.ds.update(&kcc).await.expect("update kcc");
    let e = ipam_gc::leak_grace(&lab.ds, env)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spec.controllers.node.leakGracePeriod") && e.contains("soon"),
        "{e}"
    );
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("reply in time")
        .expect("read");
    out
}

#[tokio::test]
async fn pool_usage_reaches_the_ippool_and_metrics_are_scraped() {
    let lab = lab().await;
    lab.pool("pool-a", "10.62.0.0/24").await;
    lab.node("k1", true).await;
    lab.node("gone", true).await;
    lab.pod_ip("k1", "ns", "a", "c1").await;
    lab.pod_ip("k1", "ns", "b", "c2").await;
    let orphan = lab.pod_ip("gone", "ns", "c", "c3").await;

    let k8s_pool = json!({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": "pool-a", "resourceVersion": "5"},
        "spec": {"cidr": "10.62.0.0/24"}
    });
    let mut patched = k8s_pool.clone();
    patched["metadata"]["annotations"] = json!({
        ALLOCATED_ANNOTATION: "2", FREE_ANNOTATION: "254",
        "status.projectcalico.org/total-addresses": "256"
    });
    let list = |item| {
        json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPoolList",
               "metadata": {"resourceVersion": "5"}, "items": [item]})
    };
    let (client, server) = scripted(vec![
        expect(
            "GET",
            "/apis/projectcalico.org/v3/ippools",
            list(k8s_pool),
            |_| {},
        ),
        expect(
            "PATCH",
            "/apis/projectcalico.org/v3/ippools/pool-a",
            patched.clone(),
            |body| {
                let a = &body["metadata"]["annotations"];
                // The deleted node's address was released first: 2 of 256 remain.
                assert_eq!(a[ALLOCATED_ANNOTATION], "2", "{body}");
                assert_eq!(a[FREE_ANNOTATION], "254", "{body}");
            },
        ),
        // Second round: the counts are unchanged, so no patch.
        expect(
            "GET",
            "/apis/projectcalico.org/v3/ippools",
            list(patched),
            |_| {},
        ),
    ]);
    let metrics = Arc::new(Metrics::default());
    let ctx = Context {
        client,
        mirror: EtcdMirror::new(lab.ds.clone()),
        metrics: metrics.clone(),
    };
    let kube_nodes = [kube_node("k1", json!({}))];
    let mut tracker = LeakTracker::default();
    let pods = [pod("ns", "a", &[]), pod("ns", "b", &[])];
    for _ in 0..2 {
        ipam_round(
            &ctx,
            &lab.ipam,
            &mut tracker,
            &kube_nodes,
            &pods,
            None,
            Instant::now(),
        )
        .await
        .expect("ipam round");
    }
    assert!(!lab.allocated(orphan).await);
    let trigger = Trigger::new("pods", metrics.clone());
    trigger.changed();
    trigger.changed();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let http = tokio::spawn(async move { axum::serve(listener, router(metrics)).await });
    let text = scrape(addr).await;
    for line in [
        "calico_controllers_ipam_allocated_addresses{pool=\"pool-a\"} 2\n",
        "calico_controllers_ipam_free_addresses{pool=\"pool-a\"} 254\n",
        "calico_controllers_ipam_gc_released_total{reason=\"node_deleted\"} 1\n",
        "calico_controllers_ipam_gc_released_total{reason=\"leaked\"} 0\n",
        "calico_controllers_queue_depth{queue=\"pods\"} 2\n",
        "# TYPE calico_controllers_queue_depth gauge\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    http.abort();
    drop(ctx);
    server.await.expect("scripted API server");
}
