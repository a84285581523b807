//! Every reconcile path, with kube's own client talking to a scripted API server
//! (`tower_test::mock`, kube's documented test pattern) and the etcd mirror writing to a REAL
//! etcd started by the test (calico_lab). The API server side is a mock: what it checks is the
//! requests our code sends (method, path, body), not how a real API server would react.

use std::sync::Arc;

use calico_api::{BGPPeer, IPPool, NetworkPolicy};
use calico_controllers::health::Metrics;
use calico_controllers::mirror::EtcdMirror;
use calico_controllers::reconcile::{Context, reconcile};
use calico_controllers::{FINALIZER, OWNER_ANNOTATION, OWNER_KUBERNETES};
use calico_datastore::{Datastore, EtcdConfig};
use calico_lab::etcd::{Etcd, EtcdOptions};
use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

type Check = Box<dyn FnOnce(&Value) + Send>;

/// One request the scripted API server expects, and its reply.
struct Expect {
    method: &'static str,
    path: String,
    status: u16,
    reply: Value,
    check: Check,
}

fn expect(
    method: &'static str,
    path: &str,
    reply: Value,
    check: impl FnOnce(&Value) + Send + 'static,
) -> Expect {
    Expect {
        method,
        path: path.to_string(),
        status: 200,
        reply,
        check: Box::new(check),
    }
}

/// Answers the expected requests in order, then asserts no other request arrives before the
/// client is dropped.
fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    script: Vec<Expect>,
) -> JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut bodies = Vec::new();
        for e in script {
            let (req, send) = handle.next_request().await.unwrap_or_else(|| {
                panic!("expected {} {} but the client stopped", e.method, e.path)
            });
            assert_eq!(req.method().as_str(), e.method, "method for {}", req.uri());
            assert_eq!(req.uri().path(), e.path, "path");
            let bytes = req.into_body().collect_bytes().await.expect("request body");
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("request body is JSON")
            };
            (e.check)(&body);
            bodies.push(body);
            let reply = Response::builder()
                .status(e.status)
                .body(Body::from(
                    serde_json::to_vec(&e.reply).expect("reply JSON"),
                ))
                .expect("response");
            send.send_response(reply);
        }
        if let Some((req, _)) = handle.next_request().await {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
        bodies
    })
}

struct Setup {
    _etcd: Etcd,
    ds: Datastore,
    ctx: Arc<Context>,
    server: JoinHandle<Vec<Value>>,
}

async fn setup(script: Vec<Expect>) -> Setup {
    let etcd = tokio::task::spawn_blocking(|| Etcd::start(EtcdOptions::default()))
        .await
        .expect("join")
        .expect("start etcd");
    let ds = Datastore::connect(&EtcdConfig::new(etcd.endpoints()))
        .await
        .expect("connect etcd");
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let ctx = Arc::new(Context {
        client,
        mirror: EtcdMirror::new(ds.clone()),
        metrics: Arc::new(Metrics::default()),
    });
    Setup {
        _etcd: etcd,
        ds,
        ctx,
        server: serve(handle, script),
    }
}

impl Setup {
    /// Drops the client and returns the request bodies the server saw.
    async fn finish(self) -> (Vec<Value>, Datastore, Etcd) {
        let Setup {
            _etcd,
            ds,
            ctx,
            server,
        } = self;
        drop(ctx);
        (server.await.expect("scripted API server"), ds, _etcd)
    }
}

fn pool_json(blocksize: u32, finalized: bool, deleting: bool, status: Option<Value>) -> Value {
    let mut v = json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {
            "name": "pool-a",
            "uid": "5f1c",
            "resourceVersion": "100",
            "generation": 2,
            "labels": {"team": "net"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
        },
        "spec": {"cidr": "10.20.0.0/16", "blockSize": blocksize, "natOutgoing": true}
    });
    if finalized {
        v["metadata"]["finalizers"] = json!([FINALIZER]);
    }
    if deleting {
        v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    if let Some(s) = status {
        v["status"] = s;
    }
    v
}

fn pool(v: &Value) -> Arc<IPPool> {
    Arc::new(serde_json::from_value(v.clone()).expect("IPPool JSON"))
}

const POOL_PATH: &str = "/apis/projectcalico.org/v3/ippools/pool-a";
const POOL_STATUS_PATH: &str = "/apis/projectcalico.org/v3/ippools/pool-a/status";

fn condition<'a>(body: &'a Value, kind: &str) -> &'a Value {
    body["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {body}"))
}

fn ready(body: &Value) -> &Value {
    condition(body, "Ready")
}

#[tokio::test]
async fn new_object_gets_the_finalizer_first() {
    let obj = pool_json(26, false, false, None);
    let reply = pool_json(26, true, false, None);
    let s = setup(vec![expect("PATCH", POOL_PATH, reply, |body| {
        // A JSON patch that adds our finalizer (guarded by a test op).
        let ops = body.as_array().expect("JSON patch");
        assert!(
            ops.iter()
                .any(|op| op["op"] == "add" && op.to_string().contains(FINALIZER)),
            "{body}"
        );
    })])
    .await;
    let action = reconcile(pool(&obj), s.ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(action, Action::await_change());
    let (_, ds, _etcd) = s.finish().await;
    // Nothing mirrored before the finalizer is in place.
    assert!(ds.get::<IPPool>(None, "pool-a").await.unwrap().is_none());
}

#[tokio::test]
async fn valid_pool_is_mirrored_and_reported_ready() {
    let obj = pool_json(26, true, false, None);
    let s = setup(vec![expect(
        "PATCH",
        POOL_STATUS_PATH,
        obj.clone(),
        |body| {
            let r = ready(body);
            assert_eq!(r["status"], "True", "{body}");
            assert_eq!(r["reason"], "Mirrored");
            assert_eq!(r["observedGeneration"], 2);
            assert!(
                r["lastTransitionTime"]
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z'))
            );
            let a = condition(body, "Allocatable");
            assert_eq!(a["status"], "True", "{body}");
            assert_eq!(a["reason"], "Enabled");
        },
    )])
    .await;
    reconcile(pool(&obj), s.ctx.clone())
        .await
        .expect("reconcile");
    let (_, ds, _etcd) = s.finish().await;
    let copy = ds
        .get::<IPPool>(None, "pool-a")
        .await
        .unwrap()
        .expect("etcd copy");
    assert_eq!(copy.spec.cidr, "10.20.0.0/16");
    assert_eq!(copy.spec.block_size, Some(26));
    let ann = copy.metadata.annotations.expect("annotations");
    assert_eq!(
        ann.get(OWNER_ANNOTATION).map(String::as_str),
        Some(OWNER_KUBERNETES)
    );
    assert!(!ann.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    assert_eq!(
        copy.metadata
            .labels
            .unwrap()
            .get("team")
            .map(String::as_str),
        Some("net")
    );
    assert_eq!(copy.metadata.finalizers, None);
    assert_ne!(
        copy.metadata.uid.as_deref(),
        Some("5f1c"),
        "etcd assigns its own uid"
    );
}

#[tokio::test]
async fn settled_object_causes_no_write() {
    // Already mirrored and already reporting Ready for this generation: the reconcile must
    // neither patch Kubernetes nor rewrite etcd (no ping-pong between the two).
    let status = json!({"conditions": [{
        "type": "Ready", "status": "True", "reason": "Mirrored",
        "message": "valid; mirrored into etcd", "observedGeneration": 2,
        "lastTransitionTime": "2026-01-01T00:00:00Z"
    }, {
        "type": "Allocatable", "status": "True", "reason": "Enabled",
        "message": "addresses are allocated from this pool", "observedGeneration": 2,
        "lastTransitionTime": "2026-01-01T00:00:00Z"
    }]});
    let obj = pool_json(26, true, false, Some(status));
    let s = setup(vec![]).await;
    let first = calico_controllers::mirror::etcd_copy(&*pool(&obj)).unwrap();
    let created = s.ds.create(&first).await.unwrap();
    reconcile(pool(&obj), s.ctx.clone())
        .await
        .expect("reconcile");
    let (_, ds, _etcd) = s.finish().await;
    let after = ds.get::<IPPool>(None, "pool-a").await.unwrap().unwrap();
    assert_eq!(
        after.metadata.resource_version, created.metadata.resource_version,
        "etcd rewritten"
    );
}

#[tokio::test]
async fn invalid_pool_reports_the_field_and_is_not_mirrored() {
    let obj = pool_json(40, true, false, None);
    let s = setup(vec![expect(
        "PATCH",
        POOL_STATUS_PATH,
        obj.clone(),
        |body| {
            let r = ready(body);
            assert_eq!(r["status"], "False", "{body}");
            assert_eq!(r["reason"], "Invalid");
            assert!(
                r["message"].as_str().unwrap().contains("spec.blockSize"),
                "{body}"
            );
            assert_eq!(r["observedGeneration"], 2);
            assert_eq!(condition(body, "Allocatable")["status"], "False", "{body}");
        },
    )])
    .await;
    let action = reconcile(pool(&obj), s.ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(action, Action::await_change());
    let (_, ds, _etcd) = s.finish().await;
    assert!(ds.get::<IPPool>(None, "pool-a").await.unwrap().is_none());
}

#[tokio::test]
async fn etcd_object_not_owned_by_kubernetes_is_a_conflict_and_is_kept() {
    let obj = pool_json(26, true, false, None);
    let s = setup(vec![expect(
        "PATCH",
        POOL_STATUS_PATH,
        obj.clone(),
        |body| {
            let r = ready(body);
            assert_eq!(r["status"], "False", "{body}");
            assert_eq!(r["reason"], "Conflict");
            assert!(
                r["message"]
                    .as_str()
                    .unwrap()
                    .contains("not owned by Kubernetes"),
                "{body}"
            );
        },
    )])
    .await;
    // Created by calicoctl on a Docker host: no owner annotation, other block size.
    let mut theirs = (*pool(&pool_json(28, false, false, None))).clone();
    theirs.metadata = kube::api::ObjectMeta {
        name: Some("pool-a".into()),
        ..Default::default()
    };
    s.ds.create(&theirs).await.unwrap();
    reconcile(pool(&obj), s.ctx.clone())
        .await
        .expect("reconcile");
    let (_, ds, _etcd) = s.finish().await;
    let kept = ds.get::<IPPool>(None, "pool-a").await.unwrap().unwrap();
    assert_eq!(
        kept.spec.block_size,
        Some(28),
        "the calicoctl object was overwritten"
    );
}

#[tokio::test]
async fn deletion_removes_the_etcd_copy_then_the_finalizer() {
    let obj = pool_json(26, true, true, None);
    let reply = pool_json(26, false, true, None);
    let s = setup(vec![expect("PATCH", POOL_PATH, reply, |body| {
        let ops = body.as_array().expect("JSON patch");
        assert!(ops.iter().any(|op| op["op"] == "remove"), "{body}");
    })])
    .await;
    s.ds.create(&calico_controllers::mirror::etcd_copy(&*pool(&obj)).unwrap())
        .await
        .unwrap();
    reconcile(pool(&obj), s.ctx.clone())
        .await
        .expect("reconcile");
    let (_, ds, _etcd) = s.finish().await;
    assert!(
        ds.get::<IPPool>(None, "pool-a").await.unwrap().is_none(),
        "etcd copy left behind"
    );
}

#[tokio::test]
async fn deletion_leaves_an_etcd_object_kubernetes_does_not_own() {
    let obj = pool_json(26, true, true, None);
    let reply = pool_json(26, false, true, None);
    let s = setup(vec![expect("PATCH", POOL_PATH, reply, |_| {})]).await;
    let mut theirs = (*pool(&obj)).clone();
    theirs.metadata = kube::api::ObjectMeta {
        name: Some("pool-a".into()),
        ..Default::default()
    };
    s.ds.create(&theirs).await.unwrap();
    reconcile(pool(&obj), s.ctx.clone())
        .await
        .expect("reconcile");
    let (_, ds, _etcd) = s.finish().await;
    assert!(ds.get::<IPPool>(None, "pool-a").await.unwrap().is_some());
}

#[tokio::test]
async fn status_write_failure_is_an_error_for_retry() {
    let obj = pool_json(26, true, false, None);
    let mut e = expect(
        "PATCH",
        POOL_STATUS_PATH,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": "the object has been modified", "reason": "Conflict", "code": 409}),
        |_| {},
    );
    e.status = 409;
    let s = setup(vec![e]).await;
    let err = reconcile(pool(&obj), s.ctx.clone())
        .await
        .expect_err("409 must fail the pass");
    assert!(err.to_string().contains("pool-a"), "{err}");
    let _ = s.finish().await;
}

#[tokio::test]
async fn bgppeer_status_goes_to_annotations() {
    let peer = json!({
        "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
        "metadata": {"name": "tor", "generation": 1, "resourceVersion": "5", "finalizers": [FINALIZER]},
        "spec": {"peerIP": "172.16.1.1", "peerSelector": "all()", "asNumber": 65010}
    });
    let s = setup(vec![expect(
        "PATCH",
        "/apis/projectcalico.org/v3/bgppeers/tor",
        peer.clone(),
        |body| {
            let a = &body["metadata"]["annotations"];
            assert_eq!(a["status.projectcalico.org/ready"], "False", "{body}");
            assert_eq!(a["status.projectcalico.org/reason"], "Invalid");
            assert!(
                a["status.projectcalico.org/message"]
                    .as_str()
                    .unwrap()
                    .contains("spec.peer"),
                "{body}"
            );
            assert_eq!(a["status.projectcalico.org/observed-generation"], "1");
        },
    )])
    .await;
    let obj: BGPPeer = serde_json::from_value(peer).unwrap();
    reconcile(Arc::new(obj), s.ctx.clone())
        .await
        .expect("reconcile");
    let (_, ds, _etcd) = s.finish().await;
    assert!(ds.get::<BGPPeer>(None, "tor").await.unwrap().is_none());
}

#[tokio::test]
async fn namespaced_policy_is_mirrored_under_its_namespace() {
    let policy = json!({
        "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "shop", "generation": 3, "resourceVersion": "7",
                     "finalizers": [FINALIZER]},
        "spec": {"selector": "app == 'db'", "types": ["Ingress"],
                 "ingress": [{"action": "Allow", "protocol": "TCP",
                              "destination": {"ports": [5432]}}]}
    });
    let s = setup(vec![expect(
        "PATCH",
        "/apis/projectcalico.org/v3/namespaces/shop/networkpolicies/db",
        policy.clone(),
        |body| {
            let a = &body["metadata"]["annotations"];
            assert_eq!(a["status.projectcalico.org/ready"], "True", "{body}");
            assert_eq!(a["status.projectcalico.org/observed-generation"], "3");
        },
    )])
    .await;
    let obj: NetworkPolicy = serde_json::from_value(policy).unwrap();
    reconcile(Arc::new(obj), s.ctx.clone())
        .await
        .expect("reconcile");
    let (_, ds, _etcd) = s.finish().await;
    let copy = ds
        .get::<NetworkPolicy>(Some("shop"), "db")
        .await
        .unwrap()
        .expect("etcd copy");
    // Our status annotations describe the Kubernetes object and stay out of etcd.
    let ann = copy.metadata.annotations.unwrap();
    assert!(
        !ann.keys()
            .any(|k| k.starts_with("status.projectcalico.org/"))
    );
    assert_eq!(
        ann.get(OWNER_ANNOTATION).map(String::as_str),
        Some(OWNER_KUBERNETES)
    );
}

#[tokio::test]
async fn tier_reports_conditions_and_bgpconfiguration_annotations() {
    let tier = json!({
        "apiVersion": "projectcalico.org/v3", "kind": "Tier",
        "metadata": {"name": "security", "generation": 1, "resourceVersion": "3", "finalizers": [FINALIZER]},
        "spec": {"order": 100}
    });
    let config = json!({
        "apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
        "metadata": {"name": "default", "generation": 4, "resourceVersion": "9", "finalizers": [FINALIZER]},
        "spec": {"asNumber": 64512, "nodeToNodeMeshEnabled": false}
    });
    let s = setup(vec![
        expect(
            "PATCH",
            "/apis/projectcalico.org/v3/tiers/security/status",
            tier.clone(),
            |body| {
                assert_eq!(ready(body)["status"], "True", "{body}");
            },
        ),
        expect(
            "PATCH",
            "/apis/projectcalico.org/v3/bgpconfigurations/default",
            config.clone(),
            |body| {
                let a = &body["metadata"]["annotations"];
                assert_eq!(a["status.projectcalico.org/ready"], "True", "{body}");
                assert_eq!(a["status.projectcalico.org/observed-generation"], "4");
            },
        ),
    ])
    .await;
    let t: calico_api::Tier = serde_json::from_value(tier).unwrap();
    reconcile(Arc::new(t), s.ctx.clone())
        .await
        .expect("reconcile tier");
    let c: calico_api::BGPConfiguration = serde_json::from_value(config).unwrap();
    reconcile(Arc::new(c), s.ctx.clone())
        .await
        .expect("reconcile bgpconfiguration");
    let (_, ds, _etcd) = s.finish().await;
    let t = ds
        .get::<calico_api::Tier>(None, "security")
        .await
        .unwrap()
        .expect("tier in etcd");
    assert_eq!(t.spec.order, Some(100.0));
    let c = ds
        .get::<calico_api::BGPConfiguration>(None, "default")
        .await
        .unwrap()
        .expect("config in etcd");
    assert_eq!(c.spec.node_to_node_mesh_enabled, Some(false));
}

#[tokio::test]
async fn disabled_pool_is_ready_but_not_allocatable() {
    let mut obj = pool_json(26, true, false, None);
    obj["spec"]["disabled"] = json!(true);
    let s = setup(vec![expect(
        "PATCH",
        POOL_STATUS_PATH,
        obj.clone(),
        |body| {
            assert_eq!(ready(body)["status"], "True", "{body}");
            let a = condition(body, "Allocatable");
            assert_eq!(a["status"], "False", "{body}");
            assert_eq!(a["reason"], "Disabled");
        },
    )])
    .await;
    reconcile(pool(&obj), s.ctx.clone())
        .await
        .expect("reconcile");
    let (_, ds, _etcd) = s.finish().await;
    let copy = ds
        .get::<IPPool>(None, "pool-a")
        .await
        .unwrap()
        .expect("etcd copy");
    assert_eq!(copy.spec.disabled, Some(true));
}
